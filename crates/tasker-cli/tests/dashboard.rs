//! The dashboard at `/ui`, in a real browser: Debian's chromium, driven headless
//! through chromedriver, against a `tasker serve` started here. Screenshots of each
//! page go to `target/ui-screenshots/`.
//!
//! Without chromedriver (scripts/setup installs it) the test skips with a line saying
//! so, except under `CI=true`, where it fails.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::{Proc, address, http};

/// The page's token: it may act on tasks, not register templates.
const TOKEN: &str = "write:ui-s3cret";
const SECRET: &str = "ui-s3cret";
/// Registers the templates.
const ADMIN: &str = "ui-admin";
const DIAMOND: &str = include_str!("../../../examples/diamond.yaml");
const ORDER_LINES: &str = include_str!("../../../examples/order_lines.yaml");
const FAILURE: &str = include_str!("../../../examples/failures/permanent_failure.yaml");
/// A wait for a signal beside a step that finishes meanwhile.
const APPROVAL: &str = "\
namespace: ui
name: approval
version: 1.0.0
steps:
  - {name: approve, wait_for: {signal: approval, timeout: 1h}}
  - {name: audit, handler: sleep, config: {ms: 3000}}
";
/// A step whose error, and a task whose context, hold markup; a step named as what
/// every JavaScript object has.
const MARKUP: &str = "\
namespace: ui
name: markup
version: 1.0.0
steps:
  - name: fails
    handler: fail
    config: {message: '<img id=injected src=x>'}
  - {name: constructor, handler: noop}
";
const SLOW: &str = "\
namespace: ui
name: slow
version: 1.0.0
steps:
  - {name: wait, handler: sleep, config: {ms: 2500}}
  - {name: after, handler: noop, depends_on: [wait]}
";
const SLOWER: &str = "\
namespace: ui
name: slower
version: 1.0.0
steps:
  - {name: wait, handler: sleep, config: {ms: 8000}}
  - {name: after, handler: noop, depends_on: [wait]}
";

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(name), png).unwrap();
}

