//! The store's contract, driven by hand.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::id::TaskId;
use tasker_core::message::{TASK_QUEUE, TraceParent};
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use crate::support::*;

const TWO_STEPS: &str = "\
namespace: conf
name: two_steps
version: 1.0.0
steps:
  - {name: first, handler: noop, config: {k: 1}}
  - {name: second, handler: noop, depends_on: [first]}
";

const DIAMOND: &str = "\
namespace: conf
name: diamond
version: 1.0.0
steps:
  - {name: a, handler: noop}
  - {name: b, handler: noop, depends_on: [a]}
  - {name: c, handler: noop, depends_on: [a]}
  - {name: d, handler: noop, depends_on: [b, c]}
  - {name: e, handler: noop, depends_on: [a]}
";

pub async fn template_registration_is_immutable<S: Store>(store: Arc<S>) {
    let t = template(TWO_STEPS);
    assert_eq!(
        store.template_register(&t).await.unwrap(),
        Registration::Registered
    );
    assert_eq!(
        store.template_register(&t).await.unwrap(),
        Registration::Unchanged
    );
    let changed = template(&TWO_STEPS.replace("k: 1", "k: 2"));
    let err = store.template_register(&changed).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("conf/two_steps@1.0.0"), "{err}");
    let next_version = template(&TWO_STEPS.replace("1.0.0", "1.1.0").replace("k: 1", "k: 2"));
    assert_eq!(
        store.template_register(&next_version).await.unwrap(),
        Registration::Registered
    );
}

pub async fn idempotency_key_returns_the_same_task<S: Store>(store: Arc<S>) {
    let t = template(TWO_STEPS);
    let ctx = raw("{}");
    let params = TaskCreateParams {
        template: &t,
        context: &ctx,
        idempotency_key: Some("order-7"),
        priority: None,
        traceparent: None,
    };
    let first = store.task_create(params).await.unwrap();
    let again = store.task_create(params).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.task_id, again.task_id);
    let other = store
        .task_create(TaskCreateParams {
            idempotency_key: Some("order-8"),
            ..params
        })
        .await
        .unwrap();
    assert_ne!(other.task_id, first.task_id);
    let requests = store
        .queue_read(TASK_QUEUE, Duration::from_secs(30), 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(requests.len(), 2, "one start request per created task");
}

