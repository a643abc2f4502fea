//! One module per group of commands. A command that works on either store picks the
//! backend once, from its arguments ([`Backend`]), and runs generic code over it.

mod bench;
mod distributed;
mod operate;
mod run;
mod serve;
mod status;
mod validate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use tasker_core::store::StoreError;
use tasker_core::template::TaskTemplate;
use tasker_store::postgres::PgStore;
use tasker_store::sqlite::{SqliteStore, Synchronous};

use crate::cli::{Command, ConfigCommand, ContextArgs, StoreArgs, TemplateCommand};
use crate::config::Config;
use crate::{CliError, Outcome};

/// The store a command works on.
pub enum Backend {
    Sqlite(String),
    Postgres(String),
}

impl Backend {
    /// From the arguments, else the configuration's `database.url`.
    pub fn resolve(args: &StoreArgs, config: &Config) -> Result<Self, CliError> {
        match (&args.db, &args.database_url, &config.database.url) {
            (None, None, Some(url)) => Self::from_args(&StoreArgs {
                db: None,
                database_url: Some(url.clone()),
            }),
            _ => Self::from_args(args),
        }
    }

    pub fn from_args(args: &StoreArgs) -> Result<Self, CliError> {
        if let Some(db) = &args.db {
            return Ok(Self::Sqlite(db.clone()));
        }
        match args.database_url.as_deref() {
            None => Ok(Self::Sqlite("tasker.db".into())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_owned()))
            }
            Some(url) => match url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                Some(path) => Ok(Self::Sqlite(path.to_owned())),
                None => Err(CliError::BadInput(format!(
                    "unsupported database URL `{url}`: use postgres://… or sqlite:PATH"
                ))),
            },
        }
    }
}

/// Connects to PostgreSQL and brings its schema up to date.
/// Connects and checks the schema without changing it: only `tasker migrate` (and the
/// benchmark, on its scratch database) changes it, see [`migrate_postgres`].
pub async fn connect_postgres(url: &str, connections: u32) -> Result<PgStore, CliError> {
    let store = PgStore::connect(url, connections)
        .await
        .map_err(|e| CliError::Failed(format!("cannot connect to {}: {e}", redact(url))))?;
    store.check_schema().await.map_err(|e| match e {
        StoreError::Schema(_) => CliError::bad(e),
        other => CliError::failed(other),
    })?;
    Ok(store)
}

/// Connects, installs pgmq and applies the migrations.
pub async fn migrate_postgres(url: &str, connections: u32) -> Result<PgStore, CliError> {
    let store = PgStore::connect(url, connections)
        .await
        .map_err(|e| CliError::Failed(format!("cannot connect to {}: {e}", redact(url))))?;
    store.migrate().await.map_err(CliError::failed)?;
    Ok(store)
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Opens the store named by `$args` as `$store` and evaluates `$body` with it: the one
/// place a generic command meets a backend. `$write` opens an embedded file for writing
/// (taking ownership of it); otherwise it is opened read-only.
macro_rules! with_store {
    ($args:expr, $write:expr, |$store:ident| $body:expr) => {
        match Backend::from_args($args)? {
            Backend::Sqlite(path) => {
                let $store = if $write {
                    open_sqlite(&path).await?
                } else {
                    let store = SqliteStore::open_read_only(&path)
                        .await
                        .map_err(open_error)?;
                    store.check_integrity().await.map_err(CliError::failed)?;
                    store
                };
                $body.await
            }
            Backend::Postgres(url) => {
                let $store = connect_postgres(&url, 4).await?;
                $body.await
            }
        }
    };
}

/// Opens an embedded database for an engine, with the durability that
/// `TASKER_SQLITE_SYNCHRONOUS` asks for (`normal`, the default, or `full`).
pub async fn open_sqlite(path: &str) -> Result<SqliteStore, CliError> {
    let var = crate::config::SQLITE_SYNCHRONOUS_ENV;
    let synchronous = match std::env::var(var) {
        Ok(value) => value
            .parse()
            .map_err(|e| CliError::BadInput(format!("{var}: {e}")))?,
        Err(_) => Synchronous::default(),
    };
    SqliteStore::open_with(path, synchronous)
        .await
        .map_err(open_error)
}

/// An embedded database that cannot be opened: missing or busy is the user's to fix.
pub fn open_error(e: StoreError) -> CliError {
    match e {
        StoreError::NotFound(_) | StoreError::Busy(_) => CliError::bad(e),
        other => CliError::failed(other),
    }
}

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
            with_store!(&store, false, |s| status::status(
                &s,
                task_id.as_deref(),
                json
            ))
        }
        Command::Submit {
            template,
            context,
            idempotency_key,
            store,
        } => {
            let template = load_one(&template)?;
            let context = read_context(&context)?;
            let key = idempotency_key.as_deref();
            let handlers = config.handlers();
            with_store!(&store, true, |s| operate::submit(
                s, &template, &context, key, &handlers
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
            with_store!(&store, false, |s| operate::wait(&s, &task_id, timeout))
        }
        Command::History {
            task_id,
            store,
            json,
        } => with_store!(&store, false, |s| operate::history(s, &task_id, json)),
        Command::DeadLetters { queue, store, json } => {
            with_store!(&store, false, |s| operate::dead_letters(
                s,
                queue.as_deref(),
                json
            ))
        }
        Command::Cancel { task_id, store } => {
            with_store!(&store, true, |s| operate::cancel(s, &task_id))
        }
        Command::Retry { task_id, store } => {
            with_store!(&store, true, |s| operate::retry(s, &task_id))
        }
        Command::Resolve {
            step_id,
            results,
            store,
        } => with_store!(&store, true, |s| operate::resolve(s, &step_id, &results)),
        Command::Prune {
            finished_before,
            batch,
            store,
        } => with_store!(&store, true, |s| operate::prune(
            &s,
            &finished_before,
            batch
        )),
        Command::Template {
            command: TemplateCommand::Register { paths, store },
        } => {
            let handlers = config.handlers();
            with_store!(&store, true, |s| operate::register(&s, &paths, &handlers))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_backend_from_the_arguments() {
        let args = |db: Option<&str>, url: Option<&str>| StoreArgs {
            db: db.map(Into::into),
            database_url: url.map(Into::into),
        };
        let pick = |a| match Backend::from_args(&a) {
            Ok(Backend::Sqlite(p)) => format!("sqlite {p}"),
            Ok(Backend::Postgres(u)) => format!("postgres {u}"),
            Err(CliError::BadInput(m)) => m,
            Err(CliError::Failed(m)) => m,
        };
        assert_eq!(pick(args(None, None)), "sqlite tasker.db");
        assert_eq!(
            pick(args(Some("x.db"), Some("postgres://h/db"))),
            "sqlite x.db"
        );
        assert_eq!(
            pick(args(None, Some("postgres://h/db"))),
            "postgres postgres://h/db"
        );
        assert_eq!(
            pick(args(None, Some("sqlite:/tmp/a.db"))),
            "sqlite /tmp/a.db"
        );
        assert!(pick(args(None, Some("mysql://h"))).contains("unsupported database URL"));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
