//! What each backend provides: small row and queue operations inside one transaction.
//! The rules that combine them — which transitions, when to evaluate readiness, what to
//! send — are written once, in [`crate::operations`], so both backends behave alike.
//!
//! Methods that read rows a transaction will change (`tasks_lock`, `steps_get` with
//! `lock`) lock them where the backend has row locks (PostgreSQL
//! `FOR UPDATE`); SQLite needs none, having one writer. Every change of state is a
//! compare-and-set that appends its transition in the same call (one statement on
//! PostgreSQL). Methods on slices do a whole batch's rows at once (one statement on
//! PostgreSQL; SQLite, whose statements cost microseconds, loops).
//!
//! The futures are not required to be `Send`: the embedded store's run to their end
//! in one poll on the calling thread, and the PostgreSQL store's are `Send` by their
//! own types.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{StepMessage, TraceParent};
use tasker_core::rate::{Bucket, RateLimit};
use tasker_core::readiness::Progress;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::{Pruned, QueueBatch, ScheduleRecord, StepExecution, StoreResult, Wakeups};
use tasker_core::template::{ForEach, TaskTemplate};
use tasker_core::time::Timestamp;

/// What readiness and enqueueing need of a step. Names are interned: they repeat in
/// every task of a template.
pub(crate) struct EvalStep {
    pub id: StepId,
    pub task_id: TaskId,
    pub position: u32,
    pub state: StepState,
    pub queue: Arc<str>,
    /// How many of its parents are not done.
    pub waiting_on: u32,
    /// How many of its parents are done with results (complete or resolved).
    pub live_parents: u32,
    /// The signal it waits for, for a step that runs no handler (`wait_for`).
    pub wait: Option<Arc<str>>,
    /// Where its items are, for a step that fans out (`for_each`).
    pub for_each: Option<Box<ForEach>>,
}

/// What every instance of a `for_each` step is given for the context and its parents'
/// results (`[[name, results], …]`): the step's own, without the array of items.
#[derive(Clone, Copy)]
pub(crate) struct InstanceView<'a> {
    pub context: &'a RawValue,
    pub parents: &'a RawValue,
}

/// A `for_each` step whose instances changed, as the change left it.
pub(crate) struct Expanded {
    pub id: StepId,
    pub task_id: TaskId,
    pub position: u32,
    pub state: StepState,
    /// Its instances not done; `None` before it was expanded.
    pub left: Option<u32>,
}

/// A step row, as the operations that change it need it.
pub(crate) struct StepRow {
    pub task_id: TaskId,
    pub position: u32,
    pub name: String,
    pub queue: String,
    pub state: StepState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// The children it chooses among, by name and position (its `decides`).
    pub decides: Vec<(Arc<str>, u32)>,
    /// The signal it waits for (`wait_for`).
    pub wait: Option<String>,
    /// For an instance of a `for_each` step, that step's position.
    pub instance_of: Option<u32>,
    /// A `for_each` step that has created its instances.
    pub expanded: bool,
    /// The rate its starts are limited by.
    pub rate_limit: Option<Box<RateLimit>>,
    /// The time of the token it booked, if it found none when it was last claimed.
    pub rate_booked: Option<Timestamp>,
}

impl StepRow {
    /// The names of the children it decides among.
    pub fn decides_names(&self) -> Vec<&str> {
        self.decides.iter().map(|(n, _)| &**n).collect()
    }
}

/// One state change for the audit trail.
pub(crate) struct Transition<'a> {
    pub task_id: TaskId,
    pub step_id: Option<StepId>,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub reason: &'a str,
}

/// A compare-and-set of a step's state from `from` to `to`, recorded with `reason`.
#[derive(Clone, Copy)]
pub(crate) struct Move<'a> {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub from: StepState,
    pub to: StepState,
    pub reason: &'a str,
}

/// A compare-and-set of a task's state from `from` to `to`, recorded with `reason`.
#[derive(Clone, Copy)]
pub(crate) struct TaskMove<'a> {
    pub task_id: TaskId,
    pub from: TaskState,
    pub to: TaskState,
    pub reason: &'a str,
}

/// A task to insert, as a submission resolved it.
#[derive(Clone, Copy)]
pub(crate) struct NewTask<'a> {
    pub id: TaskId,
    pub template: &'a TaskTemplate,
    pub context: &'a RawValue,
    pub idempotency_key: Option<&'a str>,
    /// Its template's concurrency key's value, for a template with `concurrency`.
    pub concurrency_key: Option<&'a str>,
    /// The submission's, else the template's.
    pub priority: i32,
    pub traceparent: Option<TraceParent>,
}

