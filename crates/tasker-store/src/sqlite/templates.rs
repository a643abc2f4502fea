//! The `templates` table: (namespace, name, version) → canonical definition, immutable.

use tasker_core::store::{Registration, StoreError, StoreResult};
use tasker_core::template::TaskTemplate;
use tasker_core::time::Timestamp;

use super::{Conn, db};

pub(crate) async fn register(
    conn: &mut Conn,
    template: &TaskTemplate,
    now: Timestamp,
) -> StoreResult<Registration> {
    let definition = template.canonical_json();
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT definition FROM templates WHERE namespace = ? AND name = ? AND version = ?",
    )
    .bind(&template.namespace)
    .bind(&template.name)
    .bind(&template.version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    match existing {
        Some(d) if d == definition => Ok(Registration::Unchanged),
        Some(_) => Err(StoreError::Conflict(format!(
            "template {} is already registered with different content; versions are immutable, give the change a new version",
            template.key()
        ))),
        None => {
            sqlx::query(
                "INSERT INTO templates (namespace, name, version, definition, created_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&template.namespace)
            .bind(&template.name)
            .bind(&template.version)
            .bind(&definition)
            .bind(now.0)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            Ok(Registration::Registered)
        }
    }
}
