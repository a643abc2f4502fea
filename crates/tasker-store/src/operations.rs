//! The state-changing operations of the `Store` trait, written once over
//! [`Primitives`]: each runs inside one transaction that its backend opens and commits.

use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::duration::HumanDuration;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{StepMessage, TASK_QUEUE, TaskStart};
use tasker_core::readiness::{self, Outcome as Readiness, Progress};
use tasker_core::state::{StepEvent, StepState, TaskEvent, TaskState};
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;

use crate::primitives::{EvalStep, Move, Outcome, Primitives, StepRow, Transition};

pub(crate) async fn template_register<P: Primitives>(
    p: &mut P,
    template: &TaskTemplate,
) -> StoreResult<Registration> {
    let definition = template.canonical_json();
    let existing = match p.template_definition(template).await? {
        None if p.template_insert(template, &definition).await? => {
            ensure_queues(p, template).await?;
            return Ok(Registration::Registered);
        }
        // Registered by someone else since we looked: compare with theirs.
        None => p.template_definition(template).await?,
        found => found,
    };
    if existing.as_deref() == Some(definition.as_str()) {
        Ok(Registration::Unchanged)
    } else {
        Err(StoreError::Conflict(format!(
            "template {} is already registered with different content; versions are immutable, give the change a new version",
            template.key()
        )))
    }
}

async fn ensure_queues<P: Primitives>(p: &mut P, template: &TaskTemplate) -> StoreResult<()> {
    for (i, step) in template.steps.iter().enumerate() {
        if template.steps[..i].iter().all(|s| s.queue != step.queue) {
            p.queue_ensure(&step.queue).await?;
        }
    }
    Ok(())
}

pub(crate) async fn task_create<P: Primitives>(
    p: &mut P,
    params: TaskCreateParams<'_>,
) -> StoreResult<TaskCreated> {
    if let Some(key) = params.idempotency_key
        && let Some(task_id) = p.task_by_key(key).await?
    {
        return Ok(TaskCreated {
            task_id,
            created: false,
        });
    }
    ensure_queues(p, params.template).await?;
    let task_id = TaskId::new();
    p.task_insert(
        task_id,
        params.template,
        params.context,
        params.idempotency_key,
    )
    .await?;
    let created = Transition {
        task_id,
        step_id: None,
        from: None,
        to: TaskState::Pending.as_str(),
        reason: "created",
    };
    p.transition_append(created).await?;
    p.queue_send(TASK_QUEUE, &TaskStart { task_id }, Duration::ZERO)
        .await?;
    Ok(TaskCreated {
        task_id,
        created: true,
    })
}

/// The task a transaction changes, locked, with its counters: every step move of the
/// transaction shifts them ([`Task::moved`]), and [`settle`] writes them back.
struct Task {
    id: TaskId,
    state: TaskState,
    progress: Progress,
    stored: Progress,
}

impl Task {
    fn moved(&mut self, m: &Move<'_>) {
        self.progress.shift(m.from, m.to);
    }
}

