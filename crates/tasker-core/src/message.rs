//! What travels between processes, one wire type per message:
//!
//! | type | carries | from → to |
//! |---|---|---|
//! | [`TaskStart`] | a created task to start, or (with `expire_wait`) a wait whose timeout is due | the transaction that creates the task, or that begins the wait, delayed by the timeout → orchestrators (queue `_tasks`) |
//! | [`StepMessage`] | a step to run: its ids (and its task's [`TraceParent`], when traced) | the transaction that makes it ready → workers (the step's queue) |
//! | [`ExecutionMessage`] | everything a handler is given | a worker → handlers outside Rust (the `shell` handler's stdin) |
//!
//! Nothing else is a message: a client's request is the API's body (or a call in the
//! same process), and a worker records an attempt's outcome in its own transaction.
//! Queue messages are sent in the transaction that makes them due, so a message exists
//! exactly when its step or task is waiting for it.
//!
//! The execution message decodes as a view of the text it was read from (names borrowed
//! unless JSON escapes force a copy, see [`crate::borrowed`]; payloads as `&RawValue`,
//! passed through without being parsed). Messages encode into a reused
//! [`EncodeBuffer`](crate::encode::EncodeBuffer), never through a `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::borrowed::CowStr;
use crate::id::{StepId, TaskId};

/// The internal queue that carries new tasks to orchestrators. User queues start with
/// a letter, so this name cannot collide with one.
pub const TASK_QUEUE: &str = "_tasks";

/// `items` grouped by queue, queues in the order they first appear: the shape of every
/// per-queue batch (sends, deletes, claims).
pub fn by_queue<'q, T>(items: impl IntoIterator<Item = (&'q str, T)>) -> Vec<(&'q str, Vec<T>)> {
    let mut groups: Vec<(&str, Vec<T>)> = Vec::new();
    for (queue, item) in items {
        match groups.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, group)) => group.push(item),
            None => groups.push((queue, vec![item])),
        }
    }
    groups
}

/// A created task for an orchestrator to start; or, with `expire_wait`, a step of it
/// that waits for a signal, sent when the wait begins and visible when its timeout is
/// due: the orchestrator that reads it fails the step if it still waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_wait: Option<StepId>,
}

/// A schedule's tick, sent to the task queue delayed until `at` (microseconds since the
/// epoch): the orchestrator that reads it when due fires the schedule's ticks that have
/// come, in that transaction, and sends the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTick {
    pub schedule: String,
    pub at: i64,
}

/// A step for a worker to run: the worker claims the step and loads the rest in one
/// query, so the message names it and nothing else — but its task's priority, which
/// orders the queue (written only when it is not 0), and its task's trace context
/// (written only for a task submitted with traces on), which the step's span joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage {
    pub task_id: TaskId,
    pub step_id: StepId,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_trace"
    )]
    pub traceparent: Option<TraceParent>,
}

/// A W3C trace context (`traceparent`, version `00`): the trace a task belongs to and
/// its task span, which the spans of its steps are children of. Held as bytes, so a
/// message that carries one stays `Copy` and costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

/// Why a `traceparent` does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero)")]
pub struct BadTraceParent(pub String);

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = BadTraceParent;

    fn from_str(s: &str) -> Result<Self, BadTraceParent> {
        let bad = || BadTraceParent(s.to_owned());
        /// Lowercase hex only, as the W3C format requires.
        fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
            if text.len() != 2 * N || !text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            {
                return None;
            }
            let mut out = [0; N];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
            }
            Some(out)
        }
        let mut parts = s.split('-');
        let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let parent = TraceParent {
            trace_id: hex(trace).ok_or_else(bad)?,
            span_id: hex(span).ok_or_else(bad)?,
            flags: hex::<1>(flags).ok_or_else(bad)?[0],
        };
        if parent.trace_id == [0; 16] || parent.span_id == [0; 8] {
            return Err(bad());
        }
        Ok(parent)
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = CowStr.deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A step message's trace context, dropped when it does not parse: the step still runs
/// (outside its trace) rather than its message going to the dead letters.
fn lenient_trace<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceParent>, D::Error> {
    Ok(CowStr.deserialize(d)?.parse().ok())
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Everything a handler is given, for handlers that run outside the worker's Rust
/// code (the `shell` handler's standard input).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutionMessage<'a> {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub attempt: u32,
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub task_name: Cow<'a, str>,
    #[serde(borrow)]
    pub task_version: Cow<'a, str>,
    #[serde(borrow)]
    pub step_name: Cow<'a, str>,
    #[serde(borrow)]
    pub context: &'a RawValue,
    #[serde(borrow)]
    pub config: &'a RawValue,
    /// The parents' results, by name: a JSON object.
    #[serde(borrow)]
    pub parents: Parents<'a>,
    /// Every ancestor's results (parents included), by name, where the receiver asked
    /// for them (the `shell` handler's stdin); otherwise empty.
    #[serde(borrow, default)]
    pub ancestors: Parents<'a>,
    /// For an instance of a `for_each` step: its element of the array, and its index.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub item: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The attempt's trace context, when its worker exports traces.
    #[serde(
        default,
        deserialize_with = "lenient_trace",
        skip_serializing_if = "Option::is_none"
    )]
    pub traceparent: Option<TraceParent>,
}

