//! The engine end to end on a store: reference workflows and failure shapes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::event::EventKind;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::*;
use tasker_engine::{
    Engine, FnHandler, Handler, HandlerFuture, HandlerResult, Running, StepContext, to_result,
};

use crate::support::*;

fn no_extra(_: &mut tasker_engine::HandlerRegistry) {}

async fn run_example<S: Store>(store: &Arc<S>, name: &str, context: &str) -> TaskDetail {
    let engine = engine(store.clone(), 4, no_extra);
    let detail = run(&engine, &example(name), context).await;
    let counts = completions(&**store, detail.task.id).await;
    for s in &detail.steps {
        if s.state == StepState::Complete {
            assert_eq!(
                counts.get(&s.id),
                Some(&1),
                "{} completed exactly once",
                s.name
            );
        }
    }
    detail
}

pub async fn linear_passes_values_along_the_chain<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "linear.yaml", r#"{"start": 10}"#).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let values: Vec<i64> = ["first", "second", "third", "fourth"]
        .iter()
        .map(|n| value(&detail, n))
        .collect();
    assert_eq!(values, [11, 12, 13, 14]);
    assert_parents_first(&*store, &detail).await;
}

pub async fn diamond_joins_both_branches<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "diamond.yaml", "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(
        [
            value(&detail, "a"),
            value(&detail, "b"),
            value(&detail, "c"),
            value(&detail, "d")
        ],
        [1, 2, 2, 5]
    );
    assert_parents_first(&*store, &detail).await;
}

pub async fn tree_converges_eight_steps<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "tree.yaml", "{}").await;
    assert_eq!(
        (detail.task.state, detail.steps.len()),
        (TaskState::Complete, 8)
    );
    assert_eq!(value(&detail, "left_b"), 3);
    assert_eq!(value(&detail, "converge"), 13);
    assert_parents_first(&*store, &detail).await;
}

pub async fn mixed_dag_fans_out_transforms_and_fans_in<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "mixed_dag.yaml", "{}").await;
    assert_eq!(
        (detail.task.state, detail.steps.len()),
        (TaskState::Complete, 7)
    );
    assert_eq!(value(&detail, "normalize"), 111);
    assert_eq!(value(&detail, "aggregate"), 120);
    assert_eq!(value(&detail, "publish"), 121);
    assert_parents_first(&*store, &detail).await;
}

pub async fn order_fulfillment_runs_in_order<S: Store>(store: Arc<S>) {
    let ctx = r#"{"order_id": 42, "customer": "ada", "items": [{"sku": "A-1", "quantity": 2}]}"#;
    let detail = run_example(&store, "order_fulfillment.yaml", ctx).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let ship = step(&detail, "ship_order");
    assert_eq!(
        ship.results.as_ref().unwrap().get(),
        r#"{"carrier":"ground"}"#
    );
    let trail = store.transition_list(detail.task.id).await.unwrap();
    let order: Vec<&str> = trail
        .iter()
        .filter(|t| t.to_state == "in_progress" && t.step_id.is_some())
        .map(|t| {
            detail
                .steps
                .iter()
                .find(|s| Some(s.id) == t.step_id)
                .unwrap()
                .name
                .as_str()
        })
        .collect();
    assert_eq!(
        order,
        [
            "validate_order",
            "reserve_inventory",
            "charge_payment",
            "ship_order"
        ]
    );
}

pub async fn context_is_checked_against_the_schema<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 1, no_extra);
    let t = example("order_fulfillment.yaml");
    let err = engine
        .submit(
            &t,
            r#"{"order_id": "x", "customer": "ada", "items": []}"#,
            None,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("fulfillment/process_order@1.0.0"), "{text}");
    assert!(
        text.contains("/order_id") && text.contains("/items"),
        "{text}"
    );
    assert!(
        engine
            .submit(&t, "[1]", None)
            .await
            .unwrap_err()
            .to_string()
            .contains("must be a JSON object")
    );
    assert!(
        engine
            .submit(&t, "{nope", None)
            .await
            .unwrap_err()
            .to_string()
            .contains("not valid JSON")
    );
    assert!(
        store
            .task_list(TaskListParams {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn retry_then_succeed<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "failures/retry_then_succeed.yaml", "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let s = step(&detail, "flaky_call");
    assert_eq!(s.attempts, 3);
    assert_eq!(s.results.as_ref().unwrap().get(), r#"{"attempt":3}"#);
    let retries = store
        .transition_list(detail.task.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.to_state == "waiting_for_retry")
        .count();
    assert_eq!(retries, 2);
}

pub async fn retries_exhausted_fails_the_task<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "failures/retries_exhausted.yaml", "{}").await;
    assert_eq!(detail.task.state, TaskState::Error);
    let s = step(&detail, "flaky_call");
    assert_eq!((s.state, s.attempts), (StepState::Error, 3));
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("attempts exhausted (3 of 3)"),
        "{:?}",
        s.error
    );
    assert_eq!(step(&detail, "after").state, StepState::Pending);
}

