//! Starting submitted tasks: an orchestrator takes task requests from the internal task
//! queue and starts their tasks (enqueues their first steps) in the same transaction,
//! many at a time.

use std::sync::Arc;
use std::time::Duration;

use tasker_core::event::EventKind;
use tasker_core::state::StepState;
use tasker_core::store::*;

use crate::Shared;
use crate::consumer::Taken;

/// How long a request stays hidden once read, should the transaction not commit.
const READ_VISIBILITY: Duration = Duration::from_secs(5);

pub(crate) async fn start_tasks<S: Store>(
    shared: &Shared<S>,
    limit: u32,
) -> StoreResult<Taken<StartedTask>> {
    let batch = shared
        .store
        .task_start_batch(limit, READ_VISIBILITY, shared.new_trace())
        .await?;
    if batch.invalid > 0 {
        tracing::error!(
            requests = batch.invalid,
            "task requests that do not parse or name no task moved to the dead letters"
        );
    }
    for tick in &batch.ticks {
        tracing::info!(schedule = %tick.schedule, fire_at = %tick.fire_at, task_id = %tick.task_id, "schedule fired");
        shared.metrics.tick_fired(tick.lag);
        shared.publish(EventKind::TaskCreated, tick.task_id, None);
    }
    if batch.ticks_skipped > 0 {
        tracing::info!(ticks = batch.ticks_skipped, "missed schedule ticks skipped");
        shared.metrics.ticks_skipped(batch.ticks_skipped);
    }
    for wait in &batch.expired {
        tracing::info!(task_id = %wait.task_id, step_id = %wait.step_id, "a wait for a signal timed out");
        shared.metrics.steps_ended(StepState::Error, 1);
        shared.publish(
            EventKind::StepFailed,
            wait.task_id,
            Some((wait.step_id, None, 1)),
        );
        crate::worker::task_settled(shared, wait.task_id, wait.task_state).await;
    }
    Ok(Taken {
        items: batch.tasks,
        next_visible: batch.next_visible,
    })
}

pub(crate) async fn started<S: Store>(shared: &Arc<Shared<S>>, task: StartedTask) {
    if task.started.started {
        tracing::info!(task_id = %task.task_id, enqueued = task.started.enqueued, "task started");
        shared.publish(EventKind::TaskStarted, task.task_id, None);
        // Its start can end it: an empty fan-out, a source that is not an array.
        if task.started.state.is_final() {
            crate::worker::task_settled(shared, task.task_id, task.started.state).await;
        }
    } else {
        tracing::debug!(task_id = %task.task_id, state = %task.started.state, "task was not pending");
    }
}
