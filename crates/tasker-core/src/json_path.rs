//! A dotted path into JSON text (`order.lines.0`), read without parsing more than the
//! objects and arrays on the way: what `for_each` and a concurrency key point at.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// The value at `path` (object keys; a number indexes an array) in `source`, as
/// written, or which key names nothing (`no \`lines\` in an object`).
pub fn at<'a>(source: &'a RawValue, path: &[&str]) -> Result<&'a RawValue, String> {
    let mut at = source;
    for key in path {
        at = child(at, key).ok_or_else(|| format!("no `{key}` in {}", kind(at)))?;
    }
    Ok(at)
}

/// The value under `key` of an object, or at index `key` of an array.
fn child<'a>(value: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    if let Ok(object) = serde_json::from_str::<HashMap<String, &RawValue>>(value.get()) {
        return object.get(key).copied();
    }
    let list: Vec<&RawValue> = serde_json::from_str(value.get()).ok()?;
    list.get(key.parse::<usize>().ok()?).copied()
}

/// What kind of JSON value `value` is, for messages.
pub fn kind(value: &RawValue) -> &'static str {
    match value.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}
