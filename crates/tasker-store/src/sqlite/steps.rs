//! The `steps` and `step_edges` tables.
//!
//! Where the PostgreSQL file changes a batch with one statement over arrays and appends
//! the transitions in that statement, this one loops over the rows (a statement costs
//! microseconds in process) and appends each transition with `transitions::append`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rusqlite::{OptionalExtension, params};
use serde_json::value::RawValue;
use tasker_core::id::{StepId, TaskId};
use tasker_core::state::StepState;
use tasker_core::store::*;
use tasker_core::time::Timestamp;

use super::{Conn, SqliteTx, db, decode_all, transitions};
use crate::primitives::{
    EvalStep, Expanded, InstanceView, Move, Outcome, StepRow, StepRows, Transition,
};
use crate::rows::{self, eval_step, link_parents, step_record, step_row};

/// The columns of an [`EvalStep`], for `concat!` into static statements.
macro_rules! eval_columns {
    () => {
        "id, task_id, position, state, queue, waiting_on, live_parents, wait_signal, for_each"
    };
}

fn eval_steps(conn: &Conn, sql: &str, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
    let mut s = conn.prepare_cached(sql).map_err(db)?;
    decode_all(&mut s, [task_id.0], |r| eval_step(r))
}

fn edges(conn: &Conn, task_id: TaskId) -> StoreResult<Vec<(usize, usize)>> {
    let mut s = conn
        .prepare_cached("SELECT parent, child FROM step_edges WHERE task_id = ?")
        .map_err(db)?;
    let rows = s
        .query_map([task_id.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

fn get(conn: &Conn, step_id: StepId) -> StoreResult<Option<StepRow>> {
    let mut s = conn
        .prepare_cached(
            "SELECT task_id, name, queue, state, attempts, max_attempts, timeout_ms, position, decides,
                    wait_signal, instance_of, instances_left, rate_limit, rate_booked
             FROM steps WHERE id = ?",
        )
        .map_err(db)?;
    Ok(decode_all(&mut s, [step_id.0], |r| step_row(r))?.pop())
}

fn execution(conn: &Conn, step_id: StepId) -> StoreResult<StepExecution> {
    let mut s = conn
        .prepare_cached(
            "SELECT s.task_id, s.attempts, t.namespace, t.name, t.version, s.name, s.handler, s.config,
                    COALESCE(f.instance_context, t.context),
                    COALESCE(f.instance_parents,
                      (SELECT json_group_array(json_array(p.name, json(COALESCE(p.results, 'null'))))
                       FROM (SELECT p.name, p.results FROM step_edges e
                             CROSS JOIN steps p ON p.task_id = e.task_id AND p.position = e.parent
                             WHERE e.task_id = s.task_id AND e.child = s.position ORDER BY e.parent) p)),
                    s.retry, s.timeout_ms, s.decides, s.item_index, s.item
             FROM steps s JOIN tasks t ON t.id = s.task_id
             LEFT JOIN steps f ON f.task_id = s.task_id AND f.position = s.instance_of
             WHERE s.id = ?",
        )
        .map_err(db)?;
    decode_all(&mut s, [step_id.0], |r| rows::execution(r, step_id))?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("step {step_id}")))
}

/// Appends the transition of `m` if its compare-and-set changed a row.
fn recorded(conn: &Conn, m: &Move<'_>, rows: usize, now: Timestamp) -> StoreResult<u64> {
    if rows == 1 {
        let t = Transition {
            task_id: m.task_id,
            step_id: Some(m.step_id),
            from: Some(m.from.as_str()),
            to: m.to.as_str(),
            reason: m.reason,
        };
        transitions::append(conn, t, now)?;
    }
    Ok(rows as u64)
}

/// The step's ancestors, walking its task's edges up from it (a recursive query).
pub(crate) fn ancestors(
    conn: &Conn,
    step_id: StepId,
) -> StoreResult<Vec<(std::sync::Arc<str>, Box<serde_json::value::RawValue>)>> {
    let mut s = conn
        .prepare_cached(
            "WITH RECURSIVE me AS (SELECT task_id, COALESCE(instance_of, position) AS position
                                   FROM steps WHERE id = ?),
                  up(position) AS (
                      SELECT e.parent FROM step_edges e JOIN me
                          ON e.task_id = me.task_id AND e.child = me.position
                      UNION
                      SELECT e.parent FROM step_edges e JOIN up ON e.child = up.position
                      JOIN me ON e.task_id = me.task_id)
             SELECT s.name, s.results FROM steps s JOIN me ON s.task_id = me.task_id
             JOIN up ON s.position = up.position ORDER BY s.position",
        )
        .map_err(db)?;
    decode_all(&mut s, [step_id.0], |r| rows::ancestor(r))
}

