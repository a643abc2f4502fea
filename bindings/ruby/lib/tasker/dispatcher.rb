# frozen_string_literal: true

require "timeout"

module Tasker
  # Runs the steps a native session hands out on Ruby threads, and reports each
  # outcome back to the engine.
  module Dispatcher
    BACKTRACE_LINES = 20

    # Raised into a handler that runs past its step's timeout.
    class StepTimeout < Exception; end # rubocop:disable Lint/InheritException

    module_function

    # Serves `session` on `threads` Ruby threads until it closes. If this thread is
    # interrupted, the session stops taking steps and the ones in flight finish first.
    def serve(session, threads)
      workers = Array.new([threads, 1].max) do
        Thread.new do
          while (step = session.next_job)
            begin
              perform(step)
            rescue StandardError => e
              # Reporting the outcome failed: the step runs again after its timeout.
              warn "tasker: could not report step #{step.step_id}: #{e.class}: #{e.message}"
            end
          end
        end
      end
      workers.each(&:join)
    ensure
      session.stop
      workers&.each(&:join)
    end

    # Finds and calls the step's handler; returns whether the engine took the outcome.
    def perform(step)
      klass = Tasker.handler_for(step.handler)
      unless klass
        return step.send(:native_fail, "no Ruby handler named `#{step.handler}`: register one " \
                                       "with Tasker.register or define a class of that name",
                         false, nil)
      end

      # Past its timeout the engine records the attempt as failed; the handler is
      # interrupted so that its thread serves the next step.
      result = Timeout.timeout(step.send(:native_remaining), StepTimeout) { klass.new.call(step) }
      begin
        step.send(:native_succeed, result)
      rescue SerializationError => e
        step.send(:native_fail, "the handler's result cannot be stored: #{e.message}", false, nil)
      end
    rescue StepTimeout
      step.send(:native_fail, "timed out after #{step.timeout}s", true, nil)
    rescue PermanentError => e
      step.send(:native_fail, e.message, false, nil)
    rescue RetryableError => e
      step.send(:native_fail, e.message, true, e.retry_after&.to_f)
    rescue StandardError, ScriptError => e
      step.send(:native_fail, describe(e), true, nil)
    end

    # An unexpected exception as the step's error: class, message and backtrace.
    def describe(error)
      lines = ["#{error.class}: #{error.message}"]
      lines.concat((error.backtrace || []).first(BACKTRACE_LINES).map { |l| "  #{l}" })
      lines.join("\n")
    end
  end
end
