//! The shapes in which the edges show a task, its history and the dead letters: the
//! API's answers, `tasker … --json` and Ruby's hashes are these, serialized once here.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::id::{StepId, TaskId};
use crate::store::{
    DeadLetter, QueueDepth, ScheduleRecord, Signalled, TaskDetail, TransitionRecord,
};

/// A task with every step, in template order: `GET /v1/tasks/{id}`, `tasker status
/// --json` and Ruby's `TaskResult`.
#[derive(Serialize)]
pub struct TaskView<'a> {
    task_id: TaskId,
    namespace: &'a str,
    name: &'a str,
    version: &'a str,
    state: &'a str,
    context: &'a RawValue,
    idempotency_key: Option<&'a str>,
    /// The value of the template's concurrency key, for a template with `concurrency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<&'a str>,
    /// Written when it is not 0.
    #[serde(skip_serializing_if = "is_zero")]
    priority: i32,
    created_at: String,
    updated_at: String,
    steps: Vec<StepView<'a>>,
}

#[derive(Serialize)]
struct StepView<'a> {
    id: StepId,
    name: &'a str,
    handler: &'a str,
    /// The signal a step that runs no handler waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    waits_for: Option<&'a str>,
    queue: &'a str,
    depends_on: &'a [String],
    state: &'a str,
    attempts: u32,
    max_attempts: u32,
    results: Option<&'a RawValue>,
    error: Option<&'a str>,
    started_at: Option<String>,
    completed_at: Option<String>,
    /// From the start of the last attempt to the step's end.
    duration_ms: Option<u64>,
}

impl<'a> TaskView<'a> {
    pub fn new(detail: &'a TaskDetail) -> Self {
        let t = &detail.task;
        let steps = detail
            .steps
            .iter()
            .map(|s| StepView {
                id: s.id,
                name: &s.name,
                handler: &s.handler,
                waits_for: s.waits_for.as_deref(),
                queue: &s.queue,
                depends_on: &s.depends_on,
                state: s.state.as_str(),
                attempts: s.attempts,
                max_attempts: s.max_attempts,
                results: s.results.as_deref(),
                error: s.error.as_deref(),
                started_at: s.started_at.map(|t| t.to_string()),
                completed_at: s.completed_at.map(|t| t.to_string()),
                duration_ms: match (s.started_at, s.completed_at) {
                    (Some(a), Some(b)) => Some(b.since(a).as_millis() as u64),
                    _ => None,
                },
            })
            .collect();
        Self {
            task_id: t.id,
            namespace: &t.namespace,
            name: &t.name,
            version: &t.version,
            state: t.state.as_str(),
            context: &t.context,
            idempotency_key: t.idempotency_key.as_deref(),
            concurrency_key: t.concurrency_key.as_deref(),
            priority: t.priority,
            created_at: t.created_at.to_string(),
            updated_at: t.updated_at.to_string(),
            steps,
        }
    }

