//! The hot-path operations on the reference inputs (`benches/reference/`), as Tasker
//! does them: measured by `benches/memory.rs` and held to budgets by
//! `tests/alloc_budgets.rs`, which includes this file.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::value::RawValue;
use tasker_core::backoff::RetryPolicy;
use tasker_core::encode::EncodeBuffer;
use tasker_core::event::{Event, EventBus, EventKind, Subscription};
use tasker_core::intern::Interner;
use tasker_core::message::*;
use tasker_core::store::StepExecution;
use tasker_core::time::Timestamp;
use tasker_core::{StepId, TaskId};

pub const INPUTS: &str = include_str!("reference/inputs.json");

/// The reference inputs, as Tasker holds them after a database read: payloads as raw
/// JSON, names interned.
pub struct Inputs {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub execution: StepExecution,
    pub interner: Interner,
}

fn raw(v: &serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap()
}

impl Inputs {
    pub fn load() -> Self {
        let v: serde_json::Value = serde_json::from_str(INPUTS).unwrap();
        let interner = Interner::new(1 << 20);
        let task = &v["task_context"];
        let parents = v["dependency_results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    interner.intern(d["step_name"].as_str().unwrap()),
                    raw(&d["results"]),
                )
            })
            .collect();
        let execution = StepExecution {
            task_id: TaskId::new(),
            step_id: StepId::new(),
            attempt: 1,
            namespace: interner.intern(task["namespace_name"].as_str().unwrap()),
            task_name: interner.intern(task["task_name"].as_str().unwrap()),
            task_version: interner.intern(task["version"].as_str().unwrap()),
            step_name: interner.intern("validate_order"),
            handler: interner.intern("Fulfillment::ValidateOrder"),
            config: raw(&v["step_payload"]),
            context: raw(&task["context"]),
            parents,
            decides: Vec::new(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            item: None,
            traceparent: None,
        };
        Self {
            task_id: execution.task_id,
            step_id: execution.step_id,
            execution,
            interner,
        }
    }

    pub fn step_message(&self) -> StepMessage {
        StepMessage {
            task_id: self.task_id,
            step_id: self.step_id,
            priority: 0,
            traceparent: None,
        }
    }

    pub fn event(&self) -> Event {
        Event {
            kind: EventKind::StepCompleted,
            task_id: Some(self.task_id),
            step_id: Some(self.step_id),
            step_name: Some(self.execution.step_name.clone()),
            attempt: 1,
            at: Timestamp(1_754_654_403_500_000),
        }
    }
}

/// The encoded messages, to decode.
pub struct Encoded {
    pub step: String,
    pub execution: String,
}

impl Encoded {
    pub fn of(i: &Inputs) -> Self {
        Self {
            step: serde_json::to_string(&i.step_message()).unwrap(),
            execution: serde_json::to_string(&i.execution.message()).unwrap(),
        }
    }
}

pub fn dispatch_encode(i: &Inputs, buf: &mut EncodeBuffer) -> usize {
    buf.encode(&i.step_message()).len()
}

pub fn dispatch_decode(text: &str) -> StepId {
    serde_json::from_str::<StepMessage>(text).unwrap().step_id
}

pub fn execution_encode(i: &Inputs, buf: &mut EncodeBuffer) -> usize {
    buf.encode(&i.execution.message()).len()
}

pub fn execution_decode(text: &str) -> usize {
    serde_json::from_str::<ExecutionMessage<'_>>(text)
        .unwrap()
        .parents
        .0
        .len()
}

/// A bus with `n` subscribers.
pub fn bus_with(n: usize) -> (EventBus, Vec<Subscription>) {
    let bus = EventBus::new(64);
    let subs = (0..n).map(|_| bus.subscribe()).collect();
    (bus, subs)
}

/// Publishes one event and has every subscriber receive it.
pub fn publish(i: &Inputs, bus: &EventBus, subs: &mut [Subscription]) -> usize {
    bus.publish(i.event());
    subs.iter_mut()
        .map(|s| s.try_recv())
        .filter(|r| matches!(r, Some(Ok(_))))
        .count()
}
