//! The Rust [`Handler`] trait, what a handler is given ([`StepContext`]) and returns,
//! and the [`HandlerRegistry`] that finds a handler by the name a template gives.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::TraceParent;
use tasker_core::store::{StepExecution, StoreResult};

/// What a handler returns: its result as JSON, or an error.
pub type HandlerResult = Result<Box<RawValue>, HandlerError>;

/// The future a handler returns, borrowing the handler and its step.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'a>>;

/// A step's code. Delivery is at least once: make handlers idempotent on
/// [`StepContext::step_id`].
pub trait Handler: Send + Sync + 'static {
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a>;
}

/// A handler's failure: retryable (optionally after a delay the handler asks for) or
/// permanent. A panic counts as retryable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    pub retryable: bool,
    /// A delay the handler asks for ("retry after 30 s"), replacing the backoff.
    pub retry_after: Option<Duration>,
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            retry_after: Some(delay),
            ..Self::retryable(message)
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
}

/// Serializes a handler's result.
pub fn to_result<T: Serialize + ?Sized>(value: &T) -> HandlerResult {
    serde_json::value::to_raw_value(value)
        .map_err(|e| HandlerError::permanent(format!("result is not serializable to JSON: {e}")))
}

/// A step's ancestors, by name, with their results.
pub type Ancestors = Vec<(Arc<str>, Box<RawValue>)>;

/// Loads a step's ancestors from the engine's store.
pub(crate) type AncestorLoader = Arc<
    dyn Fn(StepId) -> Pin<Box<dyn Future<Output = StoreResult<Ancestors>> + Send>> + Send + Sync,
>;

/// Everything a handler is given about its step. Cloning shares it: a handler that
/// hands the step to another thread (a Ruby worker thread, say) keeps it alive there
/// even if the engine stops waiting for it.
#[derive(Clone)]
pub struct StepContext {
    step: Arc<Step>,
}

struct Step {
    exec: StepExecution,
    /// Loaded on the first ask for a step beyond the parents, then kept.
    ancestors: tokio::sync::OnceCell<Ancestors>,
    /// None outside an engine: the parents are all the step knows of.
    loader: Option<AncestorLoader>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("exec", &self.step.exec)
            .finish_non_exhaustive()
    }
}

impl StepContext {
    /// A step outside an engine: its ancestors are its parents.
    pub fn new(exec: StepExecution) -> Self {
        Self::with_loader(exec, None)
    }

    pub(crate) fn with_loader(exec: StepExecution, loader: Option<AncestorLoader>) -> Self {
        Self {
            step: Arc::new(Step {
                exec,
                ancestors: tokio::sync::OnceCell::new(),
                loader,
            }),
        }
    }

    pub fn task_id(&self) -> TaskId {
        self.step.exec.task_id
    }

    /// The step's id: the idempotency key for side effects.
    pub fn step_id(&self) -> StepId {
        self.step.exec.step_id
    }

    /// 1 for the first execution.
    pub fn attempt(&self) -> u32 {
        self.step.exec.attempt
    }

    pub fn namespace(&self) -> &str {
        &self.step.exec.namespace
    }

    pub fn task_name(&self) -> &str {
        &self.step.exec.task_name
    }

    pub fn task_version(&self) -> &str {
        &self.step.exec.task_version
    }

    pub fn step_name(&self) -> &str {
        &self.step.exec.step_name
    }

    /// The step's name as the shared handle (no copy).
    pub fn step_name_shared(&self) -> &Arc<str> {
        &self.step.exec.step_name
    }

