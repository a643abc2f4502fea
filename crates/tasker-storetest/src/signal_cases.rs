//! Steps that wait for a signal (`wait_for`): delivered before or after the wait
//! begins, refused when repeated or late, timed out, retried, cancelled, resolved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tasker_core::id::TaskId;
use tasker_core::message::TASK_QUEUE;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::*;

use crate::support::*;

/// draft → approve (waits for `approval`) → publish.
fn approval(timeout: &str) -> tasker_core::template::TaskTemplate {
    template(&format!(
        "namespace: demo\nname: approval\nversion: 1.0.0\nsteps:\n  \
         - {{name: draft, handler: echo}}\n  \
         - {{name: approve, depends_on: [draft], wait_for: {{signal: approval, timeout: {timeout}}}}}\n  \
         - {{name: publish, handler: echo, depends_on: [approve]}}\n"
    ))
}

const PAYLOAD: &str = r#"{"approved_by":"ana"}"#;

fn state(detail: &TaskDetail, name: &str) -> StepState {
    step(detail, name).state
}

async fn signal<S: Store>(store: &S, task_id: TaskId, name: &str) -> StoreResult<Signalled> {
    store.task_signal(task_id, name, &raw(PAYLOAD)).await
}

/// The messages the internal task queue holds: task requests and wait timeouts.
async fn task_queue_depth<S: Store>(store: &S) -> u64 {
    let depths = store.queue_depths().await.unwrap();
    depths
        .iter()
        .find(|d| d.queue == TASK_QUEUE)
        .map_or(0, |d| d.messages)
}

/// Reads the task queue as an orchestrator does until a read fails a wait or `done`
/// holds (at most 20 s); returns the waits that timed out.
async fn read_until<S: Store>(
    d: &Driver<S>,
    mut done: impl AsyncFnMut() -> bool,
) -> Vec<WaitExpired> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let expired = d.start_batch().await.expired;
        if !expired.is_empty() || done().await {
            return expired;
        }
        assert!(Instant::now() < end, "nothing came due within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn a_signal_completes_the_step_that_waits_for_it<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let id = d.create(&approval("1h"), "{}").await;
    d.start_tasks().await;
    assert_eq!(d.run_queue("demo").await, ["draft"]);
    let detail = d.detail(id).await;
    assert_eq!(state(&detail, "approve"), StepState::Waiting);
    assert_eq!(state(&detail, "publish"), StepState::Pending);
    assert_eq!(detail.task.state, TaskState::InProgress);
    assert!(d.claim("demo").await.is_none(), "a wait holds no worker");
    assert_eq!(task_queue_depth(&*store).await, 1, "its timeout, delayed");

    let signalled = signal(&*store, id, "approval").await.unwrap();
    let approve = step(&detail, "approve").id;
    assert_eq!(signalled.completed, [approve]);
    assert_eq!(signalled.task_state, TaskState::InProgress);
    let again = signal(&*store, id, "approval").await.unwrap_err();
    assert!(
        matches!(&again, StoreError::Conflict(m) if m.contains("already delivered")),
        "{again}"
    );

    let publish = d.claim("demo").await.expect("publish is enqueued");
    let parents: Vec<(&str, &str)> = publish
        .exec()
        .parents
        .iter()
        .map(|(n, r)| (&**n, r.get()))
        .collect();
    assert_eq!(parents, [("approve", PAYLOAD)], "the payload is its result");
    d.succeed(&publish, "{}").await;
    let detail = d.detail(id).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(
        step(&detail, "approve").results.as_ref().map(|r| r.get()),
        Some(PAYLOAD)
    );
    let late = signal(&*store, id, "other").await.unwrap_err();
    assert!(
        matches!(&late, StoreError::Conflict(m) if m.contains("is complete")),
        "{late}"
    );
    let missing = signal(&*store, TaskId::new(), "approval")
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
}

pub async fn a_signal_delivered_before_the_wait_is_kept_for_it<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let id = d.create(&approval("1h"), "{}").await;
    let early = signal(&*store, id, "approval").await.unwrap();
    assert!(early.completed.is_empty(), "no step waits yet");
    assert_eq!(early.task_state, TaskState::Pending);
    d.start_tasks().await;
    assert_eq!(d.run_queue("demo").await, ["draft", "publish"]);
    let detail = d.detail(id).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(
        step(&detail, "approve").results.as_ref().map(|r| r.get()),
        Some(PAYLOAD)
    );
    let approve = step(&detail, "approve").id;
    let trail = store.transition_list(id).await.unwrap();
    let moves: Vec<(Option<&str>, &str, &str)> = trail
        .iter()
        .filter(|t| t.step_id == Some(approve))
        .map(|t| {
            (
                t.from_state.as_deref(),
                t.to_state.as_str(),
                t.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [(
            Some("pending"),
            "complete",
            "signal `approval` was delivered before the wait began"
        )]
    );
    assert_eq!(task_queue_depth(&*store).await, 0, "no timeout was set");
}

pub async fn a_wait_times_out_and_an_operator_retry_waits_again<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let id = d.create(&approval("1s"), "{}").await;
    d.start_tasks().await;
    d.run_queue("demo").await;
    let approve = step(&d.detail(id).await, "approve").id;
    let expired = read_until(&d, async || false).await;
    assert_eq!(
        expired,
        [WaitExpired {
            task_id: id,
            step_id: approve,
            task_state: TaskState::Error,
        }]
    );
    let detail = d.detail(id).await;
    assert_eq!(detail.task.state, TaskState::Error);
    assert_eq!(state(&detail, "approve"), StepState::Error);
    assert_eq!(
        step(&detail, "approve").error.as_deref(),
        Some("no signal `approval` arrived within 1s")
    );
    assert_eq!(state(&detail, "publish"), StepState::Pending);
    let refused = signal(&*store, id, "approval").await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");

    assert_eq!(store.task_retry(id).await.unwrap(), 1);
    let detail = d.detail(id).await;
    assert_eq!(detail.task.state, TaskState::InProgress);
    assert_eq!(state(&detail, "approve"), StepState::Waiting);
    assert_eq!(step(&detail, "approve").error, None);
    assert_eq!(task_queue_depth(&*store).await, 1, "a fresh timeout");
    assert_eq!(
        signal(&*store, id, "approval").await.unwrap().completed,
        [approve]
    );
    assert_eq!(d.run_queue("demo").await, ["publish"]);
    assert_eq!(d.detail(id).await.task.state, TaskState::Complete);
    // The fresh timeout, read when due, finds the wait over and changes nothing.
    let expired = read_until(&d, async || task_queue_depth(&*store).await == 0).await;
    assert!(expired.is_empty(), "{expired:?}");
    assert_eq!(d.detail(id).await.task.state, TaskState::Complete);
}

