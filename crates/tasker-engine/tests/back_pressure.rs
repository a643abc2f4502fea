//! Memory back-pressure: above the high watermark the engine takes no new work and
//! finishes what is in flight; below the low watermark it goes on, and nothing is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tasker_core::event::{EventKind, Subscription};
use tasker_core::template::parse_template;
use tasker_core::{StepState, TaskState};
use tasker_engine::pressure::{MemoryLimits, Sampler};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::sqlite::SqliteStore;

const CHAIN: &str = "namespace: bp\nname: chain\nversion: 1.0.0\nsteps:\n  - {name: slow, handler: sleep, config: {ms: 400}}\n  - {name: after, handler: sum, depends_on: [slow]}\n";

async fn next(events: &mut Subscription, kind: EventKind) {
    let wait = async {
        loop {
            if events.recv().await.is_ok_and(|e| e.kind == kind) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {} event", kind.name()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_pauses_above_the_high_watermark_and_resumes_below_the_low() {
    // The memory the sampler reports, set by the test: tiny watermarks, driven by hand.
    let memory = Arc::new(AtomicU64::new(0));
    let reading = memory.clone();
    let config = EngineConfig {
        memory: Some(MemoryLimits {
            high_watermark: 1_000,
            low_watermark: 500,
            interval: Duration::from_millis(10),
            sampler: Sampler::new(move || Some(reading.load(Ordering::SeqCst))),
        }),
        // Its own bus: the events counted are this engine's alone.
        events: tasker_core::event::EventBus::default(),
        ..EngineConfig::embedded()
    };
    let template = parse_template(CHAIN, "chain.yaml").unwrap();
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let engine = Engine::new(store.clone(), HandlerRegistry::with_builtins(), config);
    let mut events = engine.events().subscribe();
    let running = engine.start();

    // In flight when the memory rises: the step finishes, its child does not start.
    let task = engine.submit(&template, "{}", None).await.unwrap().task_id;
    next(&mut events, EventKind::StepStarted).await;
    memory.store(2_000, Ordering::SeqCst);
    next(&mut events, EventKind::MemoryHigh).await;
    assert!(engine.is_paused());
    next(&mut events, EventKind::StepCompleted).await;
    // Nor does a new task start.
    let held = engine.submit(&template, "{}", None).await.unwrap().task_id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detail = store_detail(&engine, task).await;
    assert_eq!(state_of(&detail, "slow"), StepState::Complete);
    assert_eq!(state_of(&detail, "after"), StepState::Enqueued);
    assert_eq!(
        store_detail(&engine, held).await.task.state,
        TaskState::Pending
    );

    // Between the watermarks: still held.
    memory.store(700, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(engine.is_paused());

    memory.store(100, Ordering::SeqCst);
    next(&mut events, EventKind::MemoryNormal).await;
    for id in [task, held] {
        let done = engine.wait(id, |_| {}).await.unwrap();
        assert_eq!(done.task.state, TaskState::Complete);
        assert!(done.steps.iter().all(|s| s.attempts == 1), "{done:?}");
    }
    running.shutdown().await;
}

async fn store_detail(
    engine: &Engine<SqliteStore>,
    task: tasker_core::id::TaskId,
) -> tasker_core::store::TaskDetail {
    use tasker_core::store::Store;
    engine.store().task_get(task).await.unwrap()
}

fn state_of(detail: &tasker_core::store::TaskDetail, step: &str) -> StepState {
    detail.steps.iter().find(|s| s.name == step).unwrap().state
}