pub async fn permanent_failure_blocks_only_descendants<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "failures/permanent_failure.yaml", "{}").await;
    assert_eq!(detail.task.state, TaskState::Error);
    let charge = step(&detail, "charge");
    assert_eq!(
        (charge.state, charge.attempts),
        (StepState::Error, 1),
        "no retry of a permanent error"
    );
    assert_eq!(
        charge.error.as_deref(),
        Some("card declined (permanent error)")
    );
    assert_eq!(step(&detail, "ship").state, StepState::Pending);
    assert_eq!(step(&detail, "notify").state, StepState::Complete);
}

pub async fn timeout_cuts_off_each_attempt<S: Store>(store: Arc<S>) {
    let detail = run_example(&store, "failures/timeout.yaml", "{}").await;
    assert_eq!(detail.task.state, TaskState::Error);
    let s = step(&detail, "slow");
    assert_eq!((s.state, s.attempts), (StepState::Error, 2));
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .starts_with("timed out after 200ms"),
        "{:?}",
        s.error
    );
}

pub async fn requested_retry_delay_is_honoured<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: rate_limited\nversion: 1.0.0\nsteps:\n  - name: call\n    handler: flaky\n    config: {failures: 1, retry_after: 400ms}\n    retry: {max_attempts: 2, backoff: {initial: 1ms, max: 1ms}}\n",
    );
    let engine = engine(store.clone(), 2, no_extra);
    let detail = run(&engine, &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let trail = store.transition_list(detail.task.id).await.unwrap();
    let at = |to: &str, nth: usize| {
        trail
            .iter()
            .filter(|t| t.step_id.is_some() && t.to_state == to)
            .nth(nth)
            .unwrap()
            .at
    };
    let waited = at("in_progress", 1).since(at("waiting_for_retry", 0));
    assert!(
        waited >= Duration::from_millis(400),
        "retried after {waited:?}, asked for 400ms"
    );
}

struct Panics;

impl Handler for Panics {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            if step.attempt() == 1 {
                panic!("bug in attempt one");
            }
            to_result(&serde_json::json!({"recovered": step.attempt()}))
        })
    }
}

pub async fn a_panicking_handler_is_retried<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: panics\nversion: 1.0.0\nsteps:\n  - name: buggy\n    handler: panics\n    retry: {backoff: {initial: 10ms}}\n",
    );
    let engine = engine(store.clone(), 2, |r| {
        r.register("panics", Panics);
    });
    let detail = run(&engine, &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    assert_eq!(detail.steps[0].attempts, 2);
    let trail = store.transition_list(detail.task.id).await.unwrap();
    let retry = trail
        .iter()
        .find(|t| t.to_state == "waiting_for_retry")
        .unwrap();
    assert!(
        retry
            .reason
            .contains("handler panicked: bug in attempt one"),
        "{}",
        retry.reason
    );
}

/// Returns the results of the ancestor its config names.
struct ReadsAncestor;

impl Handler for ReadsAncestor {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let name: String = step.config_as::<serde_json::Value>()?["ancestor"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(step.result(&name).await?.to_owned())
        })
    }
}

/// A handler reads any ancestor's results by name, not only its parents'; asking for a
/// step that is not an ancestor fails the step for good, naming its ancestors.
pub async fn handlers_read_their_ancestors_results<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: ancestry\nversion: 1.0.0\nsteps:\n  - {name: a, handler: echo, config: {value: 1}}\n  - {name: e, handler: echo, config: {value: 9}}\n  - {name: b, handler: echo, config: {value: 2}, depends_on: [a]}\n  - {name: d, handler: reads, config: {ancestor: a}, depends_on: [b]}\n  - {name: x, handler: reads, config: {ancestor: e}, depends_on: [b]}\n",
    );
    let engine = engine(store.clone(), 2, |r| {
        r.register("reads", ReadsAncestor);
    });
    let detail = run(&engine, &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Error);
    let d = step(&detail, "d");
    assert_eq!(
        d.results.as_deref().map(RawValue::get),
        Some(r#"{"value":1}"#)
    );
    let x = step(&detail, "x");
    assert_eq!((x.state, x.attempts), (StepState::Error, 1));
    assert_eq!(
        x.error.as_deref(),
        Some("step `x` has no ancestor named `e` (its ancestors: a, b) (permanent error)")
    );
}

