//! `tasker serve`: the HTTP API. On the embedded store the same process runs the
//! orchestrator and the workers (nothing else may open the file); on PostgreSQL it
//! serves the API only, next to orchestrator and worker processes.

use std::net::SocketAddr;
use std::sync::Arc;

use tasker_api::{ApiConfig, Closing};
use tasker_core::store::Store;
use tasker_engine::{Engine, EngineConfig, Queues, WorkerConfig};

use super::stop_requested;
use crate::backend::{Access, Backend, with_store};
use crate::cli::StoreArgs;
use crate::config::Config;
use crate::{CliError, Outcome};

pub async fn serve(
    store: &StoreArgs,
    listen: Option<String>,
    insecure_no_auth: bool,
    config: &Config,
) -> Result<Outcome, CliError> {
    let stop = stop_requested();
    let listen = listen.unwrap_or_else(|| config.api.listen.clone());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| CliError::BadInput(format!("--listen `{listen}`: {e}")))?;
    let open = config.api.tokens.is_empty();
    if open && !addr.ip().is_loopback() {
        if !insecure_no_auth {
            return Err(CliError::BadInput(format!(
                "refusing to serve on {addr} without API tokens (api.tokens): anyone who reaches it could submit and cancel work; set tokens, listen on 127.0.0.1, or pass --insecure-no-auth"
            )));
        }
        tracing::warn!(%addr, "serving without API tokens on a non-loopback address (--insecure-no-auth)");
    }
    let api = ApiConfig {
        tokens: config.api_tokens().map_err(CliError::BadInput)?,
        body_limit: usize::try_from(config.api.body_limit.0).unwrap_or(usize::MAX),
        read_timeout: config.api.read_timeout,
        any_host: insecure_no_auth,
        closing: Closing::default(),
    };
    let engine_config = EngineConfig {
        poll_interval: config.engine.poll_interval,
        visibility_grace: config.engine.visibility_grace,
        memory: config.memory_limits(),
        retention: config.engine.retention,
        ..EngineConfig::embedded()
    };
    let backend = Backend::resolve(store, config.database.url.as_deref())?;
    let described = backend.describe();
    // The embedded file is this process's alone: it runs the work too. Next to
    // PostgreSQL, orchestrator and worker processes do.
    let engine_config = match backend {
        Backend::Sqlite(_) => EngineConfig {
            worker: Some(WorkerConfig {
                queues: Queues::All,
                concurrency: config.worker.concurrency,
            }),
            ..engine_config
        },
        Backend::Postgres(_) => EngineConfig {
            orchestrator: false,
            worker: None,
            ..engine_config
        },
    };
    let pool = config.database.pool_size.unwrap_or(8);
    with_store!((backend, Access::Write, pool), |store| {
        let engine = Engine::new(Arc::new(store), config.handlers(), engine_config);
        run(engine, addr, api, &described, stop)
    })
}

async fn run<S: Store>(
    engine: Engine<S>,
    addr: SocketAddr,
    api: ApiConfig,
    store: &str,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Outcome, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(CliError::failed)?;
    let running = engine.start();
    let read_timeout = api.read_timeout;
    let closing = api.closing.clone();
    let router = tasker_api::router(engine, api);
    // Tests and scripts read this line for the address.
    eprintln!(
        "tasker serve listening on http://{local} (store: {store}, pid {}); dashboard: http://{local}/ui",
        std::process::id()
    );
    let stop = async move {
        stop.await;
        // Pages left open on a live task must not hold the shutdown.
        closing.close();
    };
    let served = tasker_api::serve(listener, router, read_timeout, stop).await;
    eprintln!("tasker serve stopping: finishing work in flight");
    running.shutdown().await;
    served.map_err(CliError::failed)?;
    Ok(Outcome::Success)
}
