# frozen_string_literal: true

# Ruby twins of the built-in handlers the example templates use, plus handlers the
# failure specs need.
module Specs
  # `sum`: config.value (1) + the parents' values, or the context's start without parents.
  class Sum < Tasker::StepHandler
    def call(step)
      parents = step.parent_results
      from = if parents.empty?
               step.context.fetch("start", 0)
             else
               parents.values.sum { |r| r.is_a?(Hash) ? r.fetch("value", 0) : 0 }
             end
      { "value" => step.config.fetch("value", 1) + from }
    end
  end

  # `sum`, saying it ran in Ruby.
  class RubySum < Sum
    def call(step)
      super.merge("by" => "ruby")
    end
  end

  class Noop < Tasker::StepHandler
    def call(_step) = {}
  end

  class Echo < Tasker::StepHandler
    def call(step) = step.config
  end

  # Fails retryably on attempts ≤ config.failures (1), then succeeds.
  class Flaky < Tasker::StepHandler
    def call(step)
      if step.attempt <= step.config.fetch("failures", 1)
        raise Tasker::RetryableError, "attempt #{step.attempt} fails"
      end

      { "attempt" => step.attempt }
    end
  end

  class Fail < Tasker::StepHandler
    def call(step)
      raise Tasker::PermanentError, step.config.fetch("message", "failed")
    end
  end

  class Sleep < Tasker::StepHandler
    def call(step)
      ms = step.config.fetch("ms", 0)
      sleep(ms / 1000.0)
      { "slept_ms" => ms }
    end
  end

  # Raises an ordinary exception on attempts ≤ config.failures.
  class Boom < Tasker::StepHandler
    def call(step)
      raise ArgumentError, "boom on attempt #{step.attempt}" if step.attempt <= step.config.fetch("failures", 1)

      { "attempt" => step.attempt }
    end
  end

  # Fails permanently while Specs::Switch is on.
  class Switched < Tasker::StepHandler
    def call(_step)
      raise Tasker::PermanentError, "switched off" if Switch.on

      { "switched" => false }
    end
  end

  module Switch
    class << self
      attr_accessor :on
    end
  end

  # Appends its attempt to config.log, then sleeps config.ms: a step to kill a worker in.
  class Logged < Tasker::StepHandler
    def call(step)
      File.open(step.config.fetch("log"), "a") { |f| f.puts(step.attempt) }
      sleep(step.config.fetch("ms", 0) / 1000.0)
      { "attempt" => step.attempt }
    end
  end

  # Returns what config.kind asks for, for the conversion specs.
  class Returns < Tasker::StepHandler
    def call(step)
      case step.config["kind"]
      when "time" then { "items" => [1, 2, 3, { "at" => Time.now }] }
      else step.context
      end
    end
  end
end

module Specs
  # Has `call` but is no Tasker::StepHandler: a template cannot name it.
  class NotAHandler
    def call(_step) = { "ran" => true }
  end
end
