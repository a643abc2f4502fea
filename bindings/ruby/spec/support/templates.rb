# frozen_string_literal: true

# The repository's example workflows with Ruby handlers, and what they must compute,
# worked out here independently of the engine.
module Specs
  EXAMPLES = File.expand_path("../../../../examples", __dir__)
  RUBY_TWINS = { "sum" => "Specs::Sum", "noop" => "Specs::Noop", "echo" => "Specs::Echo",
                 "flaky" => "Specs::Flaky", "fail" => "Specs::Fail",
                 "sleep" => "Specs::Sleep" }.freeze

  module_function

  # Writes the example `name` (`tree`, `failures/timeout`) with Ruby handlers into
  # `dir`; `edit` may change the parsed template first. Returns the file's path.
  def ruby_template(name, dir, &edit)
    doc = YAML.safe_load_file(File.join(EXAMPLES, "#{name}.yaml"))
    doc["namespace"] = "ruby_examples"
    doc["steps"].each { |s| s["handler"] = RUBY_TWINS.fetch(s["handler"]) }
    edit&.call(doc)
    write_template(doc, dir)
  end

  def write_template(doc, dir)
    path = File.join(dir, "#{doc['name']}.yaml")
    File.write(path, YAML.dump(doc))
    path
  end

  # Step name → result for a template of Sum, Noop and Echo handlers.
  def expected_results(path, start)
    steps = YAML.safe_load_file(path)["steps"]
    results = {}
    until results.size == steps.size
      steps.each do |s|
        deps = s.fetch("depends_on", [])
        next if results.key?(s["name"]) || !deps.all? { |d| results.key?(d) }

        results[s["name"]] = compute(s, deps.map { |d| results[d] }, start)
      end
    end
    results
  end

  def compute(step, parents, start)
    config = step.fetch("config", nil)
    case step["handler"]
    when "Specs::Sum"
      from = parents.empty? ? start : parents.sum { |r| r.fetch("value", 0) }
      { "value" => (config || {}).fetch("value", 1) + from }
    when "Specs::Noop" then {}
    when "Specs::Echo" then config
    else raise ArgumentError, "no expectation for #{step['handler']}"
    end
  end
end
