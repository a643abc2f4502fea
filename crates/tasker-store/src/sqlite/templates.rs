//! The `templates` table: (namespace, name, version) → canonical definition, immutable.

use rusqlite::{OptionalExtension, params};
use tasker_core::id::TaskId;
use tasker_core::store::{StoreResult, TemplateListParams, TemplateRecord};
use tasker_core::template::TaskTemplate;

use super::{Conn, SqliteTx, db};
use crate::primitives::TemplateRows;

pub(crate) fn list(
    conn: &Conn,
    params: TemplateListParams<'_>,
) -> StoreResult<Vec<TemplateRecord>> {
    let mut s = conn
        .prepare_cached(
            "SELECT namespace, name, version, definition, created_at FROM templates
             WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR name = ?2)
               AND (?3 IS NULL OR (namespace, name, version) > (?3, ?4, ?5))
             ORDER BY namespace, name, version LIMIT ?6",
        )
        .map_err(db)?;
    let (after_ns, after_name, after_version) = params.after_columns();
    let rows = s
        .query_map(
            rusqlite::params![
                params.namespace,
                params.name,
                after_ns,
                after_name,
                after_version,
                params.limit
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .map_err(db)?;
    rows.map(|r| r.map(crate::rows::template).map_err(db))
        .collect()
}

pub(crate) fn paused(conn: &Conn) -> StoreResult<Vec<(String, String)>> {
    let mut s = conn
        .prepare_cached("SELECT namespace, name FROM paused_templates ORDER BY 1, 2")
        .map_err(db)?;
    let rows = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

impl TemplateRows for SqliteTx<'_> {
    async fn template_definition_of(
        &mut self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> StoreResult<Option<String>> {
        self.conn
            .prepare_cached(
                "SELECT definition FROM templates WHERE namespace = ? AND name = ? AND version = ?",
            )
            .and_then(|mut s| {
                s.query_row(params![namespace, name, version], |r| r.get(0))
                    .optional()
            })
            .map_err(db)
    }

    async fn template_set_paused(
        &mut self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> StoreResult<bool> {
        let changed = if paused {
            self.conn
                .prepare_cached(
                    "INSERT INTO paused_templates (namespace, name, paused_at) VALUES (?, ?, ?)
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![namespace, name, self.now.0]))
        } else {
            self.conn
                .prepare_cached("DELETE FROM paused_templates WHERE namespace = ? AND name = ?")
                .and_then(|mut s| s.execute(params![namespace, name]))
        }
        .map_err(db)?;
        Ok(changed == 1)
    }

    async fn tasks_pending_of(&mut self, namespace: &str, name: &str) -> StoreResult<Vec<TaskId>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT id FROM tasks WHERE namespace = ? AND name = ? AND state = 'pending' ORDER BY id",
            )
            .map_err(db)?;
        let rows = s
            .query_map(params![namespace, name], |r| Ok(TaskId(r.get(0)?)))
            .map_err(db)?;
        rows.map(|r| r.map_err(db)).collect()
    }

    /// Inserts the definition unless the version exists; true if it did.
    async fn template_insert(&mut self, t: &TaskTemplate, definition: &str) -> StoreResult<bool> {
        let conn = self.conn;
        let now = self.now;
        let inserted = conn
            .prepare_cached(
                "INSERT INTO templates (namespace, name, version, definition, created_at)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![t.namespace, t.name, t.version, definition, now.0]))
            .map_err(db)?;
        Ok(inserted == 1)
    }
}
