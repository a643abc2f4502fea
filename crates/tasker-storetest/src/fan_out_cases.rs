//! Steps that fan out over data (`for_each`): one instance per item, each with its own
//! attempts; the step completes with their results in item order, or fails with one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tasker_core::id::TaskId;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::*;
use tasker_engine::{FnHandler, HandlerError, HandlerRegistry, StepContext, to_result};

use crate::support::*;

/// `prices` runs `sum` once per amount of the context (1 + the amount), `total` adds
/// them up (1 + their values).
const PRICES: &str = "namespace: conf\nname: prices\nversion: 1.0.0\nsteps:\n  \
    - {name: prices, handler: sum, for_each: context.amounts}\n  \
    - {name: total, handler: sum, depends_on: [prices]}\n";

fn names(detail: &TaskDetail) -> Vec<(&str, StepState)> {
    detail
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect()
}

fn results(detail: &TaskDetail, name: &str) -> serde_json::Value {
    let r = step(detail, name).results.as_ref().expect("results");
    serde_json::from_str(r.get()).unwrap()
}

/// An instance's handler: its item and index, and its parents' results, as it was
/// given them.
fn item_and_index(h: &mut HandlerRegistry) {
    let show = FnHandler(|s: &StepContext| {
        let json = |r: &serde_json::value::RawValue| -> serde_json::Value {
            serde_json::from_str(r.get()).unwrap_or_default()
        };
        let parents: serde_json::Map<String, serde_json::Value> =
            s.parents().map(|(n, r)| (n.to_owned(), json(r))).collect();
        to_result(&json!({
            "item": s.item().map(json), "index": s.index(), "parents": parents,
        }))
    });
    h.register("item_and_index", show);
}

