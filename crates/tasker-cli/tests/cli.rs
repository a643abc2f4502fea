//! The `tasker` binary end to end: what a user types and sees.
//!
//! - `run_*`: running examples, their JSON and exit codes;
//! - `validate_*`: every bad-template case with its precise message;
//! - `status_*`: inspecting a database;
//! - `crash_*`: `kill -9` mid-workflow, then `tasker resume`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasker_core::store::Store;
use tasker_store::sqlite::SqliteStore;

fn tasker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasker"));
    c.env_remove("RUST_LOG");
    c
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn run(args: &[&str]) -> Output {
    tasker().args(args).output().expect("tasker runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)))
}

#[test]
fn run_tree_prints_its_results() {
    let o = run(&[
        "run",
        examples().join("tree.yaml").to_str().unwrap(),
        "--db",
        ":memory:",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("(examples/tree@1.0.0): complete"), "{out}");
    assert!(out.contains("converge: {\"value\":13}"), "{out}");
    assert!(
        stderr(&o).starts_with("task "),
        "the id is printed first: {}",
        stderr(&o)
    );
}

#[test]
fn run_json_reports_every_step() {
    let o = run(&[
        "run",
        examples().join("linear.yaml").to_str().unwrap(),
        "--db",
        ":memory:",
        "--context",
        r#"{"start": 100}"#,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["state"], "complete");
    let steps = v["steps"].as_array().unwrap();
    let values: Vec<i64> = steps
        .iter()
        .map(|s| s["results"]["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [101, 102, 103, 104]);
    assert!(
        steps
            .iter()
            .all(|s| s["attempts"] == 1 && s["error"].is_null())
    );
    assert!(
        v["task_id"]
            .as_str()
            .unwrap()
            .parse::<tasker_core::TaskId>()
            .is_ok()
    );
}

#[test]
fn run_a_failing_task_exits_1() {
    let o = run(&[
        "run",
        examples()
            .join("failures/permanent_failure.yaml")
            .to_str()
            .unwrap(),
        "--db",
        ":memory:",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["state"], "error");
    assert_eq!(v["steps"][1]["error"], "card declined (permanent error)");
}

#[test]
fn run_bad_input_exits_2_with_one_line() {
    let fulfil = examples().join("order_fulfillment.yaml");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--context", "{}"],
            "context does not match the schema of fulfillment/process_order@1.0.0",
        ),
        (&["--context", "{oops"], "the context is not valid JSON"),
        (
            &["--context-file", "/no/such/file"],
            "cannot read /no/such/file",
        ),
        (&["--context", "[]"], "must be a JSON object"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["run", fulfil.to_str().unwrap(), "--db", ":memory:"];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("tasker: error"))
                .count(),
            1
        );
    }
    let o = run(&["run", "/no/such/template.yaml", "--db", ":memory:"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/no/such/template.yaml: cannot read"),
        "{}",
        stderr(&o)
    );
}

/// Writes `yaml` as a template file and validates it.
fn validate_yaml(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let o = run(&["validate", path.to_str().unwrap()]);
    let err = stderr(&o).replace(path.to_str().unwrap(), "bad.yaml");
    (o.status.code().unwrap(), err)
}

const HEAD: &str = "namespace: shop\nname: t\nversion: 1.0.0\nsteps:\n";

#[test]
fn files_are_read_within_bounds_and_directories_in_depth() {
    let linear = examples().join("linear.yaml");
    let refused = run(&[
        "run",
        linear.to_str().unwrap(),
        "--db",
        ":memory:",
        "--context-file",
        "/dev/zero",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "tasker: error: cannot read /dev/zero: not a regular file"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("nest/deeper")).unwrap();
    std::fs::copy(&linear, dir.path().join("linear.yaml")).unwrap();
    let broken = dir.path().join("nest/deeper/broken.yaml");
    std::fs::write(
        &broken,
        "namespace: x\nname: broken\nversion: 1.0.0\nsteps: []\n",
    )
    .unwrap();
    let rocket = dir.path().join("nest/rocket.json");
    std::fs::write(
        &rocket,
        r#"{"namespace": "x", "name": "rocket", "version": "1.0.0", "steps": [{"name": "a", "handler": "echo"}]}"#,
    )
    .unwrap();
    let checked = run(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(1));
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(err.contains(broken.to_str().unwrap()), "{err}");
    assert!(
        err.ends_with("3 file(s) checked, 1 problem(s) found\n"),
        "{err}"
    );
    // Every file it checked is named: the good ones on stdout, beside the broken one.
    let out = stdout(&checked);
    for (file, key) in [
        (dir.path().join("linear.yaml"), "examples/linear@1.0.0"),
        (rocket, "x/rocket@1.0.0"),
    ] {
        assert!(
            out.contains(&format!("ok  {}  {key}", file.display())),
            "{out}"
        );
    }
}

#[test]
fn a_json_template_file_is_read_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocket.json");
    let template = r#"{"namespace": "x", "name": "rocket", "version": "1.0.0",
        "steps": [{"name": "a", "handler": "echo", "config": {"label": "\ud83d\ude80"}}]}"#;
    std::fs::write(&path, template).unwrap();
    let o = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::write(&path, "{\"namespace\": }").unwrap();
    let o = run(&["validate", path.to_str().unwrap()]);
    assert!(
        stderr(&o).contains(&format!("{}:1:15: ", path.display())),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_names_file_line_and_step_for_each_problem() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!(
                "{HEAD}  - {{name: a, handler: noop, depends_on: [b]}}\n  - {{name: b, handler: noop, depends_on: [a]}}\n"
            ),
            "bad.yaml:5:6: step `a`: dependency cycle: a -> b -> a",
        ),
        (
            format!("{HEAD}  - {{name: a, handler: noop, depends_on: [zz]}}\n"),
            "bad.yaml:5:6: step `a`: depends on unknown step `zz`",
        ),
        (
            format!("{HEAD}  - {{name: a, handler: noop}}\n  - {{name: a, handler: noop}}\n"),
            "bad.yaml:6:6: step `a`: duplicate step name",
        ),
        (
            format!("{HEAD}  - {{name: a, handler: noop, depends_on: [a]}}\n"),
            "bad.yaml:5:6: step `a`: depends on itself",
        ),
        (
            "namespace: shop\nname: t\nversion: 1.0.0\nsteps: []\n".into(),
            "bad.yaml:4:1: the template has no steps",
        ),
        (
            HEAD.replace("1.0.0", "v1") + "  - {name: a, handler: noop}\n",
            "bad.yaml:3:1: version `v1` is not a semantic version",
        ),
        (
            format!("{HEAD}  - name: a\n    handler: noop\n    retry: {{max_attempts: 0}}\n"),
            "bad.yaml:5:5: step `a`: retry: max_attempts must be between 1 and 1000",
        ),
        (
            format!("{HEAD}  - {{name: a, handler: noop, colour: red}}\n"),
            "bad.yaml:5:30: steps[0]: unknown field `colour`",
        ),
        (
            HEAD.replace("shop", "Shop-1") + "  - {name: a, handler: noop}\n",
            "bad.yaml:1:1: namespace `Shop-1` is not allowed",
        ),
        (
            format!("{HEAD}  - {{name: a, handler: \"rm -rf /\"}}\n"),
            "bad.yaml:5:6: step `a`: handler `rm -rf /` is not allowed",
        ),
    ];
    for (yaml, expected) in cases {
        let (code, err) = validate_yaml(&yaml);
        assert_eq!(code, 1, "{yaml}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
}

#[test]
fn validate_accepts_every_example() {
    // The directory and the one below it.
    let o = run(&["validate", examples().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 13);
    assert!(
        stderr(&o).ends_with("13 file(s) checked, no problems\n"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_lists_and_shows_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let o = run(&[
        "run",
        examples().join("diamond.yaml").to_str().unwrap(),
        "--db",
        db,
        "--json",
    ]);
    let id = json(&o)["task_id"].as_str().unwrap().to_owned();
    let list = run(&["status", "--db", db, "--json"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert_eq!(
        json(&list),
        serde_json::json!([{"task_id": id, "template": "examples/diamond@1.0.0", "state": "complete"}])
    );
    let one = run(&["status", &id, "--db", db, "--json"]);
    assert_eq!(json(&one)["steps"][3]["results"]["value"], 5);
    let table = run(&["status", &id, "--db", db]);
    assert!(stdout(&table).contains("d: {\"value\":5}"));
    let missing = run(&["status", "01a21b03-ca9e-7224-8e9d-888fd6a02a19", "--db", db]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no task"));
    let no_db = run(&["status", "--db", "/no/such.db"]);
    assert_eq!(no_db.status.code(), Some(2));

    // Its history: the task's and every step's changes, oldest first, with the reason.
    let history = run(&["history", &id, "--db", db, "--json"]);
    assert_eq!(history.status.code(), Some(0), "{}", stderr(&history));
    let transitions = json(&history)["transitions"].as_array().unwrap().clone();
    let first = &transitions[0];
    assert_eq!(
        (
            &first["step_id"],
            &first["from"],
            &first["to"],
            &first["reason"]
        ),
        (
            &json!(null),
            &json!(null),
            &json!("pending"),
            &json!("created")
        )
    );
    let d = json(&one)["steps"][3]["id"].clone();
    let of_d: Vec<&str> = transitions
        .iter()
        .filter(|t| t["step_id"] == d)
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(of_d, ["enqueued", "in_progress", "complete"]);
    assert_eq!(
        transitions.last().unwrap()["to"],
        "complete",
        "the task's last"
    );
    let table = stdout(&run(&["history", &id, "--db", db]));
    assert!(table.contains("enqueued -> in_progress"), "{table}");
    assert!(table.contains(" d "), "steps by name: {table}");
    let unknown = run(&[
        "history",
        "01a21b03-ca9e-7224-8e9d-888fd6a02a19",
        "--db",
        db,
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("task 01a21b03"),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test]
async fn dead_letters_are_listed_with_why() {
    use tasker_core::store::TaskCreateParams;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    {
        let store = SqliteStore::open(db).await.unwrap();
        let template = tasker_core::template::parse_template(
            "namespace: dl\nname: one\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n",
            "one.yaml",
        )
        .unwrap();
        store.template_register(&template).await.unwrap();
        let context = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        store
            .task_create(TaskCreateParams {
                template: &template,
                context: &context,
                idempotency_key: None,
                priority: None,
                traceparent: None,
            })
            .await
            .unwrap();
        store
            .task_start_batch(10, Duration::from_secs(30), None)
            .await
            .unwrap();
        let read = store.queue_read("dl", Duration::from_secs(30), 1).await;
        let msg_id = read.unwrap().messages[0].msg_id;
        store
            .queue_dead_letter("dl", msg_id, "moved by the test")
            .await
            .unwrap();
    }
    let listed = run(&["dead-letters", "--db", db, "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let letters = json(&listed)["dead_letters"].clone();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(
        (&letters[0]["queue"], &letters[0]["reason"]),
        (&json!("dl"), &json!("moved by the test"))
    );
    let table = stdout(&run(&["dead-letters", "--queue", "dl", "--db", db]));
    assert!(table.contains("moved by the test"), "{table}");
    let other = stdout(&run(&["dead-letters", "--queue", "elsewhere", "--db", db]));
    assert_eq!(other.trim(), "no dead letters");
    let bad = run(&["dead-letters", "--queue", "Bad Name", "--db", db]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn embedded_durability_is_chosen_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let tree = examples().join("tree.yaml");
    let run_with = |value: &str| {
        tasker()
            .args(["run", tree.to_str().unwrap(), "--db", db.to_str().unwrap()])
            .env("TASKER_SQLITE_SYNCHRONOUS", value)
            .output()
            .unwrap()
    };
    let full = run_with("full");
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
    let bad = run_with("fsync");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("TASKER_SQLITE_SYNCHRONOUS: `fsync` is not a durability"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn prune_deletes_finished_tasks_older_than_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    for _ in 0..2 {
        let o = run(&[
            "run",
            examples().join("diamond.yaml").to_str().unwrap(),
            "--db",
            db,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let kept = run(&["prune", "--finished-before", "1h", "--db", db]);
    assert_eq!(kept.status.code(), Some(0), "{}", stderr(&kept));
    assert!(
        stdout(&kept).contains("pruned 0 task(s) finished more than 1h ago"),
        "{}",
        stdout(&kept)
    );
    let pruned = run(&[
        "prune",
        "--finished-before",
        "0s",
        "--batch",
        "1",
        "--db",
        db,
    ]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains("pruned 2 task(s)") && stdout(&pruned).contains("(8 steps)"),
        "{}",
        stdout(&pruned)
    );
    let list = run(&["status", "--db", db, "--json"]);
    assert_eq!(json(&list), serde_json::json!([]));
    let bad = run(&["prune", "--finished-before", "30x", "--db", db]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--finished-before: invalid duration `30x`"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_workflow_then_resume_completes_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let db = db.to_str().unwrap().to_owned();
    let template = examples().join("failures/long_running.yaml");
    let mut child = tasker()
        .args(["run", template.to_str().unwrap(), "--db", &db, "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait until the slow steps are running, then kill the process without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    let task_id = loop {
        assert!(Instant::now() < deadline, "the slow steps never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(store) = SqliteStore::open_read_only(&db).await else {
            continue;
        };
        let Ok(tasks) = store.task_list_unfinished().await else {
            continue;
        };
        let Some(&id) = tasks.first() else { continue };
        let detail = store.task_get(id).await.unwrap();
        let running = detail
            .steps
            .iter()
            .filter(|s| s.state == tasker_core::StepState::InProgress)
            .count();
        if running == 2 {
            break id;
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let o = run(&["resume", "--db", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("complete"), "{}", stdout(&o));

    let store = SqliteStore::open_read_only(&db).await.unwrap();
    let detail = store.task_get(task_id).await.unwrap();
    assert_eq!(detail.task.state, tasker_core::TaskState::Complete);
    let trail = store.transition_list(task_id).await.unwrap();
    for s in &detail.steps {
        let completed = trail
            .iter()
            .filter(|t| t.step_id == Some(s.id) && t.to_state == "complete")
            .count();
        assert_eq!(completed, 1, "{} completed exactly once", s.name);
    }
    let slow = detail.steps.iter().find(|s| s.name == "slow_a").unwrap();
    assert_eq!(slow.attempts, 2, "the interrupted attempt counts");
    let reclaimed = trail
        .iter()
        .filter(|t| t.reason.contains("worker lost"))
        .count();
    assert_eq!(reclaimed, 2, "both interrupted steps were reclaimed");
}

#[test]
fn a_signal_is_delivered_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let approval = examples().join("approval.yaml");
    let submitted = run(&[
        "submit",
        approval.to_str().unwrap(),
        "--context",
        r#"{"amount": 120}"#,
        "--db",
        db,
    ]);
    assert_eq!(submitted.status.code(), Some(0), "{}", stderr(&submitted));
    let id = stdout(&submitted).trim().to_owned();
    let payload = r#"{"approved_by": "ana"}"#;
    let early = run(&["signal", &id, "approval", "--payload", payload, "--db", db]);
    assert_eq!(early.status.code(), Some(0), "{}", stderr(&early));
    assert!(
        stdout(&early).contains("no step waits for it yet"),
        "{}",
        stdout(&early)
    );
    let again = run(&["signal", &id, "approval", "--db", db]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(stderr(&again).lines().count(), 1, "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already delivered"),
        "{}",
        stderr(&again)
    );
    let bad = run(&["signal", &id, "other", "--payload", "{oops", "--db", db]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not valid JSON"), "{}", stderr(&bad));

    // The kept signal completes the wait as the task reaches it.
    let resumed = run(&["resume", "--db", db]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let done = json(&run(&["status", &id, "--db", db, "--json"]));
    assert_eq!(done["state"], "complete");
    assert_eq!(done["steps"][1]["waits_for"], "approval");
    assert_eq!(done["steps"][1]["results"], json!({"approved_by": "ana"}));
}

#[test]
fn a_queue_stays_paused_across_commands_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let paused = run(&["queue", "pause", "fulfillment", "--db", db]);
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    assert_eq!(stdout(&paused), "queue fulfillment is paused\n");
    let again = run(&["queue", "pause", "fulfillment", "--db", db]);
    assert_eq!(stdout(&again), "queue fulfillment was already paused\n");
    // Another process, later: still paused.
    let listed = run(&["queue", "list", "--db", db, "--json"]);
    assert_eq!(
        json(&listed),
        json!({"queues": [{"queue": "fulfillment", "messages": 0, "paused": true}]})
    );
    assert!(stdout(&run(&["queue", "list", "--db", db])).contains("paused"));
    let bad = run(&["queue", "pause", "Not A Queue", "--db", db]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(stderr(&bad).lines().count(), 1, "{}", stderr(&bad));
    let resumed = run(&["queue", "resume", "fulfillment", "--db", db]);
    assert_eq!(stdout(&resumed), "queue fulfillment is not paused\n");
    assert_eq!(
        json(&run(&["queue", "list", "--db", db, "--json"])),
        json!({"queues": []})
    );
}

#[test]
fn schedules_are_created_listed_paused_and_deleted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let linear = examples().join("linear.yaml");
    let linear = linear.to_str().unwrap();
    let create = |args: &[&str]| {
        let mut all = vec!["schedule", "create", linear, "--db", db];
        all.extend_from_slice(args);
        run(&all)
    };
    let created = create(&[
        "--cron",
        "0 6 * * 1-5",
        "--timezone",
        "Europe/Paris",
        "--context",
        r#"{"start": 2}"#,
        "--name",
        "weekday_mornings",
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    assert!(
        stdout(&created).starts_with("schedule weekday_mornings created; it fires next at "),
        "{}",
        stdout(&created)
    );
    let listed = json(&run(&["schedule", "list", "--db", db, "--json"]));
    let s = &listed["schedules"][0];
    assert_eq!(
        (
            &s["name"],
            &s["cron"],
            &s["timezone"],
            &s["catch_up"],
            &s["paused"]
        ),
        (
            &json!("weekday_mornings"),
            &json!("0 6 * * 1-5"),
            &json!("Europe/Paris"),
            &json!("once"),
            &json!(false)
        )
    );
    assert_eq!(s["context"], json!({"start": 2}));
    assert_eq!(s["last_fire"], Value::Null);
    assert!(
        s["next_fire"]
            .as_str()
            .is_some_and(|t| t.contains("T05:00:00") || t.contains("T04:00:00")),
        "{s}"
    );

    for (args, says) in [
        (vec!["--cron", "0 6 * *"], "has 4 fields"),
        (
            vec!["--cron", "@every 1s", "--catch-up", "sometimes"],
            "catch-up `sometimes`",
        ),
        (
            vec!["--cron", "@every 1s", "--timezone", "Nowhere/Town"],
            "time zone `Nowhere/Town`",
        ),
        (
            vec![
                "--cron",
                "0 6 * * *",
                "--name",
                "weekday_mornings",
                "--context",
                r#"{"start": 1}"#,
            ],
            "exists",
        ),
        (vec!["--cron", "0 6 * * *", "--context", "[1]"], "context"),
    ] {
        let refused = create(&args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert_eq!(stderr(&refused).lines().count(), 1, "{}", stderr(&refused));
        assert!(
            stderr(&refused).contains(says),
            "{args:?}: {}",
            stderr(&refused)
        );
    }

    let paused = run(&["schedule", "pause", "weekday_mornings", "--db", db]);
    assert_eq!(stdout(&paused), "schedule weekday_mornings is paused\n");
    assert!(stdout(&run(&["schedule", "list", "--db", db])).contains("paused"));
    let resumed = run(&["schedule", "resume", "weekday_mornings", "--db", db]);
    assert_eq!(
        stdout(&resumed),
        "schedule weekday_mornings is not paused\n"
    );
    let deleted = run(&["schedule", "delete", "weekday_mornings", "--db", db]);
    assert_eq!(stdout(&deleted), "schedule weekday_mornings deleted\n");
    let missing = run(&["schedule", "delete", "weekday_mornings", "--db", db]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stderr(&missing).lines().count(), 1, "{}", stderr(&missing));
    assert_eq!(
        stdout(&run(&["schedule", "list", "--db", db])),
        "no schedules\n"
    );
}

#[test]
fn a_paused_template_holds_its_tasks_and_status_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let paused = run(&["template", "pause", "examples/order_lines", "--db", db]);
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    assert_eq!(stdout(&paused), "template examples/order_lines is paused\n");
    let submitted = run(&[
        "submit",
        examples().join("order_lines.yaml").to_str().unwrap(),
        "--context",
        r#"{"order_id": 1, "line_amounts": [1, 2]}"#,
        "--db",
        db,
    ]);
    let id = stdout(&submitted).trim().to_owned();
    let status = stdout(&run(&["status", &id, "--db", db]));
    assert!(
        status.contains("held: template examples/order_lines is paused (tasker template resume examples/order_lines)"),
        "{status}"
    );
    let bad = run(&["template", "pause", "no-slash", "--db", db]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("namespace/name"), "{}", stderr(&bad));
    let resumed = run(&["template", "resume", "examples/order_lines", "--db", db]);
    assert_eq!(
        stdout(&resumed),
        "template examples/order_lines is not paused\n"
    );
    let finished = run(&["resume", "--db", db]);
    assert_eq!(finished.status.code(), Some(0), "{}", stderr(&finished));
    let done = json(&run(&["status", &id, "--db", db, "--json"]));
    assert_eq!(done["state"], "complete");
    assert_eq!(done["steps"][1]["results"], json!({"value": 3}));
}

#[test]
fn a_wait_that_nobody_answers_times_out() {
    let yaml = "namespace: t\nname: w\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n  - {name: approve, depends_on: [a], wait_for: {signal: approval, timeout: 1s}}\n";
    let (code, detail) = run_yaml(yaml, "{}");
    assert_eq!(code, 1, "{detail}");
    assert_eq!(detail["state"], "error");
    assert_eq!(detail["steps"][1]["state"], "error");
    assert_eq!(
        detail["steps"][1]["error"],
        "no signal `approval` arrived within 1s"
    );
}

#[test]
fn a_second_engine_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("busy.db");
    let db = db.to_str().unwrap();
    let mut first = tasker()
        .args([
            "run",
            examples()
                .join("failures/long_running.yaml")
                .to_str()
                .unwrap(),
            "--db",
            db,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first process owns the file (it prints the task id).
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.stderr.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("task "), "{line}");
    let second = run(&["resume", "--db", db]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        stderr(&second).contains("in use by another Tasker process"),
        "{}",
        stderr(&second)
    );
}

/// Runs a template given as text; returns the exit code and the JSON report.
/// `tasker run --allow-shell` of `yaml` on a memory database: exit code and JSON.
fn run_yaml(yaml: &str, context: &str) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, yaml).unwrap();
    let o = run(&[
        "run",
        path.to_str().unwrap(),
        "--db",
        ":memory:",
        "--json",
        "--allow-shell",
        "--context",
        context,
    ]);
    (o.status.code().unwrap(), json(&o))
}

#[test]
fn shell_steps_run_only_where_they_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    let yaml = "namespace: sh\nname: t\nversion: 1.0.0\nsteps:\n  - name: script\n    handler: shell\n    config: {command: [sh, -c, 'echo {}']}\n";
    std::fs::write(&path, yaml).unwrap();
    let path = path.to_str().unwrap();
    let refused = run(&["run", path, "--db", ":memory:"]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "tasker: error: step `script` uses the `shell` handler, which is not enabled here (handlers.shell.allow in the configuration)"
    );
    let allowed = run(&["run", path, "--db", ":memory:", "--allow-shell", "--json"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", json(&allowed));
}

#[test]
fn shell_handler_gets_the_step_on_stdin_and_can_ask_for_a_retry() {
    let script = r#"input=$(cat); case "$input" in *'"attempt":1,'*) echo 'not yet' >&2; exit 75;; esac; printf '{"got":%s}' "$input""#;
    let yaml = format!(
        "namespace: sh\nname: t\nversion: 1.0.0\nsteps:\n  - {{name: root, handler: sum}}\n  - {{name: first, handler: sum, depends_on: [root]}}\n  - name: script\n    handler: shell\n    depends_on: [first]\n    config: {{command: [sh, -c, {}], flag: on}}\n    retry: {{backoff: {{initial: 10ms}}}}\n",
        serde_json::to_string(script).unwrap()
    );
    let (code, v) = run_yaml(&yaml, r#"{"start": 4}"#);
    assert_eq!(code, 0, "{v}");
    let step = &v["steps"][2];
    assert_eq!(step["attempts"], 2);
    let got = &step["results"]["got"];
    assert_eq!(got["attempt"], 2);
    assert_eq!(got["context"]["start"], 4);
    assert_eq!(got["config"]["flag"], "on");
    assert_eq!(got["parents"], serde_json::json!({"first": {"value": 6}}));
    assert_eq!(
        got["ancestors"],
        serde_json::json!({"root": {"value": 5}, "first": {"value": 6}})
    );
    assert_eq!(got["step_name"], "script");
}

#[test]
fn a_fan_out_prices_each_line_then_invoices() {
    let o = run(&[
        "run",
        examples().join("order_lines.yaml").to_str().unwrap(),
        "--db",
        ":memory:",
        "--json",
        "--context",
        r#"{"order_id": 7, "line_amounts": [20, 5, 12]}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["steps"][1]["results"], json!({"value": 37}));
    assert_eq!(
        v["steps"][0]["results"],
        json!([{"value": 20}, {"value": 5}, {"value": 12}])
    );
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "price_line",
            "invoice",
            "price_line[0]",
            "price_line[1]",
            "price_line[2]"
        ]
    );
}

#[test]
fn a_shell_instance_gets_its_item_and_index_on_stdin() {
    let yaml = "namespace: sh\nname: each\nversion: 1.0.0\nsteps:\n  - name: each\n    handler: shell\n    for_each: context.items\n    config: {command: [sh, -c, 'printf \"{\\\"got\\\":%s}\" \"$(cat)\"']}\n";
    let (code, v) = run_yaml(yaml, r#"{"items": [{"sku": "A"}, "b"]}"#);
    assert_eq!(code, 0, "{v}");
    let got: Vec<(serde_json::Value, serde_json::Value)> = v["steps"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["got"]["item"].clone(), r["got"]["index"].clone()))
        .collect();
    assert_eq!(
        got,
        [(json!({"sku": "A"}), json!(0)), (json!("b"), json!(1))]
    );
}

#[test]
fn shell_handler_failures_are_permanent_or_timed_out() {
    let yaml = "namespace: sh\nname: t\nversion: 1.0.0\nsteps:\n  - name: broken\n    handler: shell\n    config: {command: [sh, -c, 'echo boom >&2; exit 3']}\n  - name: not_json\n    handler: shell\n    config: {command: [echo, hello]}\n  - name: slow\n    handler: shell\n    config: {command: [sleep, '30']}\n    timeout: 300ms\n    retry: {max_attempts: 1}\n  - name: missing\n    handler: shell\n    config: {command: [/no/such/program]}\n";
    let (code, v) = run_yaml(yaml, "{}");
    assert_eq!(code, 1);
    let error = |i: usize| v["steps"][i]["error"].as_str().unwrap().to_owned();
    assert_eq!(
        error(0),
        "shell: `sh` exited with 3: boom (permanent error)"
    );
    assert!(
        error(1).starts_with("shell: stdout is not JSON"),
        "{}",
        error(1)
    );
    assert!(
        error(2).starts_with("timed out after 300ms"),
        "{}",
        error(2)
    );
    assert!(
        error(3).starts_with("shell: cannot run `/no/such/program`"),
        "{}",
        error(3)
    );
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["attempts"] == 1)
    );
}

#[test]
fn a_file_that_is_not_a_tasker_database_is_refused_not_initialised() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "dear diary\n").unwrap();
    for (path, why) in [(&empty, "is empty"), (&text, "is not an SQLite database")] {
        for command in ["resume", "status"] {
            let o = run(&[command, "--db", path.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(1), "{command} {path:?}");
            let err = stderr(&o);
            assert!(
                err.contains(&format!("{} {why}, not a Tasker database", path.display())),
                "{err}"
            );
        }
    }
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "left as it was"
    );
}

#[test]
fn a_damaged_database_is_reported_not_used() {
    use std::io::{Seek, SeekFrom, Write};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let fanout = examples().join("tree.yaml");
    for _ in 0..20 {
        let o = run(&["run", fanout.to_str().unwrap(), "--db", db, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let len = std::fs::metadata(db).unwrap().len();
    assert!(len > 64 * 1024, "{len} bytes");
    // Garbage over pages at three places: wherever the tables and indexes lie, some of
    // their pages are hit.
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    for at in [len / 4, len / 2, len * 3 / 4] {
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[0xA5; 2048]).unwrap();
    }
    drop(file);
    for command in ["resume", "status"] {
        let o = run(&[command, "--db", db]);
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("fails SQLite's integrity check"),
            "{command}: {}",
            stderr(&o)
        );
    }
}
