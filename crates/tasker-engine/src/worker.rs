//! Running steps: claim them from their messages (many in one transaction), call each
//! handler under the step's timeout, decide about retries, and hand the outcome to the
//! process's recorder (a group commit, see `finisher`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::backoff::RetryDecision;
use tasker_core::event::EventKind;
use tasker_core::id::TaskId;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::*;
use tasker_core::time::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::Shared;
use crate::catch_unwind::CatchUnwind;
use crate::consumer::Taken;
use crate::finisher::{Ended, Finish, Recorded};
use crate::handler::{HandlerError, HandlerResult, StepContext};

/// How long a message stays hidden once read, should its claim not commit (a claim
/// hides it for the step's timeout plus the grace).
pub(crate) const READ_VISIBILITY: Duration = Duration::from_secs(10);

/// Takes up to `limit` messages of `queue` and claims their steps, in one transaction.
pub(crate) async fn claim<S: Store>(
    shared: &Shared<S>,
    queue: &str,
    limit: u32,
) -> StoreResult<Taken<Claim>> {
    let claimed = shared
        .store
        .step_claim(ClaimParams {
            queue,
            limit,
            visibility: READ_VISIBILITY,
            grace: shared.config.visibility_grace,
        })
        .await?;
    Ok(Taken {
        items: claimed.claims,
        next_visible: claimed.next_visible,
    })
}

/// How many steps in a row a slot takes from its recorder's refills before it goes
/// back to the consumer, which reads the queues in turn: a busy queue cannot keep a
/// worker's slots from its other queues.
const STEPS_PER_TURN: u32 = 16;

/// Runs the claimed step, then each step the recording of its outcome claimed for
/// the same slot, up to [`STEPS_PER_TURN`].
pub(crate) async fn run_steps<S: Store>(
    shared: Arc<Shared<S>>,
    outcomes: mpsc::UnboundedSender<Finish>,
    queue: Arc<str>,
    claim: Claim,
) {
    let mut next = Some(claim);
    let mut ran = 0;
    while let Some(claim) = next {
        ran += 1;
        next = run_step(&shared, &outcomes, &queue, claim, ran < STEPS_PER_TURN).await;
    }
}

/// Runs one claimed step; returns the next claim for its slot, if `refill` asked the
/// recorder for one and it found one.
async fn run_step<S: Store>(
    shared: &Arc<Shared<S>>,
    outcomes: &mpsc::UnboundedSender<Finish>,
    queue: &Arc<str>,
    claim: Claim,
    refill: bool,
) -> Option<Claim> {
    let exec = match claim.start {
        StepStart::Run(exec) => exec,
        StepStart::Skipped { state } => {
            tracing::debug!(msg_id = claim.msg_id, %state, "nothing to run");
            return None;
        }
        StepStart::DeadLettered {
            task_id,
            step_id,
            attempts,
            task_state,
        } => {
            tracing::error!(%task_id, %step_id, attempts, "step dead-lettered");
            shared.metrics.dead_lettered();
            shared.publish(
                EventKind::StepDeadLettered,
                task_id,
                Some((step_id, None, attempts)),
            );
            task_settled(shared, task_id, task_state).await;
            return None;
        }
        StepStart::Invalid { reason } => {
            tracing::error!(queue = %queue, msg_id = claim.msg_id, %reason, "message moved to the dead letters");
            return None;
        }
        StepStart::RateLimited { key, until } => {
            tracing::debug!(msg_id = claim.msg_id, %key, %until, "rate limited: back when a token is free");
            shared.metrics.rate_limited();
            return None;
        }
    };
    if exec.attempt == 1 {
        // Sent when its last parent finished: the dispatch latency of the DAG.
        shared
            .metrics
            .dispatched(Timestamp::now().since(claim.enqueued_at));
    }
    // The attempt's span: the fields of its log lines and, with traces on, the span
    // exported as a child of its task's (its outcome recorded when it is known).
    let span = tracing::info_span!(
        "step",
        task_id = %exec.task_id,
        step_id = %exec.step_id,
        namespace = %exec.namespace,
        step = %exec.step_name,
        handler = %exec.handler,
        attempt = exec.attempt,
        outcome = tracing::field::Empty,
    );
    let mut exec = *exec;
    if let Some(traces) = &shared.config.traces {
        // From here on the execution holds the attempt's own context, not its task's:
        // the handler puts its spans under it, or passes it on to what it calls.
        exec.traceparent = traces.join(&span, exec.traceparent);
    }
    execute(shared, outcomes, queue, claim.msg_id, exec, refill)
        .instrument(span)
        .await
}

