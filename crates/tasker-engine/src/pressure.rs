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

/// The resident set size of this process (Linux: `VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes a byte count and only releases free heap pages.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
