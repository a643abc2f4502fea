//! OpenTelemetry traces (docs/traces.md), off unless the process installs an export
//! ([`Traces::install`]), which its engines then use. Then:
//!
//! - a task it submits, or a schedule's task its orchestrator creates, begins a trace:
//!   its trace context (the trace id, and the span id its task span will have) is kept
//!   on the task's row and carried by each of its step messages;
//! - each step attempt it runs is exported as the `step` span the worker runs it in (a
//!   `tracing` span, through [`Traces::layer`]), a child of its task's span in
//!   whichever process it runs;
//! - when a task it moves reaches a final state, it exports the task span, from the
//!   task's creation to then, under the id chosen at submission.
//!
//! Without an export nothing here runs: no trace context is made, no span is given a
//! parent, no task is looked up.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider, SpanData,
    SpanEvents, SpanExporter as _, SpanLinks, SpanProcessor,
};
use tasker_core::TaskState;
use tasker_core::message::TraceParent;
use tasker_core::store::TaskRecord;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// The name of the spans' instrumentation scope.
const SCOPE: &str = "tasker";

/// The process's export, once installed.
static INSTALLED: OnceLock<Traces> = OnceLock::new();

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
#[error("`{endpoint}`: {why}")]
pub struct TraceError {
    endpoint: String,
    why: String,
}

/// This process's span export: OTLP over HTTP (protobuf), in batches sent from a
/// thread of its own. Cheap to clone; clones share the export.
#[derive(Clone, Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    /// The processor the provider exports through, shared so that a task span, recorded
    /// after the fact with the ids chosen at submission, goes out the same way.
    processor: Arc<BatchSpanProcessor>,
}

/// Where spans go for the collector `endpoint` (its OTLP/HTTP base URL, such as
/// `http://localhost:4318`): `/v1/traces` under it. Only `http://`: this build has no
/// TLS.
pub fn traces_url(endpoint: &str) -> Result<String, TraceError> {
    let bad = |why: &str| TraceError {
        endpoint: endpoint.to_owned(),
        why: why.to_owned(),
    };
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| bad("use an http:// URL (this build sends no TLS)"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(bad("not a URL like http://localhost:4318"));
    }
    Ok(match endpoint.trim_end_matches('/') {
        base if base.ends_with("/v1/traces") => base.to_owned(),
        base => format!("{base}/v1/traces"),
    })
}

