//! The `tasks` table, and the steps and edges a task is created with.
//!
//! Where the PostgreSQL file changes a batch with one statement over arrays and appends
//! the transitions in that statement, this one loops over the rows (a statement costs
//! microseconds in process) and appends each transition with `transitions::append`.

use rusqlite::{OptionalExtension, params};
use tasker_core::id::{StepId, TaskId};
use tasker_core::readiness::Progress;
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::{Conn, SqliteTx, db, decode_all, steps, transitions};
use crate::primitives::{Hold, KeyGroup, LockedTask, NewTask, TaskMove, TaskRows, Transition};
use crate::rows::{
    Columns, counters, decides_column, for_each_column, parent_counts, parse, rate_limit_column,
    task_progress, task_record, trace_context,
};

pub(crate) fn progress(conn: &Conn, task_id: TaskId) -> StoreResult<TaskProgress> {
    let row: Option<(String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT state, step_count, steps_left, steps_active FROM tasks WHERE id = ?",
        )
        .and_then(|mut s| {
            s.query_row([task_id.0], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(db)?;
    let (state, steps, left, active) =
        row.ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
    task_progress(&state, steps, left, active)
}

pub(crate) fn get(conn: &Conn, task_id: TaskId) -> StoreResult<TaskDetail> {
    let task = record(conn, task_id)?;
    let steps = steps::list(conn, task_id)?;
    Ok(TaskDetail { task, steps })
}

pub(crate) fn record(conn: &Conn, task_id: TaskId) -> StoreResult<TaskRecord> {
    let mut s = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .map_err(db)?;
    decode_all(&mut s, [task_id.0], |r| task_record(r))?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))
}

pub(crate) fn list(conn: &Conn, p: TaskListParams<'_>) -> StoreResult<Vec<TaskRecord>> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR namespace = ?2) AND (?3 IS NULL OR id < ?3)
               AND (?5 IS NULL OR name = ?5) AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)
             ORDER BY id DESC LIMIT ?4"
        ))
        .map_err(db)?;
    let params = params![
        p.state.map(|s| s.as_str()),
        p.filter.namespace,
        p.before.map(|t| t.0),
        p.limit,
        p.filter.name,
        p.filter.created_from.map(Timestamp::micros),
        p.filter.created_to.map(Timestamp::micros),
    ];
    decode_all(&mut s, params, |r| task_record(r))
}

pub(crate) fn counts(
    conn: &Conn,
    f: TaskFilter<'_>,
) -> StoreResult<Vec<(tasker_core::TaskState, u64)>> {
    let mut s = conn
        .prepare_cached(
            "SELECT state, count(*) FROM tasks
             WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR name = ?2)
               AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4)
             GROUP BY state ORDER BY state",
        )
        .map_err(db)?;
    let params = params![
        f.namespace,
        f.name,
        f.created_from.map(Timestamp::micros),
        f.created_to.map(Timestamp::micros),
    ];
    decode_all(&mut s, params, |r| {
        Ok((parse(r.str(0)?)?, r.int(1)? as u64))
    })
}

pub(crate) fn list_unfinished(conn: &Conn) -> StoreResult<Vec<TaskId>> {
    let mut s = conn
        .prepare_cached(
            "SELECT id FROM tasks WHERE state IN ('pending', 'in_progress') ORDER BY id",
        )
        .map_err(db)?;
    let rows = s.query_map([], |r| r.get(0).map(TaskId)).map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

pub(crate) fn held(conn: &Conn) -> StoreResult<HeldSteps> {
    let (paused, keyed): (i64, i64) = conn
        .prepare_cached(
            "SELECT coalesce(sum(CASE WHEN p.name IS NOT NULL THEN t.step_count END), 0),
                    coalesce(sum(CASE WHEN p.name IS NULL AND t.concurrency_key IS NOT NULL THEN t.step_count END), 0)
             FROM tasks t
             LEFT JOIN paused_templates p ON p.namespace = t.namespace AND p.name = t.name
             WHERE t.state = 'pending'",
        )
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db)?;
    let limited: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM steps WHERE rate_limit IS NOT NULL AND state = 'enqueued'",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)?;
    Ok(HeldSteps {
        paused_template: paused.max(0) as u64,
        concurrency_key: keyed.max(0) as u64,
        rate_limit: limited.max(0) as u64,
    })
}

/// The columns of [`task_record`].
const TASK_COLUMNS: &str = "id, namespace, name, version, state, context, idempotency_key, created_at, updated_at, concurrency_key, priority, traceparent";

