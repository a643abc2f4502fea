//! The native half of the boundary benchmark (`rake bench`; feature `boundary-bench`,
//! never in a production build): Rust allocation counting, a step context built from
//! the reference inputs, and the naive boundary it is compared with — getters that copy
//! a `String` into a new Ruby string on every call, and conversions through cloned
//! `serde_json::Value` trees.

// The naive boundary copies on purpose: that is what it measures.
#![allow(clippy::unnecessary_to_owned, clippy::redundant_clone)]

use std::sync::Arc;
use std::time::Duration;

use magnus::prelude::*;
use magnus::r_hash::ForEach;
use magnus::{Error, RArray, RHash, RModule, RString, Ruby, Value, function, method};
use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::memory::{CountingAllocator, Scope};
use tasker_core::store::StepExecution;
use tasker_engine::StepContext;

use crate::jobs::RbStepContext;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// `[allocations, bytes]` the block made in Rust on this thread.
fn rust_allocations(ruby: &Ruby) -> Result<(u64, u64), Error> {
    let before = Scope::Thread.snapshot();
    let _: Value = ruby.yield_value(())?;
    let after = Scope::Thread.snapshot();
    Ok((
        after.allocations - before.allocations,
        after.bytes - before.bytes,
    ))
}

fn execution(context: String, config: String, parents: Vec<(String, String)>) -> StepExecution {
    let raw = |s: String| RawValue::from_string(s).expect("valid JSON");
    let interner = tasker_core::intern::Interner::global();
    StepExecution {
        task_id: TaskId::new(),
        step_id: StepId::new(),
        attempt: 1,
        namespace: interner.intern("fulfillment"),
        task_name: interner.intern("process_order"),
        task_version: interner.intern("1.0.0"),
        step_name: interner.intern("validate_order"),
        handler: interner.intern("Fulfillment::ValidateOrder"),
        config: raw(config),
        context: raw(context),
        parents: parents
            .into_iter()
            .map(|(name, results)| (interner.intern(&name), raw(results)))
            .collect(),
        decides: Vec::new(),
        retry: tasker_core::backoff::RetryPolicy::default(),
        timeout: Duration::from_secs(30),
        item: None,
        traceparent: None,
    }
}

/// The lean step context, as a handler gets it.
fn step_context(context: String, config: String, parents: Vec<(String, String)>) -> RbStepContext {
    RbStepContext::detached(StepContext::new(execution(context, config, parents)))
}

/// The naive boundary: owned strings copied per call, `Value` trees cloned per use.
#[magnus::wrap(class = "Tasker::Bench::NaiveContext", free_immediately, size)]
struct NaiveContext {
    exec: Arc<StepExecution>,
}

impl NaiveContext {
    fn new(context: String, config: String, parents: Vec<(String, String)>) -> Self {
        Self {
            exec: Arc::new(execution(context, config, parents)),
        }
    }

    fn namespace(ruby: &Ruby, rb_self: &Self) -> RString {
        ruby.str_new(&rb_self.exec.namespace.to_string())
    }

    fn task_name(ruby: &Ruby, rb_self: &Self) -> RString {
        ruby.str_new(&rb_self.exec.task_name.to_string())
    }

    fn task_version(ruby: &Ruby, rb_self: &Self) -> RString {
        ruby.str_new(&rb_self.exec.task_version.to_string())
    }

    fn step_name(ruby: &Ruby, rb_self: &Self) -> RString {
        ruby.str_new(&rb_self.exec.step_name.to_string())
    }

    fn context(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        let tree: serde_json::Value = serde_json::from_str(rb_self.exec.context.get()).unwrap();
        value_to_ruby(ruby, &tree.clone())
    }

    fn config(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        let tree: serde_json::Value = serde_json::from_str(rb_self.exec.config.get()).unwrap();
        value_to_ruby(ruby, &tree.clone())
    }

    fn parent_results(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let all = ruby.hash_new();
        for (name, results) in &rb_self.exec.parents {
            let tree: serde_json::Value = serde_json::from_str(results.get()).unwrap();
            all.aset(
                ruby.str_new(&name.to_string()),
                value_to_ruby(ruby, &tree.clone())?,
            )?;
        }
        Ok(all)
    }

    fn succeed(rb_self: &Self, value: Value) -> Result<usize, Error> {
        let _ = rb_self;
        let tree = ruby_to_value(value)?;
        Ok(serde_json::to_string(&tree.clone()).unwrap().len())
    }
}

fn value_to_ruby(ruby: &Ruby, value: &serde_json::Value) -> Result<Value, Error> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => ruby.qnil().as_value(),
        J::Bool(b) => ruby.into_value(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => ruby.integer_from_i64(i).as_value(),
            None => ruby.float_from_f64(n.as_f64().unwrap_or(0.0)).as_value(),
        },
        J::String(s) => ruby.str_new(&s.clone()).as_value(),
        J::Array(items) => {
            let array = ruby.ary_new();
            for item in items {
                array.push(value_to_ruby(ruby, item)?)?;
            }
            array.as_value()
        }
        J::Object(map) => {
            let hash = ruby.hash_new();
            for (k, v) in map {
                hash.aset(ruby.str_new(&k.clone()), value_to_ruby(ruby, v)?)?;
            }
            hash.as_value()
        }
    })
}

fn ruby_to_value(value: Value) -> Result<serde_json::Value, Error> {
    use serde_json::Value as J;
    if value.is_nil() {
        return Ok(J::Null);
    }
    if let Some(h) = RHash::from_value(value) {
        let mut map = serde_json::Map::new();
        h.foreach(|k: String, v: Value| {
            map.insert(k, ruby_to_value(v)?);
            Ok(ForEach::Continue)
        })?;
        return Ok(J::Object(map));
    }
    if let Some(a) = RArray::from_value(value) {
        return a
            .into_iter()
            .map(ruby_to_value)
            .collect::<Result<_, _>>()
            .map(J::Array);
    }
    if let Some(s) = RString::from_value(value) {
        return Ok(J::String(s.to_string()?));
    }
    if magnus::Integer::from_value(value).is_some()
        && let Ok(i) = i64::try_convert(value)
    {
        return Ok(J::from(i));
    }
    if let Ok(f) = f64::try_convert(value) {
        return Ok(J::from(f));
    }
    Ok(J::Bool(value.to_bool()))
}

pub fn define(ruby: &Ruby, tasker: RModule) -> Result<(), Error> {
    let bench = tasker.define_module("Bench")?;
    bench.define_module_function("rust_allocations", function!(rust_allocations, 0))?;
    bench.define_module_function("step_context", function!(step_context, 3))?;
    let naive = bench.define_class("NaiveContext", ruby.class_object())?;
    naive.define_singleton_method("new", function!(NaiveContext::new, 3))?;
    naive.define_method("namespace", method!(NaiveContext::namespace, 0))?;
    naive.define_method("task_name", method!(NaiveContext::task_name, 0))?;
    naive.define_method("task_version", method!(NaiveContext::task_version, 0))?;
    naive.define_method("step_name", method!(NaiveContext::step_name, 0))?;
    naive.define_method("context", method!(NaiveContext::context, 0))?;
    naive.define_method("config", method!(NaiveContext::config, 0))?;
    naive.define_method("parent_results", method!(NaiveContext::parent_results, 0))?;
    naive.define_method("succeed", method!(NaiveContext::succeed, 1))?;
    Ok(())
}
