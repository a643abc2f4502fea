//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tasker",
    version,
    about = "Workflow orchestration: DAGs of steps with retries, run embedded or distributed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check templates; print every problem with its file, line and step.
    Validate {
        /// Template files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run a template to its end on the embedded store.
    Run(RunArgs),
    /// Finish every unfinished task of an embedded database (after a crash).
    Resume {
        #[command(flatten)]
        db: DbArgs,
        /// Steps run at the same time, at most.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Show a task (or, without an id, every task) of an embedded database.
    Status {
        /// The task's id.
        task_id: Option<String>,
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct DbArgs {
    /// The embedded database file (`:memory:` for a throwaway one).
    #[arg(long, default_value = "tasker.db")]
    pub db: String,
}

#[derive(Args)]
pub struct RunArgs {
    /// The template file.
    pub template: PathBuf,
    /// The task context, as JSON.
    #[arg(long, conflicts_with = "context_file")]
    pub context: Option<String>,
    /// A file holding the task context as JSON.
    #[arg(long)]
    pub context_file: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    /// Print one JSON object instead of progress and a table.
    #[arg(long)]
    pub json: bool,
    /// Steps run at the same time, at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}
