//! The `templates` table: (namespace, name, version) → canonical definition, immutable.

use tasker_core::store::{StoreResult, TemplateRecord};
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use super::{Conn, db};

pub(crate) async fn definition(conn: &mut Conn, t: &TaskTemplate) -> StoreResult<Option<String>> {
    sqlx::query_scalar(
        "SELECT definition FROM templates WHERE namespace = ? AND name = ? AND version = ?",
    )
    .bind(&t.namespace)
    .bind(&t.name)
    .bind(&t.version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)
}

/// Inserts the definition unless the version exists; true if it did.
pub(crate) async fn insert(
    conn: &mut Conn,
    t: &TaskTemplate,
    definition: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO templates (namespace, name, version, definition, created_at)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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

pub(crate) async fn list(pool: &sqlx::SqlitePool) -> StoreResult<Vec<TemplateRecord>> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT namespace, name, version, definition, created_at FROM templates
         ORDER BY namespace, name, created_at",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(crate::rows::template).collect())
}
