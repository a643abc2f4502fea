//! When a schedule fires: a cron expression (5 fields, or 6 with seconds first) read in
//! a time zone, or `@every DURATION` counted from the schedule's creation; and which of
//! the ticks that fell due to fire, by the schedule's catch-up policy. Cron expressions
//! are parsed by `croner`; time zones are read from the system's tz database
//! (`/usr/share/zoneinfo`, by `tzfile`) — not compiled into the binary, whose tables
//! of every zone cost each process megabytes of relocated pages at start.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::TimeZone;
use tzfile::ArcTz;

use crate::duration::parse_duration;
use crate::time::Timestamp;

/// A tick fired within this long of its time is on time; an older one was missed (no
/// orchestrator ran, or all were busy), and the catch-up policy says what becomes of it.
pub const ON_TIME: Duration = Duration::from_secs(1);

/// The most ticks one round looks at: `all` fires at most this many per transaction
/// and goes on in the next; `once` and `skip` jump to the present past it.
const MAX_TICKS: usize = 1_000;

/// The shortest `@every` period.
const MIN_PERIOD: Duration = Duration::from_secs(1);

/// What becomes of ticks that were missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// None of them fires.
    Skip,
    /// One task stands for all of them: the earliest fires.
    #[default]
    Once,
    /// Every one fires, oldest first.
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::All => "all",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "once" => Ok(CatchUp::Once),
            "all" => Ok(CatchUp::All),
            other => Err(format!("catch-up `{other}` is not one of skip, once, all")),
        }
    }
}

/// When a schedule fires.
#[derive(Clone, Debug)]
pub struct Cadence {
    kind: Kind,
}

/// UTC needs no file; any other zone is read from the system's database.
#[derive(Clone, Debug)]
enum Zone {
    Utc,
    Named(ArcTz),
}

#[derive(Clone, Debug)]
enum Kind {
    Cron(Box<croner::Cron>, Zone),
    Every { period: i64, anchor: i64 },
}

impl Cadence {
    /// Reads `expr` in `timezone` (an IANA name such as `Europe/Paris`; `UTC` for
    /// none); `@every` periods count from `anchor`, the schedule's creation.
    pub fn parse(expr: &str, timezone: &str, anchor: Timestamp) -> Result<Self, String> {
        let unknown = || {
            format!(
                "time zone `{timezone}` is not an IANA time zone name such as UTC or Europe/Paris"
            )
        };
        let named = timezone.len() <= 64
            && timezone.split('/').all(|part| {
                part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
            });
        if !named {
            return Err(unknown());
        }
        // Read when the schedule is: a zone this system's database lacks is unknown.
        let tz = match timezone {
            "UTC" => Zone::Utc,
            _ => Zone::Named(ArcTz::named(timezone).map_err(|_| unknown())?),
        };
        if let Some(period) = expr.trim().strip_prefix("@every") {
            let period = parse_duration(period.trim()).map_err(|e| format!("`{expr}`: {e}"))?;
            if period < MIN_PERIOD {
                return Err(format!("`{expr}`: the period must be at least 1s"));
            }
            return Ok(Cadence {
                kind: Kind::Every {
                    period: period.as_micros() as i64,
                    anchor: anchor.0,
                },
            });
        }
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) && !expr.trim_start().starts_with('@') {
            return Err(format!(
                "cron expression `{expr}` has {fields} fields: give 5 (minute hour day month weekday), 6 with seconds first, or `@every 30s`"
            ));
        }
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("cron expression `{expr}`: {e}"))?;
        let cadence = Cadence {
            kind: Kind::Cron(Box::new(cron), tz),
        };
        if cadence.next_after(anchor).is_none() {
            return Err(format!("cron expression `{expr}` never fires"));
        }
        Ok(cadence)
    }

    /// The first fire time after `t`; `None` when there is none.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every { period, anchor } => {
                let periods = (t.0 - anchor).div_euclid(*period) + 1;
                Some(Timestamp(anchor + periods * period))
            }
            Kind::Cron(cron, Zone::Utc) => next_in(cron, &chrono::Utc, t),
            Kind::Cron(cron, Zone::Named(tz)) => next_in(cron, tz, t),
        }
    }
}

/// The first time after `t` that `cron` matches, read in `tz`.
fn next_in<Z: TimeZone>(cron: &croner::Cron, tz: &Z, t: Timestamp) -> Option<Timestamp> {
    let at = tz.timestamp_micros(t.0).single()?;
    let next = cron.find_next_occurrence(&at, false).ok()?;
    Some(Timestamp(next.timestamp_micros()))
}

/// What one round fires of a schedule whose next tick, `due`, has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The fire times to create tasks for, oldest first.
    pub fire: Vec<Timestamp>,
    /// Missed ticks that fire no task (at least this many, past a long outage).
    pub skipped: u64,
    /// The tick to wait for next: due already when `all` has more to fire.
    pub next: Option<Timestamp>,
}

