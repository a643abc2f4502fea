//! Rate limits on step starts: a token bucket per key, shared by every step that names
//! the key. It holds at most `burst` tokens, gains `per_second` a second, and a step
//! starts only by taking one — so over any window of `w` seconds at most
//! `per_second · w + burst` steps of a key start. A key's bucket starts empty. A start
//! that finds no token books the next one, so the waiting come back one token apart
//! and none is passed over by a later one.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A step's `rate_limit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub key: String,
    pub per_second: f64,
    pub burst: u32,
}

/// A bucket as stored: its tokens when it was last taken from, at `at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub at: Timestamp,
}

/// What taking from a bucket gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Taken {
    /// How many of the wanted starts may go now.
    pub granted: usize,
    /// The bucket to store.
    pub bucket: Bucket,
    /// For each start that may not go now, in order, the time its token is there: it
    /// is booked (taken from the bucket, which goes into debt), so the step then
    /// starts without taking another, and the booked starts come one token apart.
    pub booked: Vec<Timestamp>,
}

impl RateLimit {
    /// Takes a token for each of `wanted` starts at `now` from `bucket` (`None`: a key
    /// never used, an empty bucket).
    pub fn take(&self, bucket: Option<Bucket>, now: Timestamp, wanted: usize) -> Taken {
        let bucket = bucket.unwrap_or(Bucket {
            tokens: 0.0,
            at: now,
        });
        let elapsed = now.0.saturating_sub(bucket.at.0).max(0) as f64 / 1e6;
        let tokens = (bucket.tokens + elapsed * self.per_second).min(f64::from(self.burst));
        let granted = (tokens.max(0.0).floor() as usize).min(wanted);
        let mut left = tokens - granted as f64;
        let booked = (granted..wanted)
            .map(|_| {
                left -= 1.0;
                let wait = -left / self.per_second;
                Timestamp(now.0.saturating_add((wait * 1e6).ceil() as i64))
            })
            .collect();
        Taken {
            granted,
            bucket: Bucket {
                tokens: left,
                // Never back: a process whose clock is behind must not hand the next
                // one the difference as tokens.
                at: Timestamp(now.0.max(bucket.at.0)),
            },
            booked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit {
            key: "api".into(),
            per_second,
            burst,
        }
    }

    const SECOND: i64 = 1_000_000;

    #[test]
    fn a_new_key_starts_empty_and_fills_at_its_rate() {
        let l = limit(10.0, 10);
        let first = l.take(None, Timestamp(0), 3);
        assert_eq!(first.granted, 0);
        assert_eq!(
            first.booked,
            [
                Timestamp(SECOND / 10),
                Timestamp(2 * SECOND / 10),
                Timestamp(3 * SECOND / 10)
            ],
            "booked one token apart"
        );
        // At 0.55 s the three booked tokens are repaid and 2.5 more have come.
        let later = l.take(Some(first.bucket), Timestamp(SECOND * 55 / 100), 3);
        assert_eq!(later.granted, 2);
        assert!((later.bucket.tokens + 0.5).abs() < 1e-9, "{later:?}");
        assert_eq!(later.booked, [Timestamp(SECOND * 55 / 100 + SECOND / 20)]);
    }

    #[test]
    fn a_clock_behind_never_moves_the_bucket_back() {
        let l = limit(10.0, 10);
        let ahead = Bucket {
            tokens: 0.0,
            at: Timestamp(5 * SECOND),
        };
        let behind = l.take(Some(ahead), Timestamp(4 * SECOND), 1);
        assert_eq!(behind.bucket.at, Timestamp(5 * SECOND));
        assert_eq!(behind.granted, 0, "no tokens from a clock that runs behind");
    }

    #[test]
    fn a_bucket_holds_at_most_its_burst() {
        let l = limit(2.0, 3);
        let idle = Bucket {
            tokens: 0.0,
            at: Timestamp(0),
        };
        let taken = l.take(Some(idle), Timestamp(100 * SECOND), 10);
        assert_eq!(taken.granted, 3);
        assert_eq!(taken.booked.len(), 7);
        assert_eq!(taken.booked[0], Timestamp(100 * SECOND + SECOND / 2));
    }

    proptest::proptest! {
        /// However starts are asked for, a key never starts more than its rate over a
        /// window plus its burst, counting the booked starts at their times.
        #[test]
        fn starts_never_exceed_the_rate_plus_the_burst(
            per_second in 0.5f64..50.0,
            burst in 1u32..20,
            asks in proptest::collection::vec((0i64..200_000, 1usize..8), 1..200),
        ) {
            let l = limit(per_second, burst);
            let mut bucket = None;
            let mut now = 0;
            let mut starts = Vec::new();
            for (gap, wanted) in asks {
                now += gap;
                let taken = l.take(bucket, Timestamp(now), wanted);
                starts.extend(std::iter::repeat_n(now, taken.granted));
                starts.extend(taken.booked.iter().map(|t| t.0));
                bucket = Some(taken.bucket);
            }
            starts.sort_unstable();
            for (i, &from) in starts.iter().enumerate() {
                for (j, &to) in starts.iter().enumerate().skip(i) {
                    // Times are whole microseconds, rounded up: a microsecond of slack.
                    let window = (to - from + 1) as f64 / 1e6;
                    let allowed = per_second * window + f64::from(burst) + 1e-9;
                    proptest::prop_assert!(((j - i + 1) as f64) <= allowed);
                }
            }
        }
    }
}
