//! The ceiling of the queue itself: raw pgmq round trips (send → read → delete) on the
//! same database, measured next to the engine by `tasker bench`.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tasker_core::store::StoreResult;

use super::db;

const QUEUE: &str = "_bench_ceiling";

/// Sends, reads and deletes `messages` messages through a scratch queue, `batch` at a
/// time (1 = one message per call), one call after another. Returns the wall time.
pub async fn pgmq_round_trips(
    pool: &PgPool,
    messages: usize,
    batch: usize,
) -> StoreResult<Duration> {
    let batch = batch.max(1);
    sqlx::query("SELECT pgmq.create($1)")
        .bind(QUEUE)
        .execute(pool)
        .await
        .map_err(db)?;
    let body = r#"{"task_id":"01a21b03-ca9e-7224-8e9d-888fd6a02a19","step_id":"01a21b03-cb44-768b-8a8d-acdb031d4240","attempt":1,"handler":"noop"}"#;
    let bodies: Vec<&str> = vec![body; batch];
    let started = Instant::now();
    let mut done = 0;
    while done < messages {
        let n = batch.min(messages - done);
        if n == 1 {
            sqlx::query("SELECT pgmq.send($1, $2::jsonb)")
                .bind(QUEUE)
                .bind(body)
                .execute(pool)
                .await
                .map_err(db)?;
            let id: i64 = sqlx::query_scalar("SELECT msg_id FROM pgmq.read($1, 30, 1)")
                .bind(QUEUE)
                .fetch_one(pool)
                .await
                .map_err(db)?;
            sqlx::query("SELECT pgmq.delete($1, $2::bigint)")
                .bind(QUEUE)
                .bind(id)
                .execute(pool)
                .await
                .map_err(db)?;
        } else {
            sqlx::query("SELECT pgmq.send_batch($1, $2::text[]::jsonb[])")
                .bind(QUEUE)
                .bind(&bodies[..n])
                .execute(pool)
                .await
                .map_err(db)?;
            let ids: Vec<i64> = sqlx::query_scalar("SELECT msg_id FROM pgmq.read($1, 30, $2)")
                .bind(QUEUE)
                .bind(n as i32)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            sqlx::query("SELECT pgmq.delete($1, $2::bigint[])")
                .bind(QUEUE)
                .bind(&ids)
                .execute(pool)
                .await
                .map_err(db)?;
        }
        done += n;
    }
    let elapsed = started.elapsed();
    sqlx::query("SELECT pgmq.drop_queue($1)")
        .bind(QUEUE)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(elapsed)
}
