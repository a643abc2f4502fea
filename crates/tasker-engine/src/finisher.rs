//! Group commit of step outcomes. Workers hand their outcomes to one loop per process,
//! which records every outcome waiting when it is free in one transaction
//! ([`Store::step_finish_batch`]): one durable commit for many steps under load, and no
//! added wait when idle (a lone outcome is committed at once).
//!
//! The same transaction refills the slots its outcomes free: it claims, from each
//! outcome's queue, as many messages as outcomes of that queue — the children the
//! outcomes just enqueued among them — and hands each claim back to the slot of one
//! outcome (a slot takes a bounded number in a row, then goes back to the consumer,
//! which reads every queue in turn). Under load a worker then makes one commit per round of steps, not two.
//! It claims nothing while the process stops or memory pressure holds work back.
//!
//! A batch is all or nothing. When its transaction fails, each of its outcomes is
//! recorded again alone (the pool gives a healthy connection), so none is lost; an
//! outcome that did commit after all is found stale rather than applied twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::by_queue;
use tasker_core::store::{
    Claim, ClaimParams, StepFinishParams, StepFinished, StepOutcome, Store, StoreError, StoreResult,
};
use tokio::sync::{mpsc, oneshot, watch};

/// The most outcomes one transaction records.
const MAX_BATCH: usize = 128;

/// The pauses before each new try of an outcome recorded alone while the database
/// fails (about 20 s in all): a dropped connection or a restarting server is waited out
/// here, rather than by the step's visibility timeout and a second run.
const RETRY_PAUSES: [Duration; 6] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

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
    /// Claim a next step for this outcome's slot.
    pub refill: bool,
    pub reply: oneshot::Sender<Recorded>,
}

/// What recording an outcome gave: its result, and the next step for its slot.
pub(crate) struct Recorded {
    pub result: StoreResult<StepFinished>,
    pub next: Option<Claim>,
}

/// How the recorder refills slots.
pub(crate) struct Refill {
    pub visibility: Duration,
    pub grace: Duration,
    /// True once the process stops taking work.
    pub shutdown: watch::Receiver<bool>,
    /// True while memory pressure holds new work back.
    pub paused: watch::Receiver<bool>,
}

impl Refill {
    fn allowed(&self) -> bool {
        !*self.shutdown.borrow() && !*self.paused.borrow()
    }
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
pub(crate) async fn run<S: Store>(
    store: Arc<S>,
    refill: Refill,
    mut outcomes: mpsc::UnboundedReceiver<Finish>,
) {
    let mut batch = Vec::new();
    while outcomes.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&*store, &refill, &mut batch).await;
    }
}

async fn commit<S: Store>(store: &S, refill: &Refill, batch: &mut Vec<Finish>) {
    // The outcomes that ask for a refill, by index into `batch`, grouped by queue.
    let queues = if refill.allowed() {
        let asking = batch.iter().enumerate().filter(|(_, f)| f.refill);
        by_queue(asking.map(|(i, f)| (&*f.queue, i)))
    } else {
        Vec::new()
    };
    let claims: Vec<ClaimParams<'_>> = queues
        .iter()
        .map(|(queue, outcomes)| ClaimParams {
            queue,
            limit: outcomes.len() as u32,
            visibility: refill.visibility,
            grace: refill.grace,
        })
        .collect();
    let params: Vec<StepFinishParams<'_>> = batch.iter().map(Finish::params).collect();
    let recorded = store.step_finish_batch(&params, &claims).await;
    drop(params);
    match recorded {
        Ok(recorded) => {
            let mut next: Vec<Option<Claim>> = batch.iter().map(|_| None).collect();
            for ((_, outcomes), claimed) in queues.iter().zip(recorded.claimed) {
                for (&i, claim) in outcomes.iter().zip(claimed.claims) {
                    next[i] = Some(claim);
                }
            }
            drop(queues);
            for ((finish, result), next) in batch.drain(..).zip(recorded.finished).zip(next) {
                let _ = finish.reply.send(Recorded {
                    result: Ok(result),
                    next,
                });
            }
        }
        Err(e) => {
            drop(queues);
            tracing::warn!(error = %e, outcomes = batch.len(), "recording outcomes failed; recording each alone");
            for finish in batch.drain(..) {
                let result = alone(store, &finish).await;
                let _ = finish.reply.send(Recorded { result, next: None });
            }
        }
    }
}

/// Records one outcome, trying again while the database itself fails.
async fn alone<S: Store>(store: &S, finish: &Finish) -> StoreResult<StepFinished> {
    let mut pauses = RETRY_PAUSES.iter();
    loop {
        match store.step_finish(finish.params()).await {
            Err(e @ (StoreError::Database(_) | StoreError::Unavailable(_))) => {
                match pauses.next() {
                    Some(pause) => {
                        tracing::warn!(error = %e, "recording an outcome failed; trying again");
                        tokio::time::sleep(*pause).await;
                    }
                    None => return Err(e),
                }
            }
            other => return other,
        }
    }
}
