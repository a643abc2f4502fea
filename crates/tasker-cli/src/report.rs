//! How a task is shown: a table for people, one JSON object for programs.

use std::fmt::Write;

use tasker_core::duration::HumanDuration;
use tasker_core::state::{StepState, TaskState};
use tasker_core::store::{TaskDetail, TaskProgress, TaskRecord};

/// `namespace/name@version`.
pub fn template_of(task: &TaskRecord) -> String {
    format!("{}/{}@{}", task.namespace, task.name, task.version)
}

/// The task as a table of steps, followed by the results of its final steps.
pub fn table(detail: &TaskDetail) -> String {
    let t = &detail.task;
    let mut out = String::new();
    let _ = write!(out, "task {} ({}): {}", t.id, template_of(t), t.state);
    if t.priority != 0 {
        let _ = write!(
            out,
            ", priority {} (its steps go before lower ones)",
            t.priority
        );
    }
    out.push('\n');
    let width = detail
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "\n  {:<width$}  {:<17}  {:>8}  {:>9}",
        "STEP", "STATE", "ATTEMPTS", "DURATION"
    );
    for s in &detail.steps {
        let duration = match (s.started_at, s.completed_at) {
            (Some(a), Some(b)) => HumanDuration(b.since(a)).to_string(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:<17}  {:>8}  {:>9}",
            s.name,
            s.state.as_str(),
            format!("{}/{}", s.attempts, s.max_attempts),
            duration
        );
    }
    let errors: Vec<_> = detail
        .steps
        .iter()
        .filter_map(|s| Some((&s.name, s.error.as_ref()?)))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nerrors:");
        for (name, error) in errors {
            let _ = writeln!(out, "  {name}: {error}");
        }
    }
    let waiting: Vec<_> = detail
        .steps
        .iter()
        .filter(|s| s.state == StepState::Waiting)
        .filter_map(|s| Some((&s.name, s.waits_for.as_ref()?)))
        .collect();
    if !waiting.is_empty() {
        let _ = writeln!(
            out,
            "\nwaiting for signals (send with `tasker signal {} <name>`):",
            t.id
        );
        for (name, signal) in waiting {
            let _ = writeln!(out, "  {name}: {signal}");
        }
    }
    // The final steps are those no step depends on.
    let parents: std::collections::HashSet<&str> = detail
        .steps
        .iter()
        .flat_map(|s| s.depends_on.iter().map(String::as_str))
        .collect();
    let finals: Vec<_> = detail
        .steps
        .iter()
        .filter(|s| !parents.contains(s.name.as_str()))
        .filter_map(|s| Some((&s.name, s.results.as_ref()?)))
        .collect();
    if !finals.is_empty() {
        let _ = writeln!(out, "\nresults:");
        for (name, results) in finals {
            let _ = writeln!(out, "  {name}: {}", results.get());
        }
    }
    out
}

/// What a pause holds back — the task, if its template is paused, and its enqueued
/// steps on a paused queue — and how to let it go.
pub fn held(detail: &TaskDetail, paused: &[String], templates: &[(String, String)]) -> String {
    let mut out = String::new();
    let t = &detail.task;
    let paused_template = templates
        .iter()
        .any(|(ns, name)| *ns == t.namespace && *name == t.name);
    if t.state == TaskState::Pending && paused_template {
        let key = format!("{}/{}", t.namespace, t.name);
        let _ = writeln!(
            out,
            "\nheld: template {key} is paused (tasker template resume {key})"
        );
    } else if let (TaskState::Pending, Some(key)) = (t.state, &t.concurrency_key) {
        let _ = writeln!(
            out,
            "\nheld: concurrency key `{key}` of {}/{} is at its limit; the task starts when one of that key's tasks ends",
            t.namespace, t.name
        );
    }
    for s in &detail.steps {
        if s.state == StepState::Enqueued && paused.contains(&s.queue) {
            let _ = writeln!(
                out,
                "\nheld: {} waits on queue `{}`, which is paused (tasker queue resume {})",
                s.name, s.queue, s.queue
            );
        }
        if let (StepState::Enqueued, Some(limit), Some(at)) =
            (s.state, &s.rate_limit, s.rate_booked)
        {
            let _ = writeln!(
                out,
                "\nheld: {} waits for a token of rate limit `{}` ({}/s): it has the one of {at}",
                s.name, limit.key, limit.per_second
            );
        }
    }
    out
}