/// Polls `script` (a JavaScript expression) in the page until `done` holds for its
/// value; panics with the last value after 30 s.
async fn until(c: &Client, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = c
            .execute(&format!("return {script};"), vec![])
            .await
            .unwrap_or(Value::Null);
        if done(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("`{script}` never held; last value: {value}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` selects, once the page shows it.
async fn click(c: &Client, css: &str) {
    let found = format!("!!document.querySelector({})", json!(css));
    until(c, &found, |v| v == true).await;
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let input = c.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

fn submit(addr: &str, namespace: &str, template: &str, context: &str) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tasks",
        &format!(r#"{{"namespace": "{namespace}", "name": "{template}", "context": {context}}}"#),
        Some(SECRET),
    );
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls the API until the task is in `state`.
async fn wait_state(addr: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = task(addr, id);
        if t["state"] == state {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never reached {state}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn task(addr: &str, id: &str) -> Value {
    let (status, body) = http(addr, "GET", &format!("/v1/tasks/{id}"), "", Some(SECRET));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_follows_and_acts_on_tasks() {
    let Some(driver) = find("chromedriver") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is not installed (scripts/setup installs chromium-driver)"
        );
        eprintln!("skipping the browser test: no chromedriver (scripts/setup installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tasker"));
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("ui.db"))
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env("TASKER_API_TOKENS", format!("{TOKEN},admin:{ADMIN}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = Proc(serve.spawn().expect("tasker serve starts"));
    let (addr, _log) = address(&mut server.0, "listening on");
    for template in [
        DIAMOND,
        SLOW,
        SLOWER,
        ORDER_LINES,
        FAILURE,
        APPROVAL,
        MARKUP,
    ] {
        let (status, body) = http(&addr, "POST", "/v1/templates", template, Some(ADMIN));
        assert_eq!(status, 201, "{body}");
    }

    let port = free_port();
    let _driver = Proc(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let mut caps = serde_json::Map::new();
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]
    });
    if let Some(chromium) = find("chromium") {
        options["binary"] = json!(chromium);
    }
    caps.insert("goog:chromeOptions".into(), options);
    let webdriver = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&webdriver)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    };
    let ui = format!("http://{addr}/ui");

    // A diamond task, finished before the page opens.
    let diamond = submit(&addr, "examples", "diamond", "{}");
    wait_state(&addr, &diamond, "complete").await;

    // No token yet: the page asks for one; a wrong one shows the API's refusal.
    c.goto(&format!("{ui}#/token")).await.unwrap();
    until(&c, "!!document.getElementById('token-input')", |v| {
        v == true
    })
    .await;
    let shown = c.execute("return !!document.getElementById('token-error');", vec![]);
    assert_eq!(
        shown.await.unwrap(),
        false,
        "no refusal before a token is sent"
    );
    type_into(&c, "#token-input", "not-the-token").await;
    click(&c, "#token-save").await;
    let error = until(
        &c,
        "document.getElementById('token-error')?.textContent ?? ''",
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
    )
    .await;
    assert!(
        error.as_str().unwrap().contains("Authorization: Bearer"),
        "{error}"
    );
    shoot(&c, "bad-token.png").await;

    // The right token: the diamond's graph, four nodes and four edges, all complete.
    type_into(&c, "#token-input", SECRET).await;
    click(&c, "#token-save").await;
    until(&c, "!!document.getElementById('tasks')", |v| v == true).await;
    c.goto(&format!("{ui}#/tasks/{diamond}")).await.unwrap();
    let nodes = until(
        &c,
        "[...document.querySelectorAll('svg.dag g.node')].map(n => [n.dataset.step, n.dataset.state])",
        |v| v.as_array().is_some_and(|a| a.len() == 4),
    )
    .await;
    let mut nodes: Vec<(String, String)> = serde_json::from_value(nodes).unwrap();
    nodes.sort();
    let complete = |s: &str| (s.to_owned(), "complete".to_owned());
    assert_eq!(
        nodes,
        [complete("a"), complete("b"), complete("c"), complete("d")]
    );
    let edges = until(
        &c,
        "[...document.querySelectorAll('svg.dag path.edge')].map(e => e.dataset.from + '>' + e.dataset.to)",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let mut edges: Vec<String> = serde_json::from_value(edges).unwrap();
    edges.sort();
    assert_eq!(edges, ["a>b", "a>c", "b>d", "c>d"]);
    // A step's details: selected from the keyboard.
    c.execute(
        "document.querySelector('g.node[data-step=\"d\"]').focus();",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css("g.node[data-step=\"d\"]"))
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    let attempts = until(
        &c,
        "document.querySelectorAll('#attempts tbody tr').length",
        |v| v == 1,
    )
    .await;
    assert_eq!(attempts, 1);
    let results = c
        .find(Locator::Css("pre.json[aria-label=results]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(results.contains("\"value\": 5"), "{results}");
    shoot(&c, "task-diamond.png").await;

    // A running task: its page follows it to complete without a reload.
    // Its context is kept as sent, carriage returns and all: the stream splits its
    // events' lines at them, as Server-Sent Events do, and the page reads them whole.
    let slow = submit(&addr, "ui", "slow", "{\r\n\"note\": 1\r}");
    c.goto(&format!("{ui}#/tasks/{slow}")).await.unwrap();
    until(
        &c,
        "document.getElementById('task-state')?.dataset.state",
        |v| v == "in_progress",
    )
    .await;
    until(
        &c,
        "document.querySelector('g.node[data-step=wait]')?.dataset.state",
        |v| v == "in_progress",
    )
    .await;
    shoot(&c, "task-running.png").await;
    c.execute("window.stillThisPage = true;", vec![])
        .await
        .unwrap();
    until(
        &c,
        "document.getElementById('task-state')?.dataset.state",
        |v| v == "complete",
    )
    .await;
    let same_page = c.execute("return window.stillThisPage === true;", vec![]);
    assert_eq!(same_page.await.unwrap(), true, "the page was reloaded");
    until(
        &c,
        "document.querySelector('g.node[data-step=after]')?.dataset.state",
        |v| v == "complete",
    )
    .await;

    // Cancel from the page, confirmed in its dialog; the API sees the task cancelled.
    let slower = submit(&addr, "ui", "slower", "{}");
    c.goto(&format!("{ui}#/tasks/{slower}")).await.unwrap();
    live(&c).await;
    click(&c, "#cancel-task").await;
    until(&c, "document.getElementById('confirm').open", |v| v == true).await;
    shoot(&c, "cancel-confirm.png").await;
    click(&c, "#confirm-yes").await;
    until(&c, "document.getElementById('notice').textContent", |v| {
        v == "The task is cancelled."
    })
    .await;
    assert_eq!(task(&addr, &slower)["state"], "cancelled");

    // A for_each step is one node with its instances' counts, expanded with `+`.
    let lines = submit(
        &addr,
        "examples",
        "order_lines",
        r#"{"order_id": 7, "line_amounts": [20, 5, 12]}"#,
    );
    wait_state(&addr, &lines, "complete").await;
    c.goto(&format!("{ui}#/tasks/{lines}")).await.unwrap();
    let label = until(
        &c,
        "document.querySelector('g.node[data-step=price_line] text.sub')?.textContent",
        |v| v.is_string(),
    )
    .await;
    assert_eq!(label, "3 instances: 3 complete");
    assert_eq!(count(&c, "svg.dag g.node").await, 2);
    c.execute(
        "document.querySelector('g.node[data-step=price_line]').focus();",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css("g.node[data-step=price_line]"))
        .await
        .unwrap()
        .send_keys("+")
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('svg.dag g.node').length",
        |v| v == 5,
    )
    .await;
    assert_eq!(count(&c, "svg.dag path.edge").await, 4);
    assert_eq!(count(&c, "g.node.instance[data-state=complete]").await, 3);

    // A failed step: its error shown, then resolved from the page with JSON results,
    // and the task runs on to complete (the page follows it).
    let failing = submit(&addr, "examples", "permanent_failure", "{}");
    wait_state(&addr, &failing, "error").await;
    c.goto(&format!("{ui}#/tasks/{failing}")).await.unwrap();
    live(&c).await;
    click(&c, "g.node[data-step=charge]").await;
    let error = until(
        &c,
        "document.querySelector('pre.error-text')?.textContent",
        |v| v.is_string(),
    )
    .await;
    assert!(error.as_str().unwrap().contains("card declined"), "{error}");
    until(&c, "!!document.getElementById('retry-task')", |v| v == true).await;
    shoot(&c, "task-error.png").await;
    type_into(&c, "#resolve-results", r#"{"charged": "by hand"}"#).await;
    click(&c, "#resolve-step").await;
    until(&c, "document.getElementById('confirm').open", |v| v == true).await;
    click(&c, "#confirm-yes").await;
    until(
        &c,
        "document.getElementById('task-state')?.dataset.state",
        |v| v == "complete",
    )
    .await;
    let resolved = task(&addr, &failing);
    assert_eq!(resolved["steps"][1]["state"], "resolved_manually");
    assert_eq!(
        resolved["steps"][1]["results"],
        json!({"charged": "by hand"})
    );

    // A signal delivered from the page completes the step that waits for it; the box
    // its payload is typed in stays the same element, focus and all, while the task
    // changes around it (its sibling finishing).
    let approval = submit(&addr, "ui", "approval", "{}");
    c.goto(&format!("{ui}#/tasks/{approval}")).await.unwrap();
    live(&c).await;
    let audit = "document.querySelector('g.node[data-step=audit]')?.dataset.state";
    until(
        &c,
        "document.querySelector('g.node[data-step=approve]')?.dataset.state",
        |v| v == "waiting",
    )
    .await;
    click(&c, "g.node[data-step=approve]").await;
    until(&c, "!!document.getElementById('deliver-signal')", |v| {
        v == true
    })
    .await;
    let payload = c.find(Locator::Css("#signal-payload")).await.unwrap();
    payload.click().await.unwrap();
    let running = c
        .execute(&format!("return {audit};"), vec![])
        .await
        .unwrap();
    assert_ne!(
        running, "complete",
        "audit finished before the box was found"
    );
    until(&c, audit, |v| v == "complete").await;
    let focused = "document.activeElement?.id";
    assert_eq!(
        c.execute(&format!("return {focused};"), vec![])
            .await
            .unwrap(),
        "signal-payload"
    );
    payload.clear().await.unwrap();
    payload
        .send_keys(r#"{"approved_by": "ana"}"#)
        .await
        .unwrap();
    click(&c, "#deliver-signal").await;
    until(&c, "document.getElementById('confirm').open", |v| v == true).await;
    click(&c, "#confirm-yes").await;
    let approved = wait_state(&addr, &approval, "complete").await;
    let approve = approved["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "approve")
        .unwrap();
    assert_eq!(approve["results"], json!({"approved_by": "ana"}));

    // What a task carries is shown as text, never made markup.
    let markup = submit(&addr, "ui", "markup", r#"{"note": "<b id=bold>x</b>"}"#);
    wait_state(&addr, &markup, "error").await;
    c.goto(&format!("{ui}#/tasks/{markup}")).await.unwrap();
    live(&c).await;
    let drawn = "[...document.querySelectorAll('g.node')].map(n => n.dataset.step).sort()";
    until(&c, drawn, |v| v == &json!(["constructor", "fails"])).await;
    click(&c, "g.node[data-step=fails]").await;
    let error = until(
        &c,
        "document.querySelector('pre.error-text')?.textContent",
        |v| v.is_string(),
    )
    .await;
    assert!(
        error.as_str().unwrap().contains("<img id=injected src=x>"),
        "{error}"
    );
    click(&c, ".task-head summary").await;
    let context = c
        .find(Locator::Css("pre.json[aria-label=context]"))
        .await
        .unwrap();
    assert!(context.text().await.unwrap().contains("<b id=bold>x</b>"));
    let parsed = c.execute(
        "return ['injected', 'bold'].filter(id => document.getElementById(id));",
        vec![],
    );
    assert_eq!(parsed.await.unwrap(), json!([]));

    // The list: counts by state and the tasks, newest first.
    c.goto(&format!("{ui}#/tasks")).await.unwrap();
    let rows = until(
        &c,
        "[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.task)",
        |v| v.as_array().is_some_and(|a| a.len() == 7),
    )
    .await;
    assert_eq!(
        rows,
        json!([markup, approval, failing, lines, slower, slow, diamond])
    );
    let counts = until(
        &c,
        "Object.fromEntries([...document.querySelectorAll('.count')].map(c => [c.dataset.state, c.querySelector('.n').textContent]))",
        |v| v.get("complete").is_some_and(|n| n == "5"),
    )
    .await;
    assert_eq!(
        (&counts["cancelled"], &counts["error"]),
        (&json!("1"), &json!("1"))
    );
    shoot(&c, "tasks.png").await;
    // Filtered by state from its count.
    click(&c, ".count[data-state=cancelled]").await;
    until(
        &c,
        "[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.task)",
        |v| v == &json!([slower]),
    )
    .await;

    c.goto(&format!("{ui}#/templates/examples/diamond/1.0.0"))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#template svg.dag g.node').length",
        |v| v == 4,
    )
    .await;
    shoot(&c, "template.png").await;
    c.goto(&format!("{ui}#/queues")).await.unwrap();
    until(&c, "!!document.getElementById('queues')", |v| v == true).await;
    shoot(&c, "queues.png").await;
    c.close().await.unwrap();
}

/// Waits until the page follows its task's stream (its first event applied), so what
/// it shows is not redrawn from that event under a click.
async fn live(c: &Client) {
    until(c, "document.getElementById('main').dataset.live", |v| {
        v == "open"
    })
    .await;
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}
