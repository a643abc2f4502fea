//! The embedded store: SQLite through rusqlite, in WAL mode, migrations embedded.
//!
//! **One process owns a database file.** [`SqliteStore::open`] takes an exclusive lock
//! on `<file>-lock` for as long as the store lives, and a second engine on the same
//! file is refused with [`StoreError::Busy`]. Owning the file is what lets `open`
//! recover from a crash at once: any message that was being worked on when the
//! previous owner died is made visible again immediately, instead of after its
//! visibility timeout. [`SqliteStore::open_read_only`] is for inspection from another
//! process while an engine runs.
//!
//! **One connection, no thread hops.** SQLite has one writer anyway; one connection
//! serializes the evaluation of each task without `SQLITE_BUSY` retries. A transaction
//! runs all its statements on the calling thread, holding the connection's lock:
//! statements are microseconds each, and handing every one to a dedicated thread (as
//! an async driver must) cost more than the statements themselves.
//!
//! **Durability** ([`Synchronous`]) is `NORMAL` by default: in WAL mode a committed
//! transaction survives a crash of the process; a power loss or an OS crash may lose
//! the last transactions before a checkpoint, never corrupt the file. `FULL` keeps them
//! through a power loss too, at the cost of a sync per commit.

mod migrate;
#[cfg(feature = "bench")]
mod preload;
mod queue;
mod rate_limits;
mod schedules;
mod signals;
mod steps;
mod tasks;
mod templates;
mod transitions;

use std::fs::File;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{OpenFlags, TransactionBehavior};
use tasker_core::encode::{BufferPool, EncodeBuffer};
use tasker_core::store::*;
use tasker_core::time::Timestamp;
use tokio::sync::Mutex;

use crate::primitives::Sent;

pub(crate) type Conn = rusqlite::Connection;

/// How hard SQLite makes each commit durable (its `synchronous` setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Survives a crash of the process; a power loss may lose the last commits.
    #[default]
    Normal,
    /// Survives a power loss too: a sync at every commit.
    Full,
}

impl FromStr for Synchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            other => Err(format!("`{other}` is not a durability: use normal or full")),
        }
    }
}

