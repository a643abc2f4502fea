# frozen_string_literal: true

# A scratch PostgreSQL database per example group, and the `tasker` processes of a
# distributed deployment. Without a reachable server the PostgreSQL specs skip with one
# line, except under CI=true, where they fail.
module Specs
  module Postgres
    BASE_URL = ENV.fetch("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")

    module_function

    def unavailable_reason
      _out, err, status = Open3.capture3("psql", BASE_URL, "-Atc", "select 1")
      status.success? ? nil : "PostgreSQL at #{BASE_URL} is unreachable: #{err.lines.first&.strip}"
    rescue Errno::ENOENT
      "psql is not installed"
    end

    # Skips (or fails under CI=true) the current group when there is no server.
    def require_server!(group)
      reason = unavailable_reason
      return unless reason
      raise "#{reason} (CI=true: PostgreSQL specs must run)" if ENV["CI"] == "true"

      warn "skipping PostgreSQL specs: #{reason}"
      group.skip(reason)
    end

    # [name, url] of a new empty database.
    def create_database
      name = "tasker_rb_#{SecureRandom.hex(6)}"
      psql!("CREATE DATABASE #{name}")
      [name, BASE_URL.sub(%r{/[^/?]*(\?.*)?\z}, "/#{name}\\1")]
    end

    def drop_database(name)
      psql!("DROP DATABASE IF EXISTS #{name} WITH (FORCE)")
    end

    def psql!(sql)
      out, status = Open3.capture2e("psql", BASE_URL, "-Atc", sql)
      raise "psql failed: #{out}" unless status.success?

      out
    end
  end

  # `tasker` binary processes (orchestrators, Rust workers) and Ruby worker processes.
  module Processes
    BIN = ENV.fetch("RSPEC_TASKER_BIN") { File.expand_path("../../../../target/debug/tasker", __dir__) }
    LIB = File.expand_path("../../lib", __dir__)

    module_function

    def tasker(*args, log:)
      Process.spawn(BIN, *args, out: log, err: log)
    end

    # `tasker migrate`: every other command needs the schema in place.
    def migrate(url, log:)
      system(BIN, "migrate", "--database-url", url, out: log, err: log) or raise "tasker migrate failed"
    end

    # A Ruby worker process with the spec handlers loaded.
    def ruby_worker(url, queues, log:)
      script = "require 'tasker'; require '#{File.join(__dir__, 'handlers')}'; " \
               "Tasker::Worker.new(database_url: ARGV[0], queues: ARGV[1].split(','), concurrency: 2).run"
      Process.spawn("ruby", "-I", LIB, "-e", script, url, queues.join(","), out: log, err: log)
    end

    def stop(pid, signal = "TERM")
      Process.kill(signal, pid)
      Process.wait(pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
  end
end
