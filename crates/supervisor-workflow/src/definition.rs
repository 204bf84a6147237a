//! Workflow definitions: the serde types a user writes in YAML or JSON.
//!
//! A definition is data only; parsing checks shapes and names every unknown field
//! (`deny_unknown_fields` throughout, so a misspelt `neeeds:` is an error rather than a
//! silently ignored key); what it means is checked by validation (the `validate` module,
//! which builds on this one). The engine stores the definition it ran as JSON
//! ([`WorkflowDef::to_json`]), so a run can always be explained by the exact definition
//! it used.
//!
//! YAML is read with `serde_norway`, the maintained fork of `serde_yaml` 0.9 (which is
//! deprecated and unmaintained): the same API and error messages, which name the field
//! path and the line and column. JSON errors get their field path from
//! `serde_path_to_error`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use supervisor_model::{Priority, RoutingStrategy, Specialty, TaskType};

use crate::schedule::ScheduleDef;

/// Largest definition text accepted, in bytes (4 MiB): half of the largest request the
/// server reads (`supervisor_model::MAX_REQUEST_BYTES`), so a definition at its limit
/// still reaches validation, which names this limit.
pub const MAX_DEFINITION_BYTES: usize = 4 * 1024 * 1024;

/// A workflow: named steps, each a task, joined by dependencies into a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The workflow's name (required; validation rejects an empty one).
    #[serde(default)]
    pub name: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Variables that prompts and conditions read as `vars.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// How the run reacts to failures, how wide and how long it may run.
    #[serde(default, skip_serializing_if = "Policy::is_default")]
    pub policy: Policy,
    /// When to start runs by themselves, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleDef>,
    /// The steps, in the order the planner starts them when several are ready.
    #[serde(default)]
    pub steps: Vec<StepDef>,
}

/// A run's reaction to failure, concurrency cap and deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// What an unhandled step failure does to the run (default `fail_fast`).
    pub on_failure: OnFailure,
    /// Most steps running at once (`None`, or 0, for no cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Longest a run may take, as a humantime string (`"2h"`); no deadline by default.
    /// The engine enforces it (it owns the clock) by halting the run as failed.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
}

impl Policy {
    fn is_default(&self) -> bool {
        *self == Policy::default()
    }

    /// The concurrency cap in force: `None` when there is none (unset or 0).
    pub fn concurrency_cap(&self) -> Option<usize> {
        self.max_concurrency
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// What an unhandled step failure does to the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Fail the run at once: start nothing more, cancel what runs.
    #[default]
    FailFast,
    /// Run every step that can still run; the run fails at the end.
    Continue,
}

/// One step: a task and what it waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Unique id within the workflow: 1 to 64 of `a-z 0-9 _ -`.
    pub id: String,
    /// The steps it waits for, each with the condition on that step's outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<Need>,
    /// The task it runs.
    pub task: TaskTemplate,
}

/// A dependency: another step and the condition on its outcome.
///
/// Written either as the step id alone (`needs: [analyse]`, meaning `on_success`) or as
/// `{ step: analyse, when: always }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The step waited for.
    pub step: String,
    /// The condition on its outcome.
    pub when: When,
}

/// The condition of a dependency, checked once the step waited for is finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum When {
    /// The step succeeded (the default).
    #[default]
    OnSuccess,
    /// The step failed.
    OnFailure,
    /// The step finished in any way (succeeded, failed, cancelled or skipped).
    Always,
    /// A condition in the [`crate::expr`] language, evaluated over finished ancestors.
    Expr(String),
}

