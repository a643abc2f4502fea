//! The engines of a process publish on its one event bus (docs/events.md): a subscriber
//! sees what every engine did, whichever the work went through.

use std::sync::Arc;

use tasker_core::event::{EventBus, EventKind};
use tasker_core::template::parse_template;
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::sqlite::SqliteStore;

#[tokio::test]
async fn engines_of_a_process_share_its_event_bus() {
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let client = Engine::new(
        store.clone(),
        HandlerRegistry::new(),
        EngineConfig::client(),
    );
    let other = Engine::new(store, HandlerRegistry::new(), EngineConfig::client());
    let mut seen = EventBus::process().subscribe();
    let template = parse_template(
        "namespace: bus\nname: one\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n",
        "one.yaml",
    )
    .unwrap();
    let first = client.submit(&template, "{}", None).await.unwrap();
    let second = other.submit(&template, "{}", None).await.unwrap();
    for task in [first.task_id, second.task_id] {
        let event = seen.try_recv().expect("an event").unwrap();
        assert_eq!(
            (event.kind, event.task_id),
            (EventKind::TaskCreated, Some(task))
        );
    }
    assert_eq!(
        client.events().subscriber_count(),
        1,
        "one bus, one subscriber"
    );
    assert_eq!(other.events().subscriber_count(), 1);
}
