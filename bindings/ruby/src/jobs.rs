//! Steps handed from the engine (tokio threads) to Ruby threads, and their outcome
//! handed back.
//!
//! The engine calls [`RubyHandler`] for every handler name it does not know in Rust;
//! that queues the step and waits for a Ruby thread to take it (`Session#next_job`),
//! run the Ruby handler and complete it. A Ruby thread sees the step as a
//! [`RbStepContext`] (`Tasker::StepContext`).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use magnus::prelude::*;
use magnus::{Error, RHash, RString, Ruby, Value, method};
use serde_json::value::RawValue;
use tasker_engine::{Handler, HandlerError, HandlerFuture, HandlerResult, StepContext};
use tokio::sync::oneshot;

use crate::convert;
use crate::strings::interned;

/// One step waiting for, or being run by, a Ruby thread.
pub struct Job {
    step: StepContext,
    reply: oneshot::Sender<HandlerResult>,
    /// When the engine stops waiting (the step's timeout from being queued).
    deadline: Instant,
}

/// What [`JobQueue::pop`] found.
pub enum Pop {
    Job(Job),
    Empty,
    /// The engine has stopped: no job will come.
    Closed,
}

/// The steps waiting for a Ruby thread. Ruby threads block on it with the GVL released.
#[derive(Default)]
pub struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl JobQueue {
    fn push(&self, job: Job) -> Result<(), Job> {
        let mut state = self.state.lock().expect("job queue lock");
        if state.closed {
            return Err(job);
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the next job, waiting up to `wait` for one.
    pub fn pop(&self, wait: Duration) -> Pop {
        let state = self.state.lock().expect("job queue lock");
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, wait, |s| s.jobs.is_empty() && !s.closed)
            .expect("job queue lock");
        // A job whose engine stopped waiting (its timeout passed while it was queued)
        // is dropped, not run late.
        while let Some(job) = state.jobs.pop_front() {
            if !job.reply.is_closed() {
                return Pop::Job(job);
            }
        }
        if state.closed {
            Pop::Closed
        } else {
            Pop::Empty
        }
    }

    /// No more jobs: every waiting Ruby thread returns.
    pub fn close(&self) {
        self.state.lock().expect("job queue lock").closed = true;
        self.ready.notify_all();
    }
}

/// The engine's handler for every name Rust does not know: a Ruby thread runs it.
pub struct RubyHandler {
    pub queue: std::sync::Arc<JobQueue>,
}

impl Handler for RubyHandler {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        let (reply, outcome) = oneshot::channel();
        let now = Instant::now();
        let queued = self.queue.push(Job {
            step: step.clone(),
            reply,
            deadline: now.checked_add(step.timeout()).unwrap_or(now),
        });
        Box::pin(async move {
            if queued.is_err() {
                return Err(HandlerError::retryable("the Ruby worker is stopping"));
            }
            outcome.await.unwrap_or_else(|_| {
                Err(HandlerError::retryable(
                    "the Ruby thread running the handler dropped the step without an outcome",
                ))
            })
        })
    }
}

/// `Tasker::StepContext`: what a Ruby handler's `call` is given.
#[magnus::wrap(class = "Tasker::StepContext", free_immediately, size)]
pub struct RbStepContext {
    step: StepContext,
    reply: Mutex<Option<oneshot::Sender<HandlerResult>>>,
    deadline: Instant,
}

impl From<Job> for RbStepContext {
    fn from(job: Job) -> Self {
        Self {
            step: job.step,
            reply: Mutex::new(Some(job.reply)),
            deadline: job.deadline,
        }
    }
}

impl RbStepContext {
    /// A step context no engine waits on (the boundary benchmark's).
    #[cfg(feature = "boundary-bench")]
    pub fn detached(step: StepContext) -> Self {
        Self {
            deadline: Instant::now(),
            step,
            reply: Mutex::new(None),
        }
    }

    fn task_id(&self) -> RString {
        id_string(self.step.task_id().0)
    }

    fn step_id(&self) -> RString {
        id_string(self.step.step_id().0)
    }

    fn attempt(&self) -> u32 {
        self.step.attempt()
    }

    /// The step's timeout in seconds.
    fn timeout(&self) -> f64 {
        self.step.timeout().as_secs_f64()
    }

    /// Seconds left before the engine stops waiting for this attempt (at least 1 ms:
    /// Ruby's `Timeout` treats 0 as no limit).
    fn native_remaining(&self) -> f64 {
        self.deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .max(0.001)
    }

    /// How many attempts the step has in all.
    fn max_attempts(&self) -> u32 {
        self.step.retry().max_attempts
    }

    fn namespace(&self) -> RString {
        interned(self.step.namespace())
    }

    fn task_name(&self) -> RString {
        interned(self.step.task_name())
    }

    fn task_version(&self) -> RString {
        interned(self.step.task_version())
    }

    fn step_name(&self) -> RString {
        interned(self.step.step_name())
    }

    fn handler(&self) -> RString {
        interned(self.step.handler())
    }

    /// For an instance of a `for_each` step, its element of the array; else nil.
    fn native_item(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        match rb_self.step.item() {
            Some(item) => convert::to_ruby(ruby, item.get()),
            None => Ok(ruby.qnil().as_value()),
        }
    }

