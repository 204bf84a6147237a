//! Workflow runs as text: the list, one run with its steps, its outcome, and a
//! definition's validation report.

use std::{borrow::Cow, fmt::Write as _, time::SystemTime};

use supervisor_proto::v1::{
    RunStatus, StepRun, ValidateWorkflowResponse, ValidationIssue, WorkflowRun,
};

use crate::commands::output::{
    Table, age, between, elapsed, escape_line, field_lines, indented, instant_and_age, key_values,
    or_dash, rfc3339_seconds, single_line, truncate,
};

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
        fields.push(("vars", key_values(&run.vars)));
    }
    if let Some(created) = &run.created_at {
        fields.push(("created", instant_and_age(created, now)));
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
    let mut text = field_lines(&fields);
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

/// One validation issue: `error[cycle] step fix: fix needs itself`; escaped (a step id
/// is the definition's to choose).
fn issue_line(severity: &str, issue: &ValidationIssue) -> String {
    let mut line = format!("{severity}[{}]", or_dash(&issue.code));
    if !issue.step.is_empty() {
        let _ = write!(line, " step {}", issue.step);
    }
    let _ = write!(line, ": {}", single_line(&issue.message));
    escape_line(&line).into_owned()
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

#[cfg(test)]
mod tests {
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;
    use crate::commands::harness::{T0, at};

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
        let hostile = ValidateWorkflowResponse {
            valid: false,
            errors: vec![issue("bad_id", "a\nb\x1b[2J", "no\nway")],
            warnings: vec![],
        };
        assert_eq!(
            validation_text(&hostile),
            "error[bad_id] step a\\nb\\e[2J: no way\ninvalid: 1 error\n"
        );
    }
}
