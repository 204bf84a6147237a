//! What conditions and templates may refer to, and where the values come from at run time.
//!
//! Conditions (`expr`) and prompt templates (`template`) share one reference syntax,
//! `vars.<name>` and `steps.<id>.status|output|attempts`, so they share the [`Ref`] type and
//! the [`Context`] trait that resolves references while a run is in progress. Keeping the
//! context a trait lets the engine answer from whatever it has loaded (outputs are large
//! and live in the store) while tests use [`MapContext`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest variable name, in bytes (the same limit as step ids).
pub const MAX_VAR_NAME_BYTES: usize = 64;
/// Most variables a workflow declares.
pub const MAX_VARS: usize = 256;
/// Largest total of variable names and values, in bytes (256 KiB), whether declared or
/// given for a run.
pub const MAX_VARS_BYTES: usize = 256 * 1024;

/// The bytes `vars` takes: names and values.
pub fn vars_bytes(vars: &BTreeMap<String, String>) -> usize {
    vars.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Checks the variables a run is given over its definition's (`declared`) and returns
/// the run's variables: the declared ones overridden by `given`. A variable the
/// definition does not declare is refused (a misspelt `--var` would otherwise leave the
/// intended one at its default), listing the declared ones and the closest name; so is
/// a value holding NUL, and a total over [`MAX_VARS_BYTES`].
pub fn run_vars(
    declared: &BTreeMap<String, String>,
    given: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, supervisor_model::FieldError> {
    let unknown: Vec<&String> = given
        .keys()
        .filter(|k| !declared.contains_key(*k))
        .collect();
    if let Some(first) = unknown.first() {
        let names: Vec<String> = unknown
            .iter()
            .take(10)
            .map(|n| supervisor_model::quote(n))
            .collect();
        let more = if unknown.len() > 10 {
            format!(" and {} more", unknown.len() - 10)
        } else {
            String::new()
        };
        let hint = closest(first, declared.keys())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let listed = if declared.is_empty() {
            "it declares no variables".to_string()
        } else {
            let all: Vec<String> = declared.keys().take(50).map(|k| format!("`{k}`")).collect();
            let rest = declared.len().saturating_sub(50);
            let tail = if rest > 0 {
                format!(" and {rest} more")
            } else {
                String::new()
            };
            format!("it declares {}{tail}", all.join(", "))
        };
        return Err(supervisor_model::FieldError::new(
            "vars",
            format!(
                "the workflow has no variable {}{more}{hint}; {listed}; a run may only set declared variables (add it under `vars:` to give it a default)",
                names.join(", ")
            ),
        ));
    }
    for (name, value) in &given {
        supervisor_model::check_text("vars", &format!("variable `{name}`"), value)?;
    }
    let mut all = declared.clone();
    all.extend(given);
    let bytes = vars_bytes(&all);
    if bytes > MAX_VARS_BYTES {
        return Err(supervisor_model::FieldError::new(
            "vars",
            format!("the run's variables take {bytes} bytes; the limit is {MAX_VARS_BYTES} bytes"),
        ));
    }
    Ok(all)
}

/// The name among `candidates` within two edits of `name`, if one is.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters (names are at most 64 bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Which value of a step a reference reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepField {
    /// The step's status name (`pending`, `running`, `succeeded`, `failed`, `cancelled`,
    /// `skipped`), a string.
    Status,
    /// The output text of the step's task, a string (empty until it succeeded).
    Output,
    /// How many attempts the step's task made, a number (0 until it ran).
    Attempts,
}

impl StepField {
    /// The name used in references.
    pub fn as_str(self) -> &'static str {
        match self {
            StepField::Status => "status",
            StepField::Output => "output",
            StepField::Attempts => "attempts",
        }
    }
}

/// A reference to a value, as written in a condition or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    /// `vars.<name>`: a variable of the workflow.
    Var(String),
    /// `steps.<id>.<field>`: a value of another step.
    Step {
        /// The referenced step's id.
        step: String,
        /// Which of its values.
        field: StepField,
    },
}

