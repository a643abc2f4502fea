# frozen_string_literal: true

module Tasker
  # Submits and operates tasks of a distributed deployment (PostgreSQL). Orchestrator
  # and worker processes do the work.
  class Client
    def initialize(database_url: ENV.fetch("DATABASE_URL"))
      @native = Native::Client.new(database_url)
    end

    # Creates a task of the template at `template_path` (registering the template if it
    # is new) and returns its id. The same `idempotency_key` returns the same task;
    # `priority` (higher first) overrides the template's for the order its steps are
    # taken from their queues.
    def submit(template_path, context: {}, idempotency_key: nil, priority: nil)
      task_id, _created = @native.submit(template_path.to_s, context, idempotency_key&.to_s,
                                         priority&.to_i)
      task_id
    end

    # The task now, as a TaskResult.
    def status(task_id)
      TaskResult.new(@native.status(task_id.to_s))
    end

    # Waits until the task is complete, in error or cancelled; Tasker::TimeoutError if
    # it is not after `timeout` seconds.
    def wait(task_id, timeout: nil, interval: 0.2)
      deadline = timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout)
      loop do
        result = status(task_id)
        return result if result.final?
        if deadline && Process.clock_gettime(Process::CLOCK_MONOTONIC) >= deadline
          raise TimeoutError, "task #{task_id} is still #{result.state} after #{timeout}s"
        end

        sleep interval
      end
    end

    # Cancels the task and its unfinished steps; returns the task's state.
    def cancel(task_id)
      @native.cancel(task_id.to_s)
    end

    # Runs the failed steps of an errored task again; returns how many.
    def retry(task_id)
      @native.retry(task_id.to_s)
    end

    # The task's history: every state change of it and its steps, oldest first, as
    # hashes ("step_id" is nil for the task's own; "from", "to", "reason", "at").
    def history(task_id)
      @native.history(task_id.to_s)["transitions"]
    end

    # Messages moved to the dead letters (of `queue`, or of every queue), as hashes
    # with the "reason".
    def dead_letters(queue: nil)
      @native.dead_letters(queue&.to_s)["dead_letters"]
    end

    # Delivers the signal `name` to the task: the steps waiting for it (`wait_for`)
    # complete with `payload` as their result, and a step that reaches its wait later
    # finds it kept. Returns {"task_id", "signal", "completed" => [step ids],
    # "task_state"}. A second signal of a name, or one for a finished task, raises
    # Tasker::ConflictError.
    def signal(task_id, name, payload = {})
      @native.signal(task_id.to_s, name.to_s, payload)
    end

    # Submits the template at `template_path` with `context` at each tick of `cron`
    # (5 fields, 6 with seconds first, or "@every 30s") read in `timezone`; each tick
    # creates one task, whichever orchestrator fires it. `catch_up` says what becomes
    # of ticks missed while no orchestrator ran: :skip, :once or :all. Returns the
    # schedule as a hash (its "next_fire" among the keys).
    def schedule_create(name, template_path, cron:, timezone: "UTC", context: {}, catch_up: :once)
      @native.schedule_create(name.to_s, template_path.to_s, cron.to_s, timezone.to_s, context,
                              catch_up.to_s)
    end

    # Every schedule, by name, as hashes.
    def schedules
      @native.schedules["schedules"]
    end

    # Fires nothing until resumed; true if that changed it.
    def schedule_pause(name)
      @native.schedule_pause(name.to_s, true)
    end

    # Fires again from the next tick after now; true if that changed it.
    def schedule_resume(name)
      @native.schedule_pause(name.to_s, false)
    end

    # Deletes a schedule; the tasks it created stay.
    def schedule_delete(name)
      @native.schedule_delete(name.to_s)
      nil
    end

    # Marks a failed step done with `results` so its children run; returns the task's
    # state.
    def resolve(step_id, results)
      @native.resolve(step_id.to_s, results)
    end
  end
end
