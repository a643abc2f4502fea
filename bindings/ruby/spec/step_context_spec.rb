# frozen_string_literal: true

# Records what a handler sees, for the examples below.
module Specs
  def self.allocations
    before = GC.stat(:total_allocated_objects)
    yield
    GC.stat(:total_allocated_objects) - before
  end

  class Inspect < Tasker::StepHandler
    class << self
      attr_accessor :seen
    end

    def call(step)
      names = %i[namespace task_name task_version step_name handler task_id step_id]
      # The first call may create the string; the first measurement its block's frame.
      Specs.allocations { names.each { |n| step.public_send(n) } }
      # Allocations that grow with the number of calls (the loop's own are constant).
      allocated = Specs.allocations { 1000.times { names.each { |n| step.public_send(n) } } } -
                  Specs.allocations { 10.times { names.each { |n| step.public_send(n) } } }
      missing = begin
        step.results("nope")
      rescue KeyError => e
        e.message
      end
      Inspect.seen[step.step_name] = {
        "values" => names.to_h { |n| [n, step.public_send(n)] }, "attempt" => step.attempt,
        "same_object" => names.all? { |n| step.public_send(n).equal?(step.public_send(n)) },
        "frozen" => names.all? { |n| step.public_send(n).frozen? },
        "allocated" => allocated, "context" => step.context, "config" => step.config,
        "context_memoized" => step.context.equal?(step.context),
        "parents" => step.parent_results, "missing" => missing,
        "first_parent" => step.parent_results.empty? ? nil : step.results(step.parent_results.keys.first)
      }
      { "value" => 1 }
    end
  end

  class ReadsPick < Tasker::StepHandler
    def call(step) = { "pick" => step.results("pick") }
  end

  class Grandchild < Tasker::StepHandler
    def call(step) = { "first" => step.results("first"), "second" => step.results(:second) }
  end

  # Chooses the carrier from the order's tier.
  class PickCarrier < Tasker::StepHandler
    def call(step) = { "next" => [step.context["tier"] == "express" ? "air" : "ground"] }
  end

  # One order line: its item and index, and the parent's result it fans out from.
  class PriceLine < Tasker::StepHandler
    def call(step) = { "sku" => step.item["sku"], "index" => step.index, "order" => step.results("order")["id"] }
  end

  class Invoice < Tasker::StepHandler
    def call(step) = { "lines" => step.results("price_line"), "item" => step.item, "index" => step.index }
  end

  class Registered < Tasker::StepHandler
    def call(step) = { "registered" => step.step_name }
  end
end

