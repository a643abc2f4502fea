# frozen_string_literal: true

# The same workflows on PostgreSQL: a `tasker orchestrator` process, Ruby workers
# (in this process and in child processes), a Rust `tasker worker`, and Tasker::Client.
RSpec.describe "Tasker on PostgreSQL (distributed)" do
  before(:all) do
    reason = Specs::Postgres.unavailable_reason
    if reason
      raise "#{reason} (CI=true: the PostgreSQL specs must run)" if ENV["CI"] == "true"

      warn "skipping PostgreSQL specs: #{reason}"
      skip reason
    end
    @db, @url = Specs::Postgres.create_database
    @logs = Dir.mktmpdir("tasker-pg-spec")
    @log = File.open(File.join(@logs, "processes.log"), "w")
    Specs::Processes.migrate(@url, log: @log)
    @orchestrator = Specs::Processes.tasker("orchestrator", "--database-url", @url, log: @log)
    @worker = Tasker::Worker.new(database_url: @url, queues: %w[ruby_examples fulfillment ruby_q], concurrency: 4)
    @worker_thread = Thread.new { @worker.run }
    @client = Tasker::Client.new(database_url: @url)
  end

  after(:all) do
    @worker&.stop
    @worker_thread&.join(30)
    Specs::Processes.stop(@orchestrator) if @orchestrator
    Specs::Postgres.drop_database(@db) if @db
    FileUtils.rm_rf(@logs) if @logs
  end

  def run_task(path, context)
    @client.wait(@client.submit(path, context: context), timeout: 60)
  end

  def processes_log
    File.read(File.join(@logs, "processes.log"))
  end

  it_behaves_like "the reference workflows"

  it "refuses a database whose schema `tasker migrate` has not set up, changing nothing" do
    db, url = Specs::Postgres.create_database
    expect { Tasker::Client.new(database_url: url) }.to raise_error(Tasker::Error, /run `tasker migrate`/)
    schemas, = Open3.capture2e("psql", url, "-Atc", "SELECT count(*) FROM pg_namespace WHERE nspname IN ('tasker', 'pgmq')")
    expect(schemas.strip).to eq("0")
  ensure
    Specs::Postgres.drop_database(db) if db
  end

  it "routes steps by their queue to a Ruby worker and a Rust worker" do
    rust_worker = Specs::Processes.tasker("worker", "--queue", "rust_q", "--database-url", @url, log: @log)
    path = Specs.write_template(
      { "namespace" => "mixed", "name" => "by_queue", "version" => "1.0.0",
        "steps" => [
          { "name" => "a", "handler" => "Specs::RubySum", "queue" => "ruby_q" },
          { "name" => "b", "handler" => "sum", "queue" => "rust_q", "depends_on" => ["a"] },
          { "name" => "c", "handler" => "Specs::RubySum", "queue" => "ruby_q", "depends_on" => ["b"] },
          { "name" => "d", "handler" => "sum", "queue" => "rust_q", "depends_on" => ["c"] }
        ] }, @tmp
    )
    result = run_task(path, { "start" => 10 })
    expect(result.state).to eq("complete"), processes_log
    expect(result.results).to eq("a" => { "value" => 11, "by" => "ruby" }, "b" => { "value" => 12 },
                                 "c" => { "value" => 13, "by" => "ruby" }, "d" => { "value" => 14 })
  ensure
    Specs::Processes.stop(rust_worker) if rust_worker
  end

  it "runs a step again when its Ruby worker process is killed mid-step" do
    attempts_log = File.join(@tmp, "attempts.log")
    path = Specs.write_template(
      { "namespace" => "crash", "name" => "killed", "version" => "1.0.0",
        "steps" => [{ "name" => "slow", "handler" => "Specs::Logged", "queue" => "crash_q", "timeout" => "2s",
                      "config" => { "log" => attempts_log, "ms" => 1500 } }] }, @tmp
    )
    first = Specs::Processes.ruby_worker(@url, ["crash_q"], log: @log)
    id = @client.submit(path)
    deadline = Time.now + 30
    sleep 0.05 until File.exist?(attempts_log) || Time.now > deadline
    expect(File.exist?(attempts_log)).to be(true), processes_log
    Specs::Processes.stop(first, "KILL")
    second = Specs::Processes.ruby_worker(@url, ["crash_q"], log: @log)
    result = @client.wait(id, timeout: 60)
    expect(result.state).to eq("complete"), processes_log
    expect(File.readlines(attempts_log, chomp: true)).to eq(%w[1 2])
    expect(result.results["slow"]).to eq("attempt" => 2)
  ensure
    Specs::Processes.stop(second) if second
  end

  it "stops a Ruby worker process on SIGTERM after its step in flight finishes" do
    attempts_log = File.join(@tmp, "attempts.log")
    path = Specs.write_template(
      { "namespace" => "graceful", "name" => "term", "version" => "1.0.0",
        "steps" => [{ "name" => "slow", "handler" => "Specs::Logged", "queue" => "term_q",
                      "config" => { "log" => attempts_log, "ms" => 1000 } }] }, @tmp
    )
    worker = Specs::Processes.ruby_worker(@url, ["term_q"], log: @log)
    id = @client.submit(path)
    sleep 0.05 until File.exist?(attempts_log)
    Process.kill("TERM", worker)
    _, status = Process.wait2(worker)
    expect(status.exitstatus).to eq(0)
    result = @client.wait(id, timeout: 10)
    expect([result.state, result.step("slow").attempts]).to eq(["complete", 1])
  end

  it "lets an operator resolve a failed step so that its children run" do
    id = @client.submit(Specs.ruby_template("failures/permanent_failure", @tmp))
    failed = @client.wait(id, timeout: 30)
    expect(failed.state).to eq("error")
    expect(@client.resolve(failed.step("charge").id, { "charged" => "by hand" })).to eq("in_progress")
    result = @client.wait(id, timeout: 30)
    expect(result.state).to eq("complete")
    expect(result.step("charge").state).to eq("resolved_manually")
    expect(result.results["charge"]).to eq("charged" => "by hand")
    expect(result.step("ship").state).to eq("complete")
    of_task = @client.history(id).select { |t| t["step_id"].nil? }.map { |t| t["to"] }
    expect(of_task).to eq(%w[pending in_progress error in_progress complete])
    expect(@client.dead_letters(queue: "ruby_examples")).to eq([])
    expect { @client.dead_letters(queue: "Bad Name") }.to raise_error(Tasker::Error, /queue `Bad Name`/)
  end

  it "delivers a signal to the step that waits for it, and refuses a second" do
    path = Specs.write_template(
      { "namespace" => "signals", "name" => "approval", "version" => "1.0.0",
        "steps" => [
          { "name" => "draft", "handler" => "Specs::Noop", "queue" => "ruby_q" },
          { "name" => "approve", "depends_on" => ["draft"],
            "wait_for" => { "signal" => "approval", "timeout" => "1h" } },
          { "name" => "publish", "handler" => "Specs::Noop", "queue" => "ruby_q", "depends_on" => ["approve"] }
        ] }, @tmp
    )
    id = @client.submit(path)
    deadline = Time.now + 30
    sleep 0.05 until @client.status(id).step("approve").state == "waiting" || Time.now > deadline
    approve = @client.status(id).step("approve")
    expect(approve.state).to eq("waiting"), processes_log
    expect(approve.waits_for).to eq("approval")
    expect(@client.signal(id, "approval", { "approved_by" => "ana" })).to eq(
      "task_id" => id, "signal" => "approval", "completed" => [approve.id], "task_state" => "in_progress"
    )
    expect { @client.signal(id, "approval") }.to raise_error(Tasker::ConflictError, /already delivered/)
    result = @client.wait(id, timeout: 30)
    expect(result.state).to eq("complete")
    expect(result.results["approve"]).to eq("approved_by" => "ana")
    expect { @client.signal(id, "late", {}) }.to raise_error(Tasker::ConflictError, /is complete/)
  end

  it "creates, lists, pauses and deletes schedules" do
    path = Specs.write_template(
      { "namespace" => "ruby_sched", "name" => "nightly", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "Specs::Noop", "queue" => "ruby_q" }] }, @tmp
    )
    created = @client.schedule_create("nightly", path, cron: "0 2 * * *", timezone: "Europe/Paris",
                                                       context: { "region" => "eu" })
    expect(created).to include("name" => "nightly", "cron" => "0 2 * * *", "catch_up" => "once",
                               "context" => { "region" => "eu" }, "paused" => false)
    expect(created["next_fire"]).to be_a(String)
    expect(@client.schedules.map { |s| s["name"] }).to eq(["nightly"])
    expect { @client.schedule_create("nightly", path, cron: "0 3 * * *") }
      .to raise_error(Tasker::ConflictError, /exists/)
    expect { @client.schedule_create("other", path, cron: "0 3 * *") }
      .to raise_error(Tasker::Error, /has 4 fields/)
    expect { @client.schedule_create("other", path, cron: "@every 1s", catch_up: :sometimes) }
      .to raise_error(ArgumentError, /catch-up `sometimes`/)
    expect(@client.schedule_pause("nightly")).to be(true)
    expect(@client.schedules.first["paused"]).to be(true)
    expect(@client.schedule_resume("nightly")).to be(true)
    expect(@client.schedule_delete("nightly")).to be_nil
    expect(@client.schedules).to eq([])
    expect { @client.schedule_delete("nightly") }.to raise_error(Tasker::NotFoundError)
  end

  it "retries the failed steps of an errored task" do
    path = Specs.write_template(
      { "namespace" => "ruby_examples", "name" => "switched", "version" => "1.0.0",
        "steps" => [{ "name" => "a", "handler" => "Specs::Switched" }] }, @tmp
    )
    Specs::Switch.on = true
    id = @client.submit(path)
    expect(@client.wait(id, timeout: 30).state).to eq("error")
    Specs::Switch.on = false
    expect(@client.retry(id)).to eq(1)
    expect(@client.wait(id, timeout: 30).results["a"]).to eq("switched" => false)
  end

  it "returns the same task for the same idempotency key, and cancels" do
    path = Specs.ruby_template("failures/timeout", @tmp) { |doc| doc["steps"][0]["config"]["ms"] = 20_000 }
    id = @client.submit(path, idempotency_key: "order-1")
    expect(@client.submit(path, idempotency_key: "order-1")).to eq(id)
    expect(@client.cancel(id)).to eq("cancelled")
    expect(@client.status(id).state).to eq("cancelled")
    expect { @client.status("01a21b7e-8efb-7081-ae3f-03e03d380a55") }.to raise_error(Tasker::NotFoundError)
    expect { @client.status("nope") }.to raise_error(ArgumentError, /not a task id/)
    expect { @client.wait(@client.submit(path), timeout: 0.1) }
      .to raise_error(Tasker::TimeoutError)
  end
end
