//! Tasks: their kinds, priorities, lifecycle and events.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An error parsing a user-supplied name (task type, status, priority, id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of: {expected}")]
pub struct ParseError {
    /// What was being parsed ("task type", "priority", ...).
    pub what: &'static str,
    /// The input that did not parse.
    pub given: String,
    /// The accepted spellings, comma-separated.
    pub expected: String,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable snake_case name used in the CLI, config, keys and logs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                let norm = s.trim().to_ascii_lowercase().replace('-', "_");
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == norm)
                    .ok_or_else(|| ParseError {
                        what: $what,
                        given: s.to_string(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}

named_enum!(
    /// What kind of coding work a task asks for.
    TaskType, "task type", {
        /// Review a pull request or diff.
        PrReview => "pr_review",
        /// Summarise an issue.
        IssueSummary => "issue_summary",
        /// Analyse code structure or quality.
        CodeAnalysis => "code_analysis",
        /// Restructure code without changing behaviour.
        Refactor => "refactor",
        /// Find and fix a bug.
        BugFix => "bug_fix",
        /// Build a feature.
        Feature => "feature",
        /// Write or improve documentation.
        Documentation => "documentation",
        /// Write or improve tests.
        Testing => "testing",
        /// Prepare or check a deployment.
        Deployment => "deployment",
        /// Audit code for security problems.
        SecurityAudit => "security_audit",
    }
);

named_enum!(
    /// How urgently a task should run. Higher priorities are leased first.
    Priority, "priority", {
        /// Background work.
        Low => "low",
        /// The default.
        Normal => "normal",
        /// Ahead of normal work.
        High => "high",
        /// Ahead of high.
        Urgent => "urgent",
        /// Ahead of everything.
        Critical => "critical",
    }
);

impl Priority {
    /// 0 for low up to 4 for critical.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::Normal
    }
}

named_enum!(
    /// Where a task is in its lifecycle.
    ///
    /// `Queued → Running → Succeeded | Failed | Cancelled`, and on a retryable failure
    /// `Running → RetryWait → Queued`. A lease that lapses sends `Running` back to `Queued`.
    /// Terminal statuses never change.
    TaskStatus, "task status", {
        /// Waiting to be leased.
        Queued => "queued",
        /// Leased by a node and executing.
        Running => "running",
        /// Failed an attempt; waiting out its backoff before it is queued again.
        RetryWait => "retry_wait",
        /// Finished with a result.
        Succeeded => "succeeded",
        /// Finished without a result after its last attempt, or with a permanent error.
        Failed => "failed",
        /// Cancelled by a user.
        Cancelled => "cancelled",
    }
);

impl TaskStatus {
    /// Whether this status is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Queued, Running) | (Queued, Cancelled) => true,
            (Running, Succeeded) | (Running, Failed) | (Running, Cancelled) => true,
            (Running, RetryWait) | (Running, Queued) => true,
            (RetryWait, Queued) | (RetryWait, Cancelled) | (RetryWait, Failed) => true,
            _ => false,
        }
    }
}

/// A task's identifier: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub uuid::Uuid);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        TaskId(uuid::Uuid::now_v7())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(s.trim())
            .map(TaskId)
            .map_err(|_| ParseError {
                what: "task id",
                given: s.to_string(),
                expected: "a UUID such as 0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f".into(),
            })
    }
}

/// Tokens a provider consumed for one attempt or a whole task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// What a successful task produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The output text (assembled from chunks when stored).
    pub output: String,
    /// Tokens used by the successful attempt.
    pub usage: Usage,
    /// Cost of the successful attempt, in millionths of a US dollar.
    pub cost_micros: u64,
    /// The provider that produced it.
    pub provider: String,
    /// The model that produced it.
    pub model: String,
}

/// The lease a node holds on a running task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node that holds it.
    pub node_id: String,
    /// The node's epoch when it took the lease; a fenced epoch voids the lease.
    pub node_epoch: u64,
    /// The fencing token every write by the runner must carry.
    pub fence: u64,
    /// When the lease lapses unless renewed (unix microseconds).
    pub expires_at: i64,
}

