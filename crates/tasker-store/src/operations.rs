//! The state-changing operations of the `Store` trait, written once over
//! [`Primitives`]: each runs inside one transaction that its backend opens and commits.

use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::duration::HumanDuration;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{StepMessage, TASK_QUEUE, TaskRequest};
use tasker_core::readiness::{self, Outcome as Readiness};
use tasker_core::state::{StepEvent, StepState, TaskEvent, TaskState};
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;

use crate::primitives::{EvalStep, Outcome, Primitives, Transition};

fn encode<T: serde::Serialize>(message: &T) -> StoreResult<String> {
    serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) async fn template_register<P: Primitives>(
    p: &mut P,
    template: &TaskTemplate,
) -> StoreResult<Registration> {
    let definition = template.canonical_json();
    match p.template_definition(template).await? {
        Some(d) if d == definition => Ok(Registration::Unchanged),
        Some(_) => Err(StoreError::Conflict(format!(
            "template {} is already registered with different content; versions are immutable, give the change a new version",
            template.key()
        ))),
        None => {
            p.template_insert(template, &definition).await?;
            ensure_queues(p, template).await?;
            Ok(Registration::Registered)
        }
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
    p.queue_send(
        TASK_QUEUE,
        &encode(&TaskRequest { task_id })?,
        Duration::ZERO,
    )
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
        if step.state.apply(StepEvent::Cancel).is_ok() {
            move_step(p, task_id, step.id, step.state, StepEvent::Cancel, reason).await?;
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
            let to = step.state.apply(StepEvent::Retry)?;
            check_moved(
                p.step_reset(step.id, step.state).await?,
                step.id,
                step.state,
            )?;
            record(p, task_id, step.id, step.state, to, "operator retry").await?;
            send_step(p, task_id, &step, 1, Duration::ZERO).await?;
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

pub(crate) async fn step_start<P: Primitives>(
    p: &mut P,
    params: StepStartParams<'_>,
) -> StoreResult<StepStart> {
    let not_found = || StoreError::NotFound(format!("step {}", params.step_id));
    let task_state = state_of(p, params.task_id).await?;
    let step = p
        .step_get(params.step_id, true)
        .await?
        .ok_or_else(not_found)?;
    let mut state = step.state;
    let reason = match state {
        StepState::Enqueued => format!("attempt {}", step.attempts + 1),
        StepState::WaitingForRetry => {
            state = move_step(
                p,
                step.task_id,
                params.step_id,
                state,
                StepEvent::RetryDue,
                "retry delay elapsed",
            )
            .await?;
            format!("attempt {}", step.attempts + 1)
        }
        StepState::InProgress if step.attempts >= step.max_attempts => {
            let reason = format!(
                "worker lost during attempt {} of {} (visibility timeout expired); message moved to dead letters",
                step.attempts, step.max_attempts
            );
            p.queue_dead_letter(params.queue, params.msg_id, &reason)
                .await?;
            set_outcome(
                p,
                step.task_id,
                params.step_id,
                state,
                StepEvent::DeadLetter,
                Outcome {
                    results: None,
                    error: Some(&reason),
                },
                &reason,
            )
            .await?;
            settle(p, step.task_id, task_state).await?;
            return Ok(StepStart::DeadLettered {
                attempts: step.attempts,
            });
        }
        StepState::InProgress => format!(
            "attempt {}: worker lost during attempt {} (visibility timeout expired)",
            step.attempts + 1,
            step.attempts
        ),
        other => {
            p.queue_delete(params.queue, params.msg_id).await?;
            return Ok(StepStart::Skipped { state: other });
        }
    };
    let event = if state == StepState::InProgress {
        StepEvent::Reclaim
    } else {
        StepEvent::Start
    };
    let to = state.apply(event)?;
    check_moved(
        p.step_begin_attempt(params.step_id, state, step.attempts)
            .await?,
        params.step_id,
        state,
    )?;
    record(p, step.task_id, params.step_id, state, to, &reason).await?;
    p.queue_set_vt(params.queue, params.msg_id, step.timeout + params.grace)
        .await?;
    Ok(StepStart::Run(Box::new(
        p.step_execution(params.step_id).await?,
    )))
}

pub(crate) async fn step_finish<P: Primitives>(
    p: &mut P,
    params: StepFinishParams<'_>,
) -> StoreResult<StepFinished> {
    let task_state = state_of(p, params.task_id).await?;
    let step = p
        .step_get(params.step_id, true)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("step {}", params.step_id)))?;
    if step.state != StepState::InProgress || step.attempts != params.attempt {
        return Ok(StepFinished::Stale { state: step.state });
    }
    let (task_id, from) = (step.task_id, step.state);
    p.queue_delete(params.queue, params.msg_id).await?;
    let step_state = match params.outcome {
        StepOutcome::Succeeded { results } => {
            let outcome = Outcome {
                results: Some(results),
                error: None,
            };
            set_outcome(
                p,
                task_id,
                params.step_id,
                from,
                StepEvent::Succeed,
                outcome,
                "succeeded",
            )
            .await?
        }
        StepOutcome::Retry { error, delay } => {
            let reason = format!("retry in {}: {error}", HumanDuration(delay));
            let outcome = Outcome {
                results: None,
                error: Some(error),
            };
            let to = set_outcome(
                p,
                task_id,
                params.step_id,
                from,
                StepEvent::FailRetryable,
                outcome,
                &reason,
            )
            .await?;
            let eval = EvalStep {
                id: params.step_id,
                name: step.name,
                state: to,
                handler: step.handler,
                queue: step.queue,
                attempts: step.attempts,
            };
            send_step(p, task_id, &eval, step.attempts + 1, delay).await?;
            to
        }
        StepOutcome::Failed { error } => {
            let outcome = Outcome {
                results: None,
                error: Some(error),
            };
            set_outcome(
                p,
                task_id,
                params.step_id,
                from,
                StepEvent::FailPermanent,
                outcome,
                error,
            )
            .await?
        }
    };
    let (enqueued, task_state) = if step_state == StepState::WaitingForRetry {
        (0, task_state)
    } else {
        settle(p, task_id, task_state).await?
    };
    Ok(StepFinished::Applied {
        step_state,
        enqueued,
        task_state,
    })
}

pub(crate) async fn step_resolve<P: Primitives>(
    p: &mut P,
    step_id: StepId,
    results: &RawValue,
) -> StoreResult<TaskState> {
    let not_found = || StoreError::NotFound(format!("step {step_id}"));
    let task_id = p
        .step_get(step_id, false)
        .await?
        .ok_or_else(not_found)?
        .task_id;
    let mut task_state = state_of(p, task_id).await?;
    let step = p.step_get(step_id, true).await?.ok_or_else(not_found)?;
    let outcome = Outcome {
        results: Some(results),
        error: None,
    };
    set_outcome(
        p,
        task_id,
        step_id,
        step.state,
        StepEvent::Resolve,
        outcome,
        "resolved by an operator",
    )
    .await?;
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
    let edges = p.step_edges(task_id).await?;
    let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
    let eval = readiness::evaluate(&states, &edges);
    for &i in &eval.ready {
        let step = &steps[i];
        move_step(
            p,
            task_id,
            step.id,
            step.state,
            StepEvent::Enqueue,
            "dependencies done",
        )
        .await?;
        send_step(p, task_id, step, step.attempts + 1, Duration::ZERO).await?;
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
                .map_or("a step", |s| s.name.as_str());
            let reason = format!("step `{failed}` failed and nothing else can progress");
            move_task(p, task_id, task_state, TaskEvent::Fail, &reason).await?
        }
        Readiness::Running => task_state,
    };
    Ok((eval.ready.len(), state))
}

