//! Finished work for benchmarks: fills the tables with `tasks` complete tasks of a
//! template, as an installation that has run for a while holds, generated inside the
//! database (a few statements, however many rows).

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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let statements = [
            "CREATE TEMP TABLE IF NOT EXISTS preload (id BLOB PRIMARY KEY)",
            "DELETE FROM temp.preload",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO temp.preload SELECT randomblob(16) FROM n",
            "INSERT INTO tasks (id, namespace, name, version, state, context, created_at, updated_at,
                                step_count, steps_left, steps_active)
             SELECT id, ?2, ?3, ?4, 'complete', '{}', ?5, ?5, json_array_length(?6), 0, 0 FROM temp.preload",
            "INSERT INTO steps (id, task_id, position, name, handler, queue, config, retry, max_attempts,
                                timeout_ms, state, attempts, results, started_at, completed_at, waiting_on)
             SELECT randomblob(16), p.id, s.key, json_extract(s.value, '$[0]'), json_extract(s.value, '$[1]'),
                    json_extract(s.value, '$[2]'), '{}', json_extract(s.value, '$[3]'), 3, 30000,
                    'complete', 1, '{}', ?5, ?5, 0
             FROM temp.preload p CROSS JOIN json_each(?6) s",
            "INSERT INTO step_edges (task_id, parent, child)
             SELECT p.id, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]')
             FROM temp.preload p CROSS JOIN json_each(?7) e",
            "INSERT INTO transitions (task_id, step_id, from_state, to_state, reason, at)
             SELECT s.task_id, s.id, t.value ->> '$[0]', t.value ->> '$[1]', 'preloaded', ?5
             FROM steps s JOIN temp.preload p ON p.id = s.task_id
             CROSS JOIN json_each('[[\"pending\",\"enqueued\"],[\"enqueued\",\"in_progress\"],[\"in_progress\",\"complete\"]]') t",
        ];
        for sql in statements {
            // SQLite counts a statement's parameters up to the highest `?N` it names.
            let params = (1..=7)
                .rev()
                .find(|n| sql.contains(&format!("?{n}")))
                .unwrap_or(0);
            let mut q = sqlx::query(sql);
            if params >= 1 {
                q = q.bind(tasks as i64);
            }
            if params >= 4 {
                q = q
                    .bind(&template.namespace)
                    .bind(&template.name)
                    .bind(&template.version);
            }
            if params >= 5 {
                q = q.bind(now);
            }
            if params >= 6 {
                q = q.bind(&steps);
            }
            if params >= 7 {
                q = q.bind(&edges);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(tasks * template.steps.len() as u64)
    }
}
