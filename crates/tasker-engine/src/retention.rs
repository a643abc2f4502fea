//! Removing finished work: tasks complete, in error or cancelled for longer than the
//! retention, with everything that is theirs, in bounded batches (one transaction
//! each, so live work is never held up for long). `tasker prune` runs it once; an
//! orchestrator with a retention setting runs it periodically.

use std::time::Duration;

use tasker_core::store::{Pruned, Store, StoreResult};
use tasker_core::time::Timestamp;

/// Tasks deleted per transaction.
pub const BATCH: u32 = 500;

/// How often an orchestrator prunes, at most; a retention shorter than ten times this
/// is checked every tenth of it.
const EVERY: Duration = Duration::from_secs(600);

/// Deletes every task finished more than `older_than` ago, `batch` at a time, calling
/// `on_batch` after each batch with the running total. Returns the total.
pub async fn prune<S: Store>(
    store: &S,
    older_than: Duration,
    batch: u32,
    mut on_batch: impl FnMut(Pruned),
) -> StoreResult<Pruned> {
    let before = Timestamp::now().before(older_than);
    let mut total = Pruned::default();
    loop {
        let pruned = store.task_prune(before, batch.max(1)).await?;
        total.tasks += pruned.tasks;
        total.steps += pruned.steps;
        if pruned.tasks == 0 {
            return Ok(total);
        }
        on_batch(total);
        if pruned.tasks < u64::from(batch.max(1)) {
            return Ok(total);
        }
    }
}

/// An orchestrator's pruning loop, until `shutdown`.
pub(crate) async fn keep<S: Store>(
    store: &S,
    retention: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = EVERY.min(retention / 10).max(Duration::from_secs(1));
    loop {
        match prune(store, retention, BATCH, |_| {}).await {
            Ok(p) if p.tasks > 0 => {
                tracing::info!(tasks = p.tasks, steps = p.steps, "pruned finished tasks")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune finished tasks; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
