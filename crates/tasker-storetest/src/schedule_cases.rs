//! Schedules: each tick creates one task however many orchestrators read it; missed
//! ticks follow the catch-up policy; pausing, resuming and deleting; bad input refused.

use std::sync::Arc;
use std::time::Duration;

use tasker_core::message::{StepMessage, TraceParent};
use tasker_core::schedule::{CatchUp, ON_TIME};
use tasker_core::state::TaskState;
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use crate::support::*;

const NIGHTLY: &str = "namespace: sched\nname: nightly\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop, queue: sched}\n";

async fn create<S: Store>(
    store: &S,
    name: &str,
    cron: &str,
    catch_up: CatchUp,
) -> StoreResult<ScheduleRecord> {
    let template = template(NIGHTLY);
    let context = raw(r#"{"report": "sales"}"#);
    store
        .schedule_create(ScheduleCreate {
            name,
            template: &template,
            cron,
            timezone: "UTC",
            context: &context,
            catch_up,
        })
        .await
}

/// Sleeps until `at` has passed (by `extra` more).
async fn sleep_past(at: Timestamp, extra: Duration) {
    let left = at.0.saturating_sub(Timestamp::now().0).max(0) as u64;
    tokio::time::sleep(Duration::from_micros(left) + extra).await;
}

/// The ticks `batch` fired for `schedule`.
fn ticks_of<'a>(batch: &'a TasksStarted, schedule: &str) -> Vec<&'a TickFired> {
    batch
        .ticks
        .iter()
        .filter(|t| t.schedule == schedule)
        .collect()
}

pub async fn a_schedule_fires_each_tick_once<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let created = create(&*store, "every_second", "@every 1s", CatchUp::Once)
        .await
        .unwrap();
    let first = created.next_fire.expect("a first tick");
    assert!(
        first.since(created.created_at) <= Duration::from_secs(1),
        "the first tick comes within a period"
    );
    assert!(
        d.start_batch().await.ticks.is_empty(),
        "nothing before its time"
    );
    sleep_past(first, Duration::from_millis(100)).await;
    let batch = d.start_batch().await;
    assert_eq!(batch.ticks.len(), 1, "{batch:?}");
    let tick = &batch.ticks[0];
    assert_eq!(
        (tick.schedule.as_str(), tick.fire_at),
        ("every_second", first)
    );
    assert!(tick.lag >= Duration::from_millis(100) && tick.lag < ON_TIME);
    let detail = d.detail(tick.task_id).await;
    assert_eq!(detail.task.context.get(), r#"{"report": "sales"}"#);
    assert_eq!(detail.task.traceparent, None, "no traces asked for");
    assert_eq!(d.start_tasks().await, 1, "its task starts as any task does");
    assert_eq!(d.run_queue("sched").await, ["a"]);
    assert_eq!(d.detail(tick.task_id).await.task.state, TaskState::Complete);
    let listed = store.schedule_list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_fire, Some(first));
    let second = listed[0].next_fire.expect("the next tick");
    assert_eq!(second.since(first), Duration::from_secs(1));

    // Paused, its ticks fire nothing; resumed, it goes on from its next tick.
    assert!(store.schedule_pause("every_second", true).await.unwrap());
    assert!(!store.schedule_pause("every_second", true).await.unwrap());
    sleep_past(second, Duration::from_millis(100)).await;
    assert!(d.start_batch().await.ticks.is_empty(), "paused");
    assert!(store.schedule_pause("every_second", false).await.unwrap());
    let resumed = store.schedule_list().await.unwrap()[0].clone();
    assert!(!resumed.paused);
    let next = resumed.next_fire.expect("a tick after now");
    assert!(
        next.0 > second.0,
        "what fell due while paused is not caught up"
    );
    sleep_past(next, Duration::from_millis(100)).await;
    let batch = d.start_batch().await;
    assert_eq!(batch.ticks.len(), 1, "{batch:?}");
    assert_eq!(batch.ticks[0].fire_at, next);
    assert_eq!(batch.ticks_skipped, 0);

    store.schedule_delete("every_second").await.unwrap();
    assert!(store.schedule_list().await.unwrap().is_empty());
    assert!(matches!(
        store.schedule_delete("every_second").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.schedule_pause("every_second", true).await,
        Err(StoreError::NotFound(_))
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(d.start_batch().await.ticks.is_empty(), "deleted");
    assert_eq!(
        d.detail(tick.task_id).await.task.state,
        TaskState::Complete,
        "its tasks stay"
    );
}

/// The trace context a process exporting traces gives each task its schedules fire.
fn fixed_trace() -> TraceParent {
    TraceParent {
        trace_id: [7; 16],
        span_id: [9; 8],
        flags: 1,
    }
}

/// A tick read by a process that exports traces begins its task's trace: the task keeps
/// the context, and its step messages carry it, as a submitted task's do.
pub async fn a_schedules_task_begins_a_trace_when_asked<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let created = create(&*store, "traced", "@every 1s", CatchUp::Once)
        .await
        .unwrap();
    sleep_past(created.next_fire.unwrap(), Duration::from_millis(100)).await;
    let batch = store
        .task_start_batch(100, Duration::from_secs(30), Some(fixed_trace))
        .await
        .unwrap();
    let [tick] = &ticks_of(&batch, "traced")[..] else {
        panic!("{batch:?}");
    };
    let detail = d.detail(tick.task_id).await;
    assert_eq!(detail.task.traceparent, Some(fixed_trace()));
    assert_eq!(d.start_tasks().await, 1);
    let read = store
        .queue_read("sched", Duration::from_secs(30), 10)
        .await
        .unwrap();
    let [message] = &read.messages[..] else {
        panic!("{:?}", read.messages);
    };
    let decoded: StepMessage = serde_json::from_str(&message.body).unwrap();
    assert_eq!(decoded.task_id, tick.task_id);
    assert_eq!(decoded.traceparent, Some(fixed_trace()));
    store.schedule_delete("traced").await.unwrap();
}

