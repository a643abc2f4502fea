//! The `rate_limits` table: a token bucket per key.

use rusqlite::params;
use tasker_core::id::StepId;
use tasker_core::rate::Bucket;
use tasker_core::store::StoreResult;
use tasker_core::time::Timestamp;

use super::{SqliteTx, db};
use crate::primitives::RateRows;

impl RateRows for SqliteTx<'_> {
    async fn bucket_lock(&mut self, key: &str) -> StoreResult<Bucket> {
        self.conn
            .prepare_cached(
                "INSERT INTO rate_limits (key, tokens, at) VALUES (?, 0, ?) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![key, self.now.0]))
            .map_err(db)?;
        self.conn
            .prepare_cached("SELECT tokens, at FROM rate_limits WHERE key = ?")
            .and_then(|mut s| {
                s.query_row([key], |r| {
                    Ok(Bucket {
                        tokens: r.get(0)?,
                        at: Timestamp(r.get(1)?),
                    })
                })
            })
            .map_err(db)
    }

    async fn bucket_set(&mut self, key: &str, bucket: Bucket) -> StoreResult<()> {
        self.conn
            .prepare_cached("UPDATE rate_limits SET tokens = ?2, at = ?3 WHERE key = ?1")
            .and_then(|mut s| s.execute(params![key, bucket.tokens, bucket.at.0]))
            .map_err(db)?;
        Ok(())
    }

    async fn steps_book(&mut self, bookings: &[(StepId, Option<Timestamp>)]) -> StoreResult<()> {
        let mut s = self
            .conn
            .prepare_cached("UPDATE steps SET rate_booked = ? WHERE id = ?")
            .map_err(db)?;
        for (step_id, at) in bookings {
            s.execute(params![at.map(|t| t.0), step_id.0]).map_err(db)?;
        }
        Ok(())
    }
}
