//! Turning rows into records, once for both backends: each backend reads its rows
//! through [`Columns`], selecting the columns in the order each decoder names. JSON
//! columns are text in the database and `RawValue` in memory, never a `Value` tree;
//! names repeated in every task are interned. A value of the wrong type is
//! [`StoreError::Corrupt`], never a panic.

use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::backoff::RetryPolicy;
use tasker_core::id::{StepId, TaskId};
use tasker_core::intern::Interner;
use tasker_core::message::TraceParent;
use tasker_core::rate::RateLimit;
use tasker_core::readiness::Progress;
use tasker_core::store::{
    DeadLetter, QueueDepth, ScheduleRecord, StepExecution, StepRecord, StoreError, StoreResult,
    TaskRecord, TemplateRecord, TransitionRecord,
};
use tasker_core::time::Timestamp;

use crate::primitives::{EvalStep, Expanded, StepRow};
use tasker_core::template::ForEach;

/// A row of either backend, read by column index. Integers are read whatever their
/// width in the database; text is borrowed from the row.
pub(crate) trait Columns {
    fn str(&self, i: usize) -> StoreResult<&str>;
    fn opt_str(&self, i: usize) -> StoreResult<Option<&str>>;
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>>;
    fn opt_uuid(&self, i: usize) -> StoreResult<Option<uuid::Uuid>>;

    fn int(&self, i: usize) -> StoreResult<i64> {
        self.opt_int(i)?.ok_or_else(|| null(i))
    }

    fn uuid(&self, i: usize) -> StoreResult<uuid::Uuid> {
        self.opt_uuid(i)?.ok_or_else(|| null(i))
    }

    /// A count or position: never negative, and within `u32`.
    fn count(&self, i: usize) -> StoreResult<u32> {
        Ok(self.int(i)?.clamp(0, u32::MAX.into()) as u32)
    }

    fn owned(&self, i: usize) -> StoreResult<String> {
        self.str(i).map(str::to_owned)
    }

    fn json(&self, i: usize) -> StoreResult<Box<RawValue>> {
        raw(self.owned(i)?)
    }
}

fn null(i: usize) -> StoreError {
    StoreError::Corrupt(format!("column {i} is null"))
}

/// `id, namespace, name, version, state, context, idempotency_key, created_at,
/// updated_at, concurrency_key, priority, traceparent`.
pub(crate) fn task_record(r: &impl Columns) -> StoreResult<TaskRecord> {
    Ok(TaskRecord {
        id: TaskId(r.uuid(0)?),
        namespace: r.owned(1)?,
        name: r.owned(2)?,
        version: r.owned(3)?,
        state: parse(r.str(4)?)?,
        context: r.json(5)?,
        idempotency_key: r.opt_str(6)?.map(str::to_owned),
        created_at: Timestamp(r.int(7)?),
        updated_at: Timestamp(r.int(8)?),
        concurrency_key: r.opt_str(9)?.map(str::to_owned),
        priority: r.int(10)?.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
        traceparent: trace_context(r.opt_str(11)?),
    })
}

/// A stored trace context; one that does not parse only loses the task's trace.
pub(crate) fn trace_context(text: Option<&str>) -> Option<TraceParent> {
    text.and_then(|t| t.parse().ok())
}

/// `name, namespace, template, version, cron, timezone, context, catch_up, paused,
/// next_fire, last_fire, created_at`.
pub(crate) fn schedule_record(r: &impl Columns) -> StoreResult<ScheduleRecord> {
    Ok(ScheduleRecord {
        name: r.owned(0)?,
        namespace: r.owned(1)?,
        template: r.owned(2)?,
        version: r.owned(3)?,
        cron: r.owned(4)?,
        timezone: r.owned(5)?,
        context: r.json(6)?,
        catch_up: r.str(7)?.parse().map_err(StoreError::Corrupt)?,
        paused: r.int(8)? != 0,
        next_fire: r.opt_int(9)?.map(Timestamp),
        last_fire: r.opt_int(10)?.map(Timestamp),
        created_at: Timestamp(r.int(11)?),
    })
}

