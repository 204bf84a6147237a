//! What every command's output shares: the `--output` format, writing to stdout, table
//! layout, and how times, durations, money and missing values read in text and JSON.
//!
//! In JSON (`--output json`), field names are snake_case and stable; enums are their
//! short names (`"succeeded"`, `"bug_fix"`), timestamps RFC 3339 in UTC with
//! microseconds (null when unset), and optional strings null when empty. Numbers the
//! contract marks as "none" with a sentinel are null instead: a limit of 0 (no limit), a
//! measurement of -1 (nothing measured yet).

use std::{
    fmt::Write as _,
    io::{self, Write as _},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost_types::Timestamp;

/// How commands print their results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Readable text: summaries, tables, live progress.
    Text,
    /// JSON: one object or array (task and workflow watch: one event object per line;
    /// providers watch: one array per line).
    Json,
}

/// Writes `text` to stdout at once and flushes.
pub fn print_stdout(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes a value as pretty JSON, followed by a newline, to stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(print_stdout(&text)?)
}

/// First second that RFC 3339 (four-digit years) cannot show: year 10000.
const MAX_RFC3339_SECONDS: i64 = 253_402_300_800;

/// The instant of a timestamp, when it is a valid one from 1970 to 9999.
pub fn system_time(ts: &Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    if ts.seconds >= MAX_RFC3339_SECONDS || nanos >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// RFC 3339 in UTC with microseconds (`2024-05-01T12:00:00.123456Z`). Timestamps
/// outside 1970..=9999 read `@<seconds>.<nanos>`.
pub fn rfc3339(ts: &Timestamp) -> String {
    match system_time(ts) {
        Some(time) => humantime::format_rfc3339_micros(time).to_string(),
        None => format!("@{}.{:09}", ts.seconds, ts.nanos),
    }
}

/// RFC 3339 in UTC to the second (`2024-05-01T12:00:00Z`).
pub fn rfc3339_seconds(ts: &Timestamp) -> String {
    match system_time(ts) {
        Some(time) => humantime::format_rfc3339_seconds(time).to_string(),
        None => format!("@{}", ts.seconds),
    }
}

/// How long ago `ts` was, compactly (`45s`, `12m`, `3h`, `5d`); `-` when unset.
pub fn age(ts: Option<&Timestamp>, now: SystemTime) -> String {
    let Some(then) = ts.and_then(system_time) else {
        return "-".to_owned();
    };
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A running time: `8.4s`, `2m05s`, `1h02m`.
pub fn elapsed(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{}.{}s", secs, duration.subsec_millis() / 100),
        60..3_600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
    }
}

/// A past instant to the second and how long ago it was: `2024-05-01T12:00:00Z (3h ago)`.
pub fn instant_and_age(ts: &Timestamp, now: SystemTime) -> String {
    format!("{} ({} ago)", rfc3339_seconds(ts), age(Some(ts), now))
}

/// The time between two timestamps, when both are set and in order.
pub fn between(from: Option<&Timestamp>, to: Option<&Timestamp>) -> Option<Duration> {
    let from = from.and_then(system_time)?;
    let to = to.and_then(system_time)?;
    to.duration_since(from).ok()
}

/// A time limit in milliseconds (`30s`, `1m 30s`); `default` when 0.
pub fn millis(ms: u64) -> String {
    if ms == 0 {
        "default".to_owned()
    } else {
        humantime::format_duration(Duration::from_millis(ms)).to_string()
    }
}

/// A cost in millionths of a dollar, exactly: `$0.001500`.
pub fn cost(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A limit in US dollars as given (`$0.5`).
pub fn dollars(usd: f64) -> String {
    format!("${usd}")
}

/// `text` on one line (line breaks become spaces).
pub fn single_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// At most `max` characters of `text`, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Indents every line of `text` by `prefix`.
pub fn indented(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `name: value` lines, the values aligned in one column (how `task get` and `workflow
/// get` show a record's fields).
pub fn field_lines(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (name, value) in fields {
        let label = format!("{name}:");
        let _ = writeln!(text, "{label:<width$} {value}");
    }
    text
}

/// `KEY=VALUE` pairs sorted by key, comma-separated (`issue=flaky, repo=/src`).
pub fn key_values<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<_> = pairs.into_iter().collect();
    pairs.sort();
    let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(", ")
}

/// `text`, or `-` when it is empty.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// Columns aligned with two spaces between them; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table's text, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|col| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(col))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (col, cell) in row.iter().enumerate() {
                if col > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if col + 1 < row.len() {
                    let pad = widths[col].saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `text`, or `None` (null in JSON) when it is empty.
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// A timestamp as [`rfc3339`] shows it, or `None` (null in JSON) when unset.
pub fn optional_rfc3339(ts: Option<&Timestamp>) -> Option<String> {
    ts.map(rfc3339)
}

/// A count or limit where 0 means "none".
pub fn non_zero<N: Default + PartialEq>(n: N) -> Option<N> {
    (n != N::default()).then_some(n)
}

/// A measurement where a negative value means "not measured yet".
pub fn measured(value: f64) -> Option<f64> {
    (value >= 0.0).then_some(value)
}

/// Millionths of a dollar as dollars.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;
    use crate::commands::harness::{T0, at};

    #[test]
    fn rfc3339_formats_and_refuses_out_of_range() {
        assert_eq!(
            rfc3339(&timestamp_from_micros(T0 + 42)),
            "2023-11-14T22:13:20.000042Z"
        );
        assert_eq!(
            rfc3339_seconds(&timestamp_from_micros(T0 + 42)),
            "2023-11-14T22:13:20Z"
        );
        let before_epoch = Timestamp {
            seconds: -5,
            nanos: 0,
        };
        assert_eq!(rfc3339(&before_epoch), "@-5.000000000");
        let far = Timestamp {
            seconds: MAX_RFC3339_SECONDS,
            nanos: 0,
        };
        assert!(rfc3339(&far).starts_with('@'));
        let bad_nanos = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert!(system_time(&bad_nanos).is_none());
    }

    #[test]
    fn ages_and_durations() {
        let created = timestamp_from_micros(T0);
        let now = |secs: i64| at(T0 + secs * 1_000_000);
        assert_eq!(age(Some(&created), now(45)), "45s");
        assert_eq!(age(Some(&created), now(125)), "2m");
        assert_eq!(age(Some(&created), now(3 * 3600 + 5)), "3h");
        assert_eq!(age(Some(&created), now(5 * 86_400)), "5d");
        assert_eq!(age(Some(&created), now(-10)), "0s");
        assert_eq!(age(None, now(0)), "-");
        assert_eq!(elapsed(Duration::from_millis(8_450)), "8.4s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m05s");
        assert_eq!(elapsed(Duration::from_secs(3_720)), "1h02m");
        assert_eq!(cost(1_500), "$0.001500");
        assert_eq!(cost(12_345_678), "$12.345678");
        assert_eq!(millis(30_000), "30s");
        assert_eq!(millis(0), "default");
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "LONGER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "".into()]);
        assert_eq!(table.render(), "A          LONGER  C\nwide cell  x\n");
    }
}
