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
mod preload;
mod queue;
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
use serde::Serialize;
use serde_json::value::RawValue;
use tasker_core::encode::{BufferPool, EncodeBuffer};
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::StepMessage;
use tasker_core::readiness::Progress;
use tasker_core::state::TaskState;
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;
use tokio::sync::Mutex;

use crate::operations;
use crate::primitives::{EvalStep, Move, Outcome, Primitives, Sent, StepRow, TaskMove, Transition};

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

/// Column `i` of a row parsed into its type (a state, say): anything else is corrupt.
pub(crate) fn parsed<T>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = r.get_ref(i)?.as_str()?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Column `i` of a row as stored JSON, wrapped without copying.
pub(crate) fn json(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Box<RawValue>> {
    RawValue::from_string(r.get(i)?).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// One open transaction of the embedded store.
pub(crate) struct SqliteTx<'c> {
    conn: &'c Conn,
    now: Timestamp,
    sent: Sent,
    buf: EncodeBuffer,
}

impl Primitives for SqliteTx<'_> {
    async fn template_definition(&mut self, t: &TaskTemplate) -> StoreResult<Option<String>> {
        templates::definition(self.conn, t)
    }

    async fn template_insert(&mut self, t: &TaskTemplate, definition: &str) -> StoreResult<bool> {
        templates::insert(self.conn, t, definition, self.now)
    }

    async fn tasks_lock(
        &mut self,
        tasks: &[TaskId],
    ) -> StoreResult<Vec<(TaskId, TaskState, Progress)>> {
        tasks::lock(self.conn, tasks)
    }

    async fn tasks_set_progress(&mut self, tasks: &[(TaskId, Progress)]) -> StoreResult<()> {
        tasks::set_progress(self.conn, tasks)
    }

    async fn task_failed_step(&mut self, task_id: TaskId) -> StoreResult<Option<String>> {
        steps::first_failed(self.conn, task_id)
    }

    async fn task_by_key(&mut self, key: &str) -> StoreResult<Option<TaskId>> {
        tasks::by_key(self.conn, key)
    }

    async fn task_insert(
        &mut self,
        task_id: TaskId,
        t: &TaskTemplate,
        context: &RawValue,
        key: Option<&str>,
    ) -> StoreResult<()> {
        tasks::insert(self.conn, task_id, t, context, key, self.now)
    }

    async fn tasks_move(&mut self, moves: &[TaskMove<'_>]) -> StoreResult<u64> {
        tasks::move_many(self.conn, moves, self.now)
    }

    async fn steps_of_task(&mut self, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
        steps::of_task(self.conn, task_id)
    }

    async fn steps_unblocked(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<EvalStep>> {
        steps::unblocked(self.conn, tasks)
    }

    async fn steps_release_children(
        &mut self,
        done: &[(TaskId, u32)],
    ) -> StoreResult<Vec<EvalStep>> {
        steps::release_children(self.conn, done)
    }

    async fn steps_get(
        &mut self,
        ids: &[StepId],
        _lock: bool,
    ) -> StoreResult<Vec<(StepId, StepRow)>> {
        steps::get_many(self.conn, ids)
    }

    async fn steps_execution(&mut self, ids: &[StepId]) -> StoreResult<Vec<StepExecution>> {
        steps::executions(self.conn, ids)
    }

    async fn step_move(&mut self, m: Move<'_>) -> StoreResult<u64> {
        steps::move_(self.conn, m, self.now)
    }

    async fn steps_begin_attempt(
        &mut self,
        attempts: &[(Move<'_>, u32)],
    ) -> StoreResult<Vec<StepId>> {
        steps::begin_attempts(self.conn, attempts, self.now)
    }

    async fn steps_set_outcome(
        &mut self,
        outcomes: &[(Move<'_>, Outcome<'_>)],
    ) -> StoreResult<u64> {
        steps::set_outcome(self.conn, outcomes, self.now)
    }

    async fn step_reset(&mut self, m: Move<'_>) -> StoreResult<u64> {
        steps::reset(self.conn, m, self.now)
    }

    async fn steps_enqueue(
        &mut self,
        steps: &[(TaskId, StepId)],
        reason: &str,
    ) -> StoreResult<u64> {
        steps::enqueue_many(self.conn, steps, reason, self.now)
    }

    async fn transition_append(&mut self, t: Transition<'_>) -> StoreResult<()> {
        transitions::append(self.conn, t, self.now)
    }

    async fn queue_ensure(&mut self, _queue: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn queue_send<M: Serialize + Sync>(
        &mut self,
        queue: &str,
        message: &M,
        delay: Duration,
    ) -> StoreResult<()> {
        queue::send(self.conn, queue, self.buf.encode(message), delay, self.now)?;
        self.sent.queue(queue);
        Ok(())
    }

    async fn queue_send_batch(&mut self, queue: &str, messages: &[StepMessage]) -> StoreResult<()> {
        queue::send_batch(self.conn, queue, self.buf.encode_all(messages), self.now)?;
        self.sent.queue(queue);
        Ok(())
    }

    async fn queue_read(
        &mut self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        queue::read(self.conn, queue, visibility, limit, self.now)
    }

    async fn queue_delete(&mut self, queue: &str, msg_ids: &[i64]) -> StoreResult<()> {
        queue::delete(self.conn, queue, msg_ids)
    }

    async fn queue_set_vt(&mut self, queue: &str, hidden: &[(i64, Duration)]) -> StoreResult<()> {
        queue::set_vt(self.conn, queue, hidden, self.now)
    }

    async fn queue_dead_letter(
        &mut self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> StoreResult<()> {
        queue::dead_letter(self.conn, queue, msg_id, reason, self.now)
    }
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

impl Store for SqliteStore {
    async fn template_register(&self, template: &TaskTemplate) -> StoreResult<Registration> {
        write!(self, |p| operations::template_register(p, template))
    }

    fn write_transactions(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    async fn task_create(&self, params: TaskCreateParams<'_>) -> StoreResult<TaskCreated> {
        write!(self, |p| operations::task_create(p, params))
    }

    async fn task_create_batch(
        &self,
        batch: &[TaskCreateParams<'_>],
    ) -> StoreResult<Vec<TaskCreated>> {
        write!(self, |p| operations::task_create_batch(p, batch))
    }

    async fn task_start(&self, params: TaskStartParams) -> StoreResult<TaskStarted> {
        write!(self, |p| operations::task_start(p, params))
    }

    async fn task_start_batch(
        &self,
        limit: u32,
        visibility: Duration,
    ) -> StoreResult<TasksStarted> {
        write!(self, |p| operations::task_start_batch(p, limit, visibility))
    }

    async fn task_cancel(&self, task_id: TaskId, reason: &str) -> StoreResult<TaskState> {
        write!(self, |p| operations::task_cancel(p, task_id, reason))
    }

    async fn task_retry(&self, task_id: TaskId) -> StoreResult<usize> {
        write!(self, |p| operations::task_retry(p, task_id))
    }

    async fn task_get(&self, task_id: TaskId) -> StoreResult<TaskDetail> {
        tasks::get(&*self.conn.lock().await, task_id)
    }

    async fn task_progress(&self, task_id: TaskId) -> StoreResult<TaskProgress> {
        tasks::progress(&*self.conn.lock().await, task_id)
    }

    async fn template_list(
        &self,
        params: TemplateListParams<'_>,
    ) -> StoreResult<Vec<TemplateRecord>> {
        templates::list(&*self.conn.lock().await, params)
    }

    async fn task_list(&self, params: TaskListParams<'_>) -> StoreResult<Vec<TaskRecord>> {
        tasks::list(&*self.conn.lock().await, params)
    }

    async fn task_list_unfinished(&self) -> StoreResult<Vec<TaskId>> {
        tasks::list_unfinished(&*self.conn.lock().await)
    }

    async fn step_start(&self, params: StepStartParams<'_>) -> StoreResult<StepStart> {
        write!(self, |p| operations::step_start(p, params))
    }

    async fn step_claim(&self, params: ClaimParams<'_>) -> StoreResult<Claimed> {
        write!(self, |p| operations::step_claim(p, params))
    }

    async fn step_finish(&self, params: StepFinishParams<'_>) -> StoreResult<StepFinished> {
        write!(self, |p| operations::step_finish(p, params))
    }

    async fn step_finish_batch(
        &self,
        batch: &[StepFinishParams<'_>],
        claims: &[ClaimParams<'_>],
    ) -> StoreResult<FinishedBatch> {
        write!(self, |p| operations::step_finish_batch(p, batch, claims))
    }

    async fn step_resolve(&self, step_id: StepId, results: &RawValue) -> StoreResult<StepResolved> {
        write!(self, |p| operations::step_resolve(p, step_id, results))
    }

    async fn task_prune(&self, before: Timestamp, limit: u32) -> StoreResult<Pruned> {
        let mut conn = self.conn.lock().await;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let pruned = tasks::prune(&tx, before, limit)?;
        tx.commit().map_err(db)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(pruned)
    }

    async fn transition_list(&self, task_id: TaskId) -> StoreResult<Vec<TransitionRecord>> {
        transitions::list(&*self.conn.lock().await, task_id)
    }

    async fn queue_list(&self) -> StoreResult<Vec<String>> {
        queue::list(&*self.conn.lock().await)
    }

    async fn queue_read(
        &self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let conn = self.conn.lock().await;
        queue::read(&conn, queue, visibility, limit, Timestamp::now())
    }

    async fn queue_depths(&self) -> StoreResult<Vec<QueueDepth>> {
        queue::depths(&*self.conn.lock().await)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.conn
            .lock()
            .await
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(db)
    }

    async fn queue_dead_letter(&self, queue: &str, msg_id: i64, reason: &str) -> StoreResult<()> {
        write!(self, |p| p.queue_dead_letter(queue, msg_id, reason))
    }

    async fn queue_dead_letters(&self, queue: &str) -> StoreResult<Vec<DeadLetter>> {
        queue::dead_letters(&*self.conn.lock().await, queue)
    }

    async fn queue_dead_letter_queues(&self) -> StoreResult<Vec<String>> {
        queue::dead_letter_queues(&*self.conn.lock().await)
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }
}

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
