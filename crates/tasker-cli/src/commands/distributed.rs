//! The processes of a distributed deployment: `migrate`, `orchestrator`, `worker`.

use std::sync::Arc;

use tasker_engine::{Engine, EngineConfig, HandlerRegistry, Queues, WorkerConfig};

use super::{Backend, connect_postgres, redact, stop_requested};
use crate::cli::StoreArgs;
use crate::{CliError, Outcome};

fn postgres_url(args: &StoreArgs, command: &str) -> Result<String, CliError> {
    match Backend::from_args(args)? {
        Backend::Postgres(url) => Ok(url),
        Backend::Sqlite(_) => Err(CliError::BadInput(format!(
            "`tasker {command}` needs a PostgreSQL database (--database-url or DATABASE_URL); \
             on the embedded store, `tasker run` does everything in one process"
        ))),
    }
}

pub async fn migrate(args: &StoreArgs) -> Result<Outcome, CliError> {
    let url = postgres_url(args, "migrate")?;
    connect_postgres(&url, 2).await?;
    println!("{} is up to date", redact(&url));
    Ok(Outcome::Success)
}

/// Runs the engine with `config` until asked to stop, then stops taking work and
/// lets the steps in flight finish.
async fn serve(
    url: &str,
    connections: u32,
    config: EngineConfig,
    role: &str,
) -> Result<Outcome, CliError> {
    let store = Arc::new(connect_postgres(url, connections).await?);
    let engine = Engine::new(store.clone(), HandlerRegistry::with_builtins(), config);
    let running = engine.start();
    eprintln!(
        "{role} running on {} (pid {})",
        redact(url),
        std::process::id()
    );
    stop_requested().await;
    eprintln!("{role} stopping: finishing work in flight");
    running.shutdown().await;
    // `tasker bench` reads this line.
    eprintln!(
        "{role} stopped after {} write transactions",
        store.write_transactions()
    );
    Ok(Outcome::Success)
}

pub async fn orchestrator(args: &StoreArgs) -> Result<Outcome, CliError> {
    let url = postgres_url(args, "orchestrator")?;
    let config = EngineConfig {
        worker: None,
        ..EngineConfig::embedded()
    };
    serve(&url, 6, config, "orchestrator").await
}

pub async fn worker(
    args: &StoreArgs,
    queues: Vec<String>,
    concurrency: usize,
    grace: std::time::Duration,
) -> Result<Outcome, CliError> {
    let url = postgres_url(args, "worker")?;
    for q in &queues {
        tasker_core::names::check_queue_name(q)
            .map_err(|why| CliError::BadInput(format!("queue `{q}` {why}")))?;
    }
    let queues = if queues.is_empty() {
        Queues::All
    } else {
        Queues::Named(queues)
    };
    let concurrency = concurrency.max(1);
    let config = EngineConfig {
        orchestrator: false,
        worker: Some(WorkerConfig {
            queues,
            concurrency,
        }),
        visibility_grace: grace,
        ..EngineConfig::embedded()
    };
    serve(&url, concurrency as u32 + 2, config, "worker").await
}
