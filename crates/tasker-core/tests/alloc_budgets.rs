//! Allocation budgets of the hot paths, on the reference inputs. A regression that
//! allocates more fails here. The budgets are the measured figures (BENCHMARKS.md):
//! each test measures its own thread, so tests run in parallel without interfering.
//!
//! Decoding a payload that nests objects or arrays (a task context) costs one
//! short-lived 8-byte allocation inside serde_json, which keeps a stack of open
//! brackets while it skips the raw value; flat payloads cost nothing.

#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

#[path = "../benches/workload.rs"]
mod workload;

use tasker_core::encode::EncodeBuffer;
use tasker_core::memory::{MemoryProfiler, Scope};
use workload::*;

const RUNS: u64 = 200;

/// Allocations per call of `op`, after one warm-up call.
fn allocations_per_op(mut op: impl FnMut()) -> f64 {
    op();
    let mut p = MemoryProfiler::start(Scope::Thread);
    for _ in 0..RUNS {
        op();
    }
    p.checkpoint("op").allocations as f64 / RUNS as f64
}

fn assert_budget(what: &str, measured: f64, budget: f64) {
    assert!(
        measured <= budget,
        "{what}: {measured} allocations per operation, budget {budget}"
    );
}

#[test]
fn step_dispatch_message() {
    let i = Inputs::load();
    let e = Encoded::of(&i);
    let mut buf = EncodeBuffer::default();
    assert_budget(
        "create + encode",
        allocations_per_op(|| {
            dispatch_encode(&i, &mut buf);
        }),
        0.0,
    );
    assert_budget(
        "decode",
        allocations_per_op(|| {
            dispatch_decode(&e.step);
        }),
        0.0,
    );
}

#[test]
fn execution_message() {
    let i = Inputs::load();
    let e = Encoded::of(&i);
    let mut buf = EncodeBuffer::default();
    // The vector of borrowed parent results; decoding, also serde_json's bracket stack.
    assert_budget(
        "create + encode",
        allocations_per_op(|| {
            execution_encode(&i, &mut buf);
        }),
        1.0,
    );
    assert_budget(
        "decode",
        allocations_per_op(|| {
            execution_decode(&e.execution);
        }),
        2.0,
    );
}

#[test]
fn event_publish_does_not_grow_with_subscribers() {
    let i = Inputs::load();
    for n in [0, 1, 4, 16] {
        let (bus, mut subs) = bus_with(n);
        let per_op = allocations_per_op(|| {
            assert_eq!(publish(&i, &bus, &mut subs), n);
        });
        assert_budget(&format!("publish to {n} subscribers"), per_op, 1.0);
    }
}

#[test]
fn interner_hit_allocates_nothing() {
    let i = Inputs::load();
    assert_budget(
        "hit",
        allocations_per_op(|| {
            i.interner.intern("fulfillment");
        }),
        0.0,
    );
}
