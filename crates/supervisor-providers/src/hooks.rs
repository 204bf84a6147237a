//! Hooks: a team's own checks that run on an agent's work before its result is accepted
//! (the repository's tests on the agent's diff, `git diff --check`, a linter).
//!
//! A hook is declared once per node, `[hooks.<name>]`, and applies to an attempt in two
//! ways: by task type (`task_types`), for tasks that work in a repository (context
//! `repo`), or by name, listed in the task's (or workflow step's) context under `hooks`
//! (`hooks = "diff-check, tests"`). A task that names hooks is routed only to providers
//! that work in a directory of their own (the Claude Code CLI); the hooks run there, in
//! the attempt's worktree, after the agent finished and before its changes are diffed and
//! committed, under the same confinement and with the agent's clean environment (without
//! the provider's key). A hook that exits non-zero or outlives its `timeout` fails the
//! attempt: with `on_failure = "retry"` (the default) the task gets another attempt while
//! it has attempts left, with `"fail"` it fails at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisor_model::TaskType;

use crate::ProviderError;

/// The context key naming hooks to run, separated by commas or spaces.
pub const HOOKS_KEY: &str = "hooks";

/// Longest hook name.
const MAX_NAME: usize = 64;
/// Most hooks one task may name.
const MAX_NAMED: usize = 16;

/// What a failing hook does to the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The attempt fails retryably: the task runs again while it has attempts left.
    #[default]
    Retry,
    /// The task fails now.
    Fail,
}

/// One `[hooks.<name>]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// The program and its arguments (no shell: `["sh", "-c", "cargo test"]` for one).
    pub command: Vec<String>,
    /// Task types it runs for, when the task works in a repository. Empty: only for tasks
    /// that name it.
    pub task_types: Vec<TaskType>,
    /// `retry` (default) or `fail`.
    pub on_failure: OnFailure,
    /// Longest it may run. Default 10 minutes; the attempt's own time limit also holds.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// More environment variables for it, literal values.
    pub env: BTreeMap<String, String>,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            command: Vec::new(),
            task_types: Vec::new(),
            on_failure: OnFailure::Retry,
            timeout: Duration::from_secs(600),
            env: BTreeMap::new(),
        }
    }
}

/// Every hook of a node, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks(Arc<BTreeMap<String, HookConfig>>);

/// A hook chosen for an attempt.
#[derive(Debug, Clone, Copy)]
pub struct ChosenHook<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its configuration.
    pub config: &'a HookConfig,
}

/// Variables a hook's `env` may not set, and why.
const RESERVED_ENV: &[(&str, &str)] = &[
    ("HOME", "it is the attempt's own directory"),
    ("TMPDIR", "it is the attempt's own directory"),
];

impl Hooks {
    /// The node's hooks, checked: an error names the first wrong entry and what to fix.
    pub fn new(hooks: BTreeMap<String, HookConfig>) -> Result<Hooks, String> {
        for (name, hook) in &hooks {
            if !valid_name(name) {
                return Err(format!(
                    "hooks.{name}: a hook's name is 1 to {MAX_NAME} of a-z, 0-9, '-' and '_'"
                ));
            }
            match hook.command.first() {
                None => {
                    return Err(format!(
                        "hooks.{name}: command is empty; give the program and its arguments, e.g. [\"sh\", \"-c\", \"cargo test\"]"
                    ));
                }
                Some(program) if program.is_empty() => {
                    return Err(format!("hooks.{name}: command's program is empty"));
                }
                Some(_) => {}
            }
            if hook.command.iter().any(|a| a.contains('\0')) {
                return Err(format!("hooks.{name}: command contains a NUL byte"));
            }
            if hook.timeout.is_zero() {
                return Err(format!("hooks.{name}: timeout must be more than 0"));
            }
            for (var, value) in &hook.env {
                crate::check_env_entry(var, value, RESERVED_ENV)
                    .map_err(|e| format!("hooks.{name}: {e}"))?;
            }
        }
        Ok(Hooks(Arc::new(hooks)))
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names configured, in order.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Checks the hooks a task's context names (an unknown name, too many): the error
    /// says which and what this node has.
    pub fn check_named(&self, context: &BTreeMap<String, String>) -> Result<(), String> {
        let named = named(context);
        if named.len() > MAX_NAMED {
            return Err(format!(
                "context {HOOKS_KEY} names {} hooks; at most {MAX_NAMED}",
                named.len()
            ));
        }
        for name in named {
            if !self.0.contains_key(name) {
                let known = if self.0.is_empty() {
                    "none is configured on this node ([hooks.<name>] in its configuration)"
                        .to_string()
                } else {
                    format!("configured: {}", self.names().join(", "))
                };
                return Err(format!(
                    "context {HOOKS_KEY} names the hook {name:?}, which this node does not have; {known}"
                ));
            }
        }
        Ok(())
    }

    /// The hooks an attempt runs, in order: those of its task type (by name) when it
    /// works in a repository, then those its context names, each once. An unknown name
    /// is a permanent error.
    pub fn select(
        &self,
        task_type: TaskType,
        context: &BTreeMap<String, String>,
    ) -> Result<Vec<ChosenHook<'_>>, ProviderError> {
        self.check_named(context)
            .map_err(|message| ProviderError::Permanent {
                kind: "bad_request",
                message,
            })?;
        let mut chosen: Vec<ChosenHook<'_>> = Vec::new();
        if context.contains_key(crate::REPO_KEY) {
            for (name, config) in self.0.iter() {
                if config.task_types.contains(&task_type) {
                    chosen.push(ChosenHook { name, config });
                }
            }
        }
        for name in named(context) {
            if chosen.iter().any(|c| c.name == name) {
                continue;
            }
            if let Some((name, config)) = self.0.get_key_value(name) {
                chosen.push(ChosenHook { name, config });
            }
        }
        Ok(chosen)
    }
}