async fn execute<S: Store>(
    shared: &Arc<Shared<S>>,
    outcomes: &mpsc::UnboundedSender<Finish>,
    queue: &Arc<str>,
    msg_id: i64,
    exec: StepExecution,
    refill: bool,
) -> Option<Claim> {
    let (namespace, handler) = (exec.namespace.clone(), exec.handler.clone());
    let step = StepContext::with_loader(exec, Some(shared.ancestors.clone()));
    let (task_id, step_id, attempt) = (step.task_id(), step.step_id(), step.attempt());
    shared.publish(
        EventKind::StepStarted,
        task_id,
        Some((step_id, Some(step.step_name_shared()), attempt)),
    );
    let started = Timestamp::now();
    let result = call_handler(shared, &step).await;
    let elapsed = Timestamp::now().since(started);

    let result = result.and_then(|results| check_decision(&step, results));
    let ended = match result {
        Ok(results) => Ended::Succeeded(results),
        Err(e) => match step
            .retry()
            .decide(attempt, e.retryable, e.retry_after, fastrand::f64())
        {
            RetryDecision::RetryAfter(delay) => Ended::Retry {
                error: e.message,
                delay,
            },
            RetryDecision::GiveUp(why) => Ended::Failed {
                error: format!("{} ({why})", e.message),
            },
        },
    };
    let (reply, recorded) = oneshot::channel();
    let finish = Finish {
        queue: queue.clone(),
        msg_id,
        task_id,
        step_id,
        attempt,
        ended,
        refill,
        reply,
    };
    let stopped = || Recorded {
        result: Err(StoreError::Busy("the outcome recorder stopped".into())),
        next: None,
    };
    let recorded = match outcomes.send(finish) {
        Ok(()) => recorded.await.unwrap_or_else(|_| stopped()),
        Err(_) => stopped(),
    };
    match recorded.result {
        Ok(StepFinished::Applied {
            step_state,
            task_state,
            enqueued,
            skipped,
        }) => {
            record_outcome(shared, step_state.as_str());
            tracing::info!(state = %step_state, ?elapsed, enqueued, skipped, "step finished");
            shared
                .metrics
                .step_finished(&namespace, &handler, step_state, elapsed);
            shared.metrics.steps_ended(StepState::Skipped, skipped);
            let kind = match step_state {
                StepState::Complete => EventKind::StepCompleted,
                StepState::WaitingForRetry => EventKind::StepRetrying,
                _ => EventKind::StepFailed,
            };
            shared.publish(
                kind,
                task_id,
                Some((step_id, Some(step.step_name_shared()), attempt)),
            );
            task_settled(shared, task_id, task_state).await;
        }
        Ok(StepFinished::Stale { state }) => {
            record_outcome(shared, "stale");
            tracing::warn!(%state, "step changed while it ran (cancelled or reclaimed); result discarded");
        }
        Err(e) => {
            record_outcome(shared, "unrecorded");
            tracing::error!(error = %e, "cannot record step outcome; it will run again");
        }
    }
    recorded.next
}

/// A deciding step's result must choose among its `decides` (its `next`): anything else
/// fails the step for good, saying what is wrong.
fn check_decision(step: &StepContext, results: Box<RawValue>) -> HandlerResult {
    if step.decides().is_empty() {
        return Ok(results);
    }
    match tasker_core::readiness::decision(step.step_name(), &results, step.decides()) {
        Ok(_) => Ok(results),
        Err(why) => Err(HandlerError::permanent(why)),
    }
}

/// Writes the attempt's outcome on its exported span; only with traces on, as the logs
/// have it from the event that ends the attempt (and a log layer would reformat every
/// field of the span for it).
fn record_outcome<S>(shared: &Shared<S>, outcome: &str) {
    if shared.config.traces.is_some() {
        tracing::Span::current().record("outcome", outcome);
    }
}

/// Counts, announces and traces a task that a step's outcome finished.
pub(crate) async fn task_settled<S: Store>(shared: &Shared<S>, task_id: TaskId, state: TaskState) {
    if state.is_final() {
        shared.metrics.task_finished(state);
        shared.trace_task(task_id, state).await;
    }
    match state {
        TaskState::Complete => shared.publish(EventKind::TaskCompleted, task_id, None),
        TaskState::Error => shared.publish(EventKind::TaskFailed, task_id, None),
        _ => {}
    }
}

async fn call_handler<S>(shared: &Shared<S>, step: &StepContext) -> HandlerResult {
    let Some(handler) = shared.handlers.get(step.handler()) else {
        return Err(HandlerError::permanent(format!(
            "no handler named `{}` is registered in this worker (it has: {})",
            step.handler(),
            shared.handlers.names().join(", ")
        )));
    };
    let timeout = step.timeout();
    match tokio::time::timeout(timeout, CatchUnwind(handler.call(step))).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(HandlerError::retryable(format!(
            "handler panicked: {panic}"
        ))),
        Err(_) => Err(HandlerError::retryable(format!(
            "timed out after {}",
            tasker_core::duration::HumanDuration(timeout)
        ))),
    }
}
