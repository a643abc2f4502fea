//! Per-step cost does not grow with the task: allocations per step of a 2,000-step
//! chain stay within 1.5× of those of a 20-step chain, every thread of the process
//! counted. Alone in its test binary so that nothing else allocates meanwhile.

#[global_allocator]
static ALLOC: tasker_core::memory::CountingAllocator = tasker_core::memory::CountingAllocator;

use std::sync::Arc;

use tasker_core::event::EventKind;
use tasker_core::memory::{MemoryProfiler, Scope};
use tasker_core::template::{TaskTemplate, parse_template};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::sqlite::SqliteStore;

fn chain(n: usize) -> TaskTemplate {
    let mut yaml = format!("namespace: scale\nname: chain{n}\nversion: 1.0.0\nsteps:\n");
    for i in 0..n {
        let deps = if i == 0 {
            String::new()
        } else {
            format!(", depends_on: [s{}]", i - 1)
        };
        yaml.push_str(&format!("  - {{name: s{i}, handler: noop{deps}}}\n"));
    }
    parse_template(&yaml, "chain.yaml").unwrap()
}

/// Allocations per step of `tasks` runs of `template`, submitted one after another.
async fn per_step(engine: &Engine<SqliteStore>, template: &TaskTemplate, tasks: usize) -> f64 {
    let mut events = engine.events().subscribe();
    let mut profiler = MemoryProfiler::start(Scope::Process);
    for _ in 0..tasks {
        engine.submit(template, "{}", None).await.unwrap();
        loop {
            let event = events.recv().await.expect("no event is missed");
            if event.kind == EventKind::TaskCompleted {
                break;
            }
        }
    }
    let span = profiler.checkpoint("chain").clone();
    span.allocations as f64 / (tasks * template.steps.len()) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_step_do_not_grow_with_the_task() {
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let engine = Engine::new(
        store,
        HandlerRegistry::with_builtins(),
        EngineConfig::embedded(),
    );
    let running = engine.start();
    let (small, large) = (chain(20), chain(2000));
    // Warm up: statements are prepared and cached.
    per_step(&engine, &small, 1).await;

    let small_cost = per_step(&engine, &small, 100).await;
    let large_cost = per_step(&engine, &large, 1).await;
    running.shutdown().await;
    println!(
        "allocations per step: 20-step chain {small_cost:.1}, 2,000-step chain {large_cost:.1}"
    );
    assert!(
        large_cost <= 1.5 * small_cost,
        "a 2,000-step chain costs {large_cost:.1} allocations per step, a 20-step one {small_cost:.1}"
    );
}