/// A task as [`TaskRows::tasks_lock`] returns it, locked.
#[derive(Clone, Copy)]
pub(crate) struct LockedTask {
    pub id: TaskId,
    pub state: TaskState,
    pub progress: Progress,
    /// Whether it has a concurrency key: ending it frees a slot of that key.
    pub keyed: bool,
    /// The priority its step messages carry.
    pub priority: i32,
    /// The trace context its step messages carry.
    pub traceparent: Option<TraceParent>,
}

/// The tasks of one template and one value of its concurrency key, of which at most
/// `limit` are in progress at once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyGroup {
    pub namespace: String,
    pub name: String,
    pub key: String,
    pub limit: u32,
}

impl KeyGroup {
    /// The group of a task's columns; `None` for a task without a concurrency key.
    pub fn of(
        namespace: String,
        name: String,
        key: Option<String>,
        limit: Option<i64>,
    ) -> Option<Self> {
        Some(KeyGroup {
            namespace,
            name,
            key: key?,
            limit: limit.unwrap_or(1).clamp(0, u32::MAX.into()) as u32,
        })
    }
}

/// Why a task of a start batch may have to stay pending.
pub(crate) struct Hold {
    pub task_id: TaskId,
    /// Its template is paused.
    pub paused: bool,
    /// Its concurrency key, if it has one.
    pub group: Option<KeyGroup>,
}

/// The outcome columns written with a step's new state.
pub(crate) struct Outcome<'a> {
    /// Replaces the results when set.
    pub results: Option<&'a RawValue>,
    /// The step's error (cleared when `None`).
    pub error: Option<&'a str>,
}

/// Which queues a transaction sent to, so their readers are woken after it commits.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sent {
    steps: bool,
    tasks: bool,
}

impl Sent {
    pub(crate) fn queue(&mut self, queue: &str) {
        if queue == tasker_core::message::TASK_QUEUE {
            self.tasks = true;
        } else {
            self.steps = true;
        }
    }

    /// Wakes this process's readers; call after the commit.
    pub(crate) fn wake(self, wakeups: &Wakeups) {
        if self.steps {
            wakeups.steps.notify_waiters();
        }
        if self.tasks {
            wakeups.tasks.notify_waiters();
        }
    }
}

/// Row and queue operations inside one open transaction, one trait per table, each
/// implemented in the backend's file of that table. Every method that changes a state
/// is a compare-and-set on it (`from`) that also appends the transition, and returns
/// the number of rows changed.
pub(crate) trait Primitives:
    TemplateRows
    + TaskRows
    + StepRows
    + SignalRows
    + ScheduleRows
    + RateRows
    + TransitionRows
    + QueueOps
{
}

impl<
    T: TemplateRows
        + TaskRows
        + StepRows
        + SignalRows
        + ScheduleRows
        + RateRows
        + TransitionRows
        + QueueOps,
> Primitives for T
{
}

