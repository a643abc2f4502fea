//! Reused buffers to encode messages into: once warm, encoding a message allocates
//! nothing, and a store's transactions share a small pool of them.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// Bytes kept by every [`EncodeBuffer`] of the process, for metrics.
static RETAINED: AtomicUsize = AtomicUsize::new(0);

/// The capacity an encode buffer keeps between messages unless told otherwise.
pub const DEFAULT_RETAINED_BYTES: usize = 16 * 1024;

/// A reusable buffer to encode messages into. It keeps its capacity between messages
/// (no allocation once warm) up to `retain` bytes: a rare huge message does not pin
/// its memory for ever.
#[derive(Debug)]
pub struct EncodeBuffer {
    buf: Vec<u8>,
    retain: usize,
}

impl EncodeBuffer {
    pub fn new(retain: usize) -> Self {
        Self {
            buf: Vec::new(),
            retain,
        }
    }

    /// Encodes `value` as JSON, replacing what the buffer held.
    pub fn encode<T: Serialize + ?Sized>(&mut self, value: &T) -> &str {
        self.start();
        // Writing into a Vec cannot fail, and these types have string keys only.
        serde_json::to_writer(&mut self.buf, value).expect("messages always encode");
        self.finish()
    }

    /// Encodes `values` as one JSON array.
    pub fn encode_all<T: Serialize>(&mut self, values: &[T]) -> &str {
        self.encode(values)
    }

    fn start(&mut self) {
        if self.buf.capacity() > self.retain {
            RETAINED.fetch_sub(self.buf.capacity(), Ordering::Relaxed);
            self.buf = Vec::new();
        }
        self.buf.clear();
        RETAINED.fetch_sub(self.buf.capacity(), Ordering::Relaxed);
    }

    fn finish(&self) -> &str {
        RETAINED.fetch_add(self.buf.capacity(), Ordering::Relaxed);
        std::str::from_utf8(&self.buf).expect("serde_json writes UTF-8")
    }

    /// The bytes this buffer keeps.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes kept by every encode buffer of the process.
    pub fn retained_bytes() -> usize {
        RETAINED.load(Ordering::Relaxed)
    }
}

impl Default for EncodeBuffer {
    fn default() -> Self {
        Self::new(DEFAULT_RETAINED_BYTES)
    }
}

impl Drop for EncodeBuffer {
    fn drop(&mut self) {
        RETAINED.fetch_sub(self.buf.capacity(), Ordering::Relaxed);
    }
}

/// Idle encode buffers, shared by the transactions of a store: each borrows one and
/// gives it back. At most `MAX_IDLE` are kept. `benches/memory.rs` weighs this pool
/// against a fresh buffer per use; BENCHMARKS.md has the verdict.
#[derive(Debug, Default)]
pub struct BufferPool {
    idle: std::sync::Mutex<Vec<EncodeBuffer>>,
}

impl BufferPool {
    /// Idle buffers kept at most: one per transaction that can run at once.
    pub const MAX_IDLE: usize = 64;

    pub fn take(&self) -> EncodeBuffer {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub fn give(&self, buffer: EncodeBuffer) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < Self::MAX_IDLE {
            idle.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_buffer_reuses_and_caps_its_capacity() {
        let mut b = EncodeBuffer::new(64);
        b.encode(&"x".repeat(10));
        let cap = b.capacity();
        b.encode(&"y".repeat(10));
        assert_eq!(b.capacity(), cap, "reused");
        assert_eq!(b.encode(&[1, 2]), "[1,2]");
        b.encode(&"z".repeat(1000));
        assert!(b.capacity() > 64);
        b.encode(&1);
        assert!(b.capacity() <= 64, "a big message does not pin its memory");
        assert!(EncodeBuffer::retained_bytes() >= b.capacity());
    }
}