const ROUTE: &str = "namespace: conf\nname: route\nversion: 1.0.0\nsteps:\n  - {name: route, handler: echo, config: {next: NEXT}, decides: [ground, air]}\n  - {name: ground, handler: sum, depends_on: [route]}\n  - {name: air, handler: sum, depends_on: [route]}\n  - {name: insure, handler: sum, depends_on: [air]}\n  - {name: ship, handler: sum, depends_on: [ground, air]}\n";

/// A decision runs the children it names and skips the others, and with them every
/// step all of whose parents were skipped; a step with a parent that ran runs.
pub async fn a_decision_runs_its_choice_and_skips_the_rest<S: Store>(store: Arc<S>) {
    let t = template(&ROUTE.replace("NEXT", "[ground]"));
    let ran = engine(store.clone(), 2, no_extra);
    let detail = run(&ran, &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let states: Vec<(&str, StepState)> = detail
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("route", StepState::Complete),
            ("ground", StepState::Complete),
            ("air", StepState::Skipped),
            ("insure", StepState::Skipped),
            ("ship", StepState::Complete),
        ]
    );
    assert_eq!(
        value(&detail, "ship"),
        2,
        "1 + ground's 1; air gave nothing"
    );
    assert_eq!(step(&detail, "air").attempts, 0);
    let trail = store.transition_list(detail.task.id).await.unwrap();
    let why = |name: &str| {
        let id = step(&detail, name).id;
        trail
            .iter()
            .find(|t| t.step_id == Some(id) && t.to_state == "skipped")
            .map(|t| t.reason.clone())
    };
    assert_eq!(
        why("air").as_deref(),
        Some("not chosen by its parent's decision")
    );
    assert_eq!(why("insure").as_deref(), Some("every parent was skipped"));
    let mut metrics = String::new();
    ran.metrics().render(&mut metrics);
    assert!(
        metrics.contains("tasker_steps_finished_total{state=\"skipped\"} 2\n"),
        "{metrics}"
    );
}