/// `id, position, name, handler, queue, state, attempts, max_attempts, results, error,
/// started_at, completed_at, wait_signal, rate_limit, rate_booked` of a step of `task_id`;
/// `depends_on` is left empty (see [`link_parents`]).
pub(crate) fn step_record(r: &impl Columns, task_id: TaskId) -> StoreResult<StepRecord> {
    Ok(StepRecord {
        id: StepId(r.uuid(0)?),
        task_id,
        position: r.count(1)?,
        name: r.owned(2)?,
        handler: r.owned(3)?,
        queue: r.owned(4)?,
        depends_on: Vec::new(),
        state: parse(r.str(5)?)?,
        attempts: r.count(6)?,
        max_attempts: r.count(7)?,
        results: r.opt_str(8)?.map(|t| raw(t.to_owned())).transpose()?,
        error: r.opt_str(9)?.map(str::to_owned),
        started_at: r.opt_int(10)?.map(Timestamp),
        completed_at: r.opt_int(11)?.map(Timestamp),
        waits_for: r.opt_str(12)?.map(str::to_owned),
        rate_limit: r.opt_str(13)?.map(rate_limit).transpose()?,
        rate_booked: r.opt_int(14)?.map(Timestamp),
    })
}

fn rate_limit(text: &str) -> StoreResult<Box<RateLimit>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("rate_limit: {e}")))
}

/// A step's `rate_limit` as stored (NULL for a step without one).
pub(crate) fn rate_limit_column(step: &tasker_core::template::StepTemplate) -> Option<String> {
    let limit = step.rate_limit.as_ref()?;
    Some(serde_json::to_string(limit).expect("a string and numbers serialize"))
}

/// A step's `for_each` as stored (NULL for a step that does not fan out).
pub(crate) fn for_each_column(step: &tasker_core::template::StepTemplate) -> Option<String> {
    let each = step.for_each.as_ref()?;
    Some(serde_json::to_string(each).expect("a string and a number serialize"))
}

fn for_each(text: &str) -> StoreResult<Box<ForEach>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("for_each: {e}")))
}

/// `id, task_id, position, state, instances_left` of a `for_each` step.
pub(crate) fn expanded(r: &impl Columns) -> StoreResult<Expanded> {
    Ok(Expanded {
        id: StepId(r.uuid(0)?),
        task_id: TaskId(r.uuid(1)?),
        position: r.count(2)?,
        state: parse(r.str(3)?)?,
        left: r.opt_int(4)?.map(|n| n.clamp(0, u32::MAX.into()) as u32),
    })
}

/// A step's `decides` as stored: `[[name, position], …]`, NULL when it decides nothing.
pub(crate) fn decides_column(
    template: &tasker_core::template::TaskTemplate,
    step: &tasker_core::template::StepTemplate,
) -> Option<String> {
    if step.decides.is_empty() {
        return None;
    }
    let positions: Vec<(&str, usize)> = step
        .decides
        .iter()
        .filter_map(|name| {
            let position = template.steps.iter().position(|s| s.name == *name)?;
            Some((name.as_str(), position))
        })
        .collect();
    Some(serde_json::to_string(&positions).expect("names and numbers serialize"))
}

/// The stored `decides` column: the children by name and position.
pub(crate) fn decides(text: Option<&str>) -> StoreResult<Vec<(std::sync::Arc<str>, u32)>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(std::borrow::Cow<str>, u32)> =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("decides: {e}")))?;
    let names = Interner::global();
    Ok(pairs
        .into_iter()
        .map(|(name, position)| (names.intern(&name), position))
        .collect())
}

/// `task_id, attempts, namespace, task name, version, step name, handler, config,
/// context, the parents' results (a JSON array of `[name, results]`), the retry policy
/// (JSON), timeout_ms, decides, item_index, item` of step `step_id`.
pub(crate) fn execution(r: &impl Columns, step_id: StepId) -> StoreResult<StepExecution> {
    let names = Interner::global();
    let parents: Vec<(std::borrow::Cow<str>, Box<RawValue>)> = serde_json::from_str(r.str(9)?)
        .map_err(|e| StoreError::Corrupt(format!("parent results: {e}")))?;
    let retry: RetryPolicy = serde_json::from_str(r.str(10)?)
        .map_err(|e| StoreError::Corrupt(format!("retry policy: {e}")))?;
    Ok(StepExecution {
        task_id: TaskId(r.uuid(0)?),
        step_id,
        attempt: r.count(1)?,
        namespace: names.intern(r.str(2)?),
        task_name: names.intern(r.str(3)?),
        task_version: names.intern(r.str(4)?),
        step_name: names.intern(r.str(5)?),
        handler: names.intern(r.str(6)?),
        config: r.json(7)?,
        context: r.json(8)?,
        parents: parents
            .into_iter()
            .map(|(n, r)| (names.intern(&n), r))
            .collect(),
        decides: decides(r.opt_str(12)?)?
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        retry,
        timeout: Duration::from_millis(r.int(11)?.max(0) as u64),
        item: match r.opt_int(13)? {
            Some(index) => Some((index.clamp(0, u32::MAX.into()) as u32, r.json(14)?)),
            None => None,
        },
        traceparent: None,
    })
}

