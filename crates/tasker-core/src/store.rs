//! The [`Store`] trait: the one seam between the engine and a database.
//!
//! The engine is written against this trait and never names a backend; the SQLite and
//! PostgreSQL backends live in `tasker-store` and pass the same conformance suite
//! (`tasker-storetest`). Methods are named noun-first (`task_…`, `step_…`, `queue_…`).
//!
//! Each state-changing method is one transaction: the compare-and-set of the row, the
//! append to the transitions table and the queue operations it implies commit together
//! or not at all. Methods that change a task serialize on that task, and evaluate
//! [`readiness`](crate::readiness) inside the transaction.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::backoff::RetryPolicy;
use crate::id::{StepId, TaskId};
use crate::message::{ExecutionMessage, Parents, TASK_QUEUE, TraceParent};
use crate::schedule::CatchUp;
use crate::state::{IllegalTransition, StepState, TaskState};
use crate::template::TaskTemplate;
use crate::time::Timestamp;

/// Makes a new trace's context, for a task the store creates itself (a schedule's):
/// the engine's, given only when its process exports traces.
pub type NewTrace = fn() -> TraceParent;

/// Errors that mean the same on every backend; each backend maps its native errors here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request that cannot be carried out as given (say, a context without the
    /// template's concurrency key).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Busy(String),
    /// The database's schema is not the one this build uses.
    #[error("{0}")]
    Schema(String),
    /// The database cannot be reached or dropped the connection: worth trying again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A task to create from a validated template.
#[derive(Clone, Copy, Debug)]
pub struct TaskCreateParams<'a> {
    pub template: &'a TaskTemplate,
    /// The task context, already checked against the template's schema.
    pub context: &'a RawValue,
    /// Submitting twice with the same key returns the first task.
    pub idempotency_key: Option<&'a str>,
    /// Overrides the template's priority.
    pub priority: Option<i32>,
    /// The task's trace context, for a submitter with traces on: kept on the task and
    /// carried by its step messages.
    pub traceparent: Option<TraceParent>,
}

/// The outcome of [`Store::task_create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskCreated {
    pub task_id: TaskId,
    /// False when the idempotency key named an existing task.
    pub created: bool,
}

/// What [`Store::template_register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// The same content was already registered under this version.
    Unchanged,
}

/// A message read from a queue, invisible to other readers until its visibility timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    pub msg_id: i64,
    /// How many times it has been read, this time included.
    pub read_ct: i32,
    pub enqueued_at: Timestamp,
    /// The message's JSON, decoded by borrowing from this buffer.
    pub body: String,
}

/// What a read of a queue found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueBatch {
    pub messages: Vec<QueueMessage>,
    /// When the earliest of the queue's other messages is (or becomes) visible: a
    /// time not after now means more is waiting; a later one is a delayed retry, or a
    /// message whose reader may have died; none, an empty queue. A reader sleeps until
    /// then instead of polling. Only a read that found fewer messages than it asked for
    /// looks for it (a full read is followed by another at once): after a full one it
    /// is none.
    pub next_visible: Option<Timestamp>,
}

/// A message moved to the dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub queue: String,
    pub msg_id: i64,
    pub read_ct: i32,
    pub body: String,
    pub reason: String,
    pub archived_at: Timestamp,
}

/// Start a submitted task: the message that carried it, and the task.
#[derive(Clone, Copy, Debug)]
pub struct TaskStartParams {
    pub msg_id: i64,
    pub task_id: TaskId,
}

/// The outcome of [`Store::step_resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepResolved {
    pub task_id: TaskId,
    /// The task's state afterwards.
    pub task_state: TaskState,
    /// True when the resolution moved the task out of `error`.
    pub resumed: bool,
    /// Steps it skipped: the children a deciding step's resolution did not choose, and
    /// what only they led to.
    pub skipped: usize,
}

/// The outcome of [`Store::task_signal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signalled {
    /// The steps that were waiting for the signal and completed with it; none when no
    /// step waits yet (the signal is kept for the step that will).
    pub completed: Vec<StepId>,
    /// The task's state afterwards.
    pub task_state: TaskState,
    /// Steps it skipped (as [`StepFinished::Applied::skipped`]).
    pub skipped: usize,
}

/// The outcome of [`Store::task_start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskStarted {
    /// False when the task was not pending (already started, or cancelled).
    pub started: bool,
    /// Steps put on their queues.
    pub enqueued: usize,
    pub state: TaskState,
}

