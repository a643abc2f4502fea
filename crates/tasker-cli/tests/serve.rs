//! `tasker serve` over a real socket, its configuration, and its logs.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Proc, address, http};

fn tasker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasker"));
    c.env_remove("RUST_LOG").env_remove("DATABASE_URL");
    c
}

fn serve(db: &Path, env: &[(&str, &str)]) -> Proc {
    let child = tasker()
        .args([
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tasker serve starts");
    Proc(child)
}

const LINEAR: &str = include_str!("../../../examples/linear.yaml");

#[test]
fn serve_runs_tasks_over_http_behind_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut server = serve(&db, &[("TASKER_API_TOKENS", "t0k3n")]);
    let (addr, log) = address(&mut server.0, "listening on");
    let token = Some("t0k3n");

    assert_eq!(http(&addr, "GET", "/health", "", None).0, 200);
    assert_eq!(http(&addr, "GET", "/ready", "", None).0, 200);
    let (status, body) = http(&addr, "POST", "/v1/templates", LINEAR, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(http(&addr, "POST", "/v1/templates", LINEAR, token).0, 201);
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/tasks",
        r#"{"namespace": "examples", "name": "linear", "context": {"start": 10}}"#,
        token,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = poll(&addr, &format!("/v1/tasks/{id}"), token, |t| {
        t["state"] == "complete"
    });
    assert_eq!(
        task["steps"][3]["results"],
        serde_json::json!({"value": 14})
    );
    // One view of a task: the command line prints what the API answers.
    let status = tasker()
        .args(["status", "--db", db.to_str().unwrap(), &id, "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let printed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(printed, task);
    assert_eq!(
        printed["steps"][3]["depends_on"],
        serde_json::json!(["third"])
    );
    let (_, metrics) = http(&addr, "GET", "/metrics", "", None);
    assert!(
        metrics.contains("tasker_tasks_finished_total{state=\"complete\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(server.terminate(), Some(0), "{}", log.text());
}

#[test]
fn serve_holds_work_back_above_the_memory_watermark_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    // Every process is above 1 KiB: work is held back from the first sample on.
    let mut held = serve(
        &db,
        &[
            ("TASKER_MEMORY_HIGH_WATERMARK", "1KiB"),
            ("TASKER_MEMORY_SAMPLE_INTERVAL", "20ms"),
        ],
    );
    let (addr, log) = address(&mut held.0, "listening on");
    assert_eq!(http(&addr, "POST", "/v1/templates", LINEAR, None).0, 201);
    let (_, body) = http(
        &addr,
        "POST",
        "/v1/tasks",
        r#"{"namespace": "examples", "name": "linear"}"#,
        None,
    );
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(800));
    let (_, task) = http(&addr, "GET", &format!("/v1/tasks/{id}"), "", None);
    assert!(task.contains("\"state\":\"pending\""), "{task}");
    let (_, metrics) = http(&addr, "GET", "/metrics", "", None);
    assert!(metrics.contains("tasker_memory_paused 1\n"), "{metrics}");
    assert_eq!(held.terminate(), Some(0));
    assert!(
        log.text().contains("memory above the high watermark"),
        "{}",
        log.text()
    );

    // Without the limit, the held task runs.
    let mut free = serve(&db, &[]);
    let (addr, _) = address(&mut free.0, "listening on");
    let task = poll(&addr, &format!("/v1/tasks/{id}"), None, |t| {
        t["state"] == "complete"
    });
    assert!(
        task["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["attempts"] == 1)
    );
    free.terminate();
}

#[test]
fn a_bad_configuration_stops_the_process_naming_the_key() {
    let out = tasker()
        .args(["serve", "--db", ":memory:"])
        .env("TASKER_API_BODY_LIMIT", "huge")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tasker: error: TASKER_API_BODY_LIMIT (key api.body_limit)"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasker.toml");
    std::fs::write(
        &file,
        "[api]\ntokens = [\"secret-value\"]\n[memory]\nhigh_watermark = \"2GiB\"\n",
    )
    .unwrap();
    let out = tasker()
        .args(["config", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("high_watermark = \"2GiB\"") && shown.contains("[\"***\"]"),
        "{shown}"
    );
    assert!(!shown.contains("secret-value"));
    std::fs::write(
        &file,
        "[memory]\nhigh_watermark = \"2GiB\"\nlow_watermark = \"3GiB\"\n",
    )
    .unwrap();
    let out = tasker()
        .args(["config", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory.low_watermark"));
}

#[test]
fn json_logs_carry_the_step_of_every_step_line() {
    let out = tasker()
        .args(["run", "--db", ":memory:", "--log-format", "json"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/linear.yaml"))
        .env("RUST_LOG", "tasker_engine=info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let finished: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "step finished")
        .collect();
    assert_eq!(finished.len(), 4, "{stderr}");
    for line in finished {
        let span = &line["span"];
        assert_eq!(span["namespace"], "examples", "{line}");
        assert_eq!(span["attempt"], 1, "{line}");
        assert!(
            span["task_id"].is_string() && span["step_id"].is_string(),
            "{line}"
        );
    }
}

/// Polls `GET path` until `done` accepts the JSON body.
pub fn poll(
    addr: &str,
    path: &str,
    token: Option<&str>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (status, body) = http(addr, "GET", path, "", token);
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        if done(&value) {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting: {value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_without_tokens_stays_on_loopback_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let refused = tasker()
        .args(["serve", "--db", db, "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0 without API tokens"),
        "{err}"
    );
    let mut open = Proc(
        tasker()
            .args([
                "serve",
                "--db",
                db,
                "--listen",
                "0.0.0.0:0",
                "--insecure-no-auth",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (addr, log) = address(&mut open.0, "listening on");
    assert!(
        log.text()
            .contains("without API tokens on a non-loopback address")
    );
    let port = addr.rsplit(':').next().unwrap();
    assert_eq!(
        http(&format!("127.0.0.1:{port}"), "GET", "/v1/tasks", "", None).0,
        200
    );
    assert_eq!(open.terminate(), Some(0));
}
