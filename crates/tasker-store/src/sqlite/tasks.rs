//! The `tasks` table, and the steps and edges a task is created with.

use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tasker_core::id::{StepId, TaskId};
use tasker_core::readiness::Progress;
use tasker_core::state::TaskState;
use tasker_core::store::*;
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use super::{Conn, db, steps, transitions};
use crate::primitives::Transition;
use crate::rows::{counters, parent_counts, parse, raw};

/// The tasks' states and counters, in id order (SQLite has one writer: no lock needed).
pub(crate) async fn lock(
    conn: &mut Conn,
    tasks: &[TaskId],
) -> StoreResult<Vec<(TaskId, TaskState, Progress)>> {
    let mut ids = tasks.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT state, steps_left, steps_active FROM tasks WHERE id = ?")
                .bind(id.0)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
        if let Some((state, left, active)) = row {
            out.push((id, parse(&state)?, counters(left, active)));
        }
    }
    Ok(out)
}

pub(crate) async fn set_progress(conn: &mut Conn, tasks: &[(TaskId, Progress)]) -> StoreResult<()> {
    for (id, progress) in tasks {
        sqlx::query("UPDATE tasks SET steps_left = ?, steps_active = ? WHERE id = ?")
            .bind(i64::from(progress.left))
            .bind(i64::from(progress.active))
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) async fn by_key(conn: &mut Conn, key: &str) -> StoreResult<Option<TaskId>> {
    let id: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tasks WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    Ok(id.map(TaskId))
}

pub(crate) async fn insert(
    conn: &mut Conn,
    task_id: TaskId,
    t: &TaskTemplate,
    context: &RawValue,
    key: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tasks (id, namespace, name, version, state, context, idempotency_key, created_at, updated_at,
                            step_count, steps_left, steps_active)
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, 0)",
    )
    .bind(task_id.0)
    .bind(&t.namespace)
    .bind(&t.name)
    .bind(&t.version)
    .bind(context.get())
    .bind(key)
    .bind(now.0)
    .bind(now.0)
    .bind(t.steps.len() as i64)
    .bind(t.steps.len() as i64)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let edges = t.edges();
    let parents = parent_counts(t.steps.len(), &edges);
    for (position, step) in t.steps.iter().enumerate() {
        let retry =
            serde_json::to_string(&step.retry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO steps (id, task_id, position, name, handler, queue, config, retry, max_attempts, timeout_ms, state, waiting_on)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
        )
        .bind(StepId::new().0)
        .bind(task_id.0)
        .bind(position as i64)
        .bind(&step.name)
        .bind(&step.handler)
        .bind(&step.queue)
        .bind(step.config.to_string())
        .bind(retry)
        .bind(i64::from(step.retry.max_attempts))
        .bind(step.timeout.as_millis() as i64)
        .bind(i64::from(parents[position]))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    for (parent, child) in edges {
        sqlx::query("INSERT INTO step_edges (task_id, parent, child) VALUES (?, ?, ?)")
            .bind(task_id.0)
            .bind(parent as i64)
            .bind(child as i64)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) async fn move_(
    conn: &mut Conn,
    task_id: TaskId,
    from: TaskState,
    to: TaskState,
    reason: &str,
    now: Timestamp,
) -> StoreResult<u64> {
    let done = sqlx::query("UPDATE tasks SET state = ?, updated_at = ? WHERE id = ? AND state = ?")
        .bind(to.as_str())
        .bind(now.0)
        .bind(task_id.0)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if done.rows_affected() == 1 {
        let t = Transition {
            task_id,
            step_id: None,
            from: Some(from.as_str()),
            to: to.as_str(),
            reason,
        };
        transitions::append(conn, t, now).await?;
    }
    Ok(done.rows_affected())
}

pub(crate) async fn progress(
    pool: &sqlx::SqlitePool,
    task_id: TaskId,
) -> StoreResult<TaskProgress> {
    let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT state, step_count, steps_left, steps_active FROM tasks WHERE id = ?",
    )
    .bind(task_id.0)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    let (state, steps, left, active) =
        row.ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    Ok(TaskProgress {
        state: parse(&state)?,
        steps: steps.max(0) as u32,
        done: (steps - left).max(0) as u32,
        active: active.max(0) as u32,
    })
}

pub(crate) async fn get(conn: &mut Conn, task_id: TaskId) -> StoreResult<TaskDetail> {
    let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .bind(task_id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    let task = task_record(row)?;
    let steps = steps::list(conn, task_id).await?;
    Ok(TaskDetail { task, steps })
}

pub(crate) async fn list(conn: &mut Conn, p: TaskListParams<'_>) -> StoreResult<Vec<TaskRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR namespace = ?2) AND (?3 IS NULL OR id < ?3)
         ORDER BY id DESC LIMIT ?4"
    ))
    .bind(p.state.map(|s| s.as_str()))
    .bind(p.namespace)
    .bind(p.before.map(|t| t.0))
    .bind(i64::from(p.limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.into_iter().map(task_record).collect()
}

pub(crate) async fn list_unfinished(conn: &mut Conn) -> StoreResult<Vec<TaskId>> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE state IN ('pending', 'in_progress') ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(ids.into_iter().map(TaskId).collect())
}

const TASK_COLUMNS: &str =
    "id, namespace, name, version, state, context, idempotency_key, created_at, updated_at";

fn task_record(r: SqliteRow) -> StoreResult<TaskRecord> {
    Ok(TaskRecord {
        id: TaskId(r.get(0)),
        namespace: r.get(1),
        name: r.get(2),
        version: r.get(3),
        state: parse(r.get::<&str, _>(4))?,
        context: raw(r.get(5))?,
        idempotency_key: r.get(6),
        created_at: Timestamp(r.get(7)),
        updated_at: Timestamp(r.get(8)),
    })
}

/// Deletes up to `limit` finished tasks changed before `before`, and all that is theirs.
/// The doomed ids go to a temporary table, so every statement deletes the same tasks.
pub(crate) async fn prune(conn: &mut Conn, before: Timestamp, limit: u32) -> StoreResult<Pruned> {
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS pruned (id BLOB PRIMARY KEY)")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM temp.pruned")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let tasks = sqlx::query(
        "INSERT INTO temp.pruned SELECT id FROM tasks
         WHERE state IN ('complete', 'error', 'cancelled') AND updated_at < ?
         ORDER BY updated_at LIMIT ?",
    )
    .bind(before.0)
    .bind(i64::from(limit))
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
    let mut steps = 0;
    for sql in [
        "DELETE FROM transitions WHERE task_id IN (SELECT id FROM temp.pruned)",
        "DELETE FROM step_edges WHERE task_id IN (SELECT id FROM temp.pruned)",
        "DELETE FROM queue_messages WHERE replace(json_extract(message, '$.task_id'), '-', '')
         IN (SELECT lower(hex(id)) FROM temp.pruned)",
        "DELETE FROM queue_dead_letters WHERE replace(json_extract(message, '$.task_id'), '-', '')
         IN (SELECT lower(hex(id)) FROM temp.pruned)",
        "DELETE FROM steps WHERE task_id IN (SELECT id FROM temp.pruned)",
        "DELETE FROM tasks WHERE id IN (SELECT id FROM temp.pruned)",
    ] {
        let done = sqlx::query(sql).execute(&mut *conn).await.map_err(db)?;
        if sql.starts_with("DELETE FROM steps") {
            steps = done.rows_affected();
        }
    }
    Ok(Pruned { tasks, steps })
}