/// The `templates` table.
pub(crate) trait TemplateRows {
    /// The definition registered as `namespace/name@version`.
    fn template_definition_of(
        &mut self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> impl Future<Output = StoreResult<Option<String>>>;

    /// Pauses the template `namespace/name` (every version) or resumes it; true if that
    /// changed it.
    fn template_set_paused(
        &mut self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> impl Future<Output = StoreResult<bool>>;

    /// The pending tasks of the template `namespace/name`, every version.
    fn tasks_pending_of(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<Vec<TaskId>>>;

    /// Inserts the definition unless that version exists (another transaction may have
    /// inserted it meanwhile); true if it did.
    fn template_insert(
        &mut self,
        template: &TaskTemplate,
        definition: &str,
    ) -> impl Future<Output = StoreResult<bool>>;
}

/// The `tasks` table, and the steps and edges a task is inserted with.
pub(crate) trait TaskRows {
    /// The state and counters of each task of `tasks` that exists, locked in id order:
    /// this serializes the transaction with every other that changes them.
    fn tasks_lock(
        &mut self,
        tasks: &[TaskId],
    ) -> impl Future<Output = StoreResult<Vec<LockedTask>>>;

    /// The tasks of `tasks` whose template is paused or that have a concurrency key
    /// (the others may start at once).
    fn tasks_held(&mut self, tasks: &[TaskId]) -> impl Future<Output = StoreResult<Vec<Hold>>>;

    /// The key groups of the tasks of `tasks` that have one, without repeats.
    fn tasks_groups(
        &mut self,
        tasks: &[TaskId],
    ) -> impl Future<Output = StoreResult<Vec<KeyGroup>>>;

    /// Serializes the transaction with every other that starts tasks of these groups
    /// (sorted, without repeats), until it ends.
    fn groups_lock(&mut self, groups: &[KeyGroup]) -> impl Future<Output = StoreResult<()>>;

    /// The oldest pending tasks of `group`, as many as it has free slots.
    fn tasks_in_line(&mut self, group: &KeyGroup)
    -> impl Future<Output = StoreResult<Vec<TaskId>>>;

    /// Writes each task's counters.
    fn tasks_set_progress(
        &mut self,
        tasks: &[(TaskId, Progress)],
    ) -> impl Future<Output = StoreResult<()>>;

    fn task_by_key(&mut self, key: &str) -> impl Future<Output = StoreResult<Option<TaskId>>>;

    /// Inserts a pending task with its steps, edges, counters and concurrency key.
    fn task_insert(&mut self, task: NewTask<'_>) -> impl Future<Output = StoreResult<()>>;

    /// Moves each task of `moves`, recording why.
    fn tasks_move(&mut self, moves: &[TaskMove<'_>]) -> impl Future<Output = StoreResult<u64>>;

    /// Deletes up to `limit` tasks finished before `before`, with their steps, edges,
    /// transitions and messages.
    fn tasks_prune(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Pruned>>;
}

/// The `steps` and `step_edges` tables.
pub(crate) trait StepRows {
    /// The name of a step of the task in error, the first by position.
    fn task_failed_step(
        &mut self,
        task_id: TaskId,
    ) -> impl Future<Output = StoreResult<Option<String>>>;

    /// The task's steps in position order, locked (after the task) in id order, the
    /// order claims change them in: for operator actions on a whole task, which then
    /// see no step change under them.
    fn steps_of_task(
        &mut self,
        task_id: TaskId,
    ) -> impl Future<Output = StoreResult<Vec<EvalStep>>>;

    /// The pending steps of `tasks` with no parent left to finish (their roots, at
    /// start), by task and position.
    fn steps_unblocked(
        &mut self,
        tasks: &[TaskId],
    ) -> impl Future<Output = StoreResult<Vec<EvalStep>>>;

    /// Each step of `done` (task, position, live) is done: each of its children waits
    /// on one parent less, and has one live parent more if it is `live` (complete or
    /// resolved, not skipped). Returns the children after the change, each once.
    fn steps_release_children(
        &mut self,
        done: &[(TaskId, u32, bool)],
    ) -> impl Future<Output = StoreResult<Vec<EvalStep>>>;

    /// The rows of `steps` that exist; `lock` locks them for this transaction, in id
    /// order. Lock steps only after their tasks: every transaction takes the two in
    /// that order.
    fn steps_get(
        &mut self,
        steps: &[StepId],
        lock: bool,
    ) -> impl Future<Output = StoreResult<Vec<(StepId, StepRow)>>>;

    /// Everything a handler is given, for each of `steps` that exists, in one query
    /// (the step, its task, its parents' results).
    fn steps_execution(
        &mut self,
        steps: &[StepId],
    ) -> impl Future<Output = StoreResult<Vec<StepExecution>>>;

    /// Changes the state only.
    fn step_move(&mut self, m: Move<'_>) -> impl Future<Output = StoreResult<u64>>;

    /// Starts, for each (move, attempts), attempt `attempts + 1` (also a compare-and-set
    /// on `attempts`), started now, in the order given. Returns the steps it started.
    fn steps_begin_attempt(
        &mut self,
        attempts: &[(Move<'_>, u32)],
    ) -> impl Future<Output = StoreResult<Vec<StepId>>>;

    /// Ends attempts (or resolves steps): results, error, completed now; returns the
    /// rows changed.
    fn steps_set_outcome(
        &mut self,
        outcomes: &[(Move<'_>, Outcome<'_>)],
    ) -> impl Future<Output = StoreResult<u64>>;

    /// Clears attempts, results, error and times (an operator's retry).
    fn step_reset(&mut self, m: Move<'_>) -> impl Future<Output = StoreResult<u64>>;

    /// Creates the instances of the `for_each` step `step`, one per item in order,
    /// enqueued (each with its transition), with its handler, queue, config, retry and
    /// timeout; sets the step's instances left to their number and what they are given
    /// (`view`), and adds them to the task's step count. Returns their ids in item order.
    fn steps_insert_instances(
        &mut self,
        step: &EvalStep,
        items: &[&RawValue],
        view: InstanceView<'_>,
        reason: &str,
    ) -> impl Future<Output = StoreResult<Vec<StepId>>>;

    /// For each (task, position of a `for_each` step, instances done), takes the
    /// instances done from the step's count, and returns the steps after the change.
    fn steps_instances_done(
        &mut self,
        done: &[(TaskId, u32, u32)],
    ) -> impl Future<Output = StoreResult<Vec<Expanded>>>;

    /// How many instances of the task's `for_each` step at `position` are in error.
    fn step_instances_failed(
        &mut self,
        task_id: TaskId,
        position: u32,
    ) -> impl Future<Output = StoreResult<u32>>;

    /// The results of the instances of the task's `for_each` step at `position`, as a
    /// JSON array in item order.
    fn step_instance_results(
        &mut self,
        task_id: TaskId,
        position: u32,
    ) -> impl Future<Output = StoreResult<Box<RawValue>>>;

    /// The steps of the task that wait for the signal `name` now.
    fn steps_waiting_for(
        &mut self,
        task_id: TaskId,
        name: &str,
    ) -> impl Future<Output = StoreResult<Vec<EvalStep>>>;

    /// Moves every step of `steps` (task, step) from pending to enqueued, each with
    /// its transition.
    fn steps_enqueue(
        &mut self,
        steps: &[(TaskId, StepId)],
        reason: &str,
    ) -> impl Future<Output = StoreResult<u64>>;
}

/// The `signals` table: the signals delivered to a task, one per name.
pub(crate) trait SignalRows {
    /// Keeps a signal (the task has none of that name).
    fn signal_insert(
        &mut self,
        task_id: TaskId,
        name: &str,
        payload: &RawValue,
    ) -> impl Future<Output = StoreResult<()>>;

    /// The payload of the task's signal `name`, if it was delivered.
    fn signal_get(
        &mut self,
        task_id: TaskId,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<Box<RawValue>>>>;
}

/// The `transitions` table: the audit trail.
pub(crate) trait TransitionRows {
    fn transition_append(&mut self, t: Transition<'_>) -> impl Future<Output = StoreResult<()>>;
}

/// The queues.
pub(crate) trait QueueOps {
    /// Makes sure `queue` exists (PostgreSQL creates a pgmq queue once; SQLite needs nothing).
    fn queue_ensure(&mut self, queue: &str) -> impl Future<Output = StoreResult<()>>;

    /// Sends a message visible after `delay`; readers are woken after the commit.
    fn queue_send<M: Serialize + Sync>(
        &mut self,
        queue: &str,
        message: &M,
        delay: Duration,
    ) -> impl Future<Output = StoreResult<()>>;

    /// Sends step messages visible at once, in one statement.
    fn queue_send_batch(
        &mut self,
        queue: &str,
        messages: &[StepMessage],
    ) -> impl Future<Output = StoreResult<()>>;

    /// Reads up to `limit` visible messages, hiding them for `visibility`.
    fn queue_read(
        &mut self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> impl Future<Output = StoreResult<QueueBatch>>;

    fn queue_delete(
        &mut self,
        queue: &str,
        msg_ids: &[i64],
    ) -> impl Future<Output = StoreResult<()>>;

    /// Hides each message (id, for how long) from now.
    fn queue_set_vt(
        &mut self,
        queue: &str,
        hidden: &[(i64, Duration)],
    ) -> impl Future<Output = StoreResult<()>>;

    /// Pauses a queue (its reads find nothing) or resumes it (and wakes its readers);
    /// true if that changed it.
    fn queue_set_paused(
        &mut self,
        queue: &str,
        paused: bool,
    ) -> impl Future<Output = StoreResult<bool>>;

    /// Moves a message to the dead letters with the reason.
    fn queue_dead_letter(
        &mut self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> impl Future<Output = StoreResult<()>>;
}

/// The `schedules` and `schedule_ticks` tables.
pub(crate) trait ScheduleRows {
    /// Inserts a schedule unless its name is taken; true if it did.
    fn schedule_insert(&mut self, s: &ScheduleRecord) -> impl Future<Output = StoreResult<bool>>;

    /// The schedule of that name, locked until the transaction ends.
    fn schedule_lock(
        &mut self,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<ScheduleRecord>>>;

    /// Writes whether it is paused and the tick it waits for.
    fn schedule_set(
        &mut self,
        name: &str,
        paused: bool,
        next_fire: Option<Timestamp>,
    ) -> impl Future<Output = StoreResult<()>>;

    /// Deletes a schedule and its ticks; true if it existed.
    fn schedule_delete(&mut self, name: &str) -> impl Future<Output = StoreResult<bool>>;

    /// Records that the tick at `fire_at` created `task_id` (nothing if it is recorded).
    fn tick_insert(
        &mut self,
        schedule: &str,
        fire_at: Timestamp,
        task_id: TaskId,
    ) -> impl Future<Output = StoreResult<()>>;
}

/// The `rate_limits` table: a token bucket per key.
pub(crate) trait RateRows {
    /// The bucket of `key` (an empty one, created now, for a key never used), locked
    /// until the transaction ends.
    fn bucket_lock(&mut self, key: &str) -> impl Future<Output = StoreResult<Bucket>>;

    fn bucket_set(&mut self, key: &str, bucket: Bucket) -> impl Future<Output = StoreResult<()>>;

    /// Records (or, with `None`, clears) the token each step booked.
    fn steps_book(
        &mut self,
        bookings: &[(StepId, Option<Timestamp>)],
    ) -> impl Future<Output = StoreResult<()>>;
}
