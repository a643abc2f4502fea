//! # tasker-engine
//!
//! The orchestrator and worker runtimes of Tasker, over any [`Store`]. The same code
//! runs embedded (one process: orchestrator and workers together on SQLite) and
//! distributed (any number of orchestrator and worker processes on PostgreSQL).
//!
//! - An **orchestrator** takes submitted tasks from the internal task queue and
//!   enqueues their first steps.
//! - A **worker** takes steps from their queues, runs their [`Handler`]s under the
//!   step's timeout, and records the outcome; the store enqueues the children a
//!   completion unblocks in the same transaction.
//!
//! Neither polls: they sleep until the store wakes them, until the next delayed
//! message shows, or until a slow safety-net interval passes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
//! use tasker_store::sqlite::SqliteStore;
//!
//! let template = tasker_core::template::parse_template(
//!     "namespace: demo\nname: hello\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n",
//!     "hello.yaml",
//! )?;
//! let store = Arc::new(SqliteStore::open(":memory:").await?);
//! let engine = Engine::new(store, HandlerRegistry::with_builtins(), EngineConfig::embedded());
//! let running = engine.start();
//! let task = engine.submit(&template, "{}", None).await?;
//! let done = engine.wait(task.task_id, |_| {}).await?;
//! assert_eq!(done.task.state, tasker_core::TaskState::Complete);
//! running.shutdown().await;
//! # Ok(()) }
//! ```

mod builtin;
mod catch_unwind;
mod consumer;
mod finisher;
mod handler;
pub mod metrics;
mod orchestrator;
pub mod pressure;
pub mod process_memory;
pub mod retention;
mod submitter;
pub mod trace;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::OperatorAction;
use serde_json::value::RawValue;
use tasker_core::event::{Event, EventBus, EventKind, RecvError};
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::TASK_QUEUE;
use tasker_core::names;
use tasker_core::state::StepState;
use tasker_core::store::{
    DeadLetter, Registration, ScheduleCreate, ScheduleRecord, Signalled, StepResolved, Store,
    StoreError, TaskCreated, TaskDetail, TaskListParams, TaskProgress, TaskRecord,
    TemplateListParams, TemplateRecord, TransitionRecord,
};
use tasker_core::template::{ContextError, TaskTemplate};
use tasker_core::time::Timestamp;
use tasker_core::views::QueueList;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use builtin::{SHELL_RETRY_EXIT, ShellPolicy};
pub use consumer::Queues;
pub use handler::{
    FnHandler, Handler, HandlerError, HandlerFuture, HandlerRegistry, HandlerResult, StepContext,
    to_result,
};
pub use trace::{TraceError, Traces};

/// What the engine refuses, or what went wrong underneath it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the context is not valid JSON: {0}")]
    ContextJson(String),
    #[error("the context must be a JSON object, got {0}")]
    ContextNotObject(&'static str),
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The template breaks a rule of this process (a `shell` step it does not permit).
    #[error("{0}")]
    Template(String),
    /// Text the database cannot store (a NUL) or that is too long.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The workers of a process.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub queues: Queues,
    /// Steps run at the same time, at most.
    pub concurrency: usize,
}

/// Which roles this process plays, and its timings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Start submitted tasks.
    pub orchestrator: bool,
    /// Run steps.
    pub worker: Option<WorkerConfig>,
    /// The safety-net interval of the wake-up loops.
    pub poll_interval: Duration,
    /// Added to a step's timeout for its message's visibility timeout: how long after
    /// a worker dies its step runs again.
    pub visibility_grace: Duration,
    /// Stop taking work above a memory watermark (none: no limit).
    pub memory: Option<pressure::MemoryLimits>,
    /// An orchestrator deletes tasks finished longer ago than this (none: keep all).
    pub retention: Option<Duration>,
    /// Where the engine publishes its events: the process's bus unless set.
    pub events: EventBus,
    /// Where spans go: the process's export ([`Traces::install`]) unless set; none:
    /// traces are off.
    pub traces: Option<Traces>,
}

impl EngineConfig {
    /// One process doing everything, serving every queue.
    pub fn embedded() -> Self {
        Self {
            orchestrator: true,
            worker: Some(WorkerConfig {
                queues: Queues::All,
                concurrency: 8,
            }),
            poll_interval: Duration::from_secs(5),
            visibility_grace: Duration::from_secs(5),
            memory: None,
            retention: None,
            events: EventBus::process(),
            traces: Traces::installed().cloned(),
        }
    }