async fn lock_task<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<Task> {
    let (state, progress) = p
        .task_lock(task_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    Ok(Task {
        id: task_id,
        state,
        progress,
        stored: progress,
    })
}

fn step_not_found(step_id: StepId) -> StoreError {
    StoreError::NotFound(format!("step {step_id}"))
}

pub(crate) async fn task_start<P: Primitives>(
    p: &mut P,
    params: TaskStartParams,
) -> StoreResult<TaskStarted> {
    let mut task = lock_task(p, params.task_id).await?;
    let mut started = TaskStarted {
        started: false,
        enqueued: 0,
        state: task.state,
    };
    if task.state == TaskState::Pending {
        move_task(p, &mut task, TaskEvent::Start, "started").await?;
        let roots = p.steps_unblocked(task.id).await?;
        let enqueued = settle(p, &mut task, roots).await?;
        started = TaskStarted {
            started: true,
            enqueued,
            state: task.state,
        };
    }
    p.queue_delete(TASK_QUEUE, params.msg_id).await?;
    Ok(started)
}

/// Reads task requests and starts their tasks, locking them in id order (the same
/// order in every batch, so two batches never deadlock).
pub(crate) async fn task_start_batch<P: Primitives>(
    p: &mut P,
    limit: u32,
    visibility: Duration,
) -> StoreResult<TasksStarted> {
    let batch = p.queue_read(TASK_QUEUE, visibility, limit).await?;
    let mut out = TasksStarted {
        next_visible: batch.next_visible,
        ..TasksStarted::default()
    };
    let mut requests = Vec::with_capacity(batch.messages.len());
    for m in &batch.messages {
        match serde_json::from_str::<TaskStart>(&m.body) {
            Ok(r) => requests.push((r.task_id, m.msg_id)),
            Err(e) => {
                let reason = format!("unparseable task request: {e}");
                p.queue_dead_letter(TASK_QUEUE, m.msg_id, &reason).await?;
                out.invalid += 1;
            }
        }
    }
    requests.sort_unstable();
    for (task_id, msg_id) in requests {
        match task_start(p, TaskStartParams { msg_id, task_id }).await {
            Ok(started) => out.tasks.push(StartedTask { task_id, started }),
            Err(StoreError::NotFound(what)) => {
                let reason = format!("{what} does not exist");
                p.queue_dead_letter(TASK_QUEUE, msg_id, &reason).await?;
                out.invalid += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(crate) async fn task_cancel<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    reason: &str,
) -> StoreResult<TaskState> {
    let mut task = lock_task(p, task_id).await?;
    task.state.apply(TaskEvent::Cancel)?;
    for step in p.steps_of_task(task_id).await? {
        if let Ok(to) = step.state.apply(StepEvent::Cancel) {
            let m = Move {
                task_id,
                step_id: step.id,
                from: step.state,
                to,
                reason,
            };
            check_moved(p.step_move(m).await?, &m)?;
            task.moved(&m);
        }
    }
    move_task(p, &mut task, TaskEvent::Cancel, reason).await?;
    settle(p, &mut task, Vec::new()).await?;
    Ok(task.state)
}

pub(crate) async fn task_retry<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<usize> {
    let mut task = lock_task(p, task_id).await?;
    if task.state != TaskState::Error {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is {}: only a task in error can be retried",
            task.state
        )));
    }
    move_task(p, &mut task, TaskEvent::Resume, "operator retry").await?;
    let mut enqueued = 0;
    for step in p.steps_of_task(task_id).await? {
        if step.state == StepState::Error {
            let m = Move {
                task_id,
                step_id: step.id,
                from: step.state,
                to: step.state.apply(StepEvent::Retry)?,
                reason: "operator retry",
            };
            check_moved(p.step_reset(m).await?, &m)?;
            task.moved(&m);
            let message = step_message(task_id, step.id, &step.handler, 1);
            p.queue_send(&step.queue, &message, Duration::ZERO).await?;
            enqueued += 1;
        }
    }
    settle(p, &mut task, Vec::new()).await?;
    Ok(enqueued)
}

pub(crate) async fn step_start<P: Primitives>(
    p: &mut P,
    params: StepStartParams<'_>,
) -> StoreResult<StepStart> {
    // No task lock: starting a step changes none of the task's counters.
    let step = p
        .step_get(params.step_id, false)
        .await?
        .ok_or_else(|| step_not_found(params.step_id))?;
    if step.state == StepState::InProgress && step.attempts >= step.max_attempts {
        return dead_letter(p, params, step.task_id).await;
    }
    let (mut from, attempts) = (step.state, step.attempts);
    let reason = match from {
        StepState::Enqueued => format!("attempt {}", attempts + 1),
        StepState::WaitingForRetry => {
            let m = Move {
                task_id: step.task_id,
                step_id: params.step_id,
                from,
                to: from.apply(StepEvent::RetryDue)?,
                reason: "retry delay elapsed",
            };
            check_moved(p.step_move(m).await?, &m)?;
            from = m.to;
            format!("attempt {}", attempts + 1)
        }
        StepState::InProgress => format!(
            "attempt {}: worker lost during attempt {attempts} (visibility timeout expired)",
            attempts + 1
        ),
        other => {
            p.queue_delete(params.queue, params.msg_id).await?;
            return Ok(StepStart::Skipped { state: other });
        }
    };
    let event = if from == StepState::InProgress {
        StepEvent::Reclaim
    } else {
        StepEvent::Start
    };
    let m = Move {
        task_id: step.task_id,
        step_id: params.step_id,
        from,
        to: from.apply(event)?,
        reason: &reason,
    };
    // The compare-and-set on the attempt count settles a race between two readers.
    check_moved(p.step_begin_attempt(m, attempts).await?, &m)?;
    p.queue_set_vt(params.queue, params.msg_id, step.timeout + params.grace)
        .await?;
    Ok(StepStart::Run(Box::new(
        p.step_execution(params.step_id).await?,
    )))
}

/// Reads messages of `queue` and claims their steps; a message that does not parse or
/// names no step goes to the dead letters.
pub(crate) async fn step_claim<P: Primitives>(
    p: &mut P,
    queue: &str,
    limit: u32,
    visibility: Duration,
    grace: Duration,
) -> StoreResult<Claimed> {
    let batch = p.queue_read(queue, visibility, limit).await?;
    let mut claims = Vec::with_capacity(batch.messages.len());
    for m in &batch.messages {
        let start = match serde_json::from_str::<StepMessage<'_>>(&m.body) {
            Err(e) => invalid(p, queue, m.msg_id, format!("unparseable step message: {e}")).await?,
            Ok(message) => {
                let params = StepStartParams {
                    queue,
                    msg_id: m.msg_id,
                    task_id: message.task_id,
                    step_id: message.step_id,
                    grace,
                };
                match step_start(p, params).await {
                    Ok(start) => start,
                    Err(StoreError::NotFound(what)) => {
                        let reason = format!("{what} of this message does not exist");
                        invalid(p, queue, m.msg_id, reason).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        claims.push(Claim {
            msg_id: m.msg_id,
            enqueued_at: m.enqueued_at,
            start,
        });
    }
    Ok(Claimed {
        claims,
        next_visible: batch.next_visible,
    })
}

async fn invalid<P: Primitives>(
    p: &mut P,
    queue: &str,
    msg_id: i64,
    reason: String,
) -> StoreResult<StepStart> {
    p.queue_dead_letter(queue, msg_id, &reason).await?;
    Ok(StepStart::Invalid { reason })
}

/// The message of a step whose every attempt lost its worker: to the dead letters,
/// the step to error, and the task settled — with the task locked first.
async fn dead_letter<P: Primitives>(
    p: &mut P,
    params: StepStartParams<'_>,
    task_id: TaskId,
) -> StoreResult<StepStart> {
    let mut task = lock_task(p, task_id).await?;
    let step = p
        .step_get(params.step_id, true)
        .await?
        .ok_or_else(|| step_not_found(params.step_id))?;
    if step.state != StepState::InProgress {
        return Ok(StepStart::Skipped { state: step.state });
    }
    let reason = format!(
        "worker lost during attempt {} of {} (visibility timeout expired); message moved to dead letters",
        step.attempts, step.max_attempts
    );
    p.queue_dead_letter(params.queue, params.msg_id, &reason)
        .await?;
    let m = Move {
        task_id,
        step_id: params.step_id,
        from: step.state,
        to: step.state.apply(StepEvent::DeadLetter)?,
        reason: &reason,
    };
    let outcome = Outcome {
        results: None,
        error: Some(&reason),
    };
    check_moved(p.step_set_outcome(m, outcome).await?, &m)?;
    task.moved(&m);
    settle(p, &mut task, Vec::new()).await?;
    Ok(StepStart::DeadLettered {
        task_id,
        step_id: params.step_id,
        attempts: step.attempts,
        task_state: task.state,
    })
}

pub(crate) async fn step_finish<P: Primitives>(
    p: &mut P,
    params: StepFinishParams<'_>,
) -> StoreResult<StepFinished> {
    let mut task = lock_task(p, params.task_id).await?;
    let step: StepRow = p
        .step_get(params.step_id, true)
        .await?
        .ok_or_else(|| step_not_found(params.step_id))?;
    if step.state != StepState::InProgress || step.attempts != params.attempt {
        return Ok(StepFinished::Stale { state: step.state });
    }
    let task_id = step.task_id;
    p.queue_delete(params.queue, params.msg_id).await?;
    let (event, outcome, reason) = match params.outcome {
        StepOutcome::Succeeded { results } => {
            let outcome = Outcome {
                results: Some(results),
                error: None,
            };
            (StepEvent::Succeed, outcome, "succeeded".to_owned())
        }
        StepOutcome::Retry { error, delay } => {
            let outcome = Outcome {
                results: None,
                error: Some(error),
            };
            (
                StepEvent::FailRetryable,
                outcome,
                format!("retry in {}: {error}", HumanDuration(delay)),
            )
        }
        StepOutcome::Failed { error } => {
            let outcome = Outcome {
                results: None,
                error: Some(error),
            };
            (StepEvent::FailPermanent, outcome, error.to_owned())
        }
    };
    let m = Move {
        task_id,
        step_id: params.step_id,
        from: step.state,
        to: step.state.apply(event)?,
        reason: &reason,
    };
    check_moved(p.step_set_outcome(m, outcome).await?, &m)?;
    task.moved(&m);
    if let StepOutcome::Retry { delay, .. } = params.outcome {
        let message = step_message(task_id, params.step_id, &step.handler, step.attempts + 1);
        p.queue_send(&step.queue, &message, delay).await?;
        return Ok(StepFinished::Applied {
            step_state: m.to,
            enqueued: 0,
            task_state: task.state,
        });
    }
    let ready = release(p, &m, step.position).await?;
    let enqueued = settle(p, &mut task, ready).await?;
    Ok(StepFinished::Applied {
        step_state: m.to,
        enqueued,
        task_state: task.state,
    })
}

/// Finishes each of `batch`, taking their tasks in id order (the same order in every
/// batch, so two batches never deadlock); results in the order of `batch`.
pub(crate) async fn step_finish_batch<P: Primitives>(
    p: &mut P,
    batch: &[StepFinishParams<'_>],
) -> StoreResult<Vec<StepFinished>> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_unstable_by_key(|&i| batch[i].task_id);
    let mut out = vec![
        StepFinished::Stale {
            state: StepState::Pending
        };
        batch.len()
    ];
    for i in order {
        out[i] = step_finish(p, batch[i]).await?;
    }
    Ok(out)
}

pub(crate) async fn step_resolve<P: Primitives>(
    p: &mut P,
    step_id: StepId,
    results: &RawValue,
) -> StoreResult<TaskState> {
    let task_id = p
        .step_get(step_id, false)
        .await?
        .ok_or_else(|| step_not_found(step_id))?
        .task_id;
    let mut task = lock_task(p, task_id).await?;
    let step = p
        .step_get(step_id, true)
        .await?
        .ok_or_else(|| step_not_found(step_id))?;
    let m = Move {
        task_id,
        step_id,
        from: step.state,
        to: step.state.apply(StepEvent::Resolve)?,
        reason: "resolved by an operator",
    };
    let outcome = Outcome {
        results: Some(results),
        error: None,
    };
    check_moved(p.step_set_outcome(m, outcome).await?, &m)?;
    task.moved(&m);
    if task.state == TaskState::Error {
        let reason = format!("step `{}` resolved by an operator", step.name);
        move_task(p, &mut task, TaskEvent::Resume, &reason).await?;
    }
    let ready = release(p, &m, step.position).await?;
    settle(p, &mut task, ready).await?;
    Ok(task.state)
}

/// The children a step's move released: if it became done, each child waits on one
/// parent less, and those waiting on none are ready. Costs the step's own edges.
async fn release<P: Primitives>(
    p: &mut P,
    m: &Move<'_>,
    position: u32,
) -> StoreResult<Vec<EvalStep>> {
    if m.from.is_done() || !m.to.is_done() {
        return Ok(Vec::new());
    }
    let mut children = p.step_release_children(m.task_id, position).await?;
    children.retain(|c| readiness::released(c.state, c.waiting_on));
    children.sort_unstable_by_key(|c| c.position);
    Ok(children)
}

/// Applies a change to the task: enqueues the `ready` steps and, if the task is
/// finished, completes or fails it — all only while it is in progress — and writes its
/// counters. Returns the number of steps enqueued.
async fn settle<P: Primitives>(
    p: &mut P,
    task: &mut Task,
    ready: Vec<EvalStep>,
) -> StoreResult<usize> {
    let mut enqueued = 0;
    if task.state == TaskState::InProgress {
        enqueued = ready.len();
        if !ready.is_empty() {
            enqueue(p, task, &ready).await?;
        }
        match task.progress.outcome() {
            Readiness::Complete => {
                move_task(p, task, TaskEvent::Complete, "all steps complete").await?;
            }
            Readiness::Failed => {
                let failed = p.task_failed_step(task.id).await?;
                let reason = format!(
                    "step `{}` failed and nothing else can progress",
                    failed.as_deref().unwrap_or("?")
                );
                move_task(p, task, TaskEvent::Fail, &reason).await?;
            }
            Readiness::Running => {}
        }
    }
    if task.progress != task.stored {
        p.task_set_progress(task.id, task.progress).await?;
        task.stored = task.progress;
    }
    Ok(enqueued)
}

/// Moves the `ready` steps to enqueued and sends their messages, one batch per queue.
async fn enqueue<P: Primitives>(p: &mut P, task: &mut Task, ready: &[EvalStep]) -> StoreResult<()> {
    let to = StepState::Pending.apply(StepEvent::Enqueue)?;
    let ids: Vec<StepId> = ready.iter().map(|s| s.id).collect();
    let moved = p.steps_enqueue(task.id, &ids, "dependencies done").await?;
    if moved != ids.len() as u64 {
        return Err(StoreError::Conflict(format!(
            "task {}: a ready step was no longer pending",
            task.id
        )));
    }
    for _ in ready {
        task.progress.shift(StepState::Pending, to);
    }
    // One batch per queue, in the order the steps were made ready.
    let mut batches: Vec<(&str, Vec<StepMessage<'_>>)> = Vec::new();
    for s in ready {
        let message = step_message(task.id, s.id, &s.handler, s.attempts + 1);
        match batches.iter_mut().find(|(queue, _)| *queue == &*s.queue) {
            Some((_, messages)) => messages.push(message),
            None => batches.push((&s.queue, vec![message])),
        }
    }
    for (queue, messages) in &batches {
        p.queue_send_batch(queue, messages).await?;
    }
    Ok(())
}

fn step_message(task_id: TaskId, step_id: StepId, handler: &str, attempt: u32) -> StepMessage<'_> {
    StepMessage {
        task_id,
        step_id,
        attempt,
        handler: handler.into(),
    }
}

/// Applies `event` to the task: compare-and-set plus transition.
async fn move_task<P: Primitives>(
    p: &mut P,
    task: &mut Task,
    event: TaskEvent,
    reason: &str,
) -> StoreResult<()> {
    let (from, to) = (task.state, task.state.apply(event)?);
    if p.task_move(task.id, from, to, reason).await? != 1 {
        return Err(StoreError::Conflict(format!(
            "task {} is no longer {from}",
            task.id
        )));
    }
    task.state = to;
    Ok(())
}

fn check_moved(rows: u64, m: &Move<'_>) -> StoreResult<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "step {} is no longer {}",
            m.step_id, m.from
        )))
    }
}
