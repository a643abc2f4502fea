//! The embedded store: SQLite through sqlx, in WAL mode, migrations embedded.
//!
//! **One process owns a database file.** [`SqliteStore::open`] takes an exclusive lock
//! on `<file>-lock` for as long as the store lives, and a second engine on the same
//! file is refused with [`StoreError::Busy`]. Owning the file is what lets `open`
//! recover from a crash at once: any message that was being worked on when the
//! previous owner died is made visible again immediately, instead of after its
//! visibility timeout. [`SqliteStore::open_read_only`] is for inspection from another
//! process while an engine runs.
//!
//! All statements go through one connection: SQLite has one writer anyway, and this
//! serializes the evaluation of each task without `SQLITE_BUSY` retries. Durability is
//! `synchronous = NORMAL`: a process crash loses nothing; a power loss may lose the
//! last transactions.

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

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{BufferPool, EncodeBuffer, StepMessage};
use tasker_core::readiness::Progress;
use tasker_core::state::TaskState;
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use crate::operations;
use crate::primitives::{EvalStep, Move, Outcome, Primitives, Sent, StepRow, Transition};

pub(crate) type Conn = sqlx::SqliteConnection;

/// The embedded [`Store`]. See the module docs for its guarantees.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    wakeups: Wakeups,
    /// Write transactions committed (queue reads included: they write).
    writes: AtomicU64,
    buffers: BufferPool,
    /// Held, never read: the exclusive lock on `<file>-lock`.
    _lock: Option<File>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path`, or a private in-memory one
    /// for `:memory:`, applies migrations, and takes ownership of the file.
    pub async fn open(path: &str) -> StoreResult<Self> {
        let (options, lock) = if path == ":memory:" {
            (
                SqliteConnectOptions::from_str("sqlite::memory:").map_err(db)?,
                None,
            )
        } else {
            let lock = lock_file(path)?;
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            (options, Some(lock))
        };
        let pool = pool(options.foreign_keys(true)).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        let store = Self {
            pool,
            wakeups: Wakeups::default(),
            writes: AtomicU64::new(0),
            buffers: BufferPool::default(),
            _lock: lock,
        };
        let reclaimed = queue::release_in_flight(&store.pool, Timestamp::now()).await?;
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                "made in-flight messages of a previous run visible again"
            );
        }
        Ok(store)
    }

    /// How many write transactions this store has committed, for measurements.
    pub fn write_transactions(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Opens an existing database for reading while another process may own it.
    pub async fn open_read_only(path: &str) -> StoreResult<Self> {
        if !Path::new(path).exists() {
            return Err(StoreError::NotFound(format!("database file {path}")));
        }
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        Ok(Self {
            pool: pool(options).await?,
            wakeups: Wakeups::default(),
            writes: AtomicU64::new(0),
            buffers: BufferPool::default(),
            _lock: None,
        })
    }
}

async fn pool(options: SqliteConnectOptions) -> StoreResult<SqlitePool> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.busy_timeout(Duration::from_secs(5)))
        .await
        .map_err(db)
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

/// Maps sqlx errors to the store's (see style.md: the engine never sees driver errors).
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.to_string()),
        other => StoreError::Database(Box::new(other)),
    }
}

/// One open transaction of the embedded store.
pub(crate) struct SqliteTx<'c> {
    conn: &'c mut Conn,
    now: Timestamp,
    sent: Sent,
    buf: EncodeBuffer,
}

impl Primitives for SqliteTx<'_> {
    async fn template_definition(&mut self, t: &TaskTemplate) -> StoreResult<Option<String>> {
        templates::definition(self.conn, t).await
    }

    async fn template_insert(&mut self, t: &TaskTemplate, definition: &str) -> StoreResult<bool> {
        templates::insert(self.conn, t, definition, self.now).await
    }

    async fn tasks_lock(
        &mut self,
        tasks: &[TaskId],
    ) -> StoreResult<Vec<(TaskId, TaskState, Progress)>> {
        tasks::lock(self.conn, tasks).await
    }

    async fn tasks_set_progress(&mut self, tasks: &[(TaskId, Progress)]) -> StoreResult<()> {
        tasks::set_progress(self.conn, tasks).await
    }

    async fn task_failed_step(&mut self, task_id: TaskId) -> StoreResult<Option<String>> {
        steps::first_failed(self.conn, task_id).await
    }

    async fn task_by_key(&mut self, key: &str) -> StoreResult<Option<TaskId>> {
        tasks::by_key(self.conn, key).await
    }

    async fn task_insert(
        &mut self,
        task_id: TaskId,
        t: &TaskTemplate,
        context: &RawValue,
        key: Option<&str>,
    ) -> StoreResult<()> {
        tasks::insert(self.conn, task_id, t, context, key, self.now).await
    }

    async fn task_move(
        &mut self,
        task_id: TaskId,
        from: TaskState,
        to: TaskState,
        reason: &str,
    ) -> StoreResult<u64> {
        tasks::move_(self.conn, task_id, from, to, reason, self.now).await
    }

    async fn steps_of_task(&mut self, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
        steps::of_task(self.conn, task_id).await
    }

    async fn steps_unblocked(&mut self, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
        steps::unblocked(self.conn, task_id).await
    }

    async fn steps_release_children(
        &mut self,
        done: &[(TaskId, u32)],
    ) -> StoreResult<Vec<EvalStep>> {
        steps::release_children(self.conn, done).await
    }

    async fn steps_get(&mut self, ids: &[StepId]) -> StoreResult<Vec<(StepId, StepRow)>> {
        steps::get_many(self.conn, ids).await
    }

    async fn step_get(&mut self, step_id: StepId, _lock: bool) -> StoreResult<Option<StepRow>> {
        steps::get(self.conn, step_id).await
    }

    async fn step_execution(&mut self, step_id: StepId) -> StoreResult<StepExecution> {
        steps::execution(self.conn, step_id).await
    }

    async fn step_move(&mut self, m: Move<'_>) -> StoreResult<u64> {
        steps::move_(self.conn, m, self.now).await
    }

    async fn step_begin_attempt(&mut self, m: Move<'_>, attempts: u32) -> StoreResult<u64> {
        steps::begin_attempt(self.conn, m, attempts, self.now).await
    }

    async fn steps_set_outcome(
        &mut self,
        outcomes: &[(Move<'_>, Outcome<'_>)],
    ) -> StoreResult<u64> {
        steps::set_outcome(self.conn, outcomes, self.now).await
    }

    async fn step_reset(&mut self, m: Move<'_>) -> StoreResult<u64> {
        steps::reset(self.conn, m, self.now).await
    }

    async fn steps_enqueue(
        &mut self,
        steps: &[(TaskId, StepId)],
        reason: &str,
    ) -> StoreResult<u64> {
        steps::enqueue_many(self.conn, steps, reason, self.now).await
    }

    async fn transition_append(&mut self, t: Transition<'_>) -> StoreResult<()> {
        transitions::append(self.conn, t, self.now).await
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
        queue::send(self.conn, queue, self.buf.encode(message), delay, self.now).await?;
        self.sent.queue(queue);
        Ok(())
    }

    async fn queue_send_batch(
        &mut self,
        queue: &str,
        messages: &[StepMessage<'_>],
    ) -> StoreResult<()> {
        queue::send_batch(self.conn, queue, self.buf.encode_all(messages), self.now).await?;
        self.sent.queue(queue);
        Ok(())
    }

    async fn queue_read(
        &mut self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        queue::read(self.conn, queue, visibility, limit, self.now).await
    }

    async fn queue_delete(&mut self, queue: &str, msg_ids: &[i64]) -> StoreResult<()> {
        queue::delete(self.conn, queue, msg_ids).await
    }

    async fn queue_set_vt(
        &mut self,
        queue: &str,
        msg_id: i64,
        hidden: Duration,
    ) -> StoreResult<()> {
        queue::set_vt(self.conn, queue, msg_id, self.now.after(hidden)).await
    }

    async fn queue_dead_letter(
        &mut self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> StoreResult<()> {
        queue::dead_letter(self.conn, queue, msg_id, reason, self.now).await
    }
}

/// Runs one operation in a write transaction, then wakes the readers of the queues it sent to.
macro_rules! write {
    ($store:expr, |$p:ident| $op:expr) => {{
        let mut tx = $store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let mut tx_ops = SqliteTx {
            conn: &mut tx,
            now: Timestamp::now(),
            sent: Sent::default(),
            buf: $store.buffers.take(),
        };
        let $p = &mut tx_ops;
        let result = $op.await;
        $store.buffers.give(std::mem::take(&mut tx_ops.buf));
        let result = result?;
        let sent = std::mem::take(&mut tx_ops.sent);
        tx.commit().await.map_err(db)?;
        $store.writes.fetch_add(1, Ordering::Relaxed);
        sent.wake(&$store.wakeups);
        Ok(result)
    }};
}

impl Store for SqliteStore {
    async fn template_register(&self, template: &TaskTemplate) -> StoreResult<Registration> {
        write!(self, |p| operations::template_register(p, template))
    }

    async fn task_create(&self, params: TaskCreateParams<'_>) -> StoreResult<TaskCreated> {
        write!(self, |p| operations::task_create(p, params))
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
        let mut conn = self.pool.acquire().await.map_err(db)?;
        tasks::get(&mut conn, task_id).await
    }

    async fn task_progress(&self, task_id: TaskId) -> StoreResult<TaskProgress> {
        tasks::progress(&self.pool, task_id).await
    }

    async fn template_list(&self) -> StoreResult<Vec<TemplateRecord>> {
        templates::list(&self.pool).await
    }

    async fn task_list(&self, params: TaskListParams<'_>) -> StoreResult<Vec<TaskRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        tasks::list(&mut conn, params).await
    }

    async fn task_list_unfinished(&self) -> StoreResult<Vec<TaskId>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        tasks::list_unfinished(&mut conn).await
    }

    async fn step_start(&self, params: StepStartParams<'_>) -> StoreResult<StepStart> {
        write!(self, |p| operations::step_start(p, params))
    }

    async fn step_claim(
        &self,
        queue: &str,
        limit: u32,
        visibility: Duration,
        grace: Duration,
    ) -> StoreResult<Claimed> {
        write!(self, |p| operations::step_claim(
            p, queue, limit, visibility, grace
        ))
    }

    async fn step_finish(&self, params: StepFinishParams<'_>) -> StoreResult<StepFinished> {
        write!(self, |p| operations::step_finish(p, params))
    }

    async fn step_finish_batch(
        &self,
        batch: &[StepFinishParams<'_>],
    ) -> StoreResult<Vec<StepFinished>> {
        write!(self, |p| operations::step_finish_batch(p, batch))
    }

    async fn step_resolve(&self, step_id: StepId, results: &RawValue) -> StoreResult<TaskState> {
        write!(self, |p| operations::step_resolve(p, step_id, results))
    }

    async fn task_prune(&self, before: Timestamp, limit: u32) -> StoreResult<Pruned> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let pruned = tasks::prune(&mut tx, before, limit).await?;
        tx.commit().await.map_err(db)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(pruned)
    }

    async fn transition_list(&self, task_id: TaskId) -> StoreResult<Vec<TransitionRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        transitions::list(&mut conn, task_id).await
    }

    async fn queue_list(&self) -> StoreResult<Vec<String>> {
        queue::list(&self.pool).await
    }

    async fn queue_read(
        &self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.pool.acquire().await.map_err(db)?;
        queue::read(&mut conn, queue, visibility, limit, Timestamp::now()).await
    }

    async fn queue_depths(&self) -> StoreResult<Vec<QueueDepth>> {
        queue::depths(&self.pool).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db)
    }

    async fn queue_dead_letter(&self, queue: &str, msg_id: i64, reason: &str) -> StoreResult<()> {
        write!(self, |p| p.queue_dead_letter(queue, msg_id, reason))
    }

    async fn queue_dead_letters(&self, queue: &str) -> StoreResult<Vec<DeadLetter>> {
        queue::dead_letters(&self.pool, queue).await
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }
}
