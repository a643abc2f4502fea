//! The `tasker` command as a library: the binary (`src/main.rs`) only calls [`run`].
//! The configuration is public so that its loader can be fuzzed (`fuzz/`).

mod backend;
mod cli;
mod commands;
pub mod config;
mod report;

use std::process::ExitCode;

use clap::Parser;

/// A failure of a command, printed as one line.
#[derive(Debug)]
pub enum CliError {
    /// The user's input is wrong (exit 2).
    BadInput(String),
    /// Something failed while doing the work (exit 1).
    Failed(String),
}

impl CliError {
    pub fn failed(e: impl std::fmt::Display) -> Self {
        Self::Failed(e.to_string())
    }

    pub fn bad(e: impl std::fmt::Display) -> Self {
        Self::BadInput(e.to_string())
    }
}

/// How a command ended, when it did not fail.
pub enum Outcome {
    Success,
    /// The work ran but did not succeed (a task in error): exit 1, nothing more to print.
    Unsuccessful,
    /// Interrupted by a signal: exit 130.
    Interrupted,
    /// Gave up waiting: exit 3.
    TimedOut,
}

/// Runs the command named by the process's arguments, and says how to exit.
pub fn run() -> ExitCode {
    let args = cli::Cli::parse();
    // The processes that run, submit or end work export traces, when configured: an
    // operator's cancel, signal or resolution can end a task, whose span it then sends.
    let role = match &args.command {
        cli::Command::Serve { .. } => Some("tasker-serve"),
        cli::Command::Orchestrator { .. } => Some("tasker-orchestrator"),
        cli::Command::Worker { .. } => Some("tasker-worker"),
        cli::Command::Submit { .. } => Some("tasker-submit"),
        cli::Command::Run(_) => Some("tasker-run"),
        cli::Command::Cancel { .. }
        | cli::Command::Retry { .. }
        | cli::Command::Signal { .. }
        | cli::Command::Resolve { .. } => Some("tasker-operator"),
        _ => None,
    };
    // Those read the configuration (where to export traces, and the long-running ones
    // everything else), and so do the commands that check templates against it (which
    // `shell` programs it allows); a bad one stops them here.
    let registers = matches!(
        &args.command,
        cli::Command::Template {
            command: cli::TemplateCommand::Register { .. },
        }
    );
    let config = if role.is_some() || registers {
        match config::Config::load(args.config.as_deref(), std::env::vars()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tasker: error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        config::Config::default()
    };
    let traces = match (role, &config.otel.endpoint) {
        (Some(role), Some(endpoint)) => {
            let service = config.otel.service_name.as_deref().unwrap_or(role);
            match tasker_engine::Traces::install(endpoint, service) {
                Ok(traces) => Some(traces),
                Err(e) => {
                    eprintln!("tasker: error: otel.endpoint: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let format = match args.log_format.as_deref() {
        Some("json") => config::LogFormat::Json,
        Some(_) => config::LogFormat::Pretty,
        None => config.log.format,
    };
    init_logging(format, &config.log.level, traces);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tasker: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(commands::dispatch(args.command, &config, args.config));
    // The spans of the last steps and tasks go out before the process ends.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match outcome {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Unsuccessful) => ExitCode::from(1),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Ok(Outcome::TimedOut) => ExitCode::from(3),
        Err(CliError::BadInput(message)) => {
            eprintln!("tasker: error: {message}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("tasker: error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG`, else by `level`. In JSON every line is
/// one object, with the fields of its span (a step's task id, step id, namespace,
/// handler and attempt). With traces on, spans of level info and above are exported
/// too, whatever the logs' filter.
fn init_logging(
    format: config::LogFormat,
    level: &str,
    traces: Option<&'static tasker_engine::Traces>,
) {
    use tracing_subscriber::prelude::*;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let Some(traces) = traces else {
        // One global filter: spans the logs do not show are not even created.
        let logs = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter);
        match format {
            config::LogFormat::Json => logs.json().with_current_span(true).init(),
            config::LogFormat::Pretty => logs.init(),
        }
        return;
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        config::LogFormat::Json => logs.json().with_current_span(true).boxed(),
        config::LogFormat::Pretty => logs.boxed(),
    };
    let spans = tracing_subscriber::filter::LevelFilter::INFO;
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.layer().with_filter(spans))
        .init();
}
