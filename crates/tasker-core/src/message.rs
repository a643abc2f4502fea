//! What travels between processes, one wire type per message:
//!
//! | type | carries | between |
//! |---|---|---|
//! | [`TaskRequest`] | a task to create: template, context, idempotency key | clients → API |
//! | [`TaskStart`] | a created task to start | submitter → orchestrators (queue `_tasks`) |
//! | [`StepMessage`] | a step to run: ids, attempt, handler | store → workers (step queues) |
//! | [`ExecutionMessage`] | everything a handler is given | worker → handlers outside Rust (shell, Ruby) |
//! | [`StepResult`] | how an attempt ended | handlers → worker |
//!
//! Each decodes as a borrowed view of the buffer it was read from (`Cow` names,
//! `&RawValue` for payloads the engine passes through without looking inside), so a
//! decode allocates only where JSON escapes force a copy. Messages encode into an
//! [`EncodeBuffer`] that is reused, never through a `serde_json::Value`. Where a message
//! must outlive its buffer, its owned form holds interned `Arc<str>` names.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::id::{StepId, TaskId};
use crate::intern::Interner;
use crate::time::Timestamp;

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

/// A string borrowed from the input when it has no escapes (serde's own `Cow`
/// deserializes owned unless a field says `borrow`).
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

/// `Option<Cow<str>>` that borrows: serde's `borrow` does not reach inside an `Option`.
fn borrowed<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

/// A task to create, as a client sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRequest<'a> {
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub context: &'a RawValue,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotency_key: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub requester: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Timestamp>,
}

impl<'a> TaskRequest<'a> {
    /// Starts a request for the template `namespace/name@version`.
    pub fn builder(
        namespace: &'a str,
        name: &'a str,
        version: &'a str,
        context: &'a RawValue,
    ) -> TaskRequestBuilder<'a> {
        TaskRequestBuilder(TaskRequest {
            namespace: Cow::Borrowed(namespace),
            name: Cow::Borrowed(name),
            version: Cow::Borrowed(version),
            context,
            idempotency_key: None,
            requester: None,
            requested_at: None,
        })
    }

    /// The owned form, names interned.
    pub fn to_owned_in(&self, interner: &Interner) -> OwnedTaskRequest {
        OwnedTaskRequest {
            namespace: interner.intern(&self.namespace),
            name: interner.intern(&self.name),
            version: interner.intern(&self.version),
            context: self.context.to_owned(),
            idempotency_key: self.idempotency_key.as_deref().map(str::to_owned),
            requester: self.requester.as_deref().map(|r| interner.intern(r)),
            requested_at: self.requested_at,
        }
    }
}

/// Builds a [`TaskRequest`].
pub struct TaskRequestBuilder<'a>(TaskRequest<'a>);

impl<'a> TaskRequestBuilder<'a> {
    pub fn idempotency_key(mut self, key: &'a str) -> Self {
        self.0.idempotency_key = Some(Cow::Borrowed(key));
        self
    }

    pub fn requester(mut self, requester: &'a str) -> Self {
        self.0.requester = Some(Cow::Borrowed(requester));
        self
    }

    pub fn requested_at(mut self, at: Timestamp) -> Self {
        self.0.requested_at = Some(at);
        self
    }

    pub fn build(self) -> TaskRequest<'a> {
        self.0
    }
}

/// A [`TaskRequest`] that owns its data.
#[derive(Clone, Debug)]
pub struct OwnedTaskRequest {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub context: Box<RawValue>,
    pub idempotency_key: Option<String>,
    pub requester: Option<Arc<str>>,
    pub requested_at: Option<Timestamp>,
}

impl OwnedTaskRequest {
    pub fn view(&self) -> TaskRequest<'_> {
        TaskRequest {
            namespace: Cow::Borrowed(&self.namespace),
            name: Cow::Borrowed(&self.name),
            version: Cow::Borrowed(&self.version),
            context: &self.context,
            idempotency_key: self.idempotency_key.as_deref().map(Cow::Borrowed),
            requester: self.requester.as_deref().map(Cow::Borrowed),
            requested_at: self.requested_at,
        }
    }
}

/// A created task for an orchestrator to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    pub task_id: TaskId,
}

/// A step for a worker to run. The worker loads the rest in one query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage<'a> {
    pub task_id: TaskId,
    pub step_id: StepId,
    /// The attempt this message starts (1 for the first run).
    pub attempt: u32,
    #[serde(borrow)]
    pub handler: Cow<'a, str>,
}