pub async fn a_schedule_refuses_bad_input<S: Store>(store: Arc<S>) {
    create(&*store, "daily", "0 6 * * *", CatchUp::Skip)
        .await
        .unwrap();
    match create(&*store, "daily", "0 7 * * *", CatchUp::Skip).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("schedule `daily` exists"), "{why}"),
        other => panic!("{other:?}"),
    }
    for (name, cron, says) in [
        ("bad_cron", "0 6 * *", "has 4 fields"),
        ("bad_every", "@every 0s", "at least 1s"),
        ("Bad Name", "0 6 * * *", "schedule name `Bad Name`"),
    ] {
        match create(&*store, name, cron, CatchUp::Once).await {
            Err(StoreError::Invalid(why)) => assert!(why.contains(says), "{cron}: {why}"),
            other => panic!("{cron}: {other:?}"),
        }
    }
    let template = template(NIGHTLY);
    let context = raw("{}");
    let zone = store
        .schedule_create(ScheduleCreate {
            name: "zoned",
            template: &template,
            cron: "0 6 * * *",
            timezone: "Atlantis/Capital",
            context: &context,
            catch_up: CatchUp::Once,
        })
        .await;
    assert!(
        matches!(&zone, Err(StoreError::Invalid(why)) if why.contains("time zone `Atlantis/Capital`")),
        "{zone:?}"
    );
    let names: Vec<String> = store
        .schedule_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["daily"], "nothing half-created");
}

pub async fn missed_ticks_follow_the_catch_up_policy<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let mut first = Vec::new();
    for (name, policy) in [
        ("skip_missed", CatchUp::Skip),
        ("once_missed", CatchUp::Once),
        ("all_missed", CatchUp::All),
    ] {
        let s = create(&*store, name, "@every 1s", policy).await.unwrap();
        first.push(s.next_fire.unwrap());
    }
    let last = *first.iter().max().unwrap();
    // No orchestrator reads for three periods and a half.
    sleep_past(last, Duration::from_millis(2500)).await;
    let batch = d.start_batch().await;
    let late = |ticks: &[&TickFired]| ticks.iter().filter(|t| t.lag > ON_TIME).count();
    let all = ticks_of(&batch, "all_missed");
    assert!(all.len() >= 3, "every missed tick fires: {all:?}");
    assert_eq!(all[0].fire_at, first[2], "from the first");
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].fire_at.since(pair[0].fire_at),
            Duration::from_secs(1)
        );
    }
    let once = ticks_of(&batch, "once_missed");
    assert_eq!(late(&once), 1, "one task for the missed ticks: {once:?}");
    assert_eq!(once[0].fire_at, first[1], "the earliest stands for them");
    let skip = ticks_of(&batch, "skip_missed");
    assert_eq!(late(&skip), 0, "none of the missed ticks: {skip:?}");
    assert!(batch.ticks_skipped >= 3, "{}", batch.ticks_skipped);
    let tasks = store
        .task_list(TaskListParams {
            filter: TaskFilter {
                namespace: Some("sched"),
                ..Default::default()
            },
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), batch.ticks.len(), "one task per fired tick");
    assert!(
        d.start_batch().await.ticks.is_empty(),
        "a second reader finds nothing more to fire"
    );
}
