//! The `signals` table: the signals delivered to a task, one per name.

use rusqlite::{OptionalExtension, params};
use serde_json::value::RawValue;
use tasker_core::id::TaskId;
use tasker_core::store::StoreResult;

use super::{SqliteTx, db};
use crate::primitives::SignalRows;
use crate::rows::raw;

impl SignalRows for SqliteTx<'_> {
    async fn signal_insert(
        &mut self,
        task_id: TaskId,
        name: &str,
        payload: &RawValue,
    ) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO signals (task_id, name, payload, delivered_at) VALUES (?, ?, ?, ?)",
            )
            .and_then(|mut s| s.execute(params![task_id.0, name, payload.get(), self.now.0]))
            .map_err(db)?;
        Ok(())
    }

    async fn signal_get(
        &mut self,
        task_id: TaskId,
        name: &str,
    ) -> StoreResult<Option<Box<RawValue>>> {
        let payload: Option<String> = self
            .conn
            .prepare_cached("SELECT payload FROM signals WHERE task_id = ? AND name = ?")
            .and_then(|mut s| {
                s.query_row(params![task_id.0, name], |r| r.get(0))
                    .optional()
            })
            .map_err(db)?;
        payload.map(raw).transpose()
    }
}