    /// The view as JSON text.
    pub fn json(detail: &TaskDetail) -> String {
        serde_json::to_string(&TaskView::new(detail)).expect("a task always serializes")
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A task's transitions, oldest first.
#[derive(Serialize)]
pub struct History {
    task_id: TaskId,
    transitions: Vec<TransitionView>,
}

#[derive(Serialize)]
struct TransitionView {
    /// None for a change of the task itself.
    step_id: Option<StepId>,
    from: Option<String>,
    to: String,
    reason: String,
    at: String,
}

impl History {
    pub fn new(task_id: TaskId, transitions: Vec<TransitionRecord>) -> Self {
        let transitions = transitions
            .into_iter()
            .map(|t| TransitionView {
                step_id: t.step_id,
                from: t.from_state,
                to: t.to_state,
                reason: t.reason,
                at: t.at.to_string(),
            })
            .collect();
        Self {
            task_id,
            transitions,
        }
    }
}

/// Messages moved to the dead letters, each with why.
#[derive(Serialize)]
pub struct DeadLetters {
    dead_letters: Vec<DeadLetterView>,
}

#[derive(Serialize)]
struct DeadLetterView {
    queue: String,
    msg_id: i64,
    /// How many times it was read.
    read_ct: i32,
    /// The message's JSON text.
    message: String,
    reason: String,
    archived_at: String,
}

impl DeadLetters {
    pub fn new(letters: Vec<DeadLetter>) -> Self {
        let dead_letters = letters
            .into_iter()
            .map(|d| DeadLetterView {
                queue: d.queue,
                msg_id: d.msg_id,
                read_ct: d.read_ct,
                message: d.body,
                reason: d.reason,
                archived_at: d.archived_at.to_string(),
            })
            .collect();
        Self { dead_letters }
    }
}

/// What delivering a signal did.
#[derive(Serialize)]
pub struct SignalView<'a> {
    task_id: TaskId,
    signal: &'a str,
    /// The steps that waited for it and completed; empty when it is kept for a step
    /// that has not reached its wait.
    completed: &'a [StepId],
    task_state: &'static str,
}

impl<'a> SignalView<'a> {
    pub fn new(task_id: TaskId, signal: &'a str, signalled: &'a Signalled) -> Self {
        Self {
            task_id,
            signal,
            completed: &signalled.completed,
            task_state: signalled.task_state.as_str(),
        }
    }
}

/// The step queues, each with the messages it holds (visible or not) and whether it
/// is paused: `GET /v1/queues` and `tasker queue list --json`.
#[derive(Serialize)]
pub struct QueueList {
    queues: Vec<QueueView>,
}

#[derive(Serialize)]
struct QueueView {
    queue: String,
    messages: u64,
    paused: bool,
}

impl QueueList {
    /// `depths` without the internal task queue, and the queues paused before they
    /// held anything; by name.
    pub fn new(depths: Vec<QueueDepth>, paused: &[String]) -> Self {
        let mut queues: Vec<QueueView> = depths
            .into_iter()
            .filter(|d| d.queue != crate::message::TASK_QUEUE)
            .map(|d| QueueView {
                paused: paused.contains(&d.queue),
                queue: d.queue,
                messages: d.messages,
            })
            .collect();
        for name in paused {
            if !queues.iter().any(|q| &q.queue == name) {
                queues.push(QueueView {
                    queue: name.clone(),
                    messages: 0,
                    paused: true,
                });
            }
        }
        queues.sort_by(|a, b| a.queue.cmp(&b.queue));
        Self { queues }
    }

    /// Each queue: its name, its messages, whether it is paused.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, bool)> {
        self.queues
            .iter()
            .map(|q| (q.queue.as_str(), q.messages, q.paused))
    }
}

/// A schedule: `GET /v1/schedules` (in `schedules`), `POST /v1/schedules` and `tasker
/// schedule list --json`.
#[derive(Serialize)]
pub struct ScheduleView<'a> {
    name: &'a str,
    namespace: &'a str,
    template: &'a str,
    version: &'a str,
    cron: &'a str,
    timezone: &'a str,
    context: &'a RawValue,
    catch_up: &'a str,
    paused: bool,
    next_fire: Option<String>,
    last_fire: Option<String>,
    created_at: String,
}

impl<'a> ScheduleView<'a> {
    pub fn new(s: &'a ScheduleRecord) -> Self {
        Self {
            name: &s.name,
            namespace: &s.namespace,
            template: &s.template,
            version: &s.version,
            cron: &s.cron,
            timezone: &s.timezone,
            context: &s.context,
            catch_up: s.catch_up.as_str(),
            paused: s.paused,
            next_fire: s.next_fire.map(|t| t.to_string()),
            last_fire: s.last_fire.map(|t| t.to_string()),
            created_at: s.created_at.to_string(),
        }
    }
}

/// Every schedule, by name.
#[derive(Serialize)]
pub struct ScheduleList<'a> {
    schedules: Vec<ScheduleView<'a>>,
}

impl<'a> ScheduleList<'a> {
    pub fn new(schedules: &'a [ScheduleRecord]) -> Self {
        Self {
            schedules: schedules.iter().map(ScheduleView::new).collect(),
        }
    }
}