pub async fn a_task_runs_through_the_store<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(TWO_STEPS);
    let task_id = d.create(&t, r#"{"order": 1}"#).await;
    assert_eq!(d.detail(task_id).await.task.state, TaskState::Pending);
    assert!(
        store
            .task_list_unfinished()
            .await
            .unwrap()
            .contains(&task_id)
    );

    assert_eq!(d.start_tasks().await, 1, "only the root is enqueued");
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::InProgress);
    assert_eq!(step(&detail, "first").state, StepState::Enqueued);
    assert_eq!(step(&detail, "second").state, StepState::Pending);
    assert_eq!(step(&detail, "second").depends_on, ["first"]);

    let c = d
        .claim("conf")
        .await
        .expect("first is on the namespace queue");
    let exec = c.exec();
    assert_eq!((&*exec.step_name, exec.attempt), ("first", 1));
    assert_eq!(exec.context.get(), r#"{"order": 1}"#);
    assert_eq!(exec.config.get(), r#"{"k":1}"#);
    assert_eq!((&*exec.namespace, &*exec.task_name), ("conf", "two_steps"));
    assert!(exec.parents.is_empty());
    assert_eq!(
        step(&d.detail(task_id).await, "first").state,
        StepState::InProgress
    );

    let finished = d.succeed(&c, r#"{"ok":true}"#).await;
    assert_eq!(
        finished,
        StepFinished::Applied {
            step_state: StepState::Complete,
            enqueued: 1,
            skipped: 0,
            task_state: TaskState::InProgress
        }
    );
    assert_eq!(d.run_queue("conf").await, ["second"]);
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert!(
        detail
            .steps
            .iter()
            .all(|s| s.state == StepState::Complete && s.attempts == 1)
    );
    assert_eq!(
        step(&detail, "first").results.as_ref().unwrap().get(),
        r#"{"ok":true}"#
    );
    assert!(
        !store
            .task_list_unfinished()
            .await
            .unwrap()
            .contains(&task_id)
    );
    assert!(
        store
            .queue_read("conf", Duration::from_secs(1), 10)
            .await
            .unwrap()
            .messages
            .is_empty(),
        "messages deleted"
    );

    let trail: Vec<(bool, Option<String>, String)> = store
        .transition_list(task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.step_id.is_some(), t.from_state, t.to_state))
        .collect();
    let s = |x: &str| Some(x.to_owned());
    let expected = [
        (false, None, "pending".to_owned()),
        (false, s("pending"), "in_progress".into()),
        (true, s("pending"), "enqueued".into()),
        (true, s("enqueued"), "in_progress".into()),
        (true, s("in_progress"), "complete".into()),
        (true, s("pending"), "enqueued".into()),
        (true, s("enqueued"), "in_progress".into()),
        (true, s("in_progress"), "complete".into()),
        (false, s("in_progress"), "complete".into()),
    ];
    assert_eq!(trail, expected);
}

pub async fn parents_results_reach_children<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(DIAMOND), "{}").await;
    d.start_tasks().await;
    let a = d.claim("conf").await.unwrap();
    assert_eq!(
        d.succeed(&a, r#"{"from":"a"}"#).await,
        StepFinished::Applied {
            step_state: StepState::Complete,
            enqueued: 3,
            skipped: 0,
            task_state: TaskState::InProgress,
        }
    );
    let mut d_exec = None;
    while let Some(c) = d.claim("conf").await {
        let name = c.exec().step_name.clone();
        if &*name == "d" {
            d_exec = Some(c.exec().clone());
        }
        d.succeed(&c, &format!(r#"{{"from":"{name}"}}"#)).await;
    }
    let exec = d_exec.expect("d ran");
    let parents: Vec<(&str, &str)> = exec.parents.iter().map(|(n, r)| (&**n, r.get())).collect();
    assert_eq!(
        parents,
        [("b", r#"{"from":"b"}"#), ("c", r#"{"from":"c"}"#)]
    );
    assert_eq!(d.detail(task_id).await.task.state, TaskState::Complete);
}

/// A step's ancestors are read up its edges, in template order, and no further: a root
/// has none, and a step that is no ancestor is not among them.
pub async fn ancestors_are_read_up_the_edges<S: Store>(store: Arc<S>) {
    const ANCESTRY: &str = "namespace: conf\nname: ancestry\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n  - {name: e, handler: noop}\n  - {name: b, handler: noop, depends_on: [a]}\n  - {name: c, handler: noop, depends_on: [a]}\n  - {name: d, handler: noop, depends_on: [b, c]}\n";
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(ANCESTRY), "{}").await;
    d.start_tasks().await;
    while let Some(c) = d.claim("conf").await {
        let name = c.exec().step_name.clone();
        d.succeed(&c, &format!(r#"{{"from":"{name}"}}"#)).await;
    }
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let ancestors = |name: &str| {
        let id = step(&detail, name).id;
        let store = store.clone();
        async move {
            store
                .step_ancestors(id)
                .await
                .unwrap()
                .into_iter()
                .map(|(n, r)| format!("{n}={}", r.get()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ancestors("d").await,
        [
            r#"a={"from":"a"}"#,
            r#"b={"from":"b"}"#,
            r#"c={"from":"c"}"#
        ]
    );
    assert_eq!(ancestors("b").await, [r#"a={"from":"a"}"#]);
    assert!(ancestors("a").await.is_empty());
    assert!(ancestors("e").await.is_empty());
}

/// A read that fills its batch does not search the queue further; one that does not
/// says when the next message shows.
pub async fn only_a_partial_read_looks_for_the_next_message<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    d.create(&template(TWO_STEPS), "{}").await;
    d.create(&template(TWO_STEPS), "{}").await;
    d.start_tasks().await;
    let full = store
        .queue_read("conf", Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(full.messages.len(), 1);
    assert_eq!(full.next_visible, None, "a full read looks no further");
    let partial = store
        .queue_read("conf", Duration::from_secs(30), 5)
        .await
        .unwrap();
    assert_eq!(partial.messages.len(), 1, "the other root");
    let shows = partial.next_visible.expect("the first message, hidden");
    assert!(shows > tasker_core::Timestamp::now());
}

pub async fn queue_visibility_and_read_count<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    d.create(&template(TWO_STEPS), "{}").await;
    d.start_tasks().await;
    let queues = store.queue_list().await.unwrap();
    assert_eq!(queues, ["conf"], "the task queue is internal");
    // Visibility timeouts are whole seconds on PostgreSQL (pgmq's read).
    let first = store
        .queue_read("conf", Duration::from_secs(1), 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].read_ct, 1);
    let hidden = store
        .queue_read("conf", Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert!(hidden.messages.is_empty(), "hidden while read");
    let shows = hidden.next_visible.expect("a hidden message");
    assert!(shows > tasker_core::Timestamp::now());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = store
        .queue_read("conf", Duration::from_secs(30), 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(again.len(), 1, "visible again after its visibility timeout");
    assert_eq!((again[0].msg_id, again[0].read_ct), (first[0].msg_id, 2));
    assert_eq!(again[0].body, first[0].body);
    let nothing = store
        .queue_read("nothing_here", Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert_eq!(nothing, QueueBatch::default());
}

const RETRYING: &str = "\
namespace: conf
name: retrying
version: 1.0.0
steps:
  - name: only
    handler: flaky
    retry: {max_attempts: 3, backoff: {initial: 10ms, max: 10ms}}
";

pub async fn retry_is_delayed_and_counts_attempts<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(RETRYING), "{}").await;
    d.start_tasks().await;
    let c = d.claim("conf").await.unwrap();
    let finished = d
        .finish(
            &c,
            StepOutcome::Retry {
                error: "boom",
                delay: Duration::from_millis(1000),
            },
        )
        .await;
    assert!(matches!(
        finished,
        StepFinished::Applied {
            step_state: StepState::WaitingForRetry,
            ..
        }
    ));
    let s = step(&d.detail(task_id).await, "only").clone();
    assert_eq!(
        (s.state, s.attempts, s.error.as_deref()),
        (StepState::WaitingForRetry, 1, Some("boom"))
    );
    let delayed = store
        .queue_read("conf", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(delayed.messages.is_empty(), "the retry is delayed");
    let shows = delayed.next_visible.expect("delayed message");
    assert!(shows > tasker_core::Timestamp::now().after(Duration::from_millis(500)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = d.claim("conf").await.expect("visible after the delay");
    assert_eq!(c.exec().attempt, 2);
    d.succeed(&c, "{}").await;
    let detail = d.detail(task_id).await;
    assert_eq!(
        (detail.task.state, detail.steps[0].attempts),
        (TaskState::Complete, 2)
    );
    let to: Vec<String> = store
        .transition_list(task_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.step_id.is_some())
        .map(|t| t.to_state)
        .collect();
    assert_eq!(
        to,
        [
            "enqueued",
            "in_progress",
            "waiting_for_retry",
            "enqueued",
            "in_progress",
            "complete"
        ]
    );
}

const SHORT_TIMEOUT: &str = "\
namespace: conf
name: short
version: 1.0.0
steps:
  - name: only
    handler: sleep
    timeout: 300ms
    retry: {max_attempts: 2}
";

pub async fn a_lost_worker_is_reclaimed_then_dead_lettered<S: Store>(store: Arc<S>) {
    let mut d = Driver::new(store.clone());
    d.grace = Duration::from_millis(50);
    let task_id = d.create(&template(SHORT_TIMEOUT), "{}").await;
    d.start_tasks().await;
    let first = d.claim("conf").await.unwrap();
    assert_eq!(first.exec().attempt, 1);
    // The worker "dies": nothing finishes the step; its message shows again after
    // timeout + grace.
    assert!(d.claim("conf").await.is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = d.claim("conf").await.expect("reclaimed");
    assert_eq!((second.read_ct, second.exec().attempt), (2, 2));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = d.claim("conf").await.expect("redelivered again");
    assert!(
        matches!(third.start, StepStart::DeadLettered { attempts: 2, .. }),
        "{:?}",
        third.start
    );
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Error);
    let s = &detail.steps[0];
    assert_eq!(s.state, StepState::Error);
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("worker lost during attempt 2 of 2"),
        "{:?}",
        s.error
    );
    let dead = store.queue_dead_letters("conf").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].msg_id, dead[0].read_ct), (first.msg_id, 3));
    assert!(dead[0].reason.contains("dead letters"));
    assert!(d.claim("conf").await.is_none());
}

pub async fn a_stale_finish_changes_nothing<S: Store>(store: Arc<S>) {
    let mut d = Driver::new(store.clone());
    d.grace = Duration::from_millis(20);
    let task_id = d
        .create(
            &template(
                SHORT_TIMEOUT
                    .replace("max_attempts: 2", "max_attempts: 5")
                    .as_str(),
            ),
            "{}",
        )
        .await;
    d.start_tasks().await;
    let slow = d.claim("conf").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reclaimed = d.claim("conf").await.unwrap();
    assert_eq!(reclaimed.exec().attempt, 2);
    let results = raw("{}");
    let stale = d
        .finish(&slow, StepOutcome::Succeeded { results: &results })
        .await;
    assert_eq!(
        stale,
        StepFinished::Stale {
            state: StepState::InProgress
        }
    );
    assert_eq!(
        step(&d.detail(task_id).await, "only").state,
        StepState::InProgress
    );
    d.succeed(&reclaimed, "{}").await;
    assert_eq!(d.detail(task_id).await.task.state, TaskState::Complete);
    assert_eq!(
        completions(&*store, task_id).await.values().sum::<usize>(),
        1
    );
}

pub async fn permanent_failure_blocks_descendants_and_resolve_unblocks<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(DIAMOND), "{}").await;
    d.start_tasks().await;
    let a = d.claim("conf").await.unwrap();
    d.succeed(&a, "{}").await;
    let mut b_id = None;
    while let Some(c) = d.claim("conf").await {
        if &*c.exec().step_name == "b" {
            b_id = Some(c.step_id);
            d.finish(
                &c,
                StepOutcome::Failed {
                    error: "card declined",
                },
            )
            .await;
        } else {
            d.succeed(&c, "{}").await;
        }
    }
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Error);
    assert_eq!(step(&detail, "b").state, StepState::Error);
    assert_eq!(step(&detail, "b").error.as_deref(), Some("card declined"));
    assert_eq!(step(&detail, "c").state, StepState::Complete);
    assert_eq!(step(&detail, "e").state, StepState::Complete);
    assert_eq!(step(&detail, "d").state, StepState::Pending, "blocked by b");

    let resolved = store
        .step_resolve(b_id.unwrap(), &raw(r#"{"manual":true}"#))
        .await
        .unwrap();
    assert_eq!(
        resolved,
        StepResolved {
            task_id,
            task_state: TaskState::InProgress,
            resumed: true,
            skipped: 0,
        }
    );
    assert_eq!(d.run_queue("conf").await, ["d"]);
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(step(&detail, "b").state, StepState::ResolvedManually);
}

pub async fn operator_retry_reruns_failed_steps<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(TWO_STEPS), "{}").await;
    d.start_tasks().await;
    let c = d.claim("conf").await.unwrap();
    d.finish(&c, StepOutcome::Failed { error: "down" }).await;
    assert_eq!(d.detail(task_id).await.task.state, TaskState::Error);
    assert_eq!(store.task_retry(task_id).await.unwrap(), 1);
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::InProgress);
    assert_eq!(
        (detail.steps[0].state, detail.steps[0].attempts),
        (StepState::Enqueued, 0)
    );
    let again = d.claim("conf").await.unwrap();
    assert_eq!(again.exec().attempt, 1, "fresh attempts");
    d.succeed(&again, "{}").await;
    d.run_queue("conf").await;
    assert_eq!(d.detail(task_id).await.task.state, TaskState::Complete);
    let err = store.task_retry(task_id).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("only a task in error can be retried"),
        "{err}"
    );
}

pub async fn cancel_stops_every_unfinished_step<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(DIAMOND), "{}").await;
    d.start_tasks().await;
    let a = d.claim("conf").await.unwrap();
    d.succeed(&a, "{}").await;
    let running = d.claim("conf").await.unwrap();
    assert_eq!(
        store.task_cancel(task_id, "customer asked").await.unwrap(),
        TaskState::Cancelled
    );
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Cancelled);
    assert_eq!(step(&detail, "a").state, StepState::Complete);
    for name in ["b", "c", "d", "e"] {
        assert_eq!(step(&detail, name).state, StepState::Cancelled, "{name}");
    }
    let stale = d.succeed(&running, "{}").await;
    assert_eq!(
        stale,
        StepFinished::Stale {
            state: StepState::Cancelled
        }
    );
    // The messages of cancelled steps are dropped when read.
    while let Some(c) = d.claim("conf").await {
        assert!(matches!(
            c.start,
            StepStart::Skipped {
                state: StepState::Cancelled
            }
        ));
    }
    assert!(
        store
            .queue_read("conf", Duration::ZERO, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    let reasons: Vec<String> = store
        .transition_list(task_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.to_state == "cancelled")
        .map(|t| t.reason)
        .collect();
    assert_eq!(reasons.len(), 5);
    assert!(reasons.iter().all(|r| r == "customer asked"));
    assert!(
        store.task_cancel(task_id, "again").await.is_err(),
        "a cancelled task stays cancelled"
    );
}

pub async fn illegal_transitions_are_refused<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(TWO_STEPS), "{}").await;
    d.start_tasks().await;
    let detail = d.detail(task_id).await;
    let err = store
        .step_resolve(detail.steps[0].id, &raw("{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "illegal step transition: `resolve` is not allowed from `enqueued`"
    );
    assert_eq!(
        step(&d.detail(task_id).await, "first").state,
        StepState::Enqueued,
        "nothing applied"
    );
    let missing = store
        .task_get(tasker_core::TaskId::new())
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)));
}

