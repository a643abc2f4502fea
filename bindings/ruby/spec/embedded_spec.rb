# frozen_string_literal: true

RSpec.describe "Tasker.run (embedded, SQLite)" do
  def run_task(path, context)
    Tasker.run(path, context: context)
  end

  it_behaves_like "the reference workflows"

  it "keeps the task in a database file when given one" do
    db = File.join(@tmp, "tasks.db")
    result = Tasker.run(Specs.ruby_template("linear", @tmp), context: {}, db: db)
    expect(result).to be_complete
    expect(File.size(db)).to be > 0
  end

  it "refuses a context that fails the template's schema, before running anything" do
    order = File.expand_path("../examples/order_fulfillment.yaml", __dir__)
    expect { Tasker.run(order, context: { "order_id" => "x" }) }
      .to raise_error(Tasker::ContextError, /customer|order_id/)
  end

  it "names the file and the problem of a bad template" do
    path = Specs.ruby_template("diamond", @tmp) { |doc| doc["steps"][0]["depends_on"] = ["d"] }
    expect { Tasker.run(path, context: {}) }
      .to raise_error(Tasker::TemplateError, /diamond\.yaml.*cycle/m)
  end

  it "refuses a context that cannot become JSON, naming the path" do
    expect { Tasker.run(Specs.ruby_template("linear", @tmp), context: { "when" => [Time.now] }) }
      .to raise_error(Tasker::SerializationError, "context.when[0]: a Time cannot become JSON " \
                                                  "(use a Hash, Array, String, Integer, Float, true, false or nil)")
  end
end
