//! The distributed store: PostgreSQL through sqlx, with pgmq for the queues.
//!
//! Tables live in the schema `tasker`; pgmq is installed as plain SQL (no extension)
//! by [`PgStore::migrate`], which also runs Tasker's migrations, serialized across
//! processes by an advisory lock. Every change to a task takes a row lock on it
//! (`FOR UPDATE`) first, so the evaluation of a task's readiness never races with
//! another — two parents finishing at once enqueue their child exactly once.
//!
//! Wake-ups: each transaction that sends a message also runs `pg_notify` on the
//! channel `tasker_work` (delivered at commit); every store holds one listening
//! connection and wakes its process's readers. A lost listening connection is
//! re-established, and readers are woken in case a notification was missed.

#[cfg(feature = "bench")]
pub mod ceiling;
#[cfg(feature = "bench")]
mod preload;
mod queue;
mod rate_limits;
mod schedules;
mod signals;
mod steps;
mod tasks;
mod templates;
#[cfg(feature = "testing")]
pub mod testing;
mod transitions;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Column, Row, TypeInfo};
use tasker_core::encode::{BufferPool, EncodeBuffer};
use tasker_core::store::*;
use tasker_core::time::Timestamp;
use tokio::task::JoinHandle;

use crate::primitives::Sent;

pub(crate) type Conn = sqlx::PgConnection;

/// The channel that carries "a message was sent to queue <payload>" (see `queue::send`).
const CHANNEL: &str = "tasker_work";

/// The advisory lock key that serializes migrations across processes ("tasker").
const MIGRATION_LOCK: i64 = 0x7461_736b_6572;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The stores of [`PgStore::shared`], by URL, held weakly: the last user closes one.
/// Held across a connection, so that two callers at once share one store.
static SHARED: tokio::sync::Mutex<Vec<(String, Weak<PgStore>)>> =
    tokio::sync::Mutex::const_new(Vec::new());

/// The distributed [`Store`]. See the module docs.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The pool's size, as asked for.
    connections: u32,
    wakeups: Arc<Wakeups>,
    listener: JoinHandle<()>,
    /// Marks this store's own notifications, which its listener skips: the readers of
    /// this process were woken when the transaction committed.
    token: String,
    /// Queues known to exist, so sending does not create them again.
    queues: Mutex<HashSet<String>>,
    /// Write transactions committed (queue reads included: they write).
    writes: AtomicU64,
    buffers: BufferPool,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects with a pool of at most `max_connections` (at least 2), plus one
    /// connection that listens for wake-ups. Does not migrate: see [`PgStore::migrate`].
    pub async fn connect(url: &str, connections: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::Database(format!("bad database URL: {e}").into()))?
            // Each statement is planned for the tables as they are now. PostgreSQL
            // otherwise keeps a generic plan made while a table was small (a scan of
            // every row) until the table is analyzed: with autovacuum off, or before
            // its first pass, a soak fell to 33-85 steps/s at 40,000 steps.
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(2) + 1)
            // A broken connection fails its statement, which the engine retries; a
            // ping before every use would add a round trip to each transaction.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db)?;
        let wakeups = Arc::new(Wakeups::default());
        let token = uuid::Uuid::now_v7().simple().to_string();
        let listener = listen(&pool, wakeups.clone(), token.clone()).await?;
        Ok(Self {
            pool,
            connections,
            wakeups,
            listener,
            token,
            queues: Mutex::new(HashSet::new()),
            writes: AtomicU64::new(0),
            buffers: BufferPool::default(),
        })
    }

    /// This process's store for `url`: every client and worker of a process that asks
    /// for one (the Ruby binding's do) shares one pool and one listening connection.
    /// The first to ask connects it; one that needs more than `connections` of a live
    /// store connects a store as large as both, which those after it share.
    pub async fn shared(url: &str, connections: u32) -> StoreResult<Arc<Self>> {
        let mut shared = SHARED.lock().await;
        let live = shared
            .iter()
            .find(|(u, _)| u == url)
            .and_then(|(_, store)| store.upgrade());
        let connections = match live {
            Some(store) if store.connections >= connections => return Ok(store),
            Some(store) => store.connections.max(connections),
            None => connections,
        };
        let store = Arc::new(Self::connect(url, connections).await?);
        shared.retain(|(u, s)| u != url && s.strong_count() > 0);
        shared.push((url.to_owned(), Arc::downgrade(&store)));
        Ok(store)
    }

    /// Installs pgmq (as plain SQL) and applies Tasker's migrations; safe to run from
    /// many processes at once.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut lock = self.pool.acquire().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *lock)
            .await
            .map_err(db)?;
        let result = async {
            pgmq::install::install_sql_from_embedded(&self.pool)
                .await
                .map_err(|e| StoreError::Database(format!("installing pgmq: {e}").into()))?;
            MIGRATOR
                .run(&self.pool)
                .await
                .map_err(|e| StoreError::Database(Box::new(e)))
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *lock)
            .await
            .map_err(db)?;
        result
    }

    /// Checks, reading only, that the database holds the schema this build uses: every
    /// command but `tasker migrate` runs this instead of migrating, so it needs no right
    /// to change the schema and never takes the migration lock.
    pub async fn check_schema(&self) -> StoreResult<()> {
        let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> = match sqlx::query_scalar(
            "SELECT max(version) FROM _sqlx_migrations WHERE success
             AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq')",
        )
        .fetch_one(&self.pool)
        .await
        {
            Ok(found) => found,
            // 42P01: no migrations table, a database Tasker never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
            Err(e) => return Err(db(e)),
        };
        match found {
            Some(v) if v == expected => Ok(()),
            Some(v) if v > expected => Err(StoreError::Schema(format!(
                "the database schema is at version {v}, newer than this tasker ({expected}): upgrade tasker"
            ))),
            found => Err(StoreError::Schema(format!(
                "the database schema is at version {}, this tasker needs {expected}: run `tasker migrate`",
                found.map_or("none".to_owned(), |v| v.to_string())
            ))),
        }
    }

    /// The process's pool, for measurements against the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Listens on the channel; a notification's payload is `<queue> <token of the sender>`.
