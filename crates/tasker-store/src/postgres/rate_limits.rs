//! The `tasker.rate_limits` table: a token bucket per key.

use tasker_core::id::StepId;
use tasker_core::rate::Bucket;
use tasker_core::store::StoreResult;
use tasker_core::time::Timestamp;

use super::{PgTx, db};
use crate::primitives::RateRows;

impl RateRows for PgTx<'_> {
    async fn bucket_lock(&mut self, key: &str) -> StoreResult<Bucket> {
        sqlx::query(
            "INSERT INTO tasker.rate_limits (key, tokens, at) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(self.now.0)
        .execute(&mut *self.conn)
        .await
        .map_err(db)?;
        let (tokens, at): (f64, i64) =
            sqlx::query_as("SELECT tokens, at FROM tasker.rate_limits WHERE key = $1 FOR UPDATE")
                .bind(key)
                .fetch_one(&mut *self.conn)
                .await
                .map_err(db)?;
        Ok(Bucket {
            tokens,
            at: Timestamp(at),
        })
    }

    async fn bucket_set(&mut self, key: &str, bucket: Bucket) -> StoreResult<()> {
        sqlx::query("UPDATE tasker.rate_limits SET tokens = $2, at = $3 WHERE key = $1")
            .bind(key)
            .bind(bucket.tokens)
            .bind(bucket.at.0)
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn steps_book(&mut self, bookings: &[(StepId, Option<Timestamp>)]) -> StoreResult<()> {
        let ids: Vec<uuid::Uuid> = bookings.iter().map(|b| b.0.0).collect();
        let at: Vec<Option<i64>> = bookings.iter().map(|b| b.1.map(|t| t.0)).collect();
        sqlx::query(
            "UPDATE tasker.steps s SET rate_booked = u.at
             FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, at) WHERE s.id = u.id",
        )
        .bind(&ids)
        .bind(&at)
        .execute(&mut *self.conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}