/// What a user asks for when submitting a task (validated by [`NewTask::validate`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// The kind of work.
    pub task_type: Option<TaskType>,
    /// What to do.
    pub prompt: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// Free-form labels for filtering.
    pub labels: Vec<String>,
    /// A key that makes resubmission return the first task instead of a new one.
    pub idempotency_key: Option<String>,
    /// Extra inputs (repository, ref, file paths...).
    pub context: BTreeMap<String, String>,
    /// Attempts before giving up (`None`: the configured default).
    pub max_attempts: Option<u32>,
    /// Time limit of one attempt in milliseconds (`None`: the configured default).
    pub timeout_ms: Option<u64>,
}

/// A rejected field of a request, named so the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The request field at fault.
    pub field: &'static str,
    /// What is wrong with it and what is accepted.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl NewTask {
    /// Checks every field against the limits, naming the first one that is wrong.
    pub fn validate(&self) -> Result<TaskType, FieldError> {
        let task_type = self.task_type.ok_or_else(|| {
            FieldError::new(
                "type",
                format!(
                    "a task type is required; expected one of: {}",
                    TaskType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if self.prompt.trim().is_empty() {
            return Err(FieldError::new("prompt", "the prompt is empty"));
        }
        if self.prompt.len() > crate::MAX_PROMPT_BYTES {
            return Err(FieldError::new(
                "prompt",
                format!(
                    "the prompt is {} bytes; the limit is {} bytes",
                    self.prompt.len(),
                    crate::MAX_PROMPT_BYTES
                ),
            ));
        }
        if self.labels.len() > crate::MAX_LABELS {
            return Err(FieldError::new(
                "labels",
                format!(
                    "{} labels given; at most {} are allowed",
                    self.labels.len(),
                    crate::MAX_LABELS
                ),
            ));
        }
        for label in &self.labels {
            if label.is_empty() || label.len() > crate::MAX_LABEL_BYTES {
                return Err(FieldError::new(
                    "labels",
                    format!(
                        "label {label:?} must be 1 to {} bytes long",
                        crate::MAX_LABEL_BYTES
                    ),
                ));
            }
        }
        if let Some(key) = &self.idempotency_key
            && key.len() > crate::MAX_IDEMPOTENCY_KEY_BYTES
        {
            return Err(FieldError::new(
                "idempotency_key",
                format!(
                    "the key is {} bytes; the limit is {} bytes",
                    key.len(),
                    crate::MAX_IDEMPOTENCY_KEY_BYTES
                ),
            ));
        }
        if self.context.len() > crate::MAX_CONTEXT_ENTRIES {
            return Err(FieldError::new(
                "context",
                format!(
                    "{} entries given; at most {} are allowed",
                    self.context.len(),
                    crate::MAX_CONTEXT_ENTRIES
                ),
            ));
        }
        let context_bytes: usize = self.context.iter().map(|(k, v)| k.len() + v.len()).sum();
        if context_bytes > crate::MAX_CONTEXT_BYTES {
            return Err(FieldError::new(
                "context",
                format!(
                    "the context is {context_bytes} bytes; the limit is {} bytes",
                    crate::MAX_CONTEXT_BYTES
                ),
            ));
        }
        if let Some(n) = self.max_attempts
            && (n == 0 || n > crate::MAX_ATTEMPTS_LIMIT)
        {
            return Err(FieldError::new(
                "max_attempts",
                format!(
                    "{n} is out of range; use 1 to {} (0 in the API means the default)",
                    crate::MAX_ATTEMPTS_LIMIT
                ),
            ));
        }
        Ok(task_type)
    }
}

/// A task as stored: its request, its lifecycle state and, once finished, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its tenant.
    pub tenant: String,
    /// The kind of work.
    pub task_type: TaskType,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// What to do.
    pub prompt: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// Labels for filtering.
    pub labels: Vec<String>,
    /// Extra inputs.
    pub context: BTreeMap<String, String>,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Time limit of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts started so far (1 during the first run).
    pub attempt: u32,
    /// The current lease while running.
    pub lease: Option<Lease>,
    /// The latest fencing token handed out; grows with every lease and terminal change.
    pub fence: u64,
    /// When the next attempt may start, while in `RetryWait` (unix microseconds).
    pub next_attempt_at: Option<i64>,
    /// The result, once succeeded. Its output is stored in chunks beside the record and
    /// is empty here until read back.
    pub result: Option<TaskResult>,
    /// Length of the stored output in bytes.
    pub output_bytes: u64,
    /// Why the last attempt failed, or why the task was cancelled.
    pub error: Option<String>,
    /// The task this one re-runs, when created by a retry request.
    pub retry_of: Option<TaskId>,
    /// The sequence number the next event will get.
    pub next_event_seq: u64,
    /// Creation time (unix microseconds).
    pub created_at: i64,
    /// Last change (unix microseconds).
    pub updated_at: i64,
    /// When the current or last attempt started.
    pub started_at: Option<i64>,
    /// When it reached its terminal status.
    pub finished_at: Option<i64>,
}

/// What happened to a task, in order. The event log is append-only and resumable by
/// sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Position in the task's log, from 1.
    pub seq: u64,
    /// When it happened (unix microseconds).
    pub at: i64,
    /// What kind of event.
    pub kind: EventKind,
    /// The task's status after the event.
    pub status: TaskStatus,
    /// The attempt it belongs to (0 before the first lease).
    pub attempt: u32,
    /// A human-readable line (reason, node, error).
    pub message: String,
    /// Output text streamed by the provider (for `Output` events).
    pub output: String,
}

named_enum!(
    /// Kinds of task events.
    EventKind, "event kind", {
        /// Accepted and queued.
        Submitted => "submitted",
        /// Leased by a node; an attempt started.
        Started => "started",
        /// Partial output streamed by the provider.
        Output => "output",
        /// An attempt failed and the task waits to retry.
        RetryScheduled => "retry_scheduled",
        /// Queued again (a retry vested, or a lease lapsed).
        Requeued => "requeued",
        /// Finished with a result.
        Succeeded => "succeeded",
        /// Finished without one.
        Failed => "failed",
        /// Cancelled.
        Cancelled => "cancelled",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_and_dash_insensitively() {
        assert_eq!("Bug-Fix".parse::<TaskType>(), Ok(TaskType::BugFix));
        assert_eq!("CRITICAL".parse::<Priority>(), Ok(Priority::Critical));
    }

    #[test]
    fn unknown_name_lists_expected_values() {
        let err = "bugfix".parse::<TaskType>().unwrap_err().to_string();
        assert!(err.contains("unknown task type \"bugfix\""), "{err}");
        assert!(err.contains("bug_fix") && err.contains("security_audit"), "{err}");
    }

    #[test]
    fn terminal_statuses_have_no_successor() {
        for from in TaskStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in TaskStatus::ALL {
                assert!(!from.can_become(*to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn priorities_rank_in_order() {
        let ranks: Vec<u8> = Priority::ALL.iter().map(|p| p.rank()).collect();
        assert_eq!(ranks, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn validation_names_the_field() {
        let mut t = NewTask {
            task_type: Some(TaskType::BugFix),
            prompt: "x".repeat(crate::MAX_PROMPT_BYTES + 1),
            ..Default::default()
        };
        let err = t.validate().unwrap_err();
        assert_eq!(err.field, "prompt");
        assert!(err.message.contains("65536"), "{}", err.message);
        t.prompt = "fix it".into();
        t.task_type = None;
        assert_eq!(t.validate().unwrap_err().field, "type");
        t.task_type = Some(TaskType::Feature);
        t.max_attempts = Some(0);
        assert_eq!(t.validate().unwrap_err().field, "max_attempts");
    }

    #[test]
    fn malformed_id_is_rejected_with_example() {
        let err = "not-a-uuid".parse::<TaskId>().unwrap_err().to_string();
        assert!(err.contains("task id"), "{err}");
    }
}
