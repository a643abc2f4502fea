//! Real `tasker` processes on one PostgreSQL database (a scratch database per test):
//!
//! - `many_processes_*`: 2 orchestrators and 3 workers complete 500 mixed-DAG tasks,
//!   every step completed exactly once (from the transitions table);
//! - `kill_9_worker_*`: a worker killed mid-step; the step runs again after its
//!   visibility timeout and the task completes;
//! - `kill_9_orchestrator_*`: one orchestrator killed mid-run; the other finishes;
//! - `chaos_*`: 1,000 tasks while processes are killed -9 (and restarted) and the
//!   database drops their connections; every task completes, every step once;
//! - `cli_*`: submit with an idempotency key, wait, retry, resolve, cancel, templates;
//! - `concurrency_*`: tasks of one concurrency key never overlap across processes, and
//!   a worker killed -9 holding the slot frees it once its step is recovered;
//! - `schedules_*`: two orchestrators fire each tick of a schedule once, and catch up
//!   once on the ticks missed while neither ran;
//! - `rate_limit_*`: 50 steps under 10 a second across two workers start over ≥ 4.5 s,
//!   none failed, each on its first attempt.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::Proc;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::{Store, TaskListParams};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::postgres::PgStore;
use tasker_store::postgres::testing::ScratchDatabase;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn tasker(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasker"));
    c.env_remove("RUST_LOG")
        .env("DATABASE_URL", url)
        .env("TASKER_HANDLERS_SHELL_ALLOW", "sh");
    c
}

/// A `tasker` process, killed when dropped if it is still running.
impl Proc {
    fn spawn(url: &str, args: &[&str]) -> Self {
        let child = tasker(url)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tasker starts");
        Proc(child)
    }

    fn kill_9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }
}

fn run(url: &str, args: &[&str]) -> Output {
    tasker(url).args(args).output().expect("tasker runs")
}