    /// Everything this step is given, in its wire form (for handlers outside Rust).
    pub fn message(&self) -> tasker_core::message::ExecutionMessage<'_> {
        self.step.exec.message()
    }

    pub fn handler(&self) -> &str {
        &self.step.exec.handler
    }

    /// The step's retry policy (its `max_attempts`, say).
    pub fn retry(&self) -> &tasker_core::backoff::RetryPolicy {
        &self.step.exec.retry
    }

    pub fn timeout(&self) -> Duration {
        self.step.exec.timeout
    }

    /// The task's context as submitted.
    pub fn context(&self) -> &RawValue {
        &self.step.exec.context
    }

    /// The step's `config` from the template.
    pub fn config(&self) -> &RawValue {
        &self.step.exec.config
    }

    /// For an instance of a `for_each` step, its element of the array (as written);
    /// `None` for any other step.
    pub fn item(&self) -> Option<&RawValue> {
        self.step.exec.item.as_ref().map(|(_, item)| &**item)
    }

    /// The trace context of this attempt's span, when this process exports traces
    /// (docs/traces.md): to put spans of the handler's own under it (those it opens
    /// with `tracing` are already), or to pass on to a service it calls as a
    /// `traceparent` header. `None` with traces off.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.step.exec.traceparent
    }

    /// For an instance of a `for_each` step, the index of its element.
    pub fn index(&self) -> Option<u32> {
        self.step.exec.item.as_ref().map(|(index, _)| *index)
    }

    /// The children this step chooses among with its result's `next`.
    pub fn decides(&self) -> &[Arc<str>] {
        &self.step.exec.decides
    }

    /// The results of the parent named `name`.
    pub fn parent(&self, name: &str) -> Option<&RawValue> {
        self.step
            .exec
            .parents
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, r)| &**r)
    }

    /// Every parent's results, by name, in template order.
    pub fn parents(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.step.exec.parents.iter().map(|(n, r)| (&**n, &**r))
    }

    /// The results of the ancestor named `name` (a parent, a parent's parent, …). A
    /// parent's are at hand; any other's are loaded with every ancestor's, in one
    /// query, the first time one is asked for. A name that is not an ancestor is a
    /// permanent error naming the step and its ancestors.
    pub async fn result(&self, name: &str) -> Result<&RawValue, HandlerError> {
        if let Some(results) = self.parent(name) {
            return Ok(results);
        }
        let ancestors = self.ancestors().await?;
        match ancestors.iter().find(|(n, _)| &**n == name) {
            Some((_, results)) => Ok(results),
            None => Err(HandlerError::permanent(not_an_ancestor(
                self.step_name(),
                name,
                ancestors,
            ))),
        }
    }

    /// Every ancestor's results, by name, in template order (loaded once).
    pub async fn ancestors(&self) -> Result<&Ancestors, HandlerError> {
        let step = &self.step;
        step.ancestors
            .get_or_try_init(|| async {
                match &step.loader {
                    Some(load) => load(step.exec.step_id).await.map_err(|e| {
                        HandlerError::retryable(format!("loading the ancestors' results: {e}"))
                    }),
                    None => Ok(step.exec.parents.clone()),
                }
            })
            .await
    }

    /// The config deserialized into `T`; a mismatch is a permanent error.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(self.step.exec.config.get()).map_err(|e| {
            HandlerError::permanent(format!("config of step `{}`: {e}", self.step_name()))
        })
    }
}

/// `step `d` has no ancestor named `x` (its ancestors: a, b, c)`.
pub fn not_an_ancestor(step: &str, name: &str, ancestors: &Ancestors) -> String {
    let names: Vec<&str> = ancestors.iter().map(|(n, _)| &**n).collect();
    let names = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    };
    format!("step `{step}` has no ancestor named `{name}` (its ancestors: {names})")
}

/// Handlers by name.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    /// Takes every name no handler is registered under: the bridge to a registry kept
    /// in another language, which reports unknown names itself.
    fallback: Option<Arc<dyn Handler>>,
    /// What `shell` may run, when it is registered.
    pub(crate) shell: Option<crate::builtin::ShellPolicy>,
}

impl HandlerRegistry {
    /// An empty registry; [`HandlerRegistry::with_builtins`] for the built-in handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under `name`, replacing any handler of that name.
    pub fn register(&mut self, name: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// Sends every name that is not registered to `handler`.
    pub fn fallback(&mut self, handler: impl Handler) -> &mut Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(name).or(self.fallback.as_ref())
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// A handler from a synchronous function, for handlers that do no I/O.
pub struct FnHandler<F>(pub F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(&StepContext) -> HandlerResult + Send + Sync + 'static,
{
    fn call<'a>(&'a self, step: &'a StepContext) -> HandlerFuture<'a> {
        let result = (self.0)(step);
        Box::pin(std::future::ready(result))
    }
}

/// A first attempt of step `step` of a task with an empty context, for handler tests.
#[cfg(test)]
pub(crate) fn test_step(handler: &str, config: &str, timeout: Duration) -> StepContext {
    StepContext::new(tasker_core::store::StepExecution {
        task_id: TaskId::new(),
        step_id: StepId::new(),
        attempt: 1,
        namespace: "ns".into(),
        task_name: "task".into(),
        task_version: "1.0.0".into(),
        step_name: "step".into(),
        handler: handler.into(),
        config: RawValue::from_string(config.into()).unwrap(),
        context: RawValue::from_string("{}".into()).unwrap(),
        parents: Vec::new(),
        decides: Vec::new(),
        retry: tasker_core::backoff::RetryPolicy::default(),
        timeout,
        item: None,
        traceparent: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(handler: &str) -> StepContext {
        test_step(handler, "{}", Duration::from_secs(1))
    }

    #[tokio::test]
    async fn names_without_a_handler_go_to_the_fallback() {
        let mut registry = HandlerRegistry::new();
        registry.register("named", FnHandler(|_: &StepContext| to_result("named")));
        assert!(registry.get("Other::Name").is_none());
        registry.fallback(FnHandler(|s: &StepContext| to_result(s.handler())));
        for (name, expected) in [("named", "\"named\""), ("Other::Name", "\"Other::Name\"")] {
            let step = step(name);
            let handler = registry.get(name).expect("a handler");
            assert_eq!(handler.call(&step).await.unwrap().get(), expected);
        }
    }

    #[test]
    fn a_cloned_step_context_shares_its_execution() {
        let a = step("x");
        let b = a.clone();
        assert!(std::ptr::eq(a.context(), b.context()));
    }
}
