//! Tasks as text: the list, one task in full, its attempts, its outcome, the counts.

use std::{borrow::Cow, fmt::Write as _, time::SystemTime};

use supervisor_proto::{
    convert::EnumName,
    v1::{Attempt, Priority, Task, TaskStats, TaskStatus, TaskType, Usage},
};

use crate::commands::output::{
    Table, age, between, cost, dollars, elapsed, field_lines, indented, instant_and_age,
    key_values, millis, or_dash, rfc3339_seconds,
};

/// The name of a priority; unspecified means normal.
pub fn priority_name(value: i32) -> Cow<'static, str> {
    match Priority::try_from(value) {
        Ok(Priority::Unspecified) => Cow::Borrowed(Priority::Normal.name()),
        _ => Priority::name_of(value),
    }
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

/// `attempt/max` (`1/3`), or just the attempt when the maximum is the server's default.
pub fn attempts(attempt: u32, max_attempts: u32) -> String {
    if max_attempts == 0 {
        attempt.to_string()
    } else {
        format!("{attempt}/{max_attempts}")
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
        fields.push(("context", key_values(&task.context)));
    }
    if !task.specialty.is_empty() {
        fields.push(("specialty", task.specialty.clone()));
    } else if !task.attempts.is_empty() {
        // The task left it to the agents: each attempt picked one, which only its
        // routing event names.
        fields.push((
            "specialty",
            "chosen per attempt (see `supervisor task watch`)".to_owned(),
        ));
    }
    if !task.routing_strategy.is_empty() {
        fields.push(("strategy", task.routing_strategy.clone()));
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
        fields.push(("created", instant_and_age(created, now)));
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
    if !task.waiting_for.is_empty() {
        fields.push(("waiting for", task.waiting_for.clone()));
    }
    if !task.trace_id.is_empty() {
        fields.push(("trace", task.trace_id.clone()));
    }
    if let Some(p) = &task.prediction {
        fields.push(("predicted", crate::commands::analytics::prediction_line(p)));
    }

    let mut text = field_lines(&fields);
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

/// What the attempts table shows for an attempt that names no provider: one whose agent
/// panicked is recorded without the provider it may have reached.
pub const PANICKED_PROVIDER: &str = "(none recorded: the agent panicked)";

/// The provider of an attempt: `-` when none was chosen, [`PANICKED_PROVIDER`] when the
/// agent panicked.
fn attempt_provider(attempt: &Attempt) -> String {
    match (attempt.provider.as_str(), attempt.outcome.as_str()) {
        ("", "panicked") => PANICKED_PROVIDER.to_owned(),
        (provider, _) => or_dash(provider),
    }
}

/// The ended attempts of a task: number, provider, model, outcome, tokens and cost.
pub fn attempts_table(attempts: &[Attempt]) -> String {
    let mut table = Table::new(&["#", "PROVIDER", "MODEL", "OUTCOME", "TOKENS IN/OUT", "COST"]);
    for attempt in attempts {
        let usage = attempt.usage.unwrap_or_default();
        table.row(vec![
            attempt.attempt.to_string(),
            attempt_provider(attempt),
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
        // A cancelled task's error starts with what the line already says
        // (`cancelled: not needed`, `cancelled by request`): not twice.
        let error = task.error.as_str();
        match error.strip_prefix("cancelled") {
            Some(rest) if status == TaskStatus::Cancelled && rest.starts_with([':', ' ']) => {
                line.push_str(rest);
            }
            _ => {
                let _ = write!(line, ": {error}");
            }
        }
    }
    line
}

/// How many tasks there are, whatever their status.
pub fn task_count(stats: &TaskStats) -> u64 {
    [
        stats.queued,
        stats.running,
        stats.retry_wait,
        stats.succeeded,
        stats.failed,
        stats.cancelled,
    ]
    .iter()
    .fold(0u64, |sum, n| sum.saturating_add(*n))
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
    let total = task_count(stats);
    let mut table = Table::new(&["STATUS", "TASKS"]);
    for (name, count) in rows {
        table.row(vec![name.to_owned(), count.to_string()]);
    }
    table.row(vec!["total".to_owned(), total.to_string()]);
    table.render()
}

#[cfg(test)]
mod tests {
    use supervisor_proto::{convert::timestamp_from_micros, v1::TaskResult};

    use super::*;
    use crate::commands::harness::{T0, at};

    #[test]
    fn attempts_show_the_maximum_when_it_is_set() {
        assert_eq!(attempts(1, 3), "1/3");
        assert_eq!(attempts(2, 0), "2");
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
    fn a_cancelled_task_says_cancelled_once() {
        let mut cancelled = task();
        cancelled.status = TaskStatus::Cancelled as i32;
        cancelled.finished_at = Some(timestamp_from_micros(T0 + 500_000));
        cancelled.error = "cancelled: not needed".into();
        assert_eq!(
            outcome_line(&cancelled),
            "task t1 cancelled in 0.5s: not needed"
        );
        cancelled.error = "cancelled by request".into();
        assert_eq!(
            outcome_line(&cancelled),
            "task t1 cancelled in 0.5s by request"
        );
        cancelled.error = "cancelledness".into();
        assert_eq!(
            outcome_line(&cancelled),
            "task t1 cancelled in 0.5s: cancelledness"
        );
        // Another status keeps its error whole.
        let mut failed = task();
        failed.error = "cancelled: upstream".into();
        assert!(outcome_line(&failed).ends_with("attempts: cancelled: upstream"));
    }

    #[test]
    fn a_panicked_attempt_says_why_it_names_no_provider() {
        let attempts = [
            Attempt {
                attempt: 1,
                outcome: "panicked".into(),
                ..Default::default()
            },
            Attempt {
                attempt: 2,
                outcome: "no_provider".into(),
                ..Default::default()
            },
        ];
        let text = attempts_table(&attempts);
        let lines: Vec<_> = text.lines().collect();
        assert!(
            lines[1].starts_with(&format!("1  {PANICKED_PROVIDER}  -")),
            "{text}"
        );
        assert!(lines[2].starts_with("2  -  "), "{text}");
        assert!(!text.contains("None"), "{text}");
    }

    #[test]
    fn a_specialty_left_to_the_agents_is_said_to_be_chosen_per_attempt() {
        let mut ran = task();
        ran.attempts = vec![Attempt {
            attempt: 1,
            provider: "mock".into(),
            outcome: "timeout".into(),
            ..Default::default()
        }];
        let text = task_summary(&ran, at(T0));
        assert!(
            text.contains("chosen per attempt (see `supervisor task watch`)"),
            "{text}"
        );
        ran.specialty = "bug_hunter".into();
        let text = task_summary(&ran, at(T0));
        assert!(!text.contains("chosen per attempt"), "{text}");
    }

    #[test]
    fn control_characters_in_task_fields_are_shown_escaped() {
        let mut hostile = task();
        hostile.labels = vec!["\x1b[31mred".into(), "two\nlines".into()];
        hostile.context = [("k\te".to_owned(), "v\u{202e}x".to_owned())].into();
        hostile.error = "boom\x1b]0;title\x07".into();
        hostile.prompt = "line one\n\tindented \x1b[2Jclear\r\nline three\u{9b}".into();
        let table = task_table(std::slice::from_ref(&hostile), at(T0));
        assert_eq!(table.lines().count(), 2, "one row: {table:?}");
        assert!(table.ends_with("\\e[31mred,two\\nlines\n"), "{table:?}");

        let summary = task_summary(&hostile, at(T0));
        let shown =
            crate::commands::output::escape(&summary, crate::commands::output::Layout::Body);
        for raw in ['\x1b', '\x07', '\u{202e}', '\u{9b}', '\r'] {
            assert!(!shown.contains(raw), "{raw:?} in {shown:?}");
        }
        for expected in [
            "labels:   \\e[31mred, two\\nlines\n",
            "context:  k\\te=v\\u{202e}x\n",
            "error:    boom\\e]0;title\\u{7}\n",
            "prompt:\n  line one\n  \tindented \\e[2Jclear\n  line three\\u{9b}\n",
        ] {
            assert!(shown.contains(expected), "{expected:?} in\n{shown}");
        }
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
    fn stats_list_every_status_and_the_total() {
        let stats = TaskStats {
            queued: 2,
            succeeded: 5,
            ..Default::default()
        };
        let text = stats_text(&stats);
        assert!(text.contains("retry_wait  0\n"), "{text}");
        assert!(text.ends_with("total       7\n"), "{text}");
    }
}