impl StepMessage<'_> {
    /// The owned form, the handler name interned.
    pub fn to_owned_in(&self, interner: &Interner) -> OwnedStepMessage {
        OwnedStepMessage {
            task_id: self.task_id,
            step_id: self.step_id,
            attempt: self.attempt,
            handler: interner.intern(&self.handler),
        }
    }
}

/// A [`StepMessage`] that owns its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedStepMessage {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub attempt: u32,
    pub handler: Arc<str>,
}

impl OwnedStepMessage {
    pub fn view(&self) -> StepMessage<'_> {
        StepMessage {
            task_id: self.task_id,
            step_id: self.step_id,
            attempt: self.attempt,
            handler: Cow::Borrowed(&self.handler),
        }
    }
}

/// Everything a handler is given, for handlers that run outside the worker's Rust
/// code (the `shell` handler's standard input; the Ruby boundary).
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
                let mut parents = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(name) = map.next_key_seed(CowStr)? {
                    parents.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Parents(parents))
            }
        }
        d.deserialize_map(ParentsVisitor)
    }
}

/// Deserializes a string borrowed from the input when it can be (map keys included,
/// where serde's `borrow` does not apply), copied when it has escapes.
struct CowStr;

impl<'de> serde::de::DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Success,
    RetryableError,
    PermanentError,
}

/// The end of an attempt, as a handler reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepResult<'a> {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub attempt: u32,
    pub status: StepStatus,
    /// The results, for a success.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub results: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<Cow<'a, str>>,
    /// A delay the handler asks for before the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    pub started_at: Timestamp,
    pub completed_at: Timestamp,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed",
        skip_serializing_if = "Option::is_none"
    )]
    pub worker: Option<Cow<'a, str>>,
}

impl StepResult<'_> {
    /// The owned form, the worker name interned.
    pub fn to_owned_in(&self, interner: &Interner) -> OwnedStepResult {
        OwnedStepResult {
            task_id: self.task_id,
            step_id: self.step_id,
            attempt: self.attempt,
            status: self.status,
            results: self.results.map(ToOwned::to_owned),
            error: self.error.as_deref().map(str::to_owned),
            retry_after_ms: self.retry_after_ms,
            started_at: self.started_at,
            completed_at: self.completed_at,
            worker: self.worker.as_deref().map(|w| interner.intern(w)),
        }
    }
}

/// A [`StepResult`] that owns its data.
#[derive(Clone, Debug)]
pub struct OwnedStepResult {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub attempt: u32,
    pub status: StepStatus,
    pub results: Option<Box<RawValue>>,
    pub error: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub started_at: Timestamp,
    pub completed_at: Timestamp,
    pub worker: Option<Arc<str>>,
}

impl OwnedStepResult {
    pub fn view(&self) -> StepResult<'_> {
        StepResult {
            task_id: self.task_id,
            step_id: self.step_id,
            attempt: self.attempt,
            status: self.status,
            results: self.results.as_deref(),
            error: self.error.as_deref().map(Cow::Borrowed),
            retry_after_ms: self.retry_after_ms,
            started_at: self.started_at,
            completed_at: self.completed_at,
            worker: self.worker.as_deref().map(Cow::Borrowed),
        }
    }
}

/// Bytes kept by every [`EncodeBuffer`] of the process, for metrics.
static RETAINED: AtomicUsize = AtomicUsize::new(0);

/// The capacity an encode buffer keeps between messages unless told otherwise.
pub const DEFAULT_RETAINED_BYTES: usize = 16 * 1024;

/// A reusable buffer to encode messages into. It keeps its capacity between messages
/// (no allocation once warm) up to `retain` bytes: a rare huge message does not pin
/// its memory for ever.
#[derive(Debug)]
pub struct EncodeBuffer {
    buf: Vec<u8>,
    retain: usize,
}

impl EncodeBuffer {
    pub fn new(retain: usize) -> Self {
        Self {
            buf: Vec::new(),
            retain,
        }
    }

    /// Encodes `value` as JSON, replacing what the buffer held.
    pub fn encode<T: Serialize + ?Sized>(&mut self, value: &T) -> &str {
        self.start();
        // Writing into a Vec cannot fail, and these types have string keys only.
        serde_json::to_writer(&mut self.buf, value).expect("messages always encode");
        self.finish()
    }

    /// Encodes `values` as one JSON array.
    pub fn encode_all<T: Serialize>(&mut self, values: &[T]) -> &str {
        self.encode(values)
    }

    fn start(&mut self) {
        if self.buf.capacity() > self.retain {
            RETAINED.fetch_sub(self.buf.capacity(), Ordering::Relaxed);
            self.buf = Vec::new();
        }
        self.buf.clear();
        RETAINED.fetch_sub(self.buf.capacity(), Ordering::Relaxed);
    }