/// `name, results` of an ancestor (results `null` when it has none).
pub(crate) fn ancestor(r: &impl Columns) -> StoreResult<(std::sync::Arc<str>, Box<RawValue>)> {
    let results = r.opt_str(1)?.unwrap_or("null");
    Ok((
        Interner::global().intern(r.str(0)?),
        raw(results.to_owned())?,
    ))
}

/// `id, task_id, position, state, queue, waiting_on, live_parents, wait_signal,
/// for_each`.
pub(crate) fn eval_step(r: &impl Columns) -> StoreResult<EvalStep> {
    Ok(EvalStep {
        for_each: r.opt_str(8)?.map(for_each).transpose()?,
        wait: r.opt_str(7)?.map(|s| Interner::global().intern(s)),
        id: StepId(r.uuid(0)?),
        task_id: TaskId(r.uuid(1)?),
        position: r.count(2)?,
        state: parse(r.str(3)?)?,
        queue: Interner::global().intern(r.str(4)?),
        waiting_on: r.count(5)?,
        live_parents: r.count(6)?,
    })
}

/// `task_id, name, queue, state, attempts, max_attempts, timeout_ms, position, decides,
/// wait_signal, instance_of, instances_left, rate_limit, rate_booked`.
pub(crate) fn step_row(r: &impl Columns) -> StoreResult<StepRow> {
    Ok(StepRow {
        rate_booked: r.opt_int(13)?.map(Timestamp),
        rate_limit: r.opt_str(12)?.map(rate_limit).transpose()?,
        instance_of: r.opt_int(10)?.map(|p| p.clamp(0, u32::MAX.into()) as u32),
        expanded: r.opt_int(11)?.is_some(),
        wait: r.opt_str(9)?.map(str::to_owned),
        task_id: TaskId(r.uuid(0)?),
        name: r.owned(1)?,
        queue: r.owned(2)?,
        state: parse(r.str(3)?)?,
        attempts: r.count(4)?,
        max_attempts: r.count(5)?,
        timeout: Duration::from_millis(r.int(6)?.max(0) as u64),
        position: r.count(7)?,
        decides: decides(r.opt_str(8)?)?,
    })
}

/// `step_id, from_state, to_state, reason, at` of a transition of `task_id`.
pub(crate) fn transition(r: &impl Columns, task_id: TaskId) -> StoreResult<TransitionRecord> {
    Ok(TransitionRecord {
        task_id,
        step_id: r.opt_uuid(0)?.map(StepId),
        from_state: r.opt_str(1)?.map(str::to_owned),
        to_state: r.owned(2)?,
        reason: r.owned(3)?,
        at: Timestamp(r.int(4)?),
    })
}

/// `msg_id, read_ct, message, reason, archived_at` of a dead letter of `queue`.
pub(crate) fn dead_letter(r: &impl Columns, queue: &str) -> StoreResult<DeadLetter> {
    Ok(DeadLetter {
        queue: queue.to_owned(),
        msg_id: r.int(0)?,
        read_ct: r.int(1)?.clamp(0, i32::MAX.into()) as i32,
        body: r.owned(2)?,
        reason: r.owned(3)?,
        archived_at: Timestamp(r.int(4)?),
    })
}

/// Wraps stored JSON text without copying it (the text is checked, not rebuilt).
pub(crate) fn raw(text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}")))
}

/// Parses a stored name (a state, say) into its type.
pub(crate) fn parse<T: std::str::FromStr>(text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| StoreError::Corrupt(e.to_string()))
}

/// How many parents each step of a new task waits on: all of them.
pub(crate) fn parent_counts(n: usize, edges: &[(usize, usize)]) -> Vec<u32> {
    tasker_core::readiness::waiting_on(&vec![tasker_core::StepState::Pending; n], edges)
}

/// A task's counters as stored.
pub(crate) fn counters(left: i64, active: i64) -> Progress {
    Progress {
        left: left.max(0) as u32,
        active: active.max(0) as u32,
    }
}

