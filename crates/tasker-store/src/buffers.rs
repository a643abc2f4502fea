//! Encode buffers for the transactions of a store: each transaction borrows one and
//! gives it back, so a worker's messages reuse warm buffers instead of allocating.
//! `benches/buffers.rs` in `tasker-core` weighs this pool against a fresh buffer per
//! transaction; see BENCHMARKS.md for the verdict.

use std::sync::Mutex;

use tasker_core::message::EncodeBuffer;

/// At most this many idle buffers are kept: one per transaction that can run at once.
const MAX_IDLE: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    idle: Mutex<Vec<EncodeBuffer>>,
}

impl BufferPool {
    pub(crate) fn take(&self) -> EncodeBuffer {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub(crate) fn give(&self, buffer: EncodeBuffer) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(buffer);
        }
    }
}