/// An operator's resolution of a failed decider decides too: its results must choose,
/// and the children it leaves out are skipped.
pub async fn resolving_a_decider_decides<S: Store>(store: Arc<S>) {
    let t = template(&ROUTE.replace("NEXT", "[nowhere]").replace("1.0.0", "3.0.0"));
    let engine = engine(store.clone(), 2, no_extra);
    let failed = run(&engine, &t, "{}").await;
    assert_eq!(failed.task.state, TaskState::Error);
    let route = step(&failed, "route").id;
    let refused = engine.resolve(route, &raw(r#"{"next": "air"}"#)).await;
    assert!(
        matches!(&refused, Err(tasker_engine::EngineError::Store(StoreError::Conflict(why)))
            if why == "step `route` decides among ground, air: `next` must be an array of step names, not \"air\""),
        "{refused:?}"
    );
    let running = engine.start();
    engine
        .resolve(route, &raw(r#"{"next": ["air"]}"#))
        .await
        .unwrap();
    let detail = engine.wait(failed.task.id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let mut metrics = String::new();
    engine.metrics().render(&mut metrics);
    assert!(
        metrics.contains("tasker_steps_finished_total{state=\"skipped\"} 1\n"),
        "the resolution skipped ground: {metrics}"
    );
    let states: Vec<StepState> = detail.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            StepState::ResolvedManually,
            StepState::Skipped,
            StepState::Complete,
            StepState::Complete,
            StepState::Complete,
        ],
        "route resolved; ground skipped; air, insure and ship ran"
    );
}

/// A child a decision leaves out is skipped at once, though another of its parents is
/// still running, and stays skipped when that parent completes; skipped steps stay
/// skipped through an operator's retry and a cancel.
pub async fn skipped_steps_stay_skipped<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: left_out\nversion: 1.0.0\nsteps:\n  - {name: route, handler: echo, config: {next: [ground]}, decides: [ground, air]}\n  - {name: slow, handler: sleep, config: {ms: 200}}\n  - {name: ground, handler: fail, depends_on: [route]}\n  - {name: air, handler: sum, depends_on: [route, slow]}\n  - {name: after_air, handler: sum, depends_on: [air]}\n",
    );
    let engine = engine(store.clone(), 4, no_extra);
    let detail = run(&engine, &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Error, "ground fails");
    let state = |d: &TaskDetail, name: &str| step(d, name).state;
    assert_eq!(state(&detail, "slow"), StepState::Complete);
    assert_eq!(state(&detail, "air"), StepState::Skipped);
    assert_eq!(state(&detail, "after_air"), StepState::Skipped);
    let trail = store.transition_list(detail.task.id).await.unwrap();
    let at = |name: &str, to: &str| {
        let id = step(&detail, name).id;
        trail
            .iter()
            .position(|t| t.step_id == Some(id) && t.to_state == to)
            .unwrap()
    };
    assert!(
        at("air", "skipped") < at("slow", "complete"),
        "skipped while its other parent still ran"
    );
    assert_eq!(
        engine.retry(detail.task.id).await.unwrap(),
        1,
        "only ground runs again"
    );
    let cancelled = engine.cancel(detail.task.id, "enough").await.unwrap();
    assert_eq!(cancelled, TaskState::Cancelled);
    let after = engine.task(detail.task.id).await.unwrap();
    assert_eq!(state(&after, "air"), StepState::Skipped);
    assert_eq!(state(&after, "after_air"), StepState::Skipped);
    assert_eq!(state(&after, "ground"), StepState::Cancelled);
}

/// The shipping example decides from the context with the built-in `switch`.
pub async fn shipping_tier_follows_the_context<S: Store>(store: Arc<S>) {
    for (tier, ran, skipped) in [("express", "air", "ground"), ("standard", "ground", "air")] {
        let context = format!(r#"{{"order_id": 7, "tier": "{tier}"}}"#);
        let detail = run_example(&store, "shipping_tier.yaml", &context).await;
        assert_eq!(detail.task.state, TaskState::Complete, "{tier}");
        assert_eq!(step(&detail, ran).state, StepState::Complete, "{tier}");
        assert_eq!(step(&detail, skipped).state, StepState::Skipped, "{tier}");
        assert_eq!(step(&detail, "notify").state, StepState::Complete, "{tier}");
    }
}

/// A decision whose `next` is missing or names a step it does not decide fails its
/// step for good, saying why; nothing after it runs.
pub async fn a_decision_outside_its_choices_fails<S: Store>(store: Arc<S>) {
    for (version, next, why) in [
        (
            "2.0.0",
            "[ship]",
            "`next` names `ship`, which it does not decide",
        ),
        (
            "2.0.1",
            "ground",
            "`next` must be an array of step names, not \"ground\"",
        ),
    ] {
        let t = template(&ROUTE.replace("NEXT", next).replace("1.0.0", version));
        let detail = run(&engine(store.clone(), 2, no_extra), &t, "{}").await;
        assert_eq!(detail.task.state, TaskState::Error);
        let route = step(&detail, "route");
        assert_eq!((route.state, route.attempts), (StepState::Error, 1));
        assert_eq!(
            route.error.as_deref(),
            Some(
                format!("step `route` decides among ground, air: {why} (permanent error)").as_str()
            )
        );
        assert!(
            detail.steps[1..]
                .iter()
                .all(|s| s.state == StepState::Pending)
        );
    }
}

pub async fn unknown_handler_fails_permanently<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: unknown\nversion: 1.0.0\nsteps:\n  - {name: a, handler: Billing::Charge}\n",
    );
    let detail = run(&engine(store.clone(), 1, no_extra), &t, "{}").await;
    assert_eq!(detail.task.state, TaskState::Error);
    let s = &detail.steps[0];
    assert_eq!(s.attempts, 1);
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .starts_with("no handler named `Billing::Charge`"),
        "{:?}",
        s.error
    );
}

pub async fn cancellation_stops_a_running_task<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 4, no_extra);
    let running = engine.start();
    let task = engine
        .submit(&example("failures/long_running.yaml"), "{}", None)
        .await
        .unwrap();
    let mut events = engine.events().subscribe();
    // Cancel once the slow steps are running.
    let mut started = 0;
    while started < 2 {
        let e = events.recv().await.unwrap();
        if e.kind == tasker_core::event::EventKind::StepStarted
            && e.step_name.as_deref() != Some("warm_up")
        {
            started += 1;
        }
    }
    assert_eq!(
        store
            .task_cancel(task.task_id, "operator cancelled")
            .await
            .unwrap(),
        TaskState::Cancelled
    );
    let detail = engine.wait(task.task_id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(detail.task.state, TaskState::Cancelled);
    for name in ["slow_a", "slow_b", "finish"] {
        assert_eq!(step(&detail, name).state, StepState::Cancelled, "{name}");
    }
    assert_eq!(step(&detail, "warm_up").state, StepState::Complete);
    let detail = store.task_get(task.task_id).await.unwrap();
    assert_eq!(
        step(&detail, "slow_a").state,
        StepState::Cancelled,
        "a late result does not revive it"
    );
}

