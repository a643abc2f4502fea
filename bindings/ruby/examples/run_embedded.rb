# frozen_string_literal: true

# ruby -I lib examples/run_embedded.rb — one order, in this process, on SQLite.
require_relative "order_fulfillment"

order = { "order_id" => 1001, "customer" => "ada@example.com",
          "items" => [{ "sku" => "book", "quantity" => 2, "price" => 12.5 },
                      { "sku" => "pen", "quantity" => 1, "price" => 1.99 }] }
result = Tasker.run(File.join(__dir__, "order_fulfillment.yaml"), context: order)
puts "task #{result.task_id}: #{result.state}"
result.steps.each { |s| puts "  #{s.name}: #{s.state} #{s.results.inspect}" }
exit(result.complete? ? 0 : 1)
