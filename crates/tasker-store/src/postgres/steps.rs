//! The `tasker.steps` and `tasker.step_edges` tables.

use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::{Conn, PgTx, db};
use crate::primitives::{EvalStep, Expanded, InstanceView, Move, Outcome, StepRow, StepRows};
use crate::rows::{self, Columns, eval_step, link_parents, step_record, step_row};

/// The columns of an [`EvalStep`], for `concat!` into static statements.
macro_rules! eval_columns {
    () => {
        "id, task_id, position, state, queue, waiting_on, live_parents, wait_signal, for_each"
    };
}

async fn eval_steps(
    conn: &mut Conn,
    sql: &'static str,
    task_id: TaskId,
) -> StoreResult<Vec<EvalStep>> {
    let rows = sqlx::query(sql)
        .bind(task_id.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    rows.iter().map(eval_step).collect()
}

pub(crate) async fn edges(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<(usize, usize)>> {
    let rows: Vec<(i32, i32)> =
        sqlx::query_as("SELECT parent, child FROM tasker.step_edges WHERE task_id = $1")
            .bind(task_id.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(p, c)| (p as usize, c as usize))
        .collect())
}

/// A compare-and-set `UPDATE … RETURNING id` of steps, followed by the insert of one
/// transition per row it changed — one statement. `$1`‥`$5` are the transition's task
/// id, from, to, reason and time; the update's own parameters start at `$6`.
macro_rules! with_transition {
    ($update:literal) => {
        concat!(
            "WITH moved AS (",
            $update,
            " RETURNING id) INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
             SELECT $1, id, $2, $3, $4, $5 FROM moved"
        )
    };
}

fn bind_move<'q>(
    sql: &'q str,
    m: &Move<'q>,
    now: Timestamp,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(m.task_id.0)
        .bind(m.from.as_str())
        .bind(m.to.as_str())
        .bind(m.reason)
        .bind(now.0)
}