/// Claim a step for execution from the message a worker read.
#[derive(Clone, Copy, Debug)]
pub struct StepStartParams<'a> {
    pub queue: &'a str,
    pub msg_id: i64,
    /// The step's task, from the message: stores serialize on it.
    pub task_id: TaskId,
    pub step_id: StepId,
    /// Added to the step's timeout to give its message's visibility timeout.
    pub grace: Duration,
}

/// The outcome of [`Store::step_start`].
#[derive(Debug)]
pub enum StepStart {
    /// Run the handler with this.
    Run(Box<StepExecution>),
    /// Nothing to run: the step was cancelled or is done (its message is gone), or
    /// another claim or an operator changed it as this one read it (its message shows
    /// again after the read's visibility, and is settled then).
    Skipped { state: StepState },
    /// The message came back more often than the step's attempts allow: it is in the
    /// dead letters and the step in error.
    DeadLettered {
        task_id: TaskId,
        step_id: StepId,
        attempts: u32,
        /// The task's state after it (in error, if nothing else can progress).
        task_state: TaskState,
    },
    /// The message does not parse, or names no step: it is in the dead letters.
    Invalid { reason: String },
    /// The step's rate limit has no token now: it stays as it was, takes no attempt,
    /// and its message shows again `until`, when a token will be there for it.
    RateLimited { key: String, until: Timestamp },
}

/// One message of a [`Store::step_claim`], and what claiming its step did.
#[derive(Debug)]
pub struct Claim {
    pub msg_id: i64,
    pub enqueued_at: Timestamp,
    pub start: StepStart,
}

/// Read up to `limit` messages of `queue` and claim their steps: the read hides each
/// message for `visibility`, its claim for the step's timeout plus `grace`.
#[derive(Clone, Copy, Debug)]
pub struct ClaimParams<'a> {
    pub queue: &'a str,
    pub limit: u32,
    pub visibility: Duration,
    pub grace: Duration,
}

/// What a [`Store::step_claim`] took.
#[derive(Debug, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// As [`QueueBatch::next_visible`].
    pub next_visible: Option<Timestamp>,
}

/// One task request of a [`Store::task_start_batch`], and what starting it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartedTask {
    pub task_id: TaskId,
    pub started: TaskStarted,
}

/// A step whose wait for a signal timed out, failed by [`Store::task_start_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitExpired {
    pub task_id: TaskId,
    pub step_id: StepId,
    /// The task's state after the batch (in error, if nothing else can progress) on
    /// the task's last expiry of the batch; its state before the batch on the others.
    pub task_state: TaskState,
}

/// What a [`Store::task_start_batch`] took.
#[derive(Debug, Default)]
pub struct TasksStarted {
    pub tasks: Vec<StartedTask>,
    /// Waits whose timeout came due before their signal.
    pub expired: Vec<WaitExpired>,
    /// Schedule ticks that created their task.
    pub ticks: Vec<TickFired>,
    /// Missed schedule ticks that the catch-up policy left without a task.
    pub ticks_skipped: u64,
    /// Requests that did not parse or named no task, moved to the dead letters.
    pub invalid: usize,
    /// As [`QueueBatch::next_visible`].
    pub next_visible: Option<Timestamp>,
}

/// Everything a handler is given, loaded in one query: the owned form of an
/// [`ExecutionMessage`]. Its names are interned: the same `Arc` for every step that
/// shares them.
#[derive(Clone, Debug)]
pub struct StepExecution {
    pub task_id: TaskId,
    pub step_id: StepId,
    /// 1 for the first execution.
    pub attempt: u32,
    pub namespace: Arc<str>,
    pub task_name: Arc<str>,
    pub task_version: Arc<str>,
    pub step_name: Arc<str>,
    pub handler: Arc<str>,
    pub config: Box<RawValue>,
    pub context: Box<RawValue>,
    /// The results of the step's parents, by parent name, in template order.
    pub parents: Vec<(Arc<str>, Box<RawValue>)>,
    /// The children the step chooses among with its result's `next` (its `decides`).
    pub decides: Vec<Arc<str>>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// For an instance of a `for_each` step: its element and index.
    pub item: Option<(u32, Box<RawValue>)>,
    /// Its task's trace context, from the message it was claimed by; once a worker that
    /// exports traces runs it, the context of the attempt's own span.
    pub traceparent: Option<TraceParent>,
}