async fn setup() -> Option<(ScratchDatabase, Arc<PgStore>)> {
    let db = ScratchDatabase::create().await?;
    let migrate = run(&db.url, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let store = Arc::new(PgStore::connect(&db.url, 4).await.expect("connect"));
    Some((db, store))
}

/// A submitting engine in this test process (no orchestrator, no workers).
fn submitter(store: Arc<PgStore>) -> Engine<PgStore> {
    let config = EngineConfig {
        orchestrator: false,
        worker: None,
        ..EngineConfig::embedded()
    };
    Engine::new(store, HandlerRegistry::new(), config)
}

/// Waits until no task is pending or in progress, failing after `limit`.
async fn until_all_finished(store: &PgStore, limit: Duration) {
    let start = Instant::now();
    loop {
        let open = store.task_list_unfinished().await.unwrap().len();
        if open == 0 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{open} tasks still unfinished after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Steps completed other than exactly once, and the number of completions.
async fn completion_counts(store: &PgStore) -> (i64, i64) {
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT step_id FROM tasker.transitions
         WHERE step_id IS NOT NULL AND to_state = 'complete' GROUP BY step_id HAVING count(*) <> 1) w",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.transitions WHERE step_id IS NOT NULL AND to_state = 'complete'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    (wrong, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_complete_500_mixed_dags_each_step_once() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let mut procs = vec![
        Proc::spawn(url, &["orchestrator"]),
        Proc::spawn(url, &["orchestrator"]),
    ];
    for _ in 0..3 {
        procs.push(Proc::spawn(url, &["worker", "--concurrency", "8"]));
    }
    let engine = submitter(store.clone());
    let template = tasker_core::template::load_path(&examples().join("mixed_dag.yaml"))
        .unwrap()
        .remove(0);
    for i in 0..500 {
        engine
            .submit(&template, &format!(r#"{{"start": {i}}}"#), None)
            .await
            .unwrap();
    }
    until_all_finished(&store, Duration::from_secs(240)).await;

    let complete = store
        .task_list(TaskListParams {
            state: Some(TaskState::Complete),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(complete.len(), 500);
    let (wrong, total) = completion_counts(&store).await;
    assert_eq!(wrong, 0, "steps completed other than exactly once");
    assert_eq!(total, 500 * 7);
    // Data flowed within each task: publish = 121 + 3 × start (see the example).
    let sample = store.task_get(complete[0].id).await.unwrap();
    let start: i64 = serde_json::from_str::<serde_json::Value>(sample.task.context.get()).unwrap()
        ["start"]
        .as_i64()
        .unwrap();
    let publish: serde_json::Value =
        serde_json::from_str(sample.steps[6].results.as_ref().unwrap().get()).unwrap();
    assert_eq!(publish["value"], 121 + 3 * start);

    for p in &mut procs {
        assert_eq!(p.terminate(), Some(0), "graceful stop on SIGTERM");
    }
}

const SLEEPY: &str = "namespace: crash\nname: sleepy\nversion: 1.0.0\nsteps:\n  - name: nap\n    handler: sleep\n    config: {ms: 1500}\n    timeout: 3s\n  - name: after\n    handler: sum\n    depends_on: [nap]\n";

/// The schedule's ticks that fired: (fire time, fired at), microseconds, oldest first.
async fn fired_ticks(store: &PgStore) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT fire_at, fired_at FROM tasker.schedule_ticks ORDER BY fire_at")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_each_tick_once_across_orchestrators_and_catch_up_once() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let linear = examples().join("linear.yaml");
    let mut orchestrators = [
        Proc::spawn(url, &["orchestrator"]),
        Proc::spawn(url, &["orchestrator"]),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = run(
        url,
        &[
            "schedule",
            "create",
            linear.to_str().unwrap(),
            "--cron",
            "@every 1s",
            "--context",
            r#"{"start": 1}"#,
            "--name",
            "heartbeat",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    tokio::time::sleep(Duration::from_millis(10_300)).await;
    for o in &mut orchestrators {
        o.terminate();
    }
    let before = fired_ticks(&store).await;
    assert!(
        (9..=11).contains(&before.len()),
        "{} ticks in 10 s: {before:?}",
        before.len()
    );
    for pair in before.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1_000_000, "every tick, each once");
    }
    let tasks = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker.tasks")
            .fetch_one(store.pool())
            .await
            .unwrap();
        n as usize
    };
    assert_eq!(tasks().await, before.len(), "one task per tick");

    // Neither runs for five ticks; restarted, they fire one task for the missed ticks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut orchestrators = [
        Proc::spawn(url, &["orchestrator"]),
        Proc::spawn(url, &["orchestrator"]),
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;
    for o in &mut orchestrators {
        o.terminate();
    }
    let all = fired_ticks(&store).await;
    let after: Vec<(i64, i64)> = all[before.len()..].to_vec();
    let late: Vec<&(i64, i64)> = after
        .iter()
        .filter(|(fire_at, fired_at)| fired_at - fire_at > 1_000_000)
        .collect();
    assert_eq!(late.len(), 1, "one catch-up tick: {after:?}");
    assert_eq!(
        late[0].0 - before.last().unwrap().0,
        1_000_000,
        "the first missed tick stands for the others"
    );
    assert!(after.len() >= 2, "then on time again: {after:?}");
    assert_eq!(tasks().await, all.len(), "one task per tick");
}

const RATED: &str = "namespace: rated\nname: partner_calls\nversion: 1.0.0\nsteps:\n  \
    - {name: call, handler: noop, for_each: context.items, rate_limit: {key: partner_api, per_second: 10}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_workers_without_failing_or_spending_attempts() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let _processes = [
        Proc::spawn(url, &["orchestrator"]),
        Proc::spawn(url, &["worker"]),
        Proc::spawn(url, &["worker"]),
    ];
    let template = tasker_core::template::parse_template(RATED, "rated.yaml").unwrap();
    let items: Vec<u32> = (0..50).collect();
    let context = format!(r#"{{"items": {items:?}}}"#);
    let task = submitter(store.clone())
        .submit(&template, &context, None)
        .await
        .unwrap()
        .task_id;
    until_all_finished(&store, Duration::from_secs(60)).await;
    let detail = store.task_get(task).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Complete);
    let mut started: Vec<i64> = detail
        .steps
        .iter()
        .filter(|s| s.name.starts_with("call["))
        .map(|s| {
            assert_eq!(
                (s.state, s.attempts),
                (StepState::Complete, 1),
                "{}",
                s.name
            );
            s.started_at.expect("started").0
        })
        .collect();
    assert_eq!(started.len(), 50);
    started.sort_unstable();
    let spread = Duration::from_micros((started[49] - started[0]) as u64);
    assert!(
        spread >= Duration::from_millis(4500),
        "50 starts over {spread:?}"
    );
    for (i, from) in started.iter().enumerate() {
        let within = started[i..]
            .iter()
            .filter(|t| **t - from < 1_000_000)
            .count();
        assert!(within <= 10 + 10, "{within} starts within one second");
    }
}

const KEYED: &str = "namespace: keyed\nname: per_account\nversion: 1.0.0\n\
    concurrency: {key: context.account, limit: 1}\n\
    steps:\n  - {name: work, handler: sleep, config: {ms: 200}, timeout: 5s}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_of_one_key_holds_across_processes_and_a_killed_holder_frees_it() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let _orchestrators = [
        Proc::spawn(url, &["orchestrator"]),
        Proc::spawn(url, &["orchestrator"]),
    ];
    let mut doomed = Proc::spawn(url, &["worker", "--grace", "1s"]);
    let template = tasker_core::template::parse_template(KEYED, "keyed.yaml").unwrap();
    let submitter = submitter(store.clone());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let context = r#"{"account": "acme"}"#;
        tasks.push(
            submitter
                .submit(&template, context, None)
                .await
                .unwrap()
                .task_id,
        );
    }
    let start = Instant::now();
    loop {
        let detail = store.task_get(tasks[0]).await.unwrap();
        if detail.steps[0].state == StepState::InProgress {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill_9();
    let _workers = [
        Proc::spawn(url, &["worker", "--grace", "1s"]),
        Proc::spawn(url, &["worker", "--grace", "1s"]),
    ];
    until_all_finished(&store, Duration::from_secs(120)).await;

    for &task in &tasks {
        let detail = store.task_get(task).await.unwrap();
        assert_eq!(detail.task.state, TaskState::Complete);
    }
    // Each task's time in progress, as positions in the transitions' order: a task
    // starts only after the commit that ended the one before it.
    let spans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT task_id::text,
                min(id) FILTER (WHERE to_state = 'in_progress'),
                max(id) FILTER (WHERE to_state = 'complete')
         FROM tasker.transitions WHERE step_id IS NULL GROUP BY task_id ORDER BY 2",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(spans.len(), 10);
    for pair in spans.windows(2) {
        assert!(
            pair[1].1 > pair[0].2,
            "task {} started before task {} ended: {spans:?}",
            pair[1].0,
            pair[0].0
        );
    }
    assert_eq!(
        spans[0].0,
        tasks[0].to_string(),
        "the oldest started first and kept its slot through the kill"
    );
    let first = store.task_get(tasks[0]).await.unwrap();
    assert_eq!(first.steps[0].attempts, 2, "its lost attempt counts");
    assert_eq!(completion_counts(&store).await, (0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_worker_mid_step_runs_it_again_after_the_visibility_timeout() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let _orchestrator = Proc::spawn(url, &["orchestrator"]);
    let mut doomed = Proc::spawn(url, &["worker", "--grace", "1s"]);
    let template = tasker_core::template::parse_template(SLEEPY, "sleepy.yaml").unwrap();
    let task = submitter(store.clone())
        .submit(&template, "{}", None)
        .await
        .unwrap()
        .task_id;

    let start = Instant::now();
    loop {
        let detail = store.task_get(task).await.unwrap();
        if detail.steps[0].state == StepState::InProgress {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.kill_9();
    let killed_at = Instant::now();
    let _survivor = Proc::spawn(url, &["worker", "--grace", "1s"]);
    until_all_finished(&store, Duration::from_secs(60)).await;

    let detail = store.task_get(task).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(detail.steps[0].attempts, 2, "the lost attempt counts");
    assert!(
        killed_at.elapsed() >= Duration::from_secs(1),
        "not before the visibility timeout"
    );
    let trail = store.transition_list(task).await.unwrap();
    assert!(
        trail
            .iter()
            .any(|t| t.reason.contains("worker lost during attempt 1")),
        "{trail:?}"
    );
    assert_eq!(completion_counts(&store).await, (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_orchestrator_mid_run_the_other_finishes_the_work() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let mut first = Proc::spawn(url, &["orchestrator"]);
    let _second = Proc::spawn(url, &["orchestrator"]);
    let _worker = Proc::spawn(url, &["worker", "--concurrency", "8"]);
    let engine = submitter(store.clone());
    let template = tasker_core::template::load_path(&examples().join("diamond.yaml"))
        .unwrap()
        .remove(0);
    for i in 0..100 {
        engine.submit(&template, "{}", None).await.unwrap();
        if i == 30 {
            first.kill_9();
        }
    }
    until_all_finished(&store, Duration::from_secs(90)).await;
    let done = store
        .task_list(TaskListParams {
            state: Some(TaskState::Complete),
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 100);
    assert_eq!(completion_counts(&store).await, (0, 400));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_operates_a_distributed_task_end_to_end() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let _orchestrator = Proc::spawn(url, &["orchestrator"]);
    let _worker = Proc::spawn(
        url,
        &["worker", "--queue", "examples", "--concurrency", "2"],
    );
    let failing = examples().join("failures/permanent_failure.yaml");
    let failing = failing.to_str().unwrap();

    // Submit twice with one key: one task.
    let a = run(url, &["submit", failing, "--idempotency-key", "order-1"]);
    let b = run(url, &["submit", failing, "--idempotency-key", "order-1"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let id = stdout(&a);
    assert_eq!(id, stdout(&b));

    let waited = run(url, &["wait", &id, "--timeout", "30s"]);
    assert_eq!(waited.status.code(), Some(1), "a task in error exits 1");
    assert!(
        stdout(&waited).contains("charge: card declined"),
        "{}",
        stdout(&waited)
    );

    // Resolve the failed step: the task completes.
    let status = run(url, &["status", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(v["state"], "error");
    let detail = store.task_get(id.parse().unwrap()).await.unwrap();
    let charge = detail
        .steps
        .iter()
        .find(|s| s.name == "charge")
        .unwrap()
        .id
        .to_string();
    let resolved = run(
        url,
        &["resolve", &charge, "--results", r#"{"manual": true}"#],
    );
    assert!(
        resolved.status.success(),
        "{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    let waited = run(url, &["wait", &id, "--timeout", "30s"]);
    assert_eq!(waited.status.code(), Some(0), "{}", stdout(&waited));

    // Retry of a task that is not in error is refused with a clear line.
    let retry = run(url, &["retry", &id]);
    assert_eq!(retry.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&retry.stderr).contains("only a task in error can be retried"));

    // A waiting task times out with exit 3, and can be cancelled.
    let slow = examples().join("failures/long_running.yaml");
    let slow_id = stdout(&run(url, &["submit", slow.to_str().unwrap()]));
    let waited = run(url, &["wait", &slow_id, "--timeout", "200ms"]);
    assert_eq!(waited.status.code(), Some(3));
    let cancelled = run(url, &["cancel", &slow_id]);
    assert!(
        stdout(&cancelled).contains("cancelled"),
        "{}",
        stdout(&cancelled)
    );
    assert_eq!(run(url, &["wait", &slow_id]).status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_retry_reruns_a_failed_task_and_templates_are_immutable() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    // The step fails until a flag file exists: an outage an operator fixes, then retries.
    let flag = dir.path().join("fixed");
    let script = format!("test -f {} && echo '{{}}' || exit 3", flag.display());
    let yaml = format!(
        "namespace: ops\nname: retried\nversion: 1.0.0\nsteps:\n  - name: once\n    handler: shell\n    config: {{command: [sh, -c, {}]}}\n    retry: {{max_attempts: 1}}\n",
        serde_json::to_string(&script).unwrap()
    );
    std::fs::write(&path, &yaml).unwrap();
    let path = path.to_str().unwrap();

    let registered = run(url, &["template", "register", path]);
    assert_eq!(stdout(&registered), "registered  ops/retried@1.0.0");
    assert_eq!(
        stdout(&run(url, &["template", "register", path])),
        "unchanged   ops/retried@1.0.0"
    );
    std::fs::write(path, yaml.replace("max_attempts: 1", "max_attempts: 2")).unwrap();
    let conflict = run(url, &["template", "register", path]);
    assert_eq!(conflict.status.code(), Some(2));
    let err = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        err.contains("ops/retried@1.0.0 is already registered with different content"),
        "{err}"
    );
    std::fs::write(path, &yaml).unwrap();

    let _orchestrator = Proc::spawn(url, &["orchestrator"]);
    let _worker = Proc::spawn(url, &["worker"]);
    let id = stdout(&run(url, &["submit", path]));
    assert_eq!(
        run(url, &["wait", &id, "--timeout", "30s"]).status.code(),
        Some(1)
    );
    std::fs::write(&flag, "").unwrap();
    let retried = run(url, &["retry", &id]);
    assert!(
        stdout(&retried).contains("1 failed step(s) enqueued again"),
        "{}",
        stdout(&retried)
    );
    assert_eq!(
        run(url, &["wait", &id, "--timeout", "30s"]).status.code(),
        Some(0)
    );
    let detail = store.task_get(id.parse().unwrap()).await.unwrap();
    assert_eq!(
        (detail.task.state, detail.steps[0].attempts),
        (TaskState::Complete, 1)
    );
    let trail = store.transition_list(detail.task.id).await.unwrap();
    assert_eq!(
        trail
            .iter()
            .filter(|t| t.reason == "operator retry")
            .count(),
        2,
        "task and step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_dead_letters_unparseable_messages_and_carries_on() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    sqlx::query("SELECT pgmq.create('examples')")
        .execute(store.pool())
        .await
        .unwrap();
    for garbage in [r#""not a step""#, r#"{"task_id": "nope"}"#] {
        sqlx::query("SELECT pgmq.send('examples', $1::jsonb)")
            .bind(garbage)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let _orchestrator = Proc::spawn(url, &["orchestrator"]);
    let _worker = Proc::spawn(url, &["worker", "--queue", "examples"]);
    let diamond = examples().join("diamond.yaml");
    let id = stdout(&run(url, &["submit", diamond.to_str().unwrap()]));
    assert_eq!(
        run(url, &["wait", &id, "--timeout", "30s"]).status.code(),
        Some(0)
    );
    let dead = store.queue_dead_letters("examples").await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .all(|d| d.reason.starts_with("unparseable step message") && d.read_ct == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_and_worker_serve_metrics_health_and_readiness() {
    let Some((db, _store)) = setup().await else {
        return;
    };
    let url = db.url.as_str();
    let mut orchestrator = Proc::spawn(url, &["orchestrator", "--metrics-addr", "127.0.0.1:0"]);
    let (orchestrator_addr, _) = support::address(&mut orchestrator.0, "metrics on");
    let mut worker = Proc::spawn(url, &["worker", "--metrics-addr", "127.0.0.1:0"]);
    let (worker_addr, _) = support::address(&mut worker.0, "metrics on");

    let linear = examples().join("linear.yaml");
    let submitted = run(url, &["submit", linear.to_str().unwrap()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let waited = run(url, &["wait", &stdout(&submitted), "--timeout", "60s"]);
    assert_eq!(waited.status.code(), Some(0), "{}", stdout(&waited));

    for addr in [&orchestrator_addr, &worker_addr] {
        assert_eq!(support::http(addr, "GET", "/health", "", None).0, 200);
        assert_eq!(support::http(addr, "GET", "/ready", "", None).0, 200);
    }
    let (status, metrics) = support::http(&worker_addr, "GET", "/metrics", "", None);
    assert_eq!(status, 200);
    for expected in [
        "tasker_steps_finished_total{state=\"complete\"} 4\n",
        "tasker_step_duration_seconds_count{namespace=\"examples\",handler=\"sum\"} 4\n",
        "tasker_tasks_finished_total{state=\"complete\"} 1\n",
        "tasker_queue_depth{queue=\"examples\"} 0\n",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    assert_eq!(worker.terminate(), Some(0));
    assert_eq!(orchestrator.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_migrate_changes_the_schema_and_a_read_only_role_can_look() {
    use sqlx::Connection;

    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let url = db.url.as_str();
    let status = run(url, &["status"]);
    assert_eq!(status.status.code(), Some(2));
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        err.trim().starts_with(
            "tasker: error: the database schema is at version none, this tasker needs "
        ) && err.trim().ends_with(": run `tasker migrate`"),
        "{err}"
    );
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname IN ('tasker', 'pgmq')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(schemas, 0, "status created nothing");

    assert!(run(url, &["migrate"]).status.success());
    // A role that may read and nothing else.
    let role = format!("tasker_ro_{}", std::process::id());
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA tasker, pgmq, public TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA tasker, pgmq, public TO {role}"),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
    let (scheme, rest) = url.split_once("://").unwrap();
    let host_and_db = rest.split_once('@').map_or(rest, |(_, r)| r);
    let read_only = format!("{scheme}://{role}@{host_and_db}");
    let listed = run(&read_only, &["status"]);
    let looked = listed.status.code();
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
    assert_eq!(
        looked,
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

/// A chain whose first step takes a while, so that kills find steps in flight.
/// Attempts enough that the chaos cannot use them all up: a killed worker or a dropped
/// connection costs its step an attempt, and a step out of attempts fails for good.
const NAPPING: &str = "namespace: chaos\nname: napping\nversion: 1.0.0\ntimeout: 3s\nretry: {max_attempts: 20}\nsteps:\n  - {name: nap, handler: sleep, config: {ms: 30}}\n  - {name: after, handler: sum, depends_on: [nap]}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_9_and_dropped_connections_lose_and_double_nothing() {
    let Some((db, _)) = setup().await else {
        return;
    };
    // The test's own connections are named, so that the chaos spares them.
    let url = db.url.as_str();
    let own = format!("{url}?application_name=chaos-test");
    let store = Arc::new(PgStore::connect(&own, 4).await.expect("connect"));
    let roles: [&[&str]; 5] = [
        &["orchestrator"],
        &["orchestrator"],
        &["worker", "--concurrency", "8", "--grace", "1s"],
        &["worker", "--concurrency", "8", "--grace", "1s"],
        &["worker", "--concurrency", "8", "--grace", "1s"],
    ];
    let logs = tempfile::tempdir().unwrap();
    let spawn = |i: usize, generation: usize| {
        let log = std::fs::File::create(logs.path().join(format!("{i}.{generation}.log"))).unwrap();
        let child = tasker(url)
            .args(roles[i])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tasker starts");
        Proc(child)
    };
    let mut procs: Vec<Proc> = (0..roles.len()).map(|i| spawn(i, 0)).collect();

    let engine = submitter(store.clone());
    // The example, with steps that a lost worker gives back within seconds.
    let text = std::fs::read_to_string(examples().join("mixed_dag.yaml")).unwrap();
    let text = text.replace(
        "\nsteps:\n",
        "\ntimeout: 3s\nretry: {max_attempts: 20}\nsteps:\n",
    );
    let mixed = tasker_core::template::parse_template(&text, "mixed_dag.yaml").unwrap();
    let napping = tasker_core::template::parse_template(NAPPING, "napping.yaml").unwrap();
    for i in 0..500 {
        for template in [&mixed, &napping] {
            engine
                .submit(template, &format!(r#"{{"start": {i}}}"#), None)
                .await
                .unwrap();
        }
    }

    // Kill a random process (and start its replacement) or drop every connection of
    // the deployment, every few hundred milliseconds, for as long as work remains or
    // 30 s, whichever is first.
    let mut rng = fastrand::Rng::with_seed(11);
    let (mut kills, mut drops) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30)
        && !store.task_list_unfinished().await.unwrap().is_empty()
    {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..600))).await;
        if rng.bool() {
            let i = rng.usize(0..procs.len());
            procs[i].kill_9();
            kills += 1;
            procs[i] = spawn(i, kills);
        } else {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND application_name <> 'chaos-test'",
            )
            .execute(store.pool())
            .await
            .unwrap();
            drops += 1;
        }
    }
    assert!(
        kills + drops >= 5,
        "the chaos ran ({kills} kills, {drops} drops)"
    );
    until_all_finished(&store, Duration::from_secs(180)).await;

    let complete = store
        .task_list(TaskListParams {
            state: Some(TaskState::Complete),
            limit: 2000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(complete.len(), 1000, "every task completes");
    let (wrong, total) = completion_counts(&store).await;
    assert_eq!(wrong, 0, "steps completed other than exactly once");
    assert_eq!(total, 500 * 7 + 500 * 2);
    for p in &mut procs {
        assert_eq!(p.terminate(), Some(0), "graceful stop on SIGTERM");
    }
}