/// The task's steps for reports, with `depends_on` rebuilt from the edges.
pub(crate) fn list(conn: &Conn, task_id: TaskId) -> StoreResult<Vec<StepRecord>> {
    let mut s = conn
        .prepare_cached(
            "SELECT id, position, name, handler, queue, state, attempts, max_attempts, results, error,
                    started_at, completed_at, wait_signal, rate_limit, rate_booked
             FROM steps WHERE task_id = ? ORDER BY position",
        )
        .map_err(db)?;
    let mut steps = decode_all(&mut s, [task_id.0], |r| step_record(r, task_id))?;
    link_parents(&mut steps, edges(conn, task_id)?);
    Ok(steps)
}

impl StepRows for SqliteTx<'_> {
    async fn task_failed_step(&mut self, task_id: TaskId) -> StoreResult<Option<String>> {
        let conn = self.conn;
        conn.prepare_cached(
            "SELECT name FROM steps WHERE task_id = ? AND state = 'error' ORDER BY position LIMIT 1",
        )
        .and_then(|mut s| s.query_row([task_id.0], |r| r.get(0)).optional())
        .map_err(db)
    }

    async fn steps_of_task(&mut self, task_id: TaskId) -> StoreResult<Vec<EvalStep>> {
        let conn = self.conn;
        const SQL: &str = concat!(
            "SELECT ",
            eval_columns!(),
            " FROM steps WHERE task_id = ? ORDER BY position"
        );
        eval_steps(conn, SQL, task_id)
    }

    async fn steps_unblocked(&mut self, tasks: &[TaskId]) -> StoreResult<Vec<EvalStep>> {
        let conn = self.conn;
        const SQL: &str = concat!(
            "SELECT ",
            eval_columns!(),
            " FROM steps",
            " WHERE task_id = ? AND state = 'pending' AND waiting_on = 0 ORDER BY position"
        );
        let mut ids = tasks.to_vec();
        ids.sort_unstable();
        let mut out = Vec::new();
        for id in ids {
            out.extend(eval_steps(conn, SQL, id)?);
        }
        Ok(out)
    }

    /// A child of two steps of `done` is decremented twice and returned once, as it ends.
    async fn steps_release_children(
        &mut self,
        done: &[(TaskId, u32, bool)],
    ) -> StoreResult<Vec<EvalStep>> {
        let conn = self.conn;
        const SQL: &str = concat!(
            "UPDATE steps SET waiting_on = waiting_on - 1, live_parents = live_parents + ?3",
            " WHERE task_id = ?1 AND position IN (SELECT child FROM step_edges WHERE task_id = ?1 AND parent = ?2)",
            " RETURNING ",
            eval_columns!()
        );
        let mut s = conn.prepare_cached(SQL).map_err(db)?;
        let mut children: Vec<EvalStep> = Vec::new();
        let mut seen: HashMap<StepId, usize> = HashMap::new();
        for (task_id, position, live) in done {
            let params = params![task_id.0, position, i64::from(*live)];
            for child in decode_all(&mut s, params, |r| eval_step(r))? {
                match seen.entry(child.id) {
                    Entry::Occupied(at) => children[*at.get()] = child,
                    Entry::Vacant(at) => {
                        at.insert(children.len());
                        children.push(child);
                    }
                }
            }
        }
        Ok(children)
    }

    /// The rows of `steps`; nothing to lock, SQLite having one writer.
    async fn steps_get(
        &mut self,
        steps: &[StepId],
        _lock: bool,
    ) -> StoreResult<Vec<(StepId, StepRow)>> {
        let conn = self.conn;
        let mut out = Vec::with_capacity(steps.len());
        for &id in steps {
            if let Some(row) = get(conn, id)? {
                out.push((id, row));
            }
        }
        Ok(out)
    }

    /// The parents' results are found from the step's edges (`CROSS JOIN` fixes that join
    /// order in SQLite), so loading a step costs its parents, not the size of its task.
    async fn steps_execution(&mut self, steps: &[StepId]) -> StoreResult<Vec<StepExecution>> {
        let conn = self.conn;
        steps.iter().map(|&id| execution(conn, id)).collect()
    }

    async fn step_move(&mut self, m: Move<'_>) -> StoreResult<u64> {
        let conn = self.conn;
        let now = self.now;
        let rows = conn
            .prepare_cached("UPDATE steps SET state = ? WHERE id = ? AND state = ?")
            .and_then(|mut s| s.execute(params![m.to.as_str(), m.step_id.0, m.from.as_str()]))
            .map_err(db)?;
        recorded(conn, &m, rows, now)
    }

    async fn steps_begin_attempt(
        &mut self,
        attempts: &[(Move<'_>, u32)],
    ) -> StoreResult<Vec<StepId>> {
        let conn = self.conn;
        let now = self.now;
        let mut s = conn
            .prepare_cached(
                "UPDATE steps SET state = ?, attempts = ?, started_at = ?, completed_at = NULL
                 WHERE id = ? AND state = ? AND attempts = ?",
            )
            .map_err(db)?;
        let mut started = Vec::with_capacity(attempts.len());
        for (m, attempts) in attempts {
            let rows = s
                .execute(params![
                    m.to.as_str(),
                    attempts + 1,
                    now.0,
                    m.step_id.0,
                    m.from.as_str(),
                    attempts
                ])
                .map_err(db)?;
            if recorded(conn, m, rows, now)? == 1 {
                started.push(m.step_id);
            }
        }
        Ok(started)
    }

    async fn steps_set_outcome(
        &mut self,
        outcomes: &[(Move<'_>, Outcome<'_>)],
    ) -> StoreResult<u64> {
        let conn = self.conn;
        let now = self.now;
        let mut s = conn
            .prepare_cached(
                "UPDATE steps SET state = ?, results = COALESCE(?, results), error = ?, completed_at = ?
                 WHERE id = ? AND state = ?",
            )
            .map_err(db)?;
        let mut changed = 0;
        for (m, outcome) in outcomes {
            let rows = s
                .execute(params![
                    m.to.as_str(),
                    outcome.results.map(RawValue::get),
                    outcome.error,
                    now.0,
                    m.step_id.0,
                    m.from.as_str()
                ])
                .map_err(db)?;
            changed += recorded(conn, m, rows, now)?;
        }
        Ok(changed)
    }

    async fn step_reset(&mut self, m: Move<'_>) -> StoreResult<u64> {
        let conn = self.conn;
        let now = self.now;
        let rows = conn
            .prepare_cached(
                "UPDATE steps SET state = ?, attempts = 0, results = NULL, error = NULL,
                        started_at = NULL, completed_at = NULL
                 WHERE id = ? AND state = ?",
            )
            .and_then(|mut s| s.execute(params![m.to.as_str(), m.step_id.0, m.from.as_str()]))
            .map_err(db)?;
        recorded(conn, &m, rows, now)
    }

    async fn steps_insert_instances(
        &mut self,
        step: &EvalStep,
        items: &[&RawValue],
        view: InstanceView<'_>,
        reason: &str,
    ) -> StoreResult<Vec<StepId>> {
        let conn = self.conn;
        let now = self.now;
        let task_id = step.task_id;
        let first: i64 = conn
            .prepare_cached("SELECT max(position) + 1 FROM steps WHERE task_id = ?")
            .and_then(|mut s| s.query_row([task_id.0], |r| r.get(0)))
            .map_err(db)?;
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO steps (id, task_id, position, name, handler, queue, config, retry, max_attempts,
                                    timeout_ms, state, waiting_on, instance_of, item_index, item, rate_limit)
                 SELECT ?, task_id, ?, name || '[' || ? || ']', handler, queue, config, retry, max_attempts,
                        timeout_ms, 'enqueued', 0, position, ?, ?, rate_limit
                 FROM steps WHERE id = ?",
            )
            .map_err(db)?;
        let mut ids = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let id = StepId::new();
            insert
                .execute(params![
                    id.0,
                    first + index as i64,
                    index as i64,
                    index as i64,
                    item.get(),
                    step.id.0
                ])
                .map_err(db)?;
            let t = Transition {
                task_id,
                step_id: Some(id),
                from: None,
                to: StepState::Enqueued.as_str(),
                reason,
            };
            transitions::append(conn, t, now)?;
            ids.push(id);
        }
        let n = items.len() as i64;
        conn.prepare_cached(
            "UPDATE steps SET instances_left = ?, instance_context = ?, instance_parents = ? WHERE id = ?",
        )
        .and_then(|mut s| {
            s.execute(params![n, view.context.get(), view.parents.get(), step.id.0])
        })
        .map_err(db)?;
        conn.prepare_cached("UPDATE tasks SET step_count = step_count + ? WHERE id = ?")
            .and_then(|mut s| s.execute(params![n, task_id.0]))
            .map_err(db)?;
        Ok(ids)
    }

    async fn steps_instances_done(
        &mut self,
        done: &[(TaskId, u32, u32)],
    ) -> StoreResult<Vec<Expanded>> {
        let mut s = self
            .conn
            .prepare_cached(
                "UPDATE steps SET instances_left = instances_left - ?3 WHERE task_id = ?1 AND position = ?2
                 RETURNING id, task_id, position, state, instances_left",
            )
            .map_err(db)?;
        let mut out = Vec::with_capacity(done.len());
        for (task_id, position, n) in done {
            out.extend(decode_all(&mut s, params![task_id.0, position, n], |r| {
                rows::expanded(r)
            })?);
        }
        Ok(out)
    }

    async fn step_instances_failed(&mut self, task_id: TaskId, position: u32) -> StoreResult<u32> {
        self.conn
            .prepare_cached(
                "SELECT count(*) FROM steps WHERE task_id = ? AND instance_of = ? AND state = 'error'",
            )
            .and_then(|mut s| s.query_row(params![task_id.0, position], |r| r.get(0)))
            .map_err(db)
    }

    async fn step_instance_results(
        &mut self,
        task_id: TaskId,
        position: u32,
    ) -> StoreResult<Box<RawValue>> {
        let text: String = self
            .conn
            .prepare_cached(
                "SELECT json_group_array(json(COALESCE(results, 'null')) ORDER BY item_index)
                 FROM steps WHERE task_id = ? AND instance_of = ?",
            )
            .and_then(|mut s| s.query_row(params![task_id.0, position], |r| r.get(0)))
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
            " FROM steps WHERE task_id = ? AND wait_signal = ? AND state = 'waiting' ORDER BY position"
        );
        let mut s = self.conn.prepare_cached(SQL).map_err(db)?;
        decode_all(&mut s, params![task_id.0, name], |r| eval_step(r))
    }

    async fn steps_enqueue(
        &mut self,
        steps: &[(TaskId, StepId)],
        reason: &str,
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
            moved += self.step_move(m).await?;
        }
        Ok(moved)
    }
}
