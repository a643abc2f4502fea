//! # tasker-api
//!
//! Tasker's HTTP API (`tasker serve`), over any store: submit and inspect tasks, list
//! and register templates, operate on failed work. Errors are JSON with a stable
//! `code`; with tokens configured every `/v1` route needs `Authorization: Bearer` with
//! a token of the route's scope.
//! `/health`, `/ready`, `/metrics` and `/openapi.json` are open, and
//! [`probes_router`] serves the first three from orchestrator and worker processes.

mod auth;
mod body;
mod edge;
mod error;
mod live;
mod probes;
mod query;
mod schedules;
mod server;
mod tasks;
mod templates;
mod ui;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use tasker_core::store::Store;
use tasker_core::template::TaskTemplate;
use tasker_engine::Engine;

pub use auth::{Scope, Token};
pub use axum::Router;
pub use error::ApiError;
pub use live::{Closing, MAX_STREAMS};
pub use probes::render as render_metrics;
pub use server::serve;

/// The OpenAPI 3 description of every route, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the server answers, as `(method, path)` in OpenAPI's path syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/counts"),
    ("GET", "/v1/tasks/{id}"),
    ("GET", "/v1/tasks/{id}/stream"),
    ("GET", "/v1/tasks/{id}/history"),
    ("POST", "/v1/tasks/{id}/cancel"),
    ("POST", "/v1/tasks/{id}/retry"),
    ("POST", "/v1/tasks/{id}/signals/{name}"),
    ("POST", "/v1/steps/{id}/resolve"),
    ("GET", "/v1/dead-letters"),
    ("GET", "/v1/queues"),
    ("POST", "/v1/queues/{name}/pause"),
    ("POST", "/v1/queues/{name}/resume"),
    ("GET", "/v1/templates"),
    ("POST", "/v1/templates"),
    ("POST", "/v1/templates/{namespace}/{name}/pause"),
    ("POST", "/v1/templates/{namespace}/{name}/resume"),
    ("GET", "/v1/schedules"),
    ("POST", "/v1/schedules"),
    ("POST", "/v1/schedules/{name}/pause"),
    ("POST", "/v1/schedules/{name}/resume"),
    ("DELETE", "/v1/schedules/{name}"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// How the API is served.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Bearer tokens accepted on `/v1`; none means no authentication.
    pub tokens: Vec<Token>,
    /// Request bodies above this many bytes are refused with 413.
    pub body_limit: usize,
    /// How long a client may take to send a request's head, and then its body.
    pub read_timeout: Duration,
    /// Without tokens, answer requests for any host name, not only loopback ones (the
    /// operator chose to serve without authentication on a non-loopback address).
    pub any_host: bool,
    /// Ends the live streams at shutdown.
    pub closing: Closing,
}

pub struct AppState<S> {
    engine: Engine<S>,
    tokens: Arc<[Token]>,
    body_limit: usize,
    read_timeout: Duration,
    any_host: bool,
    closing: Closing,
    /// The live streams open now ([`live::MAX_STREAMS`] at most).
    streams: Arc<tokio::sync::Semaphore>,
    /// Registered templates parsed once, by `namespace/name@version`: versions are
    /// immutable, so a parsed one never goes stale.
    templates: Arc<Mutex<HashMap<String, Arc<TaskTemplate>>>>,
}

impl<S> AppState<S> {
    fn new(engine: Engine<S>, config: ApiConfig) -> Self {
        Self {
            engine,
            tokens: config.tokens.into(),
            body_limit: config.body_limit,
            read_timeout: config.read_timeout,
            any_host: config.any_host,
            closing: config.closing,
            streams: live::stream_permits(),
            templates: Arc::default(),
        }
    }
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            tokens: self.tokens.clone(),
            body_limit: self.body_limit,
            read_timeout: self.read_timeout,
            any_host: self.any_host,
            closing: self.closing.clone(),
            streams: self.streams.clone(),
            templates: self.templates.clone(),
        }
    }
}

/// The whole API.
pub fn router<S: Store>(engine: Engine<S>, config: ApiConfig) -> Router {
    let body_limit = config.body_limit;
    let state = AppState::new(engine, config);
    let v1 = Router::new()
        .route("/v1/tasks", post(tasks::create::<S>).get(tasks::list::<S>))
        .route("/v1/tasks/counts", get(tasks::counts::<S>))
        .route("/v1/tasks/{id}", get(tasks::get::<S>))
        .route("/v1/tasks/{id}/stream", get(live::stream::<S>))
        .route("/v1/tasks/{id}/history", get(tasks::history::<S>))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel::<S>))
        .route("/v1/tasks/{id}/retry", post(tasks::retry::<S>))
        .route("/v1/tasks/{id}/signals/{name}", post(tasks::signal::<S>))
        .route("/v1/steps/{id}/resolve", post(tasks::resolve::<S>))
        .route("/v1/dead-letters", get(tasks::dead_letters::<S>))
        .route("/v1/queues", get(tasks::queues::<S>))
        .route("/v1/queues/{name}/pause", post(tasks::pause::<S>))
        .route("/v1/queues/{name}/resume", post(tasks::resume::<S>))
        .route(
            "/v1/templates/{namespace}/{name}/pause",
            post(tasks::pause_template_route::<S>),
        )
        .route(
            "/v1/templates/{namespace}/{name}/resume",
            post(tasks::resume_template_route::<S>),
        )
        .route(
            "/v1/templates",
            get(templates::list::<S>).post(templates::register::<S>),
        )
        .route(
            "/v1/schedules",
            get(schedules::list::<S>).post(schedules::create::<S>),
        )
        .route("/v1/schedules/{name}", delete(schedules::delete::<S>))
        .route("/v1/schedules/{name}/pause", post(schedules::pause::<S>))
        .route("/v1/schedules/{name}/resume", post(schedules::resume::<S>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token::<S>,
        ));
    Router::new()
        .merge(v1)
        .merge(probes())
        .merge(ui::routes())
        .route("/openapi.json", get(openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::guard::<S>,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// How long a probe client may take to send its request (probes have no body).
pub const PROBE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `/health`, `/ready` and `/metrics` alone, for orchestrator and worker processes.
pub fn probes_router<S: Store>(engine: Engine<S>) -> Router {
    let config = ApiConfig {
        tokens: Vec::new(),
        body_limit: 0,
        read_timeout: PROBE_READ_TIMEOUT,
        any_host: true,
        closing: Closing::default(),
    };
    probes()
        .fallback(no_route)
        .with_state(AppState::new(engine, config))
}

fn probes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready::<S>))
        .route("/metrics", get(probes::metrics::<S>))
}

async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route (GET /openapi.json lists them)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (GET /openapi.json lists them)",
    )
}

/// A JSON response, serialized once without an intermediate tree.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).expect("API bodies serialize");
    (status, [(CONTENT_TYPE, "application/json")], bytes).into_response()
}
