//! The list routes' query parameters. Pagination is by cursor: a page asks the store
//! for one row more than its `limit`, and that row's presence says whether a next page
//! exists.

use tasker_core::time::Timestamp;

use crate::error::ApiError;

/// The `limit` query parameter: `default` when absent, otherwise 1 to `max`.
pub(crate) fn limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "limit: `{}` is not a number from 1 to {max}",
                raw.escape_debug()
            ),
        )),
    }
}

/// Cuts `rows` (fetched with `limit + 1`) to the page; true when more follow.
pub(crate) fn truncate<T>(rows: &mut Vec<T>, limit: u32) -> bool {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    more
}

/// A `namespace` filter, checked by the namespace rule before it reaches the store.
pub(crate) fn namespace(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    checked("namespace", value, tasker_core::names::check_queue_name)
}

/// A template `name` filter, checked by the name rule before it reaches the store.
pub(crate) fn name(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    checked("name", value, tasker_core::names::check_name)
}

fn checked<'a>(
    field: &str,
    value: Option<&'a str>,
    rule: fn(&str) -> Result<(), String>,
) -> Result<Option<&'a str>, ApiError> {
    if let Some(v) = value {
        rule(v).map_err(|why| {
            ApiError::bad_request(
                "invalid_query",
                format!("{field} `{}`: {why}", v.escape_debug()),
            )
        })?;
    }
    Ok(value)
}

/// An RFC 3339 instant in the parameter `field`.
pub(crate) fn timestamp(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            v.parse()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("{field}: {e}")))
        })
        .transpose()
}
