//! Providers: what actually runs a task's prompt (an AI model behind an API or a CLI, or the
//! local mock). The node wraps each in a ProviderActor for limits, health and accounting;
//! this crate only knows how to call one.
//!
//! Errors are typed for routing: a [`ProviderError::Retryable`] may succeed on another
//! attempt or another provider; a [`ProviderError::Permanent`] will not.

#![warn(missing_docs)]

pub mod anthropic;
pub mod claude_cli;
pub mod config;
pub mod factory;
pub mod hooks;
pub mod http;
pub mod mock;
pub mod openai;
pub mod plugin;
pub mod pricing;
pub mod secret;
pub mod sse;

use std::collections::BTreeMap;
use std::time::Duration;

use supervisor_model::{Specialty, TaskType, ToolPolicy, Usage};
use tokio::sync::mpsc;

/// Whether `name` can be an environment variable name (letters, digits and `_`, not
/// starting with a digit).
pub(crate) fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks one entry of a configured `env` table: a variable name, none of `reserved`
/// (each with why it may not be set), a value without NUL. The caller puts where the
/// table is before the error.
pub(crate) fn check_env_entry(
    name: &str,
    value: &str,
    reserved: &[(&str, &str)],
) -> Result<(), String> {
    if !valid_env_name(name) {
        return Err(format!(
            "env key {name:?} is not a variable name (letters, digits, _)"
        ));
    }
    if let Some((_, why)) = reserved.iter().find(|(r, _)| *r == name) {
        return Err(format!("env may not set {name}: {why}"));
    }
    if value.contains('\0') {
        return Err(format!("env value of {name} contains a NUL byte"));
    }
    Ok(())
}

/// What a provider is asked to do: one attempt of one task.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    /// The task's id (for logs and deterministic behaviour of the mock).
    pub task_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The kind of work.
    pub task_type: TaskType,
    /// The prompt.
    pub prompt: String,
    /// Extra inputs.
    pub context: BTreeMap<String, String>,
    /// Time limit of this attempt (the caller also enforces it).
    pub timeout: Duration,
    /// The specialty the task was routed to.
    pub specialty: Specialty,
    /// The specialty's system prompt.
    pub system_prompt: String,
    /// What the agent may do with tools (providers that run tools must enforce it).
    pub tools: ToolPolicy,
    /// The conversation turn it answers, when it writes a thread's reply (its prompt then
    /// holds the conversation so far; a provider that keeps a session of its own may
    /// send only the new message).
    pub thread: Option<ThreadTurn>,
}

/// The conversation turn a request answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTurn {
    /// The thread's id.
    pub id: String,
    /// The sequence number of the message it answers (the previous reply's message was
    /// `seq - 2`).
    pub seq: u64,
    /// The message alone.
    pub message: String,
    /// The task that wrote the reply before, when that reply succeeded: a provider
    /// resumes its own session only when that session wrote that reply.
    pub previous: Option<String>,
}

impl ProviderRequest {
    /// A request for `prompt` with the default specialty of `task_type` (tests, probes).
    pub fn simple(task_id: &str, task_type: TaskType, prompt: &str, timeout: Duration) -> Self {
        let specialty = Specialty::default_for(task_type);
        ProviderRequest {
            task_id: task_id.to_string(),
            attempt: 1,
            task_type,
            prompt: prompt.to_string(),
            context: BTreeMap::new(),
            timeout,
            specialty,
            system_prompt: specialty.system_prompt().to_string(),
            tools: specialty.tools(),
            thread: None,
        }
    }

    /// The prompt as a model API receives it: the prompt, then the context (if any) as a
    /// short `Context:` block, one `key: value` per entry (multi-line values indented).
    pub fn prompt_with_context(&self) -> String {
        if self.context.is_empty() {
            return self.prompt.clone();
        }
        let mut text = format!("{}\n\nContext:", self.prompt.trim_end());
        for (key, value) in &self.context {
            if value.contains('\n') {
                text.push_str(&format!("\n- {key}:"));
                for line in value.lines() {
                    text.push('\n');
                    if !line.is_empty() {
                        text.push_str("    ");
                        text.push_str(line);
                    }
                }
            } else {
                text.push_str(&format!("\n- {key}: {value}"));
            }
        }
        text
    }
}

/// Something a provider reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEvent {
    /// A piece of output text, in order.
    Output(String),
    /// Something the agent did that is not output: a tool call, a tool result, the
    /// session starting. One line, for people following the task.
    Activity(String),
    /// Tokens used and what they cost so far in this execution, as cumulative totals: each
    /// event replaces the previous one, never adds to it. Sent whenever the provider learns
    /// more (the API reported usage, the CLI finished a message), also when the execution
    /// then fails: the last one received before `execute` returned an error is what the
    /// failed attempt consumed and must be charged. On success [`ProviderOutput`] carries
    /// the final figures, which take precedence.
    Usage {
        /// Tokens so far.
        usage: Usage,
        /// Cost so far, in millionths of a dollar (0 when the model's price is unknown).
        cost_micros: u64,
    },
}

/// Where a provider sends its events while executing. Sending never blocks; a closed sink
/// (the attempt was abandoned) is not an error for the provider.
#[derive(Debug, Clone)]
pub struct EventSink(mpsc::UnboundedSender<ProviderEvent>);