/// Cancelling while workers claim and finish the task's steps: every cancel succeeds,
/// and no step of a cancelled task runs to completion after it.
pub async fn cancel_succeeds_while_workers_are_busy<S: Store>(store: Arc<S>) {
    let leaves: String = (0..200)
        .map(|i| format!("  - {{name: leaf{i}, handler: noop, depends_on: [root]}}\n"))
        .collect();
    let yaml = format!(
        "namespace: conf\nname: busy\nversion: 1.0.0\nsteps:\n  - {{name: root, handler: noop}}\n{leaves}"
    );
    let t = template(&yaml);
    let engine = engine(store.clone(), 8, no_extra);
    let running = engine.start();
    let mut events = engine.events().subscribe();
    for _ in 0..5 {
        let task = engine.submit(&t, "{}", None).await.unwrap().task_id;
        let mut completed = 0;
        while completed < 20 {
            match events.recv().await {
                Ok(e)
                    if e.task_id == Some(task)
                        && e.kind == tasker_core::event::EventKind::StepCompleted =>
                {
                    completed += 1
                }
                _ => {}
            }
        }
        let state = store.task_cancel(task, "operator cancelled").await;
        assert!(matches!(state, Ok(TaskState::Cancelled)), "{state:?}");
        let cancelled = store.task_get(task).await.unwrap();
        let done = cancelled
            .steps
            .iter()
            .filter(|s| s.state == StepState::Complete)
            .count();
        let detail = engine.wait(task, |_| {}).await.unwrap();
        assert_eq!(detail.task.state, TaskState::Cancelled);
        let later = detail
            .steps
            .iter()
            .filter(|s| s.state == StepState::Complete)
            .count();
        assert_eq!(later, done, "no step completes after the cancel");
    }
    running.shutdown().await;
}

/// One slot, and a queue with a long backlog: a step of another queue still gets its
/// turn long before the backlog is done.
pub async fn a_busy_queue_does_not_starve_another<S: Store>(store: Arc<S>) {
    let leaves: String = (0..100)
        .map(|i| {
            format!("  - {{name: leaf{i}, handler: sleep, config: {{ms: 5}}, queue: busy, depends_on: [root]}}\n")
        })
        .collect();
    let busy = template(&format!(
        "namespace: conf\nname: backlog\nversion: 1.0.0\nsteps:\n  - {{name: root, handler: noop, queue: busy}}\n{leaves}"
    ));
    let other = template(
        "namespace: conf\nname: other\nversion: 1.0.0\nsteps:\n  - {name: only, handler: noop, queue: other}\n",
    );
    let engine = engine(store.clone(), 1, no_extra);
    let running = engine.start();
    let mut events = engine.events().subscribe();
    let backlog = engine.submit(&busy, "{}", None).await.unwrap().task_id;
    // Once the backlog's leaves run, the other task arrives.
    loop {
        let e = events.recv().await.unwrap();
        if e.task_id == Some(backlog) && e.step_name.as_deref() == Some("leaf0") {
            break;
        }
    }
    let quick = engine.submit(&other, "{}", None).await.unwrap().task_id;
    let done = engine.wait(quick, |_| {}).await.unwrap();
    assert_eq!(done.task.state, TaskState::Complete);
    let progress = store.task_progress(backlog).await.unwrap();
    assert!(
        progress.done < progress.steps,
        "the other queue waited for the whole backlog: {progress:?}"
    );
    running.shutdown().await;
}

/// A running engine and a task of `failures/permanent_failure.yaml` it has run to
/// `error` (`charge` failed for good, `ship` blocked).
async fn failed_task<S: Store>(store: Arc<S>) -> (Engine<S>, Running, TaskDetail) {
    let engine = engine(store, 2, no_extra);
    let running = engine.start();
    let task = engine
        .submit(&example("failures/permanent_failure.yaml"), "{}", None)
        .await
        .unwrap();
    let failed = engine.wait(task.task_id, |_| {}).await.unwrap();
    assert_eq!(failed.task.state, TaskState::Error);
    (engine, running, failed)
}

