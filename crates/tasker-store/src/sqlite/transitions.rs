//! The `transitions` table: the append-only audit trail of every state change.

use rusqlite::params;
use tasker_core::id::TaskId;
use tasker_core::store::{StoreResult, TransitionRecord};
use tasker_core::time::Timestamp;

use super::{Conn, SqliteTx, db, decode_all};
use crate::primitives::{Transition, TransitionRows};
use crate::rows::transition;

/// Appends one transition. SQLite's statements cost microseconds, so its tables
/// append theirs one by one; PostgreSQL's statements append in the same statement.
pub(crate) fn append(conn: &Conn, t: Transition<'_>, now: Timestamp) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO transitions (task_id, step_id, from_state, to_state, reason, at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.task_id.0,
            t.step_id.map(|s| s.0),
            t.from,
            t.to,
            t.reason,
            now.0
        ])
    })
    .map_err(db)?;
    Ok(())
}

pub(crate) fn list(conn: &Conn, task_id: TaskId) -> StoreResult<Vec<TransitionRecord>> {
    let mut s = conn
        .prepare_cached(
            "SELECT step_id, from_state, to_state, reason, at FROM transitions
             WHERE task_id = ? ORDER BY id",
        )
        .map_err(db)?;
    decode_all(&mut s, [task_id.0], |r| transition(r, task_id))
}

impl TransitionRows for SqliteTx<'_> {
    async fn transition_append(&mut self, t: Transition<'_>) -> StoreResult<()> {
        append(self.conn, t, self.now)
    }
}