impl Ref {
    /// Parses `vars.<name>` or `steps.<id>.status|output|attempts` (no surrounding spaces).
    ///
    /// The error says what was expected. Names are checked for their characters only
    /// (`A-Z a-z 0-9 _ -`, at most 64 bytes); whether they exist is for validation to say.
    pub fn parse(path: &str) -> Result<Ref, String> {
        let expected = "expected vars.<name> or steps.<id>.output|status|attempts";
        let mut parts = path.split('.');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        match (head, rest.as_slice()) {
            ("vars", [name]) => {
                check_name(name, "variable name", path)?;
                Ok(Ref::Var((*name).to_string()))
            }
            ("vars", _) => Err(format!("`{path}`: {expected}; a variable is vars.<name>")),
            ("steps", [step, field]) => {
                check_name(step, "step id", path)?;
                let field = match *field {
                    "status" => StepField::Status,
                    "output" => StepField::Output,
                    "attempts" => StepField::Attempts,
                    other => {
                        return Err(format!(
                            "`{path}`: a step has no value `{other}`; use status, output or attempts"
                        ));
                    }
                };
                Ok(Ref::Step {
                    step: (*step).to_string(),
                    field,
                })
            }
            ("steps", [_]) | ("steps", []) => Err(format!(
                "`{path}`: {expected}; name the value too, e.g. steps.<id>.output"
            )),
            ("steps", _) => Err(format!(
                "`{path}`: {expected}; a step value is steps.<id>.<value> with nothing after it"
            )),
            _ => Err(format!("`{path}`: {expected}")),
        }
    }

    /// The referenced step, if this is a step reference.
    pub fn step(&self) -> Option<&str> {
        match self {
            Ref::Var(_) => None,
            Ref::Step { step, .. } => Some(step),
        }
    }
}

fn check_name(name: &str, what: &str, path: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`{path}`: the {what} is empty"));
    }
    if name.len() > MAX_VAR_NAME_BYTES {
        return Err(format!(
            "`{path}`: the {what} is longer than {MAX_VAR_NAME_BYTES} bytes"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "`{path}`: the {what} contains {c:?}; use letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// Whether `name` is a valid variable name: 1 to 64 bytes of `A-Z a-z 0-9 _ -`.
pub fn is_valid_var_name(name: &str) -> bool {
    check_name(name, "variable name", name).is_ok()
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Var(name) => write!(f, "vars.{name}"),
            Ref::Step { step, field } => write!(f, "steps.{step}.{}", field.as_str()),
        }
    }
}

/// The status of a step within a run, without the details a state carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// Its task is queued or running.
    Running,
    /// Its task succeeded.
    Succeeded,
    /// Its task failed (or its condition could not be evaluated).
    Failed,
    /// Its task was cancelled.
    Cancelled,
    /// It was not run because its conditions could not hold.
    Skipped,
}

impl StepStatus {
    /// Every status, in lifecycle order.
    pub const ALL: &'static [StepStatus] = &[
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Cancelled,
        StepStatus::Skipped,
    ];

    /// The name used in conditions (`steps.x.status == "failed"`), storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Skipped => "skipped",
        }
    }

    /// The status named `name`, if any.
    pub fn from_name(name: &str) -> Option<StepStatus> {
        StepStatus::ALL.iter().copied().find(|s| s.as_str() == name)
    }

    /// Whether the step is finished for this run (succeeded, failed, cancelled, skipped).
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Values of a run that conditions and templates read.
///
/// Missing values have documented defaults rather than errors, because a step can
/// legitimately reference an ancestor that never ran (it was skipped):
/// a missing output reads as the empty string, missing attempts as 0 and a missing status
/// as `pending`. A missing *variable* is an error, since validation guarantees every
/// referenced variable is declared.
pub trait Context {
    /// The value of variable `name`.
    fn var(&self, name: &str) -> Option<&str>;
    /// The output of step `step`, if it produced one.
    fn step_output(&self, step: &str) -> Option<&str>;
    /// How many attempts the task of step `step` made, if it ran.
    fn step_attempts(&self, _step: &str) -> Option<u32> {
        None
    }
    /// The status of step `step`, if known. The readiness planner supplies statuses from
    /// the run's step states itself when it evaluates conditions, but prompts
    /// (`{{ steps.x.status }}`) read them from here: a context that renders templates must
    /// answer, or every status renders as `pending`.
    fn step_status(&self, _step: &str) -> Option<StepStatus> {
        None
    }
}

