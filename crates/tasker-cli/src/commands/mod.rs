//! One module per group of commands. A command that works on either store runs generic
//! code over the one its arguments name (see [`crate::backend`]).

mod bench;
mod distributed;
mod operate;
mod run;
mod serve;
mod status;
mod validate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use tasker_core::template::TaskTemplate;

use crate::backend::{Access, Backend, with_store};
use crate::cli::{
    Command, ConfigCommand, ContextArgs, QueueCommand, ScheduleCommand, TemplateCommand,
};
use crate::config::Config;
use crate::{CliError, Outcome};

/// A pool large enough for one command's queries.
const COMMAND_CONNECTIONS: u32 = 4;

/// Runs `command`; `config` is the loaded configuration (defaults for the commands
/// that read none), `config_file` where it came from.
pub async fn dispatch(
    command: Command,
    config: &Config,
    config_file: Option<PathBuf>,
) -> Result<Outcome, CliError> {
    match command {
        Command::Validate { paths } => validate::validate(&paths),
        Command::Run(args) => run::run(args).await,
        Command::Resume {
            db,
            concurrency,
            allow_shell,
        } => run::resume(&db.db, concurrency, allow_shell).await,
        Command::Status {
            task_id,
            store,
            json,
        } => {
            with_store!(read(&store)?, |s| status::status(
                s,
                task_id.as_deref(),
                json
            ))
        }
        Command::Submit {
            template,
            context,
            idempotency_key,
            priority,
            store,
        } => {
            let template = load_one(&template)?;
            let context = read_context(&context)?;
            let key = idempotency_key.as_deref();
            let handlers = config.handlers();
            with_store!(write(&store)?, |s| operate::submit(
                s, &template, &context, key, priority, &handlers
            ))
        }
        Command::Wait {
            task_id,
            timeout,
            store,
        } => {
            let timeout = timeout
                .map(|t| tasker_core::duration::parse_duration(&t).map_err(CliError::bad))
                .transpose()?;
            with_store!(read(&store)?, |s| operate::wait(s, &task_id, timeout))
        }
        Command::History {
            task_id,
            store,
            json,
        } => with_store!(read(&store)?, |s| operate::history(s, &task_id, json)),
        Command::DeadLetters { queue, store, json } => {
            with_store!(read(&store)?, |s| operate::dead_letters(
                s,
                queue.as_deref(),
                json
            ))
        }
        Command::Cancel { task_id, store } => {
            with_store!(write(&store)?, |s| operate::cancel(s, &task_id))
        }
        Command::Retry { task_id, store } => {
            with_store!(write(&store)?, |s| operate::retry(s, &task_id))
        }
        Command::Signal {
            task_id,
            name,
            payload,
            store,
        } => with_store!(write(&store)?, |s| operate::signal(
            s, &task_id, &name, &payload
        )),
        Command::Resolve {
            step_id,
            results,
            store,
        } => with_store!(write(&store)?, |s| operate::resolve(s, &step_id, &results)),
        Command::Prune {
            finished_before,
            batch,
            store,
        } => with_store!(write(&store)?, |s| operate::prune(
            s,
            &finished_before,
            batch
        )),
        Command::Schedule { command } => match command {
            ScheduleCommand::Create {
                template,
                cron,
                timezone,
                context,
                name,
                catch_up,
                store,
            } => {
                let template = load_one(&template)?;
                let context = read_context(&context)?;
                let catch_up = catch_up.parse().map_err(CliError::BadInput)?;
                let name = name.unwrap_or_else(|| template.name.clone());
                let handlers = config.handlers();
                let schedule = operate::ScheduleArgs {
                    name: &name,
                    template: &template,
                    cron: &cron,
                    timezone: &timezone,
                    context: &context,
                    catch_up,
                };
                with_store!(write(&store)?, |s| operate::schedule_create(
                    s, schedule, &handlers
                ))
            }
            ScheduleCommand::List { json, store } => {
                with_store!(read(&store)?, |s| operate::schedules(s, json))
            }
            ScheduleCommand::Pause { name, store } => {
                with_store!(write(&store)?, |s| operate::pause_schedule(s, &name, true))
            }
            ScheduleCommand::Resume { name, store } => {
                with_store!(write(&store)?, |s| operate::pause_schedule(s, &name, false))
            }
            ScheduleCommand::Delete { name, store } => {
                with_store!(write(&store)?, |s| operate::delete_schedule(s, &name))
            }
        },
        Command::Queue { command } => match command {
            QueueCommand::Pause { queue, store } => {
                with_store!(write(&store)?, |s| operate::pause(s, &queue, true))
            }
            QueueCommand::Resume { queue, store } => {
                with_store!(write(&store)?, |s| operate::pause(s, &queue, false))
            }
            QueueCommand::List { json, store } => {
                with_store!(read(&store)?, |s| operate::queues(s, json))
            }
        },
        Command::Template { command } => match command {
            TemplateCommand::Register { paths, store } => {
                let handlers = config.handlers();
                with_store!(write(&store)?, |s| operate::register(s, &paths, &handlers))
            }
            TemplateCommand::Pause { template, store } => {
                with_store!(write(&store)?, |s| operate::pause_template(
                    s, &template, true
                ))
            }
            TemplateCommand::Resume { template, store } => {
                with_store!(write(&store)?, |s| operate::pause_template(
                    s, &template, false
                ))
            }
        },
        Command::Migrate { store } => distributed::migrate(&store).await,
        Command::Bench(args) => bench::bench(args).await,
        Command::Orchestrator { store, metrics } => {
            distributed::orchestrator(&store, &metrics, config).await
        }
        Command::Worker {
            queues,
            concurrency,
            grace,
            store,
            metrics,
        } => {
            let grace = grace
                .map(|g| tasker_core::duration::parse_duration(&g).map_err(CliError::bad))
                .transpose()?;
            let args = distributed::WorkerArgs {
                store: &store,
                queues,
                concurrency,
                grace,
                metrics: &metrics,
            };
            distributed::worker(args, config).await
        }
        Command::Serve {
            store,
            listen,
            insecure_no_auth,
        } => serve::serve(&store, listen, insecure_no_auth, config).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let file = file.or(config_file);
            let checked = Config::load(file.as_deref(), std::env::vars()).map_err(CliError::bad)?;
            match &file {
                Some(f) => eprintln!("{} is valid; effective configuration:", f.display()),
                None => eprintln!("no configuration file; effective configuration:"),
            }
            print!("{}", checked.to_redacted_toml());
            Ok(Outcome::Success)
        }
    }
}

