//! Traces across processes: a diamond task submitted by `tasker submit` and run by an
//! `orchestrator` and a `worker` on PostgreSQL (a scratch database), every process
//! exporting to an OTLP/HTTP receiver in this test. One task span, four step spans from
//! the worker, all in the trace kept on the task, each step a child of the task; and
//! the same for a task a schedule fires.
//! And a bad endpoint stops a process with one line naming the key.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::Proc;
use tasker_core::TaskState;
use tasker_core::store::{Store, TaskListParams};
use tasker_store::postgres::PgStore;
use tasker_store::postgres::testing::ScratchDatabase;

/// A span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self.span.attributes.iter().find(|a| a.key == key)?;
        text(value)
    }
}

fn text(attribute: &KeyValue) -> Option<String> {
    match attribute.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An OTLP/HTTP (protobuf) collector on a loopback port: keeps every span sent to it.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

impl Receiver {
    /// Listens on a free port; returns the endpoint to configure.
    fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let received = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let received = received.clone();
                std::thread::spawn(move || received.serve(stream));
            }
        });
        endpoint
    }

    /// Answers the requests of one connection (kept alive between batches).
    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_owned());
            }
            assert!(
                head[0].starts_with("POST /v1/traces "),
                "unexpected request {head:?}"
            );
            let length: usize = head
                .iter()
                .find_map(|h| {
                    let (name, value) = h.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a content length");
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request = ExportTraceServiceRequest::decode(&*body).expect("OTLP protobuf");
            self.keep(request);
            writer
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
    }

    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(text)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    /// The spans named `name` of task `task_id`.
    fn spans(&self, name: &str, task_id: &str) -> Vec<Received> {
        let kept = self.0.lock().unwrap();
        kept.iter()
            .filter(|r| r.span.name == name && r.attribute("task_id").as_deref() == Some(task_id))
            .cloned()
            .collect()
    }
}

fn tasker(url: &str, endpoint: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasker"));
    c.env_remove("RUST_LOG")
        .env("DATABASE_URL", url)
        .env("TASKER_OTEL_ENDPOINT", endpoint);
    c
}

fn output(command: &mut Command) -> Output {
    let out = command.output().expect("tasker runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_tasks_spans_join_one_trace_across_processes() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let receiver = Receiver::default();
    let endpoint = receiver.start();
    let url = db.url.as_str();
    output(tasker(url, &endpoint).arg("migrate"));
    let spawn = |role: &str| {
        let child = tasker(url, &endpoint)
            .arg(role)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tasker starts");
        Proc(child)
    };
    let mut orchestrator = spawn("orchestrator");
    let mut worker = spawn("worker");
    let diamond = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/diamond.yaml");
    let submitted = output(
        tasker(url, &endpoint)
            .arg("submit")
            .arg(&diamond)
            .args(["--context", r#"{"start":0}"#]),
    );
    let task_id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    output(tasker(url, &endpoint).args(["wait", &task_id, "--timeout", "60s"]));
    // A schedule's task, created by the orchestrator, begins a trace of its own.
    output(
        tasker(url, &endpoint)
            .args(["schedule", "create"])
            .arg(&diamond)
            .args(["--cron", "@every 1s", "--name", "traced"])
            .args(["--context", r#"{"start":0}"#]),
    );
    let store = PgStore::connect(url, 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let scheduled = loop {
        let done = TaskListParams {
            state: Some(TaskState::Complete),
            limit: 10,
            ..TaskListParams::default()
        };
        let tasks = store.task_list(done).await.unwrap();
        if let Some(t) = tasks.iter().find(|t| t.id.to_string() != task_id) {
            break t.id.to_string();
        }
        assert!(Instant::now() < deadline, "no scheduled task completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    output(tasker(url, &endpoint).args(["schedule", "delete", "traced"]));
    // Stopping sends what is left to send.
    assert_eq!(worker.terminate(), Some(0));
    assert_eq!(orchestrator.terminate(), Some(0));

    assert_one_trace(&receiver, &store, &task_id).await;
    assert_one_trace(&receiver, &store, &scheduled).await;
}

/// Diamond task `task_id` was exported as one trace, the one kept on its row: its task
/// span (the root, sent by the worker that ran its last step) and one span per step, each
/// a child of the task span.
async fn assert_one_trace(receiver: &Receiver, store: &PgStore, task_id: &str) {
    let tasks = receiver.spans("task", task_id);
    assert_eq!(tasks.len(), 1, "one task span: {tasks:#?}");
    let task = &tasks[0];
    let kept = store
        .task_get(task_id.parse().unwrap())
        .await
        .unwrap()
        .task
        .traceparent
        .expect("the task keeps its trace context");
    assert_eq!(
        task.span.trace_id, kept.trace_id,
        "the trace begun when the task was created"
    );
    assert_eq!(task.span.span_id, kept.span_id, "the span id chosen then");
    assert!(task.span.parent_span_id.is_empty(), "the root of its trace");
    assert_eq!(
        task.service, "tasker-worker",
        "ended by the worker that ran `d`"
    );
    assert_eq!(task.attribute("namespace").as_deref(), Some("examples"));
    assert_eq!(task.attribute("task").as_deref(), Some("diamond"));
    assert_eq!(task.attribute("outcome").as_deref(), Some("complete"));

    let steps = receiver.spans("step", task_id);
    let mut by_name: HashMap<String, &Received> = HashMap::new();
    for step in &steps {
        assert_eq!(step.service, "tasker-worker", "{step:#?}");
        assert_eq!(step.span.trace_id, kept.trace_id, "{step:#?}");
        assert_eq!(
            step.span.parent_span_id, kept.span_id,
            "a child of the task span"
        );
        assert!(step.span.start_time_unix_nano >= task.span.start_time_unix_nano);
        assert_eq!(step.attribute("namespace").as_deref(), Some("examples"));
        assert_eq!(step.attribute("handler").as_deref(), Some("sum"));
        assert_eq!(step.attribute("attempt").as_deref(), Some("1"));
        assert_eq!(step.attribute("outcome").as_deref(), Some("complete"));
        let name = step.attribute("step").expect("a step name");
        assert!(by_name.insert(name, step).is_none(), "one attempt each");
    }
    let mut names: Vec<&str> = by_name.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "c", "d"], "{steps:#?}");
}

#[test]
fn a_bad_endpoint_stops_the_process_naming_the_key() {
    let out = tasker("postgres://127.0.0.1:1/none", "localhost:4318")
        .arg("worker")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tasker: error: otel.endpoint: `localhost:4318`: use an http:// URL"),
        "{stderr}"
    );
}
