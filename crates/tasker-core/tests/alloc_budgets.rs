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

/// Runs `op` and holds its allocations per run to `budget`.
fn within(what: &str, budget: f64, op: impl FnMut()) {
    assert_budget(what, allocations_per_op(op), budget);
}

#[test]
fn messages_encode_and_decode_within_their_budgets() {
    let i = Inputs::load();
    let e = Encoded::of(&i);
    let mut buf = EncodeBuffer::default();
    within("step dispatch: create + encode", 0.0, || {
        dispatch_encode(&i, &mut buf);
    });
    within("step dispatch: decode", 0.0, || {
        dispatch_decode(&e.step);
    });
    // The vector of borrowed parent results; decoding, also serde_json's bracket stack.
    within("execution: create + encode", 1.0, || {
        execution_encode(&i, &mut buf);
    });
    within("execution: decode", 2.0, || {
        execution_decode(&e.execution);
    });
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
    within("hit", 0.0, || {
        i.interner.intern("fulfillment");
    });
}