/// Where a command that reads goes, and how.
fn read(args: &crate::cli::StoreArgs) -> Result<(Backend, Access, u32), CliError> {
    Ok((Backend::from_args(args)?, Access::Read, COMMAND_CONNECTIONS))
}

/// Where a command that changes the store goes, and how.
fn write(args: &crate::cli::StoreArgs) -> Result<(Backend, Access, u32), CliError> {
    Ok((
        Backend::from_args(args)?,
        Access::Write,
        COMMAND_CONNECTIONS,
    ))
}

/// Loads exactly one template from a file.
pub fn load_one(path: &Path) -> Result<TaskTemplate, CliError> {
    tasker_core::template::load_one(path).map_err(CliError::bad)
}

/// The context from `--context` or `--context-file`; `{}` when neither is given.
pub fn read_context(args: &ContextArgs) -> Result<String, CliError> {
    match (&args.context, &args.context_file) {
        (Some(c), _) => Ok(c.clone()),
        (None, Some(path)) => {
            tasker_core::file::read_text(path, tasker_core::file::MAX_CONTEXT_BYTES)
                .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))
        }
        (None, None) => Ok("{}".to_owned()),
    }
}

/// Resolves when the process is asked to stop (ctrl-C or SIGTERM). The handlers are
/// installed when this is called, not when it is first awaited: a process asked to stop
/// while it starts up (connecting, say) stops cleanly once it is up, instead of being
/// ended by the signal.
pub fn stop_requested() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (int, term) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
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
