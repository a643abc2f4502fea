//! The `tasker.schedules` and `tasker.schedule_ticks` tables.

use tasker_core::id::TaskId;
use tasker_core::store::{ScheduleRecord, StoreResult};
use tasker_core::time::Timestamp;

use super::{Conn, PgTx, db};
use crate::primitives::ScheduleRows;
use crate::rows::schedule_record;

/// The columns of [`schedule_record`], from `tasker.schedules s`.
const SCHEDULE_COLUMNS: &str =
    "s.name, s.namespace, s.template, s.version, s.cron, s.timezone, s.context::text,
     s.catch_up, s.paused::int, s.next_fire,
     (SELECT max(fire_at) FROM tasker.schedule_ticks t WHERE t.schedule = s.name), s.created_at";

pub(crate) async fn list(conn: &mut Conn) -> StoreResult<Vec<ScheduleRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM tasker.schedules s ORDER BY s.name"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter().map(schedule_record).collect()
}

impl ScheduleRows for PgTx<'_> {
    async fn schedule_insert(&mut self, s: &ScheduleRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO tasker.schedules (name, namespace, template, version, cron, timezone, context, catch_up,
                                           paused, next_fire, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8, $9, $10, $11)
             ON CONFLICT DO NOTHING",
        )
        .bind(&s.name)
        .bind(&s.namespace)
        .bind(&s.template)
        .bind(&s.version)
        .bind(&s.cron)
        .bind(&s.timezone)
        .bind(s.context.get())
        .bind(s.catch_up.as_str())
        .bind(s.paused)
        .bind(s.next_fire.map(|t| t.0))
        .bind(s.created_at.0)
        .execute(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn schedule_lock(&mut self, name: &str) -> StoreResult<Option<ScheduleRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM tasker.schedules s WHERE s.name = $1 FOR UPDATE"
        ))
        .bind(name)
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(db)?;
        row.as_ref().map(schedule_record).transpose()
    }

    async fn schedule_set(
        &mut self,
        name: &str,
        paused: bool,
        next_fire: Option<Timestamp>,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE tasker.schedules SET paused = $2, next_fire = $3 WHERE name = $1")
            .bind(name)
            .bind(paused)
            .bind(next_fire.map(|t| t.0))
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn schedule_delete(&mut self, name: &str) -> StoreResult<bool> {
        sqlx::query("DELETE FROM tasker.schedule_ticks WHERE schedule = $1")
            .bind(name)
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        let done = sqlx::query("DELETE FROM tasker.schedules WHERE name = $1")
            .bind(name)
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn tick_insert(
        &mut self,
        schedule: &str,
        fire_at: Timestamp,
        task_id: TaskId,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tasker.schedule_ticks (schedule, fire_at, task_id, fired_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(schedule)
        .bind(fire_at.0)
        .bind(task_id.0)
        .bind(self.now.0)
        .execute(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}
