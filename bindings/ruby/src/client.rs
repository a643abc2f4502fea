//! `Tasker::Native::Client`: submits and operates tasks on a PostgreSQL deployment.

use magnus::prelude::*;
use magnus::{Error, RModule, Ruby, Value, function, method};
use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::schedule::CatchUp;
use tasker_core::views::{DeadLetters, History, ScheduleList, ScheduleView, SignalView, TaskView};
use tasker_engine::{Engine, EngineConfig, HandlerRegistry};
use tasker_store::postgres::PgStore;

use crate::convert;
use crate::errors;
use crate::session::{block_on, connect, load_template};

#[magnus::wrap(class = "Tasker::Native::Client", free_immediately, size)]
pub struct Client {
    /// Runs no loops: it registers templates and creates tasks.
    engine: Engine<PgStore>,
}

fn parse_id<T: std::str::FromStr>(ruby: &Ruby, what: &str, id: &str) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    id.parse().map_err(|e| {
        Error::new(
            ruby.exception_arg_error(),
            format!("`{id}` is not a {what} id: {e}"),
        )
    })
}

impl Client {
    fn new(ruby: &Ruby, database_url: String) -> Result<Self, Error> {
        let store = connect(ruby, &database_url, 2)?;
        let config = EngineConfig::client();
        Ok(Self {
            engine: Engine::new(store, HandlerRegistry::new(), config),
        })
    }

    /// `[task_id, created]`: an idempotency key already used returns its task and false.
    fn submit(
        ruby: &Ruby,
        rb_self: &Self,
        template: String,
        context: Value,
        idempotency_key: Option<String>,
        priority: Option<i32>,
    ) -> Result<(String, bool), Error> {
        let template = load_template(ruby, &template)?;
        let context = convert::to_json(ruby, context, "context")?;
        let created = block_on(
            ruby,
            rb_self.engine.submit_with_priority(
                &template,
                &context,
                idempotency_key.as_deref(),
                priority,
            ),
        )?
        .map_err(|e| errors::engine(ruby, e))?;
        Ok((created.task_id.to_string(), created.created))
    }

    /// The task as `{"task_id", "state", "steps": [...]}`.
    fn status(ruby: &Ruby, rb_self: &Self, id: String) -> Result<Value, Error> {
        let id: TaskId = parse_id(ruby, "task", &id)?;
        let detail =
            block_on(ruby, rb_self.engine.task(id))?.map_err(|e| errors::engine(ruby, e))?;
        convert::to_ruby(ruby, &TaskView::json(&detail))
    }

