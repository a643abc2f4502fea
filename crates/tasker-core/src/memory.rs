//! Allocation counting: a global allocator that counts (per thread and per process)
//! and a [`MemoryProfiler`] that reports allocations, bytes and peak live bytes per
//! labelled span. Behind the `alloc-counter` feature: a production build pays nothing.
//!
//! A test, bench or binary opts in by installing the allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;
//! ```
//!
//! Thread counters let parallel tests measure themselves without seeing each other;
//! process counters see every thread (a whole engine run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The system allocator, counting.
pub struct CountingAllocator;

thread_local! {
    static THREAD: Counters = const { Counters::new() };
}

struct Counters {
    allocations: Cell<u64>,
    deallocations: Cell<u64>,
    bytes: Cell<u64>,
    live: Cell<i64>,
    peak: Cell<i64>,
}

impl Counters {
    const fn new() -> Self {
        Self {
            allocations: Cell::new(0),
            deallocations: Cell::new(0),
            bytes: Cell::new(0),
            live: Cell::new(0),
            peak: Cell::new(0),
        }
    }
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

fn on_alloc(size: usize) {
    let size = size as i64;
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    // During thread teardown the thread's counters may be gone: skip them then.
    let _ = THREAD.try_with(|c| {
        c.allocations.set(c.allocations.get() + 1);
        c.bytes.set(c.bytes.get() + size as u64);
        let live = c.live.get() + size;
        c.live.set(live);
        c.peak.set(c.peak.get().max(live));
    });
}

fn on_dealloc(size: usize) {
    let size = size as i64;
    DEALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    LIVE.fetch_sub(size, Ordering::Relaxed);
    let _ = THREAD.try_with(|c| {
        c.deallocations.set(c.deallocations.get() + 1);
        c.live.set(c.live.get() - size);
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches
// only atomics and const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    /// A reallocation counts as one allocation of the new size and the release of the old.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Which counters a measurement reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// This thread only: parallel tests do not see each other.
    Thread,
    /// Every thread of the process.
    Process,
}

/// Counter values at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub allocations: u64,
    pub deallocations: u64,
    pub bytes: u64,
    pub live_bytes: i64,
    pub peak_live_bytes: i64,
}

impl Scope {
    pub fn snapshot(self) -> Snapshot {
        match self {
            Scope::Thread => THREAD.with(|c| Snapshot {
                allocations: c.allocations.get(),
                deallocations: c.deallocations.get(),
                bytes: c.bytes.get(),
                live_bytes: c.live.get(),
                peak_live_bytes: c.peak.get(),
            }),
            Scope::Process => Snapshot {
                allocations: ALLOCATIONS.load(Ordering::Relaxed),
                deallocations: DEALLOCATIONS.load(Ordering::Relaxed),
                bytes: BYTES.load(Ordering::Relaxed),
                live_bytes: LIVE.load(Ordering::Relaxed),
                peak_live_bytes: PEAK.load(Ordering::Relaxed),
            },
        }
    }

    /// Starts a new peak: from now, the peak is measured from the current live bytes.
    fn reset_peak(self) {
        match self {
            Scope::Thread => THREAD.with(|c| c.peak.set(c.live.get())),
            Scope::Process => PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed),
        }
    }
}

/// What happened between two checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub label: &'static str,
    pub allocations: u64,
    pub deallocations: u64,
    pub bytes: u64,
    /// The most live bytes above the span's start at any point in it.
    pub peak_live_bytes: i64,
}

/// Measures labelled spans of work: `start`, then `checkpoint("label")` after each part.
pub struct MemoryProfiler {
    scope: Scope,
    last: Snapshot,
    spans: Vec<Span>,
}

impl MemoryProfiler {
    pub fn start(scope: Scope) -> Self {
        // Reserved now, so recording a span does not allocate inside the next one.
        let spans = Vec::with_capacity(32);
        scope.reset_peak();
        Self {
            scope,
            last: scope.snapshot(),
            spans,
        }
    }

    /// Ends the current span under `label` and starts the next one.
    pub fn checkpoint(&mut self, label: &'static str) -> &Span {
        let now = self.scope.snapshot();
        let span = Span {
            label,
            allocations: now.allocations - self.last.allocations,
            deallocations: now.deallocations - self.last.deallocations,
            bytes: now.bytes - self.last.bytes,
            peak_live_bytes: now.peak_live_bytes - self.last.live_bytes,
        };
        if self.spans.len() == self.spans.capacity() {
            self.spans.reserve(self.spans.len());
        }
        self.spans.push(span);
        self.scope.reset_peak();
        self.last = self.scope.snapshot();
        self.spans.last().expect("just pushed")
    }

    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The spans as a table.
    pub fn report(&self) -> Report<'_> {
        Report(&self.spans)
    }
}

/// A printable table of spans.
pub struct Report<'a>(&'a [Span]);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>12} {:>12} {:>14} {:>14}",
            "span", "allocations", "frees", "bytes", "peak live"
        )?;
        for s in self.0 {
            writeln!(
                f,
                "{:<32} {:>12} {:>12} {:>14} {:>14}",
                s.label, s.allocations, s.deallocations, s.bytes, s.peak_live_bytes
            )?;
        }
        Ok(())
    }
}