    /// No loops: an engine for submissions, queries and operator actions only (a
    /// command, an API next to its workers, a client library).
    pub fn client() -> Self {
        Self {
            orchestrator: false,
            worker: None,
            ..Self::embedded()
        }
    }
}

pub(crate) struct Shared<S> {
    store: Arc<S>,
    handlers: HandlerRegistry,
    config: EngineConfig,
    metrics: metrics::Metrics,
    /// True while memory is above the high watermark: the loops take no new work.
    paused: watch::Sender<bool>,
    /// The templates this engine has registered, by canonical definition: submitting
    /// one again skips the registration round trip, and shares the template.
    registered: Mutex<HashMap<String, Arc<TaskTemplate>>>,
    submitter: submitter::Submitter,
    /// Loads a step's ancestors for its handler, on the first ask.
    ancestors: handler::AncestorLoader,
}

impl<S> Shared<S> {
    /// Publishes a lifecycle event; `step` is (id, name, attempt) for step events. The
    /// name is the step's shared handle: publishing copies no string.
    pub(crate) fn publish(
        &self,
        kind: EventKind,
        task_id: TaskId,
        step: Option<(StepId, Option<&Arc<str>>, u32)>,
    ) {
        self.config.events.publish(Event {
            kind,
            task_id: Some(task_id),
            step_id: step.map(|s| s.0),
            step_name: step.and_then(|s| s.1.cloned()),
            attempt: step.map_or(0, |s| s.2),
            at: Timestamp::now(),
        });
    }

    /// How tasks created here begin their traces: only when this process exports them.
    pub(crate) fn new_trace(&self) -> Option<tasker_core::store::NewTrace> {
        self.config.traces.as_ref().map(|_| trace::new_trace as _)
    }
}

impl<S: Store> Shared<S> {
    /// Exports the span of a task that reached the final `state`, when this process
    /// exports traces and the task was submitted with them.
    pub(crate) async fn trace_task(&self, task_id: TaskId, state: tasker_core::TaskState) {
        let Some(traces) = &self.config.traces else {
            return;
        };
        match self.store.task_record(task_id).await {
            Ok(task) => {
                if let Some(parent) = task.traceparent {
                    traces.task_ended(&task, parent, state);
                }
            }
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "cannot read the task to export its span")
            }
        }
    }
}

impl<S> Shared<S> {
    /// Publishes an event of the process itself, about no task.
    pub(crate) fn publish_process(&self, kind: EventKind) {
        self.config.events.publish(Event {
            kind,
            task_id: None,
            step_id: None,
            step_name: None,
            attempt: 0,
            at: Timestamp::now(),
        });
    }
}

/// Tasker's runtime over one store. Cheap to clone; clones share everything.
pub struct Engine<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// The loops of a started engine.
pub struct Running {
    shutdown: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops taking work and waits for the steps in flight to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for l in self.loops {
            let _ = l.await;
        }
    }
}

