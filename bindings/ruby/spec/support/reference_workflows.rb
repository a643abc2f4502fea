# frozen_string_literal: true

# The reference and failure workflows of the design brief with Ruby handlers, run by
# every backend: an including group defines `run_task(path, context)` → TaskResult.
RSpec.shared_examples "the reference workflows" do
  %w[linear diamond tree mixed_dag].each do |name|
    it "runs #{name}, each step once, data flowing along the edges" do
      path = Specs.ruby_template(name, @tmp)
      result = run_task(path, { "start" => 7 })
      expect(result.state).to eq("complete")
      expect(result.results).to eq(Specs.expected_results(path, 7))
      expect(result.steps.map(&:attempts)).to all(eq(1))
      # The API's task view, field for field.
      expect([result.namespace, result.name, result.context]).to eq(["ruby_examples", name, { "start" => 7 }])
      expect(result.steps.first.depends_on).to eq([])
      expect(result.steps.last.depends_on).not_to be_empty
      expect(result.steps.map(&:duration_ms)).to all(be_an(Integer))
    end
  end

  it "runs order fulfilment with handler classes found by name" do
    result = run_task(File.expand_path("../../examples/order_fulfillment.yaml", __dir__), Specs::ORDER)
    expect(result.state).to eq("complete")
    expect(result.results["validate_order"]).to eq("order_id" => 1001, "total" => 26.99, "lines" => 2)
    expect(result.results["charge_payment"]["charged"]).to be_a(Float).and eq(26.99)
    expect(result.results["charge_payment"]["payment_key"]).to eq(result.step("charge_payment").id)
    expect(result.results["ship_order"]).to eq("shipment" => "ground:east-1001", "paid" => 26.99)
  end

  it "retries a step that raises RetryableError until it succeeds" do
    result = run_task(Specs.ruby_template("failures/retry_then_succeed", @tmp), {})
    expect(result.state).to eq("complete")
    expect(result.step("flaky_call").attempts).to eq(3)
    expect(result.results["flaky_call"]).to eq("attempt" => 3)
  end

  it "ends in error when retries are exhausted, and blocks what depends on the step" do
    result = run_task(Specs.ruby_template("failures/retries_exhausted", @tmp), {})
    expect(result.state).to eq("error")
    flaky = result.step("flaky_call")
    expect([flaky.state, flaky.attempts]).to eq(["error", 3])
    expect(flaky.error).to include("attempt 3 fails")
    expect(result.step("after").state).to eq("pending")
  end

  it "fails a step at once on PermanentError while independent steps still run" do
    result = run_task(Specs.ruby_template("failures/permanent_failure", @tmp), {})
    expect(result.state).to eq("error")
    charge = result.step("charge")
    expect([charge.state, charge.attempts]).to eq(["error", 1])
    expect(charge.error).to include("card declined")
    expect(result.step("ship").state).to eq("pending")
    expect(result.step("notify").state).to eq("complete")
  end

  it "retries any other exception with backoff, keeping its class, message and backtrace" do
    backoff = { "max_attempts" => 2, "backoff" => { "initial" => "20ms", "max" => "20ms" } }
    path = Specs.write_template(
      { "namespace" => "ruby_examples", "name" => "boom", "version" => "1.0.0",
        "steps" => [
          { "name" => "once", "handler" => "Specs::Boom", "config" => { "failures" => 1 }, "retry" => backoff },
          { "name" => "always", "handler" => "Specs::Boom", "config" => { "failures" => 9 }, "retry" => backoff }
        ] }, @tmp
    )
    result = run_task(path, {})
    expect(result.step("once").to_h.values_at(:state, :attempts)).to eq(["complete", 2])
    always = result.step("always")
    expect([always.state, always.attempts]).to eq(["error", 2])
    expect(always.error).to include("ArgumentError: boom on attempt 2")
    expect(always.error).to match(%r{spec/support/handlers\.rb:\d+:in `call'})
  end

  it "interrupts a handler that runs past its step's timeout, and retries it" do
    path = Specs.ruby_template("failures/timeout", @tmp) { |doc| doc["steps"][0]["config"]["ms"] = 20_000 }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    result = run_task(path, {})
    expect(result.state).to eq("error")
    expect(result.step("slow").attempts).to eq(2)
    expect(result.step("slow").error).to include("timed out")
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 15
  end

  it "fails a step whose handler names no StepHandler class, saying which" do
    path = Specs.write_template(
      { "namespace" => "ruby_examples", "name" => "unknown", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "Specs::NoSuchHandler" },
                    { "name" => "b", "handler" => "Specs::NotAHandler" }] }, @tmp
    )
    result = run_task(path, {})
    expect(result.state).to eq("error")
    expect(result.steps.map(&:attempts)).to eq([1, 1])
    expect(result.step("a").error).to include("no Ruby handler named `Specs::NoSuchHandler`")
    expect(result.step("b").error).to include("no Ruby handler named `Specs::NotAHandler`")
  end

  it "fails a step whose result cannot become JSON, naming the path" do
    path = Specs.write_template(
      { "namespace" => "ruby_examples", "name" => "unserializable", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "Specs::Returns", "config" => { "kind" => "time" } }] }, @tmp
    )
    result = run_task(path, {})
    expect(result.state).to eq("error")
    expect(result.step("a").error).to include("results.items[3].at: a Time cannot become JSON")
  end

  it "carries every JSON type from the context to a handler and its result exactly" do
    path = Specs.write_template(
      { "namespace" => "ruby_examples", "name" => "kitchen_sink", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "Specs::Returns" }] }, @tmp
    )
    result = run_task(path, Specs::KITCHEN_SINK)
    expect(result.state).to eq("complete")
    expect(result.results["a"]).to eq(Specs::KITCHEN_SINK)
    expect(result.results["a"]["price"]).to be_a(Float)
  end
end

module Specs
  ORDER = { "order_id" => 1001, "customer" => "ada@example.com",
            "items" => [{ "sku" => "book", "quantity" => 2, "price" => 12.5 },
                        { "sku" => "pen", "quantity" => 1, "price" => 1.99 }] }.freeze

  KITCHEN_SINK = {
    "price" => 99.99, "one" => 1.0, "tiny" => 1.0e-7, "count" => 42, "negative" => -17,
    "i64_max" => 2**63 - 1, "u64_max" => 2**64 - 1, "huge" => 2**200, "huge_negative" => -(10**40),
    "text" => "naïve café ☕ \u{1F680} \"quoted\" \\ back\nline\ttab", "empty" => "",
    "yes" => true, "no" => false, "nothing" => nil,
    "list" => [1, [2, [3, [4, []]]], { "deep" => { "deeper" => [nil] } }], "map" => {}
  }.freeze
end