    /// For an instance of a `for_each` step, the index of its element; else nil.
    fn index(&self) -> Option<u32> {
        self.step.index()
    }

    /// The W3C `traceparent` of the attempt's span when the process exports traces
    /// (`Tasker.export_traces`); else nil.
    fn traceparent(&self) -> Option<String> {
        self.step.traceparent().map(|t| t.to_string())
    }

    fn native_context(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        convert::to_ruby(ruby, rb_self.step.context().get())
    }

    fn native_config(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        convert::to_ruby(ruby, rb_self.step.config().get())
    }

    /// The results of the ancestor named `name`: a parent's at hand, any other's loaded
    /// (with every ancestor's, once per step) with the GVL released. KeyError for a
    /// step that is not an ancestor, naming the ancestors.
    fn native_results(ruby: &Ruby, rb_self: &Self, name: RString) -> Result<Value, Error> {
        let name = name.to_string()?;
        if let Some(results) = rb_self.step.parent(&name) {
            return convert::to_ruby(ruby, results.get());
        }
        let step = &rb_self.step;
        let found = crate::session::block_on(ruby, async {
            step.result(&name).await.map(|r| r.get().to_owned())
        })?;
        match found {
            Ok(json) => convert::to_ruby(ruby, &json),
            Err(e) if !e.retryable => Err(Error::new(ruby.exception_key_error(), e.message)),
            Err(e) => Err(crate::errors::general(ruby, e.message)),
        }
    }

    fn native_parent_results(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let all = ruby.hash_new();
        for (name, results) in rb_self.step.parents() {
            all.aset(interned(name), convert::to_ruby(ruby, results.get())?)?;
        }
        Ok(all)
    }

    /// Hands the outcome to the engine; false if the step already had one or the engine
    /// stopped waiting (its timeout passed).
    fn reply(&self, outcome: HandlerResult) -> bool {
        let sender = self.reply.lock().expect("reply lock").take();
        sender.is_some_and(|s| s.send(outcome).is_ok())
    }

    /// The handler returned `value`: its JSON becomes the step's results. A value that
    /// cannot become JSON raises `Tasker::SerializationError` and completes nothing.
    fn native_succeed(ruby: &Ruby, rb_self: &Self, value: Value) -> Result<bool, Error> {
        let json = convert::to_json(ruby, value, "results")?;
        let results = RawValue::from_string(json).expect("the writer emits valid JSON");
        Ok(rb_self.reply(Ok(results)))
    }

    /// The handler failed; `retry_after` (seconds) replaces the backoff delay.
    /// `RetryableError` checks `retry_after`; a delay that is still not a duration
    /// (negative, NaN, beyond `Duration`) leaves the step's backoff in charge.
    fn native_fail(
        rb_self: &Self,
        message: String,
        retryable: bool,
        retry_after: Option<f64>,
    ) -> bool {
        let retry_after = retry_after.and_then(|s| Duration::try_from_secs_f64(s).ok());
        rb_self.reply(Err(HandlerError {
            message,
            retryable,
            retry_after,
        }))
    }
}

/// An id as an interned string, formatted on the stack.
fn id_string(id: uuid::Uuid) -> RString {
    let mut buf = uuid::Uuid::encode_buffer();
    interned(id.hyphenated().encode_lower(&mut buf))
}

pub fn define(ruby: &Ruby, tasker: magnus::RModule) -> Result<(), Error> {
    let class = tasker.define_class("StepContext", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("task_id", method!(RbStepContext::task_id, 0))?;
    class.define_method("step_id", method!(RbStepContext::step_id, 0))?;
    class.define_method("attempt", method!(RbStepContext::attempt, 0))?;
    class.define_method("timeout", method!(RbStepContext::timeout, 0))?;
    class.define_method("max_attempts", method!(RbStepContext::max_attempts, 0))?;
    class.define_method("namespace", method!(RbStepContext::namespace, 0))?;
    class.define_method("task_name", method!(RbStepContext::task_name, 0))?;
    class.define_method("task_version", method!(RbStepContext::task_version, 0))?;
    class.define_method("step_name", method!(RbStepContext::step_name, 0))?;
    class.define_method("handler", method!(RbStepContext::handler, 0))?;
    class.define_method("index", method!(RbStepContext::index, 0))?;
    class.define_method("traceparent", method!(RbStepContext::traceparent, 0))?;
    class.define_private_method("native_item", method!(RbStepContext::native_item, 0))?;
    class.define_private_method("native_context", method!(RbStepContext::native_context, 0))?;
    class.define_private_method("native_config", method!(RbStepContext::native_config, 0))?;
    class.define_private_method("native_results", method!(RbStepContext::native_results, 1))?;
    class.define_private_method(
        "native_parent_results",
        method!(RbStepContext::native_parent_results, 0),
    )?;
    class.define_private_method("native_succeed", method!(RbStepContext::native_succeed, 1))?;
    class.define_private_method(
        "native_remaining",
        method!(RbStepContext::native_remaining, 0),
    )?;
    class.define_private_method("native_fail", method!(RbStepContext::native_fail, 3))?;
    Ok(())
}
