//! Text rendering: tables, summaries, times, durations and costs.

use std::{
    borrow::Cow,
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost_types::Timestamp;
use supervisor_proto::{
    convert::EnumName,
    v1::{
        Attempt, GetSpendResponse, Priority, ProviderInfo, RunStatus, Schedule, StepRun, Task,
        TaskStats, TaskStatus, TaskType, Usage, ValidateWorkflowResponse, ValidationIssue,
        WorkflowRun,
    },
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

/// A limit in US dollars as given (`$0.5`).
pub fn dollars(usd: f64) -> String {
    format!("${usd}")
}

/// What a task cost in all its attempts, in millionths of a dollar: the task's total,
/// or its result's cost when that is larger (a server that does not count attempts).
pub fn total_cost_micros(task: &Task) -> u64 {
    let result = task.result.as_ref().map_or(0, |r| r.cost_micros);
    task.cost_micros.max(result)
}

/// `5 input + 7 output tokens`, with cache reads and writes when there were any.
pub fn usage_text(usage: &Usage) -> String {
    let mut text = format!(
        "{} input + {} output tokens",
        usage.input_tokens, usage.output_tokens
    );
    if usage.cache_read_tokens > 0 || usage.cache_write_tokens > 0 {
        let _ = write!(
            text,
            " ({} cache read, {} cache write)",
            usage.cache_read_tokens, usage.cache_write_tokens
        );
    }
    text
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
    let routing = [
        ("specialty", &task.specialty),
        ("strategy", &task.routing_strategy),
    ];
    for (name, value) in routing {
        if !value.is_empty() {
            fields.push((name, value.clone()));
        }
    }
    if !task.preferred_providers.is_empty() {
        fields.push(("prefer", task.preferred_providers.join(", ")));
    }
    if !task.excluded_providers.is_empty() {
        fields.push(("exclude", task.excluded_providers.join(", ")));
    }
    if task.max_cost_usd > 0.0 {
        fields.push((
            "max cost",
            format!("{} per attempt", dollars(task.max_cost_usd)),
        ));
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
        fields.push(("usage", usage_text(&usage)));
        fields.push(("output size", format!("{} bytes", result.output_bytes)));
        for artifact in &result.artifacts {
            fields.push((
                "artifact",
                format!(
                    "{} ({}, {} bytes; `supervisor task artifact {} {}`)",
                    artifact.name, artifact.media_type, artifact.size_bytes, task.id, artifact.name
                ),
            ));
        }
    }
    if task.result.is_some() || !task.attempts.is_empty() || task.cost_micros > 0 {
        let mut total = cost(total_cost_micros(task));
        if task.attempts.len() > 1 {
            let _ = write!(total, " ({} attempts)", task.attempts.len());
        }
        fields.push(("cost", total));
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
    if !task.attempts.is_empty() {
        text.push_str("attempts:\n");
        text.push_str(&indented(&attempts_table(&task.attempts), "  "));
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

/// The ended attempts of a task: number, provider, model, outcome, tokens and cost.
pub fn attempts_table(attempts: &[Attempt]) -> String {
    let mut table = Table::new(&["#", "PROVIDER", "MODEL", "OUTCOME", "TOKENS IN/OUT", "COST"]);
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    for attempt in attempts {
        let usage = attempt.usage.unwrap_or_default();
        table.row(vec![
            attempt.attempt.to_string(),
            or_dash(&attempt.provider),
            or_dash(&attempt.model),
            or_dash(&attempt.outcome),
            format!("{}/{}", usage.input_tokens, usage.output_tokens),
            cost(attempt.cost_micros),
        ]);
    }
    table.render()
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
                    cost(total_cost_micros(task))
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

/// The providers: health, circuit breaker, load, executions, success rate, latency,
/// rate limits, tokens and spend, and the health check's detail last.
///
/// Started executions, accepted and refused completions and the models are left to
/// `--output json`.
pub fn providers_table(providers: &[ProviderInfo]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "HEALTH",
        "CIRCUIT",
        "IN-FLIGHT",
        "OK/FAILED",
        "SUCCESS",
        "P50/P95 MS",
        "LIMITS RPM/TPM",
        "TOKENS IN/OUT",
        "SPEND",
        "DETAIL",
    ]);
    for p in providers {
        let mut circuit = if p.circuit.is_empty() {
            "-".to_owned()
        } else {
            p.circuit.clone()
        };
        if p.throttled_for_ms > 0 {
            let left = elapsed(Duration::from_millis(p.throttled_for_ms));
            let _ = write!(circuit, ", throttled {left}");
        }
        table.row(vec![
            p.name.clone(),
            p.kind.clone(),
            if p.healthy { "ok" } else { "unhealthy" }.to_owned(),
            circuit,
            format!("{}/{}", p.in_flight, p.max_concurrency),
            format!("{}/{}", p.executions_succeeded, p.executions_failed),
            percent(p.success_rate),
            pair(&latency_ms(p.latency_p50_ms), &latency_ms(p.latency_p95_ms)),
            pair(
                &limit(u64::from(p.requests_per_minute)),
                &limit(p.tokens_per_minute),
            ),
            format!("{}/{}", p.input_tokens, p.output_tokens),
            cost(p.cost_micros),
            p.health_detail.clone(),
        ]);
    }
    table.render()
}

/// `a/b`, or `-` when both are `-`.
fn pair(a: &str, b: &str) -> String {
    if a == "-" && b == "-" {
        "-".to_owned()
    } else {
        format!("{a}/{b}")
    }
}

/// A share as a percentage (`97.5%`, `100%`); `-` when negative (not measured yet).
pub fn percent(share: f64) -> String {
    if share.is_nan() || share < 0.0 {
        return "-".to_owned();
    }
    let text = format!("{:.1}", share * 100.0);
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// Milliseconds: one decimal under 10 (`0.4`), whole above (`820`); `-` when negative
/// (not measured yet).
pub fn latency_ms(ms: f64) -> String {
    if ms.is_nan() || ms < 0.0 {
        "-".to_owned()
    } else if ms < 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A rate limit; `-` when 0 (none).
fn limit(per_minute: u64) -> String {
    if per_minute == 0 {
        "-".to_owned()
    } else {
        per_minute.to_string()
    }
}

/// Spend per day and provider, then the total.
pub fn spend_table(spend: &GetSpendResponse) -> String {
    let mut table = Table::new(&[
        "DAY",
        "PROVIDER",
        "ATTEMPTS",
        "TOKENS IN",
        "TOKENS OUT",
        "COST",
    ]);
    let (mut attempts, mut input, mut output) = (0u64, 0u64, 0u64);
    for row in &spend.rows {
        attempts = attempts.saturating_add(row.attempts);
        input = input.saturating_add(row.input_tokens);
        output = output.saturating_add(row.output_tokens);
        table.row(vec![
            row.day.clone(),
            row.provider.clone(),
            row.attempts.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            cost(row.cost_micros),
        ]);
    }
    table.row(vec![
        "total".to_owned(),
        String::new(),
        attempts.to_string(),
        input.to_string(),
        output.to_string(),
        cost(spend.total_cost_micros),
    ]);
    table.render()
}

/// The short name of a workflow run status: `running`, `succeeded`, `failed` or
/// `cancelled` (`unspecified` for 0); unknown values read as their number.
pub fn run_status_name(value: i32) -> Cow<'static, str> {
    let name = match RunStatus::try_from(value) {
        Ok(RunStatus::Unspecified) => "unspecified",
        Ok(RunStatus::Running) => "running",
        Ok(RunStatus::Succeeded) => "succeeded",
        Ok(RunStatus::Failed) => "failed",
        Ok(RunStatus::Cancelled) => "cancelled",
        Err(_) => return Cow::Owned(value.to_string()),
    };
    Cow::Borrowed(name)
}

/// The step states, in the order counts are shown, with their progress symbols.
const STEP_STATES: [(&str, char); 6] = [
    ("succeeded", '●'),
    ("running", '◐'),
    ("pending", '○'),
    ("failed", '✗'),
    ("cancelled", '⊘'),
    ("skipped", '↷'),
];

/// The symbol of a step state: ○ pending, ◐ running, ● succeeded, ✗ failed,
/// ⊘ cancelled, ↷ skipped; `?` for a state this version does not know.
pub fn step_symbol(state: &str) -> char {
    STEP_STATES
        .iter()
        .find(|(name, _)| *name == state)
        .map_or('?', |(_, symbol)| *symbol)
}

/// Whether a step in this state will not change again (unless the run is retried).
pub fn step_has_ended(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "skipped")
}

/// The end of a task id, enough to tell a run's tasks apart (`…4f2a9c1d`): task ids
/// are UUIDv7, whose first digits are a timestamp that tasks started together share.
/// Short ids are kept whole; `-` when empty.
pub fn short_task_id(id: &str) -> String {
    const KEEP: usize = 8;
    let count = id.chars().count();
    if id.is_empty() {
        "-".to_owned()
    } else if count <= KEEP + 1 {
        id.to_owned()
    } else {
        let tail: String = id.chars().skip(count - KEEP).collect();
        format!("…{tail}")
    }
}

/// `text`, or `-` when it is empty.
fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// Longest output summary shown in a step table.
const SUMMARY_CHARS: usize = 80;

/// What a step table says about a step: why it failed (or where to look), or the
/// start of its output, on one line.
fn step_note(step: &StepRun) -> String {
    if !step.failure.is_empty() {
        return single_line(&step.failure);
    }
    if matches!(step.state.as_str(), "failed" | "cancelled") && !step.task_id.is_empty() {
        return format!("see `supervisor task get {}`", step.task_id);
    }
    if step.output_summary.is_empty() {
        return "-".to_owned();
    }
    truncate(
        single_line(step.output_summary.trim()).as_str(),
        SUMMARY_CHARS,
    )
}

/// A run's steps: id, state (with its symbol), full task id, and the start of the
/// output or why the step failed.
pub fn step_table(steps: &[StepRun]) -> String {
    let mut table = Table::new(&["STEP", "STATE", "TASK", "OUTPUT / FAILURE"]);
    for step in steps {
        table.row(vec![
            step.id.clone(),
            format!("{} {}", step_symbol(&step.state), step.state),
            or_dash(&step.task_id),
            step_note(step),
        ]);
    }
    table.render()
}

/// How many steps are in each state, in a fixed order, naming the failed and cancelled
/// ones: `2 succeeded, 1 failed (fix), 1 skipped`; `no steps` when there are none.
pub fn step_counts(steps: &[StepRun]) -> String {
    let mut parts = Vec::new();
    for (state, _) in STEP_STATES {
        let ids: Vec<&str> = steps
            .iter()
            .filter(|step| step.state == state)
            .map(|step| step.id.as_str())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let mut part = format!("{} {state}", ids.len());
        if matches!(state, "failed" | "cancelled") {
            let _ = write!(part, " ({})", ids.join(", "));
        }
        parts.push(part);
    }
    let unknown = steps
        .iter()
        .filter(|step| !STEP_STATES.iter().any(|(name, _)| *name == step.state))
        .count();
    if unknown > 0 {
        parts.push(format!("{unknown} in other states"));
    }
    if parts.is_empty() {
        "no steps".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `ended/total` steps of a run (`3/5`).
fn steps_done(steps: &[StepRun]) -> String {
    let ended = steps
        .iter()
        .filter(|step| step_has_ended(&step.state))
        .count();
    format!("{ended}/{}", steps.len())
}

/// The workflow run list: id, workflow name, status, ended/total steps, retries, age.
pub fn run_table(runs: &[WorkflowRun], now: SystemTime) -> String {
    let mut table = Table::new(&["ID", "NAME", "STATUS", "STEPS", "RETRIES", "AGE"]);
    for run in runs {
        table.row(vec![
            run.id.clone(),
            or_dash(&run.name),
            run_status_name(run.status).into_owned(),
            steps_done(&run.steps),
            run.retries.to_string(),
            age(run.created_at.as_ref(), now),
        ]);
    }
    table.render()
}

/// One workflow run in full: its fields, then the table of its steps.
pub fn run_summary(run: &WorkflowRun, now: SystemTime) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", run.id.clone()),
        ("name", or_dash(&run.name)),
        ("status", run_status_name(run.status).into_owned()),
        ("steps", step_counts(&run.steps)),
    ];
    if run.retries > 0 {
        fields.push(("retries", run.retries.to_string()));
    }
    if !run.vars.is_empty() {
        let mut pairs: Vec<_> = run.vars.iter().collect();
        pairs.sort();
        let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.push(("vars", pairs.join(", ")));
    }
    if let Some(created) = &run.created_at {
        let ago = age(Some(created), now);
        fields.push((
            "created",
            format!("{} ({ago} ago)", rfc3339_seconds(created)),
        ));
    }
    if let Some(finished) = &run.finished_at {
        fields.push(("finished", rfc3339_seconds(finished)));
    }
    if let Some(took) = between(run.created_at.as_ref(), run.finished_at.as_ref()) {
        fields.push(("took", elapsed(took)));
    }
    if let Some(deadline) = &run.deadline_at
        && run.status() == RunStatus::Running
    {
        fields.push(("deadline", rfc3339_seconds(deadline)));
    }
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (name, value) in &fields {
        let label = format!("{name}:");
        let _ = writeln!(text, "{label:<width$} {value}");
    }
    if !run.steps.is_empty() {
        text.push_str("steps:\n");
        text.push_str(&indented(&step_table(&run.steps), "  "));
    }
    text
}

/// The one-line outcome of a run:
/// `workflow run r1 (fix) failed in 8.4s: 1 succeeded, 1 failed (fix), 2 skipped`.
pub fn run_outcome_line(run: &WorkflowRun) -> String {
    let took = between(run.created_at.as_ref(), run.finished_at.as_ref())
        .map(|d| format!(" in {}", elapsed(d)))
        .unwrap_or_default();
    let name = if run.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", run.name)
    };
    format!(
        "workflow run {}{name} {}{took}: {}",
        run.id,
        run_status_name(run.status),
        step_counts(&run.steps)
    )
}

/// One validation issue: `error[cycle] step fix: fix needs itself`.
fn issue_line(severity: &str, issue: &ValidationIssue) -> String {
    let mut line = format!("{severity}[{}]", or_dash(&issue.code));
    if !issue.step.is_empty() {
        let _ = write!(line, " step {}", issue.step);
    }
    let _ = write!(line, ": {}", single_line(&issue.message));
    line
}

/// `1 error`, `2 warnings`.
fn count_of(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A validation report: every error and warning, one a line, then the verdict
/// (`valid`, `valid, 1 warning` or `invalid: 2 errors, 1 warning`).
pub fn validation_text(report: &ValidateWorkflowResponse) -> String {
    let mut text = String::new();
    for issue in &report.errors {
        text.push_str(&issue_line("error", issue));
        text.push('\n');
    }
    for issue in &report.warnings {
        text.push_str(&issue_line("warning", issue));
        text.push('\n');
    }
    let warnings = count_of(report.warnings.len(), "warning");
    let verdict = match (report.valid, report.warnings.is_empty()) {
        (true, true) => "valid".to_owned(),
        (true, false) => format!("valid, {warnings}"),
        (false, _) => {
            let mut verdict = format!("invalid: {}", count_of(report.errors.len(), "error"));
            if !report.warnings.is_empty() {
                let _ = write!(verdict, ", {warnings}");
            }
            verdict
        }
    };
    text.push_str(&verdict);
    text.push('\n');
    text
}

/// A schedule's time zone: `UTC` when unset.
pub fn timezone_name(timezone: &str) -> &str {
    if timezone.is_empty() { "UTC" } else { timezone }
}

/// A schedule's missed-tick policy: `skip` when unset.
pub fn missed_name(missed: &str) -> &str {
    if missed.is_empty() { "skip" } else { missed }
}

/// The schedules: name, cron, time zone, missed-tick policy, state, workflow, next
/// tick (none while paused), last tick, its run and the runs started.
pub fn schedule_table(schedules: &[Schedule], now: SystemTime) -> String {
    let mut table = Table::new(&[
        "NAME",
        "CRON",
        "TIMEZONE",
        "MISSED",
        "STATE",
        "WORKFLOW",
        "NEXT RUN",
        "LAST FIRED",
        "LAST RUN",
        "RUNS",
    ]);
    for schedule in schedules {
        let next = match &schedule.next_fire_at {
            Some(next) if !schedule.paused => rfc3339_seconds(next),
            _ => "-".to_owned(),
        };
        let last = match &schedule.last_fired_at {
            Some(last) => format!("{} ago", age(Some(last), now)),
            None => "-".to_owned(),
        };
        table.row(vec![
            schedule.name.clone(),
            schedule.cron.clone(),
            timezone_name(&schedule.timezone).to_owned(),
            missed_name(&schedule.missed).to_owned(),
            if schedule.paused { "paused" } else { "active" }.to_owned(),
            or_dash(&schedule.workflow_name),
            next,
            last,
            or_dash(&schedule.last_run_id),
            schedule.runs_started.to_string(),
        ]);
    }
    table.render()
}

/// `next run at 2026-01-02T02:00:00Z`, `paused`, or `no next run` for a schedule.
pub fn schedule_next(schedule: &Schedule) -> String {
    match &schedule.next_fire_at {
        _ if schedule.paused => "paused".to_owned(),
        Some(next) => format!("next run at {}", rfc3339_seconds(next)),
        None => "no next run".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use supervisor_proto::{
        convert::timestamp_from_micros,
        v1::{SpendRow, TaskResult},
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
                ..Default::default()
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
                ..Default::default()
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
    fn task_summary_shows_routing_cost_and_attempts() {
        let mut routed = task();
        routed.specialty = "security_analyst".into();
        routed.routing_strategy = "failover_chain".into();
        routed.preferred_providers = vec!["claude".into(), "mock".into()];
        routed.excluded_providers = vec!["openai".into()];
        routed.max_cost_usd = 0.5;
        routed.cost_micros = 2_500;
        routed.attempts = vec![
            Attempt {
                attempt: 1,
                outcome: "rate_limited".into(),
                ..Default::default()
            },
            Attempt {
                attempt: 2,
                provider: "claude".into(),
                model: "sonnet".into(),
                outcome: "timeout".into(),
                usage: Some(Usage {
                    input_tokens: 1200,
                    output_tokens: 30,
                    ..Default::default()
                }),
                cost_micros: 2_500,
                ..Default::default()
            },
        ];
        let text = task_summary(&routed, at(T0 + 60 * 1_000_000));
        let squashed: String = text
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        for expected in [
            "specialty: security_analyst\n",
            "strategy: failover_chain\n",
            "prefer: claude, mock\n",
            "exclude: openai\n",
            "max cost: $0.5 per attempt\n",
            "cost: $0.002500 (2 attempts)\n",
        ] {
            assert!(squashed.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(
            text.contains(
                "attempts:\n  \
                 #  PROVIDER  MODEL   OUTCOME       TOKENS IN/OUT  COST\n  \
                 1  -         -       rate_limited  0/0            $0.000000\n  \
                 2  claude    sonnet  timeout       1200/30        $0.002500\n\
                 prompt:\n"
            ),
            "{text}"
        );

        // Nothing about routing or cost for a task that has not run.
        let text = task_summary(&task(), at(T0));
        for absent in [
            "specialty",
            "strategy",
            "prefer",
            "exclude",
            "max cost",
            "cost:",
        ] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        assert!(!text.contains("attempts:"), "{text}");
    }

    #[test]
    fn usage_mentions_cache_tokens_when_used() {
        let usage = Usage {
            input_tokens: 5,
            output_tokens: 7,
            ..Default::default()
        };
        assert_eq!(usage_text(&usage), "5 input + 7 output tokens");
        let cached = Usage {
            cache_read_tokens: 100,
            ..usage
        };
        assert_eq!(
            usage_text(&cached),
            "5 input + 7 output tokens (100 cache read, 0 cache write)"
        );
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
        let fresh = ProviderInfo {
            name: "mock".into(),
            kind: "mock".into(),
            healthy: true,
            circuit: "closed".into(),
            in_flight: 1,
            max_concurrency: 4,
            success_rate: -1.0,
            latency_p50_ms: -1.0,
            latency_p95_ms: -1.0,
            cost_micros: 1,
            ..Default::default()
        };
        let busy = ProviderInfo {
            name: "claude".into(),
            kind: "anthropic".into(),
            healthy: false,
            health_detail: "401 from the API".into(),
            circuit: "open".into(),
            throttled_for_ms: 2_500,
            max_concurrency: 8,
            executions_succeeded: 39,
            executions_failed: 1,
            success_rate: 0.975,
            latency_p50_ms: 812.4,
            latency_p95_ms: 2_301.0,
            requests_per_minute: 50,
            input_tokens: 1_000,
            output_tokens: 200,
            cost_micros: 1_234_567,
            ..Default::default()
        };
        let text = providers_table(&[fresh, busy]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME    KIND       HEALTH     CIRCUIT               IN-FLIGHT  OK/FAILED  \
                 SUCCESS  P50/P95 MS  LIMITS RPM/TPM  TOKENS IN/OUT  SPEND      DETAIL",
                "mock    mock       ok         closed                1/4        0/0        \
                 -        -           -               0/0            $0.000001",
                "claude  anthropic  unhealthy  open, throttled 2.5s  0/8        39/1       \
                 97.5%    812/2301    50/-            1000/200       $1.234567  401 from the API",
            ]
        );
    }

    #[test]
    fn percentages_and_latencies() {
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.9751), "97.5%");
        assert_eq!(percent(-1.0), "-");
        assert_eq!(percent(f64::NAN), "-");
        assert_eq!(latency_ms(0.42), "0.4");
        assert_eq!(latency_ms(12.5), "12");
        assert_eq!(latency_ms(-1.0), "-");
        assert_eq!(pair("-", "-"), "-");
        assert_eq!(pair("50", "-"), "50/-");
    }

    fn step(id: &str, state: &str, task_id: &str) -> StepRun {
        StepRun {
            id: id.into(),
            state: state.into(),
            task_id: task_id.into(),
            ..Default::default()
        }
    }

    fn workflow_run() -> WorkflowRun {
        let mut analyse = step("analyse", "succeeded", "t-analyse");
        analyse.output_summary = format!("The flaky test\nwaits {}", "x".repeat(100));
        let mut fix = step("fix", "failed", "t-fix");
        fix.failure = "its task is invalid: unknown variable\nissue".into();
        WorkflowRun {
            id: "r1".into(),
            name: "fix-and-review".into(),
            status: RunStatus::Failed as i32,
            vars: [
                ("repo".to_owned(), "/src".to_owned()),
                ("issue".to_owned(), "flaky".to_owned()),
            ]
            .into(),
            steps: vec![
                analyse,
                fix,
                step("review", "failed", "t-review"),
                step("refactor", "skipped", ""),
            ],
            retries: 1,
            created_at: Some(timestamp_from_micros(T0)),
            finished_at: Some(timestamp_from_micros(T0 + 65_000_000)),
            ..Default::default()
        }
    }

    #[test]
    fn step_tables_show_output_or_failure() {
        let text = step_table(&workflow_run().steps);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "STEP      STATE        TASK       OUTPUT / FAILURE",
                &format!(
                    "analyse   ● succeeded  t-analyse  The flaky test waits {}…",
                    "x".repeat(58)
                ),
                "fix       ✗ failed     t-fix      its task is invalid: unknown variable issue",
                "review    ✗ failed     t-review   see `supervisor task get t-review`",
                "refactor  ↷ skipped    -          -",
            ]
        );
        let summary = lines[1].split_once("  The").map_or("", |(_, rest)| rest);
        assert_eq!(summary.chars().count() + "The".len(), 80);
    }

    #[test]
    fn run_summary_table_and_outcome() {
        let run = workflow_run();
        let text = run_summary(&run, at(T0 + 120 * 1_000_000));
        assert!(
            text.starts_with(
                "id:       r1\n\
                 name:     fix-and-review\n\
                 status:   failed\n\
                 steps:    1 succeeded, 2 failed (fix, review), 1 skipped\n\
                 retries:  1\n\
                 vars:     issue=flaky, repo=/src\n\
                 created:  2023-11-14T22:13:20Z (2m ago)\n\
                 finished: 2023-11-14T22:14:25Z\n\
                 took:     1m05s\n\
                 steps:\n  STEP "
            ),
            "{text}"
        );
        assert_eq!(
            run_outcome_line(&run),
            "workflow run r1 (fix-and-review) failed in 1m05s: 1 succeeded, 2 failed \
             (fix, review), 1 skipped"
        );
        let lines: Vec<_> = run_table(&[run], at(T0 + 90 * 1_000_000))
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines,
            [
                "ID  NAME            STATUS  STEPS  RETRIES  AGE",
                "r1  fix-and-review  failed  4/4    1        1m",
            ]
        );
        assert_eq!(run_status_name(RunStatus::Cancelled as i32), "cancelled");
        assert_eq!(run_status_name(42), "42");
        assert_eq!(step_counts(&[]), "no steps");
        assert_eq!(
            step_counts(&[step("a", "running", ""), step("b", "weird", "")]),
            "1 running, 1 in other states"
        );
    }

    #[test]
    fn step_symbols_and_short_task_ids() {
        let symbols: String = [
            "pending",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "skipped",
            "new",
        ]
        .iter()
        .map(|state| step_symbol(state))
        .collect();
        assert_eq!(symbols, "○◐●✗⊘↷?");
        assert_eq!(
            short_task_id("0190a5b4-1c2d-7e3f-8a9b-00003f9a2c1d"),
            "…3f9a2c1d"
        );
        assert_eq!(short_task_id("t-review1"), "t-review1");
        assert_eq!(short_task_id(""), "-");
    }

    #[test]
    fn validation_reports() {
        let issue = |code: &str, step: &str, message: &str| ValidationIssue {
            code: code.into(),
            step: step.into(),
            message: message.into(),
        };
        let valid = ValidateWorkflowResponse {
            valid: true,
            ..Default::default()
        };
        assert_eq!(validation_text(&valid), "valid\n");
        let warned = ValidateWorkflowResponse {
            valid: true,
            warnings: vec![issue("unused_var", "", "variable x is never used")],
            ..Default::default()
        };
        assert_eq!(
            validation_text(&warned),
            "warning[unused_var]: variable x is never used\nvalid, 1 warning\n"
        );
        let invalid = ValidateWorkflowResponse {
            valid: false,
            errors: vec![
                issue("cycle", "fix", "fix needs review, which needs fix"),
                issue(
                    "unknown_dependency",
                    "review",
                    "needs \"nope\", which is not a step",
                ),
            ],
            warnings: warned.warnings.clone(),
        };
        assert_eq!(
            validation_text(&invalid),
            "error[cycle] step fix: fix needs review, which needs fix\n\
             error[unknown_dependency] step review: needs \"nope\", which is not a step\n\
             warning[unused_var]: variable x is never used\n\
             invalid: 2 errors, 1 warning\n"
        );
    }

    #[test]
    fn schedule_tables() {
        let schedules = [
            Schedule {
                name: "nightly".into(),
                cron: "0 3 * * *".into(),
                timezone: "Europe/Paris".into(),
                missed: "catch_up_one".into(),
                workflow_name: "audit".into(),
                next_fire_at: Some(timestamp_from_micros(T0 + 3_600_000_000)),
                last_fired_at: Some(timestamp_from_micros(T0 - 7_200_000_000)),
                last_run_id: "r9".into(),
                runs_started: 12,
                ..Default::default()
            },
            Schedule {
                name: "weekly".into(),
                cron: "0 0 * * 1".into(),
                paused: true,
                next_fire_at: Some(timestamp_from_micros(T0)),
                ..Default::default()
            },
        ];
        let lines: Vec<_> = schedule_table(&schedules, at(T0))
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines,
            [
                "NAME     CRON       TIMEZONE      MISSED        STATE   WORKFLOW  \
                 NEXT RUN              LAST FIRED  LAST RUN  RUNS",
                "nightly  0 3 * * *  Europe/Paris  catch_up_one  active  audit     \
                 2023-11-14T23:13:20Z  2h ago      r9        12",
                "weekly   0 0 * * 1  UTC           skip          paused  -         \
                 -                     -           -         0",
            ]
        );
        assert_eq!(
            schedule_next(&schedules[0]),
            "next run at 2023-11-14T23:13:20Z"
        );
        assert_eq!(schedule_next(&schedules[1]), "paused");
        assert_eq!(schedule_next(&Schedule::default()), "no next run");
    }

    #[test]
    fn spend_rows_and_total() {
        let spend = GetSpendResponse {
            rows: vec![
                SpendRow {
                    day: "2026-01-30".into(),
                    provider: "claude".into(),
                    attempts: 3,
                    input_tokens: 1_000,
                    output_tokens: 100,
                    cost_micros: 2_000_000,
                    cost_usd: 2.0,
                },
                SpendRow {
                    day: "2026-01-31".into(),
                    provider: "mock".into(),
                    attempts: 1,
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_micros: 1,
                    cost_usd: 0.000_001,
                },
            ],
            total_cost_micros: 2_000_001,
        };
        let lines: Vec<_> = spend_table(&spend).lines().map(str::to_owned).collect();
        assert_eq!(
            lines,
            [
                "DAY         PROVIDER  ATTEMPTS  TOKENS IN  TOKENS OUT  COST",
                "2026-01-30  claude    3         1000       100         $2.000000",
                "2026-01-31  mock      1         10         5           $0.000001",
                "total                 4         1010       105         $2.000001",
            ]
        );
    }
}
