//! Finished work for benchmarks: fills the tables with `tasks` complete tasks of a
//! template, as an installation that has run for a while holds, generated inside the
//! database (a few statements, however many rows).

use tasker_core::store::{StoreError, StoreResult};
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use super::{PgStore, db};

impl PgStore {
    /// Inserts `tasks` complete tasks of `template` with their steps, edges and three
    /// transitions per step; returns the steps inserted.
    pub async fn preload_finished(&self, template: &TaskTemplate, tasks: u64) -> StoreResult<u64> {
        let steps = crate::rows::preload_steps(template)?;
        let edges = serde_json::to_string(&template.edges())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "CREATE TEMP TABLE preload ON COMMIT DROP AS
             SELECT gen_random_uuid() AS id FROM generate_series(1, $1)",
        )
        .bind(tasks as i64)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO tasker.tasks (id, namespace, name, version, state, context, created_at, updated_at,
                                       step_count, steps_left, steps_active)
             SELECT id, $1, $2, $3, 'complete', '{}', $4, $4, jsonb_array_length($5::jsonb), 0, 0 FROM preload",
        )
        .bind(&template.namespace)
        .bind(&template.name)
        .bind(&template.version)
        .bind(Timestamp::now().0)
        .bind(&steps)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO tasker.steps (id, task_id, position, name, handler, queue, config, retry, max_attempts,
                                       timeout_ms, state, attempts, results, started_at, completed_at, waiting_on)
             SELECT gen_random_uuid(), p.id, s.ord - 1, s.v->>0, s.v->>1, s.v->>2, '{}', s.v->>3, 3, 30000,
                    'complete', 1, '{}', $2, $2, 0
             FROM preload p CROSS JOIN jsonb_array_elements($1::jsonb) WITH ORDINALITY AS s(v, ord)",
        )
        .bind(&steps)
        .bind(Timestamp::now().0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO tasker.step_edges (task_id, parent, child)
             SELECT p.id, (e.v->>0)::int, (e.v->>1)::int
             FROM preload p CROSS JOIN jsonb_array_elements($1::jsonb) AS e(v)",
        )
        .bind(&edges)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
             SELECT s.task_id, s.id, t.f, t.t, 'preloaded', $1
             FROM tasker.steps s JOIN preload p ON p.id = s.task_id
             CROSS JOIN (VALUES ('pending', 'enqueued'), ('enqueued', 'in_progress'),
                                ('in_progress', 'complete')) AS t(f, t)",
        )
        .bind(Timestamp::now().0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        sqlx::query("ANALYZE tasker.tasks, tasker.steps, tasker.step_edges, tasker.transitions")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(tasks * template.steps.len() as u64)
    }
}