    /// The task's state afterwards.
    fn cancel(ruby: &Ruby, rb_self: &Self, id: String) -> Result<&'static str, Error> {
        let id: TaskId = parse_id(ruby, "task", &id)?;
        block_on(ruby, rb_self.engine.cancel(id, "cancelled by a client"))?
            .map(|s| s.as_str())
            .map_err(|e| errors::engine(ruby, e))
    }

    /// How many failed steps were enqueued again.
    fn retry(ruby: &Ruby, rb_self: &Self, id: String) -> Result<u64, Error> {
        let id: TaskId = parse_id(ruby, "task", &id)?;
        block_on(ruby, rb_self.engine.retry(id))?
            .map(|n| n as u64)
            .map_err(|e| errors::engine(ruby, e))
    }

    /// The task's history as `{"task_id", "transitions": [...]}`, the API's shape.
    fn history(ruby: &Ruby, rb_self: &Self, id: String) -> Result<Value, Error> {
        let id: TaskId = parse_id(ruby, "task", &id)?;
        let transitions =
            block_on(ruby, rb_self.engine.history(id))?.map_err(|e| errors::engine(ruby, e))?;
        let view = serde_json::to_string(&History::new(id, transitions)).expect("serializable");
        convert::to_ruby(ruby, &view)
    }

    /// The dead letters of `queue`, or of every queue, as `{"dead_letters": [...]}`.
    fn dead_letters(ruby: &Ruby, rb_self: &Self, queue: Option<String>) -> Result<Value, Error> {
        let letters = block_on(ruby, rb_self.engine.dead_letters(queue.as_deref()))?
            .map_err(|e| errors::engine(ruby, e))?;
        let view = serde_json::to_string(&DeadLetters::new(letters)).expect("serializable");
        convert::to_ruby(ruby, &view)
    }

    /// Delivers the signal `name` with `payload` to the task; returns `{"task_id",
    /// "signal", "completed", "task_state"}`, the API's shape.
    fn signal(
        ruby: &Ruby,
        rb_self: &Self,
        task_id: String,
        name: String,
        payload: Value,
    ) -> Result<Value, Error> {
        let id: TaskId = parse_id(ruby, "task", &task_id)?;
        let json = convert::to_json(ruby, payload, "payload")?;
        let signalled = block_on(ruby, rb_self.engine.signal(id, &name, &json))?
            .map_err(|e| errors::engine(ruby, e))?;
        let view =
            serde_json::to_string(&SignalView::new(id, &name, &signalled)).expect("serializable");
        convert::to_ruby(ruby, &view)
    }

    /// Creates the schedule `name`: the template at `template` submitted with
    /// `context` at each tick of `cron` in `timezone`. Returns the schedule's hash.
    #[allow(clippy::too_many_arguments)]
    fn schedule_create(
        ruby: &Ruby,
        rb_self: &Self,
        name: String,
        template: String,
        cron: String,
        timezone: String,
        context: Value,
        catch_up: String,
    ) -> Result<Value, Error> {
        let template = load_template(ruby, &template)?;
        let context = convert::to_json(ruby, context, "context")?;
        let catch_up: CatchUp = catch_up
            .parse()
            .map_err(|why: String| Error::new(ruby.exception_arg_error(), why))?;
        let created = block_on(
            ruby,
            rb_self
                .engine
                .schedule_create(&name, &template, &cron, &timezone, &context, catch_up),
        )?
        .map_err(|e| errors::engine(ruby, e))?;
        let view = serde_json::to_string(&ScheduleView::new(&created)).expect("serializable");
        convert::to_ruby(ruby, &view)
    }

    /// Every schedule, as `{"schedules": [...]}`.
    fn schedules(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        let all =
            block_on(ruby, rb_self.engine.schedules())?.map_err(|e| errors::engine(ruby, e))?;
        let view = serde_json::to_string(&ScheduleList::new(&all)).expect("serializable");
        convert::to_ruby(ruby, &view)
    }

    /// Pauses or resumes a schedule; whether that changed it.
    fn schedule_pause(
        ruby: &Ruby,
        rb_self: &Self,
        name: String,
        paused: bool,
    ) -> Result<bool, Error> {
        block_on(ruby, rb_self.engine.pause_schedule(&name, paused))?
            .map_err(|e| errors::engine(ruby, e))
    }

    fn schedule_delete(ruby: &Ruby, rb_self: &Self, name: String) -> Result<(), Error> {
        block_on(ruby, rb_self.engine.delete_schedule(&name))?.map_err(|e| errors::engine(ruby, e))
    }

    /// Marks a failed step done with `results`; returns its task's state.
    fn resolve(
        ruby: &Ruby,
        rb_self: &Self,
        step_id: String,
        results: Value,
    ) -> Result<&'static str, Error> {
        let id: StepId = parse_id(ruby, "step", &step_id)?;
        let json = convert::to_json(ruby, results, "results")?;
        let raw: &RawValue = serde_json::from_str(&json).expect("the writer emits valid JSON");
        block_on(ruby, rb_self.engine.resolve(id, raw))?
            .map(|r| r.task_state.as_str())
            .map_err(|e| errors::engine(ruby, e))
    }
}

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Client", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("new", function!(Client::new, 1))?;
    class.define_method("submit", method!(Client::submit, 4))?;
    class.define_method("status", method!(Client::status, 1))?;
    class.define_method("cancel", method!(Client::cancel, 1))?;
    class.define_method("retry", method!(Client::retry, 1))?;
    class.define_method("resolve", method!(Client::resolve, 2))?;
    class.define_method("signal", method!(Client::signal, 3))?;
    class.define_method("history", method!(Client::history, 1))?;
    class.define_method("dead_letters", method!(Client::dead_letters, 1))?;
    class.define_method("schedule_create", method!(Client::schedule_create, 6))?;
    class.define_method("schedules", method!(Client::schedules, 0))?;
    class.define_method("schedule_pause", method!(Client::schedule_pause, 2))?;
    class.define_method("schedule_delete", method!(Client::schedule_delete, 1))?;
    Ok(())
}
