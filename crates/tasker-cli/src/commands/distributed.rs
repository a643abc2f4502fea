//! The processes of a distributed deployment: `migrate`, `orchestrator`, `worker`.

use std::sync::Arc;

use std::time::Duration;

use tasker_core::store::Store;
use tasker_engine::{Engine, EngineConfig, HandlerRegistry, Queues, WorkerConfig};

use super::stop_requested;
use crate::backend::{Backend, connect_postgres, migrate_postgres, redact};
use crate::cli::{MetricsArgs, StoreArgs};
use crate::config::Config;
use crate::{CliError, Outcome};

fn postgres_url(args: &StoreArgs, config: &Config, command: &str) -> Result<String, CliError> {
    Backend::resolve(args, config.database.url.as_deref())?.postgres_url(command)
}

pub async fn migrate(args: &StoreArgs) -> Result<Outcome, CliError> {
    let url = postgres_url(args, &Config::default(), "migrate")?;
    migrate_postgres(&url, 2).await?;
    println!("{} is up to date", redact(&url));
    Ok(Outcome::Success)
}

/// Runs the engine with `config` until asked to stop, then stops taking work and
/// lets the steps in flight finish. `/metrics`, `/health` and `/ready` are served on
/// `metrics_addr` meanwhile.
async fn serve(
    url: &str,
    connections: u32,
    config: EngineConfig,
    handlers: HandlerRegistry,
    role: &str,
    metrics_addr: Option<&str>,
) -> Result<Outcome, CliError> {
    let stop = stop_requested();
    let metrics = match metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::Failed(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let store = Arc::new(connect_postgres(url, connections).await?);
    let engine = Engine::new(store.clone(), handlers, config);
    let running = engine.start();
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(listener) = metrics {
        let addr = listener.local_addr().map_err(CliError::failed)?;
        eprintln!("{role} metrics on http://{addr}/metrics");
        let router = tasker_api::probes_router(engine.clone());
        let mut stopped = metrics_stopped;
        let timeout = tasker_api::PROBE_READ_TIMEOUT;
        tokio::spawn(tasker_api::serve(listener, router, timeout, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    eprintln!(
        "{role} running on {} (pid {})",
        redact(url),
        std::process::id()
    );
    stop.await;
    eprintln!("{role} stopping: finishing work in flight");
    running.shutdown().await;
    let _ = stop_metrics.send(true);
    // `tasker bench` reads this line.
    eprintln!(
        "{role} stopped after {} write transactions",
        store.write_transactions()
    );
    Ok(Outcome::Success)
}

pub async fn orchestrator(
    args: &StoreArgs,
    metrics: &MetricsArgs,
    config: &Config,
) -> Result<Outcome, CliError> {
    let url = postgres_url(args, config, "orchestrator")?;
    let engine = EngineConfig {
        worker: None,
        poll_interval: config.engine.poll_interval,
        memory: config.memory_limits(),
        retention: config.engine.retention,
        ..EngineConfig::embedded()
    };
    let pool = config.database.pool_size.unwrap_or(6);
    serve(
        &url,
        pool,
        engine,
        config.handlers(),
        "orchestrator",
        metrics_addr(metrics, config),
    )
    .await
}

/// What `tasker worker` was asked for on its command line.
pub struct WorkerArgs<'a> {
    pub store: &'a StoreArgs,
    pub queues: Vec<String>,
    pub concurrency: Option<usize>,
    pub grace: Option<Duration>,
    pub metrics: &'a MetricsArgs,
}

pub async fn worker(args: WorkerArgs<'_>, config: &Config) -> Result<Outcome, CliError> {
    let url = postgres_url(args.store, config, "worker")?;
    let queues = if args.queues.is_empty() {
        config.worker.queues.clone()
    } else {
        args.queues
    };
    for q in &queues {
        tasker_core::names::check_queue_name(q)
            .map_err(|why| CliError::BadInput(format!("queue `{q}` {why}")))?;
    }
    let queues = if queues.is_empty() {
        Queues::All
    } else {
        Queues::Named(queues)
    };
    let concurrency = args.concurrency.unwrap_or(config.worker.concurrency).max(1);
    let engine = EngineConfig {
        orchestrator: false,
        worker: Some(WorkerConfig {
            queues,
            concurrency,
        }),
        poll_interval: config.engine.poll_interval,
        visibility_grace: args.grace.unwrap_or(config.engine.visibility_grace),
        memory: config.memory_limits(),
        ..EngineConfig::client()
    };
    let pool = config.database.pool_size.unwrap_or(concurrency as u32 + 2);
    serve(
        &url,
        pool,
        engine,
        config.handlers(),
        "worker",
        metrics_addr(args.metrics, config),
    )
    .await
}

fn metrics_addr<'a>(args: &'a MetricsArgs, config: &'a Config) -> Option<&'a str> {
    args.metrics_addr
        .as_deref()
        .or(config.metrics.listen.as_deref())
}