impl StepExecution {
    /// The wire form, borrowing from this.
    pub fn message(&self) -> ExecutionMessage<'_> {
        ExecutionMessage {
            task_id: self.task_id,
            step_id: self.step_id,
            attempt: self.attempt,
            namespace: Cow::Borrowed(&self.namespace),
            task_name: Cow::Borrowed(&self.task_name),
            task_version: Cow::Borrowed(&self.task_version),
            step_name: Cow::Borrowed(&self.step_name),
            context: &self.context,
            config: &self.config,
            parents: Parents(
                self.parents
                    .iter()
                    .map(|(name, results)| (Cow::Borrowed(&**name), &**results))
                    .collect(),
            ),
            ancestors: Parents::default(),
            item: self.item.as_ref().map(|(_, item)| &**item),
            index: self.item.as_ref().map(|(index, _)| *index),
            traceparent: self.traceparent,
        }
    }
}

/// How an attempt ended, as decided by the engine.
#[derive(Clone, Copy, Debug)]
pub enum StepOutcome<'a> {
    Succeeded {
        results: &'a RawValue,
    },
    /// Retry after `delay`.
    Retry {
        error: &'a str,
        delay: Duration,
    },
    Failed {
        error: &'a str,
    },
}

/// Record the end of an attempt.
#[derive(Clone, Copy, Debug)]
pub struct StepFinishParams<'a> {
    pub queue: &'a str,
    pub msg_id: i64,
    pub task_id: TaskId,
    pub step_id: StepId,
    pub attempt: u32,
    pub outcome: StepOutcome<'a>,
}

/// The outcome of [`Store::step_finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepFinished {
    Applied {
        step_state: StepState,
        /// Children put on their queues.
        enqueued: usize,
        /// Steps it skipped: the children a decision did not choose, and the steps
        /// all of whose parents were skipped.
        skipped: usize,
        task_state: TaskState,
    },
    /// The step was no longer running this attempt (cancelled, or reclaimed by another
    /// worker after a visibility timeout): nothing changed.
    Stale { state: StepState },
}

/// What a [`Store::step_finish_batch`] did.
#[derive(Debug, Default)]
pub struct FinishedBatch {
    /// In the order of the outcomes.
    pub finished: Vec<StepFinished>,
    /// In the order of the claims.
    pub claimed: Vec<Claimed>,
}

/// A task row.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub id: TaskId,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub state: TaskState,
    pub context: Box<RawValue>,
    pub idempotency_key: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The value of its template's concurrency key, for a template with `concurrency`.
    pub concurrency_key: Option<String>,
    /// Its steps are taken from their queues before those of lower priority.
    pub priority: i32,
    /// Its trace context, when it was submitted with traces on.
    pub traceparent: Option<TraceParent>,
}

/// A schedule to create: `template` submitted with `context` at each tick of `cron` (a
/// cron expression or `@every DURATION`) in `timezone`.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleCreate<'a> {
    pub name: &'a str,
    pub template: &'a TaskTemplate,
    pub cron: &'a str,
    pub timezone: &'a str,
    /// Checked against the template already.
    pub context: &'a RawValue,
    pub catch_up: CatchUp,
}

/// A schedule as stored.
#[derive(Clone, Debug)]
pub struct ScheduleRecord {
    pub name: String,
    pub namespace: String,
    pub template: String,
    pub version: String,
    pub cron: String,
    pub timezone: String,
    pub context: Box<RawValue>,
    pub catch_up: CatchUp,
    pub paused: bool,
    /// The tick it waits for; `None` once a cron expression has no more.
    pub next_fire: Option<Timestamp>,
    /// The latest tick that created a task.
    pub last_fire: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A schedule's tick that created its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickFired {
    pub schedule: String,
    pub fire_at: Timestamp,
    pub task_id: TaskId,
    /// From the tick's time to the commit that created its task (about).
    pub lag: Duration,
}

/// Steps of pending tasks that wait for their task to start, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldSteps {
    /// Of tasks whose template is paused.
    pub paused_template: u64,
    /// Of tasks that wait for a slot of their concurrency key (or are about to start).
    pub concurrency_key: u64,
    /// Enqueued steps with a rate limit: held back by it, or about to start.
    pub rate_limit: u64,
}