pub async fn operator_resolution_lets_children_proceed<S: Store>(store: Arc<S>) {
    let (engine, running, failed) = failed_task(store).await;
    let task_id = failed.task.id;
    let charge = step(&failed, "charge").id;
    let mut events = engine.events().subscribe();
    let resolved = engine
        .resolve(charge, &raw(r#"{"charged_by":"operator"}"#))
        .await
        .unwrap();
    assert_eq!(resolved.task_state, TaskState::InProgress);
    assert!(resolved.resumed);
    let done = engine.wait(task_id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(done.task.state, TaskState::Complete);
    assert_eq!(step(&done, "charge").state, StepState::ResolvedManually);
    assert_eq!(step(&done, "ship").state, StepState::Complete);
    let kinds = received(&mut events);
    let at = |kind| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in {kinds:?}"))
    };
    assert!(at((EventKind::StepResolved, Some(charge))) < at((EventKind::TaskResumed, None)));
    at((EventKind::TaskCompleted, None));
    assert!(metric(
        &engine,
        "tasker_operator_actions_total{action=\"resolve\"} 1"
    ));
}

/// An operator's retry of a task in error runs its failed steps again and says so.
pub async fn operator_retry_resumes_the_task<S: Store>(store: Arc<S>) {
    let (engine, running, failed) = failed_task(store).await;
    let mut events = engine.events().subscribe();
    assert_eq!(engine.retry(failed.task.id).await.unwrap(), 1);
    let again = engine.wait(failed.task.id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(
        again.task.state,
        TaskState::Error,
        "the step fails for good again"
    );
    let kinds = received(&mut events);
    assert!(kinds.contains(&(EventKind::TaskResumed, None)), "{kinds:?}");
    assert!(metric(
        &engine,
        "tasker_operator_actions_total{action=\"retry\"} 1"
    ));
    assert!(metric(
        &engine,
        "tasker_tasks_finished_total{state=\"error\"} 2"
    ));
}

/// The (kind, step) of every event waiting on `events`.
fn received(
    events: &mut tasker_core::event::Subscription,
) -> Vec<(EventKind, Option<tasker_core::id::StepId>)> {
    let mut kinds = Vec::new();
    while let Some(Ok(e)) = events.try_recv() {
        kinds.push((e.kind, e.step_id));
    }
    kinds
}

/// Whether the engine's `/metrics` text has `line`.
fn metric<S: Store>(engine: &Engine<S>, line: &str) -> bool {
    let mut out = String::new();
    engine.metrics().render(&mut out);
    out.lines().any(|l| l == line)
}

/// Counts how many of its calls run at once.
struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Handler for Gauge {
    fn call<'a>(&'a self, _: &'a StepContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            to_result(&serde_json::json!({}))
        })
    }
}

pub async fn concurrency_limit_is_respected<S: Store>(store: Arc<S>) {
    let mut yaml = String::from(
        "namespace: conf\nname: wide\nversion: 1.0.0\nsteps:\n  - {name: root, handler: noop}\n",
    );
    for i in 0..8 {
        yaml.push_str(&format!(
            "  - {{name: leaf{i}, handler: gauge, depends_on: [root]}}\n"
        ));
    }
    let peak = Arc::new(AtomicUsize::new(0));
    let gauge = Gauge {
        now: Arc::new(AtomicUsize::new(0)),
        peak: peak.clone(),
    };
    let engine = engine(store.clone(), 3, |r| {
        r.register("gauge", gauge);
    });
    let detail = run(&engine, &template(&yaml), "{}").await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} steps ran at once with a limit of 3");
    assert!(peak >= 2, "parallel steps did run in parallel ({peak})");
}

pub async fn many_tasks_complete_each_step_once<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 8, |r| {
        r.register(
            "noop_fn",
            FnHandler(|_: &StepContext| -> HandlerResult { to_result(&serde_json::json!({})) }),
        );
    });
    let running = engine.start();
    let t = example("diamond.yaml");
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            engine
                .submit(&t, &format!(r#"{{"start": {i}}}"#), None)
                .await
                .unwrap()
                .task_id,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let detail = tokio::time::timeout(Duration::from_secs(60), engine.wait(*id, |_| {}))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail.task.state, TaskState::Complete);
        assert_eq!(
            value(&detail, "d"),
            5 + 2 * i as i64,
            "sums flowed within each task"
        );
        let counts = completions(&*store, *id).await;
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&n| n == 1));
    }
    running.shutdown().await;
}

