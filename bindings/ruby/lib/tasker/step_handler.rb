# frozen_string_literal: true

module Tasker
  # The base class of step handlers. A subclass implements `call(context)`, where
  # `context` is a Tasker::StepContext, and returns the step's result: a Hash, Array,
  # String, number, true, false or nil. Delivery is at least once: make handlers
  # idempotent on `context.step_id`.
  #
  # Raise Tasker::RetryableError or Tasker::PermanentError to choose what happens on
  # failure; any other exception is retried with the step's backoff.
  class StepHandler
    def call(_context)
      raise NotImplementedError, "#{self.class} must implement call(context)"
    end
  end
end