    fn finish(&self) -> &str {
        RETAINED.fetch_add(self.buf.capacity(), Ordering::Relaxed);
        std::str::from_utf8(&self.buf).expect("serde_json writes UTF-8")
    }

    /// The bytes this buffer keeps.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes kept by every encode buffer of the process.
    pub fn retained_bytes() -> usize {
        RETAINED.load(Ordering::Relaxed)
    }
}

impl Default for EncodeBuffer {
    fn default() -> Self {
        Self::new(DEFAULT_RETAINED_BYTES)
    }
}

impl Drop for EncodeBuffer {
    fn drop(&mut self) {
        RETAINED.fetch_sub(self.buf.capacity(), Ordering::Relaxed);
    }
}

/// Idle encode buffers, shared by the transactions of a store: each borrows one and
/// gives it back. At most `MAX_IDLE` are kept. `benches/memory.rs` weighs this pool
/// against a fresh buffer per use; BENCHMARKS.md has the verdict.
#[derive(Debug, Default)]
pub struct BufferPool {
    idle: std::sync::Mutex<Vec<EncodeBuffer>>,
}

impl BufferPool {
    /// Idle buffers kept at most: one per transaction that can run at once.
    pub const MAX_IDLE: usize = 64;

    pub fn take(&self) -> EncodeBuffer {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub fn give(&self, buffer: EncodeBuffer) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < Self::MAX_IDLE {
            idle.push(buffer);
        }
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
    fn step_message_decodes_borrowed() {
        let m = StepMessage {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            attempt: 2,
            handler: Cow::Borrowed("sum"),
        };
        let mut buf = EncodeBuffer::default();
        let text = buf.encode(&m).to_owned();
        let back: StepMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert!(
            matches!(back.handler, Cow::Borrowed(_)),
            "handler borrowed from the buffer"
        );
        let owned = back.to_owned_in(&Interner::new(1024));
        assert_eq!(owned.view(), m);
    }

    #[test]
    fn task_request_builder_round_trip() {
        let ctx = raw(r#"{"order_id": 1001}"#);
        let req = TaskRequest::builder("fulfillment", "process_order", "1.0.0", ctx)
            .idempotency_key("order-1001")
            .requester("api_gateway")
            .requested_at(Timestamp(1))
            .build();
        let text = serde_json::to_string(&req).unwrap();
        let back: TaskRequest<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(json(&back), text);
        assert_eq!(
            back.context.get(),
            r#"{"order_id": 1001}"#,
            "payload passed through as written"
        );
        let interner = Interner::new(1024);
        let a = back.to_owned_in(&interner);
        let b = back.to_owned_in(&interner);
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace), "names interned");
        assert_eq!(json(&a.view()), text);
        let minimal: TaskRequest<'_> =
            serde_json::from_str(r#"{"namespace":"n","name":"t","version":"1.0.0","context":{}}"#)
                .unwrap();
        assert!(minimal.idempotency_key.is_none());
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
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            text.contains(r#""parents":{"b":{"value":2},"c":null}"#),
            "{text}"
        );
        let back: ExecutionMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(json(&back), text);
        let as_list = text.replace(r#""parents":{"#, r#""parents":["#);
        assert!(serde_json::from_str::<ExecutionMessage<'_>>(&as_list).is_err());
    }

    #[test]
    fn step_result_round_trip_and_owned() {
        let r = StepResult {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            attempt: 1,
            status: StepStatus::RetryableError,
            results: None,
            error: Some("rate limited".into()),
            retry_after_ms: Some(30_000),
            started_at: Timestamp(1),
            completed_at: Timestamp(2),
            worker: Some("worker-1".into()),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""status":"retryable_error""#));
        let back: StepResult<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(json(&back), text);
        assert_eq!(json(&back.to_owned_in(&Interner::new(1024)).view()), text);
    }

    #[test]
    fn encode_buffer_reuses_and_caps_its_capacity() {
        let mut b = EncodeBuffer::new(64);
        b.encode(&"x".repeat(10));
        let cap = b.capacity();
        b.encode(&"y".repeat(10));
        assert_eq!(b.capacity(), cap, "reused");
        assert_eq!(b.encode(&[1, 2]), "[1,2]");
        b.encode(&"z".repeat(1000));
        assert!(b.capacity() > 64);
        b.encode(&1);
        assert!(b.capacity() <= 64, "a big message does not pin its memory");
        assert!(EncodeBuffer::retained_bytes() >= b.capacity());
    }
}
