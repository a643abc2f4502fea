//! `tasker run` and `tasker resume`: the embedded engine in this process.

use std::sync::Arc;

use tasker_core::TaskState;
use tasker_core::id::TaskId;
use tasker_engine::{
    Engine, EngineConfig, EngineError, HandlerRegistry, Queues, ShellPolicy, WorkerConfig,
};
use tasker_store::sqlite::SqliteStore;

use super::{ProgressLine, load_one, read_context, stop_requested};
use crate::backend::{Access, open_sqlite};
use crate::cli::RunArgs;
use crate::report;
use crate::{CliError, Outcome};

async fn open(db: &str) -> Result<Arc<SqliteStore>, CliError> {
    open_sqlite(db, Access::Write).await.map(Arc::new)
}

/// The embedded engine; `allow_shell` lets `shell` steps run any program.
fn embedded(store: Arc<SqliteStore>, concurrency: usize, allow_shell: bool) -> Engine<SqliteStore> {
    let config = EngineConfig {
        worker: Some(WorkerConfig {
            queues: Queues::All,
            concurrency: concurrency.max(1),
        }),
        ..EngineConfig::embedded()
    };
    let mut handlers = HandlerRegistry::with_builtins();
    if allow_shell {
        handlers = handlers.with_shell(ShellPolicy::Any);
    }
    Engine::new(store, handlers, config)
}

pub async fn run(args: RunArgs) -> Result<Outcome, CliError> {
    let template = load_one(&args.template)?;
    let context = read_context(&args.context)?;
    let store = open(&args.db.db).await?;
    let engine = embedded(store, args.concurrency, args.allow_shell);
    let running = engine.start();
    let task = match engine.submit(&template, &context, None).await {
        Ok(t) => t,
        Err(e) => {
            running.shutdown().await;
            return Err(match e {
                EngineError::Store(s) => CliError::failed(s),
                bad => CliError::bad(bad),
            });
        }
    };
    if args.db.db == ":memory:" {
        eprintln!("task {} created ({})", task.task_id, template.key());
    } else {
        eprintln!(
            "task {} created ({}); if interrupted: tasker resume --db {}",
            task.task_id,
            template.key(),
            args.db.db
        );
    }
    let result = follow(&engine, task.task_id, !args.json).await;
    running.shutdown().await;
    let Some(detail) = result? else {
        eprintln!(
            "interrupted: in-flight steps finished; continue with: tasker resume --db {}",
            args.db.db
        );
        return Ok(Outcome::Interrupted);
    };
    if args.json {
        println!("{}", report::json(&detail));
    } else {
        print!("{}", report::table(&detail));
    }
    Ok(if detail.task.state == TaskState::Complete {
        Outcome::Success
    } else {
        Outcome::Unsuccessful
    })
}

/// Waits for the task with a live progress line; `None` if the user interrupted.
async fn follow(
    engine: &Engine<SqliteStore>,
    task_id: TaskId,
    show_progress: bool,
) -> Result<Option<tasker_core::store::TaskDetail>, CliError> {
    let mut progress = ProgressLine::new(show_progress);
    let waited = tokio::select! {
        r = engine.wait(task_id, |d| progress.show(&report::progress(d))) => Some(r),
        _ = stop_requested() => None,
    };
    progress.finish();
    waited.transpose().map_err(CliError::failed)
}

pub async fn resume(db: &str, concurrency: usize, allow_shell: bool) -> Result<Outcome, CliError> {
    if db != ":memory:" && !std::path::Path::new(db).exists() {
        return Err(CliError::BadInput(format!("no database file {db}")));
    }
    let store = open(db).await?;
    store.check_integrity().await.map_err(CliError::failed)?;
    let engine = embedded(store, concurrency, allow_shell);
    let unfinished = engine.unfinished().await.map_err(CliError::failed)?;
    if unfinished.is_empty() {
        eprintln!("nothing to resume in {db}");
        return Ok(Outcome::Success);
    }
    eprintln!("resuming {} unfinished task(s) in {db}", unfinished.len());
    let running = engine.start();
    let mut all_complete = true;
    for id in unfinished {
        let Some(detail) = follow(&engine, id, true).await? else {
            running.shutdown().await;
            eprintln!("interrupted; run `tasker resume --db {db}` again to continue");
            return Ok(Outcome::Interrupted);
        };
        let done = detail.steps.iter().filter(|s| s.state.is_done()).count();
        println!(
            "{}  {:<11}  {} ({done}/{} steps done)",
            id,
            detail.task.state,
            report::template_of(&detail.task),
            detail.steps.len()
        );
        all_complete &= detail.task.state == TaskState::Complete;
    }
    running.shutdown().await;
    Ok(if all_complete {
        Outcome::Success
    } else {
        Outcome::Unsuccessful
    })
}
