//! The `tasker.tasks` table, and the steps and edges a task is created with.

use tasker_core::id::{StepId, TaskId};
use tasker_core::readiness::Progress;
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::{Conn, PgTx, db, steps};
use crate::primitives::{Hold, KeyGroup, LockedTask, NewTask, TaskMove, TaskRows};
use crate::rows::{
    counters, decides_column, for_each_column, parent_counts, parse, rate_limit_column,
    task_progress, task_record, trace_context,
};

pub(crate) async fn progress(conn: &mut Conn, task_id: TaskId) -> StoreResult<TaskProgress> {
    let row: Option<(String, i32, i32, i32)> = sqlx::query_as(
        "SELECT state, step_count, steps_left, steps_active FROM tasker.tasks WHERE id = $1",
    )
    .bind(task_id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let (state, steps, left, active) =
        row.ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    task_progress(&state, steps.into(), left.into(), active.into())
}

pub(crate) async fn get(conn: &mut Conn, task_id: TaskId) -> StoreResult<TaskDetail> {
    let task = record(conn, task_id).await?;
    let steps = steps::list(conn, task_id).await?;
    Ok(TaskDetail { task, steps })
}

pub(crate) async fn record(conn: &mut Conn, task_id: TaskId) -> StoreResult<TaskRecord> {
    let row = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasker.tasks WHERE id = $1"
    ))
    .bind(task_id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    task_record(&row)
}

pub(crate) async fn list(conn: &mut Conn, p: TaskListParams<'_>) -> StoreResult<Vec<TaskRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasker.tasks
         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR namespace = $2) AND ($3::uuid IS NULL OR id < $3)
           AND ($5::text IS NULL OR name = $5) AND ($6::bigint IS NULL OR created_at >= $6) AND ($7::bigint IS NULL OR created_at < $7)
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(p.state.map(|s| s.as_str()))
    .bind(p.filter.namespace)
    .bind(p.before.map(|t| t.0))
    .bind(i64::from(p.limit))
    .bind(p.filter.name)
    .bind(p.filter.created_from.map(Timestamp::micros))
    .bind(p.filter.created_to.map(Timestamp::micros))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter().map(task_record).collect()
}

pub(crate) async fn counts(
    conn: &mut Conn,
    f: TaskFilter<'_>,
) -> StoreResult<Vec<(tasker_core::TaskState, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM tasker.tasks
         WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR name = $2)
           AND ($3::bigint IS NULL OR created_at >= $3) AND ($4::bigint IS NULL OR created_at < $4)
         GROUP BY state ORDER BY state",
    )
    .bind(f.namespace)
    .bind(f.name)
    .bind(f.created_from.map(Timestamp::micros))
    .bind(f.created_to.map(Timestamp::micros))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|(state, n)| Ok((parse(&state)?, n as u64)))
        .collect()
}

pub(crate) async fn list_unfinished(conn: &mut Conn) -> StoreResult<Vec<TaskId>> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM tasker.tasks WHERE state IN ('pending', 'in_progress') ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(ids.into_iter().map(TaskId).collect())
}

pub(crate) async fn held(conn: &mut Conn) -> StoreResult<HeldSteps> {
    let (paused, keyed): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(t.step_count) FILTER (WHERE p.name IS NOT NULL), 0)::bigint,
                coalesce(sum(t.step_count) FILTER (WHERE p.name IS NULL AND t.concurrency_key IS NOT NULL), 0)::bigint
         FROM tasker.tasks t
         LEFT JOIN tasker.paused_templates p ON p.namespace = t.namespace AND p.name = t.name
         WHERE t.state = 'pending'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let limited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.steps WHERE rate_limit IS NOT NULL AND state = 'enqueued'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(HeldSteps {
        paused_template: paused.max(0) as u64,
        concurrency_key: keyed.max(0) as u64,
        rate_limit: limited.max(0) as u64,
    })
}

/// What locking a task reads: id, state, steps left and active, whether it has a
/// concurrency key, priority, trace context.
type LockRow = (uuid::Uuid, String, i32, i32, bool, i32, Option<String>);

/// The columns of [`task_record`].
const TASK_COLUMNS: &str = "id, namespace, name, version, state, context::text, idempotency_key, created_at, updated_at, concurrency_key, priority, traceparent";