/// Two waits of a task whose timeouts are read in one batch: the task's final state is
/// reported once, with the last of them, so the engine ends it once (one event, one
/// count, one task span).
pub async fn waits_that_time_out_together_end_their_task_once<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let two = template(
        "namespace: demo\nname: two_waits\nversion: 1.0.0\nsteps:\n  \
         - {name: a, wait_for: {signal: one, timeout: 1s}}\n  \
         - {name: b, wait_for: {signal: two, timeout: 1s}}\n",
    );
    let id = d.create(&two, "{}").await;
    d.start_tasks().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let expired = d.start_batch().await.expired;
    let states: Vec<TaskState> = expired.iter().map(|e| e.task_state).collect();
    assert_eq!(
        states,
        [TaskState::InProgress, TaskState::Error],
        "{expired:?}"
    );
    assert_eq!(d.detail(id).await.task.state, TaskState::Error);
}

pub async fn a_cancel_or_an_operator_ends_a_wait<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = approval("1s");
    let cancelled = d.create(&t, "{}").await;
    let resolved = d.create(&t, "{}").await;
    d.start_tasks().await;
    assert_eq!(d.run_queue("demo").await, ["draft", "draft"]);

    store.task_cancel(cancelled, "user").await.unwrap();
    let detail = d.detail(cancelled).await;
    assert_eq!(state(&detail, "approve"), StepState::Cancelled);
    assert!(matches!(
        signal(&*store, cancelled, "approval").await,
        Err(StoreError::Conflict(_))
    ));

    let approve = step(&d.detail(resolved).await, "approve").id;
    let by_hand = raw(r#"{"approved_by":"ops"}"#);
    let r = store.step_resolve(approve, &by_hand).await.unwrap();
    assert_eq!(r.task_state, TaskState::InProgress);
    assert!(!r.resumed, "the task was not in error");
    assert_eq!(d.run_queue("demo").await, ["publish"]);
    let detail = d.detail(resolved).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(state(&detail, "approve"), StepState::ResolvedManually);

    // Both timeouts come due and find nothing waiting.
    let expired = read_until(&d, async || task_queue_depth(&*store).await == 0).await;
    assert!(expired.is_empty(), "{expired:?}");
    assert_eq!(d.detail(cancelled).await.task.state, TaskState::Cancelled);
}

/// The engine end to end: the approval example waits without a worker, a signal moves
/// it on, and events and metrics say what happened.
pub async fn an_approval_waits_for_its_signal_then_completes<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 2, |_| {});
    let running = engine.start();
    let mut events = engine.events().subscribe();
    let task_id = engine
        .submit(&example("approval.yaml"), r#"{"amount": 120}"#, None)
        .await
        .unwrap()
        .task_id;
    let end = Instant::now() + Duration::from_secs(20);
    let approve = loop {
        let detail = engine.task(task_id).await.unwrap();
        if state(&detail, "approve") == StepState::Waiting {
            break step(&detail, "approve").id;
        }
        assert!(Instant::now() < end, "the wait never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let signalled = engine
        .signal(task_id, "approval", r#"{"approved_by": "ana"}"#)
        .await
        .unwrap();
    assert_eq!(signalled.completed, [approve]);
    let refused = engine.signal(task_id, "no good", "{}").await.unwrap_err();
    assert!(
        refused.to_string().contains("signal name `no good`"),
        "{refused}"
    );
    let done = engine.wait(task_id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(done.task.state, TaskState::Complete);
    assert_eq!(
        step(&done, "approve").results.as_ref().map(|r| r.get()),
        Some(r#"{"approved_by":"ana"}"#)
    );
    let mut kinds = Vec::new();
    while let Some(Ok(e)) = events.try_recv() {
        kinds.push((e.kind, e.step_id));
    }
    // Published after its commit, the wait's completion may follow the events of the
    // steps it let run: both are there, in no set order.
    use tasker_core::event::EventKind::{StepCompleted, TaskCompleted};
    assert!(kinds.contains(&(StepCompleted, Some(approve))), "{kinds:?}");
    assert!(kinds.contains(&(TaskCompleted, None)), "{kinds:?}");
    let mut metrics = String::new();
    engine.metrics().render(&mut metrics);
    assert!(
        metrics.contains("tasker_steps_finished_total{state=\"complete\"} 3\n"),
        "two handlers and the wait: {metrics}"
    );
}
