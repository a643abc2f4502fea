//! The `steps` and `step_edges` tables.

use std::time::Duration;

use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tasker_core::backoff::RetryPolicy;
use tasker_core::id::{StepId, TaskId};
use tasker_core::intern::Interner;
use tasker_core::state::StepState;
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::transitions;
use super::{Conn, db};
use crate::primitives::{EvalStep, Move, Outcome, StepRow, Transition};
use crate::rows::{link_parents, parse, raw};

/// The columns of an [`EvalStep`], for `concat!` into static statements.
macro_rules! eval_columns {
    () => {
        "id, task_id, position, state, handler, queue, attempts, waiting_on"
    };
}

fn eval_step(r: &SqliteRow) -> StoreResult<EvalStep> {
    let names = Interner::global();
    Ok(EvalStep {
        id: StepId(r.get(0)),
        task_id: TaskId(r.get(1)),
        position: r.get::<i64, _>(2) as u32,
        state: parse(r.get::<&str, _>(3))?,
        handler: names.intern(r.get(4)),
        queue: names.intern(r.get(5)),
        attempts: r.get::<i64, _>(6) as u32,
        waiting_on: r.get::<i64, _>(7).max(0) as u32,
    })
}

pub(crate) async fn of_task(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
    const SQL: &str = concat!(
        "SELECT ",
        eval_columns!(),
        " FROM steps WHERE task_id = ? ORDER BY position"
    );
    let rows = sqlx::query(SQL)
        .bind(task_id.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    rows.iter().map(eval_step).collect()
}

pub(crate) async fn unblocked(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
    const SQL: &str = concat!(
        "SELECT ",
        eval_columns!(),
        " FROM steps",
        " WHERE task_id = ? AND state = 'pending' AND waiting_on = 0 ORDER BY position"
    );
    let rows = sqlx::query(SQL)
        .bind(task_id.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    rows.iter().map(eval_step).collect()
}

/// A child of two steps of `done` is decremented twice and returned once, as it ends.
pub(crate) async fn release_children(
    conn: &mut Conn,
    done: &[(TaskId, u32)],
) -> StoreResult<Vec<EvalStep>> {
    const SQL: &str = concat!(
        "UPDATE steps SET waiting_on = waiting_on - 1",
        " WHERE task_id = ?1 AND position IN (SELECT child FROM step_edges WHERE task_id = ?1 AND parent = ?2)",
        " RETURNING ",
        eval_columns!()
    );
    let mut children: Vec<EvalStep> = Vec::new();
    for (task_id, position) in done {
        let rows = sqlx::query(SQL)
            .bind(task_id.0)
            .bind(i64::from(*position))
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        for row in &rows {
            let child = eval_step(row)?;
            match children.iter_mut().find(|c| c.id == child.id) {
                Some(seen) => *seen = child,
                None => children.push(child),
            }
        }
    }
    Ok(children)
}

pub(crate) async fn first_failed(conn: &mut Conn, task_id: TaskId) -> StoreResult<Option<String>> {
    sqlx::query_scalar(
        "SELECT name FROM steps WHERE task_id = ? AND state = 'error' ORDER BY position LIMIT 1",
    )
    .bind(task_id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)
}

pub(crate) async fn edges(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<(usize, usize)>> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT parent, child FROM step_edges WHERE task_id = ?")
            .bind(task_id.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(p, c)| (p as usize, c as usize))
        .collect())
}

pub(crate) async fn get(conn: &mut Conn, step_id: StepId) -> StoreResult<Option<StepRow>> {
    let row = sqlx::query(
        "SELECT task_id, name, handler, queue, state, attempts, max_attempts, timeout_ms, position FROM steps WHERE id = ?",
    )
    .bind(step_id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.map(|r| {
        Ok(StepRow {
            task_id: TaskId(r.get(0)),
            name: r.get(1),
            handler: r.get(2),
            queue: r.get(3),
            state: parse(r.get::<&str, _>(4))?,
            attempts: r.get::<i64, _>(5) as u32,
            max_attempts: r.get::<i64, _>(6) as u32,
            timeout: Duration::from_millis(r.get::<i64, _>(7) as u64),
            position: r.get::<i64, _>(8) as u32,
        })
    })
    .transpose()
}

pub(crate) async fn get_many(
    conn: &mut Conn,
    steps: &[StepId],
) -> StoreResult<Vec<(StepId, StepRow)>> {
    let mut out = Vec::with_capacity(steps.len());
    for &id in steps {
        if let Some(row) = get(conn, id).await? {
            out.push((id, row));
        }
    }
    Ok(out)
}

/// The parents' results are found from the step's edges (`CROSS JOIN` fixes that join
/// order in SQLite), so loading a step costs its parents, not the size of its task.
pub(crate) async fn execution(conn: &mut Conn, step_id: StepId) -> StoreResult<StepExecution> {
    let r = sqlx::query(
        "SELECT s.task_id, s.attempts, t.namespace, t.name, t.version, s.name, s.handler, s.config, t.context,
                (SELECT json_group_array(json_array(p.name, json(COALESCE(p.results, 'null'))))
                 FROM (SELECT p.name, p.results FROM step_edges e
                       CROSS JOIN steps p ON p.task_id = e.task_id AND p.position = e.parent
                       WHERE e.task_id = s.task_id AND e.child = s.position ORDER BY e.parent) p),
                s.retry, s.timeout_ms
         FROM steps s JOIN tasks t ON t.id = s.task_id WHERE s.id = ?",
    )
    .bind(step_id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::NotFound(format!("step {step_id}")))?;
    let names = Interner::global();
    let parents: Vec<(std::borrow::Cow<str>, Box<RawValue>)> =
        serde_json::from_str(r.get::<&str, _>(9))
            .map_err(|e| StoreError::Corrupt(format!("parent results: {e}")))?;
    let retry: RetryPolicy = serde_json::from_str(r.get::<&str, _>(10))
        .map_err(|e| StoreError::Corrupt(format!("retry policy: {e}")))?;
    Ok(StepExecution {
        task_id: TaskId(r.get(0)),
        step_id,
        attempt: r.get::<i64, _>(1) as u32,
        namespace: names.intern(r.get(2)),
        task_name: names.intern(r.get(3)),
        task_version: names.intern(r.get(4)),
        step_name: names.intern(r.get(5)),
        handler: names.intern(r.get(6)),
        config: raw(r.get(7))?,
        context: raw(r.get(8))?,
        parents: parents
            .into_iter()
            .map(|(n, r)| (names.intern(&n), r))
            .collect(),
        retry,
        timeout: Duration::from_millis(r.get::<i64, _>(11) as u64),
    })
}

/// Appends the transition of `m` if its compare-and-set changed a row.
async fn recorded(conn: &mut Conn, m: &Move<'_>, rows: u64, now: Timestamp) -> StoreResult<u64> {
    if rows == 1 {
        let t = Transition {
            task_id: m.task_id,
            step_id: Some(m.step_id),
            from: Some(m.from.as_str()),
            to: m.to.as_str(),
            reason: m.reason,
        };
        transitions::append(conn, t, now).await?;
    }
    Ok(rows)
}

pub(crate) async fn move_(conn: &mut Conn, m: Move<'_>, now: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("UPDATE steps SET state = ? WHERE id = ? AND state = ?")
        .bind(m.to.as_str())
        .bind(m.step_id.0)
        .bind(m.from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    recorded(conn, &m, done.rows_affected(), now).await
}

pub(crate) async fn begin_attempt(
    conn: &mut Conn,
    m: Move<'_>,
    attempts: u32,
    now: Timestamp,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE steps SET state = ?, attempts = ?, started_at = ?, completed_at = NULL
         WHERE id = ? AND state = ? AND attempts = ?",
    )
    .bind(m.to.as_str())
    .bind(i64::from(attempts + 1))
    .bind(now.0)
    .bind(m.step_id.0)
    .bind(m.from.as_str())
    .bind(i64::from(attempts))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    recorded(conn, &m, done.rows_affected(), now).await
}

pub(crate) async fn set_outcome(
    conn: &mut Conn,
    outcomes: &[(Move<'_>, Outcome<'_>)],
    now: Timestamp,
) -> StoreResult<u64> {
    let mut changed = 0;
    for (m, outcome) in outcomes {
        let done = sqlx::query(
            "UPDATE steps SET state = ?, results = COALESCE(?, results), error = ?, completed_at = ?
             WHERE id = ? AND state = ?",
        )
        .bind(m.to.as_str())
        .bind(outcome.results.map(RawValue::get))
        .bind(outcome.error)
        .bind(now.0)
        .bind(m.step_id.0)
        .bind(m.from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        changed += recorded(conn, m, done.rows_affected(), now).await?;
    }
    Ok(changed)
}

pub(crate) async fn reset(conn: &mut Conn, m: Move<'_>, now: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE steps SET state = ?, attempts = 0, results = NULL, error = NULL,
                started_at = NULL, completed_at = NULL
         WHERE id = ? AND state = ?",
    )
    .bind(m.to.as_str())
    .bind(m.step_id.0)
    .bind(m.from.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    recorded(conn, &m, done.rows_affected(), now).await
}

pub(crate) async fn enqueue_many(
    conn: &mut Conn,
    steps: &[(TaskId, StepId)],
    reason: &str,
    now: Timestamp,
) -> StoreResult<u64> {
    let mut moved = 0;
    for &(task_id, step_id) in steps {
        let m = Move {
            task_id,
            step_id,
            from: StepState::Pending,
            to: StepState::Enqueued,
            reason,
        };
        moved += move_(conn, m, now).await?;
    }
    Ok(moved)
}

/// The task's steps for reports, with `depends_on` rebuilt from the edges.
pub(crate) async fn list(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<StepRecord>> {
    let rows = sqlx::query(
        "SELECT id, position, name, handler, queue, state, attempts, max_attempts, results, error,
                started_at, completed_at
         FROM steps WHERE task_id = ? ORDER BY position",
    )
    .bind(task_id.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut steps = rows
        .into_iter()
        .map(|r| {
            Ok(StepRecord {
                id: StepId(r.get(0)),
                task_id,
                position: r.get::<i64, _>(1) as u32,
                name: r.get(2),
                handler: r.get(3),
                queue: r.get(4),
                depends_on: Vec::new(),
                state: parse(r.get::<&str, _>(5))?,
                attempts: r.get::<i64, _>(6) as u32,
                max_attempts: r.get::<i64, _>(7) as u32,
                results: r.get::<Option<String>, _>(8).map(raw).transpose()?,
                error: r.get(9),
                started_at: r.get::<Option<i64>, _>(10).map(Timestamp),
                completed_at: r.get::<Option<i64>, _>(11).map(Timestamp),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    link_parents(&mut steps, edges(conn, task_id).await?);
    Ok(steps)
}
