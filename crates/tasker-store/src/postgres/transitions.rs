//! The `tasker.transitions` table: the append-only audit trail of every state change.

use tasker_core::id::TaskId;
use tasker_core::store::{StoreResult, TransitionRecord};

use super::{Conn, PgTx, db};
use crate::primitives::{Transition, TransitionRows};
use crate::rows::transition;

pub(crate) async fn list(conn: &mut Conn, task_id: TaskId) -> StoreResult<Vec<TransitionRecord>> {
    let rows = sqlx::query(
        "SELECT step_id, from_state, to_state, reason, at FROM tasker.transitions
         WHERE task_id = $1 ORDER BY id",
    )
    .bind(task_id.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter().map(|r| transition(r, task_id)).collect()
}

impl TransitionRows for PgTx<'_> {
    async fn transition_append(&mut self, t: Transition<'_>) -> StoreResult<()> {
        let conn = &mut *self.conn;
        let now = self.now;
        sqlx::query(
            "INSERT INTO tasker.transitions (task_id, step_id, from_state, to_state, reason, at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.task_id.0)
        .bind(t.step_id.map(|s| s.0))
        .bind(t.from)
        .bind(t.to)
        .bind(t.reason)
        .bind(now.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}