impl<C: Context + ?Sized> Context for &C {
    fn var(&self, name: &str) -> Option<&str> {
        (**self).var(name)
    }
    fn step_output(&self, step: &str) -> Option<&str> {
        (**self).step_output(step)
    }
    fn step_attempts(&self, step: &str) -> Option<u32> {
        (**self).step_attempts(step)
    }
    fn step_status(&self, step: &str) -> Option<StepStatus> {
        (**self).step_status(step)
    }
}

/// A [`Context`] held in maps: for tests, previews and small runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapContext {
    /// Variables by name.
    pub vars: BTreeMap<String, String>,
    /// Outputs by step id.
    pub outputs: BTreeMap<String, String>,
    /// Attempts by step id.
    pub attempts: BTreeMap<String, u32>,
    /// Statuses by step id.
    pub statuses: BTreeMap<String, StepStatus>,
}

impl MapContext {
    /// A context with these variables and nothing else.
    pub fn with_vars(vars: BTreeMap<String, String>) -> Self {
        MapContext {
            vars,
            ..MapContext::default()
        }
    }

    /// Sets a variable.
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// Records that `step` ended with `status`, `output` after `attempts` attempts.
    pub fn step(mut self, step: &str, status: StepStatus, output: &str, attempts: u32) -> Self {
        self.statuses.insert(step.to_string(), status);
        self.outputs.insert(step.to_string(), output.to_string());
        self.attempts.insert(step.to_string(), attempts);
        self
    }
}

impl Context for MapContext {
    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
    fn step_output(&self, step: &str) -> Option<&str> {
        self.outputs.get(step).map(String::as_str)
    }
    fn step_attempts(&self, step: &str) -> Option<u32> {
        self.attempts.get(step).copied()
    }
    fn step_status(&self, step: &str) -> Option<StepStatus> {
        self.statuses.get(step).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(Ref::parse("vars.repo"), Ok(Ref::Var("repo".into())));
        assert_eq!(
            Ref::parse("steps.fix-it.output"),
            Ok(Ref::Step {
                step: "fix-it".into(),
                field: StepField::Output
            })
        );
        assert_eq!(
            Ref::parse("steps.a.attempts").map(|r| r.to_string()),
            Ok("steps.a.attempts".to_string())
        );
        for bad in [
            "var.x",
            "vars",
            "vars.",
            "vars.a.b",
            "steps.a",
            "steps.a.outputs",
            "steps.a.output.x",
            "steps..output",
            "vars.a b",
            "",
        ] {
            assert!(Ref::parse(bad).is_err(), "{bad} should not parse");
        }
        let msg = Ref::parse("steps.a.outputs").unwrap_err();
        assert!(msg.contains("status, output or attempts"), "{msg}");
    }

    #[test]
    fn a_run_sets_only_declared_variables() {
        let declared: BTreeMap<String, String> = [
            ("repo".to_string(), "/src/app".to_string()),
            ("issue".to_string(), "flaky".to_string()),
        ]
        .into();
        let given = |k: &str, v: &str| [(k.to_string(), v.to_string())].into();
        let all = run_vars(&declared, given("repo", "/src/other")).expect("declared");
        assert_eq!(all["repo"], "/src/other");
        assert_eq!(all["issue"], "flaky");
        let e = run_vars(&declared, given("rpeo", "/src/other")).expect_err("misspelt");
        assert_eq!(e.field, "vars");
        assert!(
            e.message
                .starts_with("the workflow has no variable \"rpeo\" (did you mean `repo`?)"),
            "{e}"
        );
        assert!(e.message.contains("it declares `issue`, `repo`"), "{e}");
        let e = run_vars(&BTreeMap::new(), given("x", "1")).expect_err("none declared");
        assert!(e.message.contains("it declares no variables"), "{e}");
        let e = run_vars(&declared, given("repo", "a\0")).expect_err("NUL");
        assert!(e.message.contains("U+0000"), "{e}");
        let big = "x".repeat(MAX_VARS_BYTES);
        let e = run_vars(&declared, given("repo", &big)).expect_err("too large");
        assert!(e.message.contains("the limit is 262144 bytes"), "{e}");
    }

    #[test]
    fn statuses_round_trip_by_name() {
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::from_name(s.as_str()), Some(*s));
        }
        assert_eq!(StepStatus::from_name("done"), None);
        assert!(StepStatus::Skipped.is_terminal());
        assert!(!StepStatus::Running.is_terminal());
    }
}