/// The embedded [`Store`]. See the module docs for its guarantees.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Conn>,
    wakeups: Wakeups,
    /// Write transactions committed (queue reads included: they write).
    writes: AtomicU64,
    buffers: BufferPool,
    /// Held, never read: the exclusive lock on `<file>-lock`.
    _lock: Option<File>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path`, or a private in-memory one
    /// for `:memory:`, applies migrations, and takes ownership of the file. Durability
    /// is [`Synchronous::Normal`].
    pub async fn open(path: &str) -> StoreResult<Self> {
        Self::open_with(path, Synchronous::default()).await
    }

    /// [`SqliteStore::open`] with the given durability.
    pub async fn open_with(path: &str, synchronous: Synchronous) -> StoreResult<Self> {
        let (conn, lock) = if path == ":memory:" {
            (Conn::open_in_memory().map_err(db)?, None)
        } else {
            let lock = lock_file(path)?;
            check_file(path)?;
            let conn = Conn::open(path).map_err(db)?;
            check_schema(&conn, path)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db)?;
            let level = match synchronous {
                Synchronous::Normal => "NORMAL",
                Synchronous::Full => "FULL",
            };
            conn.pragma_update(None, "synchronous", level).map_err(db)?;
            (conn, Some(lock))
        };
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate::run(&conn)?;
        let reclaimed = queue::release_in_flight(&conn, Timestamp::now())?;
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                "made in-flight messages of a previous run visible again"
            );
        }
        Ok(Self::with(conn, lock))
    }

    /// Opens an existing database for reading while another process may own it.
    pub async fn open_read_only(path: &str) -> StoreResult<Self> {
        if !Path::new(path).exists() {
            return Err(StoreError::NotFound(format!("database file {path}")));
        }
        check_file(path)?;
        let conn = Conn::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        check_schema(&conn, path)?;
        Ok(Self::with(conn, None))
    }

    /// Runs SQLite's `quick_check` (reads the whole file once): a damaged file is
    /// reported as [`StoreError::Corrupt`] before any work trips over it.
    pub async fn check_integrity(&self) -> StoreResult<()> {
        let conn = self.conn.lock().await;
        let verdict: rusqlite::Result<String> =
            conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0));
        match verdict {
            Ok(ok) if ok == "ok" => Ok(()),
            Ok(problem) => Err(corrupt(&problem)),
            Err(e) => Err(corrupt(&e.to_string())),
        }
    }

    fn with(conn: Conn, lock: Option<File>) -> Self {
        Self {
            conn: Mutex::new(conn),
            wakeups: Wakeups::default(),
            writes: AtomicU64::new(0),
            buffers: BufferPool::default(),
            _lock: lock,
        }
    }
}

fn corrupt(problem: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "the database file fails SQLite's integrity check ({problem}); restore it from a backup"
    ))
}

/// Refuses a path that exists but holds no SQLite database (an empty file is one SQLite
/// would quietly turn into a new database): only a path that does not exist is created.
fn check_file(path: &str) -> StoreResult<()> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Database(
                format!("cannot read {path}: {e}").into(),
            ));
        }
        Ok(meta) => meta,
    };
    let refuse = |why: &str| {
        Err(StoreError::Corrupt(format!(
            "{path} {why}, not a Tasker database; give another path, or remove it to start anew"
        )))
    };
    if !meta.is_file() {
        return refuse("is not a regular file");
    }
    if meta.len() == 0 {
        return refuse("is empty");
    }
    let mut header = [0u8; 16];
    let read = File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .is_ok();
    if !read || &header != b"SQLite format 3\0" {
        return refuse("is not an SQLite database");
    }
    Ok(())
}

/// Refuses an SQLite database of something else: tables, but none of Tasker's.
fn check_schema(conn: &Conn, path: &str) -> StoreResult<()> {
    let (tables, ours): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE name = '_sqlx_migrations')
             FROM sqlite_master WHERE type = 'table'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| corrupt(&e.to_string()))?;
    if tables > 0 && ours == 0 {
        return Err(StoreError::Corrupt(format!(
            "{path} is an SQLite database of something else (no Tasker tables); give another path"
        )));
    }
    Ok(())
}

fn lock_file(path: &str) -> StoreResult<File> {
    let lock_path = format!("{path}-lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Database(format!("cannot open {lock_path}: {e}").into()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy(format!(
            "the database {path} is in use by another Tasker process"
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Database(
            format!("cannot lock {lock_path}: {e}").into(),
        )),
    }
}

/// Maps SQLite errors to the store's (see style.md: the engine never sees driver errors).
pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound("row".into()),
        rusqlite::Error::FromSqlConversionFailure(..) => {
            StoreError::Corrupt(format!("stored data: {e}"))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
            StoreError::Busy(e.to_string())
        }
        other => StoreError::Database(Box::new(other)),
    }
}

impl crate::rows::Columns for rusqlite::Row<'_> {
    fn str(&self, i: usize) -> StoreResult<&str> {
        self.get_ref(i)
            .map_err(db)?
            .as_str()
            .map_err(|e| corrupt_value(i, e))
    }

    fn opt_str(&self, i: usize) -> StoreResult<Option<&str>> {
        self.get_ref(i)
            .map_err(db)?
            .as_str_or_null()
            .map_err(|e| corrupt_value(i, e))
    }

    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        self.get(i)
            .map_err(|e| StoreError::Corrupt(format!("stored data, column {i}: {e}")))
    }

    fn opt_uuid(&self, i: usize) -> StoreResult<Option<uuid::Uuid>> {
        self.get(i)
            .map_err(|e| StoreError::Corrupt(format!("stored data, column {i}: {e}")))
    }
}

fn corrupt_value(i: usize, e: rusqlite::types::FromSqlError) -> StoreError {
    StoreError::Corrupt(format!("stored data, column {i}: {e}"))
}

/// Every row `s` returns for `params`, decoded by `decode`.
pub(crate) fn decode_all<T>(
    s: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut rows = s.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        out.push(decode(r)?);
    }
    Ok(out)
}

/// One open transaction of the embedded store.
pub(crate) struct SqliteTx<'c> {
    conn: &'c Conn,
    now: Timestamp,
    sent: Sent,
    buf: EncodeBuffer,
}

/// Runs one operation in a write transaction, then wakes the readers of the queues it
/// sent to. The operation's statements run on this thread (see the module docs), so its
/// future completes in one poll, holding the connection's lock.
macro_rules! write {
    ($store:expr, |$p:ident| $op:expr) => {{
        let mut conn = $store.conn.lock().await;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut tx_ops = SqliteTx {
            conn: &tx,
            now: Timestamp::now(),
            sent: Sent::default(),
            buf: $store.buffers.take(),
        };
        let result = at_once({
            let $p = &mut tx_ops;
            $op
        });
        $store.buffers.give(std::mem::take(&mut tx_ops.buf));
        let sent = std::mem::take(&mut tx_ops.sent);
        let result = result?;
        tx.commit().map_err(db)?;
        drop(conn);
        $store.writes.fetch_add(1, Ordering::Relaxed);
        sent.wake(&$store.wakeups);
        Ok(result)
    }};
}

/// Runs a future that never waits (an operation over [`SqliteTx`], whose primitives are
/// synchronous) to its end.
fn at_once<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => unreachable!("the embedded store's operations never wait"),
    }
}

/// Runs a read on the connection.
macro_rules! read {
    ($store:expr, |$c:ident| $query:expr) => {{
        let conn = $store.conn.lock().await;
        let $c = &*conn;
        $query
    }};
}

store_impl!(SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        read!(self, |c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    async fn synchronous_of(store: &SqliteStore) -> i64 {
        let conn = store.conn.lock().await;
        conn.pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn another_applications_database_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let path = path.to_str().unwrap();
        Conn::open(path)
            .unwrap()
            .execute_batch("CREATE TABLE notes (body TEXT)")
            .unwrap();
        for opened in [
            SqliteStore::open(path).await.err(),
            SqliteStore::open_read_only(path).await.err(),
        ] {
            let message = opened.expect("refused").to_string();
            assert!(
                message.contains("is an SQLite database of something else"),
                "{message}"
            );
        }
        let conn = Conn::open(path).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1, "nothing was added");
    }

    #[tokio::test]
    async fn durability_is_normal_unless_asked_for_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let path = path.to_str().unwrap();
        // SQLite's numbers: 1 is NORMAL, 2 is FULL.
        assert_eq!(
            synchronous_of(&SqliteStore::open(path).await.unwrap()).await,
            1
        );
        let full = SqliteStore::open_with(path, Synchronous::Full)
            .await
            .unwrap();
        assert_eq!(synchronous_of(&full).await, 2);
        assert!(
            "fsync"
                .parse::<Synchronous>()
                .unwrap_err()
                .contains("normal or full")
        );
    }
}