/// A task's progress from its row: state, step count, steps left, steps active.
pub(crate) fn task_progress(
    state: &str,
    steps: i64,
    left: i64,
    active: i64,
) -> Result<tasker_core::store::TaskProgress, StoreError> {
    Ok(tasker_core::store::TaskProgress {
        state: parse(state)?,
        steps: steps.max(0) as u32,
        done: (steps - left).max(0) as u32,
        active: active.max(0) as u32,
    })
}

/// Fills each step's `depends_on` from `(parent, child)` position pairs, in parent order.
pub(crate) fn link_parents(steps: &mut [StepRecord], mut edges: Vec<(usize, usize)>) {
    edges.sort_unstable();
    for (parent, child) in edges {
        let name = steps[parent].name.clone();
        steps[child].depends_on.push(name);
    }
}

/// A `templates` row: (namespace, name, version, definition, created_at).
pub(crate) fn template(row: (String, String, String, String, i64)) -> TemplateRecord {
    let (namespace, name, version, definition, created_at) = row;
    TemplateRecord {
        namespace,
        name,
        version,
        definition,
        created_at: Timestamp(created_at),
    }
}

/// A (queue, message count) row.
pub(crate) fn queue_depth((queue, messages): (String, i64)) -> QueueDepth {
    QueueDepth {
        queue,
        messages: messages.max(0) as u64,
    }
}

/// The steps of `template` as a JSON array of `[name, handler, queue, retry policy]`,
/// for generating finished tasks inside the database.
#[cfg(feature = "bench")]
pub(crate) fn preload_steps(
    template: &tasker_core::template::TaskTemplate,
) -> Result<String, StoreError> {
    let steps: Vec<(&str, &str, &str, String)> = template
        .steps
        .iter()
        .map(|s| {
            let retry =
                serde_json::to_string(&s.retry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok((s.name.as_str(), s.handler.as_str(), s.queue.as_str(), retry))
        })
        .collect::<Result<_, StoreError>>()?;
    serde_json::to_string(&steps).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of text columns (or nulls), numbers and ids parsed from the text.
    struct TextRow(Vec<Option<&'static str>>);

    impl Columns for TextRow {
        fn str(&self, i: usize) -> StoreResult<&str> {
            self.opt_str(i)?.ok_or_else(|| null(i))
        }

        fn opt_str(&self, i: usize) -> StoreResult<Option<&str>> {
            Ok(self.0[i])
        }

        fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
            self.0[i].map(parse).transpose()
        }

        fn opt_uuid(&self, i: usize) -> StoreResult<Option<uuid::Uuid>> {
            self.0[i].map(parse).transpose()
        }
    }

    const ID: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    fn task(state: &'static str, context: &'static str, created: Option<&'static str>) -> TextRow {
        TextRow(vec![
            Some(ID),
            Some("n"),
            Some("t"),
            Some("1.0.0"),
            Some(state),
            Some(context),
            None,
            created,
            Some("2"),
            None,
            Some("0"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ])
    }

    #[test]
    fn a_row_decodes_into_its_record() {
        let t = task("in_progress", r#"{"a":1}"#, Some("1")).decoded();
        assert_eq!(t.state, tasker_core::TaskState::InProgress);
        assert_eq!(t.context.get(), r#"{"a":1}"#, "kept as written");
        assert_eq!((t.created_at, t.idempotency_key), (Timestamp(1), None));
        let traceparent = t.traceparent.expect("a trace context").to_string();
        assert_eq!(
            traceparent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let mut garbled = task("in_progress", "{}", Some("1"));
        garbled.0[11] = Some("00-nonsense");
        assert_eq!(
            garbled.decoded().traceparent,
            None,
            "loses its trace, not its task"
        );
    }

    #[test]
    fn stored_data_that_does_not_decode_is_corrupt_not_a_panic() {
        for (row, says) in [
            (task("sleeping", "{}", Some("1")), "sleeping"),
            (task("pending", "{not json", Some("1")), "stored JSON"),
            (task("pending", "{}", None), "column 7 is null"),
            (task("pending", "{}", Some("soon")), "invalid digit"),
        ] {
            match task_record(&row) {
                Err(StoreError::Corrupt(why)) => assert!(why.contains(says), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    impl TextRow {
        fn decoded(&self) -> TaskRecord {
            task_record(self).unwrap()
        }
    }
}