impl When {
    /// The keyword or expression as written.
    pub fn as_str(&self) -> &str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Expr(e) => e,
        }
    }

    fn from_text(s: &str) -> When {
        match s.trim() {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            _ => When::Expr(s.to_string()),
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for When {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<When, D::Error> {
        let s = String::deserialize(d)?;
        Ok(When::from_text(&s))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeedLong {
    step: String,
    #[serde(default)]
    when: When,
}

impl Serialize for Need {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.when == When::OnSuccess {
            s.serialize_str(&self.step)
        } else {
            NeedLong {
                step: self.step.clone(),
                when: self.when.clone(),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Need {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Need, D::Error> {
        struct NeedVisitor;
        impl<'de> Visitor<'de> for NeedVisitor {
            type Value = Need;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step id, or a map { step: <id>, when: <condition> }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Need, E> {
                Ok(Need {
                    step: v.to_string(),
                    when: When::OnSuccess,
                })
            }
            // YAML reads an unquoted numeric id (`needs: [1]`) as a number; ids are
            // strings, as they are for `id: 1`.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Need, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Need, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Need, A::Error> {
                let long = NeedLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Need {
                    step: long.step,
                    when: long.when,
                })
            }
        }
        d.deserialize_any(NeedVisitor)
    }
}

/// The task a step enqueues. `prompt` and `context` values may hold placeholders
/// (`{{ vars.x }}`, `{{ steps.<id>.output }}`), rendered when the step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    /// The kind of work.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// What to do (a template).
    pub prompt: String,
    /// The specialty to use instead of the analyzer's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialty: Option<Specialty>,
    /// Scheduling priority (default normal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Labels for filtering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Extra inputs; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// Attempts before giving up (default: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Time limit of one attempt, as a humantime string (`"10m"`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Providers to try first, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_providers: Vec<String>,
    /// Providers never to use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_providers: Vec<String>,
    /// The routing strategy to use instead of the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RoutingStrategy>,
}

/// A definition that did not parse: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {message}")]
pub struct DefinitionError {
    /// `YAML` or `JSON`.
    pub format: &'static str,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// 1-based column of the problem, when known.
    pub column: Option<usize>,
    /// The problem, naming the field path (`steps[1].task: unknown field ...`).
    pub message: String,
}

impl WorkflowDef {
    /// Parses a YAML definition. Shape errors name the field path, line and column.
    pub fn from_yaml(text: &str) -> Result<WorkflowDef, DefinitionError> {
        check_size("YAML", text)?;
        serde_norway::from_str(text).map_err(|e| {
            let loc = e.location();
            DefinitionError {
                format: "YAML",
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: e.to_string(),
            }
        })
    }

    /// Parses a JSON definition. Shape errors name the field path, line and column.
    pub fn from_json(text: &str) -> Result<WorkflowDef, DefinitionError> {
        check_size("JSON", text)?;
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            DefinitionError {
                format: "JSON",
                line: Some(inner.line()),
                column: Some(inner.column()),
                message: if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                },
            }
        })
    }

    /// The definition as compact JSON, the form the engine stores. Parsing it back with
    /// [`WorkflowDef::from_json`] gives an equal definition.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The step with this id (the first, if ids repeat).
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }
}

