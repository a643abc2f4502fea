//! The `steps` and `step_edges` tables: claiming a step, recording how an attempt
//! ended, operator actions, and what readiness evaluation needs.

use std::time::Duration;

use serde_json::value::RawValue;
use sqlx::Row;
use tasker_core::backoff::RetryPolicy;
use tasker_core::duration::HumanDuration;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::StepMessage;
use tasker_core::state::{StepEvent, StepState, TaskEvent, TaskState};
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::tasks::{self, move_task, settle};
use super::transitions::{self, Transition};
use super::{Conn, Sent, db, queue};
use crate::json::{parse, raw};

/// What readiness evaluation and enqueueing need of a step.
pub(crate) struct EvalStep {
    pub id: StepId,
    pub name: String,
    pub state: StepState,
    pub handler: String,
    pub queue: String,
    pub attempts: u32,
}

/// The task's steps in position order.
pub(crate) async fn load_for_evaluation(
    conn: &mut Conn,
    task_id: TaskId,
) -> StoreResult<Vec<EvalStep>> {
    let rows = sqlx::query(
        "SELECT id, name, state, handler, queue, attempts FROM steps WHERE task_id = ? ORDER BY position",
    )
    .bind(task_id.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            Ok(EvalStep {
                id: StepId(r.get(0)),
                name: r.get(1),
                state: parse(r.get::<&str, _>(2))?,
                handler: r.get(3),
                queue: r.get(4),
                attempts: r.get::<i64, _>(5) as u32,
            })
        })
        .collect()
}

/// `(parent, child)` positions.
pub(crate) async fn load_edges(
    conn: &mut Conn,
    task_id: TaskId,
) -> StoreResult<Vec<(usize, usize)>> {
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

/// Applies `event` to a step in state `from` with no other change: compare-and-set
/// plus transition.
pub(crate) async fn move_step(
    conn: &mut Conn,
    task_id: TaskId,
    step_id: StepId,
    from: StepState,
    event: StepEvent,
    reason: &str,
    now: Timestamp,
) -> StoreResult<StepState> {
    let to = from.apply(event)?;
    let done = sqlx::query("UPDATE steps SET state = ? WHERE id = ? AND state = ?")
        .bind(to.as_str())
        .bind(step_id.0)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    check_moved(done.rows_affected(), step_id, from)?;
    record(conn, task_id, step_id, from, to, reason, now).await?;
    Ok(to)
}

fn check_moved(rows: u64, step_id: StepId, from: StepState) -> StoreResult<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "step {step_id} is no longer {from}"
        )))
    }
}

async fn record(
    conn: &mut Conn,
    task_id: TaskId,
    step_id: StepId,
    from: StepState,
    to: StepState,
    reason: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let t = Transition {
        task_id,
        step_id: Some(step_id),
        from: Some(from.as_str()),
        to: to.as_str(),
        reason,
    };
    transitions::append(conn, t, now).await
}

