//! Turning rows into records, alike for both backends. JSON columns are text in the
//! database and `RawValue` in memory, never a `Value` tree.

use serde_json::value::RawValue;
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
