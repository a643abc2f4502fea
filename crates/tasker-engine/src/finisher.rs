//! Group commit of step outcomes. Workers hand their outcomes to one loop per process,
//! which records every outcome waiting when it is free in one transaction
//! ([`Store::step_finish_batch`]): one durable commit for many steps under load, and no
//! added wait when idle (a lone outcome is committed at once).
//!
//! A batch is all or nothing. When its transaction fails, each of its outcomes is
//! recorded again alone (the pool gives a healthy connection), so none is lost; an
//! outcome that did commit after all is found stale rather than applied twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::store::{
    StepFinishParams, StepFinished, StepOutcome, Store, StoreError, StoreResult,
};
use tokio::sync::{mpsc, oneshot};

/// The most outcomes one transaction records.
const MAX_BATCH: usize = 128;

/// How often an outcome recorded alone is tried when the database fails, and the pauses.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

/// How an attempt ended, owned while it waits for its commit.
pub(crate) enum Ended {
    Succeeded(Box<RawValue>),
    Retry { error: String, delay: Duration },
    Failed { error: String },
}

/// One outcome to record, and where to answer.
pub(crate) struct Finish {
    pub queue: Arc<str>,
    pub msg_id: i64,
    pub task_id: TaskId,
    pub step_id: StepId,
    pub attempt: u32,
    pub ended: Ended,
    pub reply: oneshot::Sender<StoreResult<StepFinished>>,
}

impl Finish {
    fn params(&self) -> StepFinishParams<'_> {
        StepFinishParams {
            queue: &self.queue,
            msg_id: self.msg_id,
            task_id: self.task_id,
            step_id: self.step_id,
            attempt: self.attempt,
            outcome: match &self.ended {
                Ended::Succeeded(results) => StepOutcome::Succeeded { results },
                Ended::Retry { error, delay } => StepOutcome::Retry {
                    error,
                    delay: *delay,
                },
                Ended::Failed { error } => StepOutcome::Failed { error },
            },
        }
    }
}

/// Records outcomes until every sender is gone.
pub(crate) async fn run<S: Store>(store: Arc<S>, mut outcomes: mpsc::UnboundedReceiver<Finish>) {
    let mut batch = Vec::new();
    while outcomes.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&*store, &mut batch).await;
    }
}

async fn commit<S: Store>(store: &S, batch: &mut Vec<Finish>) {
    let results = {
        let params: Vec<StepFinishParams<'_>> = batch.iter().map(Finish::params).collect();
        store.step_finish_batch(&params).await
    };
    match results {
        Ok(results) => {
            for (finish, result) in batch.drain(..).zip(results) {
                let _ = finish.reply.send(Ok(result));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, outcomes = batch.len(), "recording outcomes failed; recording each alone");
            for finish in batch.drain(..) {
                let result = alone(store, &finish).await;
                let _ = finish.reply.send(result);
            }
        }
    }
}

/// Records one outcome, trying again while the database itself fails.
async fn alone<S: Store>(store: &S, finish: &Finish) -> StoreResult<StepFinished> {
    let mut pauses = RETRY_PAUSES.iter();
    loop {
        match store.step_finish(finish.params()).await {
            Err(StoreError::Database(e)) => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(error = %e, "recording an outcome failed; trying again");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(StoreError::Database(e)),
            },
            other => return other,
        }
    }
}
