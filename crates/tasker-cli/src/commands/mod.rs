//! One module per command.

mod run;
mod status;
mod validate;

use std::io::IsTerminal;

use tasker_core::template::TaskTemplate;
use tasker_store::sqlite::SqliteStore;

use crate::cli::Command;
use crate::{CliError, Outcome};

pub async fn dispatch(command: Command) -> Result<Outcome, CliError> {
    match command {
        Command::Validate { paths } => validate::validate(&paths),
        Command::Run(args) => run::run(args).await,
        Command::Resume { db, concurrency } => run::resume(&db.db, concurrency).await,
        Command::Status { task_id, db, json } => {
            let store = SqliteStore::open_read_only(&db.db)
                .await
                .map_err(CliError::bad)?;
            status::status(&store, task_id.as_deref(), json).await
        }
    }
}

/// Loads exactly one template from a file.
pub fn load_one(path: &std::path::Path) -> Result<TaskTemplate, CliError> {
    let mut templates = tasker_core::template::load_path(path).map_err(CliError::bad)?;
    match templates.len() {
        1 => Ok(templates.remove(0)),
        n => Err(CliError::BadInput(format!(
            "{} holds {n} templates; give the file of the one to run",
            path.display()
        ))),
    }
}

/// Resolves when the process is asked to stop (ctrl-C or SIGTERM).
pub async fn stop_requested() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A live line on a terminal's stderr; silent when stderr is not a terminal.
pub struct ProgressLine {
    live: bool,
    shown: bool,
}

impl ProgressLine {
    pub fn new(enabled: bool) -> Self {
        Self {
            live: enabled && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    pub fn show(&mut self, line: &str) {
        if self.live {
            eprint!("\r\x1b[2K{line}");
            self.shown = true;
        }
    }

    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