/// A field that is there, whatever its value: an item may be JSON `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parent results by name: encoded as a JSON object, decoded without copying.
#[derive(Clone, Debug, Default)]
pub struct Parents<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl Serialize for Parents<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, results) in &self.0 {
            map.serialize_entry(name, results)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Parents<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParentsVisitor;
        impl<'de> Visitor<'de> for ParentsVisitor {
            type Value = Parents<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of parent results by name")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                // No allocation for an empty object (serde_json gives no size hint).
                let mut parents = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(name) = map.next_key_seed(CowStr)? {
                    parents.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Parents(parents))
            }
        }
        d.deserialize_map(ParentsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn step_message_names_the_step_and_reads_older_messages() {
        let m = StepMessage {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            priority: 0,
            traceparent: None,
        };
        let text = json(&m);
        assert!(!text.contains("priority"), "written only when set: {text}");
        let urgent = StepMessage { priority: 7, ..m };
        assert!(json(&urgent).ends_with(r#","priority":7}"#));
        assert_eq!(
            serde_json::from_str::<StepMessage>(&json(&urgent)).unwrap(),
            urgent
        );
        assert_eq!(serde_json::from_str::<StepMessage>(&text).unwrap(), m);
        // Messages sent before they were reduced to ids also named the handler and the
        // attempt: still in a queue after an upgrade, they decode.
        let older = text.replace('}', r#","attempt":2,"handler":"sum"}"#);
        assert_eq!(serde_json::from_str::<StepMessage>(&older).unwrap(), m);
    }

    #[test]
    fn a_traced_step_message_carries_its_trace_context() {
        let traceparent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap();
        assert_eq!(
            traceparent.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let m = StepMessage {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            priority: 0,
            traceparent: Some(traceparent),
        };
        let text = json(&m);
        assert!(
            text.ends_with(
                r#","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
            ),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<StepMessage>(&text).unwrap(), m);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
        let corrupt = text.replace("-01\"", "-zz\"");
        let decoded = serde_json::from_str::<StepMessage>(&corrupt).unwrap();
        assert_eq!(
            decoded,
            StepMessage {
                traceparent: None,
                ..m
            },
            "the step, untraced"
        );
    }

    #[test]
    fn execution_message_keeps_parents_by_name() {
        let m = ExecutionMessage {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            attempt: 1,
            namespace: "n".into(),
            task_name: "t".into(),
            task_version: "1.0.0".into(),
            step_name: "d".into(),
            context: raw("{}"),
            config: raw(r#"{"value":2}"#),
            parents: Parents(vec![
                ("b".into(), raw(r#"{"value":2}"#)),
                ("c".into(), raw("null")),
            ]),
            ancestors: Parents::default(),
            item: None,
            index: None,
            traceparent: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            text.contains(r#""parents":{"b":{"value":2},"c":null},"ancestors":{}"#),
            "{text}"
        );
        let back: ExecutionMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(json(&back), text);
        let as_list = text.replace(r#""parents":{"#, r#""parents":["#);
        assert!(serde_json::from_str::<ExecutionMessage<'_>>(&as_list).is_err());
        assert!(!text.contains("item"), "a step that is no instance: {text}");
        let instance = ExecutionMessage {
            item: Some(raw(r#"{"sku":"A-1"}"#)),
            index: Some(3),
            ..back
        };
        let text = serde_json::to_string(&instance).unwrap();
        assert!(
            text.ends_with(r#""item":{"sku":"A-1"},"index":3}"#),
            "{text}"
        );
        let back: ExecutionMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.item.map(RawValue::get), back.index),
            (Some(r#"{"sku":"A-1"}"#), Some(3))
        );
    }
}
