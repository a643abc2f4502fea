//! The loop shared by orchestrators and workers: take work from a queue when there is
//! a free slot (as many items as there are free slots, in one transaction of the
//! store's), hand each item to a task of its own, and sleep — without polling — when
//! the queues are empty.
//!
//! Sleeping never misses work: the loop registers for its wake-up *before* it reads,
//! so a message sent between an empty read and the sleep still wakes it. It sleeps
//! until the earliest hidden message becomes visible (a delayed retry, or a message
//! whose worker may have died, as the empty read reports), or at most `poll` as a
//! safety net.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tasker_core::store::{Store, StoreResult, Wakeups};
use tasker_core::time::Timestamp;
use tokio::sync::{Notify, Semaphore, watch};

/// Which queues a worker serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Queues {
    /// Every queue that has messages (the embedded engine).
    All,
    Named(Vec<String>),
}

/// What one take found.
pub(crate) struct Taken<T> {
    pub items: Vec<T>,
    /// When the queue's next hidden message shows (see `QueueBatch::next_visible`).
    pub next_visible: Option<Timestamp>,
}

pub(crate) struct Consumer<S> {
    pub store: Arc<S>,
    pub queues: Queues,
    /// The wake-up this consumer sleeps on.
    pub wakeup: fn(&Wakeups) -> &Notify,
    pub concurrency: usize,
    pub poll: Duration,
    /// True while memory pressure holds new work back.
    pub paused: watch::Receiver<bool>,
}

impl<S: Store> Consumer<S> {
    /// Runs until `shutdown` turns true, then waits for in-flight items to finish.
    /// `take(queue, limit)` takes up to `limit` items of a queue and tells when its next
    /// hidden message shows; `process` handles one item.
    pub async fn run<T, Take, TakeFut, F, Fut>(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        take: Take,
        process: F,
    ) where
        Take: Fn(Arc<str>, u32) -> TakeFut,
        TakeFut: Future<Output = StoreResult<Taken<T>>>,
        F: Fn(Arc<str>, T) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut rotation = 0usize;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if *self.paused.borrow() {
                // Back-pressure: read nothing new; what is in flight goes on.
                tokio::select! {
                    _ = self.paused.wait_for(|p| !*p) => continue,
                    _ = shutdown.changed() => break,
                }
            }
            let first = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                _ = shutdown.changed() => break,
            };
            if *self.paused.borrow() {
                // Paused while every slot was busy: wait at the top of the loop.
                continue;
            }
            let notified = (self.wakeup)(self.store.wakeups()).notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let queues = match self.queue_names().await {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list queues; retrying");
                    drop(first);
                    Self::sleep_unless_stopped(self.poll, &mut shutdown).await;
                    continue;
                }
            };
            let free = slots.available_permits() as u32 + 1;
            let mut got = None;
            let mut wake_at = Timestamp::now().after(self.poll);
            for i in 0..queues.len() {
                let queue = Arc::<str>::from(queues[(rotation + i) % queues.len()].as_str());
                match take(queue.clone(), free).await {
                    Ok(taken) => {
                        wake_at = wake_at.min(taken.next_visible.unwrap_or(wake_at));
                        if !taken.items.is_empty() {
                            rotation = rotation.wrapping_add(i + 1);
                            got = Some((queue, taken.items));
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(queue = %queue, error = %e, "cannot read queue"),
                }
            }
            // Nothing more to read now: every queue was read empty, or the only queue
            // gave less than asked with nothing else visible. Sleep until woken.
            let drained = match &got {
                None => true,
                Some((_, items)) => {
                    queues.len() == 1 && (items.len() as u32) < free && wake_at > Timestamp::now()
                }
            };
            let Some((queue, items)) = got else {
                drop(first);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wake_at.since(Timestamp::now())) => {}
                    _ = shutdown.changed() => break,
                }
                continue;
            };
            let mut slot = Some(first);
            for item in items {
                let slot = match slot.take() {
                    Some(s) => s,
                    None => slots.clone().acquire_owned().await.expect("never closed"),
                };
                let work = process(queue.clone(), item);
                tokio::spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            if drained {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wake_at.since(Timestamp::now())) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
        // Graceful stop: every slot back means every message in flight is finished.
        let _ = slots.acquire_many(self.concurrency as u32).await;
    }

    async fn queue_names(&self) -> Result<Vec<String>, tasker_core::store::StoreError> {
        match &self.queues {
            Queues::Named(names) => Ok(names.clone()),
            Queues::All => self.store.queue_list().await,
        }
    }

    async fn sleep_unless_stopped(d: Duration, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.changed() => {}
        }
    }
}
