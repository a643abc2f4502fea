//! The `tasker.templates` table: (namespace, name, version) → canonical definition, immutable.

use tasker_core::id::TaskId;
use tasker_core::store::{StoreResult, TemplateListParams, TemplateRecord};
use tasker_core::template::TaskTemplate;

use super::{Conn, PgTx, db};
use crate::primitives::TemplateRows;

pub(crate) async fn list(
    conn: &mut Conn,
    params: TemplateListParams<'_>,
) -> StoreResult<Vec<TemplateRecord>> {
    let (after_ns, after_name, after_version) = params.after_columns();
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT namespace, name, version, definition, created_at FROM tasker.templates
         WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR name = $2)
           AND ($3::text IS NULL OR (namespace, name, version) > ($3, $4, $5))
         ORDER BY namespace, name, version LIMIT $6",
    )
    .bind(params.namespace)
    .bind(params.name)
    .bind(after_ns)
    .bind(after_name)
    .bind(after_version)
    .bind(i64::from(params.limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(crate::rows::template).collect())
}

pub(crate) async fn paused(conn: &mut Conn) -> StoreResult<Vec<(String, String)>> {
    sqlx::query_as("SELECT namespace, name FROM tasker.paused_templates ORDER BY 1, 2")
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

impl TemplateRows for PgTx<'_> {
    async fn template_definition_of(
        &mut self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> StoreResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT definition FROM tasker.templates WHERE namespace = $1 AND name = $2 AND version = $3",
        )
        .bind(namespace)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(db)
    }

    async fn template_set_paused(
        &mut self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> StoreResult<bool> {
        let query = if paused {
            sqlx::query(
                "INSERT INTO tasker.paused_templates (namespace, name, paused_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(namespace)
            .bind(name)
            .bind(self.now.0)
        } else {
            sqlx::query("DELETE FROM tasker.paused_templates WHERE namespace = $1 AND name = $2")
                .bind(namespace)
                .bind(name)
        };
        let done = query.execute(&mut *self.conn).await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn tasks_pending_of(&mut self, namespace: &str, name: &str) -> StoreResult<Vec<TaskId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM tasker.tasks WHERE namespace = $1 AND name = $2 AND state = 'pending'
             ORDER BY id",
        )
        .bind(namespace)
        .bind(name)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(ids.into_iter().map(TaskId).collect())
    }

    /// Inserts the definition unless the version exists; true if it did.
    async fn template_insert(&mut self, t: &TaskTemplate, definition: &str) -> StoreResult<bool> {
        let conn = &mut *self.conn;
        let now = self.now;
        let done = sqlx::query(
            "INSERT INTO tasker.templates (namespace, name, version, definition, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&t.namespace)
        .bind(&t.name)
        .bind(&t.version)
        .bind(definition)
        .bind(now.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