impl<S: Store> Engine<S> {
    pub fn new(store: Arc<S>, handlers: HandlerRegistry, config: EngineConfig) -> Self {
        let loading = store.clone();
        let ancestors: handler::AncestorLoader = Arc::new(move |step_id| {
            let store = loading.clone();
            Box::pin(async move { store.step_ancestors(step_id).await })
        });
        Self {
            shared: Arc::new(Shared {
                ancestors,
                store,
                handlers,
                config,
                metrics: metrics::Metrics::default(),
                paused: watch::Sender::new(false),
                registered: Mutex::new(HashMap::new()),
                submitter: submitter::Submitter::default(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<S> {
        &self.shared.store
    }

    /// The event bus this engine publishes on (the process's, unless configured):
    /// task and step lifecycle events.
    pub fn events(&self) -> &EventBus {
        &self.shared.config.events
    }

    /// What this engine has counted, for `/metrics`.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.shared.metrics
    }

    /// Whether memory pressure has stopped this engine from taking new work.
    pub fn is_paused(&self) -> bool {
        *self.shared.paused.borrow()
    }

    /// Registers the template after checking it against this process's rules (see
    /// [`HandlerRegistry::check_template`]).
    pub async fn register(&self, template: &TaskTemplate) -> Result<Registration, EngineError> {
        self.shared
            .handlers
            .check_template(template)
            .map_err(EngineError::Template)?;
        Ok(self.shared.store.template_register(template).await?)
    }

    /// Validates `context` (JSON text) against the template, registers the template if
    /// it is new, and creates the task — in one transaction with the other submissions
    /// made meanwhile (group commit). The same `idempotency_key` returns the same task.
    pub async fn submit(
        &self,
        template: &TaskTemplate,
        context: &str,
        idempotency_key: Option<&str>,
    ) -> Result<TaskCreated, EngineError> {
        self.submit_with_priority(template, context, idempotency_key, None)
            .await
    }

    /// [`Engine::submit`], with `priority` in place of the template's when given.
    pub async fn submit_with_priority(
        &self,
        template: &TaskTemplate,
        context: &str,
        idempotency_key: Option<&str>,
        priority: Option<i32>,
    ) -> Result<TaskCreated, EngineError> {
        if let Some(key) = idempotency_key {
            check_text("the idempotency key", key, MAX_KEY)?;
            if key.starts_with("schedule:") {
                return Err(EngineError::Input(
                    "idempotency keys that start with `schedule:` are the schedules' own".into(),
                ));
            }
        }
        if let Some(Err(why)) = priority.map(tasker_core::template::check_priority) {
            return Err(EngineError::Input(why));
        }
        let context = checked_context(template, context)?;
        let traceparent = self.shared.new_trace().map(|new| new());
        let definition = template.canonical_json();
        let known = self
            .shared
            .registered
            .lock()
            .expect("registry lock")
            .get(&definition)
            .cloned();
        let template = match known {
            Some(known) => known,
            None => {
                self.register(template).await?;
                let shared = Arc::new(template.clone());
                self.shared
                    .registered
                    .lock()
                    .expect("registry lock")
                    .insert(definition, shared.clone());
                shared
            }
        };
        let created = self
            .shared
            .submitter
            .create(
                &self.shared.store,
                submitter::Request {
                    template,
                    context,
                    idempotency_key: idempotency_key.map(str::to_owned),
                    priority,
                    traceparent,
                },
            )
            .await?;
        if created.created {
            self.shared
                .publish(EventKind::TaskCreated, created.task_id, None);
        }
        Ok(created)
    }

    /// Pauses `queue` (`paused`: its workers take nothing new from it, the steps in
    /// flight finish) or resumes it, in every process; returns whether that changed it.
    pub async fn pause_queue(&self, queue: &str, paused: bool) -> Result<bool, EngineError> {
        names::check_queue_name(queue)
            .map_err(|why| EngineError::Input(format!("queue `{queue}` {why}")))?;
        let changed = self.shared.store.queue_pause(queue, paused).await?;
        self.shared
            .metrics
            .operator_acted(OperatorAction::pausing(paused));
        tracing::info!(queue, paused, changed, "queue paused or resumed");
        Ok(changed)
    }

    /// The paused queues, by name.
    pub async fn paused_queues(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.shared.store.queue_paused().await?)
    }

    /// Creates a schedule that submits `template` with `context` at each tick of `cron`
    /// (see [`tasker_core::schedule::Cadence`]), after checking both as a submission is
    /// checked and registering the template.
    pub async fn schedule_create(
        &self,
        name: &str,
        template: &TaskTemplate,
        cron: &str,
        timezone: &str,
        context: &str,
        catch_up: tasker_core::schedule::CatchUp,
    ) -> Result<ScheduleRecord, EngineError> {
        let context = checked_context(template, context)?;
        self.shared
            .handlers
            .check_template(template)
            .map_err(EngineError::Template)?;
        let params = ScheduleCreate {
            name,
            template,
            cron,
            timezone,
            context: &context,
            catch_up,
        };
        let created = self.shared.store.schedule_create(params).await?;
        tracing::info!(schedule = name, cron, "schedule created");
        Ok(created)
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>, EngineError> {
        Ok(self.shared.store.schedule_list().await?)
    }

    /// Pauses a schedule or resumes it from its next tick; whether that changed it.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<bool, EngineError> {
        let changed = self.shared.store.schedule_pause(name, paused).await?;
        self.shared
            .metrics
            .operator_acted(OperatorAction::pausing(paused));
        tracing::info!(
            schedule = name,
            paused,
            changed,
            "schedule paused or resumed"
        );
        Ok(changed)
    }

    /// Deletes a schedule; the tasks it created stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), EngineError> {
        self.shared.store.schedule_delete(name).await?;
        tracing::info!(schedule = name, "schedule deleted");
        Ok(())
    }

    /// Pauses the template `namespace/name` (`paused`: its new tasks stay pending, every
    /// version, in every process) or resumes it, starting the tasks it held; returns
    /// whether that changed it.
    pub async fn pause_template(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> Result<bool, EngineError> {
        // A namespace is named as a queue is.
        names::check_queue_name(namespace)
            .map_err(|why| EngineError::Input(format!("namespace `{namespace}` {why}")))?;
        names::check_name(name)
            .map_err(|why| EngineError::Input(format!("template name `{name}` {why}")))?;
        let changed = self
            .shared
            .store
            .template_pause(namespace, name, paused)
            .await?;
        self.shared
            .metrics
            .operator_acted(OperatorAction::pausing(paused));
        tracing::info!(
            namespace,
            name,
            paused,
            changed,
            "template paused or resumed"
        );
        Ok(changed)
    }

    /// The paused templates, as (namespace, name).
    pub async fn paused_templates(&self) -> Result<Vec<(String, String)>, EngineError> {
        Ok(self.shared.store.template_paused().await?)
    }

    /// Every queue with the messages it holds and whether it is paused.
    pub async fn queues(&self) -> Result<QueueList, EngineError> {
        let depths = self.shared.store.queue_depths().await?;
        let paused = self.shared.store.queue_paused().await?;
        Ok(QueueList::new(depths, &paused))
    }

    /// Cancels a task and every step that has not finished; a step's running handler
    /// finishes, but its result is discarded.
    pub async fn cancel(
        &self,
        task_id: TaskId,
        reason: &str,
    ) -> Result<tasker_core::TaskState, EngineError> {
        let state = self.shared.store.task_cancel(task_id, reason).await?;
        self.shared.metrics.operator_acted(OperatorAction::Cancel);
        self.shared.publish(EventKind::TaskCancelled, task_id, None);
        if state == tasker_core::TaskState::Cancelled {
            self.shared.metrics.task_finished(state);
            self.shared.trace_task(task_id, state).await;
        }
        Ok(state)
    }

    /// Runs the failed steps of a task in error again; returns how many were enqueued.
    pub async fn retry(&self, task_id: TaskId) -> Result<usize, EngineError> {
        let enqueued = self.shared.store.task_retry(task_id).await?;
        self.shared.metrics.operator_acted(OperatorAction::Retry);
        self.shared.publish(EventKind::TaskResumed, task_id, None);
        Ok(enqueued)
    }

    /// Marks a failed step done with `results` (an operator's resolution); its children
    /// proceed, and a task in error resumes.
    pub async fn resolve(
        &self,
        step_id: StepId,
        results: &RawValue,
    ) -> Result<StepResolved, EngineError> {
        let resolved = self.shared.store.step_resolve(step_id, results).await?;
        let task_id = resolved.task_id;
        self.shared.metrics.operator_acted(OperatorAction::Resolve);
        self.shared
            .metrics
            .steps_ended(StepState::Skipped, resolved.skipped);
        self.shared
            .publish(EventKind::StepResolved, task_id, Some((step_id, None, 0)));
        if resolved.resumed {
            self.shared.publish(EventKind::TaskResumed, task_id, None);
        }
        worker::task_settled(&self.shared, task_id, resolved.task_state).await;
        Ok(resolved)
    }

    /// Delivers the signal `name` with its JSON `payload` to a task: the steps that wait
    /// for it complete with the payload as their result, and a step that reaches its
    /// wait later finds it kept. A second signal of a name, or one for a finished task,
    /// is refused ([`StoreError::Conflict`]).
    pub async fn signal(
        &self,
        task_id: TaskId,
        name: &str,
        payload: &str,
    ) -> Result<Signalled, EngineError> {
        names::check_name(name)
            .map_err(|why| EngineError::Input(format!("signal name `{name}` {why}")))?;
        let value: serde_json::Value = serde_json::from_str(payload).map_err(|e| {
            EngineError::Input(format!("the signal's payload is not valid JSON: {e}"))
        })?;
        if has_nul(&value) {
            return Err(EngineError::Input(
                "the signal's payload holds a NUL character (\\u0000), which the database cannot store"
                    .into(),
            ));
        }
        let payload = serde_json::value::to_raw_value(&value)
            .map_err(|e| EngineError::Input(e.to_string()))?;
        let signalled = self
            .shared
            .store
            .task_signal(task_id, name, &payload)
            .await?;
        let metrics = &self.shared.metrics;
        metrics.steps_ended(StepState::Complete, signalled.completed.len());
        metrics.steps_ended(StepState::Skipped, signalled.skipped);
        for &step_id in &signalled.completed {
            self.shared
                .publish(EventKind::StepCompleted, task_id, Some((step_id, None, 1)));
        }
        worker::task_settled(&self.shared, task_id, signalled.task_state).await;
        Ok(signalled)
    }

    /// The task with every step, in template order.
    pub async fn task(&self, task_id: TaskId) -> Result<TaskDetail, EngineError> {
        Ok(self.shared.store.task_get(task_id).await?)
    }

    /// The task's state and how far its steps have come, from its row alone.
    pub async fn progress(&self, task_id: TaskId) -> Result<TaskProgress, EngineError> {
        Ok(self.shared.store.task_progress(task_id).await?)
    }

    /// The tasks not yet finished (pending or in progress), oldest first.
    pub async fn unfinished(&self) -> Result<Vec<TaskId>, EngineError> {
        Ok(self.shared.store.task_list_unfinished().await?)
    }

    /// Tasks, newest first.
    pub async fn tasks(&self, params: TaskListParams<'_>) -> Result<Vec<TaskRecord>, EngineError> {
        Ok(self.shared.store.task_list(params).await?)
    }

    /// How many tasks `filter` covers in each state.
    pub async fn task_counts(
        &self,
        filter: tasker_core::store::TaskFilter<'_>,
    ) -> Result<Vec<(tasker_core::TaskState, u64)>, EngineError> {
        Ok(self.shared.store.task_counts(filter).await?)
    }

    /// Registered templates, by namespace, name and version.
    pub async fn templates(
        &self,
        params: TemplateListParams<'_>,
    ) -> Result<Vec<TemplateRecord>, EngineError> {
        Ok(self.shared.store.template_list(params).await?)
    }

    /// The task's audit trail, oldest first: every state change of it and its steps,
    /// with the reason.
    pub async fn history(&self, task_id: TaskId) -> Result<Vec<TransitionRecord>, EngineError> {
        let transitions = self.shared.store.transition_list(task_id).await?;
        if transitions.is_empty() {
            // Every task has at least its creation.
            return Err(StoreError::NotFound(format!("task {task_id}")).into());
        }
        Ok(transitions)
    }

    /// The messages moved to the dead letters of `queue`, or of every queue, each with
    /// why.
    pub async fn dead_letters(&self, queue: Option<&str>) -> Result<Vec<DeadLetter>, EngineError> {
        let queues = match queue {
            Some(q) if q == TASK_QUEUE => vec![q.to_owned()],
            Some(q) => {
                tasker_core::names::check_queue_name(q)
                    .map_err(|why| EngineError::Input(format!("queue `{q}` {why}")))?;
                vec![q.to_owned()]
            }
            None => self.shared.store.queue_dead_letter_queues().await?,
        };
        let mut letters = Vec::new();
        for q in &queues {
            letters.extend(self.shared.store.queue_dead_letters(q).await?);
        }
        Ok(letters)
    }

    /// Starts the orchestrator and worker loops this configuration asks for.
    pub fn start(&self) -> Running {
        let (shutdown, rx) = watch::channel(false);
        let mut loops = Vec::new();
        let config = &self.shared.config;
        if config.orchestrator {
            let shared = self.shared.clone();
            let consumer = consumer::Consumer {
                store: shared.store.clone(),
                queues: Queues::Named(vec![TASK_QUEUE.to_owned()]),
                wakeup: |w| &w.tasks,
                // Starting a task is done when it is taken: take many per transaction.
                concurrency: 64,
                poll: config.poll_interval,
                paused: self.shared.paused.subscribe(),
            };
            let rx = rx.clone();
            loops.push(tokio::spawn(async move {
                let take = |_queue, limit| {
                    let shared = shared.clone();
                    async move { orchestrator::start_tasks(&shared, limit).await }
                };
                let publish = |_queue, started| {
                    let shared = shared.clone();
                    async move { orchestrator::started(&shared, started).await }
                };
                consumer.run(rx, take, publish).await
            }));
        }
        if let Some(worker) = &config.worker {
            let shared = self.shared.clone();
            let consumer = consumer::Consumer {
                store: shared.store.clone(),
                queues: worker.queues.clone(),
                wakeup: |w| &w.steps,
                concurrency: worker.concurrency.max(1),
                poll: config.poll_interval,
                paused: self.shared.paused.subscribe(),
            };
            let rx = rx.clone();
            loops.push(tokio::spawn(async move {
                let (outcomes, to_record) = tokio::sync::mpsc::unbounded_channel();
                let refill = finisher::Refill {
                    visibility: worker::READ_VISIBILITY,
                    grace: shared.config.visibility_grace,
                    shutdown: rx.clone(),
                    paused: shared.paused.subscribe(),
                };
                let recording =
                    tokio::spawn(finisher::run(shared.store.clone(), refill, to_record));
                let take = |queue: Arc<str>, limit| {
                    let shared = shared.clone();
                    async move { worker::claim(&shared, &queue, limit).await }
                };
                let run = {
                    let shared = shared.clone();
                    move |queue, claim| {
                        worker::run_steps(shared.clone(), outcomes.clone(), queue, claim)
                    }
                };
                // Returns once every step in flight has its outcome recorded; the last
                // sender of outcomes goes with `run`, and the recorder stops.
                consumer.run(rx, take, run).await;
                let _ = recording.await;
            }));
        }
        if let (true, Some(retention)) = (config.orchestrator, config.retention) {
            let (store, rx) = (self.shared.store.clone(), rx.clone());
            loops.push(tokio::spawn(async move {
                retention::keep(&*store, retention, rx).await
            }));
        }
        if let Some(limits) = &config.memory {
            let watching = pressure::watch_memory(self.shared.clone(), limits.clone(), rx);
            loops.push(tokio::spawn(watching));
        }
        Running { shutdown, loops }
    }

    /// Waits until the task is complete, in error or cancelled, calling `on_progress`
    /// each time something happened to it (which reads the task's row, not its steps),
    /// and returns its details.
    pub async fn wait(
        &self,
        task_id: TaskId,
        mut on_progress: impl FnMut(&TaskProgress),
    ) -> Result<TaskDetail, EngineError> {
        let mut events = self.shared.config.events.subscribe();
        loop {
            let progress = self.shared.store.task_progress(task_id).await?;
            on_progress(&progress);
            if progress.state.is_final() {
                return Ok(self.shared.store.task_get(task_id).await?);
            }
            let safety = tokio::time::sleep(self.shared.config.poll_interval);
            tokio::pin!(safety);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(e) if e.task_id != Some(task_id) => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => {
                            (&mut safety).await;
                            break;
                        }
                    },
                    _ = &mut safety => break,
                }
            }
        }
    }
}