fn check_size(format: &'static str, text: &str) -> Result<(), DefinitionError> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionError {
            format,
            line: None,
            column: None,
            message: format!(
                "the definition is {} bytes; the limit is {MAX_DEFINITION_BYTES} bytes",
                text.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FIX_AND_REVIEW: &str = r#"
name: fix-and-review
description: Analyse, fix, review, and refactor when the review rejects the fix
vars: { repo: /src/app, issue: "flaky retry test" }
policy: { on_failure: continue, max_concurrency: 4, deadline: 2h }
steps:
  - id: analyse
    task:
      type: code_analysis
      prompt: "Analyse {{ vars.repo }} for {{ vars.issue }}"
      priority: high
      labels: [wf]
      context: { repo: "{{ vars.repo }}" }
      max_attempts: 2
      timeout: 10m
      specialty: bug_hunter
      preferred_providers: [claude]
      excluded_providers: [local]
      strategy: fastest
  - id: fix
    needs: [analyse]
    task: { type: bug_fix, prompt: "Fix it. Analysis: {{ steps.analyse.output }}" }
  - id: review
    needs: [{ step: fix, when: always }]
    task: { type: pr_review, prompt: "Review the fix: {{ steps.fix.output }}" }
  - id: refactor
    needs: [{ step: review, when: 'steps.review.status == "failed" || steps.review.output contains "REJECT"' }]
    task: { type: refactor, prompt: "Rework the fix: {{ steps.review.output }}" }
"#;

    #[test]
    fn parses_the_full_yaml_shape() {
        let def = WorkflowDef::from_yaml(FIX_AND_REVIEW).expect("parses");
        assert_eq!(def.name, "fix-and-review");
        assert_eq!(def.vars["issue"], "flaky retry test");
        assert_eq!(def.policy.on_failure, OnFailure::Continue);
        assert_eq!(def.policy.max_concurrency, Some(4));
        assert_eq!(def.policy.deadline, Some(Duration::from_secs(7200)));
        assert_eq!(def.steps.len(), 4);
        let analyse = &def.steps[0];
        assert_eq!(analyse.task.task_type, TaskType::CodeAnalysis);
        assert_eq!(analyse.task.priority, Some(Priority::High));
        assert_eq!(analyse.task.timeout, Some(Duration::from_secs(600)));
        assert_eq!(analyse.task.specialty, Some(Specialty::BugHunter));
        assert_eq!(analyse.task.strategy, Some(RoutingStrategy::Fastest));
        assert_eq!(
            def.steps[1].needs,
            [Need {
                step: "analyse".into(),
                when: When::OnSuccess
            }]
        );
        assert_eq!(def.steps[2].needs[0].when, When::Always);
        assert!(matches!(&def.steps[3].needs[0].when, When::Expr(e) if e.contains("REJECT")));
    }

    #[test]
    fn defaults_are_fail_fast_uncapped_no_deadline() {
        let def = WorkflowDef::from_yaml(
            "name: x\nsteps:\n  - id: a\n    task: { type: testing, prompt: p }\n",
        )
        .expect("parses");
        assert_eq!(def.policy, Policy::default());
        assert_eq!(def.policy.on_failure, OnFailure::FailFast);
        assert_eq!(def.policy.concurrency_cap(), None);
        assert_eq!(def.policy.deadline, None);
        assert!(def.schedule.is_none());
        let zero = Policy {
            max_concurrency: Some(0),
            ..Policy::default()
        };
        assert_eq!(zero.concurrency_cap(), None);
    }

    #[test]
    fn json_round_trip_is_lossless() {
        let def = WorkflowDef::from_yaml(FIX_AND_REVIEW).expect("parses");
        let json = def.to_json().expect("serializes");
        assert!(json.contains(r#""needs":["analyse"]"#), "{json}");
        assert!(json.contains(r#""when":"always""#), "{json}");
        assert!(json.contains(r#""deadline":"2h""#), "{json}");
        assert_eq!(WorkflowDef::from_json(&json), Ok(def));
    }

    #[test]
    fn unknown_fields_are_named_with_their_place() {
        let e = WorkflowDef::from_yaml(
            "name: x\nsteps:\n  - id: a\n    neeeds: [b]\n    task: { type: testing, prompt: p }\n",
        )
        .expect_err("unknown field");
        assert!(e.message.contains("steps[0]"), "{e}");
        assert!(e.message.contains("unknown field `neeeds`"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");

        let e = WorkflowDef::from_yaml(
            "name: x\nsteps:\n  - id: a\n    task: { type: testing, prompt: p, promt: q }\n",
        )
        .expect_err("unknown task field");
        assert!(e.message.contains("steps[0].task"), "{e}");
        assert!(e.message.contains("`promt`"), "{e}");

        let e = WorkflowDef::from_yaml(
            "name: x\nsteps:\n  - id: a\n    needs: [{ step: b, if: always }]\n    task: { type: testing, prompt: p }\n",
        )
        .expect_err("unknown need field");
        assert!(e.message.contains("unknown field `if`"), "{e}");

        let e = WorkflowDef::from_json(r#"{"name":"x","policy":{"on_failure":"stop"},"steps":[]}"#)
            .expect_err("bad enum");
        assert!(e.message.starts_with("policy.on_failure: "), "{e}");
        assert!(e.message.contains("fail_fast"), "{e}");
        assert_eq!(e.line, Some(1));

        let e = WorkflowDef::from_json(
            "{\"name\":\"x\",\n\"steps\":[{\"id\":\"a\",\"task\":{\"type\":\"cooking\",\"prompt\":\"p\"}}]}",
        )
        .expect_err("bad task type");
        assert!(e.message.starts_with("steps[0].task.type: "), "{e}");
        assert!(e.message.contains("pr_review"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn bad_durations_and_var_types_are_named() {
        let e = WorkflowDef::from_yaml("name: x\npolicy: { deadline: soon }\n").expect_err("bad");
        assert!(e.message.contains("policy.deadline"), "{e}");
        let e = WorkflowDef::from_yaml("name: x\nvars: { n: [1] }\n").expect_err("bad");
        assert!(e.message.contains("vars.n"), "{e}");
        let e = WorkflowDef::from_yaml(
            "name: x\nsteps:\n  - id: a\n    needs: [[a]]\n    task: { type: testing, prompt: p }\n",
        )
        .expect_err("a need is an id or a map");
        assert!(e.message.contains("steps[0].needs[0]"), "{e}");
        assert!(e.message.contains("a step id, or a map"), "{e}");
        // Unquoted numeric ids are ids, in `id:` and in `needs:` alike.
        let def = WorkflowDef::from_yaml(
            "name: x\nsteps:\n  - id: 1\n    task: { type: testing, prompt: p }\n  - id: 2\n    needs: [1]\n    task: { type: testing, prompt: p }\n",
        )
        .expect("parses");
        assert_eq!(def.steps[1].needs[0].step, "1");
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = " ".repeat(MAX_DEFINITION_BYTES + 1);
        let e = WorkflowDef::from_yaml(&big).expect_err("too big");
        assert!(e.message.contains("limit"), "{e}");
    }
}
