//! The end-to-end allocation budget: allocations per step of a 100-task diamond run on
//! the embedded store, every thread of the process counted (runtime, SQLite thread,
//! engine). Alone in its test binary so that nothing else allocates meanwhile.

#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

use std::sync::Arc;

use tasker_core::event::EventKind;
use tasker_core::memory::{MemoryProfiler, Scope};
use tasker_core::template::parse_template;
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::sqlite::SqliteStore;

/// Measured (BENCHMARKS.md) plus a margin for the noise of thread scheduling.
const BUDGET_PER_STEP: f64 = 100.0;

const DIAMOND: &str = "namespace: bench\nname: diamond\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n  - {name: b, handler: noop, depends_on: [a]}\n  - {name: c, handler: noop, depends_on: [a]}\n  - {name: d, handler: noop, depends_on: [b, c]}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_step_of_a_diamond_run() {
    let template = parse_template(DIAMOND, "diamond.yaml").unwrap();
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let engine = Engine::new(
        store,
        HandlerRegistry::with_builtins(),
        EngineConfig::embedded(),
    );
    let running = engine.start();
    // Warm up: first statements prepare and cache, the interner learns the names.
    let warm = engine.submit(&template, "{}", None).await.unwrap();
    engine.wait(warm.task_id, |_| {}).await.unwrap();

    // Completions are counted from events: reading the store would allocate too. Ten
    // tasks at a time, so the events of a round (11 per task) fit in the bus.
    let mut events = engine.events().subscribe();
    let mut profiler = MemoryProfiler::start(Scope::Process);
    for _ in 0..10 {
        for _ in 0..10 {
            engine.submit(&template, "{}", None).await.unwrap();
        }
        let mut completed = 0;
        while completed < 10 {
            let event = events.recv().await.expect("no event is missed");
            completed += usize::from(event.kind == EventKind::TaskCompleted);
        }
    }
    let span = profiler.checkpoint("100 diamond tasks").clone();
    running.shutdown().await;

    let per_step = span.allocations as f64 / 400.0;
    println!("{}", profiler.report());
    println!(
        "allocations per step: {per_step:.1}, bytes per step: {:.0}",
        span.bytes as f64 / 400.0
    );
    assert!(
        per_step <= BUDGET_PER_STEP,
        "{per_step:.1} allocations per step, budget {BUDGET_PER_STEP}"
    );
}