/// A step row.
#[derive(Clone, Debug)]
pub struct StepRecord {
    pub id: StepId,
    pub task_id: TaskId,
    pub position: u32,
    pub name: String,
    pub handler: String,
    pub queue: String,
    pub depends_on: Vec<String>,
    pub state: StepState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub results: Option<Box<RawValue>>,
    pub error: Option<String>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    /// The signal it waits for, for a step that runs no handler (`wait_for`).
    pub waits_for: Option<String>,
    /// The rate its starts are limited by (`rate_limit`).
    pub rate_limit: Option<Box<crate::rate::RateLimit>>,
    /// When it found no token: the time of the one it booked, until it starts.
    pub rate_booked: Option<Timestamp>,
}

/// A task with its steps in template order.
#[derive(Clone, Debug)]
pub struct TaskDetail {
    pub task: TaskRecord,
    pub steps: Vec<StepRecord>,
}

/// A task's state and how far its steps have come, read from its row alone: cheap to
/// ask for at every step of a large task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskProgress {
    pub state: TaskState,
    pub steps: u32,
    /// Complete or resolved.
    pub done: u32,
    /// Enqueued, running or waiting to retry.
    pub active: u32,
}

/// What one [`Store::task_prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub tasks: u64,
    pub steps: u64,
}

/// A registered template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateRecord {
    pub namespace: String,
    pub name: String,
    pub version: String,
    /// The canonical JSON it was registered with ([`TaskTemplate::canonical_json`]).
    pub definition: String,
    pub created_at: Timestamp,
}

/// How many messages a queue holds (visible or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    pub messages: u64,
}

/// Which tasks a listing or a count covers; each field left `None` takes any.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskFilter<'a> {
    pub namespace: Option<&'a str>,
    /// Tasks of templates of this name (in any namespace unless `namespace` is set).
    pub name: Option<&'a str>,
    /// Tasks created at or after this instant.
    pub created_from: Option<Timestamp>,
    /// Tasks created before this instant.
    pub created_to: Option<Timestamp>,
}

/// Which tasks [`Store::task_list`] returns, newest first.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskListParams<'a> {
    pub state: Option<TaskState>,
    pub filter: TaskFilter<'a>,
    /// Tasks older than this one (cursor pagination).
    pub before: Option<TaskId>,
    pub limit: u32,
}

/// Which templates [`Store::template_list`] returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct TemplateListParams<'a> {
    pub namespace: Option<&'a str>,
    /// Only this template's versions (with `namespace`).
    pub name: Option<&'a str>,
    /// Templates after this `(namespace, name, version)` (cursor pagination).
    pub after: Option<(&'a str, &'a str, &'a str)>,
    pub limit: u32,
}

impl<'a> TemplateListParams<'a> {
    /// `after` as three nullable statement parameters.
    pub fn after_columns(&self) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>) {
        match self.after {
            Some((namespace, name, version)) => (Some(namespace), Some(name), Some(version)),
            None => (None, None, None),
        }
    }
}

/// One row of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionRecord {
    pub task_id: TaskId,
    /// `None` for a transition of the task itself.
    pub step_id: Option<StepId>,
    pub from_state: Option<String>,
    pub to_state: String,
    pub reason: String,
    pub at: Timestamp,
}

/// In-process wake-ups. A backend signals them when work becomes visible (after the
/// commit that sent it, or on a database notification); loops register interest with
/// `Notified::enable` *before* reading a queue, so a signal between an empty read and
/// the wait is never lost.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// Step messages were sent to some queue.
    pub steps: Notify,
    /// Task requests were sent.
    pub tasks: Notify,
}

impl Wakeups {
    /// Wakes whoever reads `queue`.
    pub fn queue_sent(&self, queue: &str) {
        if queue == TASK_QUEUE {
            self.tasks.notify_waiters();
        } else {
            self.steps.notify_waiters();
        }
    }
}

