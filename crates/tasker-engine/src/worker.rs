//! Running one step: claim it from its message, call its handler under the step's
//! timeout, decide about retries, and record the outcome.

use std::sync::Arc;

use tasker_core::backoff::RetryDecision;
use tasker_core::event::EventKind;
use tasker_core::message::StepMessage;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::*;
use tasker_core::time::Timestamp;
use tracing::Instrument;

use crate::Shared;
use crate::catch_unwind::CatchUnwind;
use crate::handler::{HandlerError, HandlerResult, StepContext};

pub(crate) async fn run_step<S: Store>(
    shared: Arc<Shared<S>>,
    queue: Arc<str>,
    message: QueueMessage,
) {
    let store = &*shared.store;
    let decoded: StepMessage<'_> = match serde_json::from_str(&message.body) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("unparseable step message: {e}");
            tracing::error!(queue = %queue, msg_id = message.msg_id, %reason, "dead-lettering message");
            if let Err(e) = store
                .queue_dead_letter(&queue, message.msg_id, &reason)
                .await
            {
                tracing::error!(error = %e, "cannot dead-letter message");
            }
            return;
        }
    };
    let params = StepStartParams {
        queue: &queue,
        msg_id: message.msg_id,
        task_id: decoded.task_id,
        step_id: decoded.step_id,
        grace: shared.config.visibility_grace,
    };
    let exec = match store.step_start(params).await {
        Ok(StepStart::Run(exec)) => exec,
        Ok(StepStart::Skipped { state }) => {
            tracing::debug!(step_id = %decoded.step_id, %state, "nothing to run");
            return;
        }
        Ok(StepStart::DeadLettered { attempts }) => {
            tracing::error!(task_id = %decoded.task_id, step_id = %decoded.step_id, attempts, "step dead-lettered");
            shared.metrics.dead_lettered();
            shared.publish(
                EventKind::StepDeadLettered,
                decoded.task_id,
                Some((decoded.step_id, None, attempts)),
            );
            return;
        }
        Err(StoreError::NotFound(what)) => {
            let reason = format!("{what} of this message does not exist");
            if let Err(e) = store
                .queue_dead_letter(&queue, message.msg_id, &reason)
                .await
            {
                tracing::error!(error = %e, "cannot dead-letter message");
            }
            return;
        }
        Err(e) => {
            // The message comes back after its visibility timeout.
            tracing::error!(step_id = %decoded.step_id, error = %e, "cannot start step");
            return;
        }
    };
    if exec.attempt == 1 {
        // Sent when its last parent finished: the dispatch latency of the DAG.
        shared
            .metrics
            .dispatched(Timestamp::now().since(message.enqueued_at));
    }
    let span = tracing::info_span!(
        "step",
        task_id = %exec.task_id,
        step_id = %exec.step_id,
        namespace = %exec.namespace,
        step = %exec.step_name,
        attempt = exec.attempt,
    );
    execute(shared.clone(), queue, message.msg_id, *exec)
        .instrument(span)
        .await;
}

async fn execute<S: Store>(
    shared: Arc<Shared<S>>,
    queue: Arc<str>,
    msg_id: i64,
    exec: StepExecution,
) {
    let (namespace, handler) = (exec.namespace.clone(), exec.handler.clone());
    let step = StepContext::new(exec);
    let (task_id, step_id, attempt) = (step.task_id(), step.step_id(), step.attempt());
    shared.publish(
        EventKind::StepStarted,
        task_id,
        Some((step_id, Some(step.step_name_shared()), attempt)),
    );
    let started = Timestamp::now();
    let result = call_handler(&shared, &step).await;
    let elapsed = Timestamp::now().since(started);

    let error_text;
    let outcome = match &result {
        Ok(results) => StepOutcome::Succeeded { results },
        Err(e) => {
            match step
                .retry()
                .decide(attempt, e.retryable, e.retry_after, fastrand::f64())
            {
                RetryDecision::RetryAfter(delay) => {
                    error_text = e.message.clone();
                    StepOutcome::Retry {
                        error: &error_text,
                        delay,
                    }
                }
                RetryDecision::GiveUp(why) => {
                    error_text = format!("{} ({why})", e.message);
                    StepOutcome::Failed { error: &error_text }
                }
            }
        }
    };
    let params = StepFinishParams {
        queue: &queue,
        msg_id,
        task_id,
        step_id,
        attempt,
        outcome,
    };
    match shared.store.step_finish(params).await {
        Ok(StepFinished::Applied {
            step_state,
            task_state,
            enqueued,
        }) => {
            tracing::info!(state = %step_state, ?elapsed, enqueued, "step finished");
            shared
                .metrics
                .step_finished(&namespace, &handler, step_state, elapsed);
            if task_state.is_final() {
                shared.metrics.task_finished(task_state);
            }
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
            match task_state {
                TaskState::Complete => shared.publish(EventKind::TaskCompleted, task_id, None),
                TaskState::Error => shared.publish(EventKind::TaskFailed, task_id, None),
                _ => {}
            }
        }
        Ok(StepFinished::Stale { state }) => {
            tracing::warn!(%state, "step changed while it ran (cancelled or reclaimed); result discarded");
        }
        Err(e) => tracing::error!(error = %e, "cannot record step outcome; it will run again"),
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
