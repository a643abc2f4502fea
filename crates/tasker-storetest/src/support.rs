//! Helpers shared by the cases: templates, a hand-driven store, an engine runner.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::StepMessage;
use tasker_core::store::*;
use tasker_core::template::{TaskTemplate, parse_template};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry, Queues, WorkerConfig};

/// The workspace's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A template from `examples/`, e.g. `"diamond.yaml"`.
pub fn example(name: &str) -> TaskTemplate {
    let path = examples_dir().join(name);
    let mut loaded = tasker_core::template::load_path(&path).unwrap_or_else(|e| panic!("{e}"));
    loaded.remove(0)
}

/// A template from YAML text.
pub fn template(yaml: &str) -> TaskTemplate {
    parse_template(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("valid JSON")
}

/// A step taken from its queue by hand.
pub struct Claimed {
    pub queue: String,
    pub task_id: TaskId,
    pub msg_id: i64,
    pub read_ct: i32,
    pub step_id: StepId,
    pub start: StepStart,
}

impl Claimed {
    /// The execution, for a claim that must run.
    pub fn exec(&self) -> &StepExecution {
        match &self.start {
            StepStart::Run(e) => e,
            other => panic!("expected a step to run, got {other:?}"),
        }
    }
}

/// Drives a store the way the engine would, one call at a time.
pub struct Driver<S> {
    pub store: Arc<S>,
    pub grace: Duration,
}

impl<S: Store> Driver<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self {
            store,
            grace: Duration::from_secs(5),
        }
    }

    pub async fn create(&self, template: &TaskTemplate, context: &str) -> TaskId {
        let context = raw(context);
        self.store
            .task_create(TaskCreateParams {
                template,
                context: &context,
                idempotency_key: None,
                priority: None,
                traceparent: None,
            })
            .await
            .expect("task_create")
            .task_id
    }

    /// Starts every task waiting on the task queue (and fails the waits whose timeout
    /// is due); returns how many steps were enqueued.
    pub async fn start_tasks(&self) -> usize {
        self.start_batch()
            .await
            .tasks
            .iter()
            .map(|t| t.started.enqueued)
            .sum()
    }

    /// Reads the task queue once, as an orchestrator does.
    pub async fn start_batch(&self) -> TasksStarted {
        self.store
            .task_start_batch(100, Duration::from_secs(30), None)
            .await
            .expect("task_start_batch")
    }

    /// Reads one message of `queue` and claims its step.
    pub async fn claim(&self, queue: &str) -> Option<Claimed> {
        let m = self
            .store
            .queue_read(queue, Duration::from_secs(30), 1)
            .await
            .unwrap()
            .messages
            .pop()?;
        let decoded: StepMessage = serde_json::from_str(&m.body).unwrap();
        let params = StepStartParams {
            queue,
            msg_id: m.msg_id,
            task_id: decoded.task_id,
            step_id: decoded.step_id,
            grace: self.grace,
        };
        let start = self.store.step_start(params).await.unwrap();
        Some(Claimed {
            queue: queue.to_owned(),
            task_id: decoded.task_id,
            msg_id: m.msg_id,
            read_ct: m.read_ct,
            step_id: decoded.step_id,
            start,
        })
    }

    /// Claims up to 10 steps of `queue` in one call, as a worker's batch does.
    pub async fn claim_batch(&self, queue: &str) -> Vec<Claim> {
        self.store
            .step_claim(ClaimParams {
                queue,
                limit: 10,
                visibility: Duration::from_secs(30),
                grace: self.grace,
            })
            .await
            .unwrap()
            .claims
    }

    pub async fn finish(&self, c: &Claimed, outcome: StepOutcome<'_>) -> StepFinished {
        self.finish_attempt(c, c.exec().attempt, outcome).await
    }

    pub async fn finish_attempt(
        &self,
        c: &Claimed,
        attempt: u32,
        outcome: StepOutcome<'_>,
    ) -> StepFinished {
        let params = StepFinishParams {
            queue: &c.queue,
            msg_id: c.msg_id,
            task_id: c.task_id,
            step_id: c.step_id,
            attempt,
            outcome,
        };
        self.store.step_finish(params).await.unwrap()
    }

    pub async fn succeed(&self, c: &Claimed, results: &str) -> StepFinished {
        let results = raw(results);
        self.finish(c, StepOutcome::Succeeded { results: &results })
            .await
    }

    /// Claims and succeeds steps of `queue` until it is empty; returns their names in order.
    pub async fn run_queue(&self, queue: &str) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(c) = self.claim(queue).await {
            names.push(c.exec().step_name.to_string());
            self.succeed(&c, "{}").await;
        }
        names
    }

    pub async fn detail(&self, task_id: TaskId) -> TaskDetail {
        self.store.task_get(task_id).await.unwrap()
    }
}

