//! The embedded schema's migrations, applied in order at open. Applied versions are
//! recorded in `_sqlx_migrations`, the table of the migrator earlier versions used, so
//! their files upgrade in place.

use rusqlite::{OptionalExtension, params};
use tasker_core::store::StoreResult;

use super::{Conn, db};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "incremental readiness",
        include_str!("../../migrations/sqlite/0002_incremental_readiness.sql"),
    ),
    (
        3,
        "retention",
        include_str!("../../migrations/sqlite/0003_retention.sql"),
    ),
    (
        4,
        "decisions",
        include_str!("../../migrations/sqlite/0004_decisions.sql"),
    ),
    (
        5,
        "signals",
        include_str!("../../migrations/sqlite/0005_signals.sql"),
    ),
    (
        6,
        "for each",
        include_str!("../../migrations/sqlite/0006_for_each.sql"),
    ),
    (
        7,
        "paused queues",
        include_str!("../../migrations/sqlite/0007_paused_queues.sql"),
    ),
    (
        8,
        "paused templates",
        include_str!("../../migrations/sqlite/0008_paused_templates.sql"),
    ),
    (
        9,
        "concurrency",
        include_str!("../../migrations/sqlite/0009_concurrency.sql"),
    ),
    (
        10,
        "schedules",
        include_str!("../../migrations/sqlite/0010_schedules.sql"),
    ),
    (
        11,
        "rate limits",
        include_str!("../../migrations/sqlite/0011_rate_limits.sql"),
    ),
    (
        12,
        "priorities",
        include_str!("../../migrations/sqlite/0012_priorities.sql"),
    ),
    (
        13,
        "trace context",
        include_str!("../../migrations/sqlite/0013_trace_context.sql"),
    ),
];

pub(crate) fn run(conn: &Conn) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )
    .map_err(db)?;
    let applied: Option<i64> = conn
        .query_row(
            "SELECT max(version) FROM _sqlx_migrations WHERE success",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .flatten();
    for &(version, description, sql) in MIGRATIONS {
        if applied.is_some_and(|a| a >= version) {
            continue;
        }
        let tx = conn.unchecked_transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?, ?, 1, x'', 0)",
            params![version, description],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}