async fn listen(pool: &PgPool, wakeups: Arc<Wakeups>, own: String) -> StoreResult<JoinHandle<()>> {
    let mut listener = PgListener::connect_with(pool).await.map_err(db)?;
    listener.listen(CHANNEL).await.map_err(db)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let (queue, sender) = n.payload().split_once(' ').unwrap_or((n.payload(), ""));
                    if sender != own {
                        wakeups.queue_sent(queue);
                    }
                }
                Ok(None) => {
                    // Reconnected: whatever was sent meanwhile went unheard.
                    wakeups.steps.notify_waiters();
                    wakeups.tasks.notify_waiters();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wake-up listener lost its connection; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

/// Maps sqlx errors to the store's.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.to_string()),
        sqlx::Error::Database(d) if d.code().as_deref().is_some_and(try_again) => {
            StoreError::Unavailable(d.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        other => StoreError::Database(Box::new(other)),
    }
}

/// A value of the wrong type for its column.
fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(format!("stored data: {e}"))
}

impl crate::rows::Columns for sqlx::postgres::PgRow {
    fn str(&self, i: usize) -> StoreResult<&str> {
        self.try_get(i).map_err(corrupt)
    }

    fn opt_str(&self, i: usize) -> StoreResult<Option<&str>> {
        self.try_get(i).map_err(corrupt)
    }

    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        // Dialect: PostgreSQL types integers by width (SQLite has one integer type).
        let width = self.columns().get(i).map(|c| c.type_info().name());
        match width {
            Some("INT8") => self.try_get(i).map_err(corrupt),
            Some("INT2") => Ok(self
                .try_get::<Option<i16>, _>(i)
                .map_err(corrupt)?
                .map(i64::from)),
            _ => Ok(self
                .try_get::<Option<i32>, _>(i)
                .map_err(corrupt)?
                .map(i64::from)),
        }
    }

    fn opt_uuid(&self, i: usize) -> StoreResult<Option<uuid::Uuid>> {
        self.try_get(i).map_err(corrupt)
    }
}

/// SQLSTATEs after which the transaction applied nothing and running it again may
/// succeed: a connection the server ended or refused (class 08, 57P01–57P03 terminated
/// by an administrator, a shutdown or a starting server, 53300 too many connections),
/// and a deadlock or serialization failure that aborted it (40P01, 40001; rare, since
/// transactions lock tasks, then steps, each in id order).
fn try_again(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40P01" | "40001"
        )
}

/// One open transaction of the distributed store.
pub(crate) struct PgTx<'c> {
    conn: &'c mut Conn,
    now: Timestamp,
    sent: Sent,
    known: &'c Mutex<HashSet<String>>,
    created: Vec<String>,
    token: &'c str,
    buf: EncodeBuffer,
}

/// The pauses before running an operation again whose connection was lost before it
/// committed (see `write!`).
const RECONNECT_PAUSES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(1),
];

/// Runs one operation in a transaction, then records the queues it created and wakes
/// this process's readers of the queues it sent to. When the connection is lost before
/// the commit (the server ended it, or it broke), nothing was applied: the operation
/// runs again on a fresh connection, a few times. A commit that fails is not retried:
/// it may have been applied.
macro_rules! write {
    ($store:expr, |$p:ident| $op:expr) => {{
        let mut pauses = RECONNECT_PAUSES.iter();
        let (tx, result, sent, created) = loop {
            let attempt = async {
                let mut tx = $store.pool.begin().await.map_err(db)?;
                let mut tx_ops = PgTx {
                    conn: &mut tx,
                    now: Timestamp::now(),
                    sent: Sent::default(),
                    known: &$store.queues,
                    created: Vec::new(),
                    token: &$store.token,
                    buf: $store.buffers.take(),
                };
                let $p = &mut tx_ops;
                let result = $op.await;
                $store.buffers.give(std::mem::take(&mut tx_ops.buf));
                let result = result?;
                let (sent, created) = (tx_ops.sent, std::mem::take(&mut tx_ops.created));
                Ok((tx, result, sent, created))
            };
            match attempt.await {
                Ok(done) => break done,
                Err(StoreError::Unavailable(why)) => match pauses.next() {
                    Some(pause) => {
                        tracing::warn!(error = %why, "the database connection was lost; running the operation again");
                        tokio::time::sleep(*pause).await;
                    }
                    None => return Err(StoreError::Unavailable(why)),
                },
                Err(e) => return Err(e),
            }
        };
        tx.commit().await.map_err(db)?;
        $store.writes.fetch_add(1, Ordering::Relaxed);
        if !created.is_empty() {
            $store
                .queues
                .lock()
                .expect("queue cache lock")
                .extend(created);
        }
        sent.wake(&$store.wakeups);
        Ok(result)
    }};
}

/// Runs a read on one connection of the pool.
macro_rules! read {
    ($store:expr, |$c:ident| $query:expr) => {{
        let mut conn = $store.pool.acquire().await.map_err(db)?;
        let $c = &mut *conn;
        $query.await
    }};
}

store_impl!(PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db)
    }
});