/// An engine with the built-in handlers plus what `extra` registers, serving every queue.
pub fn engine<S: Store>(
    store: Arc<S>,
    concurrency: usize,
    extra: impl FnOnce(&mut HandlerRegistry),
) -> Engine<S> {
    let mut handlers = HandlerRegistry::with_builtins();
    extra(&mut handlers);
    let config = EngineConfig {
        worker: Some(WorkerConfig {
            queues: Queues::All,
            concurrency,
        }),
        visibility_grace: Duration::from_secs(2),
        // Its own bus: the cases that count events see this engine's alone, though
        // other cases run engines in the same process meanwhile.
        events: tasker_core::event::EventBus::default(),
        ..EngineConfig::embedded()
    };
    Engine::new(store, handlers, config)
}

/// Runs `template` with `context` on a fresh engine to its end (at most 60 s).
pub async fn run<S: Store>(
    engine: &Engine<S>,
    template: &TaskTemplate,
    context: &str,
) -> TaskDetail {
    let running = engine.start();
    let task = engine
        .submit(template, context, None)
        .await
        .expect("submit");
    let detail = tokio::time::timeout(Duration::from_secs(60), engine.wait(task.task_id, |_| {}))
        .await
        .expect("the task finishes within 60 s")
        .expect("wait");
    running.shutdown().await;
    detail
}

pub fn step<'a>(detail: &'a TaskDetail, name: &str) -> &'a StepRecord {
    detail
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

/// The `value` in a step's results (the `sum` handler's output).
pub fn value(detail: &TaskDetail, name: &str) -> i64 {
    let results = step(detail, name).results.as_ref().expect("results");
    let v: serde_json::Value = serde_json::from_str(results.get()).unwrap();
    v["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} results: {v}"))
}

/// How many times each step of the task was completed, from the transitions table.
pub async fn completions<S: Store>(store: &S, task_id: TaskId) -> HashMap<StepId, usize> {
    let mut counts = HashMap::new();
    for t in store.transition_list(task_id).await.unwrap() {
        if let (Some(step), "complete") = (t.step_id, t.to_state.as_str()) {
            *counts.entry(step).or_default() += 1;
        }
    }
    counts
}

/// Asserts that every step started only after all of its parents completed, using
/// the order of the transitions table.
pub async fn assert_parents_first<S: Store>(store: &S, detail: &TaskDetail) {
    let transitions = store.transition_list(detail.task.id).await.unwrap();
    let index_of = |step: StepId, to: &str, last: bool| {
        let mut it = transitions
            .iter()
            .enumerate()
            .filter(|(_, t)| t.step_id == Some(step) && t.to_state == to)
            .map(|(i, _)| i);
        if last { it.next_back() } else { it.next() }
    };
    for s in &detail.steps {
        let started = index_of(s.id, "in_progress", false).expect("started");
        for parent in &s.depends_on {
            let p = step(detail, parent);
            let done = index_of(p.id, "complete", true).expect("parent completed");
            assert!(
                done < started,
                "{} started before its parent {parent} completed",
                s.name
            );
        }
    }
}