/// Whether a task's context names any hook (such a task needs a provider that runs them).
pub fn names_any(context: &BTreeMap<String, String>) -> bool {
    !named(context).is_empty()
}

/// The hook names in a task's context, in order.
fn named(context: &BTreeMap<String, String>) -> Vec<&str> {
    context.get(HOOKS_KEY).map_or_else(Vec::new, |list| {
        list.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
            .collect()
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(types: &[TaskType]) -> HookConfig {
        HookConfig {
            command: vec!["true".into()],
            task_types: types.to_vec(),
            ..HookConfig::default()
        }
    }

    fn hooks() -> Hooks {
        Hooks::new(BTreeMap::from([
            ("diff-check".to_string(), hook(&[TaskType::BugFix])),
            ("tests".to_string(), hook(&[])),
        ]))
        .unwrap()
    }

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(chosen: &[ChosenHook<'_>]) -> Vec<String> {
        chosen.iter().map(|c| c.name.to_string()).collect()
    }

    #[test]
    fn type_hooks_apply_in_a_repository_and_named_ones_always() {
        let h = hooks();
        let in_repo = ctx(&[("repo", "/r")]);
        assert_eq!(
            names(&h.select(TaskType::BugFix, &in_repo).unwrap()),
            ["diff-check"]
        );
        assert!(h.select(TaskType::BugFix, &ctx(&[])).unwrap().is_empty());
        assert!(h.select(TaskType::Testing, &in_repo).unwrap().is_empty());
        let both = ctx(&[("repo", "/r"), ("hooks", "tests, diff-check")]);
        assert_eq!(
            names(&h.select(TaskType::BugFix, &both).unwrap()),
            ["diff-check", "tests"]
        );
        assert_eq!(
            names(
                &h.select(TaskType::Testing, &ctx(&[("hooks", "tests diff-check")]))
                    .unwrap()
            ),
            ["tests", "diff-check"]
        );
    }

    #[test]
    fn an_unknown_name_is_refused_with_what_exists() {
        let e = hooks()
            .check_named(&ctx(&[("hooks", "tests,lint")]))
            .unwrap_err();
        assert!(
            e.contains("\"lint\"") && e.contains("diff-check, tests"),
            "{e}"
        );
        let e = Hooks::default()
            .check_named(&ctx(&[("hooks", "x")]))
            .unwrap_err();
        assert!(e.contains("none is configured"), "{e}");
        assert!(matches!(
            hooks().select(TaskType::BugFix, &ctx(&[("hooks", "lint")])),
            Err(ProviderError::Permanent { .. })
        ));
    }

    #[test]
    fn bad_configurations_name_the_hook() {
        let bad = |name: &str, h: HookConfig| {
            Hooks::new(BTreeMap::from([(name.to_string(), h)])).unwrap_err()
        };
        assert!(bad("Tests", hook(&[])).contains("hooks.Tests"));
        assert!(bad("t", HookConfig::default()).contains("command is empty"));
        let mut h = hook(&[]);
        h.timeout = Duration::ZERO;
        assert!(bad("t", h).contains("timeout"));
        let mut h = hook(&[]);
        h.env.insert("HOME".into(), "/".into());
        assert!(bad("t", h).contains("HOME"));
    }
}
