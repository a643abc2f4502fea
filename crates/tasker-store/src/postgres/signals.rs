//! The `tasker.signals` table: the signals delivered to a task, one per name.

use serde_json::value::RawValue;
use tasker_core::id::TaskId;
use tasker_core::store::StoreResult;

use super::{PgTx, db};
use crate::primitives::SignalRows;
use crate::rows::raw;

impl SignalRows for PgTx<'_> {
    async fn signal_insert(
        &mut self,
        task_id: TaskId,
        name: &str,
        payload: &RawValue,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tasker.signals (task_id, name, payload, delivered_at)
             VALUES ($1, $2, $3::json, $4)",
        )
        .bind(task_id.0)
        .bind(name)
        .bind(payload.get())
        .bind(self.now.0)
        .execute(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn signal_get(
        &mut self,
        task_id: TaskId,
        name: &str,
    ) -> StoreResult<Option<Box<RawValue>>> {
        let payload: Option<String> = sqlx::query_scalar(
            "SELECT payload::text FROM tasker.signals WHERE task_id = $1 AND name = $2",
        )
        .bind(task_id.0)
        .bind(name)
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(db)?;
        payload.map(raw).transpose()
    }
}
