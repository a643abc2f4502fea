//! Human durations as written in templates and on the command line: `250ms`, `5s`,
//! `2m`, `1h`, `30d`, or a combination such as `1m30s`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (write it like `250ms`, `5s`, `2m`, `1h` or `30d`)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `30d`, `1m30s`.
/// The longest duration accepted anywhere (365 days): a timeout, a backoff or a
/// retention beyond it is a typo, and would overflow the databases' timestamps.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        let ms = n
            .checked_mul(unit_ms)
            .ok_or_else(|| err("number too large"))?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| err("number too large"))?;
    }
    if total > MAX_DURATION {
        return Err(err("longer than the maximum of 365d"));
    }
    Ok(total)
}

/// Displays a duration the way templates write it (`1m30s`, `250ms`).
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0ms");
        }
        let (d, h, m, s, rem) = (
            ms / 86_400_000,
            (ms / 3_600_000) % 24,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
        );
        for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s"), (rem, "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Serde helpers for `Duration` fields written as human strings.
pub mod serde_human {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&HumanDuration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde helpers for `Option<Duration>` fields written as human strings.
pub mod serde_human_opt {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&HumanDuration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_capped_at_a_year() {
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        for input in ["366d", "9999999999h", "365d1ms"] {
            let e = parse_duration(input).unwrap_err();
            assert!(
                e.to_string().contains("longer than the maximum of 365d"),
                "{e}"
            );
        }
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_duration(" 0s ").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        for (input, reason) in [
            ("", "it is empty"),
            ("5", "missing unit"),
            ("5 s", "unknown unit"),
            ("5w", "unknown unit"),
            ("s", "expected a number"),
            ("-1s", "expected a number"),
            ("99999999999999999999s", "number too large"),
        ] {
            let e = parse_duration(input).unwrap_err();
            assert_eq!(e.reason, reason, "{input}");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in [
            "250ms",
            "5s",
            "2m",
            "1h",
            "1m30s",
            "1h1m1s1ms",
            "30d",
            "1d12h",
        ] {
            let d = parse_duration(s).unwrap();
            assert_eq!(HumanDuration(d).to_string(), s);
        }
    }
}
