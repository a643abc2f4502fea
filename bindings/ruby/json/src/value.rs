//! The reader making `serde_json::Value`, to check it against serde_json's own reader.

use serde_json::{Map, Number, Value};

use crate::Builder;

/// Makes `serde_json::Value`s, numbers as serde_json makes them: an integer beyond
/// `i64` is a `u64` if it fits, else a float.
pub struct ValueBuilder;

/// An integer beyond `f64`, which serde_json refuses and Ruby keeps exact.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("an integer beyond the range of f64")]
pub struct IntegerBeyondF64;

impl Builder for ValueBuilder {
    type Value = Value;
    type Key = String;
    type Object = Map<String, Value>;
    type Array = Vec<Value>;
    type Error = IntegerBeyondF64;

    fn null(&mut self) -> Value {
        Value::Null
    }

    fn boolean(&mut self, b: bool) -> Value {
        Value::Bool(b)
    }

    fn integer(&mut self, n: i64) -> Value {
        Value::from(n)
    }

    fn big_integer(&mut self, digits: &str) -> Result<Value, IntegerBeyondF64> {
        if let Ok(n) = digits.parse::<u64>() {
            return Ok(Value::from(n));
        }
        digits
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or(IntegerBeyondF64)
    }

    fn float(&mut self, f: f64) -> Value {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }

    fn string(&mut self, s: &str) -> Value {
        Value::String(s.to_owned())
    }

    fn key(&mut self, s: &str) -> String {
        s.to_owned()
    }

    fn object(&mut self) -> Map<String, Value> {
        Map::new()
    }

    fn insert(
        &mut self,
        object: &mut Map<String, Value>,
        key: String,
        value: Value,
    ) -> Result<(), IntegerBeyondF64> {
        object.insert(key, value);
        Ok(())
    }

    fn end_object(&mut self, object: Map<String, Value>) -> Value {
        Value::Object(object)
    }

    fn array(&mut self) -> Vec<Value> {
        Vec::new()
    }

    fn push(&mut self, array: &mut Vec<Value>, value: Value) -> Result<(), IntegerBeyondF64> {
        array.push(value);
        Ok(())
    }

    fn end_array(&mut self, array: Vec<Value>) -> Value {
        Value::Array(array)
    }
}
