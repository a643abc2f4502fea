//! Engine start-up: from nothing to an embedded engine whose loops are running, and
//! back down. Tasker opens one store (one pool, migrations once) shared by the
//! orchestrator and the workers; the naive start-up gives each component its own store
//! and pool, migrating each, as a design without a shared pool would.
//!
//! `cargo bench -p tasker-engine --bench startup` prints allocations (every thread) and
//! the median time per start-up, then runs criterion.

#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use tasker_core::memory::{MemoryProfiler, Scope};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry, Queues, WorkerConfig};
use tasker_store::sqlite::SqliteStore;

async fn tasker() {
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let engine = Engine::new(
        store,
        HandlerRegistry::with_builtins(),
        EngineConfig::embedded(),
    );
    engine.start().shutdown().await;
}

async fn naive() {
    let orchestrator = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let worker = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let only = |orchestrator, worker| EngineConfig {
        orchestrator,
        worker,
        ..EngineConfig::embedded()
    };
    let a = Engine::new(
        orchestrator,
        HandlerRegistry::with_builtins(),
        only(true, None),
    );
    let w = WorkerConfig {
        queues: Queues::All,
        concurrency: 8,
    };
    let b = Engine::new(
        worker,
        HandlerRegistry::with_builtins(),
        only(false, Some(w)),
    );
    let (ra, rb) = (a.start(), b.start());
    ra.shutdown().await;
    rb.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let measure = |label: &'static str, f: &dyn Fn()| {
        f();
        let mut p = MemoryProfiler::start(Scope::Process);
        const RUNS: u32 = 20;
        for _ in 0..RUNS {
            f();
        }
        let allocations = p.checkpoint(label).allocations / u64::from(RUNS);
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "| {label} | {allocations} | {:.2} ms |",
            times[times.len() / 2]
        );
    };
    println!("| start-up | allocations | median time |\n|---|---:|---:|");
    measure("tasker: one store shared", &|| rt.block_on(tasker()));
    measure("naive: a store per component", &|| rt.block_on(naive()));

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("startup/tasker", |b| b.iter(|| rt.block_on(tasker())));
    c.bench_function("startup/naive", |b| b.iter(|| rt.block_on(naive())));
    c.final_summary();
}
