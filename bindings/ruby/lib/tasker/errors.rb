# frozen_string_literal: true

module Tasker
  # Raised by a handler for a failure worth retrying; `retry_after` (seconds) replaces
  # the step's backoff delay for the next attempt.
  class RetryableError < Error
    attr_reader :retry_after

    def initialize(message = nil, retry_after: nil)
      unless retry_after.nil? || (retry_after.is_a?(Numeric) && retry_after.to_f.finite? && retry_after >= 0)
        raise ArgumentError, "retry_after must be a number of seconds >= 0, got #{retry_after.inspect}"
      end

      super(message)
      @retry_after = retry_after
    end
  end

  # Raised by a handler for a failure retrying cannot fix: the step fails at once.
  class PermanentError < Error; end

  # Raised by Client#wait when the task is still running at the timeout.
  class TimeoutError < Error; end
end