impl TaskRows for SqliteTx<'_> {
    /// The tasks' states and counters, in id order (SQLite has one writer: no lock needed).
    async fn tasks_lock(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<LockedTask>> {
        let conn = self.conn;
        let mut ids = tasks.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut s = conn
            .prepare_cached(
                "SELECT state, steps_left, steps_active, concurrency_key IS NOT NULL, priority, traceparent FROM tasks WHERE id = ?",
            )
            .map_err(db)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(String, i64, i64, bool, i32, Option<String>)> = s
                .query_row([id.0], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .optional()
                .map_err(db)?;
            if let Some((state, left, active, keyed, priority, traceparent)) = row {
                out.push(LockedTask {
                    id,
                    state: parse(&state)?,
                    progress: counters(left, active),
                    keyed,
                    priority,
                    traceparent: trace_context(traceparent.as_deref()),
                });
            }
        }
        Ok(out)
    }

    async fn tasks_held(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<Hold>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT p.name IS NOT NULL, t.namespace, t.name, t.concurrency_key, t.concurrency_limit
                 FROM tasks t
                 LEFT JOIN paused_templates p ON p.namespace = t.namespace AND p.name = t.name
                 WHERE t.id = ? AND (p.name IS NOT NULL OR t.concurrency_key IS NOT NULL)",
            )
            .map_err(db)?;
        let mut held = Vec::new();
        for &task_id in tasks {
            let row = s
                .query_row([task_id.0], |r| {
                    Ok(Hold {
                        task_id,
                        paused: r.get(0)?,
                        group: KeyGroup::of(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                    })
                })
                .optional()
                .map_err(db)?;
            held.extend(row);
        }
        Ok(held)
    }

    async fn tasks_groups(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<KeyGroup>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT namespace, name, concurrency_key, concurrency_limit FROM tasks
                 WHERE id = ? AND concurrency_key IS NOT NULL",
            )
            .map_err(db)?;
        let mut groups = Vec::new();
        for &task_id in tasks {
            let row = s
                .query_row([task_id.0], |r| {
                    Ok(KeyGroup::of(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(db)?;
            if let Some(Some(g)) = row
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
        Ok(groups)
    }

    /// Nothing to take: the embedded store has one writer at a time.
    async fn groups_lock(&mut self, _groups: &[KeyGroup]) -> StoreResult<()> {
        Ok(())
    }

    async fn tasks_in_line(&mut self, g: &KeyGroup) -> StoreResult<Vec<TaskId>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT id FROM tasks
                 WHERE namespace = ?1 AND name = ?2 AND concurrency_key = ?3 AND state = 'pending'
                 ORDER BY id
                 LIMIT max(0, ?4 - (SELECT count(*) FROM tasks
                                    WHERE namespace = ?1 AND name = ?2 AND concurrency_key = ?3
                                      AND state = 'in_progress'))",
            )
            .map_err(db)?;
        let rows = s
            .query_map(params![g.namespace, g.name, g.key, g.limit], |r| {
                Ok(TaskId(r.get(0)?))
            })
            .map_err(db)?;
        rows.map(|r| r.map_err(db)).collect()
    }

    async fn tasks_set_progress(&mut self, tasks: &[(TaskId, Progress)]) -> StoreResult<()> {
        let conn = self.conn;
        let mut s = conn
            .prepare_cached("UPDATE tasks SET steps_left = ?, steps_active = ? WHERE id = ?")
            .map_err(db)?;
        for (id, progress) in tasks {
            s.execute(params![progress.left, progress.active, id.0])
                .map_err(db)?;
        }
        Ok(())
    }

    async fn task_by_key(&mut self, key: &str) -> StoreResult<Option<TaskId>> {
        let conn = self.conn;
        conn.prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map(|id| id.map(TaskId))
            .map_err(db)
    }

    async fn task_insert(&mut self, task: NewTask<'_>) -> StoreResult<()> {
        let conn = self.conn;
        let now = self.now;
        let (task_id, t) = (task.id, task.template);
        let steps = t.steps.len() as i64;
        let limit = task
            .concurrency_key
            .and(t.concurrency.as_ref())
            .map(|c| c.limit);
        conn.prepare_cached(
            "INSERT INTO tasks (id, namespace, name, version, state, context, idempotency_key, created_at, updated_at,
                                step_count, steps_left, steps_active, concurrency_key, concurrency_limit, priority, traceparent)
             VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
        )
        .and_then(|mut s| {
            s.execute(params![
                task_id.0,
                t.namespace,
                t.name,
                t.version,
                task.context.get(),
                task.idempotency_key,
                now.0,
                now.0,
                steps,
                steps,
                task.concurrency_key,
                limit,
                task.priority,
                task.traceparent.map(|tp| tp.to_string())
            ])
        })
        .map_err(db)?;
        let edges = t.edges();
        let parents = parent_counts(t.steps.len(), &edges);
        let mut insert_step = conn
            .prepare_cached(
                "INSERT INTO steps (id, task_id, position, name, handler, queue, config, retry, max_attempts, timeout_ms, state, waiting_on, decides,
                                    wait_signal, for_each, rate_limit)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
            )
            .map_err(db)?;
        for (position, step) in t.steps.iter().enumerate() {
            let retry = serde_json::to_string(&step.retry)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            insert_step
                .execute(params![
                    StepId::new().0,
                    task_id.0,
                    position as i64,
                    step.name,
                    step.handler,
                    step.queue,
                    step.config.to_string(),
                    retry,
                    step.retry.max_attempts,
                    step.timeout.as_millis() as i64,
                    parents[position],
                    decides_column(t, step),
                    step.wait_for.as_ref().map(|w| &w.signal),
                    for_each_column(step),
                    rate_limit_column(step),
                ])
                .map_err(db)?;
        }
        let mut insert_edge = conn
            .prepare_cached("INSERT INTO step_edges (task_id, parent, child) VALUES (?, ?, ?)")
            .map_err(db)?;
        for (parent, child) in edges {
            insert_edge
                .execute(params![task_id.0, parent as i64, child as i64])
                .map_err(db)?;
        }
        Ok(())
    }

    async fn tasks_move(&mut self, moves: &[TaskMove<'_>]) -> StoreResult<u64> {
        let conn = self.conn;
        let now = self.now;
        let mut s = conn
            .prepare_cached("UPDATE tasks SET state = ?, updated_at = ? WHERE id = ? AND state = ?")
            .map_err(db)?;
        let mut changed = 0;
        for m in moves {
            let moved = s
                .execute(params![m.to.as_str(), now.0, m.task_id.0, m.from.as_str()])
                .map_err(db)? as u64;
            if moved == 1 {
                let t = Transition {
                    task_id: m.task_id,
                    step_id: None,
                    from: Some(m.from.as_str()),
                    to: m.to.as_str(),
                    reason: m.reason,
                };
                transitions::append(conn, t, now)?;
            }
            changed += moved;
        }
        Ok(changed)
    }

    /// Deletes up to `limit` finished tasks changed before `before`, and all that is theirs.
    /// The doomed ids go to a temporary table, so every statement deletes the same tasks.
    async fn tasks_prune(&mut self, before: Timestamp, limit: u32) -> StoreResult<Pruned> {
        let conn = self.conn;
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS pruned (id BLOB PRIMARY KEY); DELETE FROM temp.pruned;",
        )
        .map_err(db)?;
        let tasks = conn
            .execute(
                "INSERT INTO temp.pruned SELECT id FROM tasks
                 WHERE state IN ('complete', 'error', 'cancelled') AND updated_at < ?
                 ORDER BY updated_at LIMIT ?",
                params![before.0, limit],
            )
            .map_err(db)? as u64;
        let mut steps = 0;
        for sql in [
            "DELETE FROM transitions WHERE task_id IN (SELECT id FROM temp.pruned)",
            "DELETE FROM step_edges WHERE task_id IN (SELECT id FROM temp.pruned)",
            "DELETE FROM signals WHERE task_id IN (SELECT id FROM temp.pruned)",
            "DELETE FROM queue_messages WHERE replace(json_extract(message, '$.task_id'), '-', '')
             IN (SELECT lower(hex(id)) FROM temp.pruned)",
            "DELETE FROM queue_dead_letters WHERE replace(json_extract(message, '$.task_id'), '-', '')
             IN (SELECT lower(hex(id)) FROM temp.pruned)",
            "DELETE FROM steps WHERE task_id IN (SELECT id FROM temp.pruned)",
            "DELETE FROM tasks WHERE id IN (SELECT id FROM temp.pruned)",
        ] {
            let deleted = conn.execute(sql, []).map_err(db)? as u64;
            if sql.starts_with("DELETE FROM steps") {
                steps = deleted;
            }
        }
        Ok(Pruned { tasks, steps })
    }
}
