//! The limits the API enforces are the numbers its documentation gives: each row of
//! `docs/limits.md` that names a constant states its value, and the proto comments state
//! the values of the fields they describe.

use supervisor_engine::workflow::{context, definition, schedule, validate};
use supervisor_model as model;

fn read(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

/// `(constant name, the value the docs must state)`.
fn limits() -> Vec<(&'static str, String)> {
    vec![
        ("MAX_PROMPT_BYTES", model::MAX_PROMPT_BYTES.to_string()),
        ("MAX_LABELS", model::MAX_LABELS.to_string()),
        ("MAX_LABEL_BYTES", model::MAX_LABEL_BYTES.to_string()),
        (
            "MAX_CONTEXT_ENTRIES",
            model::MAX_CONTEXT_ENTRIES.to_string(),
        ),
        ("MAX_CONTEXT_BYTES", model::MAX_CONTEXT_BYTES.to_string()),
        (
            "MAX_CONTEXT_KEY_BYTES",
            model::MAX_CONTEXT_KEY_BYTES.to_string(),
        ),
        (
            "MAX_IDEMPOTENCY_KEY_BYTES",
            model::MAX_IDEMPOTENCY_KEY_BYTES.to_string(),
        ),
        ("MAX_ATTEMPTS_LIMIT", model::MAX_ATTEMPTS_LIMIT.to_string()),
        ("MAX_TIMEOUT_MS", model::MAX_TIMEOUT_MS.to_string()),
        (
            "MAX_COST_MICROS",
            format!("${}", model::MAX_COST_MICROS / 1_000_000),
        ),
        ("MAX_PROVIDER_PREFS", model::MAX_PROVIDER_PREFS.to_string()),
        (
            "MAX_PROVIDER_NAME_BYTES",
            model::MAX_PROVIDER_NAME_BYTES.to_string(),
        ),
        ("MAX_REASON_BYTES", model::MAX_REASON_BYTES.to_string()),
        (
            "ABANDONED_ATTEMPTS_PER_ATTEMPT",
            format!(
                "{} per allowed attempt",
                model::ABANDONED_ATTEMPTS_PER_ATTEMPT
            ),
        ),
        ("MAX_QUOTED_CHARS", model::MAX_QUOTED_CHARS.to_string()),
        ("MAX_REQUEST_BYTES", model::MAX_REQUEST_BYTES.to_string()),
        ("MAX_RESPONSE_BYTES", model::MAX_RESPONSE_BYTES.to_string()),
        ("MAX_SPEND_DAYS", model::MAX_SPEND_DAYS.to_string()),
        ("validate::MAX_STEPS", validate::MAX_STEPS.to_string()),
        (
            "validate::MAX_STEP_ID_BYTES",
            validate::MAX_STEP_ID_BYTES.to_string(),
        ),
        (
            "validate::MAX_NAME_BYTES",
            validate::MAX_NAME_BYTES.to_string(),
        ),
        (
            "validate::MAX_DESCRIPTION_BYTES",
            validate::MAX_DESCRIPTION_BYTES.to_string(),
        ),
        (
            "validate::MAX_DEADLINE",
            format!("{} days", validate::MAX_DEADLINE.as_secs() / 86_400),
        ),
        (
            "context::MAX_VAR_NAME_BYTES",
            context::MAX_VAR_NAME_BYTES.to_string(),
        ),
        ("context::MAX_VARS", context::MAX_VARS.to_string()),
        (
            "context::MAX_VARS_BYTES",
            context::MAX_VARS_BYTES.to_string(),
        ),
        (
            "validate::MAX_REPORTED_ISSUES",
            validate::MAX_REPORTED_ISSUES.to_string(),
        ),
        (
            "definition::MAX_DEFINITION_BYTES",
            definition::MAX_DEFINITION_BYTES.to_string(),
        ),
        (
            "schedules::MAX_SCHEDULE_NAME_BYTES",
            supervisor_engine::MAX_SCHEDULE_NAME_BYTES.to_string(),
        ),
        (
            "schedule::MAX_CRON_BYTES",
            schedule::MAX_CRON_BYTES.to_string(),
        ),
        (
            "schedule::DEFAULT_MIN_INTERVAL",
            format!("{} minute", schedule::DEFAULT_MIN_INTERVAL.as_secs() / 60),
        ),
        (
            "MAX_BUDGETS_PER_TENANT",
            model::MAX_BUDGETS_PER_TENANT.to_string(),
        ),
        ("MAX_TENANT_WEIGHT", model::MAX_TENANT_WEIGHT.to_string()),
        (
            "DEFAULT_RESERVE_MICROS",
            format!("${:.2}", model::DEFAULT_RESERVE_MICROS as f64 / 1e6),
        ),
        ("MAX_TREND_PERIODS", model::MAX_TREND_PERIODS.to_string()),
        ("MAX_SUMMARY_GROUPS", model::MAX_SUMMARY_GROUPS.to_string()),
    ]
}

#[test]
fn every_limit_is_in_docs_limits_md_with_its_value() {
    let docs = read("docs/limits.md");
    for (name, value) in limits() {
        let row = docs
            .lines()
            .find(|l| l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("docs/limits.md has no line naming `{name}`"));
        assert!(
            row.contains(&value),
            "docs/limits.md gives `{name}` a value other than {value}: {row}"
        );
    }
}

#[test]
fn the_proto_comments_state_the_same_numbers() {
    let tasks = read("proto/supervisor/v1/tasks.proto");
    let workflows = read("proto/supervisor/v1/workflows.proto");
    let field = |proto: &str, name: &str| -> String {
        // The comment lines right above the field's declaration.
        let lines: Vec<&str> = proto.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().contains(&format!(" {name} = ")))
            .unwrap_or_else(|| panic!("no field {name}"));
        lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with("//"))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (name, needles) in [
        ("prompt", vec![model::MAX_PROMPT_BYTES.to_string()]),
        (
            "labels",
            vec![
                model::MAX_LABELS.to_string(),
                model::MAX_LABEL_BYTES.to_string(),
            ],
        ),
        (
            "idempotency_key",
            vec![model::MAX_IDEMPOTENCY_KEY_BYTES.to_string()],
        ),
        (
            "context",
            vec![
                model::MAX_CONTEXT_ENTRIES.to_string(),
                model::MAX_CONTEXT_BYTES.to_string(),
                model::MAX_CONTEXT_KEY_BYTES.to_string(),
            ],
        ),
        (
            "max_attempts",
            vec![format!("1 to {}", model::MAX_ATTEMPTS_LIMIT)],
        ),
        ("timeout_ms", vec![model::MAX_TIMEOUT_MS.to_string()]),
        (
            "max_cost_usd",
            vec![(model::MAX_COST_MICROS / 1_000_000).to_string()],
        ),
        ("reason", vec![model::MAX_REASON_BYTES.to_string()]),
    ] {
        let comment = field(&tasks, name);
        for needle in needles {
            assert!(
                comment.contains(&needle),
                "the comment of {name} in tasks.proto lacks {needle}: {comment}"
            );
        }
    }
    let deadline = field(&workflows, "deadline_ms");
    let ms = validate::MAX_DEADLINE.as_millis().to_string();
    assert!(deadline.contains(&ms), "deadline_ms lacks {ms}: {deadline}");
}