async fn send_step<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    step: &EvalStep,
    attempt: u32,
    delay: Duration,
) -> StoreResult<()> {
    let message = StepMessage {
        task_id,
        step_id: step.id,
        attempt,
        handler: step.handler.as_str().into(),
    };
    p.queue_send(&step.queue, &encode(&message)?, delay).await
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
    if p.task_set_state(task_id, from, to).await? != 1 {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is no longer {from}"
        )));
    }
    let t = Transition {
        task_id,
        step_id: None,
        from: Some(from.as_str()),
        to: to.as_str(),
        reason,
    };
    p.transition_append(t).await?;
    Ok(to)
}

/// Applies `event` to a step with no other change: compare-and-set plus transition.
async fn move_step<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    step_id: StepId,
    from: StepState,
    event: StepEvent,
    reason: &str,
) -> StoreResult<StepState> {
    let to = from.apply(event)?;
    check_moved(p.step_set_state(step_id, from, to).await?, step_id, from)?;
    record(p, task_id, step_id, from, to, reason).await?;
    Ok(to)
}

/// Applies `event` with its outcome columns: compare-and-set plus transition.
async fn set_outcome<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    step_id: StepId,
    from: StepState,
    event: StepEvent,
    outcome: Outcome<'_>,
    reason: &str,
) -> StoreResult<StepState> {
    let to = from.apply(event)?;
    check_moved(
        p.step_set_outcome(step_id, from, to, outcome).await?,
        step_id,
        from,
    )?;
    record(p, task_id, step_id, from, to, reason).await?;
    Ok(to)
}

fn check_moved(rows: u64, step_id: StepId, from: StepState) -> StoreResult<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "step {step_id} is no longer {from}"
        )))
    }
}

async fn record<P: Primitives>(
    p: &mut P,
    task_id: TaskId,
    step_id: StepId,
    from: StepState,
    to: StepState,
    reason: &str,
) -> StoreResult<()> {
    let t = Transition {
        task_id,
        step_id: Some(step_id),
        from: Some(from.as_str()),
        to: to.as_str(),
        reason,
    };
    p.transition_append(t).await
}
