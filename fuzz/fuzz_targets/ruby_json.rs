//! The Ruby binding's JSON reader against serde_json: it accepts exactly the texts
//! serde_json accepts, and reads the same values, but for the differences its crate
//! documents (integers beyond `f64`, `-0`, the depth limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tasker_ruby_json::{IntegerBeyondF64, ReadError, ValueBuilder, read};

/// serde_json's nesting limit; the reader is given the same one.
const SERDE_JSON_DEPTH: usize = 127;

fuzz_target!(|data: &[u8]| {
    // The binding reads Ruby Strings as UTF-8 `&str`s; anything else is refused first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = read(&mut ValueBuilder, text, SERDE_JSON_DEPTH);
    let theirs = serde_json::from_str::<Value>(text);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => assert!(
            same(&ours, &theirs),
            "{text:?}: read {ours}, serde_json read {theirs}"
        ),
        (Err(ReadError::Build(IntegerBeyondF64)), Err(e)) => assert!(
            e.to_string().starts_with("number out of range"),
            "{text:?}: an integer beyond f64, where serde_json says {e}"
        ),
        (Err(_), Err(_)) => {}
        (Ok(ours), Err(e)) => panic!("{text:?}: read {ours}, serde_json refuses it: {e}"),
        (Err(e), Ok(theirs)) => panic!("{text:?}: refused ({e}), serde_json read {theirs}"),
    }
});

/// Equal values, `-0` aside: the reader makes the integer 0 of it, serde_json -0.0.
fn same(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Number(a), Value::Number(b)) => {
            a == b
                || (a.as_u64() == Some(0)
                    && b.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, a)| b.get(k).is_some_and(|b| same(a, b)))
        }
        _ => ours == theirs,
    }
}
