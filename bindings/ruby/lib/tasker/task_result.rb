# frozen_string_literal: true

module Tasker
  # One step of a TaskResult.
  StepResult = Struct.new(:id, :name, :state, :attempts, :results, :error, keyword_init: true)

  # A task as the store has it: its state and every step's state, attempts, result and
  # error, in template order.
  class TaskResult
    FINAL_STATES = %w[complete error cancelled].freeze

    attr_reader :task_id, :state, :steps

    def initialize(doc)
      @task_id = doc.fetch("task_id")
      @state = doc.fetch("state")
      @steps = doc.fetch("steps").map do |s|
        StepResult.new(id: s["id"], name: s["name"], state: s["state"], attempts: s["attempts"],
                       results: s["results"], error: s["error"])
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