impl TaskRows for PgTx<'_> {
    /// The tasks' states and counters, with the row locks (`FOR UPDATE`, in id order) that
    /// serialize every change to one task.
    async fn tasks_lock(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<LockedTask>> {
        let conn = &mut *self.conn;
        let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.0).collect();
        let rows: Vec<LockRow> = sqlx::query_as(
            "SELECT id, state, steps_left, steps_active, concurrency_key IS NOT NULL, priority, traceparent FROM tasker.tasks
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(id, state, left, active, keyed, priority, traceparent)| {
                Ok(LockedTask {
                    id: TaskId(id),
                    state: parse(&state)?,
                    progress: counters(left.into(), active.into()),
                    keyed,
                    priority,
                    traceparent: trace_context(traceparent.as_deref()),
                })
            })
            .collect()
    }

    async fn tasks_held(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<Hold>> {
        let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.0).collect();
        type Row = (
            uuid::Uuid,
            bool,
            String,
            String,
            Option<String>,
            Option<i32>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT t.id, p.name IS NOT NULL, t.namespace, t.name, t.concurrency_key, t.concurrency_limit
             FROM tasker.tasks t
             LEFT JOIN tasker.paused_templates p ON p.namespace = t.namespace AND p.name = t.name
             WHERE t.id = ANY($1) AND (p.name IS NOT NULL OR t.concurrency_key IS NOT NULL)",
        )
        .bind(&ids)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(id, paused, namespace, name, key, limit)| Hold {
                task_id: TaskId(id),
                paused,
                group: KeyGroup::of(namespace, name, key, limit.map(i64::from)),
            })
            .collect())
    }

    async fn tasks_groups(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<KeyGroup>> {
        let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.0).collect();
        let rows: Vec<(String, String, Option<String>, Option<i32>)> = sqlx::query_as(
            "SELECT DISTINCT namespace, name, concurrency_key, concurrency_limit FROM tasker.tasks
             WHERE id = ANY($1) AND concurrency_key IS NOT NULL",
        )
        .bind(&ids)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .filter_map(|(namespace, name, key, limit)| {
                KeyGroup::of(namespace, name, key, limit.map(i64::from))
            })
            .collect())
    }

    /// A transaction-scoped advisory lock per group, taken in the order given: a
    /// group with no row of its own still has one lock for every process.
    async fn groups_lock(&mut self, groups: &[KeyGroup]) -> StoreResult<()> {
        let keys: Vec<String> = groups
            .iter()
            .map(|g| format!("{}/{}\u{1f}{}", g.namespace, g.name, g.key))
            .collect();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(h)
             FROM (SELECT hashtextextended(k, 7) AS h FROM UNNEST($1::text[]) WITH ORDINALITY AS u(k, n)
                   ORDER BY n) AS ordered",
        )
        .bind(&keys)
        .execute(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn tasks_in_line(&mut self, g: &KeyGroup) -> StoreResult<Vec<TaskId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM tasker.tasks
             WHERE namespace = $1 AND name = $2 AND concurrency_key = $3 AND state = 'pending'
             ORDER BY id
             LIMIT greatest(0, $4 - (SELECT count(*) FROM tasker.tasks
                                     WHERE namespace = $1 AND name = $2 AND concurrency_key = $3
                                       AND state = 'in_progress'))",
        )
        .bind(&g.namespace)
        .bind(&g.name)
        .bind(&g.key)
        .bind(g.limit as i64)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(ids.into_iter().map(TaskId).collect())
    }

    async fn tasks_set_progress(&mut self, tasks: &[(TaskId, Progress)]) -> StoreResult<()> {
        let conn = &mut *self.conn;
        let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.0.0).collect();
        let left: Vec<i32> = tasks.iter().map(|t| t.1.left as i32).collect();
        let active: Vec<i32> = tasks.iter().map(|t| t.1.active as i32).collect();
        sqlx::query(
            "UPDATE tasker.tasks t SET steps_left = u.left_, steps_active = u.active
             FROM UNNEST($1::uuid[], $2::int[], $3::int[]) AS u(id, left_, active) WHERE t.id = u.id",
        )
        .bind(&ids)
        .bind(&left)
        .bind(&active)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn task_by_key(&mut self, key: &str) -> StoreResult<Option<TaskId>> {
        let conn = &mut *self.conn;
        let id: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM tasker.tasks WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
        Ok(id.map(TaskId))
    }

    /// Inserts the task, then all its steps and all its edges with one statement each.
    async fn task_insert(&mut self, task: NewTask<'_>) -> StoreResult<()> {
        let conn = &mut *self.conn;
        let now = self.now;
        let (task_id, t) = (task.id, task.template);
        let limit = task
            .concurrency_key
            .and(t.concurrency.as_ref())
            .map(|c| c.limit as i32);
        sqlx::query(
            "INSERT INTO tasker.tasks (id, namespace, name, version, state, context, idempotency_key, created_at, updated_at,
                                       step_count, steps_left, steps_active, concurrency_key, concurrency_limit, priority, traceparent)
             VALUES ($1, $2, $3, $4, 'pending', $5::json, $6, $7, $7, $8, $8, 0, $9, $10, $11, $12)",
        )
        .bind(task_id.0)
        .bind(&t.namespace)
        .bind(&t.name)
        .bind(&t.version)
        .bind(task.context.get())
        .bind(task.idempotency_key)
        .bind(now.0)
        .bind(t.steps.len() as i32)
        .bind(task.concurrency_key)
        .bind(limit)
        .bind(task.priority)
        .bind(task.traceparent.map(|tp| tp.to_string()))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let n = t.steps.len();
        let edges = t.edges();
        let waiting_on: Vec<i32> = parent_counts(n, &edges)
            .into_iter()
            .map(|c| c as i32)
            .collect();
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let (mut names, mut handlers, mut queues) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut decides = Vec::with_capacity(n);
        let mut waits = Vec::with_capacity(n);
        let mut fans = Vec::with_capacity(n);
        let mut limits = Vec::with_capacity(n);
        let (mut configs, mut retries, mut max_attempts, mut timeouts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (position, step) in t.steps.iter().enumerate() {
            ids.push(StepId::new().0);
            positions.push(position as i32);
            names.push(step.name.as_str());
            handlers.push(step.handler.as_str());
            queues.push(step.queue.as_str());
            configs.push(step.config.to_string());
            retries.push(
                serde_json::to_string(&step.retry)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
            max_attempts.push(step.retry.max_attempts as i32);
            timeouts.push(step.timeout.as_millis() as i64);
            decides.push(decides_column(t, step));
            waits.push(step.wait_for.as_ref().map(|w| w.signal.as_str()));
            fans.push(for_each_column(step));
            limits.push(rate_limit_column(step));
        }
        sqlx::query(
            "INSERT INTO tasker.steps (id, task_id, position, name, handler, queue, config, retry, max_attempts, timeout_ms, state, waiting_on, decides,
                                      wait_signal, for_each, rate_limit)
             SELECT u.id, $1, u.position, u.name, u.handler, u.queue, u.config::json, u.retry, u.max_attempts, u.timeout_ms, 'pending', u.waiting_on, u.decides,
                    u.wait_signal, u.for_each, u.rate_limit
             FROM UNNEST($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int[], $10::bigint[], $11::int[], $12::text[],
                         $13::text[], $14::text[], $15::text[])
                  AS u(id, position, name, handler, queue, config, retry, max_attempts, timeout_ms, waiting_on, decides, wait_signal, for_each, rate_limit)",
        )
        .bind(task_id.0)
        .bind(&ids)
        .bind(&positions)
        .bind(&names)
        .bind(&handlers)
        .bind(&queues)
        .bind(&configs)
        .bind(&retries)
        .bind(&max_attempts)
        .bind(&timeouts)
        .bind(&waiting_on)
        .bind(&decides)
        .bind(&waits)
        .bind(&fans)
        .bind(&limits)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let (parents, children): (Vec<i32>, Vec<i32>) =
            edges.into_iter().map(|(p, c)| (p as i32, c as i32)).unzip();
        if !parents.is_empty() {
            sqlx::query(
                "INSERT INTO tasker.step_edges (task_id, parent, child)
                 SELECT $1, u.parent, u.child FROM UNNEST($2::int[], $3::int[]) AS u(parent, child)",
            )
            .bind(task_id.0)
            .bind(&parents)
            .bind(&children)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    /// One statement for all of `moves`: the compare-and-set of each task and its transition.
    async fn tasks_move(&mut self, moves: &[TaskMove<'_>]) -> StoreResult<u64> {
        let conn = &mut *self.conn;
        let now = self.now;
        let ids: Vec<uuid::Uuid> = moves.iter().map(|m| m.task_id.0).collect();
        let from: Vec<&str> = moves.iter().map(|m| m.from.as_str()).collect();
        let to: Vec<&str> = moves.iter().map(|m| m.to.as_str()).collect();
        let reasons: Vec<&str> = moves.iter().map(|m| m.reason).collect();
        let done = sqlx::query(
            "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
                        AS u(id, from_state, to_state, reason)),
                  moved AS (UPDATE tasker.tasks t SET state = u.to_state, updated_at = $5
                            FROM u WHERE t.id = u.id AND t.state = u.from_state
                            RETURNING t.id, u.from_state, u.to_state, u.reason)
             INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
             SELECT id, NULL, from_state, to_state, reason, $5 FROM moved",
        )
        .bind(&ids)
        .bind(&from)
        .bind(&to)
        .bind(&reasons)
        .bind(now.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` finished tasks changed before `before`, and all that is theirs.
    /// Tasks another process is pruning are skipped, not waited for.
    async fn tasks_prune(&mut self, before: Timestamp, limit: u32) -> StoreResult<Pruned> {
        let conn = &mut *self.conn;
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM tasker.tasks
             WHERE state IN ('complete', 'error', 'cancelled') AND updated_at < $1
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before.0)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        if ids.is_empty() {
            return Ok(Pruned::default());
        }
        let mut steps = 0;
        for sql in [
            "DELETE FROM tasker.transitions WHERE task_id = ANY($1)",
            "DELETE FROM tasker.step_edges WHERE task_id = ANY($1)",
            "DELETE FROM tasker.signals WHERE task_id = ANY($1)",
            "DELETE FROM tasker.steps WHERE task_id = ANY($1)",
        ] {
            let done = sqlx::query(sql)
                .bind(&ids)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            steps = done.rows_affected();
        }
        super::queue::forget_tasks(conn, &ids).await?;
        sqlx::query("DELETE FROM tasker.tasks WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(Pruned {
            tasks: ids.len() as u64,
            steps,
        })
    }
}
