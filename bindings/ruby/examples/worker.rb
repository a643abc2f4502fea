# frozen_string_literal: true

# DATABASE_URL=postgres://... ruby -I lib examples/worker.rb — a worker process serving
# the `fulfillment` queue with the handlers of order_fulfillment.rb. Stop it with ctrl-C.
require_relative "order_fulfillment"

Tasker::Worker.new(database_url: ENV.fetch("DATABASE_URL"), queues: ["fulfillment"],
                   concurrency: Integer(ENV.fetch("CONCURRENCY", "4"))).run