impl EventSink {
    /// A sink and the receiver its events arrive on.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<ProviderEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink(tx), rx)
    }

    /// Reports an event.
    pub fn send(&self, event: ProviderEvent) {
        let _ = self.0.send(event);
    }
}

/// What a successful execution produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderOutput {
    /// The full output text.
    pub output: String,
    /// Tokens used.
    pub usage: Usage,
    /// Cost in millionths of a dollar.
    pub cost_micros: u64,
    /// The model that answered.
    pub model: String,
    /// Files the execution produced (for example the `git diff` of a worktree).
    pub artifacts: Vec<Artifact>,
}

/// A named piece of output beside the text: a diff, a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Name, unique within the task, e.g. `changes.diff`.
    pub name: String,
    /// Media type, e.g. `text/x-diff`.
    pub media_type: String,
    /// Content.
    pub content: String,
}

/// Why an execution failed, typed for retries and routing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// Another attempt (or another provider) may succeed: rate limited, overloaded,
    /// unavailable, timed out, connection dropped.
    #[error("{kind}: {message}")]
    Retryable {
        /// Short category, e.g. `rate_limited`, `overloaded`, `timeout`.
        kind: &'static str,
        /// What happened.
        message: String,
        /// How long the provider asked callers to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help: bad request, authentication, context too long, budget.
    #[error("{kind}: {message}")]
    Permanent {
        /// Short category, e.g. `bad_request`, `auth`.
        kind: &'static str,
        /// What happened.
        message: String,
    },
}

impl ProviderError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable { .. })
    }
}

/// What a provider can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Task types it serves.
    pub task_types: Vec<TaskType>,
    /// Models it can use.
    pub models: Vec<String>,
    /// Largest context, in tokens.
    pub max_context_tokens: u64,
    /// Whether it streams output as it goes.
    pub streaming: bool,
    /// Whether it can use tools (edit files, run commands).
    pub tools: bool,
    /// Whether it works in the git repository a task names (context [`REPO_KEY`]): a
    /// worktree, the agent's changes as a diff and a commit. Tasks that name a repository
    /// go only to providers that can.
    pub repository: bool,
}

/// The context key naming the repository a task works in.
pub const REPO_KEY: &str = "repo";

/// Whether a task with this context needs a provider that works in a repository
/// ([`Capabilities::repository`]): it names a repository, or hooks, which run in the
/// attempt's own directory.
pub fn needs_repository(context: &std::collections::BTreeMap<String, String>) -> bool {
    context.contains_key(REPO_KEY) || hooks::names_any(context)
}

/// The result of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether it can take work.
    pub healthy: bool,
    /// What the check saw.
    pub detail: String,
}

/// What [`Provider::recover`] cleaned up after an earlier run of the node on this machine
/// (one that died or was killed before it could clean up itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Workspaces removed (worktrees and scratch directories, with the attempts' HOME and
    /// TMPDIR).
    pub workspaces: Vec<std::path::PathBuf>,
    /// Leftover agent processes killed.
    pub processes_killed: usize,
    /// Branches deleted: those of attempts that never finished (finished attempts' kept
    /// branches are left alone).
    pub branches_deleted: Vec<String>,
    /// What could not be cleaned up, one sentence each.
    pub problems: Vec<String>,
}

impl Recovery {
    /// Whether there was nothing to clean up and nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.workspaces.is_empty()
            && self.processes_killed == 0
            && self.branches_deleted.is_empty()
            && self.problems.is_empty()
    }
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} leftover workspace(s), killed {} leftover process(es), deleted {} unfinished branch(es)",
            self.workspaces.len(),
            self.processes_killed,
            self.branches_deleted.len()
        )?;
        for problem in &self.problems {
            write!(f, "; {problem}")?;
        }
        Ok(())
    }
}

/// A way to run prompts.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The configured name (unique on a node), e.g. `mock`.
    fn name(&self) -> &str;
    /// The implementation, e.g. `mock`, `anthropic`.
    fn kind(&self) -> &'static str;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Runs one attempt, streaming output to `sink` as it arrives.
    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError>;
    /// Checks that it can take work (a real probe, not a flag).
    async fn health(&self) -> Health;
    /// Estimated cost of a request, in millionths of a dollar.
    fn estimate_cost(&self, request: &ProviderRequest) -> u64;
    /// Where it makes attempts' work directories (repository worktrees), if anywhere:
    /// the node watches that disk's free space.
    fn work_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// How the processes this provider starts for a task are confined, in one sentence
    /// the node can print at start (what is guaranteed, and what is not on this machine);
    /// `None` for providers that start no processes.
    fn sandbox(&self) -> Option<String> {
        None
    }
    /// Cleans up what an earlier run of the node left behind when it died (workspaces,
    /// processes). The node calls it once at start, before it leases any task: anything
    /// it finds then belongs to no live attempt of this node. Never fails; what could not
    /// be cleaned is listed in [`Recovery::problems`].
    async fn recover(&self) -> Recovery {
        Recovery::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_rendered_after_the_prompt() {
        let mut r =
            ProviderRequest::simple("t", TaskType::BugFix, "fix it\n", Duration::from_secs(1));
        assert_eq!(r.prompt_with_context(), "fix it\n");
        r.context.insert("file".into(), "src/main.rs".into());
        r.context
            .insert("log".into(), "line one\n\nline two".into());
        assert_eq!(
            r.prompt_with_context(),
            "fix it\n\nContext:\n- file: src/main.rs\n- log:\n    line one\n\n    line two"
        );
    }
}