fn step_message(task_id: TaskId, step: &EvalStep, attempt: u32) -> StoreResult<String> {
    let m = StepMessage {
        task_id,
        step_id: step.id,
        attempt,
        handler: step.handler.as_str().into(),
    };
    serde_json::to_string(&m).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Pending → enqueued, with its message sent.
pub(crate) async fn enqueue(
    conn: &mut Conn,
    task_id: TaskId,
    step: &EvalStep,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<()> {
    move_step(
        conn,
        task_id,
        step.id,
        step.state,
        StepEvent::Enqueue,
        "dependencies done",
        now,
    )
    .await?;
    let body = step_message(task_id, step, step.attempts + 1)?;
    queue::send(conn, &step.queue, &body, Duration::ZERO, now, sent).await?;
    Ok(())
}

/// Error → enqueued with fresh attempts, on an operator's request.
pub(crate) async fn operator_retry(
    conn: &mut Conn,
    task_id: TaskId,
    step: &EvalStep,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<()> {
    let to = step.state.apply(StepEvent::Retry)?;
    let done = sqlx::query(
        "UPDATE steps SET state = ?, attempts = 0, error = NULL, started_at = NULL, completed_at = NULL
         WHERE id = ? AND state = ?",
    )
    .bind(to.as_str())
    .bind(step.id.0)
    .bind(step.state.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    check_moved(done.rows_affected(), step.id, step.state)?;
    record(
        conn,
        task_id,
        step.id,
        step.state,
        to,
        "operator retry",
        now,
    )
    .await?;
    let body = step_message(task_id, step, 1)?;
    queue::send(conn, &step.queue, &body, Duration::ZERO, now, sent).await?;
    Ok(())
}

pub(crate) async fn start(
    conn: &mut Conn,
    p: StepStartParams<'_>,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<StepStart> {
    let row = sqlx::query(
        "SELECT s.state, s.attempts, s.max_attempts, s.timeout_ms, s.retry, s.name, s.handler, s.config,
                s.position, t.id, t.namespace, t.name, t.version, t.context, t.state
         FROM steps s JOIN tasks t ON t.id = s.task_id WHERE s.id = ?",
    )
    .bind(p.step_id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::NotFound(format!("step {}", p.step_id)))?;
    let mut state: StepState = parse(row.get::<&str, _>(0))?;
    let attempts = row.get::<i64, _>(1) as u32;
    let max_attempts = row.get::<i64, _>(2) as u32;
    let timeout = Duration::from_millis(row.get::<i64, _>(3) as u64);
    let task_id = TaskId(row.get(9));

    let (event, reason) = match state {
        StepState::Enqueued => (StepEvent::Start, format!("attempt {}", attempts + 1)),
        StepState::WaitingForRetry => {
            state = move_step(
                conn,
                task_id,
                p.step_id,
                state,
                StepEvent::RetryDue,
                "retry delay elapsed",
                now,
            )
            .await?;
            (StepEvent::Start, format!("attempt {}", attempts + 1))
        }
        StepState::InProgress if attempts >= max_attempts => {
            let reason = format!(
                "worker lost during attempt {attempts} of {max_attempts} (visibility timeout expired); message moved to dead letters"
            );
            queue::dead_letter(conn, p.queue, p.msg_id, &reason, now).await?;
            fail(
                conn,
                task_id,
                p.step_id,
                state,
                StepEvent::DeadLetter,
                &reason,
                now,
            )
            .await?;
            let task_state: TaskState = parse(row.get::<&str, _>(14))?;
            settle(conn, task_id, task_state, now, sent).await?;
            return Ok(StepStart::DeadLettered { attempts });
        }
        StepState::InProgress => (
            StepEvent::Reclaim,
            format!(
                "attempt {}: worker lost during attempt {attempts} (visibility timeout expired)",
                attempts + 1
            ),
        ),
        other => {
            queue::delete(conn, p.queue, p.msg_id).await?;
            return Ok(StepStart::Skipped { state: other });
        }
    };
    let to = state.apply(event)?;
    let done = sqlx::query(
        "UPDATE steps SET state = ?, attempts = ?, started_at = ?, completed_at = NULL
         WHERE id = ? AND state = ? AND attempts = ?",
    )
    .bind(to.as_str())
    .bind(i64::from(attempts + 1))
    .bind(now.0)
    .bind(p.step_id.0)
    .bind(state.as_str())
    .bind(i64::from(attempts))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    check_moved(done.rows_affected(), p.step_id, state)?;
    record(conn, task_id, p.step_id, state, to, &reason, now).await?;
    queue::set_vt(conn, p.queue, p.msg_id, now.after(timeout + p.grace)).await?;

    let position: i64 = row.get(8);
    let parents = sqlx::query(
        "SELECT p.name, COALESCE(p.results, 'null') FROM step_edges e
         JOIN steps p ON p.task_id = e.task_id AND p.position = e.parent
         WHERE e.task_id = ? AND e.child = ? ORDER BY p.position",
    )
    .bind(task_id.0)
    .bind(position)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| Ok((r.get(0), raw(r.get(1))?)))
    .collect::<StoreResult<Vec<(String, Box<RawValue>)>>>()?;

    let retry: RetryPolicy = serde_json::from_str(row.get::<&str, _>(4))
        .map_err(|e| StoreError::Corrupt(format!("retry policy: {e}")))?;
    Ok(StepStart::Run(Box::new(StepExecution {
        task_id,
        step_id: p.step_id,
        attempt: attempts + 1,
        namespace: row.get(10),
        task_name: row.get(11),
        task_version: row.get(12),
        step_name: row.get(5),
        handler: row.get(6),
        config: raw(row.get(7))?,
        context: raw(row.get(13))?,
        parents,
        retry,
        timeout,
    })))
}

/// Moves a step to error with its message, by `event` (a failure or a dead letter).
async fn fail(
    conn: &mut Conn,
    task_id: TaskId,
    step_id: StepId,
    from: StepState,
    event: StepEvent,
    error: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let to = from.apply(event)?;
    let done = sqlx::query(
        "UPDATE steps SET state = ?, error = ?, completed_at = ? WHERE id = ? AND state = ?",
    )
    .bind(to.as_str())
    .bind(error)
    .bind(now.0)
    .bind(step_id.0)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    check_moved(done.rows_affected(), step_id, from)?;
    record(conn, task_id, step_id, from, to, error, now).await
}

pub(crate) async fn finish(
    conn: &mut Conn,
    p: StepFinishParams<'_>,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<StepFinished> {
    let row =
        sqlx::query("SELECT state, attempts, task_id, handler, queue FROM steps WHERE id = ?")
            .bind(p.step_id.0)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("step {}", p.step_id)))?;
    let state: StepState = parse(row.get::<&str, _>(0))?;
    let attempts = row.get::<i64, _>(1) as u32;
    if state != StepState::InProgress || attempts != p.attempt {
        return Ok(StepFinished::Stale { state });
    }
    let task_id = TaskId(row.get(2));
    queue::delete(conn, p.queue, p.msg_id).await?;
    let step_state = match p.outcome {
        StepOutcome::Succeeded { results } => {
            let to = state.apply(StepEvent::Succeed)?;
            let done = sqlx::query(
                "UPDATE steps SET state = ?, results = ?, error = NULL, completed_at = ? WHERE id = ? AND state = ?",
            )
            .bind(to.as_str())
            .bind(results.get())
            .bind(now.0)
            .bind(p.step_id.0)
            .bind(state.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            check_moved(done.rows_affected(), p.step_id, state)?;
            record(conn, task_id, p.step_id, state, to, "succeeded", now).await?;
            to
        }
        StepOutcome::Retry { error, delay } => {
            let to = state.apply(StepEvent::FailRetryable)?;
            let done = sqlx::query("UPDATE steps SET state = ?, error = ?, completed_at = ? WHERE id = ? AND state = ?")
                .bind(to.as_str())
                .bind(error)
                .bind(now.0)
                .bind(p.step_id.0)
                .bind(state.as_str())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            check_moved(done.rows_affected(), p.step_id, state)?;
            let reason = format!("retry in {}: {error}", HumanDuration(delay));
            record(conn, task_id, p.step_id, state, to, &reason, now).await?;
            let step = EvalStep {
                id: p.step_id,
                name: String::new(),
                state: to,
                handler: row.get(3),
                queue: row.get(4),
                attempts,
            };
            let body = step_message(task_id, &step, attempts + 1)?;
            queue::send(conn, &step.queue, &body, delay, now, sent).await?;
            to
        }
        StepOutcome::Failed { error } => {
            fail(
                conn,
                task_id,
                p.step_id,
                state,
                StepEvent::FailPermanent,
                error,
                now,
            )
            .await?;
            StepState::Error
        }
    };
    let task_state = tasks::state_of(conn, task_id).await?;
    let (enqueued, task_state) = if step_state == StepState::WaitingForRetry {
        (0, task_state)
    } else {
        settle(conn, task_id, task_state, now, sent).await?
    };
    Ok(StepFinished::Applied {
        step_state,
        enqueued,
        task_state,
    })
}

pub(crate) async fn resolve(
    conn: &mut Conn,
    step_id: StepId,
    results: &RawValue,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<TaskState> {
    let row = sqlx::query("SELECT state, task_id, name FROM steps WHERE id = ?")
        .bind(step_id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("step {step_id}")))?;
    let state: StepState = parse(row.get::<&str, _>(0))?;
    let task_id = TaskId(row.get(1));
    let to = state.apply(StepEvent::Resolve)?;
    let done = sqlx::query(
        "UPDATE steps SET state = ?, results = ?, completed_at = ? WHERE id = ? AND state = ?",
    )
    .bind(to.as_str())
    .bind(results.get())
    .bind(now.0)
    .bind(step_id.0)
    .bind(state.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    check_moved(done.rows_affected(), step_id, state)?;
    record(
        conn,
        task_id,
        step_id,
        state,
        to,
        "resolved by an operator",
        now,
    )
    .await?;
    let mut task_state = tasks::state_of(conn, task_id).await?;
    if task_state == TaskState::Error {
        let name: String = row.get(2);
        let reason = format!("step `{name}` resolved by an operator");
        task_state = move_task(conn, task_id, task_state, TaskEvent::Resume, &reason, now).await?;
    }
    Ok(settle(conn, task_id, task_state, now, sent).await?.1)
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
    let mut edges = load_edges(conn, task_id).await?;
    edges.sort_unstable();
    for (parent, child) in edges {
        let name = steps[parent].name.clone();
        steps[child].depends_on.push(name);
    }
    Ok(steps)
}
