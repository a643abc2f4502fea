//! Back-pressure on memory. A sampler reads the process's memory every `interval`;
//! above `high` bytes the engine takes no new work — its orchestrator starts no task,
//! its workers take no step, work in flight finishes — and below `low` it takes work
//! again. Each change is logged and published (`memory.high`, `memory.normal`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tasker_core::event::EventKind;
use tokio::sync::watch;

use crate::Shared;
use crate::process_memory::{release_free_memory, resident_bytes};

/// Reads the process's memory in bytes; `None` when it cannot tell.
#[derive(Clone)]
pub struct Sampler(Arc<dyn Fn() -> Option<u64> + Send + Sync>);

impl Sampler {
    pub fn new(sample: impl Fn() -> Option<u64> + Send + Sync + 'static) -> Self {
        Self(Arc::new(sample))
    }

    /// The resident set size.
    pub fn resident() -> Self {
        Self::new(resident_bytes)
    }
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sampler")
    }
}

/// When to stop and resume taking work.
#[derive(Clone, Debug)]
pub struct MemoryLimits {
    pub high_watermark: u64,
    pub low_watermark: u64,
    pub interval: Duration,
    pub sampler: Sampler,
}

pub(crate) async fn watch_memory<S>(
    shared: Arc<Shared<S>>,
    limits: MemoryLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shared.paused.borrow() {
            // glibc keeps freed memory; hand it back so the sample can fall below the
            // low watermark once the work that needed it is done.
            release_free_memory();
        }
        if let Some(bytes) = (limits.sampler.0)() {
            let paused = *shared.paused.borrow();
            if !paused && bytes > limits.high_watermark {
                tracing::warn!(
                    bytes,
                    high_watermark = limits.high_watermark,
                    "memory above the high watermark: taking no new work until it falls below the low watermark"
                );
                shared.paused.send_replace(true);
                shared.publish_process(EventKind::MemoryHigh);
            } else if paused && bytes < limits.low_watermark {
                tracing::info!(
                    bytes,
                    low_watermark = limits.low_watermark,
                    "memory below the low watermark: taking work again"
                );
                shared.paused.send_replace(false);
                shared.publish_process(EventKind::MemoryNormal);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(limits.interval) => {}
            _ = shutdown.changed() => break,
        }
    }
}