/// Submissions made while a commit is in flight are created in one transaction with
/// each other (group commit), and each gets its own task.
pub async fn concurrent_submissions_share_commits<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 1, no_extra);
    let t = example("diamond.yaml");
    // A task of 2,000 steps, submitted first, holds its commit long enough that the
    // submissions after it are all made while it is in flight, however slowly this
    // thread makes them (a loaded machine): the count below does not hang on timing.
    let steps: String = (0..2000)
        .map(|i| format!("  - {{name: s{i}, handler: noop}}\n"))
        .collect();
    let wide = template(&format!(
        "namespace: group\nname: wide\nversion: 1.0.0\nsteps:\n{steps}"
    ));
    engine.submit(&t, r#"{"start": 0}"#, None).await.unwrap();
    engine.submit(&wide, "{}", None).await.unwrap();
    let before = store.write_transactions();
    let contexts: Vec<String> = (1..=20).map(|i| format!(r#"{{"start": {i}}}"#)).collect();
    let mut pending: Vec<_> = std::iter::once(Box::pin(engine.submit(&wide, "{}", None)))
        .chain(
            contexts
                .iter()
                .map(|c| Box::pin(engine.submit(&t, c, None))),
        )
        .collect();
    // Every submission is polled in one pass before any is waited on.
    let mut created = vec![None; pending.len()];
    std::future::poll_fn(|cx| {
        for (f, slot) in pending.iter_mut().zip(created.iter_mut()) {
            if slot.is_none()
                && let std::task::Poll::Ready(r) = f.as_mut().poll(cx)
            {
                *slot = Some(r.unwrap().task_id);
            }
        }
        if created.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    let commits = store.write_transactions() - before;
    assert!(commits <= 3, "21 submissions took {commits} commits");
    let mut ids: Vec<_> = created.into_iter().skip(1).flatten().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "a task each");
    for id in ids {
        let detail = store.task_get(id).await.unwrap();
        assert_eq!(detail.task.state, TaskState::Pending);
        assert_eq!(detail.steps.len(), 4);
    }
}

/// A dropped engine holds its store no longer: an embedded file is closed (and its
/// lock released) at once, not when the runtime next polls the submission loop.
pub async fn a_dropped_engine_lets_go_of_its_store<S: Store>(store: Arc<S>) {
    let before = Arc::strong_count(&store);
    let engine = engine(store.clone(), 1, no_extra);
    let t = example("diamond.yaml");
    engine.submit(&t, r#"{"start": 1}"#, None).await.unwrap();
    drop(engine);
    assert_eq!(Arc::strong_count(&store), before, "the store is still held");
}

pub async fn an_orchestrator_prunes_tasks_past_their_retention<S: Store>(store: Arc<S>) {
    let config = tasker_engine::EngineConfig {
        retention: Some(Duration::from_millis(1)),
        ..tasker_engine::EngineConfig::embedded()
    };
    let engine = tasker_engine::Engine::new(
        store.clone(),
        tasker_engine::HandlerRegistry::with_builtins(),
        config,
    );
    let running = engine.start();
    let task = engine
        .submit(&example("diamond.yaml"), "{}", None)
        .await
        .unwrap();
    let done = engine.wait(task.task_id, |_| {}).await.unwrap();
    assert_eq!(done.task.state, TaskState::Complete);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.task_get(task.task_id).await {
            Err(StoreError::NotFound(_)) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("not pruned within 10 s: {other:?}"),
        }
    }
    running.shutdown().await;
}

/// Tasks of one concurrency key run at most `limit` at a time, though the worker has
/// slots for more; every task completes.
pub async fn tasks_of_one_concurrency_key_never_overlap<S: Store>(store: Arc<S>) {
    for limit in [1, 2] {
        let peak = Arc::new(AtomicUsize::new(0));
        let gauge = Gauge {
            now: Arc::new(AtomicUsize::new(0)),
            peak: peak.clone(),
        };
        let engine = engine(store.clone(), 4, |r| {
            r.register("gauge", gauge);
        });
        let running = engine.start();
        let t = template(&format!(
            "namespace: conf\nname: keyed_{limit}\nversion: 1.0.0\n\
             concurrency: {{key: context.account.id, limit: {limit}}}\n\
             steps:\n  - {{name: work, handler: gauge}}\n"
        ));
        let mut ids = Vec::new();
        for _ in 0..6 {
            let context = r#"{"account": {"id": 7}}"#;
            ids.push(engine.submit(&t, context, None).await.unwrap().task_id);
        }
        let refused = engine.submit(&t, r#"{"account": {}}"#, None).await;
        assert!(
            refused.as_ref().is_err_and(|e| e
                .to_string()
                .contains("concurrency key `context.account.id` names nothing")),
            "{refused:?}"
        );
        for id in ids {
            let detail = tokio::time::timeout(Duration::from_secs(60), engine.wait(id, |_| {}))
                .await
                .expect("the tasks finish")
                .unwrap();
            assert_eq!(detail.task.state, TaskState::Complete);
            assert_eq!(detail.task.concurrency_key.as_deref(), Some("7"));
        }
        let peak = peak.load(Ordering::SeqCst);
        assert_eq!(
            peak, limit,
            "tasks of one key running at once, limit {limit}"
        );
        running.shutdown().await;
    }
}

/// Instances of a `for_each` step under a rate limit start at its rate, spread over
/// time, none failed and each on its first attempt, though the worker has idle slots.
pub async fn rate_limited_instances_start_no_faster_than_their_rate<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 4, |_| {});
    let t = template(
        "namespace: conf\nname: rated\nversion: 1.0.0\nsteps:\n  \
         - {name: call, handler: noop, for_each: context.items, rate_limit: {key: conf_rated, per_second: 20}}\n",
    );
    let items: Vec<u32> = (0..12).collect();
    let context = serde_json::json!({ "items": items }).to_string();
    let detail = run(&engine, &t, &context).await;
    assert_eq!(detail.task.state, TaskState::Complete);
    let mut started: Vec<_> = detail
        .steps
        .iter()
        .filter(|s| s.name.starts_with("call["))
        .map(|s| {
            assert_eq!(s.attempts, 1, "{}: held back without an attempt", s.name);
            s.started_at.expect("started")
        })
        .collect();
    assert_eq!(started.len(), 12);
    started.sort_unstable();
    // An empty bucket of 20 a second: the twelfth token comes at 0.6 s.
    let spread = started[11].since(started[0]);
    assert!(spread >= Duration::from_millis(500), "{spread:?}");
    for (i, from) in started.iter().enumerate() {
        let within = started[i..]
            .iter()
            .filter(|t| t.since(*from) < Duration::from_secs(1))
            .count();
        assert!(within <= 20 + 20, "{within} starts within a second");
    }
}

/// With one worker slot and a backlog, the task of the highest priority starts first,
/// though it was submitted last.
pub async fn a_high_priority_task_submitted_last_starts_first<S: Store>(store: Arc<S>) {
    let engine = engine(store.clone(), 1, |_| {});
    let t = template(
        "namespace: conf\nname: backlog\nversion: 1.0.0\nsteps:\n  - {name: work, handler: sleep, config: {ms: 20}}\n",
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(engine.submit(&t, "{}", None).await.unwrap().task_id);
    }
    let urgent = engine
        .submit_with_priority(&t, "{}", None, Some(10))
        .await
        .unwrap()
        .task_id;
    let refused = engine
        .submit_with_priority(&t, "{}", None, Some(-5000))
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("priority must be between")),
        "{refused:?}"
    );
    let running = engine.start();
    let mut started = Vec::new();
    for id in ids.iter().chain([&urgent]) {
        let detail = tokio::time::timeout(Duration::from_secs(60), engine.wait(*id, |_| {}))
            .await
            .expect("the backlog runs")
            .unwrap();
        assert_eq!(detail.task.state, TaskState::Complete);
        started.push((detail.steps[0].started_at.expect("started"), *id));
    }
    started.sort_unstable();
    assert_eq!(started[0].1, urgent, "{started:?}");
    let rest: Vec<_> = started[1..].iter().map(|s| s.1).collect();
    assert_eq!(rest, ids, "the others in the order they came");
    running.shutdown().await;
}

