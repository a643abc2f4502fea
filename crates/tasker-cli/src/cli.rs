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
    /// The configuration file of serve, orchestrator and worker (docs/configuration.md).
    #[arg(long, global = true, env = "TASKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines for people (pretty) or collectors (json); RUST_LOG sets the filter.
    #[arg(long, global = true, value_parser = ["pretty", "json"])]
    pub log_format: Option<String>,
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
        /// Let `shell` steps run any program (as `run --allow-shell`).
        #[arg(long)]
        allow_shell: bool,
    },
    /// Show a task (or, without an id, the latest tasks).
    Status {
        /// The task's id.
        task_id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A task's history: every state change of the task and its steps, oldest first,
    /// with the reason.
    History {
        task_id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Messages moved to the dead letters, each with why.
    DeadLetters {
        /// One queue (every queue when absent).
        #[arg(long)]
        queue: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a task from a template (registering the template if it is new); prints its id.
    Submit {
        /// The template file.
        template: PathBuf,
        #[command(flatten)]
        context: ContextArgs,
        /// Submitting again with the same key returns the same task.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Its steps are taken before those of lower priority (the template's, else 0).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Wait for a task to finish, showing progress. Exit 0 complete, 1 error or
    /// cancelled, 3 on timeout.
    Wait {
        task_id: String,
        /// Give up after this long (e.g. `30s`, `5m`).
        #[arg(long)]
        timeout: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Cancel a task and its unfinished steps.
    Cancel {
        task_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Re-run the failed steps of a task in error.
    Retry {
        task_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deliver a signal to a task: the steps waiting for it (`wait_for`) complete with
    /// the payload as their result; a step that reaches its wait later finds it.
    Signal {
        task_id: String,
        /// The signal's name, as the template's `wait_for: {signal: …}` names it.
        name: String,
        /// The payload, as JSON: the result of the steps that waited for it.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Mark a failed step done with the given results; its children proceed.
    Resolve {
        step_id: String,
        /// The step's results, as JSON.
        #[arg(long)]
        results: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete tasks finished (complete, in error or cancelled) longer ago than a
    /// duration, with their steps, transitions, messages and dead letters.
    Prune {
        /// How long ago, at least: `30d`, `12h`, `90m`.
        #[arg(long)]
        finished_before: String,
        /// Tasks deleted per transaction.
        #[arg(long, default_value_t = tasker_engine::retention::BATCH)]
        batch: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run a template on a cron schedule: create, list, pause, resume, delete.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Pause, resume and list the step queues.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Manage templates in the database.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Install pgmq and apply migrations (PostgreSQL).
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Start submitted tasks (PostgreSQL); stops gracefully on SIGTERM or ctrl-C.
    Orchestrator {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Measure throughput and latency with N tasks of one shape (use a scratch database).
    Bench(BenchArgs),
    /// Run steps from queues (PostgreSQL); stops gracefully on SIGTERM or ctrl-C.
    Worker {
        /// A queue to serve (repeat for several); worker.queues, else every queue.
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// Steps run at the same time, at most (worker.concurrency, 8).
        #[arg(long)]
        concurrency: Option<usize>,
        /// How long after its step's timeout a step whose worker died runs again
        /// (engine.visibility_grace, 5s).
        #[arg(long)]
        grace: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Serve the HTTP API (docs/api.md) with /health, /ready and /metrics. On the
    /// embedded store it also runs the orchestrator and workers (built-in handlers).
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// The address to listen on (api.listen, 127.0.0.1:8080); port 0 picks one.
        #[arg(long)]
        listen: Option<String>,
        /// Serve without API tokens on a non-loopback address: anyone who reaches it
        /// may submit, cancel and register templates.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (or TASKER_CONFIG) with the TASKER_ environment and
    /// print the effective configuration, secrets redacted.
    Check { file: Option<PathBuf> },
}

/// Where an orchestrator or worker serves /metrics, /health and /ready.
#[derive(Args)]
pub struct MetricsArgs {
    /// Address for /metrics, /health and /ready (metrics.listen); none when unset.
    #[arg(long)]
    pub metrics_addr: Option<String>,
}

/// Options of `tasker bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// linear4, diamond, fanout100, chain50, or chain / fanout / foreach of `--steps`
    /// steps.
    #[arg(long, default_value = "diamond")]
    pub shape: String,
    /// Steps per task of `--shape chain` (a line), `--shape fanout` (a root, the
    /// leaves, a join) or `--shape foreach` (a `for_each` step over the context's
    /// items, its instances, a join: the fan-out made of instances).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Tasks to run.
    #[arg(long, default_value_t = 200)]
    pub tasks: usize,
    /// Worker processes (PostgreSQL; the embedded store runs one in-process worker).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Steps each worker runs at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Give the template a concurrency key (one value for every task) with this limit:
    /// what holding and releasing slots costs.
    #[arg(long)]
    pub key_limit: Option<u32>,
    /// Give every step a rate limit of this many starts a second (one key; the burst
    /// as large): what taking tokens costs, or, set low, the limit at work.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Fill the database with this many finished steps (of finished tasks of the same
    /// shape) before measuring: throughput as the tables grow.
    #[arg(long, default_value_t = 0)]
    pub preload_steps: u64,
    /// Messages of the raw pgmq round trips (PostgreSQL).
    #[arg(long, default_value_t = 10_000)]
    pub ceiling_messages: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Register templates; a version that exists with other content is refused.
    Register {
        /// Template files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Hold the new tasks of a template (`namespace/name`, every version) pending, in
    /// every process, until it is resumed; tasks already started run on.
    Pause {
        template: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Start the tasks a paused template held, and its new ones again.
    Resume {
        template: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Submit the template with the context at each tick of EXPR, fired once per tick
    /// by whichever orchestrator (or `tasker serve`) reads it.
    Create {
        /// The template file (registered with the schedule).
        template: PathBuf,
        /// 5 fields (minute hour day month weekday), 6 with seconds first, or
        /// `@every 30s`.
        #[arg(long)]
        cron: String,
        /// The IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[command(flatten)]
        context: ContextArgs,
        /// The schedule's name (the template's name by default).
        #[arg(long)]
        name: Option<String>,
        /// What becomes of ticks missed while no orchestrator ran: skip, once, all.
        #[arg(long, default_value = "once")]
        catch_up: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The schedules, with their next and last ticks.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Fire nothing until resumed.
    Pause {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Fire again, from the next tick after now.
    Resume {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a schedule; the tasks it created stay.
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Deliver nothing new from a queue, in every process, until it is resumed (the
    /// steps in flight finish); it stays paused across restarts.
    Pause {
        queue: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deliver from a paused queue again.
    Resume {
        queue: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The queues, with the messages each holds and whether it is paused.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// The embedded database, for commands that only run embedded.
#[derive(Args)]
pub struct DbArgs {
    /// The embedded database file (`:memory:` for a throwaway one).
    #[arg(long, default_value = "tasker.db")]
    pub db: String,
}

/// Which store a command works on: `--db PATH` (embedded), or `--database-url URL`
/// (`postgres://…`, or `sqlite:PATH`); `./tasker.db` when neither is given.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The embedded database file (wins over `--database-url` and `DATABASE_URL`).
    #[arg(long)]
    pub db: Option<String>,
    /// The database URL: `postgres://…` or `sqlite:PATH`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Args)]
pub struct ContextArgs {
    /// The task context, as JSON.
    #[arg(long, conflicts_with = "context_file")]
    pub context: Option<String>,
    /// A file holding the task context as JSON.
    #[arg(long)]
    pub context_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    /// The template file.
    pub template: PathBuf,
    #[command(flatten)]
    pub context: ContextArgs,
    #[command(flatten)]
    pub db: DbArgs,
    /// Print one JSON object instead of progress and a table.
    #[arg(long)]
    pub json: bool,
    /// Steps run at the same time, at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Let `shell` steps run any program (for a template you trust: it runs commands
    /// as you).
    #[arg(long)]
    pub allow_shell: bool,
}
