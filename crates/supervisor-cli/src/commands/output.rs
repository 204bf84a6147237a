//! What every command's output shares: the `--output` format, writing to stdout, table
//! layout, and how times, durations, money and missing values read in text and JSON.
//!
//! Text for people never reaches the terminal raw: prompts, labels, errors and provider
//! output (which no one vouches for) may hold escape sequences and other control
//! characters that a terminal would obey. [`escape`] is the one function that makes them
//! visible instead (`\e`, `\n`, `\u{202e}`), and every text path goes through it: the
//! [`Table`] and [`field_lines`] helpers escape their cells (so a row stays one row),
//! [`print_stdout`] and [`print_stderr_line`] escape what they write, and the live views
//! escape each line they draw. Escaping is idempotent (a backslash is left as it is), so
//! text escaped early to measure or cut it passes the later escapes unchanged. JSON
//! (`--output json`, written by [`print_json`]) is exact: serde escapes what JSON must.
//!
//! In JSON (`--output json`), field names are snake_case and stable; enums are their
//! short names (`"succeeded"`, `"bug_fix"`), timestamps RFC 3339 in UTC with
//! microseconds (null when unset), and optional strings null when empty. Numbers the
//! contract marks as "none" with a sentinel are null instead: a limit of 0 (no limit), a
//! measurement of -1 (nothing measured yet).

use std::{
    borrow::Cow,
    fmt::Write as _,
    io::{self, Write as _},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost_types::Timestamp;
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

/// How commands print their results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Readable text: summaries, tables, live progress.
    Text,
    /// JSON: one object or array (task and workflow watch: one event object per line;
    /// providers watch: one array per line).
    Json,
}

/// How much of a text's layout [`escape`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One line (a table cell, a field, a status line): every control character is
    /// shown escaped, line breaks and tabs included.
    Line,
    /// Lines meant to be read (a prompt, a task's output): line breaks (`\n`, `\r\n`)
    /// and tabs stay; every other control character is shown escaped.
    Body,
}