/// The longest idempotency key, in characters.
const MAX_KEY: usize = 255;

/// Refuses text a database cannot store or index: a NUL, or more than `max` characters.
/// `context` (JSON text) as a task of `template` may be given it: an object the
/// database can store, matching the template's schema, with its concurrency key.
fn checked_context(template: &TaskTemplate, context: &str) -> Result<Box<RawValue>, EngineError> {
    let value: serde_json::Value =
        serde_json::from_str(context).map_err(|e| EngineError::ContextJson(e.to_string()))?;
    if !value.is_object() {
        return Err(EngineError::ContextNotObject(json_kind(&value)));
    }
    if has_nul(&value) {
        return Err(EngineError::Input(
            "the context holds a NUL character (\\u0000), which the database cannot store".into(),
        ));
    }
    template.check_context(&value)?;
    let context = RawValue::from_string(context.to_owned())
        .map_err(|e| EngineError::ContextJson(e.to_string()))?;
    template.concurrency_value(&context)?;
    Ok(context)
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), EngineError> {
    if text.contains('\0') {
        return Err(EngineError::Input(format!(
            "{what} holds a NUL character, which the database cannot store"
        )));
    }
    // Characters, not bytes, as JSON Schema's `maxLength` counts them.
    let length = text.chars().count();
    if length > max {
        return Err(EngineError::Input(format!(
            "{what} is {length} characters long, more than {max}"
        )));
    }
    Ok(())
}

/// Whether a string or key anywhere in `v` holds a NUL.
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