pub async fn unparseable_messages_are_dead_lettered<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    d.create(&template(TWO_STEPS), "{}").await;
    d.start_tasks().await;
    let m = store
        .queue_read("conf", Duration::from_secs(30), 1)
        .await
        .unwrap()
        .messages
        .remove(0);
    store
        .queue_dead_letter("conf", m.msg_id, "unparseable: test")
        .await
        .unwrap();
    assert!(
        store
            .queue_read("conf", Duration::ZERO, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    let dead = store.queue_dead_letters("conf").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(store.queue_dead_letter_queues().await.unwrap(), ["conf"]);
    assert_eq!(
        (
            dead[0].msg_id,
            dead[0].body.as_str(),
            dead[0].reason.as_str()
        ),
        (m.msg_id, m.body.as_str(), "unparseable: test")
    );
}

pub async fn task_listing_filters_and_pages<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(TWO_STEPS);
    let other = template(&TWO_STEPS.replace("namespace: conf", "namespace: other"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(d.create(&t, "{}").await);
    }
    ids.push(d.create(&other, "{}").await);
    let all = store
        .task_list(TaskListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    let page = store
        .task_list(TaskListParams {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let next = store
        .task_list(TaskListParams {
            limit: 2,
            before: Some(page[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|t| t.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    let filtered = |filter| {
        let store = &store;
        async move {
            let listed = store
                .task_list(TaskListParams {
                    limit: 10,
                    filter,
                    ..Default::default()
                })
                .await
                .unwrap();
            listed.iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    let ns = filtered(TaskFilter {
        namespace: Some("other"),
        ..Default::default()
    })
    .await;
    assert_eq!(ns.len(), 1);
    d.start_tasks().await;
    let in_state = |state| {
        store.task_list(TaskListParams {
            limit: 10,
            state: Some(state),
            ..Default::default()
        })
    };
    assert_eq!(in_state(TaskState::InProgress).await.unwrap().len(), 4);
    assert!(in_state(TaskState::Pending).await.unwrap().is_empty());
    let named = filtered(TaskFilter {
        name: Some("two_steps"),
        namespace: Some("other"),
        ..Default::default()
    })
    .await;
    assert_eq!(named, [ids[3]]);
    let none = filtered(TaskFilter {
        name: Some("unknown"),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
    // A created range holds the tasks created at or after its start and before its end.
    let created = all.iter().rev().map(|t| t.created_at).collect::<Vec<_>>();
    let range = TaskFilter {
        created_from: Some(created[1]),
        created_to: Some(created[3]),
        ..Default::default()
    };
    let in_range = filtered(range).await;
    let expected: Vec<_> = (0..4)
        .filter(|&i| created[i] >= created[1] && created[i] < created[3])
        .map(|i| ids[i])
        .rev()
        .collect();
    assert_eq!(in_range, expected);
    assert!(expected.contains(&ids[1]) && !expected.contains(&ids[3]));
    assert_eq!(
        store.task_counts(TaskFilter::default()).await.unwrap(),
        [(TaskState::InProgress, 4)]
    );
    store.task_cancel(ids[0], "not needed").await.unwrap();
    let template = |name| TaskFilter {
        namespace: Some("conf"),
        name: Some(name),
        ..Default::default()
    };
    assert_eq!(
        store.task_counts(template("two_steps")).await.unwrap(),
        [(TaskState::Cancelled, 1), (TaskState::InProgress, 2)]
    );
    assert!(
        store
            .task_counts(template("unknown"))
            .await
            .unwrap()
            .is_empty()
    );
    // Counts cover the created range as the listing does.
    let counted: u64 = store
        .task_counts(range)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(counted, expected.len() as u64);
}

pub async fn parents_finishing_together_enqueue_their_child_once<S: Store>(store: Arc<S>) {
    let d = Arc::new(Driver::new(store.clone()));
    for round in 0..30 {
        let task_id = d.create(&template(DIAMOND), "{}").await;
        d.start_tasks().await;
        let a = d.claim("conf").await.unwrap();
        d.succeed(&a, "{}").await;
        let mut claimed = Vec::new();
        while let Some(c) = d.claim("conf").await {
            claimed.push(c);
        }
        let (b, c): (Vec<_>, Vec<_>) = claimed
            .into_iter()
            .filter(|c| &*c.exec().step_name != "e")
            .partition(|c| &*c.exec().step_name == "b");
        let (b, c) = (b.into_iter().next().unwrap(), c.into_iter().next().unwrap());
        // Both parents of d finish at the same instant, on two threads.
        let (d1, d2) = (d.clone(), d.clone());
        let (rb, rc) = tokio::join!(
            tokio::spawn(async move { d1.succeed(&b, "{}").await }),
            tokio::spawn(async move { d2.succeed(&c, "{}").await })
        );
        let enqueued = |r: StepFinished| match r {
            StepFinished::Applied { enqueued, .. } => enqueued,
            stale => panic!("{stale:?}"),
        };
        let total = enqueued(rb.unwrap()) + enqueued(rc.unwrap());
        assert_eq!(total, 1, "round {round}: d enqueued {total} times");
        let detail = d.detail(task_id).await;
        let d_id = step(&detail, "d").id;
        let to_enqueued = store
            .transition_list(task_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.step_id == Some(d_id) && t.to_state == "enqueued")
            .count();
        assert_eq!(to_enqueued, 1, "round {round}");
        assert_eq!(
            d.run_queue("conf").await,
            ["d"],
            "round {round}: one message for d"
        );
    }
}

pub async fn templates_are_listed_with_their_definitions<S: Store>(store: Arc<S>) {
    let all = |after| TemplateListParams {
        after,
        limit: 10,
        ..TemplateListParams::default()
    };
    assert!(store.template_list(all(None)).await.unwrap().is_empty());
    let (two, diamond) = (template(TWO_STEPS), template(DIAMOND));
    let newer = template(&TWO_STEPS.replace("version: 1.0.0", "version: 1.1.0"));
    for t in [&two, &diamond, &newer] {
        store.template_register(t).await.unwrap();
    }
    let keys = |listed: &[TemplateRecord]| {
        listed
            .iter()
            .map(|t| format!("{}/{}@{}", t.namespace, t.name, t.version))
            .collect::<Vec<_>>()
    };
    let listed = store.template_list(all(None)).await.unwrap();
    assert_eq!(
        keys(&listed),
        [
            "conf/diamond@1.0.0",
            "conf/two_steps@1.0.0",
            "conf/two_steps@1.1.0"
        ]
    );
    assert_eq!(listed[1].definition, two.canonical_json());
    // A stored definition is a template again.
    let again = tasker_core::template::parse_template(&listed[1].definition, "stored").unwrap();
    assert_eq!(again.canonical_json(), two.canonical_json());
    // Pages resume after their cursor; a name selects that template's versions.
    let page = |after, limit| TemplateListParams {
        after,
        limit,
        ..TemplateListParams::default()
    };
    let first = store.template_list(page(None, 2)).await.unwrap();
    assert_eq!(keys(&first), ["conf/diamond@1.0.0", "conf/two_steps@1.0.0"]);
    let rest = store
        .template_list(page(Some(("conf", "two_steps", "1.0.0")), 2))
        .await
        .unwrap();
    assert_eq!(keys(&rest), ["conf/two_steps@1.1.0"]);
    let versions = store
        .template_list(TemplateListParams {
            namespace: Some("conf"),
            name: Some("two_steps"),
            after: None,
            limit: u32::MAX,
        })
        .await
        .unwrap();
    assert_eq!(
        keys(&versions),
        ["conf/two_steps@1.0.0", "conf/two_steps@1.1.0"]
    );
    let elsewhere = TemplateListParams {
        namespace: Some("other"),
        ..all(None)
    };
    assert!(store.template_list(elsewhere).await.unwrap().is_empty());
}

pub async fn queue_depths_count_messages<S: Store>(store: Arc<S>) {
    store.ping().await.unwrap();
    let t = template(TWO_STEPS);
    let ctx = raw("{}");
    for key in ["a", "b"] {
        store
            .task_create(TaskCreateParams {
                template: &t,
                context: &ctx,
                idempotency_key: Some(key),
                priority: None,
                traceparent: None,
            })
            .await
            .unwrap();
    }
    let depth = |all: Vec<QueueDepth>, queue: &str| {
        all.into_iter()
            .find(|d| d.queue == queue)
            .map_or(0, |d| d.messages)
    };
    assert_eq!(depth(store.queue_depths().await.unwrap(), TASK_QUEUE), 2);
    Driver::new(store.clone()).start_tasks().await;
    let all = store.queue_depths().await.unwrap();
    assert_eq!(depth(all.clone(), TASK_QUEUE), 0);
    assert_eq!(
        depth(all, "conf"),
        2,
        "each task's first step waits in its queue"
    );
}

/// The success of the attempt a claim of queue `conf` started, with `results`.
fn succeeded<'a>(c: &'a Claim, results: &'a RawValue) -> StepFinishParams<'a> {
    let StepStart::Run(exec) = &c.start else {
        panic!("not claimed: {:?}", c.start)
    };
    StepFinishParams {
        queue: "conf",
        msg_id: c.msg_id,
        task_id: exec.task_id,
        step_id: exec.step_id,
        attempt: exec.attempt,
        outcome: StepOutcome::Succeeded { results },
    }
}

/// Whether a claim of queue `conf` finds nothing.
async fn nothing_to_claim<S: Store>(store: &S, grace: Duration) -> bool {
    store
        .step_claim(conf(10, grace))
        .await
        .unwrap()
        .claims
        .is_empty()
}

/// Every claimed step of `claimed` succeeds with `{}`, in one batch.
async fn succeed_all<S: Store>(store: &S, claims: &[Claim]) -> Vec<StepFinished> {
    let results = raw("{}");
    let params: Vec<StepFinishParams<'_>> = claims.iter().map(|c| succeeded(c, &results)).collect();
    store
        .step_finish_batch(&params, &[])
        .await
        .unwrap()
        .finished
}

fn conf(limit: u32, grace: Duration) -> ClaimParams<'static> {
    ClaimParams {
        queue: "conf",
        limit,
        visibility: Duration::from_secs(30),
        grace,
    }
}

fn enqueued(finished: &[StepFinished]) -> usize {
    finished
        .iter()
        .map(|f| match f {
            StepFinished::Applied { enqueued, .. } => *enqueued,
            StepFinished::Stale { state } => panic!("stale: {state}"),
        })
        .sum()
}

/// Tasks created together share one transaction; a key repeated in the batch finds
/// the task its first use created.
pub async fn tasks_created_together_share_a_transaction<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(DIAMOND);
    store.template_register(&t).await.unwrap();
    let context = raw("{}");
    let params = |key| TaskCreateParams {
        template: &t,
        context: &context,
        idempotency_key: key,
        priority: None,
        traceparent: None,
    };
    let before = store.write_transactions();
    let created = store
        .task_create_batch(&[params(Some("k")), params(None), params(Some("k"))])
        .await
        .unwrap();
    assert_eq!(store.write_transactions() - before, 1, "one commit");
    assert_eq!(created.len(), 3);
    assert!(created[0].created && created[1].created);
    assert_ne!(created[0].task_id, created[1].task_id);
    assert_eq!(
        (created[2].task_id, created[2].created),
        (created[0].task_id, false),
        "the repeated key finds the first task"
    );
    assert_eq!(d.start_tasks().await, 2, "one root each for the two tasks");
}

pub async fn batches_start_claim_and_finish_many_at_once<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(DIAMOND);
    for _ in 0..3 {
        d.create(&t, "{}").await;
    }
    let started = store
        .task_start_batch(10, Duration::from_secs(30), None)
        .await
        .unwrap();
    assert_eq!(started.tasks.len(), 3);
    assert!(
        started
            .tasks
            .iter()
            .all(|t| t.started.started && t.started.enqueued == 1)
    );
    let claim = |limit| store.step_claim(conf(limit, d.grace));

    let roots = claim(10).await.unwrap().claims;
    assert_eq!(roots.len(), 3);
    assert_eq!(
        enqueued(&succeed_all(&*store, &roots).await),
        9,
        "b, c and e of each"
    );

    // b and c of each task finish in one transaction: d is enqueued once per task.
    let middle = claim(10).await.unwrap().claims;
    assert_eq!(middle.len(), 9);
    assert_eq!(enqueued(&succeed_all(&*store, &middle).await), 3);

    let joins = claim(10).await.unwrap().claims;
    assert_eq!(joins.len(), 3);
    for finished in succeed_all(&*store, &joins).await {
        assert!(matches!(
            finished,
            StepFinished::Applied {
                task_state: TaskState::Complete,
                ..
            }
        ));
    }
    assert!(claim(10).await.unwrap().claims.is_empty());
}

pub async fn a_failed_batch_changes_nothing<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let task_id = d.create(&template(TWO_STEPS), "{}").await;
    d.start_tasks().await;
    let claims = store.step_claim(conf(10, d.grace)).await.unwrap().claims;
    let results = raw("{\"v\": 1}");
    let good = succeeded(&claims[0], &results);
    assert_eq!(good.task_id, task_id);
    // A task created after the real one sorts after it: the good outcome is applied
    // first, then the batch fails, and neither may remain.
    let bogus = StepFinishParams {
        task_id: TaskId::new(),
        step_id: tasker_core::id::StepId::new(),
        ..good
    };
    let err = store
        .step_finish_batch(&[good, bogus], &[conf(10, d.grace)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let detail = d.detail(task_id).await;
    assert_eq!(detail.steps[0].state, StepState::InProgress);
    assert_eq!(detail.steps[1].state, StepState::Pending);
    assert!(
        nothing_to_claim(&*store, d.grace).await,
        "nothing was enqueued, nothing claimed"
    );
    assert!(matches!(
        store.step_finish(good).await.unwrap(),
        StepFinished::Applied { enqueued: 1, .. }
    ));
}

pub async fn finishing_claims_the_slots_it_frees<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(TWO_STEPS);
    let (one, two) = (d.create(&t, "{}").await, d.create(&t, "{}").await);
    d.start_tasks().await;
    let first = store.step_claim(conf(1, d.grace)).await.unwrap().claims;
    let results = raw("{\"v\": 1}");
    let done = succeeded(&first[0], &results);
    let batch = store
        .step_finish_batch(&[done], &[conf(3, d.grace)])
        .await
        .unwrap();
    assert!(matches!(
        batch.finished[..],
        [StepFinished::Applied { enqueued: 1, .. }]
    ));
    // The other task's first step, and the child the outcome enqueued a moment before.
    let claimed: Vec<(TaskId, String, u32)> = batch.claimed[0]
        .claims
        .iter()
        .map(|c| match &c.start {
            StepStart::Run(e) => (e.task_id, e.step_name.to_string(), e.attempt),
            other => panic!("{other:?}"),
        })
        .collect();
    let (first_task, other) = if done.task_id == one {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(
        claimed,
        [(other, "first".into(), 1), (first_task, "second".into(), 1)]
    );
    let second = d.detail(first_task).await;
    assert_eq!(second.steps[1].state, StepState::InProgress);
    assert!(
        nothing_to_claim(&*store, d.grace).await,
        "the claims hide their messages"
    );
}

pub async fn prune_removes_old_finished_tasks_in_batches<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(TWO_STEPS);
    let done = d.create(&t, "{}").await;
    d.start_tasks().await;
    d.run_queue("conf").await;
    let running = d.create(&t, "{}").await;
    d.start_tasks().await;
    // Cancelled while pending: its start request is still on the task queue.
    let cancelled = d.create(&t, "{}").await;
    store.task_cancel(cancelled, "not needed").await.unwrap();
    assert_eq!(d.detail(done).await.task.state, TaskState::Complete);

    let long_ago = tasker_core::time::Timestamp(1);
    assert_eq!(
        store.task_prune(long_ago, 10).await.unwrap(),
        Pruned::default()
    );

    let later = tasker_core::time::Timestamp::now().after(Duration::from_secs(1));
    let first = store.task_prune(later, 1).await.unwrap();
    assert_eq!(first.tasks, 1, "a batch is bounded");
    let second = store.task_prune(later, 1).await.unwrap();
    assert_eq!((first.steps + second.steps, second.tasks), (4, 1));
    assert_eq!(
        store.task_prune(later, 10).await.unwrap(),
        Pruned::default()
    );

    for gone in [done, cancelled] {
        let err = store.task_get(gone).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        assert!(store.transition_list(gone).await.unwrap().is_empty());
    }
    assert_eq!(d.detail(running).await.task.state, TaskState::InProgress);
    let depth = |queue: &str| {
        let queue = queue.to_owned();
        let store = store.clone();
        async move {
            store
                .queue_depths()
                .await
                .unwrap()
                .into_iter()
                .find(|q| q.queue == queue)
                .map_or(0, |q| q.messages)
        }
    };
    assert_eq!(
        depth(TASK_QUEUE).await,
        0,
        "the cancelled task's request is gone"
    );
    assert_eq!(depth("conf").await, 1, "the running task's message stays");
}

/// A paused queue's reads deliver nothing and wake nobody, other queues go on, and a
/// resumed queue delivers what waited.
pub async fn a_paused_queue_delivers_nothing_until_resumed<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let held = template(
        "namespace: conf\nname: held\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop, queue: held}\n",
    );
    let free = template(
        "namespace: conf\nname: free\nversion: 1.0.0\nsteps:\n  - {name: b, handler: noop, queue: free}\n",
    );
    assert!(store.queue_pause("held", true).await.unwrap());
    assert!(
        !store.queue_pause("held", true).await.unwrap(),
        "already paused"
    );
    assert_eq!(store.queue_paused().await.unwrap(), ["held"]);
    let waiting = d.create(&held, "{}").await;
    let other = d.create(&free, "{}").await;
    assert_eq!(d.start_tasks().await, 2);
    let read = store
        .queue_read("held", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(read.messages.is_empty(), "a paused queue delivers nothing");
    assert_eq!(read.next_visible, None, "and gives no time to wake at");
    assert!(d.claim_batch("held").await.is_empty());
    assert_eq!(d.run_queue("free").await, ["b"], "other queues go on");
    assert_eq!(d.detail(other).await.task.state, TaskState::Complete);
    let depths = store.queue_depths().await.unwrap();
    assert!(
        depths.iter().any(|q| q.queue == "held" && q.messages == 1),
        "the step waits in its queue: {depths:?}"
    );

    assert!(store.queue_pause("held", false).await.unwrap());
    assert!(
        !store.queue_pause("held", false).await.unwrap(),
        "not paused"
    );
    assert!(store.queue_paused().await.unwrap().is_empty());
    assert_eq!(d.run_queue("held").await, ["a"]);
    assert_eq!(d.detail(waiting).await.task.state, TaskState::Complete);
}

/// A paused template's new tasks stay pending, with no request left to poll for;
/// resuming it starts them. Other templates' tasks start meanwhile.
pub async fn a_paused_templates_tasks_wait_until_it_is_resumed<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let held = template(
        "namespace: conf\nname: held_t\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop, queue: conf}\n",
    );
    let newer = template(
        "namespace: conf\nname: held_t\nversion: 2.0.0\nsteps:\n  - {name: a, handler: noop, queue: conf}\n",
    );
    let free = template(
        "namespace: conf\nname: free_t\nversion: 1.0.0\nsteps:\n  - {name: b, handler: noop, queue: conf}\n",
    );
    assert!(store.template_pause("conf", "held_t", true).await.unwrap());
    assert!(!store.template_pause("conf", "held_t", true).await.unwrap());
    assert_eq!(
        store.template_paused().await.unwrap(),
        [("conf".to_owned(), "held_t".to_owned())]
    );
    let first = d.create(&held, "{}").await;
    let second = d.create(&newer, "{}").await;
    let other = d.create(&free, "{}").await;
    assert_eq!(
        d.start_tasks().await,
        1,
        "only the other template's task starts"
    );
    for id in [first, second] {
        assert_eq!(
            d.detail(id).await.task.state,
            TaskState::Pending,
            "every version"
        );
    }
    assert_eq!(d.detail(other).await.task.state, TaskState::InProgress);
    let depths = store.queue_depths().await.unwrap();
    let requests = depths
        .iter()
        .find(|q| q.queue == TASK_QUEUE)
        .map_or(0, |q| q.messages);
    assert_eq!(requests, 0, "no request is left to read again and again");

    assert!(store.template_pause("conf", "held_t", false).await.unwrap());
    assert!(store.template_paused().await.unwrap().is_empty());
    assert_eq!(d.start_tasks().await, 2, "resuming starts what it held");
    assert_eq!(d.run_queue("conf").await.len(), 3);
    for id in [first, second, other] {
        assert_eq!(d.detail(id).await.task.state, TaskState::Complete);
    }
}

pub async fn a_concurrency_key_holds_tasks_beyond_its_limit<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let keyed = template(
        "namespace: conf\nname: keyed_t\nversion: 1.0.0\n\
         concurrency: {key: context.customer, limit: 1}\n\
         steps:\n  - {name: a, handler: noop, queue: conf_keyed}\n",
    );
    let customer = |c: &str| format!(r#"{{"customer": "{c}"}}"#);
    let first = d.create(&keyed, &customer("ada")).await;
    let second = d.create(&keyed, &customer("ada")).await;
    let other = d.create(&keyed, &customer("bob")).await;
    let third = d.create(&keyed, &customer("ada")).await;
    assert_eq!(
        d.detail(first).await.task.concurrency_key.as_deref(),
        Some("ada")
    );
    assert_eq!(d.start_tasks().await, 2, "one task per key starts");
    let state = |id| {
        let d = &d;
        async move { d.detail(id).await.task.state }
    };
    assert_eq!(state(first).await, TaskState::InProgress);
    assert_eq!(state(other).await, TaskState::InProgress);
    assert_eq!(state(second).await, TaskState::Pending);
    assert_eq!(state(third).await, TaskState::Pending);
    assert_eq!(
        d.start_tasks().await,
        0,
        "no request is left for the held tasks"
    );

    assert_eq!(d.run_queue("conf_keyed").await.len(), 2);
    assert_eq!(state(first).await, TaskState::Complete);
    assert_eq!(
        d.start_tasks().await,
        1,
        "the end of the first frees its slot"
    );
    assert_eq!(state(second).await, TaskState::InProgress, "oldest first");
    assert_eq!(state(third).await, TaskState::Pending);

    store.task_cancel(second, "test").await.unwrap();
    assert_eq!(d.start_tasks().await, 1, "a cancel frees the slot too");
    assert_eq!(state(third).await, TaskState::InProgress);
    // The cancelled task's message is read and skipped first.
    let c = loop {
        let c = d.claim("conf_keyed").await.expect("the third task's step");
        if matches!(c.start, StepStart::Run(_)) {
            break c;
        }
    };
    d.finish(&c, StepOutcome::Failed { error: "no" }).await;
    assert_eq!(state(third).await, TaskState::Error);
    let fourth = d.create(&keyed, &customer("ada")).await;
    assert_eq!(d.start_tasks().await, 1, "a task in error holds no slot");
    assert_eq!(state(fourth).await, TaskState::InProgress);

    // The next in line, asked to start, is cancelled first: the line moves on.
    let (next, after) = (
        d.create(&keyed, &customer("ada")).await,
        d.create(&keyed, &customer("ada")).await,
    );
    assert_eq!(d.start_tasks().await, 0, "the fourth holds the slot");
    store.task_cancel(fourth, "test").await.unwrap();
    store.task_cancel(next, "test").await.unwrap();
    assert_eq!(d.start_tasks().await, 1);
    assert_eq!(state(after).await, TaskState::InProgress);

    let two = template(
        "namespace: conf\nname: keyed_two\nversion: 1.0.0\n\
         concurrency: {key: context.customer, limit: 2}\n\
         steps:\n  - {name: a, handler: noop, queue: conf_keyed}\n",
    );
    for _ in 0..3 {
        d.create(&two, &customer("ada")).await;
    }
    assert_eq!(d.start_tasks().await, 2, "a limit of two starts two");

    let context = raw("{}");
    let missing = store
        .task_create(TaskCreateParams {
            template: &keyed,
            context: &context,
            idempotency_key: None,
            priority: None,
            traceparent: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, StoreError::Invalid(why) if why.contains("concurrency key `context.customer` names nothing")),
        "{missing}"
    );
}

pub async fn a_rate_limit_books_tokens_and_holds_back_the_rest<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let limited = template(
        "namespace: conf\nname: limited\nversion: 1.0.0\nsteps:\n  \
         - {name: call, handler: noop, queue: conf_rate, rate_limit: {key: conf_partner, per_second: 20, burst: 1}}\n",
    );
    let tasks = [
        d.create(&limited, "{}").await,
        d.create(&limited, "{}").await,
        d.create(&limited, "{}").await,
    ];
    assert_eq!(d.start_tasks().await, 3);
    // A key's bucket starts empty: each claim books the next token, 50 ms apart.
    let mut until = Vec::new();
    for _ in 0..3 {
        let c = d.claim("conf_rate").await.expect("a message");
        match &c.start {
            StepStart::RateLimited { key, until: at } => {
                assert_eq!(key, "conf_partner");
                until.push(*at);
            }
            other => panic!("{other:?}"),
        }
    }
    for pair in until.windows(2) {
        // Times are whole microseconds, rounded up.
        let apart = pair[1].since(pair[0]).as_micros();
        assert!((49_998..=50_002).contains(&apart), "{until:?}");
    }
    assert!(
        d.claim("conf_rate").await.is_none(),
        "hidden until their tokens"
    );
    for id in tasks {
        let detail = d.detail(id).await;
        assert_eq!(
            (detail.steps[0].state, detail.steps[0].attempts),
            (StepState::Enqueued, 0),
            "held back without an attempt"
        );
    }
    let mut ran = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ran < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the booked steps never ran"
        );
        match d.claim("conf_rate").await {
            Some(c) => {
                let StepStart::Run(exec) = &c.start else {
                    panic!("a booked step starts on its token: {:?}", c.start);
                };
                assert_eq!(exec.attempt, 1);
                assert!(Timestamp::now().0 >= until[ran].0, "not before its token");
                d.succeed(&c, "{}").await;
                ran += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    for id in tasks {
        assert_eq!(d.detail(id).await.task.state, TaskState::Complete);
    }
}

pub async fn a_queue_hands_out_higher_priorities_first<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let plain = template(
        "namespace: conf\nname: prio\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop, queue: conf_prio}\n",
    );
    let urgent = template(
        "namespace: conf\nname: prio_urgent\nversion: 1.0.0\npriority: 5\nsteps:\n  - {name: a, handler: noop, queue: conf_prio}\n",
    );
    let context = raw("{}");
    let create = |template, priority| {
        let store = store.clone();
        let context = &context;
        async move {
            store
                .task_create(TaskCreateParams {
                    template,
                    context,
                    idempotency_key: None,
                    priority,
                    traceparent: None,
                })
                .await
                .unwrap()
                .task_id
        }
    };
    let low = create(&plain, Some(-5)).await;
    let first = create(&plain, None).await;
    let high = create(&urgent, None).await;
    let second = create(&plain, None).await;
    let top = create(&urgent, Some(10)).await;
    assert_eq!(d.detail(high).await.task.priority, 5, "the template's");
    assert_eq!(d.detail(top).await.task.priority, 10, "the submission's");
    assert_eq!(d.start_tasks().await, 5);
    let mut order = Vec::new();
    while let Some(c) = d.claim("conf_prio").await {
        order.push(c.task_id);
        d.succeed(&c, "{}").await;
    }
    assert_eq!(
        order,
        [top, high, first, second, low],
        "highest first, FIFO within a priority, negative last"
    );
    let refused = store
        .task_create(TaskCreateParams {
            template: &plain,
            context: &context,
            idempotency_key: None,
            priority: Some(5000),
            traceparent: None,
        })
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Invalid(why)) if why.contains("priority must be between -1000 and 1000")),
        "{refused:?}"
    );
}

/// A task created with a trace context keeps it, and every step message of the task
/// carries it to the claim of its step — the first steps, the children a completion
/// enqueues, a retry, a fan-out's instances; a task without one has none.
pub async fn step_messages_carry_their_tasks_trace_context<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let diamond = example("diamond.yaml");
    let traceparent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let context = raw(r#"{"start":0}"#);
    let traced = store
        .task_create(TaskCreateParams {
            template: &diamond,
            context: &context,
            idempotency_key: None,
            priority: None,
            traceparent: Some(traceparent),
        })
        .await
        .unwrap()
        .task_id;
    let plain = d.create(&diamond, r#"{"start":0}"#).await;
    assert_eq!(d.detail(traced).await.task.traceparent, Some(traceparent));
    assert_eq!(d.detail(plain).await.task.traceparent, None);
    // The row alone, as a task span's export reads it.
    let row = store.task_record(traced).await.unwrap();
    assert_eq!((row.id, row.traceparent), (traced, Some(traceparent)));
    assert!(matches!(
        store.task_record(TaskId::new()).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(d.start_tasks().await, 2);
    let results = raw(r#"{"value":1}"#);
    let (mut claimed, mut retried, mut traced_again) = (0, false, false);
    loop {
        let claims = d.claim_batch("examples").await;
        if claims.is_empty() {
            break;
        }
        for claim in claims {
            let StepStart::Run(exec) = claim.start else {
                panic!("{:?}", claim.start);
            };
            let expected = (exec.task_id == traced).then_some(traceparent);
            assert_eq!(exec.traceparent, expected, "attempt {}", exec.attempt);
            claimed += 1;
            traced_again |= exec.task_id == traced && exec.attempt == 2;
            // The traced task's first step is retried: its new message must carry it too.
            let outcome = if retried || exec.task_id != traced {
                StepOutcome::Succeeded { results: &results }
            } else {
                retried = true;
                StepOutcome::Retry {
                    error: "once more",
                    delay: Duration::ZERO,
                }
            };
            let params = StepFinishParams {
                queue: "examples",
                msg_id: claim.msg_id,
                task_id: exec.task_id,
                step_id: exec.step_id,
                attempt: exec.attempt,
                outcome,
            };
            let finished = store.step_finish(params).await.unwrap();
            assert!(
                matches!(finished, StepFinished::Applied { .. }),
                "{finished:?}"
            );
        }
    }
    assert_eq!(claimed, 9, "eight steps, one of them twice");
    assert!(traced_again, "the traced task's retry was claimed");
    for task in [traced, plain] {
        assert_eq!(d.detail(task).await.task.state, TaskState::Complete);
    }
    // A fan-out's instances are sent by its expansion: they carry it too.
    let lines = example("order_lines.yaml");
    let context = raw(r#"{"order_id": 1, "line_amounts": [1, 2, 3]}"#);
    store
        .task_create(TaskCreateParams {
            template: &lines,
            context: &context,
            idempotency_key: None,
            priority: None,
            traceparent: Some(traceparent),
        })
        .await
        .unwrap();
    d.start_tasks().await;
    let claims = d.claim_batch("examples").await;
    assert_eq!(claims.len(), 3, "one claim per instance");
    for claim in claims {
        let StepStart::Run(exec) = claim.start else {
            panic!("{:?}", claim.start);
        };
        assert_eq!(exec.traceparent, Some(traceparent), "{}", exec.step_name);
    }
}