/// Which ticks from `due` up to `now` fire, by `catch_up`.
pub fn plan(cadence: &Cadence, due: Timestamp, now: Timestamp, catch_up: CatchUp) -> Plan {
    let on_time = |t: Timestamp| now.0 - t.0 <= ON_TIME.as_micros() as i64;
    let mut ticks = Vec::new();
    let mut next = Some(due);
    while let Some(t) = next.filter(|t| t.0 <= now.0 && ticks.len() < MAX_TICKS) {
        ticks.push(t);
        next = cadence.next_after(t);
    }
    if catch_up == CatchUp::All {
        return Plan {
            fire: ticks,
            skipped: 0,
            next,
        };
    }
    // Past the ticks looked at, the rest of a long outage is missed too: go on from
    // the present, keeping the ticks that are on time.
    if next.is_some_and(|t| t.0 <= now.0) {
        next = cadence.next_after(Timestamp(now.0 - ON_TIME.as_micros() as i64 - 1));
        while let Some(t) = next.filter(|t| t.0 <= now.0) {
            ticks.push(t);
            next = cadence.next_after(t);
        }
    }
    let (current, missed): (Vec<Timestamp>, Vec<Timestamp>) =
        ticks.into_iter().partition(|&t| on_time(t));
    let mut fire = Vec::with_capacity(current.len() + 1);
    let mut skipped = missed.len() as u64;
    if catch_up == CatchUp::Once
        && let Some(&first) = missed.first()
    {
        fire.push(first);
        skipped -= 1;
    }
    fire.extend(current);
    Plan {
        fire,
        skipped,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp(seconds * SECOND)
    }

    #[test]
    fn every_counts_periods_from_its_anchor() {
        let c = Cadence::parse("@every 30s", "UTC", at(100)).unwrap();
        assert_eq!(c.next_after(at(100)), Some(at(130)));
        assert_eq!(c.next_after(at(129)), Some(at(130)));
        assert_eq!(c.next_after(at(130)), Some(at(160)));
        assert!(
            Cadence::parse("@every 500ms", "UTC", at(0))
                .unwrap_err()
                .contains("at least 1s")
        );
        assert!(Cadence::parse("@every soon", "UTC", at(0)).is_err());
    }

    #[test]
    fn cron_reads_five_or_six_fields_in_its_time_zone() {
        // 2026-01-01T00:00:00Z
        let new_year = at(1_767_225_600);
        let hourly = Cadence::parse("0 * * * *", "UTC", new_year).unwrap();
        assert_eq!(hourly.next_after(new_year), Some(at(1_767_225_600 + 3600)));
        let seconds = Cadence::parse("*/10 * * * * *", "UTC", new_year).unwrap();
        assert_eq!(seconds.next_after(new_year), Some(at(1_767_225_610)));
        // Nine in the morning in Paris is eight in UTC in winter.
        let paris = Cadence::parse("0 9 * * *", "Europe/Paris", new_year).unwrap();
        assert_eq!(
            paris.next_after(new_year),
            Some(at(1_767_225_600 + 8 * 3600))
        );
        // And seven in summer (2026-07-01T00:00:00Z), daylight saving time.
        let july = at(1_782_864_000);
        assert_eq!(paris.next_after(july), Some(at(1_782_864_000 + 7 * 3600)));
        for (expr, says) in [
            ("* * *", "has 3 fields"),
            ("61 * * * *", "cron expression `61 * * * *`"),
            ("0 0 30 2 *", "never fires"),
        ] {
            let e = Cadence::parse(expr, "UTC", new_year).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
        for zone in [
            "Mars/Olympus",
            "../../etc/passwd",
            "/etc/passwd",
            "Europe//Paris",
            "",
        ] {
            let e = Cadence::parse("0 * * * *", zone, new_year).unwrap_err();
            assert!(e.contains(&format!("time zone `{zone}`")), "{e}");
        }
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        let every = Cadence::parse("@every 1s", "UTC", at(0)).unwrap();
        // Ticks at 10..=15 are due at 15.2 s: 10..=13 are missed, 14 and 15 on time.
        let now = Timestamp(15 * SECOND + SECOND / 5);
        let all = plan(&every, at(10), now, CatchUp::All);
        assert_eq!(all.fire, (10..=15).map(at).collect::<Vec<_>>());
        assert_eq!((all.skipped, all.next), (0, Some(at(16))));
        let once = plan(&every, at(10), now, CatchUp::Once);
        assert_eq!(once.fire, [at(10), at(15)]);
        assert_eq!((once.skipped, once.next), (4, Some(at(16))));
        let skip = plan(&every, at(10), now, CatchUp::Skip);
        assert_eq!(skip.fire, [at(15)]);
        assert_eq!((skip.skipped, skip.next), (5, Some(at(16))));
        let on_time = plan(&every, at(15), now, CatchUp::Skip);
        assert_eq!((on_time.fire, on_time.skipped), (vec![at(15)], 0));
    }

    #[test]
    fn a_long_outage_is_bounded_per_round() {
        let every = Cadence::parse("@every 1s", "UTC", at(0)).unwrap();
        let now = at(100_000);
        let all = plan(&every, at(1), now, CatchUp::All);
        assert_eq!(all.fire.len(), MAX_TICKS);
        assert_eq!(all.next, Some(at(1 + MAX_TICKS as i64)), "due at once");
        let once = plan(&every, at(1), now, CatchUp::Once);
        // The earliest missed tick stands for the rest; those within a second are on time.
        assert_eq!(once.fire, [at(1), at(99_999), at(100_000)]);
        assert_eq!(once.next, Some(at(100_001)));
        assert!(once.skipped >= MAX_TICKS as u64 - 1);
        assert_eq!(
            "sometimes".parse::<CatchUp>().unwrap_err(),
            "catch-up `sometimes` is not one of skip, once, all"
        );
    }
}