/// Whether a terminal could obey `c` rather than show it: the C0 controls (ESC
/// included), DEL, the C1 controls (U+0080 to U+009F; some terminals take U+009B as
/// CSI), and the bidirectional overrides and isolates (U+202A to U+202E, U+2066 to
/// U+2069), which reorder what follows them on screen.
pub fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` safe to print on a terminal: each control character (see [`is_control`]) is
/// shown as an escape, `\e` for ESC, `\n`, `\r`, `\t`, `\0`, and `\u{hex}` for the
/// others; in a [`Layout::Body`], line breaks and tabs stay. Everything else, a backslash
/// included, is left as it is, so escaping twice changes nothing. Borrows when there is
/// nothing to escape.
pub fn escape(text: &str, layout: Layout) -> Cow<'_, str> {
    let keep = |c: char| layout == Layout::Body && matches!(c, '\n' | '\t');
    if !text.chars().any(|c| is_control(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if layout == Layout::Body && c == '\r' && chars.peek() == Some(&'\n') {
            // A CRLF line end is a line end.
            continue;
        }
        match c {
            c if keep(c) || !is_control(c) => out.push(c),
            '\x1b' => out.push_str("\\e"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for one line.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    escape(text, Layout::Line)
}

/// Writes `text` (lines for people) to stdout at once, escaped as a [`Layout::Body`],
/// and flushes.
pub fn print_stdout(text: &str) -> io::Result<()> {
    print_stdout_exact(&escape(text, Layout::Body))
}

/// Writes `text` to stdout as one escaped line (see [`escape_line`]), then a newline.
pub fn print_line(text: &str) -> io::Result<()> {
    print_stdout_exact(&format!("{}\n", escape_line(text)))
}

/// Writes `text` to stdout exactly as it is, and flushes: for JSON, an artifact piped
/// to a file, and the live views' own terminal sequences.
pub fn print_stdout_exact(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `text` to stderr as one escaped line (see [`escape_line`]).
pub fn print_stderr_line(text: &str) {
    eprintln!("{}", escape_line(text));
}

/// Writes a value as pretty JSON, followed by a newline, to stdout. JSON is printed
/// exactly (serde escapes the control characters JSON strings cannot hold).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(print_stdout_exact(&text)?)
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

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
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

/// Free text (an event's message, a failure, an output summary) read on one line: line
/// breaks become spaces, and any other control character is escaped (see
/// [`escape_line`]).
pub fn single_line(text: &str) -> String {
    escape_line(&text.replace("\r\n", " ").replace(['\r', '\n'], " ")).into_owned()
}

/// How many terminal columns `text` takes (wide characters take two, combining marks
/// none). For escaped text: control characters count as none.
pub fn width(text: &str) -> usize {
    text.width()
}

/// The start of `text` that fits in `max` terminal columns (see [`width`]), ending with
/// `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let room = max.saturating_sub(1);
    let mut cut = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > room {
            break;
        }
        used += w;
        cut.push(c);
    }
    if max > 0 {
        cut.push('…');
    }
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
/// get` show a record's fields). Each value is escaped to stay on its line.
pub fn field_lines(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (name, value) in fields {
        let label = format!("{name}:");
        let _ = writeln!(text, "{label:<width$} {}", escape_line(value));
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

/// Columns aligned with two spaces between them; the last column is not padded. Cells
/// are escaped as they are added (see [`escape_line`]), so each row is one line.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![
                headers
                    .iter()
                    .map(|h| escape_line(h).into_owned())
                    .collect(),
            ],
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .map(|cell| match escape_line(&cell) {
                Cow::Borrowed(_) => cell,
                Cow::Owned(escaped) => escaped,
            })
            .collect();
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
                    .map(|cell| width(cell))
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
                    let pad = widths[col].saturating_sub(width(cell));
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

    #[test]
    fn control_characters_are_shown_escaped() {
        let cases = [
            (
                "plain text, \\ and ünïcödé 日本",
                "plain text, \\ and ünïcödé 日本",
            ),
            ("\x1b[31mred\x1b[0m", "\\e[31mred\\e[0m"),
            ("a\nb\r\nc\td\0", "a\\nb\\r\\nc\\td\\0"),
            ("bell\x07 del\x7f", "bell\\u{7} del\\u{7f}"),
            ("c1 csi\u{9b}31m nel\u{85}", "c1 csi\\u{9b}31m nel\\u{85}"),
            (
                "bidi \u{202e}evil\u{202c} \u{2066}iso\u{2069}",
                "bidi \\u{202e}evil\\u{202c} \\u{2066}iso\\u{2069}",
            ),
            // Neighbours of the ranges are ordinary text.
            (
                "\u{a0}\u{2029}\u{2065}\u{206a}",
                "\u{a0}\u{2029}\u{2065}\u{206a}",
            ),
        ];
        for (raw, shown) in cases {
            assert_eq!(escape_line(raw), shown, "{raw:?}");
            assert_eq!(escape_line(shown), shown, "escaping twice changes nothing");
        }
        assert!(matches!(escape_line("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn bodies_keep_their_lines_and_tabs() {
        let raw = "fn main() {\r\n\tprintln!(\"\x1b[2J\");\r}\n";
        assert_eq!(
            escape(raw, Layout::Body),
            "fn main() {\n\tprintln!(\"\\e[2J\");\\r}\n"
        );
        assert_eq!(
            escape(&escape(raw, Layout::Body), Layout::Body),
            escape(raw, Layout::Body)
        );
    }

    #[test]
    fn one_line_text_turns_breaks_into_spaces_and_escapes_the_rest() {
        assert_eq!(single_line("a\r\nb\nc\rd"), "a b c d");
        assert_eq!(single_line("tab\there \x1b[1m"), "tab\\there \\e[1m");
    }

    #[test]
    fn cells_and_fields_are_escaped_so_rows_stay_rows() {
        let mut table = Table::new(&["ID", "LABELS"]);
        table.row(vec!["t1".into(), "\x1b[31mred\nsecond row".into()]);
        table.row(vec!["t2".into(), "ok".into()]);
        assert_eq!(
            table.render(),
            "ID  LABELS\nt1  \\e[31mred\\nsecond row\nt2  ok\n"
        );
        let fields = field_lines(&[("label", "a\nb".into()), ("id", "t1".into())]);
        assert_eq!(fields, "label: a\\nb\nid:    t1\n");
    }

    #[test]
    fn widths_count_terminal_columns() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("日本"), 4);
        assert_eq!(width("⠋ ● ◐ …"), 7);
        assert_eq!(truncate("日本語のテキスト", 7), "日本語…");
        assert_eq!(width(&truncate("日本語のテキスト", 7)), 7);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abc", 0), "");
        // Wide characters line up in tables.
        let mut table = Table::new(&["NAME", "X"]);
        table.row(vec!["日本".into(), "1".into()]);
        table.row(vec!["abcde".into(), "2".into()]);
        assert_eq!(table.render(), "NAME   X\n日本   1\nabcde  2\n");
    }
}