/// The task as the API shows it (`tasker_core::views::TaskView`).
pub fn json(detail: &TaskDetail) -> String {
    tasker_core::views::TaskView::json(detail)
}

/// `done/total` and how many steps are queued or running, for a live progress line.
pub fn progress(p: &TaskProgress) -> String {
    let mut line = format!("[{}/{}] steps done", p.done, p.steps);
    if p.active > 0 {
        let _ = write!(line, " · {} queued or running", p.active);
    }
    line
}

#[cfg(test)]
mod tests {
    use tasker_core::Timestamp;
    use tasker_core::id::{StepId, TaskId};
    use tasker_core::store::{StepRecord, TaskRecord};

    use super::*;

    fn step(name: &str, queue: &str, state: StepState) -> StepRecord {
        StepRecord {
            id: StepId::new(),
            task_id: TaskId::new(),
            position: 0,
            name: name.into(),
            handler: "noop".into(),
            queue: queue.into(),
            depends_on: Vec::new(),
            state,
            attempts: 0,
            max_attempts: 3,
            results: None,
            error: None,
            started_at: None,
            completed_at: None,
            waits_for: None,
            rate_limit: None,
            rate_booked: None,
        }
    }

    fn task() -> TaskRecord {
        TaskRecord {
            id: TaskId::new(),
            namespace: "ns".into(),
            name: "t".into(),
            version: "1.0.0".into(),
            state: TaskState::InProgress,
            context: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            idempotency_key: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            concurrency_key: None,
            priority: 0,
            traceparent: None,
        }
    }

    #[test]
    fn the_table_names_a_priority_other_than_0() {
        let mut detail = TaskDetail {
            task: task(),
            steps: vec![step("a", "q", StepState::Enqueued)],
        };
        assert!(!table(&detail).lines().next().unwrap().contains("priority"));
        detail.task.priority = 7;
        let first = table(&detail).lines().next().unwrap().to_owned();
        assert!(
            first.ends_with("in_progress, priority 7 (its steps go before lower ones)"),
            "{first}"
        );
    }

    #[test]
    fn a_step_on_a_paused_queue_is_shown_held_with_the_way_out() {
        let detail = TaskDetail {
            task: task(),
            steps: vec![
                step("a", "held", StepState::Enqueued),
                step("b", "held", StepState::Complete),
                step("c", "free", StepState::Enqueued),
            ],
        };
        assert_eq!(
            held(&detail, &["held".to_owned()], &[]),
            "\nheld: a waits on queue `held`, which is paused (tasker queue resume held)\n"
        );
        assert_eq!(held(&detail, &[], &[]), "");
        let pending = TaskDetail {
            task: TaskRecord {
                state: TaskState::Pending,
                ..detail.task.clone()
            },
            steps: Vec::new(),
        };
        let paused = [("ns".to_owned(), "t".to_owned())];
        assert_eq!(
            held(&pending, &[], &paused),
            "\nheld: template ns/t is paused (tasker template resume ns/t)\n"
        );
        assert_eq!(
            held(&detail, &[], &paused),
            "",
            "a started task is not held"
        );
        let keyed = TaskDetail {
            task: TaskRecord {
                concurrency_key: Some("ada".into()),
                ..pending.task.clone()
            },
            steps: Vec::new(),
        };
        let booked = StepRecord {
            rate_limit: Some(Box::new(tasker_core::rate::RateLimit {
                key: "partner".into(),
                per_second: 2.0,
                burst: 2,
            })),
            rate_booked: Some(Timestamp(1_000_000)),
            ..step("call", "free", StepState::Enqueued)
        };
        let limited = TaskDetail {
            task: detail.task.clone(),
            steps: vec![booked],
        };
        assert_eq!(
            held(&limited, &[], &[]),
            "\nheld: call waits for a token of rate limit `partner` (2/s): it has the one of 1970-01-01T00:00:01.000Z\n"
        );
        assert_eq!(
            held(&keyed, &[], &[]),
            "\nheld: concurrency key `ada` of ns/t is at its limit; the task starts when one of that key's tasks ends\n"
        );
    }
}