/// A database that holds tasks, steps, transitions and queues. See the module docs.
pub trait Store: Send + Sync + 'static {
    /// Records a template under its (namespace, name, version). Registering different
    /// content under an existing version is a [`StoreError::Conflict`].
    fn template_register(
        &self,
        template: &TaskTemplate,
    ) -> impl Future<Output = StoreResult<Registration>> + Send;

    /// Registered templates, ordered by namespace, name and version (as text).
    fn template_list(
        &self,
        params: TemplateListParams<'_>,
    ) -> impl Future<Output = StoreResult<Vec<TemplateRecord>>> + Send;

    /// How many write transactions this store has committed (queue reads included:
    /// they write), for measurements.
    fn write_transactions(&self) -> u64;

    /// Creates a pending task with its steps and edges and sends its start request.
    fn task_create(
        &self,
        params: TaskCreateParams<'_>,
    ) -> impl Future<Output = StoreResult<TaskCreated>> + Send;

    /// Creates each task of `batch` as [`Store::task_create`] does, in one transaction:
    /// one commit for many submissions. All or nothing; results in the order given.
    fn task_create_batch(
        &self,
        batch: &[TaskCreateParams<'_>],
    ) -> impl Future<Output = StoreResult<Vec<TaskCreated>>> + Send;

    /// Starts a pending task: enqueues its root steps and deletes the request message.
    fn task_start(
        &self,
        params: TaskStartParams,
    ) -> impl Future<Output = StoreResult<TaskStarted>> + Send;

    /// Reads up to `limit` task requests and starts their tasks, in one transaction;
    /// fails the waits whose timeout message it read, if they still wait; fires the
    /// schedule ticks it read, giving each task it creates a trace context from
    /// `new_trace` when the process exports traces.
    fn task_start_batch(
        &self,
        limit: u32,
        visibility: Duration,
        new_trace: Option<NewTrace>,
    ) -> impl Future<Output = StoreResult<TasksStarted>> + Send;

    /// Cancels a task and every step that has not finished. Returns the task's state.
    fn task_cancel(
        &self,
        task_id: TaskId,
        reason: &str,
    ) -> impl Future<Output = StoreResult<TaskState>> + Send;

    /// Delivers the signal `name` with its `payload` to a task: the steps that wait
    /// for it complete with the payload as their result (their children proceed), and
    /// a step that reaches its wait later finds it kept. A second signal of the same
    /// name, or one for a finished task, is a [`StoreError::Conflict`].
    fn task_signal(
        &self,
        task_id: TaskId,
        name: &str,
        payload: &RawValue,
    ) -> impl Future<Output = StoreResult<Signalled>> + Send;

    /// Re-runs the failed steps of a task in error with fresh attempts (a wait that
    /// timed out waits again); returns how many steps were enqueued or wait again.
    fn task_retry(&self, task_id: TaskId) -> impl Future<Output = StoreResult<usize>> + Send;

    fn task_get(&self, task_id: TaskId) -> impl Future<Output = StoreResult<TaskDetail>> + Send;

    /// The task's row, without its steps.
    fn task_record(&self, task_id: TaskId) -> impl Future<Output = StoreResult<TaskRecord>> + Send;

    /// The task's state and step counts, without reading its steps.
    fn task_progress(
        &self,
        task_id: TaskId,
    ) -> impl Future<Output = StoreResult<TaskProgress>> + Send;

    fn task_list(
        &self,
        params: TaskListParams<'_>,
    ) -> impl Future<Output = StoreResult<Vec<TaskRecord>>> + Send;

    /// How many tasks `filter` covers in each state (states with none left out).
    fn task_counts(
        &self,
        filter: TaskFilter<'_>,
    ) -> impl Future<Output = StoreResult<Vec<(TaskState, u64)>>> + Send;

    /// Tasks that are pending or in progress, oldest first.
    fn task_list_unfinished(&self) -> impl Future<Output = StoreResult<Vec<TaskId>>> + Send;

    /// Claims a step from its message (see [`StepStart`]) and sets the message's
    /// visibility timeout to the step's timeout plus `grace`.
    fn step_start(
        &self,
        params: StepStartParams<'_>,
    ) -> impl Future<Output = StoreResult<StepStart>> + Send;

    /// Reads messages and claims their steps as [`Store::step_start`] does, in one
    /// transaction (see [`ClaimParams`]).
    fn step_claim(
        &self,
        params: ClaimParams<'_>,
    ) -> impl Future<Output = StoreResult<Claimed>> + Send;

    /// Records the end of an attempt, enqueues the children it unblocks, settles the
    /// task if it is finished, and deletes the message — in one transaction.
    fn step_finish(
        &self,
        params: StepFinishParams<'_>,
    ) -> impl Future<Output = StoreResult<StepFinished>> + Send;

    /// [`Store::step_finish`] for each of `batch`, in one transaction (a group commit):
    /// all are applied or, on an error, none. Results are in the order of `batch`; the
    /// last outcome of each task in the batch carries that task's new state and the
    /// steps it enqueued (the others: the state before, and none), so a finished task
    /// is reported once.
    ///
    /// Then, in the same transaction, each of `claims` as [`Store::step_claim`]: a
    /// worker refills the slots the outcomes free, and may take the children they
    /// enqueued, for one commit per round instead of two.
    fn step_finish_batch(
        &self,
        batch: &[StepFinishParams<'_>],
        claims: &[ClaimParams<'_>],
    ) -> impl Future<Output = StoreResult<FinishedBatch>> + Send;

    /// An operator marks a failed step done with `results`; its children proceed.
    fn step_resolve(
        &self,
        step_id: StepId,
        results: &RawValue,
    ) -> impl Future<Output = StoreResult<StepResolved>> + Send;

    /// Deletes up to `limit` finished tasks (complete, in error or cancelled) last
    /// changed before `before`, with their steps, edges, transitions, queue messages and
    /// dead letters — one transaction. Fewer than `limit` means none is left.
    fn task_prune(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Pruned>> + Send;

    /// The name and results of every ancestor of a step (its parents, their parents,
    /// and so on), by position, in one query: what a handler reads beyond its parents.
    /// Results a step has none of read as `null`.
    fn step_ancestors(
        &self,
        step_id: StepId,
    ) -> impl Future<Output = StoreResult<Vec<(Arc<str>, Box<RawValue>)>>> + Send;

    /// The audit trail of a task, oldest first.
    fn transition_list(
        &self,
        task_id: TaskId,
    ) -> impl Future<Output = StoreResult<Vec<TransitionRecord>>> + Send;

    /// The step queues that may hold messages (the internal task queue excluded), for
    /// a worker that serves every queue.
    fn queue_list(&self) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Reads up to `limit` visible messages, hiding them for `visibility` (rounded up to
    /// whole seconds on PostgreSQL, whose pgmq reads count in seconds).
    fn queue_read(
        &self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> impl Future<Output = StoreResult<QueueBatch>> + Send;

    /// The messages each queue holds, the internal task queue included.
    fn queue_depths(&self) -> impl Future<Output = StoreResult<Vec<QueueDepth>>> + Send;

    /// Answers if the database does (readiness).
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// Moves a message to the dead letters (for example, one that does not parse).
    fn queue_dead_letter(
        &self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The dead letters of `queue`, oldest first.
    fn queue_dead_letters(
        &self,
        queue: &str,
    ) -> impl Future<Output = StoreResult<Vec<DeadLetter>>> + Send;

    /// The queues that have dead letters, by name.
    fn queue_dead_letter_queues(&self) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Pauses a queue — its reads deliver nothing, the steps in flight finish — or
    /// resumes it, waking its readers in every process; true if that changed it.
    /// Kept in the database: it holds across processes and restarts.
    fn queue_pause(
        &self,
        queue: &str,
        paused: bool,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The paused queues, by name.
    fn queue_paused(&self) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Pauses the template `namespace/name`, every version — its tasks stay pending,
    /// those already started run on — or resumes it, starting the tasks it held; true
    /// if that changed it. Kept in the database, as a queue's pause is.
    fn template_pause(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The paused templates, as (namespace, name).
    fn template_paused(&self) -> impl Future<Output = StoreResult<Vec<(String, String)>>> + Send;

    /// The steps of pending tasks held back, by why: for metrics.
    fn tasks_held(&self) -> impl Future<Output = StoreResult<HeldSteps>> + Send;

    /// Creates a schedule (registering its template) and sends its first tick. A name
    /// in use is a [`StoreError::Conflict`]; an expression or time zone that does not
    /// parse, [`StoreError::Invalid`].
    fn schedule_create(
        &self,
        params: ScheduleCreate<'_>,
    ) -> impl Future<Output = StoreResult<ScheduleRecord>> + Send;

    /// Every schedule, by name.
    fn schedule_list(&self) -> impl Future<Output = StoreResult<Vec<ScheduleRecord>>> + Send;

    /// Pauses a schedule (its ticks fire nothing) or resumes it from its next tick after
    /// now; true if that changed it.
    fn schedule_pause(
        &self,
        name: &str,
        paused: bool,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Deletes a schedule; the tasks it created stay.
    fn schedule_delete(&self, name: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Wake-ups for this process's readers.
    fn wakeups(&self) -> &Wakeups;
}
