//! Turning rows into records, alike for both backends. JSON columns are text in the
//! database and `RawValue` in memory, never a `Value` tree.

use serde_json::value::RawValue;
use tasker_core::readiness::Progress;
use tasker_core::store::{QueueDepth, StepRecord, StoreError, TemplateRecord};
use tasker_core::time::Timestamp;

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
