# frozen_string_literal: true

# Tasker: workflows of steps whose handlers are Ruby classes. The engine, the stores and
# the queue are Rust (the native extension `tasker/tasker_native`, built by
# `rake compile`); this library runs handlers on Ruby threads.
require "tasker/tasker_native"
require "tasker/errors"
require "tasker/step_handler"
require "tasker/step_context"
require "tasker/task_result"
require "tasker/dispatcher"
require "tasker/worker"
require "tasker/client"

module Tasker
  @handlers = {}
  @handlers_lock = Mutex.new

  class << self
    # Makes `klass` the handler of templates whose `handler` is `name`. Without a
    # registration, a handler name is looked up as a class name (`Object.const_get`),
    # which must be a Tasker::StepHandler subclass: a template cannot name just any
    # class that has a `call` method.
    def register(name, klass)
      name = name.to_s
      if Native.builtin_handlers.include?(name)
        raise ArgumentError, "`#{name}` is a built-in handler of Tasker; register under another name"
      end
      unless klass.is_a?(Class) && klass.method_defined?(:call)
        raise ArgumentError, "#{klass.inspect} is not a class with a `call(context)` method"
      end

      @handlers_lock.synchronize { @handlers[name] = klass }
    end

    # The class serving handler `name`, or nil.
    def handler_for(name)
      registered = @handlers_lock.synchronize { @handlers[name] }
      return registered if registered

      found = Object.const_get(name)
      found if found.is_a?(Class) && found < StepHandler
    rescue NameError
      nil
    end

    # Exports OpenTelemetry traces over OTLP/HTTP to the collector at `endpoint` (its
    # base URL, http://host:4318): a span per task this process submits and finishes,
    # and per step attempt it runs, Ruby handlers' included, in the task's trace
    # whichever process submitted it. Call once, before starting work; the spans left
    # are sent when Ruby exits.
    def export_traces(endpoint: ENV.fetch("TASKER_OTEL_ENDPOINT"), service_name: "tasker-ruby")
      Native.export_traces(endpoint.to_s, service_name.to_s)
      at_exit { Native.flush_traces }
    end

    # Runs one task of the template at `template_path` in this process on the embedded
    # store (SQLite; in memory unless `db` names a file) and returns its TaskResult.
    # Handlers run on `concurrency` Ruby threads.
    def run(template_path, context: {}, db: nil, concurrency: 4)
      session = Native::Session.embedded(template_path.to_s, context, db&.to_s, concurrency)
      Dispatcher.serve(session, concurrency)
      TaskResult.new(session.result)
    end
  end
end