impl Traces {
    /// Exports this process's spans to the collector at `endpoint` (see [`traces_url`])
    /// as `service_name`, from every engine it creates from then on
    /// ([`EngineConfig::traces`](crate::EngineConfig::traces)) and from OpenTelemetry's
    /// global tracer. Once per process.
    pub fn install(endpoint: &str, service_name: &str) -> Result<&'static Traces, TraceError> {
        let traces = Self::export(endpoint, service_name)?;
        let provider = traces.provider.clone();
        if INSTALLED.set(traces).is_err() {
            return Err(TraceError {
                endpoint: endpoint.to_owned(),
                why: "this process already exports traces".into(),
            });
        }
        opentelemetry::global::set_tracer_provider(provider);
        Ok(INSTALLED.get().expect("just installed"))
    }

    /// The process's export, if it installed one.
    pub fn installed() -> Option<&'static Traces> {
        INSTALLED.get()
    }

    fn export(endpoint: &str, service_name: &str) -> Result<Self, TraceError> {
        let url = traces_url(endpoint)?;
        let bad = |why: String| TraceError {
            endpoint: endpoint.to_owned(),
            why,
        };
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        // The processor is shared, so the provider cannot hand it the resource.
        exporter.set_resource(&resource);
        let processor = Arc::new(BatchSpanProcessor::builder(exporter).build());
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(Shared(processor.clone()))
            .build();
        Ok(Self {
            provider,
            processor,
        })
    }

    /// The `tracing` layer that exports spans (the worker's `step` spans, and the spans
    /// handlers open inside them) through this export.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SCOPE))
    }

    /// Sends the spans not yet sent and stops the export; blocks until done (at most a
    /// few seconds when the collector does not answer). For the end of the process.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("tasker: warning: traces not all sent: {e}");
        }
    }

    /// Makes `span` (not yet entered) a child of the task span of `parent` (a root of
    /// its own trace without one); returns the trace context of `span` itself, none
    /// when this process's subscriber has no layer of ours (then nothing of the span
    /// is exported).
    pub(crate) fn join(
        &self,
        span: &tracing::Span,
        parent: Option<TraceParent>,
    ) -> Option<TraceParent> {
        if let Some(parent) = parent {
            let context = Context::new().with_remote_span_context(span_context(parent, true));
            span.set_parent(context).ok()?;
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        own.is_valid().then(|| TraceParent {
            trace_id: own.trace_id().to_bytes(),
            span_id: own.span_id().to_bytes(),
            flags: own.trace_flags().to_u8(),
        })
    }

    /// Exports the span of `task`, which has reached `state`: from its creation to now,
    /// with the ids its steps' spans name as their parent.
    pub(crate) fn task_ended(&self, task: &TaskRecord, parent: TraceParent, state: TaskState) {
        let started = u64::try_from(task.created_at.0).unwrap_or(0);
        let status = match state {
            TaskState::Error => Status::error("a step failed for good"),
            _ => Status::Unset,
        };
        self.processor.on_end(SpanData {
            span_context: span_context(parent, false),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("task"),
            start_time: SystemTime::UNIX_EPOCH + Duration::from_micros(started),
            end_time: SystemTime::now(),
            attributes: vec![
                KeyValue::new("task_id", task.id.to_string()),
                KeyValue::new("namespace", task.namespace.clone()),
                KeyValue::new("task", task.name.clone()),
                KeyValue::new("version", task.version.clone()),
                KeyValue::new("outcome", state.as_str()),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder(SCOPE).build(),
        });
    }
}

/// The trace context of a task being created (submitted, or fired by a schedule): a
/// new trace, sampled, and the span id its task span will have.
pub(crate) fn new_trace() -> TraceParent {
    let ids = RandomIdGenerator::default();
    TraceParent {
        trace_id: ids.new_trace_id().to_bytes(),
        span_id: ids.new_span_id().to_bytes(),
        flags: TraceFlags::SAMPLED.to_u8(),
    }
}

fn span_context(parent: TraceParent, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        remote,
        TraceState::default(),
    )
}

/// The batch processor, owned by the provider and by [`Traces`] alike.
#[derive(Debug)]
struct Shared(Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tasker_core::message::StepMessage;
    use tasker_core::store::Store;
    use tasker_store::sqlite::SqliteStore;

    use crate::{Engine, EngineConfig, HandlerRegistry};

    #[test]
    fn an_endpoint_is_an_http_base_url() {
        let url = |e: &str| super::traces_url(e).map_err(|e| e.to_string());
        assert_eq!(url("http://c:4318").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(
            url("http://c:4318/v1/traces").unwrap(),
            "http://c:4318/v1/traces"
        );
        for bad in [
            "https://c:4318",
            "c:4318",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(url(bad).unwrap_err().starts_with(&format!("`{bad}`: ")));
        }
    }

    /// With no export installed (this test binary installs none), a submission makes no
    /// trace context: the task has none and its step messages are as they always were.
    #[tokio::test]
    async fn without_an_export_step_messages_carry_no_trace_context() {
        let template = tasker_core::template::parse_template(
            "namespace: off\nname: t\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n",
            "t.yaml",
        )
        .unwrap();
        let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
        let config = EngineConfig::client();
        assert!(config.traces.is_none());
        let engine = Engine::new(store.clone(), HandlerRegistry::with_builtins(), config);
        let task = engine.submit(&template, "{}", None).await.unwrap().task_id;
        let visibility = Duration::from_secs(30);
        store.task_start_batch(10, visibility, None).await.unwrap();
        let read = store.queue_read("off", visibility, 10).await.unwrap();
        let [message] = &read.messages[..] else {
            panic!("{:?}", read.messages);
        };
        let decoded: StepMessage = serde_json::from_str(&message.body).unwrap();
        assert_eq!(decoded.task_id, task);
        assert!(!message.body.contains("traceparent"), "{}", message.body);
        assert_eq!(engine.task(task).await.unwrap().task.traceparent, None);
    }
}
