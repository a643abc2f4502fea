//! The counting allocator and the profiler, measured against known allocations.

#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

use tasker_core::memory::{MemoryProfiler, Scope};

#[test]
fn counts_allocations_bytes_and_peak_per_span() {
    let mut p = MemoryProfiler::start(Scope::Thread);
    let a: Vec<u8> = Vec::with_capacity(1000);
    let b: Vec<u8> = Vec::with_capacity(24);
    std::hint::black_box((&a, &b));
    let first = p.checkpoint("two vectors").clone();
    assert_eq!((first.allocations, first.bytes), (2, 1024));
    assert_eq!(first.peak_live_bytes, 1024);
    drop(a);
    drop(b);
    let second = p.checkpoint("freed").clone();
    assert_eq!((second.allocations, second.deallocations), (0, 2));
    let big = vec![0u8; 4096];
    drop(std::hint::black_box(big));
    let third = p.checkpoint("peak then free").clone();
    assert_eq!(third.peak_live_bytes, 4096, "peak seen even though freed");
    assert!(p.report().to_string().contains("two vectors"));
}

#[test]
fn threads_do_not_see_each_other() {
    let mut p = MemoryProfiler::start(Scope::Thread);
    std::thread::spawn(|| {
        let v: Vec<Vec<u8>> = (0..100).map(|_| Vec::with_capacity(64)).collect();
        std::hint::black_box(v);
    })
    .join()
    .unwrap();
    let span = p.checkpoint("other thread").clone();
    // Spawning a thread allocates a little on this one; the 101 allocations are elsewhere.
    assert!(span.allocations < 20, "{span:?}");
}
