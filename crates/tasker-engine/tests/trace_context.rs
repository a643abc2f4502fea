//! With traces exported, a handler is given the trace context of its attempt's span:
//! in its task's trace, a span of its own, so what the handler opens or calls can join
//! it; a `shell` command reads it on its standard input. A test binary of its own: a
//! process installs its export once.

use std::sync::{Arc, Mutex};

use tasker_core::message::TraceParent;
use tasker_core::template::parse_template;
use tasker_engine::{
    Engine, EngineConfig, FnHandler, HandlerRegistry, ShellPolicy, StepContext, Traces,
};
use tasker_store::sqlite::SqliteStore;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_is_given_its_attempts_trace_context() {
    // Nothing answers there: the spans are lost, as with a collector that is down.
    let traces = Traces::install("http://127.0.0.1:9", "trace-context-test").unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(traces.layer()))
        .unwrap();
    let given: Arc<Mutex<Vec<Option<TraceParent>>>> = Arc::default();
    let mut handlers = HandlerRegistry::with_builtins().with_shell(ShellPolicy::Any);
    let record = given.clone();
    handlers.register(
        "look",
        FnHandler(move |step: &StepContext| {
            record.lock().unwrap().push(step.traceparent());
            tasker_engine::to_result(&())
        }),
    );
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let engine = Engine::new(store, handlers, EngineConfig::embedded());
    let template = parse_template(
        "namespace: traced\nname: three\nversion: 1.0.0\nsteps:\n  - {name: a, handler: look}\n  - {name: b, handler: look, depends_on: [a]}\n  - {name: c, handler: shell, config: {command: [cat]}, depends_on: [a]}\n",
        "three.yaml",
    )
    .unwrap();
    let running = engine.start();
    let task_id = engine.submit(&template, "{}", None).await.unwrap().task_id;
    let done = engine.wait(task_id, |_| {}).await.unwrap();
    running.shutdown().await;

    let task = done.task.traceparent.expect("a traced task");
    let given = given.lock().unwrap();
    assert_eq!(given.len(), 2, "{given:?}");
    for context in given.iter() {
        let context = context.expect("given a context");
        assert_eq!(context.trace_id, task.trace_id, "in its task's trace");
        assert_ne!(
            context.span_id, task.span_id,
            "its attempt's span, not the task's"
        );
        assert_eq!(context.flags & 1, 1, "sampled");
    }
    assert_ne!(given[0].unwrap().span_id, given[1].unwrap().span_id);
    // `cat` answers with its input: what the command was given.
    let shell = &done.steps.iter().find(|s| s.name == "c").unwrap();
    let input: serde_json::Value =
        serde_json::from_str(shell.results.as_ref().unwrap().get()).unwrap();
    let read: TraceParent = input["traceparent"].as_str().unwrap().parse().unwrap();
    assert_eq!(read.trace_id, task.trace_id);
    assert!(given.iter().all(|g| g.unwrap().span_id != read.span_id));
}
