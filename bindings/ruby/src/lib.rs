//! The native half of the `tasker` Ruby library: the engine, the stores and the queue
//! stay in Rust; Ruby threads run step handlers. `lib/tasker.rb` builds the public API
//! on these classes.

#[cfg(feature = "boundary-bench")]
mod bench;
mod client;
mod convert;
mod errors;
mod gvl;
mod jobs;
mod session;
mod strings;

use magnus::prelude::*;
use magnus::{Error, Ruby, Value, function};

fn to_json(ruby: &Ruby, value: Value) -> Result<String, Error> {
    convert::to_json(ruby, value, "value")
}

fn from_json(ruby: &Ruby, json: String) -> Result<Value, Error> {
    convert::to_ruby(ruby, &json)
}

/// Exports this process's spans to the OTLP/HTTP collector at `endpoint`: the spans of
/// the steps its engines run (Ruby handlers' included) and of the tasks they finish, and
/// trace contexts for the tasks it submits (docs/traces.md). Once per process.
fn export_traces(ruby: &Ruby, endpoint: String, service_name: String) -> Result<(), Error> {
    use tracing_subscriber::prelude::*;

    let traces = tasker_engine::Traces::install(&endpoint, &service_name)
        .map_err(|e| errors::general(ruby, format!("cannot export traces to {e}")))?;
    let spans = tracing_subscriber::filter::LevelFilter::INFO;
    tracing_subscriber::registry()
        .with(traces.layer().with_filter(spans))
        .try_init()
        .map_err(|e| errors::general(ruby, format!("cannot export step spans: {e}")))
}

/// Sends the spans not yet sent; for the end of the process.
fn flush_traces() {
    if let Some(traces) = tasker_engine::Traces::installed() {
        traces.shutdown();
    }
}

/// The handler names Rust serves itself; Ruby cannot register these.
fn builtin_handlers() -> Vec<String> {
    tasker_engine::HandlerRegistry::with_builtins()
        .names()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[magnus::init(name = "tasker_native")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let tasker = ruby.define_module("Tasker")?;
    errors::define(ruby, tasker)?;
    tasker.define_module_function("to_json", function!(to_json, 1))?;
    tasker.define_module_function("from_json", function!(from_json, 1))?;
    tasker.define_module_function("max_depth", function!(convert::max_depth, 0))?;
    tasker.define_module_function("max_depth=", function!(convert::set_max_depth, 1))?;
    jobs::define(ruby, tasker)?;
    let native = tasker.define_module("Native")?;
    native.define_module_function("builtin_handlers", function!(builtin_handlers, 0))?;
    native.define_module_function("export_traces", function!(export_traces, 2))?;
    native.define_module_function("flush_traces", function!(flush_traces, 0))?;
    session::define(ruby, native)?;
    client::define(ruby, native)?;
    #[cfg(feature = "boundary-bench")]
    bench::define(ruby, tasker)?;
    Ok(())
}
