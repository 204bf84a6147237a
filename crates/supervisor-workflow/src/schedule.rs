//! Schedules: when a workflow starts runs by itself.
//!
//! A schedule is a cron expression read in a named IANA time zone, so "02:30 every day in
//! Europe/Paris" stays 02:30 local across daylight saving changes. Cron matching is done by
//! `croner` over `chrono-tz` times: croner searches on the local wall clock and resolves
//! the two DST edge cases the way cron users expect — a time that does not exist (the
//! spring-forward gap) fires at the first real instant after the gap, and a fixed time that
//! happens twice (the autumn fall-back) fires once, at its first occurrence; interval
//! patterns (`*/15 * * * *`) keep firing on every real instant. The `cron` crate was the
//! alternative; it requires a seconds field and does not document DST behaviour.
//!
//! Everything is a pure function of instants (unix microseconds): the engine owns the clock
//! and persists the last tick it consumed, and [`Schedule::due`] decides from those two
//! numbers whether to fire, applying the missed-run policy.

use std::fmt;
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// Default lateness within which a tick still counts as on time, for [`Missed::Skip`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);
/// Longest cron expression accepted, in bytes.
pub const MAX_CRON_BYTES: usize = 256;
/// Shortest time between two ticks a schedule may have by default: one minute (the
/// engine's `min_schedule_interval` setting).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(60);

const MICROS: i64 = 1_000_000;

/// The schedule section of a workflow definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// A cron expression of 5 fields (minute hour day-of-month month day-of-week) or 6
    /// (seconds first).
    pub cron: String,
    /// An IANA time zone name (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// What to do about ticks missed while nothing was running (default `skip`).
    #[serde(default)]
    pub missed: Missed,
}

fn utc() -> String {
    "UTC".to_string()
}

impl ScheduleDef {
    /// Parses the cron expression and the time zone.
    pub fn compile(&self) -> Result<Schedule, ScheduleError> {
        Schedule::new(&self.cron, &self.timezone, self.missed)
    }
}

/// What to do about ticks that passed while the scheduler was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Drop missed ticks: fire only for a tick that is on time (within the grace period),
    /// otherwise wait for the next future tick.
    #[default]
    Skip,
    /// Fire once for all the missed ticks together, then continue as usual.
    CatchUpOne,
}

/// A schedule that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse, or is longer than [`MAX_CRON_BYTES`].
    #[error(
        "invalid cron expression {}: {reason}; expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"30 2 * * *\" for 02:30 every day",
        supervisor_model::quote(given)
    )]
    Cron {
        /// The expression given.
        given: String,
        /// The parser's reason.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error(
        "unknown time zone {}; expected an IANA name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\"",
        supervisor_model::quote(given)
    )]
    Timezone {
        /// The name given.
        given: String,
    },
    /// The expression parses but matches no time (for example the 30th of February).
    #[error(
        "cron expression {} never fires (e.g. \"0 0 30 2 *\" asks for the 30th of February)",
        supervisor_model::quote(given)
    )]
    Never {
        /// The expression given.
        given: String,
    },
}

/// A compiled schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    source: String,
    cron: Cron,
    tz: Tz,
    missed: Missed,
    grace_micros: i64,
}

/// What [`Schedule::due`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    /// Whether to start a run now.
    pub fire: bool,
    /// The tick this decision consumes (unix microseconds): the latest tick in
    /// `(last, now]`, whether it fired or was skipped. `None` when no tick was due. The
    /// engine stores it as the new `last`, so no tick is ever considered twice.
    pub scheduled_for: Option<i64>,
    /// The first tick after `now`: when to look again. `None` if the schedule never fires
    /// again within croner's search range.
    pub next: Option<i64>,
}

