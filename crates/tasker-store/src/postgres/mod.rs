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

pub mod ceiling;
mod preload;
mod queue;
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

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tasker_core::encode::{BufferPool, EncodeBuffer};
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::StepMessage;
use tasker_core::readiness::Progress;
use tasker_core::state::TaskState;
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;
use tokio::task::JoinHandle;

use crate::operations;
use crate::primitives::{EvalStep, Move, Outcome, Primitives, Sent, StepRow, TaskMove, Transition};

pub(crate) type Conn = sqlx::PgConnection;

/// The channel that carries "a message was sent to queue <payload>" (see `queue::send`).
const CHANNEL: &str = "tasker_work";

/// The advisory lock key that serializes migrations across processes ("tasker").
const MIGRATION_LOCK: i64 = 0x7461_736b_6572;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The stores of [`PgStore::shared`], by URL, held weakly: the last user closes one.
static SHARED: Mutex<Vec<(String, Weak<PgStore>)>> = Mutex::new(Vec::new());

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
        let live = SHARED
            .lock()
            .expect("shared stores lock")
            .iter()
            .find(|(u, _)| u == url)
            .and_then(|(_, store)| store.upgrade());
        let connections = match live {
            Some(store) if store.connections >= connections => return Ok(store),
            Some(store) => store.connections.max(connections),
            None => connections,
        };
        let store = Arc::new(Self::connect(url, connections).await?);
        let mut shared = SHARED.lock().expect("shared stores lock");
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

impl Primitives for PgTx<'_> {
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

    async fn tasks_move(&mut self, moves: &[TaskMove<'_>]) -> StoreResult<u64> {
        tasks::move_many(self.conn, moves, self.now).await
    }

    async fn steps_of_task(&mut self, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
        steps::of_task(self.conn, task_id).await
    }

    async fn steps_unblocked(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<EvalStep>> {
        steps::unblocked(self.conn, tasks).await
    }

    async fn steps_release_children(
        &mut self,
        done: &[(TaskId, u32)],
    ) -> StoreResult<Vec<EvalStep>> {
        steps::release_children(self.conn, done).await
    }

    async fn steps_get(
        &mut self,
        ids: &[StepId],
        lock: bool,
    ) -> StoreResult<Vec<(StepId, StepRow)>> {
        steps::get_many(self.conn, ids, lock).await
    }

    async fn steps_execution(&mut self, ids: &[StepId]) -> StoreResult<Vec<StepExecution>> {
        steps::executions(self.conn, ids).await
    }

    async fn step_move(&mut self, m: Move<'_>) -> StoreResult<u64> {
        steps::move_(self.conn, m, self.now).await
    }

    async fn steps_begin_attempt(
        &mut self,
        attempts: &[(Move<'_>, u32)],
    ) -> StoreResult<Vec<StepId>> {
        steps::begin_attempts(self.conn, attempts, self.now).await
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

    async fn queue_ensure(&mut self, queue: &str) -> StoreResult<()> {
        let known = self.known.lock().expect("queue cache lock").contains(queue);
        if !known {
            queue::create(self.conn, queue).await?;
            self.created.push(queue.to_owned());
        }
        Ok(())
    }

    async fn queue_send<M: Serialize + Sync>(
        &mut self,
        queue: &str,
        message: &M,
        delay: Duration,
    ) -> StoreResult<()> {
        queue::send(
            self.conn,
            queue,
            self.buf.encode(message),
            delay,
            self.token,
        )
        .await?;
        self.sent.queue(queue);
        Ok(())
    }

    async fn queue_send_batch(&mut self, queue: &str, messages: &[StepMessage]) -> StoreResult<()> {
        queue::send_batch(self.conn, queue, self.buf.encode_all(messages), self.token).await?;
        self.sent.queue(queue);
        Ok(())
    }

    async fn queue_read(
        &mut self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        queue::read(self.conn, queue, visibility, limit).await
    }

    async fn queue_delete(&mut self, queue: &str, msg_ids: &[i64]) -> StoreResult<()> {
        queue::delete(self.conn, queue, msg_ids).await
    }

    async fn queue_set_vt(&mut self, queue: &str, hidden: &[(i64, Duration)]) -> StoreResult<()> {
        queue::set_vt(self.conn, queue, hidden).await
    }

    async fn queue_dead_letter(
        &mut self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> StoreResult<()> {
        queue::dead_letter(self.conn, queue, msg_id, reason).await
    }
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

impl Store for PgStore {
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
        let mut conn = self.pool.acquire().await.map_err(db)?;
        tasks::get(&mut conn, task_id).await
    }

    async fn task_progress(&self, task_id: TaskId) -> StoreResult<TaskProgress> {
        tasks::progress(&self.pool, task_id).await
    }

    async fn template_list(
        &self,
        params: TemplateListParams<'_>,
    ) -> StoreResult<Vec<TemplateRecord>> {
        templates::list(&self.pool, params).await
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
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        queue::read(&mut conn, queue, visibility, limit).await
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

    async fn queue_dead_letter_queues(&self) -> StoreResult<Vec<String>> {
        queue::dead_letter_queues(&self.pool).await
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }
}