/// Runs `sql`, a [`with_transition!`] statement on one step (its id `$6`), for `m`.
async fn move_one(conn: &mut Conn, sql: &str, m: Move<'_>, now: Timestamp) -> StoreResult<u64> {
    let done = bind_move(sql, &m, now)
        .bind(m.step_id.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

/// Step moves as the columns of an `UNNEST`.
struct MoveColumns<'a> {
    ids: Vec<uuid::Uuid>,
    tasks: Vec<uuid::Uuid>,
    from: Vec<&'static str>,
    to: Vec<&'static str>,
    reasons: Vec<&'a str>,
}

impl<'a> MoveColumns<'a> {
    fn of(moves: impl ExactSizeIterator<Item = Move<'a>>) -> Self {
        let n = moves.len();
        let mut c = Self {
            ids: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
            from: Vec::with_capacity(n),
            to: Vec::with_capacity(n),
            reasons: Vec::with_capacity(n),
        };
        for m in moves {
            c.ids.push(m.step_id.0);
            c.tasks.push(m.task_id.0);
            c.from.push(m.from.as_str());
            c.to.push(m.to.as_str());
            c.reasons.push(m.reason);
        }
        c
    }
}

/// The step's ancestors, walking its task's edges up from it (a recursive query: one
/// round trip, whatever the depth).
pub(crate) async fn ancestors(
    conn: &mut Conn,
    step_id: StepId,
) -> StoreResult<Vec<(std::sync::Arc<str>, Box<serde_json::value::RawValue>)>> {
    let rows = sqlx::query(
        "WITH RECURSIVE me AS (SELECT task_id, COALESCE(instance_of, position) AS position
                               FROM tasker.steps WHERE id = $1),
              up(position) AS (
                  SELECT e.parent FROM tasker.step_edges e JOIN me
                      ON e.task_id = me.task_id AND e.child = me.position
                  UNION
                  SELECT e.parent FROM tasker.step_edges e JOIN up ON e.child = up.position
                  JOIN me ON e.task_id = me.task_id)
         SELECT s.name, s.results::text FROM tasker.steps s JOIN me ON s.task_id = me.task_id
         JOIN up ON s.position = up.position ORDER BY s.position",
    )
    .bind(step_id.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter().map(rows::ancestor).collect()
}

/// The task's steps for reports, with `depends_on` rebuilt from the edges.
pub(crate) async fn list(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<StepRecord>> {
    let rows = sqlx::query(
        "SELECT id, position, name, handler, queue, state, attempts, max_attempts, results::text, error,
                started_at, completed_at, wait_signal, rate_limit, rate_booked
         FROM tasker.steps WHERE task_id = $1 ORDER BY position",
    )
    .bind(task_id.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut steps = rows
        .iter()
        .map(|r| step_record(r, task_id))
        .collect::<StoreResult<Vec<_>>>()?;
    link_parents(&mut steps, edges(conn, task_id).await?);
    Ok(steps)
}

impl StepRows for PgTx<'_> {
    async fn task_failed_step(&mut self, task_id: TaskId) -> StoreResult<Option<String>> {
        let conn = &mut *self.conn;
        sqlx::query_scalar(
            "SELECT name FROM tasker.steps WHERE task_id = $1 AND state = 'error' ORDER BY position LIMIT 1",
        )
        .bind(task_id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)
    }

    async fn steps_of_task(&mut self, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
        let conn = &mut *self.conn;
        const SQL: &str = concat!(
            "SELECT ",
            eval_columns!(),
            " FROM tasker.steps WHERE task_id = $1 ORDER BY id FOR UPDATE"
        );
        let mut steps = eval_steps(conn, SQL, task_id).await?;
        steps.sort_unstable_by_key(|s| s.position);
        Ok(steps)
    }

    async fn steps_unblocked(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<EvalStep>> {
        let conn = &mut *self.conn;
        const SQL: &str = concat!(
            "SELECT ",
            eval_columns!(),
            " FROM tasker.steps",
            " WHERE task_id = ANY($1) AND state = 'pending' AND waiting_on = 0 ORDER BY task_id, position"
        );
        let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.0).collect();
        let rows = sqlx::query(SQL)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        rows.iter().map(eval_step).collect()
    }

    /// One statement for all of `done`: a child of two of them waits on two parents less.
    async fn steps_release_children(
        &mut self,
        done: &[(TaskId, u32, bool)],
    ) -> StoreResult<Vec<EvalStep>> {
        let conn = &mut *self.conn;
        const SQL: &str = concat!(
            "WITH done AS (SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::int[]) AS d(task_id, parent, live)),",
            " released AS (SELECT e.task_id, e.child, count(*)::int AS n, sum(d.live)::int AS live",
            "   FROM tasker.step_edges e",
            "   JOIN done d ON e.task_id = d.task_id AND e.parent = d.parent GROUP BY e.task_id, e.child)",
            " UPDATE tasker.steps s SET waiting_on = s.waiting_on - r.n, live_parents = s.live_parents + r.live",
            " FROM released r WHERE s.task_id = r.task_id AND s.position = r.child",
            " RETURNING s.id, s.task_id, s.position, s.state, s.queue, s.waiting_on, s.live_parents, s.wait_signal,",
            " s.for_each"
        );
        let tasks: Vec<uuid::Uuid> = done.iter().map(|d| d.0.0).collect();
        let parents: Vec<i32> = done.iter().map(|d| d.1 as i32).collect();
        let live: Vec<i32> = done.iter().map(|d| i32::from(d.2)).collect();
        let rows = sqlx::query(SQL)
            .bind(&tasks)
            .bind(&parents)
            .bind(&live)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        rows.iter().map(eval_step).collect()
    }

    /// The rows of `steps`, in id order; locked (`FOR UPDATE`) if `lock`.
    async fn steps_get(
        &mut self,
        steps: &[StepId],
        lock: bool,
    ) -> StoreResult<Vec<(StepId, StepRow)>> {
        let conn = &mut *self.conn;
        macro_rules! select {
            ($lock:literal) => {
                concat!(
                    "SELECT task_id, name, queue, state, attempts, max_attempts, timeout_ms, position, decides,
                            wait_signal, instance_of, instances_left, rate_limit, rate_booked, id
                     FROM tasker.steps WHERE id = ANY($1) ORDER BY id",
                    $lock
                )
            };
        }
        let sql = if lock {
            select!(" FOR UPDATE")
        } else {
            select!("")
        };
        let ids: Vec<uuid::Uuid> = steps.iter().map(|s| s.0).collect();
        let rows = sqlx::query(sql)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((StepId(r.uuid(14)?), step_row(r)?)))
            .collect()
    }

    async fn steps_execution(&mut self, steps: &[StepId]) -> StoreResult<Vec<StepExecution>> {
        let conn = &mut *self.conn;
        let ids: Vec<uuid::Uuid> = steps.iter().map(|s| s.0).collect();
        let rows = sqlx::query(
            "SELECT s.task_id, s.attempts, t.namespace, t.name, t.version, s.name, s.handler, s.config::text,
                    COALESCE(f.instance_context, t.context)::text,
                    COALESCE(f.instance_parents::text,
                      (SELECT COALESCE(json_agg(json_build_array(p.name, p.results) ORDER BY p.position), '[]')::text
                       FROM tasker.step_edges e
                       JOIN tasker.steps p ON p.task_id = e.task_id AND p.position = e.parent
                       WHERE e.task_id = s.task_id AND e.child = s.position)),
                    s.retry, s.timeout_ms, s.decides, s.item_index, s.item::text, s.id
             FROM tasker.steps s JOIN tasker.tasks t ON t.id = s.task_id
             LEFT JOIN tasker.steps f ON f.task_id = s.task_id AND f.position = s.instance_of
             WHERE s.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| rows::execution(r, StepId(r.uuid(15)?)))
            .collect()
    }

    async fn step_move(&mut self, m: Move<'_>) -> StoreResult<u64> {
        const SQL: &str =
            with_transition!("UPDATE tasker.steps SET state = $3 WHERE id = $6 AND state = $2");
        move_one(self.conn, SQL, m, self.now).await
    }

    /// One statement for all of `attempts`: the compare-and-set of each step (on its state
    /// and attempt count) and its transition. Returns the steps it changed.
    async fn steps_begin_attempt(
        &mut self,
        attempts: &[(Move<'_>, u32)],
    ) -> StoreResult<Vec<StepId>> {
        let conn = &mut *self.conn;
        let now = self.now;
        const SQL: &str = "WITH u AS (
                SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[])
                    AS u(id, task_id, from_state, to_state, reason, attempts)),
            moved AS (
                UPDATE tasker.steps s SET state = u.to_state, attempts = u.attempts + 1, started_at = $7,
                       completed_at = NULL
                FROM u WHERE s.id = u.id AND s.state = u.from_state AND s.attempts = u.attempts
                RETURNING s.id, u.task_id, u.from_state, u.to_state, u.reason)
            INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
            SELECT task_id, id, from_state, to_state, reason, $7 FROM moved RETURNING step_id";
        let moves = MoveColumns::of(attempts.iter().map(|(m, _)| *m));
        let counts: Vec<i32> = attempts.iter().map(|(_, n)| *n as i32).collect();
        let started: Vec<uuid::Uuid> = sqlx::query_scalar(SQL)
            .bind(&moves.ids)
            .bind(&moves.tasks)
            .bind(&moves.from)
            .bind(&moves.to)
            .bind(&moves.reasons)
            .bind(&counts)
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        Ok(started.into_iter().map(StepId).collect())
    }

    /// One statement for all of `outcomes`: the compare-and-set of each step and its
    /// transition.
    async fn steps_set_outcome(
        &mut self,
        outcomes: &[(Move<'_>, Outcome<'_>)],
    ) -> StoreResult<u64> {
        let conn = &mut *self.conn;
        let now = self.now;
        const SQL: &str = "WITH u AS (
                SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                    AS u(id, task_id, from_state, to_state, reason, results, error)),
            moved AS (
                UPDATE tasker.steps s SET state = u.to_state, results = COALESCE(u.results::json, s.results),
                       error = u.error, completed_at = $8
                FROM u WHERE s.id = u.id AND s.state = u.from_state
                RETURNING s.id, u.task_id, u.from_state, u.to_state, u.reason)
            INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
            SELECT task_id, id, from_state, to_state, reason, $8 FROM moved";
        let moves = MoveColumns::of(outcomes.iter().map(|(m, _)| *m));
        let results: Vec<Option<&str>> = outcomes
            .iter()
            .map(|(_, o)| o.results.map(RawValue::get))
            .collect();
        let errors: Vec<Option<&str>> = outcomes.iter().map(|(_, o)| o.error).collect();
        let done = sqlx::query(SQL)
            .bind(&moves.ids)
            .bind(&moves.tasks)
            .bind(&moves.from)
            .bind(&moves.to)
            .bind(&moves.reasons)
            .bind(&results)
            .bind(&errors)
            .bind(now.0)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn step_reset(&mut self, m: Move<'_>) -> StoreResult<u64> {
        const SQL: &str = with_transition!(
            "UPDATE tasker.steps SET state = $3, attempts = 0, results = NULL, error = NULL,
                    started_at = NULL, completed_at = NULL
             WHERE id = $6 AND state = $2"
        );
        move_one(self.conn, SQL, m, self.now).await
    }

    /// One statement for the rows and their transitions, one for the step's count and
    /// the task's.
    async fn steps_insert_instances(
        &mut self,
        step: &EvalStep,
        items: &[&RawValue],
        view: InstanceView<'_>,
        reason: &str,
    ) -> StoreResult<Vec<StepId>> {
        let conn = &mut *self.conn;
        let now = self.now;
        let ids: Vec<uuid::Uuid> = items.iter().map(|_| StepId::new().0).collect();
        let texts: Vec<&str> = items.iter().map(|i| i.get()).collect();
        sqlx::query(
            "WITH first AS (SELECT max(position) + 1 AS at FROM tasker.steps WHERE task_id = $1),
                  made AS (
                      INSERT INTO tasker.steps (id, task_id, position, name, handler, queue, config, retry,
                                                max_attempts, timeout_ms, state, waiting_on, instance_of,
                                                item_index, item, rate_limit)
                      SELECT u.id, s.task_id, first.at + u.n - 1, s.name || '[' || (u.n - 1) || ']', s.handler,
                             s.queue, s.config, s.retry, s.max_attempts, s.timeout_ms, 'enqueued', 0, s.position,
                             u.n - 1, u.item::json, s.rate_limit
                      FROM UNNEST($2::uuid[], $3::text[]) WITH ORDINALITY AS u(id, item, n)
                      CROSS JOIN first JOIN tasker.steps s ON s.id = $4
                      RETURNING id)
             INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
             SELECT $1, id, NULL, 'enqueued', $5, $6 FROM made",
        )
        .bind(step.task_id.0)
        .bind(&ids)
        .bind(&texts)
        .bind(step.id.0)
        .bind(reason)
        .bind(now.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        sqlx::query(
            "WITH parent AS (UPDATE tasker.steps SET instances_left = $3, instance_context = $4::json,
                                                     instance_parents = $5::json
                             WHERE id = $2)
             UPDATE tasker.tasks SET step_count = step_count + $3 WHERE id = $1",
        )
        .bind(step.task_id.0)
        .bind(step.id.0)
        .bind(items.len() as i32)
        .bind(view.context.get())
        .bind(view.parents.get())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(ids.into_iter().map(StepId).collect())
    }

    /// One statement for all of `done`.
    async fn steps_instances_done(
        &mut self,
        done: &[(TaskId, u32, u32)],
    ) -> StoreResult<Vec<Expanded>> {
        let tasks: Vec<uuid::Uuid> = done.iter().map(|d| d.0.0).collect();
        let positions: Vec<i32> = done.iter().map(|d| d.1 as i32).collect();
        let counts: Vec<i32> = done.iter().map(|d| d.2 as i32).collect();
        let rows = sqlx::query(
            "UPDATE tasker.steps s SET instances_left = s.instances_left - u.n
             FROM UNNEST($1::uuid[], $2::int[], $3::int[]) AS u(task_id, position, n)
             WHERE s.task_id = u.task_id AND s.position = u.position
             RETURNING s.id, s.task_id, s.position, s.state, s.instances_left",
        )
        .bind(&tasks)
        .bind(&positions)
        .bind(&counts)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(db)?;
        rows.iter().map(rows::expanded).collect()
    }

    async fn step_instances_failed(&mut self, task_id: TaskId, position: u32) -> StoreResult<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasker.steps WHERE task_id = $1 AND instance_of = $2 AND state = 'error'",
        )
        .bind(task_id.0)
        .bind(position as i32)
        .fetch_one(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(n as u32)
    }

    async fn step_instance_results(
        &mut self,
        task_id: TaskId,
        position: u32,
    ) -> StoreResult<Box<RawValue>> {
        let text: String = sqlx::query_scalar(
            "SELECT COALESCE(json_agg(COALESCE(results, 'null'::json) ORDER BY item_index), '[]')::text
             FROM tasker.steps WHERE task_id = $1 AND instance_of = $2",
        )
        .bind(task_id.0)
        .bind(position as i32)
        .fetch_one(&mut *self.conn)
        .await
        .map_err(db)?;
        rows::raw(text)
    }

    async fn steps_waiting_for(
        &mut self,
        task_id: TaskId,
        name: &str,
    ) -> StoreResult<Vec<EvalStep>> {
        const SQL: &str = concat!(
            "SELECT ",
            eval_columns!(),
            " FROM tasker.steps WHERE task_id = $1 AND wait_signal = $2 AND state = 'waiting'",
            " ORDER BY position"
        );
        let rows = sqlx::query(SQL)
            .bind(task_id.0)
            .bind(name)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(db)?;
        rows.iter().map(eval_step).collect()
    }

    /// One statement for all of `steps` (task, step): pending to enqueued, with transitions.
    async fn steps_enqueue(
        &mut self,
        steps: &[(TaskId, StepId)],
        reason: &str,
    ) -> StoreResult<u64> {
        let conn = &mut *self.conn;
        let now = self.now;
        const SQL: &str = "WITH moved AS (
                UPDATE tasker.steps SET state = 'enqueued'
                WHERE id = ANY($1) AND state = 'pending' RETURNING id, task_id)
            INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
            SELECT task_id, id, 'pending', 'enqueued', $2, $3 FROM moved";
        let ids: Vec<uuid::Uuid> = steps.iter().map(|s| s.1.0).collect();
        let done = sqlx::query(SQL)
            .bind(&ids)
            .bind(reason)
            .bind(now.0)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}
