//! Which store a command works on, picked once from `--db`, `--database-url` or the
//! configuration's `database.url`, and how it is opened. Every command that touches a
//! store goes through here: [`with_store!`] runs generic code over whichever it is.

use tasker_core::store::StoreError;
use tasker_store::postgres::PgStore;
use tasker_store::sqlite::{SqliteStore, Synchronous};

use crate::CliError;
use crate::cli::StoreArgs;

/// The store a command works on.
pub enum Backend {
    Sqlite(String),
    Postgres(String),
}

/// How a command opens the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: an embedded file is opened read-only (an engine may own it) and
    /// checked for damage first.
    Read,
    /// Changes it: an embedded file is owned by this process while it runs.
    Write,
}

impl Backend {
    /// From the arguments, else `configured` (the configuration's `database.url`).
    pub fn resolve(args: &StoreArgs, configured: Option<&str>) -> Result<Self, CliError> {
        match (&args.db, &args.database_url, configured) {
            (None, None, Some(url)) => Self::from_url(url),
            _ => Self::from_args(args),
        }
    }

    /// From the arguments alone; `tasker.db` when they name nothing.
    pub fn from_args(args: &StoreArgs) -> Result<Self, CliError> {
        if let Some(db) = &args.db {
            return Ok(Self::Sqlite(db.clone()));
        }
        match args.database_url.as_deref() {
            None => Ok(Self::Sqlite("tasker.db".into())),
            Some(url) => Self::from_url(url),
        }
    }

    fn from_url(url: &str) -> Result<Self, CliError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(path) => Ok(Self::Sqlite(path.to_owned())),
            None => Err(CliError::BadInput(format!(
                "unsupported database URL `{url}`: use postgres://… or sqlite:PATH"
            ))),
        }
    }

    /// The PostgreSQL URL, for the commands of a distributed deployment only.
    pub fn postgres_url(self, command: &str) -> Result<String, CliError> {
        match self {
            Self::Postgres(url) => Ok(url),
            Self::Sqlite(_) => Err(CliError::BadInput(format!(
                "`tasker {command}` needs a PostgreSQL database (--database-url or DATABASE_URL); \
                 on the embedded store, `tasker run` does everything in one process"
            ))),
        }
    }

    /// What to call the store in messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite {path}"),
            Self::Postgres(url) => redact(url),
        }
    }
}

/// The durability of the embedded store, read by every command that opens one for
/// writing (`run`, `resume`, `serve --db`, …), not a key of the configuration file.
pub const SQLITE_SYNCHRONOUS_ENV: &str = "TASKER_SQLITE_SYNCHRONOUS";

/// Opens the store of `$how` — `(backend, access, connections)`, the last the pool
/// size on PostgreSQL — as `$store`, and evaluates `$body` with it: the one place a
/// generic command meets a concrete store.
macro_rules! with_store {
    ($how:expr, |$store:ident| $body:expr) => {{
        let (backend, access, connections): (
            $crate::backend::Backend,
            $crate::backend::Access,
            u32,
        ) = $how;
        match backend {
            $crate::backend::Backend::Sqlite(path) => {
                let $store = $crate::backend::open_sqlite(&path, access).await?;
                $body.await
            }
            $crate::backend::Backend::Postgres(url) => {
                let $store = $crate::backend::connect_postgres(&url, connections).await?;
                $body.await
            }
        }
    }};
}
pub(crate) use with_store;

/// Opens an embedded database. Written to, it is owned by this process, with the
/// durability that `TASKER_SQLITE_SYNCHRONOUS` asks for (`normal`, the default, or
/// `full`).
pub async fn open_sqlite(path: &str, access: Access) -> Result<SqliteStore, CliError> {
    if access == Access::Read {
        let store = SqliteStore::open_read_only(path)
            .await
            .map_err(open_error)?;
        store.check_integrity().await.map_err(CliError::failed)?;
        return Ok(store);
    }
    let var = SQLITE_SYNCHRONOUS_ENV;
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
fn open_error(e: StoreError) -> CliError {
    match e {
        StoreError::NotFound(_) | StoreError::Busy(_) => CliError::bad(e),
        other => CliError::failed(other),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_backend_from_the_arguments() {
        let args = |db: Option<&str>, url: Option<&str>| StoreArgs {
            db: db.map(Into::into),
            database_url: url.map(Into::into),
        };
        let pick = |a, configured| match Backend::resolve(&a, configured) {
            Ok(b) => b.describe(),
            Err(CliError::BadInput(m)) => m,
            Err(CliError::Failed(m)) => m,
        };
        assert_eq!(pick(args(None, None), None), "sqlite tasker.db");
        assert_eq!(
            pick(args(Some("x.db"), Some("postgres://h/db")), None),
            "sqlite x.db"
        );
        assert_eq!(
            pick(args(None, Some("postgres://u:pw@h/db")), None),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            pick(args(None, Some("sqlite:/tmp/a.db")), None),
            "sqlite /tmp/a.db"
        );
        assert!(pick(args(None, Some("mysql://h")), None).contains("unsupported database URL"));
        assert_eq!(
            pick(args(None, None), Some("postgres://h/cfg")),
            "postgres://h/cfg",
            "the configuration's URL when the arguments name none"
        );
        assert_eq!(
            pick(args(Some("y.db"), None), Some("postgres://h/cfg")),
            "sqlite y.db",
            "the arguments win"
        );
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