impl Schedule {
    /// Compiles `cron` (5 or 6 fields; `@daily`-style nicknames are accepted) in the IANA
    /// time zone `timezone`.
    pub fn new(cron: &str, timezone: &str, missed: Missed) -> Result<Schedule, ScheduleError> {
        let tz: Tz = timezone
            .trim()
            .parse()
            .map_err(|_| ScheduleError::Timezone {
                given: timezone.to_string(),
            })?;
        if cron.len() > MAX_CRON_BYTES {
            return Err(ScheduleError::Cron {
                given: cron.to_string(),
                reason: format!(
                    "it is {} bytes; the limit is {MAX_CRON_BYTES} bytes",
                    cron.len()
                ),
            });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let parsed = parser.parse(cron).map_err(|e| ScheduleError::Cron {
            given: cron.to_string(),
            reason: e.to_string(),
        })?;
        let schedule = Schedule {
            source: cron.to_string(),
            cron: parsed,
            tz,
            missed,
            grace_micros: duration_micros(DEFAULT_GRACE),
        };
        // Without a year field a pattern that fires at all fires within 28 years
        // (leap days on a given weekday), so one search from a fixed instant decides it.
        const Y2000: i64 = 946_684_800 * MICROS;
        if schedule.next_after(Y2000).is_none() {
            return Err(ScheduleError::Never {
                given: cron.to_string(),
            });
        }
        Ok(schedule)
    }

    /// The same schedule with another grace period: how late a tick may be seen and still
    /// fire under [`Missed::Skip`] (default [`DEFAULT_GRACE`]). The engine sets it a little
    /// above its polling interval.
    pub fn with_grace(mut self, grace: Duration) -> Schedule {
        self.grace_micros = duration_micros(grace);
        self
    }

    /// The cron expression as given.
    pub fn cron(&self) -> &str {
        &self.source
    }

    /// The time zone's IANA name.
    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// The missed-run policy.
    pub fn missed(&self) -> Missed {
        self.missed
    }

    /// The first tick strictly after `unix_micros`, in unix microseconds.
    pub fn next_after(&self, unix_micros: i64) -> Option<i64> {
        // Ticks fall on whole seconds, so searching after the whole second at or before
        // `unix_micros` finds exactly the ticks after it.
        let start = self
            .tz
            .timestamp_opt(unix_micros.div_euclid(MICROS), 0)
            .single()?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        next.timestamp().checked_mul(MICROS)
    }

    /// The shortest time between two ticks, as found over the ticks that follow a few
    /// instants (ticks fall on whole seconds, and the closest ones are those within a
    /// minute, found among the first ticks after any instant they follow).
    pub fn min_interval(&self) -> Duration {
        // 2000-01-01 and 2024-02-29 (a leap day), both at midnight UTC.
        const STARTS: [i64; 2] = [946_684_800 * MICROS, 1_709_164_800 * MICROS];
        let mut shortest = i64::MAX;
        for start in STARTS {
            let mut at = start;
            let mut previous = None;
            for _ in 0..64 {
                let Some(next) = self.next_after(at) else {
                    break;
                };
                if let Some(p) = previous {
                    shortest = shortest.min(next - p);
                }
                previous = Some(next);
                at = next;
            }
        }
        Duration::from_micros(u64::try_from(shortest).unwrap_or(u64::MAX))
    }

    /// The last tick at or before `unix_micros`.
    pub fn last_at_or_before(&self, unix_micros: i64) -> Option<i64> {
        let start = self
            .tz
            .timestamp_opt(unix_micros.div_euclid(MICROS), 0)
            .single()?;
        let prev = self.cron.find_previous_occurrence(&start, true).ok()?;
        prev.timestamp().checked_mul(MICROS)
    }

    /// Decides whether to fire at `now`, given `last`: the tick last consumed
    /// ([`Firing::scheduled_for`] of an earlier call) or, before the first firing, when the
    /// schedule was created. Ticks in `(last, now]` are due:
    ///
    /// - none: no firing; `next` says when to look again;
    /// - [`Missed::Skip`]: fire only if the latest due tick is at most the grace period
    ///   old; older ticks, and a late latest tick, are dropped;
    /// - [`Missed::CatchUpOne`]: fire once, for the latest due tick, however many were
    ///   missed.
    pub fn due(&self, last: i64, now: i64) -> Firing {
        let Some(first) = self.next_after(last) else {
            return Firing {
                fire: false,
                scheduled_for: None,
                next: None,
            };
        };
        if first > now {
            return Firing {
                fire: false,
                scheduled_for: None,
                next: Some(first),
            };
        }
        let latest = self
            .last_at_or_before(now)
            .filter(|t| *t >= first)
            .unwrap_or(first);
        let fire = match self.missed {
            Missed::CatchUpOne => true,
            Missed::Skip => now.saturating_sub(latest) <= self.grace_micros,
        };
        Firing {
            fire,
            scheduled_for: Some(latest),
            next: self.next_after(now),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.source, self.tz.name())
    }
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// Unix microseconds of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .map(|t| t.timestamp() * MICROS)
            .unwrap_or_else(|| panic!("bad test time {y}-{mo}-{d} {h}:{mi}:{s}"))
    }

