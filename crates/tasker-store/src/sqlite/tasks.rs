//! The `tasks` table (with the steps and edges a task is created with), and the
//! evaluation that moves a task forward: [`settle`].

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tasker_core::id::{StepId, TaskId};
use tasker_core::message::{TASK_QUEUE, TaskRequest};
use tasker_core::readiness::{self, Outcome};
use tasker_core::state::{StepEvent, StepState, TaskEvent, TaskState};
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::transitions::{self, Transition};
use super::{Conn, Sent, db, queue, steps};
use crate::json::{parse, raw};

pub(crate) async fn create(
    conn: &mut Conn,
    params: TaskCreateParams<'_>,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<TaskCreated> {
    if let Some(key) = params.idempotency_key {
        let existing: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
        if let Some(id) = existing {
            return Ok(TaskCreated {
                task_id: TaskId(id),
                created: false,
            });
        }
    }
    let t = params.template;
    let task_id = TaskId::new();
    sqlx::query(
        "INSERT INTO tasks (id, namespace, name, version, state, context, idempotency_key, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
    )
    .bind(task_id.0)
    .bind(&t.namespace)
    .bind(&t.name)
    .bind(&t.version)
    .bind(params.context.get())
    .bind(params.idempotency_key)
    .bind(now.0)
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    for (position, step) in t.steps.iter().enumerate() {
        let retry =
            serde_json::to_string(&step.retry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO steps (id, task_id, position, name, handler, queue, config, retry, max_attempts, timeout_ms, state)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
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
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    for (parent, child) in t.edges() {
        sqlx::query("INSERT INTO step_edges (task_id, parent, child) VALUES (?, ?, ?)")
            .bind(task_id.0)
            .bind(parent as i64)
            .bind(child as i64)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let transition = Transition {
        task_id,
        step_id: None,
        from: None,
        to: TaskState::Pending.as_str(),
        reason: "created",
    };
    transitions::append(conn, transition, now).await?;
    let request = serde_json::to_string(&TaskRequest { task_id })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    queue::send(
        conn,
        TASK_QUEUE,
        &request,
        std::time::Duration::ZERO,
        now,
        sent,
    )
    .await?;
    Ok(TaskCreated {
        task_id,
        created: true,
    })
}

pub(crate) async fn start(
    conn: &mut Conn,
    params: TaskStartParams,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<TaskStarted> {
    let state = state_of(conn, params.task_id).await?;
    let mut started = TaskStarted {
        started: false,
        enqueued: 0,
        state,
    };
    if state == TaskState::Pending {
        move_task(
            conn,
            params.task_id,
            state,
            TaskEvent::Start,
            "started",
            now,
        )
        .await?;
        let (enqueued, state) =
            settle(conn, params.task_id, TaskState::InProgress, now, sent).await?;
        started = TaskStarted {
            started: true,
            enqueued,
            state,
        };
    }
    queue::delete(conn, TASK_QUEUE, params.msg_id).await?;
    Ok(started)
}

pub(crate) async fn cancel(
    conn: &mut Conn,
    task_id: TaskId,
    reason: &str,
    now: Timestamp,
) -> StoreResult<TaskState> {
    let state = state_of(conn, task_id).await?;
    let next = state.apply(TaskEvent::Cancel)?;
    for step in steps::load_for_evaluation(conn, task_id).await? {
        if step.state.apply(StepEvent::Cancel).is_ok() {
            steps::move_step(
                conn,
                task_id,
                step.id,
                step.state,
                StepEvent::Cancel,
                reason,
                now,
            )
            .await?;
        }
    }
    move_task(conn, task_id, state, TaskEvent::Cancel, reason, now).await?;
    Ok(next)
}

pub(crate) async fn retry(
    conn: &mut Conn,
    task_id: TaskId,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<usize> {
    let state = state_of(conn, task_id).await?;
    if state != TaskState::Error {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is {state}: only a task in error can be retried"
        )));
    }
    move_task(
        conn,
        task_id,
        state,
        TaskEvent::Resume,
        "operator retry",
        now,
    )
    .await?;
    let mut enqueued = 0;
    for step in steps::load_for_evaluation(conn, task_id).await? {
        if step.state == StepState::Error {
            steps::operator_retry(conn, task_id, &step, now, sent).await?;
            enqueued += 1;
        }
    }
    Ok(enqueued)
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

pub(crate) async fn state_of(conn: &mut Conn, task_id: TaskId) -> StoreResult<TaskState> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
        .bind(task_id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    parse(&state.ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?)
}

/// Applies `event` to a task in state `from`: compare-and-set plus transition.
pub(crate) async fn move_task(
    conn: &mut Conn,
    task_id: TaskId,
    from: TaskState,
    event: TaskEvent,
    reason: &str,
    now: Timestamp,
) -> StoreResult<TaskState> {
    let to = from.apply(event)?;
    let done = sqlx::query("UPDATE tasks SET state = ?, updated_at = ? WHERE id = ? AND state = ?")
        .bind(to.as_str())
        .bind(now.0)
        .bind(task_id.0)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!(
            "task {task_id} is no longer {from}"
        )));
    }
    let transition = Transition {
        task_id,
        step_id: None,
        from: Some(from.as_str()),
        to: to.as_str(),
        reason,
    };
    transitions::append(conn, transition, now).await?;
    Ok(to)
}

/// Evaluates the task's readiness and applies it: enqueues the steps that became
/// ready and, if the task is in progress and finished, completes or fails it.
/// Returns the number of steps enqueued and the task's state.
pub(crate) async fn settle(
    conn: &mut Conn,
    task_id: TaskId,
    task_state: TaskState,
    now: Timestamp,
    sent: &mut Sent,
) -> StoreResult<(usize, TaskState)> {
    if task_state != TaskState::InProgress {
        return Ok((0, task_state));
    }
    let steps = steps::load_for_evaluation(conn, task_id).await?;
    let edges = steps::load_edges(conn, task_id).await?;
    let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
    let eval = readiness::evaluate(&states, &edges);
    for &i in &eval.ready {
        steps::enqueue(conn, task_id, &steps[i], now, sent).await?;
    }
    let state = match eval.outcome {
        Outcome::Complete => {
            move_task(
                conn,
                task_id,
                task_state,
                TaskEvent::Complete,
                "all steps complete",
                now,
            )
            .await?
        }
        Outcome::Failed => {
            let failed = steps
                .iter()
                .find(|s| s.state == StepState::Error)
                .map(|s| s.name.as_str())
                .unwrap_or("a step");
            let reason = format!("step `{failed}` failed and nothing else can progress");
            move_task(conn, task_id, task_state, TaskEvent::Fail, &reason, now).await?
        }
        Outcome::Running => task_state,
    };
    Ok((eval.ready.len(), state))
}
