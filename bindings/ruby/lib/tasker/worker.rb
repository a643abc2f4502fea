# frozen_string_literal: true

module Tasker
  # A worker process of a distributed deployment: takes the steps of `queues` (all
  # queues when empty) from PostgreSQL and runs their handlers on `concurrency` Ruby
  # threads. Rust does the queue and database work with the GVL released; built-in
  # handlers (`noop`, `sum`, ...) run in Rust. SIGINT and SIGTERM stop it: it takes no
  # new step, finishes the ones in flight, and `run` returns.
  class Worker
    def initialize(database_url: ENV.fetch("DATABASE_URL"), queues: [], concurrency: 4)
      @database_url = database_url
      @queues = Array(queues).map(&:to_s)
      @concurrency = Integer(concurrency)
      @session = nil
    end

    def run
      @session = Native::Session.worker(@database_url, @queues, @concurrency)
      previous = %w[INT TERM].to_h { |signal| [signal, trap(signal) { @session.stop }] }
      warn "tasker worker serving #{@queues.empty? ? 'every queue' : @queues.join(', ')} " \
           "on #{@concurrency} threads (pid #{Process.pid})"
      Dispatcher.serve(@session, @concurrency)
      warn "tasker worker stopped"
    ensure
      previous&.each { |signal, handler| trap(signal, handler) }
    end

    # Asks a running worker to stop (from another thread).
    def stop
      @session&.stop
    end
  end
end
