//! Wall-clock timestamps as microseconds since the Unix epoch: one integer column in
//! both stores, cheap to compare, fine enough to measure sub-millisecond dispatch
//! latency, and formatted as RFC 3339 only for people.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// This instant moved forward by `d` (saturating).
    pub fn after(self, d: Duration) -> Self {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(us))
    }

    /// This instant moved back by `d` (saturating).
    pub fn before(self, d: Duration) -> Self {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(us))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T02:46:16.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1_000_000) / 1000;
        let secs = self.0.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// Text that is not an RFC 3339 timestamp.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 timestamp (like 2026-11-27T02:46:16Z): {why}")]
pub struct BadTimestamp {
    text: String,
    why: chrono::ParseError,
}

impl std::str::FromStr for Timestamp {
    type Err = BadTimestamp;

    /// RFC 3339, any offset: what `Display` writes, and what browsers' `toISOString` do.
    fn from_str(text: &str) -> Result<Self, BadTimestamp> {
        let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|why| BadTimestamp {
            text: text.to_owned(),
            why,
        })?;
        Ok(Self(t.timestamp_micros()))
    }
}

/// Days since the epoch to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_660_000_123_456).to_string(),
            "2026-11-26T02:26:40.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_other_offsets() {
        let t = Timestamp(1_795_660_000_123_000);
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            "2026-11-26T04:26:40.123+02:00"
                .parse::<Timestamp>()
                .unwrap(),
            t
        );
        let err = "yesterday".parse::<Timestamp>().unwrap_err().to_string();
        assert!(
            err.contains("`yesterday` is not an RFC 3339 timestamp"),
            "{err}"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp(1000);
        assert_eq!(t.after(Duration::from_micros(500)), Timestamp(1500));
        assert_eq!(Timestamp(1500).since(t), Duration::from_micros(500));
        assert_eq!(t.since(Timestamp(1500)), Duration::ZERO);
        assert_eq!(
            Timestamp(i64::MAX).after(Duration::from_secs(1)),
            Timestamp(i64::MAX)
        );
    }
}
