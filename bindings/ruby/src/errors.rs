//! The exception classes the extension raises, and how engine errors map onto them.

use magnus::prelude::*;
use magnus::value::Lazy;
use magnus::{Error, ExceptionClass, RModule, Ruby};
use tasker_core::store::StoreError;
use tasker_engine::EngineError;

static ERROR: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, "Error"));
static SERIALIZATION: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, "SerializationError"));
static TEMPLATE: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, "TemplateError"));
static CONTEXT: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, "ContextError"));
static NOT_FOUND: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, "NotFoundError"));
static CONFLICT: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, "ConflictError"));

fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    let tasker: RModule = ruby
        .class_object()
        .const_get("Tasker")
        .expect("Tasker is defined at load");
    tasker.const_get(name).expect("defined at load")
}

/// Defines `Tasker::Error` (< StandardError) and its subclasses.
pub fn define(ruby: &Ruby, tasker: RModule) -> Result<(), Error> {
    let base = tasker.define_error("Error", ruby.exception_standard_error())?;
    for name in [
        "SerializationError",
        "TemplateError",
        "ContextError",
        "NotFoundError",
        "ConflictError",
    ] {
        tasker.define_error(name, base)?;
    }
    Ok(())
}

pub fn serialization(ruby: &Ruby) -> ExceptionClass {
    ruby.get_inner(&SERIALIZATION)
}

pub fn template(ruby: &Ruby, message: impl ToString) -> Error {
    Error::new(ruby.get_inner(&TEMPLATE), message.to_string())
}

pub fn general(ruby: &Ruby, message: impl ToString) -> Error {
    Error::new(ruby.get_inner(&ERROR), message.to_string())
}

pub fn store(ruby: &Ruby, e: StoreError) -> Error {
    match e {
        StoreError::NotFound(_) => Error::new(ruby.get_inner(&NOT_FOUND), e.to_string()),
        // The API's 409: the action does not fit the task's state now.
        StoreError::Conflict(_) | StoreError::IllegalTransition(_) => {
            Error::new(ruby.get_inner(&CONFLICT), e.to_string())
        }
        other => general(ruby, other),
    }
}

pub fn engine(ruby: &Ruby, e: EngineError) -> Error {
    match e {
        EngineError::Store(s) => store(ruby, s),
        bad => Error::new(ruby.get_inner(&CONTEXT), bad.to_string()),
    }
}