RSpec.describe Tasker::StepContext do
  before { Specs::Inspect.seen = {} }

  let(:template) do
    Specs.write_template(
      { "namespace" => "shop", "name" => "inspect", "version" => "2.1.0",
        "steps" => [
          { "name" => "first", "handler" => "Specs::Inspect", "config" => { "limit" => 5 } },
          { "name" => "second", "handler" => "Specs::Inspect", "depends_on" => ["first"] }
        ] }, @tmp
    )
  end

  it "gives the handler its names, ids, attempt, context, config and parents' results" do
    result = Tasker.run(template, context: { "order" => 7 })
    expect(result).to be_complete
    first, second = Specs::Inspect.seen.values_at("first", "second")
    expect(first["values"]).to include(namespace: "shop", task_name: "inspect", task_version: "2.1.0",
                                       step_name: "first", handler: "Specs::Inspect",
                                       task_id: result.task_id, step_id: result.step("first").id)
    expect(first["attempt"]).to eq(1)
    expect(first["context"]).to eq("order" => 7)
    expect(first["config"]).to eq("limit" => 5)
    expect(first["parents"]).to eq({})
    expect(second["parents"]).to eq("first" => { "value" => 1 })
    expect(second["first_parent"]).to eq("value" => 1)
    expect(second["missing"]).to eq("step `second` has no ancestor named `nope` (its ancestors: first)")
    expect(first["missing"]).to include("(its ancestors: none)")
  end

  it "reads any ancestor's results by name, not only a parent's" do
    path = Specs.write_template(
      { "namespace" => "shop", "name" => "lineage", "version" => "1.0.0",
        "steps" => [
          { "name" => "first", "handler" => "Specs::Inspect" },
          { "name" => "second", "handler" => "Specs::Inspect", "depends_on" => ["first"] },
          { "name" => "third", "handler" => "Specs::Grandchild", "depends_on" => ["second"] }
        ] }, @tmp
    )
    result = Tasker.run(path, context: {})
    expect(result).to be_complete
    expect(result.step("third").results).to eq("first" => { "value" => 1 }, "second" => { "value" => 1 })
  end

  it "decides among its children: the branch not taken is skipped" do
    path = Specs.write_template(
      { "namespace" => "shop", "name" => "carrier", "version" => "1.0.0",
        "steps" => [
          { "name" => "pick", "handler" => "Specs::PickCarrier", "decides" => %w[ground air] },
          { "name" => "ground", "handler" => "Specs::Inspect", "depends_on" => ["pick"] },
          { "name" => "air", "handler" => "Specs::Inspect", "depends_on" => ["pick"] },
          { "name" => "notify", "handler" => "Specs::ReadsPick", "depends_on" => %w[ground air] }
        ] }, @tmp
    )
    result = Tasker.run(path, context: { "tier" => "express" })
    expect(result).to be_complete
    expect(result.steps.map { |s| [s.name, s.state] })
      .to eq([%w[pick complete], %w[ground skipped], %w[air complete], %w[notify complete]])
    expect(result.step("notify").results).to eq("pick" => { "next" => ["air"] })
  end

  it "runs one instance per item, each given its item and index; the next step gets them all" do
    path = Specs.write_template(
      { "namespace" => "shop", "name" => "lines", "version" => "1.0.0",
        "steps" => [
          { "name" => "order", "handler" => "echo", "config" => { "id" => 7, "lines" => [{ "sku" => "A" }, { "sku" => "B" }] } },
          { "name" => "price_line", "handler" => "Specs::PriceLine", "for_each" => "order.lines",
            "depends_on" => ["order"] },
          { "name" => "invoice", "handler" => "Specs::Invoice", "depends_on" => ["price_line"] }
        ] }, @tmp
    )
    result = Tasker.run(path, context: {})
    expect(result).to be_complete
    expect(result.step("price_line[1]").results).to eq("sku" => "B", "index" => 1, "order" => 7)
    expect(result.step("invoice").results).to eq(
      "lines" => [{ "sku" => "A", "index" => 0, "order" => 7 }, { "sku" => "B", "index" => 1, "order" => 7 }],
      "item" => nil, "index" => nil
    )
  end

  it "returns frozen, interned names: the same object each call, no allocation" do
    Tasker.run(template, context: {})
    Specs::Inspect.seen.each_value do |seen|
      expect(seen).to include("same_object" => true, "frozen" => true, "allocated" => 0)
    end
    # One object per distinct name, shared by both steps.
    namespaces = Specs::Inspect.seen.values.map { |s| s["values"][:namespace] }
    expect(namespaces[0]).to equal(namespaces[1])
  end

  it "converts the context once per step" do
    Tasker.run(template, context: { "a" => [1] })
    expect(Specs::Inspect.seen["first"]["context_memoized"]).to be(true)
  end

  it "finds handlers registered under a name" do
    Tasker.register("registered_handler", Specs::Registered)
    path = Specs.write_template(
      { "namespace" => "shop", "name" => "registered", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "registered_handler" }] }, @tmp
    )
    expect(Tasker.run(path).results["a"]).to eq("registered" => "a")
  end

  it "refuses a retry_after that is not a number of seconds" do
    expect { Tasker::RetryableError.new("x", retry_after: -1) }.to raise_error(ArgumentError, /retry_after/)
    expect { Tasker::RetryableError.new("x", retry_after: "soon") }.to raise_error(ArgumentError)
    expect(Tasker::RetryableError.new("x", retry_after: 2.5).retry_after).to eq(2.5)
  end

  it "refuses to register over a built-in handler, or something that is not a handler class" do
    expect { Tasker.register("sum", Specs::Registered) }.to raise_error(ArgumentError, /built-in/)
    expect { Tasker.register("x", Object.new) }.to raise_error(ArgumentError, /not a class/)
  end

  it "runs built-in handlers in Rust next to Ruby ones" do
    path = Specs.write_template(
      { "namespace" => "shop", "name" => "mixed", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "Specs::Sum" },
                    { "name" => "b", "handler" => "sum", "depends_on" => ["a"] }] }, @tmp
    )
    expect(Tasker.run(path, context: { "start" => 1 }).results).to eq("a" => { "value" => 2 }, "b" => { "value" => 3 })
  end
end
