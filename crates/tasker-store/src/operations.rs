//! The state-changing operations of the `Store` trait, written once over
//! [`Primitives`]: each runs inside one transaction that its backend opens and commits.

use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::duration::HumanDuration;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{StepMessage, TASK_QUEUE, TaskStart};
use tasker_core::readiness::{self, Outcome as Readiness};
use tasker_core::state::{StepEvent, StepState, TaskEvent, TaskState};
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;

use crate::primitives::{Move, Outcome, Primitives, StepRow, Transition};

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

async fn state_of<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<TaskState> {
    p.task_state(task_id, true)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))
}

fn step_not_found(step_id: StepId) -> StoreError {
    StoreError::NotFound(format!("step {step_id}"))
}

pub(crate) async fn task_start<P: Primitives>(
    p: &mut P,
    params: TaskStartParams,
) -> StoreResult<TaskStarted> {
    let state = state_of(p, params.task_id).await?;
    let mut started = TaskStarted {
        started: false,
        enqueued: 0,
        state,
    };
    if state == TaskState::Pending {
        let state = move_task(p, params.task_id, state, TaskEvent::Start, "started").await?;
        let (enqueued, state) = settle(p, params.task_id, state).await?;
        started = TaskStarted {
            started: true,
            enqueued,
            state,
        };
    }
    p.queue_delete(TASK_QUEUE, params.msg_id).await?;
    Ok(started)
}

pub(crate) async fn task_cancel<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    reason: &str,
) -> StoreResult<TaskState> {
    let state = state_of(p, task_id).await?;
    state.apply(TaskEvent::Cancel)?;
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
        }
    }
    move_task(p, task_id, state, TaskEvent::Cancel, reason).await
}

pub(crate) async fn task_retry<P: Primitives>(p: &mut P, task_id: TaskId) -> StoreResult<usize> {
    let state = state_of(p, task_id).await?;
    if state != TaskState::Error {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is {state}: only a task in error can be retried"
        )));
    }
    move_task(p, task_id, state, TaskEvent::Resume, "operator retry").await?;
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
            let message = step_message(task_id, step.id, &step.handler, 1);
            p.queue_send(&step.queue, &message, Duration::ZERO).await?;
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

pub(crate) async fn step_start<P: Primitives>(
    p: &mut P,
    params: StepStartParams<'_>,
) -> StoreResult<StepStart> {
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

/// The message of a step whose every attempt lost its worker: to the dead letters,
/// the step to error, and the task settled — with the task locked first.
async fn dead_letter<P: Primitives>(
    p: &mut P,
    params: StepStartParams<'_>,
    task_id: TaskId,
) -> StoreResult<StepStart> {
    let task_state = state_of(p, task_id).await?;
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
    settle(p, task_id, task_state).await?;
    Ok(StepStart::DeadLettered {
        attempts: step.attempts,
    })
}

pub(crate) async fn step_finish<P: Primitives>(
    p: &mut P,
    params: StepFinishParams<'_>,
) -> StoreResult<StepFinished> {
    let task_state = state_of(p, params.task_id).await?;
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
    if let StepOutcome::Retry { delay, .. } = params.outcome {
        let message = step_message(task_id, params.step_id, &step.handler, step.attempts + 1);
        p.queue_send(&step.queue, &message, delay).await?;
        return Ok(StepFinished::Applied {
            step_state: m.to,
            enqueued: 0,
            task_state,
        });
    }
    let (enqueued, task_state) = settle(p, task_id, task_state).await?;
    Ok(StepFinished::Applied {
        step_state: m.to,
        enqueued,
        task_state,
    })
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
    let mut task_state = state_of(p, task_id).await?;
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
    if task_state == TaskState::Error {
        let reason = format!("step `{}` resolved by an operator", step.name);
        task_state = move_task(p, task_id, task_state, TaskEvent::Resume, &reason).await?;
    }
    Ok(settle(p, task_id, task_state).await?.1)
}

/// Evaluates the task's readiness and applies it: enqueues the steps that became
/// ready and, if the task is finished, completes or fails it. Does nothing unless the
/// task is in progress. Returns the number of steps enqueued and the task's state.
async fn settle<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    task_state: TaskState,
) -> StoreResult<(usize, TaskState)> {
    if task_state != TaskState::InProgress {
        return Ok((0, task_state));
    }
    let steps = p.steps_of_task(task_id).await?;
    let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
    let edges: Vec<(usize, usize)> = steps
        .iter()
        .enumerate()
        .flat_map(|(child, s)| s.parents.iter().map(move |&parent| (parent, child)))
        .collect();
    let eval = readiness::evaluate(&states, &edges);
    if !eval.ready.is_empty() {
        StepState::Pending.apply(StepEvent::Enqueue)?;
        let ids: Vec<StepId> = eval.ready.iter().map(|&i| steps[i].id).collect();
        let moved = p.steps_enqueue(task_id, &ids, "dependencies done").await?;
        if moved != ids.len() as u64 {
            return Err(StoreError::Conflict(format!(
                "task {task_id}: a ready step was no longer pending"
            )));
        }
        // One batch per queue, in the order the steps were made ready.
        let mut batches: Vec<(&str, Vec<StepMessage<'_>>)> = Vec::new();
        for &i in &eval.ready {
            let s = &steps[i];
            let message = step_message(task_id, s.id, &s.handler, s.attempts + 1);
            match batches.iter_mut().find(|(queue, _)| *queue == &*s.queue) {
                Some((_, messages)) => messages.push(message),
                None => batches.push((&s.queue, vec![message])),
            }
        }
        for (queue, messages) in &batches {
            p.queue_send_batch(queue, messages).await?;
        }
    }
    let state = match eval.outcome {
        Readiness::Complete => {
            move_task(
                p,
                task_id,
                task_state,
                TaskEvent::Complete,
                "all steps complete",
            )
            .await?
        }
        Readiness::Failed => {
            let failed = steps
                .iter()
                .find(|s| s.state == StepState::Error)
                .map_or("a step", |s| &*s.name);
            let reason = format!("step `{failed}` failed and nothing else can progress");
            move_task(p, task_id, task_state, TaskEvent::Fail, &reason).await?
        }
        Readiness::Running => task_state,
    };
    Ok((eval.ready.len(), state))
}

fn step_message(task_id: TaskId, step_id: StepId, handler: &str, attempt: u32) -> StepMessage<'_> {
    StepMessage {
        task_id,
        step_id,
        attempt,
        handler: handler.into(),
    }
}

/// Applies `event` to a task in state `from`: compare-and-set plus transition.
async fn move_task<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    from: TaskState,
    event: TaskEvent,
    reason: &str,
) -> StoreResult<TaskState> {
    let to = from.apply(event)?;
    if p.task_move(task_id, from, to, reason).await? != 1 {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is no longer {from}"
        )));
    }
    Ok(to)
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
