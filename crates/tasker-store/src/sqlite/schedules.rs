//! The `schedules` and `schedule_ticks` tables.

use rusqlite::params;
use tasker_core::id::TaskId;
use tasker_core::store::{ScheduleRecord, StoreResult};
use tasker_core::time::Timestamp;

use super::{Conn, SqliteTx, db, decode_all};
use crate::primitives::ScheduleRows;
use crate::rows::schedule_record;

/// The columns of [`schedule_record`], from `schedules s`.
const SCHEDULE_COLUMNS: &str =
    "s.name, s.namespace, s.template, s.version, s.cron, s.timezone, s.context,
     s.catch_up, s.paused, s.next_fire,
     (SELECT max(fire_at) FROM schedule_ticks t WHERE t.schedule = s.name), s.created_at";

pub(crate) fn list(conn: &Conn) -> StoreResult<Vec<ScheduleRecord>> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules s ORDER BY s.name"
        ))
        .map_err(db)?;
    decode_all(&mut s, [], |r| schedule_record(r))
}

impl ScheduleRows for SqliteTx<'_> {
    async fn schedule_insert(&mut self, s: &ScheduleRecord) -> StoreResult<bool> {
        let done = self
            .conn
            .prepare_cached(
                "INSERT INTO schedules (name, namespace, template, version, cron, timezone, context, catch_up,
                                        paused, next_fire, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.name,
                    s.namespace,
                    s.template,
                    s.version,
                    s.cron,
                    s.timezone,
                    s.context.get(),
                    s.catch_up.as_str(),
                    s.paused,
                    s.next_fire.map(|t| t.0),
                    s.created_at.0
                ])
            })
            .map_err(db)?;
        Ok(done == 1)
    }

    async fn schedule_lock(&mut self, name: &str) -> StoreResult<Option<ScheduleRecord>> {
        let mut s = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules s WHERE s.name = ?"
            ))
            .map_err(db)?;
        let mut rows = s.query([name]).map_err(db)?;
        rows.next().map_err(db)?.map(schedule_record).transpose()
    }

    async fn schedule_set(
        &mut self,
        name: &str,
        paused: bool,
        next_fire: Option<Timestamp>,
    ) -> StoreResult<()> {
        self.conn
            .prepare_cached("UPDATE schedules SET paused = ?2, next_fire = ?3 WHERE name = ?1")
            .and_then(|mut s| s.execute(params![name, paused, next_fire.map(|t| t.0)]))
            .map_err(db)?;
        Ok(())
    }

    async fn schedule_delete(&mut self, name: &str) -> StoreResult<bool> {
        self.conn
            .prepare_cached("DELETE FROM schedule_ticks WHERE schedule = ?")
            .and_then(|mut s| s.execute([name]))
            .map_err(db)?;
        let done = self
            .conn
            .prepare_cached("DELETE FROM schedules WHERE name = ?")
            .and_then(|mut s| s.execute([name]))
            .map_err(db)?;
        Ok(done == 1)
    }

    async fn tick_insert(
        &mut self,
        schedule: &str,
        fire_at: Timestamp,
        task_id: TaskId,
    ) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO schedule_ticks (schedule, fire_at, task_id, fired_at)
                 VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![schedule, fire_at.0, task_id.0, self.now.0]))
            .map_err(db)?;
        Ok(())
    }
}
