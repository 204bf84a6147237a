//! Text rendering: tables, summaries, times, durations and costs.

use std::{
    borrow::Cow,
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost_types::Timestamp;
use supervisor_proto::{
    convert::EnumName,
    v1::{Priority, ProviderInfo, Task, TaskStats, TaskStatus, TaskType},
};

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

/// The name of a priority; unspecified means normal.
pub fn priority_name(value: i32) -> Cow<'static, str> {
    match Priority::try_from(value) {
        Ok(Priority::Unspecified) => Cow::Borrowed(Priority::Normal.name()),
        _ => Priority::name_of(value),
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

/// The time between two timestamps, when both are set and in order.
pub fn between(from: Option<&Timestamp>, to: Option<&Timestamp>) -> Option<Duration> {
    let from = from.and_then(system_time)?;
    let to = to.and_then(system_time)?;
    to.duration_since(from).ok()
}

/// A cost in millionths of a dollar, exactly: `$0.001500`.
pub fn cost(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A time limit in milliseconds (`30s`, `1m 30s`); `default` when 0.
pub fn millis(ms: u64) -> String {
    if ms == 0 {
        "default".to_owned()
    } else {
        humantime::format_duration(Duration::from_millis(ms)).to_string()
    }
}

/// `attempt/max` (`1/3`), or just the attempt when the maximum is the server's default.
pub fn attempts(attempt: u32, max_attempts: u32) -> String {
    if max_attempts == 0 {
        attempt.to_string()
    } else {
        format!("{attempt}/{max_attempts}")
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

/// The task list: id, type, status, priority, attempt, age and labels.
pub fn task_table(tasks: &[Task], now: SystemTime) -> String {
    let mut table = Table::new(&[
        "ID", "TYPE", "STATUS", "PRIORITY", "ATTEMPT", "AGE", "LABELS",
    ]);
    for task in tasks {
        table.row(vec![
            task.id.clone(),
            TaskType::name_of(task.r#type).into_owned(),
            TaskStatus::name_of(task.status).into_owned(),
            priority_name(task.priority).into_owned(),
            attempts(task.attempt, task.max_attempts),
            age(task.created_at.as_ref(), now),
            task.labels.join(","),
        ]);
    }
    table.render()
}

/// Indents every line of `text` by `prefix`.
fn indented(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// One task in full: fields, prompt, and result or error.
pub fn task_summary(task: &Task, now: SystemTime) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", task.id.clone()),
        ("type", TaskType::name_of(task.r#type).into_owned()),
        ("status", TaskStatus::name_of(task.status).into_owned()),
        ("priority", priority_name(task.priority).into_owned()),
        ("attempt", attempts(task.attempt, task.max_attempts)),
        ("timeout", millis(task.timeout_ms)),
    ];
    if !task.labels.is_empty() {
        fields.push(("labels", task.labels.join(", ")));
    }
    if !task.context.is_empty() {
        let mut pairs: Vec<_> = task.context.iter().collect();
        pairs.sort();
        let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.push(("context", pairs.join(", ")));
    }
    let optional = [
        ("idempotency key", &task.idempotency_key),
        ("retry of", &task.retry_of),
        ("node", &task.node_id),
        ("tenant", &task.tenant),
    ];
    for (name, value) in optional {
        if !value.is_empty() {
            fields.push((name, value.clone()));
        }
    }
    if let Some(created) = &task.created_at {
        let ago = age(Some(created), now);
        fields.push((
            "created",
            format!("{} ({ago} ago)", rfc3339_seconds(created)),
        ));
    }
    let times = [
        ("started", &task.started_at),
        ("finished", &task.finished_at),
        ("next attempt", &task.next_attempt_at),
    ];
    for (name, value) in times {
        if let Some(ts) = value {
            fields.push((name, rfc3339_seconds(ts)));
        }
    }
    if let Some(took) = between(task.created_at.as_ref(), task.finished_at.as_ref()) {
        fields.push(("took", elapsed(took)));
    }
    if let Some(result) = &task.result {
        let usage = result.usage.unwrap_or_default();
        let model = match (result.provider.as_str(), result.model.as_str()) {
            ("", model) => model.to_owned(),
            (provider, "") => provider.to_owned(),
            (provider, model) => format!("{provider} / {model}"),
        };
        if !model.is_empty() {
            fields.push(("provider", model));
        }
        fields.push((
            "usage",
            format!(
                "{} input + {} output tokens",
                usage.input_tokens, usage.output_tokens
            ),
        ));
        fields.push(("cost", cost(result.cost_micros)));
        fields.push(("output size", format!("{} bytes", result.output_bytes)));
    }
    if !task.error.is_empty() {
        fields.push(("error", task.error.clone()));
    }

    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (name, value) in &fields {
        let label = format!("{name}:");
        let _ = writeln!(text, "{label:<width$} {value}");
    }
    text.push_str("prompt:\n");
    text.push_str(&indented(&task.prompt, "  "));
    if let Some(result) = &task.result
        && !result.output.is_empty()
    {
        text.push_str("output:\n");
        text.push_str(&indented(&result.output, "  "));
    }
    text
}

/// The one-line outcome of a finished task (`task t1 succeeded in 8.4s ...`).
pub fn outcome_line(task: &Task) -> String {
    let status = task.status();
    let took = between(task.created_at.as_ref(), task.finished_at.as_ref())
        .map(|d| format!(" in {}", elapsed(d)))
        .unwrap_or_default();
    let tries = match task.attempt {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let mut line = format!("task {} {}{took}", task.id, status.name());
    match status {
        TaskStatus::Succeeded => {
            let _ = write!(line, " ({tries}");
            if let Some(result) = &task.result {
                let usage = result.usage.unwrap_or_default();
                let _ = write!(
                    line,
                    ", {} in / {} out tokens, {}",
                    usage.input_tokens,
                    usage.output_tokens,
                    cost(result.cost_micros)
                );
            }
            line.push(')');
        }
        TaskStatus::Failed => {
            let _ = write!(line, " after {tries}");
        }
        _ => {}
    }
    if !task.error.is_empty() && status != TaskStatus::Succeeded {
        let _ = write!(line, ": {}", task.error);
    }
    line
}

/// Task counts, one status a line, and the total.
pub fn stats_text(stats: &TaskStats) -> String {
    let rows = [
        (TaskStatus::Queued.name(), stats.queued),
        (TaskStatus::Running.name(), stats.running),
        (TaskStatus::RetryWait.name(), stats.retry_wait),
        (TaskStatus::Succeeded.name(), stats.succeeded),
        (TaskStatus::Failed.name(), stats.failed),
        (TaskStatus::Cancelled.name(), stats.cancelled),
    ];
    let total = rows.iter().fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
    let mut table = Table::new(&["STATUS", "TASKS"]);
    for (name, count) in rows {
        table.row(vec![name.to_owned(), count.to_string()]);
    }
    table.row(vec!["total".to_owned(), total.to_string()]);
    table.render()
}

/// The providers and their counters.
pub fn providers_table(providers: &[ProviderInfo]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "HEALTH",
        "IN-FLIGHT",
        "STARTED",
        "FAILED",
        "ACCEPTED",
        "REFUSED",
        "TOKENS IN/OUT",
        "COST",
        "DETAIL",
    ]);
    for p in providers {
        table.row(vec![
            p.name.clone(),
            p.kind.clone(),
            if p.healthy { "ok" } else { "unhealthy" }.to_owned(),
            format!("{}/{}", p.in_flight, p.max_concurrency),
            p.executions_started.to_string(),
            p.executions_failed.to_string(),
            p.completions_accepted.to_string(),
            p.completions_refused.to_string(),
            format!("{}/{}", p.input_tokens, p.output_tokens),
            cost(p.cost_micros),
            p.health_detail.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use supervisor_proto::{
        convert::timestamp_from_micros,
        v1::{TaskResult, Usage},
    };

    use super::*;

    const T0: i64 = 1_700_000_000_000_000;

    fn at(micros: i64) -> SystemTime {
        system_time(&timestamp_from_micros(micros)).expect("valid")
    }

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
        assert_eq!(attempts(1, 3), "1/3");
        assert_eq!(attempts(2, 0), "2");
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "LONGER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "".into()]);
        assert_eq!(table.render(), "A          LONGER  C\nwide cell  x\n");
    }

    fn task() -> Task {
        Task {
            id: "t1".into(),
            r#type: TaskType::PrReview as i32,
            status: TaskStatus::Failed as i32,
            priority: Priority::High as i32,
            prompt: "review\nplease".into(),
            labels: vec!["a".into(), "b".into()],
            attempt: 3,
            max_attempts: 3,
            error: "provider timed out".into(),
            created_at: Some(timestamp_from_micros(T0)),
            finished_at: Some(timestamp_from_micros(T0 + 8_450_000)),
            ..Default::default()
        }
    }

    #[test]
    fn task_table_rows() {
        let text = task_table(&[task()], at(T0 + 90 * 1_000_000));
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ID  TYPE       STATUS  PRIORITY  ATTEMPT  AGE  LABELS",
                "t1  pr_review  failed  high      3/3      1m   a,b",
            ]
        );
    }

    #[test]
    fn task_summary_lists_fields_prompt_and_output() {
        let mut ok = task();
        ok.status = TaskStatus::Succeeded as i32;
        ok.error.clear();
        ok.result = Some(TaskResult {
            output: "looks good".into(),
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 7,
            }),
            cost_micros: 20,
            provider: "mock".into(),
            model: "m1".into(),
            output_bytes: 10,
            ..Default::default()
        });
        let text = task_summary(&ok, at(T0 + 60 * 1_000_000));
        // Values are aligned in one column.
        let column = text.find("t1").expect("id shown");
        assert!(text.starts_with("id:"), "{text}");
        for line in text.lines().take_while(|l| !l.starts_with("prompt:")) {
            assert!(line[..column].ends_with(' '), "{line:?} in\n{text}");
        }
        let squashed: String = text
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        for expected in [
            "type: pr_review\n",
            "status: succeeded\n",
            "labels: a, b\n",
            "created: 2023-11-14T22:13:20Z (1m ago)\n",
            "took: 8.4s\n",
            "provider: mock / m1\n",
            "usage: 5 input + 7 output tokens\n",
            "cost: $0.000020\n",
        ] {
            assert!(squashed.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(
            text.ends_with("prompt:\n  review\n  please\noutput:\n  looks good\n"),
            "{text}"
        );
    }

    #[test]
    fn outcome_lines() {
        assert_eq!(
            outcome_line(&task()),
            "task t1 failed in 8.4s after 3 attempts: provider timed out"
        );
        let mut ok = task();
        ok.status = TaskStatus::Succeeded as i32;
        ok.attempt = 1;
        ok.result = Some(TaskResult {
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 7,
            }),
            cost_micros: 20,
            ..Default::default()
        });
        assert_eq!(
            outcome_line(&ok),
            "task t1 succeeded in 8.4s (1 attempt, 5 in / 7 out tokens, $0.000020)"
        );
        let mut cancelled = task();
        cancelled.status = TaskStatus::Cancelled as i32;
        cancelled.error = "by user".into();
        cancelled.finished_at = None;
        assert_eq!(outcome_line(&cancelled), "task t1 cancelled: by user");
    }

    #[test]
    fn stats_and_providers() {
        let stats = TaskStats {
            queued: 2,
            succeeded: 5,
            ..Default::default()
        };
        let text = stats_text(&stats);
        assert!(text.contains("retry_wait  0\n"), "{text}");
        assert!(text.ends_with("total       7\n"), "{text}");
        let text = providers_table(&[ProviderInfo {
            name: "mock".into(),
            kind: "mock".into(),
            healthy: true,
            in_flight: 1,
            max_concurrency: 4,
            cost_micros: 1,
            ..Default::default()
        }]);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("mock  mock  ok"))
        );
        assert!(text.contains("1/4"), "{text}");
    }
}