pub async fn a_fan_out_runs_one_instance_per_item<S: Store>(store: Arc<S>) {
    let ran = engine(store.clone(), 4, |_| {});
    let detail = run(&ran, &template(PRICES), r#"{"amounts": [10, 20, 30]}"#).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(
        names(&detail),
        [
            ("prices", StepState::Complete),
            ("total", StepState::Complete),
            ("prices[0]", StepState::Complete),
            ("prices[1]", StepState::Complete),
            ("prices[2]", StepState::Complete),
        ]
    );
    assert_eq!(
        results(&detail, "prices"),
        json!([{"value": 11}, {"value": 21}, {"value": 31}]),
        "the instances' results, in item order"
    );
    assert_eq!(value(&detail, "total"), 64, "1 + 11 + 21 + 31");
    let counts = completions(&*store, detail.task.id).await;
    for s in &detail.steps {
        assert_eq!(counts.get(&s.id), Some(&1), "{} completed once", s.name);
        assert!(s.name == "prices" || s.attempts == 1, "{}", s.name);
    }
    let progress = store.task_progress(detail.task.id).await.unwrap();
    assert_eq!((progress.steps, progress.done), (5, 5));

    // From a parent's result, through a path; each instance sees its item and index.
    let t = template(
        "namespace: conf\nname: lines\nversion: 1.0.0\nsteps:\n  \
         - {name: order, handler: echo, config: {order: {lines: [{sku: A}, {sku: B}]}}}\n  \
         - {name: line, handler: item_and_index, for_each: order.order.lines, depends_on: [order]}\n",
    );
    let detail = run(&engine(store.clone(), 2, item_and_index), &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    // An instance is given its own item; its parent's result without the items.
    let parents = json!({"order": {"order": {"lines": null}}});
    assert_eq!(
        results(&detail, "line"),
        json!([
            {"item": {"sku": "A"}, "index": 0, "parents": parents},
            {"item": {"sku": "B"}, "index": 1, "parents": parents},
        ])
    );
    assert_eq!(
        results(&detail, "order"),
        json!({"order": {"lines": [{"sku": "A"}, {"sku": "B"}]}}),
        "the parent keeps its result"
    );
}

pub async fn an_empty_or_missing_array_or_too_many_items<S: Store>(store: Arc<S>) {
    // A template of its own per shape: a version's content never changes.
    let fan = |source: &str, extra: &str| {
        let name = if extra.is_empty() { "fan" } else { "bounded" };
        template(&format!(
            "namespace: conf\nname: {name}\nversion: 1.0.0\nsteps:\n  \
             - {{name: each, handler: sum, for_each: {source}{extra}}}\n  \
             - {{name: after, handler: noop, depends_on: [each]}}\n"
        ))
    };
    let ran = engine(store.clone(), 2, |_| {});
    let empty = run(&ran, &fan("context.items", ""), r#"{"items": []}"#).await;
    assert_eq!(empty.task.state, TaskState::Complete);
    assert_eq!(results(&empty, "each"), json!([]));
    assert_eq!(empty.steps.len(), 2, "no instances");

    for (context, extra, why) in [
        (
            r#"{"items": {"a": 1}}"#,
            "",
            "for_each `context.items` is not an array: it is an object",
        ),
        (
            "{}",
            "",
            "for_each `context.items` names nothing: no `items` in an object",
        ),
        (
            r#"{"items": [1, 2, 3]}"#,
            ", max_items: 2",
            "for_each `context.items` has 3 items, more than max_items (2)",
        ),
    ] {
        let failed = run(&ran, &fan("context.items", extra), context).await;
        assert_eq!(failed.task.state, TaskState::Error, "{context}");
        assert_eq!(step(&failed, "each").state, StepState::Error);
        assert_eq!(step(&failed, "each").error.as_deref(), Some(why));
        assert_eq!(step(&failed, "after").state, StepState::Pending);
        assert_eq!(failed.steps.len(), 2, "no instances");
    }
}

/// Fails the instance at index 1 the first time it runs.
fn fails_once(failed: Arc<AtomicBool>) -> impl FnOnce(&mut HandlerRegistry) {
    move |h| {
        h.register(
            "fails_once",
            FnHandler(move |s: &StepContext| {
                if s.index() == Some(1) && !failed.swap(true, Ordering::SeqCst) {
                    return Err(HandlerError::permanent("declined"));
                }
                to_result(&json!({"value": s.index()}))
            }),
        );
    }
}

const FAILS_ONCE: &str = "namespace: conf\nname: fails\nversion: 1.0.0\nsteps:\n  \
    - {name: each, handler: fails_once, for_each: context.items}\n  \
    - {name: after, handler: sum, depends_on: [each]}\n";

pub async fn a_failed_instance_fails_its_step_and_a_retry_runs_only_it<S: Store>(store: Arc<S>) {
    let ran = engine(store.clone(), 2, fails_once(Arc::default()));
    let failed = run(&ran, &template(FAILS_ONCE), r#"{"items": ["a", "b", "c"]}"#).await;
    assert_eq!(failed.task.state, TaskState::Error);
    assert_eq!(step(&failed, "each[1]").state, StepState::Error);
    assert_eq!(step(&failed, "each").state, StepState::Error);
    assert_eq!(
        step(&failed, "each").error.as_deref(),
        Some("instance `each[1]` failed: declined (permanent error)")
    );
    assert_eq!(step(&failed, "after").state, StepState::Pending);

    let running = ran.start();
    assert_eq!(
        ran.retry(failed.task.id).await.unwrap(),
        1,
        "the failed instance"
    );
    let done = ran.wait(failed.task.id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(done.task.state, TaskState::Complete);
    let attempts: Vec<(&str, u32)> = done
        .steps
        .iter()
        .filter(|s| s.name.starts_with("each["))
        .map(|s| (s.name.as_str(), s.attempts))
        .collect();
    assert_eq!(attempts, [("each[0]", 1), ("each[1]", 1), ("each[2]", 1)]);
    assert_eq!(
        results(&done, "each"),
        json!([{"value": 0}, {"value": 1}, {"value": 2}])
    );
    assert_eq!(value(&done, "after"), 4, "1 + 0 + 1 + 2");
}

pub async fn resolving_a_failed_instance_lets_its_step_complete<S: Store>(store: Arc<S>) {
    let ran = engine(store.clone(), 2, fails_once(Arc::default()));
    let failed = run(&ran, &template(FAILS_ONCE), r#"{"items": ["a", "b", "c"]}"#).await;
    assert_eq!(failed.task.state, TaskState::Error);
    let running = ran.start();
    let refused = ran
        .resolve(step(&failed, "each").id, &raw("[]"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("ran instances"), "{refused}");
    let instance = step(&failed, "each[1]").id;
    let resolved = ran
        .resolve(instance, &raw(r#"{"value": 40}"#))
        .await
        .unwrap();
    assert!(resolved.resumed);
    let done = ran.wait(failed.task.id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(done.task.state, TaskState::Complete);
    assert_eq!(step(&done, "each[1]").state, StepState::ResolvedManually);
    assert_eq!(
        results(&done, "each"),
        json!([{"value": 0}, {"value": 40}, {"value": 2}])
    );
    assert_eq!(value(&done, "after"), 43);
}

/// A batch that fails after a step's completion created its instances keeps none of
/// them: applied again, the completion creates each once.
pub async fn an_interrupted_fan_out_creates_each_instance_once<S: Store>(store: Arc<S>) {
    let d = Driver::new(store.clone());
    let t = template(
        "namespace: conf\nname: interrupted\nversion: 1.0.0\nsteps:\n  \
         - {name: list, handler: echo, queue: conf}\n  \
         - {name: each, handler: noop, queue: conf, for_each: list.items, depends_on: [list]}\n",
    );
    let task_id = d.create(&t, "{}").await;
    d.start_tasks().await;
    let list = d.claim("conf").await.expect("list");
    let items = raw(r#"{"items": [1, 2, 3]}"#);
    let good = StepFinishParams {
        queue: "conf",
        msg_id: list.msg_id,
        task_id,
        step_id: list.step_id,
        attempt: 1,
        outcome: StepOutcome::Succeeded { results: &items },
    };
    // A task created after the real one sorts after it: the good outcome (and its
    // instances) is applied first, then the batch fails.
    let bogus = StepFinishParams {
        task_id: TaskId::new(),
        step_id: tasker_core::id::StepId::new(),
        ..good
    };
    let err = store
        .step_finish_batch(&[good, bogus], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        d.detail(task_id).await.steps.len(),
        2,
        "no instance remains"
    );
    assert!(matches!(
        store.step_finish(good).await.unwrap(),
        StepFinished::Applied { enqueued: 3, .. }
    ));
    assert_eq!(d.run_queue("conf").await, ["each[0]", "each[1]", "each[2]"]);
    let detail = d.detail(task_id).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(detail.steps.len(), 5);
    assert_eq!(results(&detail, "each"), json!([{}, {}, {}]));
}

/// Ten thousand items: each instance runs once and the step gathers their results.
pub async fn ten_thousand_items_fan_out_and_in<S: Store>(store: Arc<S>) {
    let amounts: Vec<u32> = (0..10_000).collect();
    let context = json!({ "amounts": amounts }).to_string();
    let ran = engine(store.clone(), 16, |_| {});
    let running = ran.start();
    let task = ran.submit(&template(PRICES), &context, None).await.unwrap();
    let detail = tokio::time::timeout(Duration::from_secs(600), ran.wait(task.task_id, |_| {}))
        .await
        .expect("finishes within 10 minutes")
        .unwrap();
    running.shutdown().await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(detail.steps.len(), 10_002);
    let gathered = results(&detail, "prices");
    assert_eq!(gathered.as_array().map(Vec::len), Some(10_000));
    assert_eq!(gathered[9_999], json!({"value": 10_000}), "in item order");
    // 1 + Σ (1 + i) for i < 10 000.
    assert_eq!(value(&detail, "total"), 1 + 10_000 + 49_995_000);
    let counts = completions(&*store, detail.task.id).await;
    assert!(counts.values().all(|&n| n == 1), "each completed once");
    assert_eq!(counts.len(), 10_002);
}

pub async fn cancelling_a_fan_out_cancels_its_instances<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: slow\nversion: 1.0.0\nsteps:\n  \
         - {name: each, handler: sleep, config: {ms: 1000}, for_each: context.items}\n",
    );
    let ran = engine(store.clone(), 2, |_| {});
    let running = ran.start();
    let task = ran
        .submit(&t, r#"{"items": [1, 2, 3, 4]}"#, None)
        .await
        .unwrap();
    for _ in 0..400 {
        let detail = ran.task(task.task_id).await.unwrap();
        if detail
            .steps
            .iter()
            .any(|s| s.state == StepState::InProgress && s.name != "each")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    ran.cancel(task.task_id, "test").await.unwrap();
    let detail = ran.wait(task.task_id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(detail.task.state, TaskState::Cancelled);
    assert_eq!(detail.steps.len(), 5);
    assert!(
        detail.steps.iter().all(|s| s.state == StepState::Cancelled),
        "{:?}",
        names(&detail)
    );
}

/// Each instance has its own attempts and its own timeout, from its step's template.
pub async fn instances_retry_and_time_out_on_their_own<S: Store>(store: Arc<S>) {
    let ran = engine(store.clone(), 4, |_| {});
    let flaky = template(
        "namespace: conf\nname: flaky_each\nversion: 1.0.0\nsteps:\n  \
         - {name: each, handler: flaky, config: {failures: 1}, for_each: context.items,\n     \
            retry: {max_attempts: 2, backoff: {initial: 10ms, max: 10ms}}}\n",
    );
    let done = run(&ran, &flaky, r#"{"items": [1, 2, 3]}"#).await;
    assert_eq!(done.task.state, TaskState::Complete);
    let attempts: Vec<u32> = done.steps[1..].iter().map(|s| s.attempts).collect();
    assert_eq!(attempts, [2, 2, 2], "each failed once, then succeeded");
    assert_eq!(
        results(&done, "each"),
        json!([{"attempt": 2}, {"attempt": 2}, {"attempt": 2}])
    );

    let slow = template(
        "namespace: conf\nname: slow_each\nversion: 1.0.0\nsteps:\n  \
         - {name: each, handler: sleep, config: {ms: 2000}, for_each: context.items,\n     \
            timeout: 100ms, retry: {max_attempts: 1}}\n",
    );
    let failed = run(&ran, &slow, r#"{"items": [1]}"#).await;
    assert_eq!(failed.task.state, TaskState::Error);
    let instance = step(&failed, "each[0]");
    assert_eq!((instance.state, instance.attempts), (StepState::Error, 1));
    assert!(
        instance
            .error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        instance.error
    );
    assert!(
        step(&failed, "each")
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("instance `each[0]` failed:")),
    );
}
