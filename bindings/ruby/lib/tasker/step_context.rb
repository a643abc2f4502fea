# frozen_string_literal: true

module Tasker
  # What a handler is given. The names (`namespace`, `task_name`, `task_version`,
  # `step_name`, `handler`) and ids are frozen strings, interned: calling a getter
  # again allocates nothing. `context`, `config` and parents' results are converted
  # from JSON once per step, on first use; other ancestors' results on each ask.
  class StepContext
    # The task's context (a Hash with String keys).
    def context
      @context ||= native_context
    end

    # For an instance of a `for_each` step, its element of the array (converted once);
    # nil for any other step. `index` is the element's index.
    def item
      return @item if defined?(@item)

      @item = native_item
    end

    # The step's `config` from the template.
    def config
      @config ||= native_config
    end

    # Every parent's result, by parent name.
    def parent_results
      @parent_results ||= native_parent_results
    end

    # The result of the ancestor named `name` (a parent, a parent's parent, …): a
    # parent's at hand, the others' loaded in one query on the first ask. KeyError if no
    # ancestor has that name.
    def results(name)
      name = name.to_s
      return @parent_results.fetch(name) if @parent_results&.key?(name)

      native_results(name)
    end

    def inspect
      "#<Tasker::StepContext #{namespace}/#{task_name}@#{task_version} step=#{step_name} " \
        "attempt=#{attempt} step_id=#{step_id}>"
    end
  end
end