    fn ticks(s: &Schedule, from: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            match s.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    fn paris(cron: &str) -> Schedule {
        Schedule::new(cron, "Europe/Paris", Missed::Skip).expect("valid schedule")
    }

    #[test]
    fn daily_local_time_across_both_dst_changes_in_paris() {
        let s = paris("30 2 * * *");
        // Spring forward, 2025-03-30: 02:00 CET jumps to 03:00 CEST, so 02:30 never
        // happens; the run fires at the first instant after the gap, 03:00 CEST.
        assert_eq!(
            ticks(&s, utc(2025, 3, 28, 12, 0, 0), 3),
            [
                utc(2025, 3, 29, 1, 30, 0), // 02:30 CET (UTC+1)
                utc(2025, 3, 30, 1, 0, 0),  // 03:00 CEST, the gap's end
                utc(2025, 3, 31, 0, 30, 0), // 02:30 CEST (UTC+2)
            ]
        );
        // Fall back, 2025-10-26: 03:00 CEST goes back to 02:00 CET, so 02:30 happens
        // twice; a fixed time fires once, at the first.
        assert_eq!(
            ticks(&s, utc(2025, 10, 24, 12, 0, 0), 3),
            [
                utc(2025, 10, 25, 0, 30, 0), // 02:30 CEST
                utc(2025, 10, 26, 0, 30, 0), // the first 02:30, still CEST
                utc(2025, 10, 27, 1, 30, 0), // 02:30 CET
            ]
        );
    }

    #[test]
    fn hourly_ticks_follow_real_time_through_the_repeated_hour() {
        let s = paris("0 * * * *");
        // 02:00 CEST (00:00 UTC), 02:00 CET (01:00 UTC): both real instants fire, none twice.
        assert_eq!(
            ticks(&s, utc(2025, 10, 25, 22, 30, 0), 4),
            [
                utc(2025, 10, 25, 23, 0, 0),
                utc(2025, 10, 26, 0, 0, 0),
                utc(2025, 10, 26, 1, 0, 0),
                utc(2025, 10, 26, 2, 0, 0),
            ]
        );
    }

    #[test]
    fn six_fields_mean_seconds_and_sub_second_starts_are_exact() {
        let s = Schedule::new("*/20 * * * * *", "UTC", Missed::Skip).expect("valid");
        let t = utc(2025, 1, 1, 0, 0, 0);
        assert_eq!(s.next_after(t), Some(t + 20 * MICROS));
        assert_eq!(s.next_after(t + 1), Some(t + 20 * MICROS));
        assert_eq!(s.next_after(t - 1), Some(t));
        assert_eq!(s.last_at_or_before(t + 19 * MICROS), Some(t));
        assert_eq!(s.last_at_or_before(t), Some(t));
        let nick = Schedule::new("@daily", "UTC", Missed::Skip).expect("nickname");
        assert_eq!(nick.next_after(t), Some(utc(2025, 1, 2, 0, 0, 0)));
    }

    #[test]
    fn errors_name_the_input_and_give_an_example() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * *", "0 2 * * MOON"] {
            let e = Schedule::new(bad, "UTC", Missed::Skip).expect_err(bad);
            let msg = e.to_string();
            assert!(matches!(e, ScheduleError::Cron { .. }), "{bad}: {msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("\"30 2 * * *\""), "{msg}");
        }
        let e = Schedule::new("0 2 * * *", "Europe/Pari", Missed::Skip).expect_err("tz");
        assert!(e.to_string().contains("\"Europe/Pari\""), "{e}");
        assert!(e.to_string().contains("Europe/Paris"), "{e}");
        let e = Schedule::new("0 0 30 2 *", "UTC", Missed::Skip).expect_err("never");
        assert!(matches!(e, ScheduleError::Never { .. }), "{e}");
    }

    #[test]
    fn the_shortest_interval_between_ticks() {
        let every = |cron: &str| {
            Schedule::new(cron, "Europe/Paris", Missed::Skip)
                .expect(cron)
                .min_interval()
        };
        assert_eq!(every("* * * * * *"), Duration::from_secs(1));
        assert_eq!(every("*/30 * * * * *"), Duration::from_secs(30));
        assert_eq!(every("0,59 * * * * *"), Duration::from_secs(1));
        assert_eq!(every("* * * * *"), Duration::from_secs(60));
        assert_eq!(every("*/15 * * * *"), Duration::from_secs(900));
        // 02:30 does not exist the night clocks spring forward: that tick is 03:00, 23.5
        // hours after the one before.
        assert_eq!(every("30 2 * * *"), Duration::from_secs(84_600));
        assert_eq!(every("@hourly"), Duration::from_secs(3600));
    }

    #[test]
    fn an_oversized_expression_is_refused_without_being_echoed() {
        let huge = "1 ".repeat(50_000);
        let e = Schedule::new(&huge, "UTC", Missed::Skip).expect_err("too long");
        let msg = e.to_string();
        assert!(msg.contains("the limit is 256 bytes"), "{msg}");
        assert!(msg.len() < 500, "{msg}");
        let e = Schedule::new("0 2 * * *", &"Z".repeat(10_000), Missed::Skip).expect_err("tz");
        assert!(e.to_string().len() < 500, "{e}");
    }

    #[test]
    fn nothing_due_before_the_first_tick() {
        let s = paris("0 9 * * *"); // 09:00 Paris = 08:00 UTC in winter
        let created = utc(2025, 1, 10, 7, 0, 0);
        let f = s.due(created, utc(2025, 1, 10, 7, 59, 59));
        assert_eq!(
            f,
            Firing {
                fire: false,
                scheduled_for: None,
                next: Some(utc(2025, 1, 10, 8, 0, 0))
            }
        );
        // On time (within the grace period): fires for that tick.
        let f = s.due(created, utc(2025, 1, 10, 8, 0, 30));
        assert!(f.fire);
        assert_eq!(f.scheduled_for, Some(utc(2025, 1, 10, 8, 0, 0)));
        assert_eq!(f.next, Some(utc(2025, 1, 11, 8, 0, 0)));
        // The consumed tick is not due again.
        let again = s.due(utc(2025, 1, 10, 8, 0, 0), utc(2025, 1, 10, 8, 0, 45));
        assert!(!again.fire);
        assert_eq!(again.scheduled_for, None);
    }

    #[test]
    fn skip_drops_missed_ticks_catch_up_one_fires_once() {
        let last = utc(2025, 1, 10, 8, 0, 0);
        // Down for three days and a bit: ticks of the 11th, 12th and 13th were missed.
        let now = utc(2025, 1, 13, 12, 0, 0);

        let skip = paris("0 9 * * *");
        let f = skip.due(last, now);
        assert!(!f.fire, "a late tick is dropped under skip");
        assert_eq!(f.scheduled_for, Some(utc(2025, 1, 13, 8, 0, 0)));
        assert_eq!(f.next, Some(utc(2025, 1, 14, 8, 0, 0)));
        // Storing scheduled_for as `last` means nothing fires until the next tick.
        let later = skip.due(utc(2025, 1, 13, 8, 0, 0), utc(2025, 1, 13, 20, 0, 0));
        assert!(!later.fire);

        let catch_up =
            Schedule::new("0 9 * * *", "Europe/Paris", Missed::CatchUpOne).expect("valid");
        let f = catch_up.due(last, now);
        assert!(f.fire, "catch_up_one fires for the missed ticks");
        assert_eq!(f.scheduled_for, Some(utc(2025, 1, 13, 8, 0, 0)));
        assert_eq!(f.next, Some(utc(2025, 1, 14, 8, 0, 0)));
        let after = catch_up.due(utc(2025, 1, 13, 8, 0, 0), utc(2025, 1, 13, 20, 0, 0));
        assert!(!after.fire, "only once");

        // Skip still fires when it comes back just in time for the latest tick.
        let f = skip.due(last, utc(2025, 1, 13, 8, 0, 10));
        assert!(f.fire);
        assert_eq!(f.scheduled_for, Some(utc(2025, 1, 13, 8, 0, 0)));

        // The grace period is adjustable.
        let strict = paris("0 9 * * *").with_grace(Duration::from_secs(5));
        assert!(!strict.due(last, utc(2025, 1, 13, 8, 0, 10)).fire);
    }

    #[test]
    fn schedule_def_defaults_to_utc_and_skip() {
        let def: ScheduleDef = serde_json::from_str(r#"{"cron":"0 3 * * 1"}"#).expect("parses");
        assert_eq!(def.timezone, "UTC");
        assert_eq!(def.missed, Missed::Skip);
        let s = def.compile().expect("compiles");
        assert_eq!(s.timezone(), "UTC");
        assert_eq!(s.to_string(), "0 3 * * 1 (UTC)");
    }
}
