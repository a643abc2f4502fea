//! A `for_each` step's items: the array at a path into its source (the task's context
//! or a parent's result), read as views of the source's text — each element is handed
//! on as written, never rebuilt — and the source without them, which is what its
//! instances are given: each has its own item, and none carries every other one.

use serde_json::value::RawValue;

use crate::json_path;

/// The elements of the array at `path` (object keys; a number indexes an array) in
/// `source`, or why there is none: named `what` (`context.items`, say) in the message.
pub fn items<'a>(
    source: &'a RawValue,
    path: &[&str],
    what: &str,
) -> Result<Vec<&'a RawValue>, String> {
    let at = json_path::at(source, path)
        .map_err(|why| format!("for_each `{what}` names nothing: {why}"))?;
    serde_json::from_str(at.get()).map_err(|_| {
        format!(
            "for_each `{what}` is not an array: it is {}",
            json_path::kind(at)
        )
    })
}

/// `source` with the value at `path` replaced by `null` (the whole source when the path
/// is empty). Called once per fan-out, not per instance.
pub fn without(source: &RawValue, path: &[&str]) -> Box<RawValue> {
    let Some((last, within)) = path.split_last() else {
        return RawValue::NULL.to_owned();
    };
    let mut value: serde_json::Value = match serde_json::from_str(source.get()) {
        Ok(v) => v,
        Err(_) => return source.to_owned(),
    };
    let parent = within.iter().try_fold(&mut value, |at, key| match at {
        serde_json::Value::Object(map) => map.get_mut(*key),
        serde_json::Value::Array(list) => list.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    });
    match parent {
        Some(serde_json::Value::Object(map)) => {
            map.insert((*last).to_owned(), serde_json::Value::Null);
        }
        Some(serde_json::Value::Array(list)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| list.get_mut(i)) {
                *slot = serde_json::Value::Null;
            }
        }
        _ => {}
    }
    serde_json::value::to_raw_value(&value).expect("a parsed value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn path<'a>(keys: &[&'a str]) -> Vec<&'a str> {
        keys.to_vec()
    }

    #[test]
    fn elements_are_read_where_the_path_leads_as_written() {
        let source = raw(r#"{"order": {"lines": [{"sku": "A", "qty": 2}, 7, null, "x"]}}"#);
        let got = items(&source, &path(&["order", "lines"]), "context.order.lines").unwrap();
        let texts: Vec<&str> = got.iter().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"sku": "A", "qty": 2}"#, "7", "null", r#""x""#]);
        let whole = raw("[1, 2]");
        assert_eq!(
            items(&whole, &[], "list").unwrap().len(),
            2,
            "no path: the value itself"
        );
        let nested = raw(r#"{"pages": [[1], [2, 3]]}"#);
        assert_eq!(
            items(&nested, &path(&["pages", "1"]), "p").unwrap().len(),
            2
        );
        assert!(
            items(&raw(r#"{"a": []}"#), &path(&["a"]), "a")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_source_without_its_items_keeps_everything_else() {
        let source = raw(r#"{"order": {"id": 7, "lines": [1, 2, 3]}, "pages": [[1], [2]]}"#);
        assert_eq!(
            without(&source, &path(&["order", "lines"])).get(),
            r#"{"order":{"id":7,"lines":null},"pages":[[1],[2]]}"#
        );
        assert_eq!(
            without(&source, &path(&["pages", "1"])).get(),
            r#"{"order":{"id":7,"lines":[1,2,3]},"pages":[[1],null]}"#
        );
        assert_eq!(without(&raw("[1, 2]"), &[]).get(), "null");
    }

    #[test]
    fn a_missing_key_or_a_value_that_is_not_an_array_is_named() {
        let source = raw(r#"{"order": {"id": 7}}"#);
        assert_eq!(
            items(&source, &path(&["order", "lines"]), "context.order.lines").unwrap_err(),
            "for_each `context.order.lines` names nothing: no `lines` in an object"
        );
        assert_eq!(
            items(&source, &path(&["order", "id"]), "context.order.id").unwrap_err(),
            "for_each `context.order.id` is not an array: it is a number"
        );
        assert_eq!(
            items(&raw("null"), &path(&["x"]), "a.x").unwrap_err(),
            "for_each `a.x` names nothing: no `x` in null"
        );
    }
}
