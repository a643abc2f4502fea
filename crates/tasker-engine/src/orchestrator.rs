//! Starting submitted tasks: an orchestrator takes a task request from the internal
//! task queue and enqueues the task's first steps.

use std::sync::Arc;

use tasker_core::event::EventKind;
use tasker_core::message::{TASK_QUEUE, TaskStart};
use tasker_core::store::*;

use crate::Shared;

pub(crate) async fn start_task<S: Store>(shared: Arc<Shared<S>>, message: QueueMessage) {
    let store = &*shared.store;
    let request: TaskStart = match serde_json::from_str(&message.body) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("unparseable task request: {e}");
            tracing::error!(msg_id = message.msg_id, %reason, "dead-lettering message");
            if let Err(e) = store
                .queue_dead_letter(TASK_QUEUE, message.msg_id, &reason)
                .await
            {
                tracing::error!(error = %e, "cannot dead-letter message");
            }
            return;
        }
    };
    let params = TaskStartParams {
        msg_id: message.msg_id,
        task_id: request.task_id,
    };
    match store.task_start(params).await {
        Ok(started) if started.started => {
            tracing::info!(task_id = %request.task_id, enqueued = started.enqueued, "task started");
            shared.publish(EventKind::TaskStarted, request.task_id, None);
        }
        Ok(started) => {
            tracing::debug!(task_id = %request.task_id, state = %started.state, "task was not pending")
        }
        Err(StoreError::NotFound(what)) => {
            let reason = format!("{what} does not exist");
            if let Err(e) = store
                .queue_dead_letter(TASK_QUEUE, message.msg_id, &reason)
                .await
            {
                tracing::error!(error = %e, "cannot dead-letter message");
            }
        }
        Err(e) => {
            tracing::error!(task_id = %request.task_id, error = %e, "cannot start task; will retry")
        }
    }
}