/// Running workers take nothing from a paused queue; resuming wakes them.
pub async fn pausing_a_queue_holds_its_steps_until_resumed<S: Store>(store: Arc<S>) {
    let t = template(
        "namespace: conf\nname: paused\nversion: 1.0.0\nsteps:\n  \
         - {name: first, handler: noop, queue: paused_q}\n  \
         - {name: second, handler: noop, queue: paused_q, depends_on: [first]}\n",
    );
    let ran = engine(store.clone(), 2, no_extra);
    let running = ran.start();
    assert!(ran.pause_queue("paused_q", true).await.unwrap());
    let task = ran.submit(&t, "{}", None).await.unwrap();
    // The orchestrator starts the task; its first step stays on the paused queue.
    for _ in 0..200 {
        if ran.task(task.task_id).await.unwrap().steps[0].state == StepState::Enqueued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = ran.task(task.task_id).await.unwrap();
    assert_eq!(
        held.steps[0].state,
        StepState::Enqueued,
        "held while paused"
    );
    assert_eq!(held.steps[0].attempts, 0);
    assert_eq!(ran.paused_queues().await.unwrap(), ["paused_q"]);
    assert!(ran.pause_queue("paused_q", false).await.unwrap());
    let done = ran.wait(task.task_id, |_| {}).await.unwrap();
    running.shutdown().await;
    assert_eq!(done.task.state, TaskState::Complete);
    assert!(metric(
        &ran,
        "tasker_operator_actions_total{action=\"pause\"} 1"
    ));
    assert!(metric(
        &ran,
        "tasker_operator_actions_total{action=\"resume\"} 1"
    ));
    let bad = ran.pause_queue("_tasks", true).await.unwrap_err();
    assert!(bad.to_string().contains("queue `_tasks`"), "{bad}");
}
