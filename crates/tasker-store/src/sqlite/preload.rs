//! Finished work for benchmarks: fills the tables with `tasks` complete tasks of a
//! template, as an installation that has run for a while holds, generated inside the
//! database (a few statements, however many rows).

use rusqlite::{TransactionBehavior, named_params};
use tasker_core::store::{StoreError, StoreResult};
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use super::{SqliteStore, db};

impl SqliteStore {
    /// Inserts `tasks` complete tasks of `template` with their steps, edges and three
    /// transitions per step; returns the steps inserted.
    pub async fn preload_finished(&self, template: &TaskTemplate, tasks: u64) -> StoreResult<u64> {
        let steps = crate::rows::preload_steps(template)?;
        let edges = serde_json::to_string(&template.edges())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = Timestamp::now().0;
        let mut conn = self.conn.lock().await;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS preload (id BLOB PRIMARY KEY); DELETE FROM temp.preload;",
        )
        .map_err(db)?;
        tx.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :tasks)
             INSERT INTO temp.preload SELECT randomblob(16) FROM n",
            named_params! {":tasks": tasks as i64},
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO tasks (id, namespace, name, version, state, context, created_at, updated_at,
                                step_count, steps_left, steps_active)
             SELECT id, :namespace, :name, :version, 'complete', '{}', :now, :now, json_array_length(:steps), 0, 0
             FROM temp.preload",
            named_params! {
                ":namespace": template.namespace,
                ":name": template.name,
                ":version": template.version,
                ":now": now,
                ":steps": steps,
            },
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO steps (id, task_id, position, name, handler, queue, config, retry, max_attempts,
                                timeout_ms, state, attempts, results, started_at, completed_at, waiting_on)
             SELECT randomblob(16), p.id, s.key, s.value ->> '$[0]', s.value ->> '$[1]', s.value ->> '$[2]',
                    '{}', s.value ->> '$[3]', 3, 30000, 'complete', 1, '{}', :now, :now, 0
             FROM temp.preload p CROSS JOIN json_each(:steps) s",
            named_params! {":now": now, ":steps": steps},
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO step_edges (task_id, parent, child)
             SELECT p.id, e.value ->> '$[0]', e.value ->> '$[1]'
             FROM temp.preload p CROSS JOIN json_each(:edges) e",
            named_params! {":edges": edges},
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO transitions (task_id, step_id, from_state, to_state, reason, at)
             SELECT s.task_id, s.id, t.value ->> '$[0]', t.value ->> '$[1]', 'preloaded', :now
             FROM steps s JOIN temp.preload p ON p.id = s.task_id
             CROSS JOIN json_each('[[\"pending\",\"enqueued\"],[\"enqueued\",\"in_progress\"],[\"in_progress\",\"complete\"]]') t",
            named_params! {":now": now},
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        // One huge transaction leaves a huge write-ahead log; an installation's log is
        // checkpointed as it goes, so start the measurement from a checkpointed file.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(db)?;
        Ok(tasks * template.steps.len() as u64)
    }
}
