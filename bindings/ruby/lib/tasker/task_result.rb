# frozen_string_literal: true

module Tasker
  # One step of a TaskResult: the fields of a step in the API's task view (`waits_for`:
  # the signal a step that runs no handler waits for, else nil).
  StepResult = Struct.new(:id, :name, :handler, :waits_for, :queue, :depends_on, :state, :attempts,
                          :max_attempts, :results, :error, :started_at, :completed_at,
                          :duration_ms, keyword_init: true)

  # A task as the store has it, in the shape `GET /v1/tasks/{id}` and `tasker status
  # --json` show: its template, context and state, and every step in template order.
  class TaskResult
    FINAL_STATES = %w[complete error cancelled].freeze

    attr_reader :task_id, :namespace, :name, :version, :state, :context, :idempotency_key,
                :created_at, :updated_at, :steps

    def initialize(doc)
      @task_id = doc.fetch("task_id")
      @namespace, @name, @version = doc.values_at("namespace", "name", "version")
      @state = doc.fetch("state")
      @context, @idempotency_key = doc.values_at("context", "idempotency_key")
      @created_at, @updated_at = doc.values_at("created_at", "updated_at")
      @steps = doc.fetch("steps").map do |s|
        StepResult.new(**StepResult.members.to_h { |m| [m, s[m.to_s]] })
      end
    end

    def complete?
      state == "complete"
    end

    def final?
      FINAL_STATES.include?(state)
    end

    # The step named `name`, or nil.
    def step(name)
      steps.find { |s| s.name == name.to_s }
    end

    # Step name → result, for the steps that have one.
    def results
      steps.each_with_object({}) { |s, all| all[s.name] = s.results unless s.results.nil? }
    end

    def inspect
      "#<Tasker::TaskResult #{task_id} #{state} " \
        "#{steps.map { |s| "#{s.name}=#{s.state}" }.join(' ')}>"
    end
  end
end
