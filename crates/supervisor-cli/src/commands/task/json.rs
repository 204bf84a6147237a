//! Tasks as `--output json` prints them. An unspecified priority reads `"normal"` (its
//! meaning in the contract); a `max_cost_usd` of 0 (no limit) reads null.
//!
//! `specialty` is the specialty the task asked for; null when it left the choice to the
//! agents, which pick one per attempt and name it in the attempt's routing event (an
//! `activity` event: `attempt 1: specialty bug_hunter (...); provider ...`). An attempt's
//! `provider` is null when none was chosen, or when the agent panicked (outcome
//! `panicked`) before it recorded one.

use std::collections::BTreeMap;

use serde::Serialize;
use supervisor_proto::{
    convert::EnumName,
    v1::{
        Attempt, Task, TaskEvent, TaskEventType, TaskResult, TaskStats, TaskStatus, TaskType, Usage,
    },
};

use super::text::{priority_name, task_count};
use crate::commands::output::{non_empty, optional_rfc3339, usd};

/// A task.
#[derive(Debug, Serialize)]
pub struct TaskJson {
    id: String,
    #[serde(rename = "type")]
    task_type: String,
    status: String,
    priority: String,
    prompt: String,
    labels: Vec<String>,
    context: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    max_attempts: u32,
    timeout_ms: u64,
    attempt: u32,
    result: Option<ResultJson>,
    error: Option<String>,
    /// While queued: what a resource manager holds it back for (null otherwise).
    waiting_for: Option<String>,
    /// The OpenTelemetry trace id of its spans (null when tracing was off).
    trace_id: Option<String>,
    node_id: Option<String>,
    retry_of: Option<String>,
    tenant: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    next_attempt_at: Option<String>,
    /// The specialty the task asked for (null: chosen per attempt, see its events).
    specialty: Option<String>,
    routing_strategy: Option<String>,
    preferred_providers: Vec<String>,
    excluded_providers: Vec<String>,
    max_cost_usd: Option<f64>,
    attempts: Vec<AttemptJson>,
    cost_usd: f64,
    cost_micros: u64,
    /// What history says about tasks like it (`task get` only; null in lists and before
    /// any task finished).
    prediction: Option<serde_json::Value>,
}

/// One ended attempt of a task.
#[derive(Debug, Serialize)]
pub struct AttemptJson {
    attempt: u32,
    /// Null when no provider was chosen, or the agent panicked (outcome `panicked`).
    provider: Option<String>,
    model: Option<String>,
    outcome: String,
    usage: UsageJson,
    cost_usd: f64,
    cost_micros: u64,
    finished_at: Option<String>,
}

/// What a successful task produced.
#[derive(Debug, Serialize)]
pub struct ResultJson {
    output: String,
    output_bytes: u64,
    artifacts: Vec<ArtifactJson>,
    usage: UsageJson,
    cost_usd: f64,
    cost_micros: u64,
    provider: String,
    model: String,
}

/// A file produced beside the output.
#[derive(Debug, Serialize)]
pub struct ArtifactJson {
    name: String,
    media_type: String,
    size_bytes: u64,
    content: String,
}

/// Tokens used.
#[derive(Debug, Serialize)]
pub struct UsageJson {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
}

/// One event of a task's log.
#[derive(Debug, Serialize)]
pub struct EventJson {
    task_id: String,
    seq: u64,
    #[serde(rename = "type")]
    event_type: String,
    status: String,
    attempt: u32,
    message: String,
    output: String,
    at: Option<String>,
    node: String,
    fence: u64,
}

/// Task counts by status.
#[derive(Debug, Serialize)]
pub struct StatsJson {
    queued: u64,
    running: u64,
    retry_wait: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    total: u64,
}

impl From<&Task> for TaskJson {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id.clone(),
            task_type: TaskType::name_of(task.r#type).into_owned(),
            status: TaskStatus::name_of(task.status).into_owned(),
            priority: priority_name(task.priority).into_owned(),
            prompt: task.prompt.clone(),
            labels: task.labels.clone(),
            context: task
                .context
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            idempotency_key: non_empty(&task.idempotency_key),
            max_attempts: task.max_attempts,
            timeout_ms: task.timeout_ms,
            attempt: task.attempt,
            result: task.result.as_ref().map(ResultJson::from),
            error: non_empty(&task.error),
            waiting_for: non_empty(&task.waiting_for),
            trace_id: non_empty(&task.trace_id),
            node_id: non_empty(&task.node_id),
            retry_of: non_empty(&task.retry_of),
            tenant: non_empty(&task.tenant),
            created_at: optional_rfc3339(task.created_at.as_ref()),
            updated_at: optional_rfc3339(task.updated_at.as_ref()),
            started_at: optional_rfc3339(task.started_at.as_ref()),
            finished_at: optional_rfc3339(task.finished_at.as_ref()),
            next_attempt_at: optional_rfc3339(task.next_attempt_at.as_ref()),
            specialty: non_empty(&task.specialty),
            routing_strategy: non_empty(&task.routing_strategy),
            preferred_providers: task.preferred_providers.clone(),
            excluded_providers: task.excluded_providers.clone(),
            max_cost_usd: (task.max_cost_usd > 0.0).then_some(task.max_cost_usd),
            attempts: task.attempts.iter().map(AttemptJson::from).collect(),
            cost_usd: task.cost_usd,
            cost_micros: task.cost_micros,
            prediction: task
                .prediction
                .as_ref()
                .map(crate::commands::analytics::prediction_json),
        }
    }
}

impl From<&Attempt> for AttemptJson {
    fn from(attempt: &Attempt) -> Self {
        Self {
            attempt: attempt.attempt,
            provider: non_empty(&attempt.provider),
            model: non_empty(&attempt.model),
            outcome: attempt.outcome.clone(),
            usage: UsageJson::from(&attempt.usage.unwrap_or_default()),
            cost_usd: usd(attempt.cost_micros),
            cost_micros: attempt.cost_micros,
            finished_at: optional_rfc3339(attempt.finished_at.as_ref()),
        }
    }
}

impl From<&Usage> for UsageJson {
    fn from(usage: &Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
        }
    }
}

impl From<&TaskResult> for ResultJson {
    fn from(result: &TaskResult) -> Self {
        Self {
            output: result.output.clone(),
            output_bytes: result.output_bytes,
            artifacts: result
                .artifacts
                .iter()
                .map(|a| ArtifactJson {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    size_bytes: a.size_bytes,
                    content: a.content.clone(),
                })
                .collect(),
            usage: UsageJson::from(&result.usage.unwrap_or_default()),
            cost_usd: result.cost_usd,
            cost_micros: result.cost_micros,
            provider: result.provider.clone(),
            model: result.model.clone(),
        }
    }
}

impl From<&TaskEvent> for EventJson {
    fn from(event: &TaskEvent) -> Self {
        Self {
            task_id: event.task_id.clone(),
            seq: event.seq,
            event_type: TaskEventType::name_of(event.r#type).into_owned(),
            status: TaskStatus::name_of(event.status).into_owned(),
            attempt: event.attempt,
            message: event.message.clone(),
            output: event.output.clone(),
            at: optional_rfc3339(event.at.as_ref()),
            node: event.node.clone(),
            fence: event.fence,
        }
    }
}

impl From<&TaskStats> for StatsJson {
    fn from(stats: &TaskStats) -> Self {
        Self {
            queued: stats.queued,
            running: stats.running,
            retry_wait: stats.retry_wait,
            succeeded: stats.succeeded,
            failed: stats.failed,
            cancelled: stats.cancelled,
            total: task_count(stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use supervisor_proto::{convert::timestamp_from_micros, v1::Priority};

    use super::*;

    fn sample_task() -> Task {
        Task {
            id: "t1".into(),
            r#type: TaskType::BugFix as i32,
            status: TaskStatus::Succeeded as i32,
            prompt: "fix it".into(),
            priority: Priority::Unspecified as i32,
            labels: vec!["ci".into()],
            context: [("repo".to_owned(), "/src".to_owned())].into(),
            max_attempts: 3,
            timeout_ms: 30_000,
            attempt: 1,
            result: Some(TaskResult {
                output: "done".into(),
                usage: Some(Usage {
                    input_tokens: 10,
                    output_tokens: 20,
                    cache_read_tokens: 5,
                    cache_write_tokens: 0,
                }),
                cost_usd: 0.0015,
                cost_micros: 1500,
                provider: "mock".into(),
                model: "mock-1".into(),
                output_bytes: 4,
                artifacts: vec![],
            }),
            tenant: "default".into(),
            created_at: Some(timestamp_from_micros(1_700_000_000_123_456)),
            finished_at: Some(timestamp_from_micros(1_700_000_005_000_000)),
            specialty: "bug_hunter".into(),
            preferred_providers: vec!["mock".into()],
            max_cost_usd: 0.5,
            attempts: vec![
                Attempt {
                    attempt: 1,
                    outcome: "rate_limited".into(),
                    finished_at: Some(timestamp_from_micros(1_700_000_002_000_000)),
                    ..Default::default()
                },
                Attempt {
                    attempt: 2,
                    provider: "mock".into(),
                    model: "mock-1".into(),
                    outcome: "succeeded".into(),
                    usage: Some(Usage {
                        input_tokens: 10,
                        output_tokens: 20,
                        cache_read_tokens: 5,
                        cache_write_tokens: 0,
                    }),
                    cost_micros: 1500,
                    finished_at: Some(timestamp_from_micros(1_700_000_005_000_000)),
                },
            ],
            cost_usd: 0.0015,
            cost_micros: 1500,
            ..Default::default()
        }
    }

    #[test]
    fn task_json_shape() {
        let value = serde_json::to_value(TaskJson::from(&sample_task())).expect("serializes");
        assert_eq!(
            value,
            json!({
                "id": "t1",
                "type": "bug_fix",
                "status": "succeeded",
                "priority": "normal",
                "prompt": "fix it",
                "labels": ["ci"],
                "context": {"repo": "/src"},
                "idempotency_key": null,
                "max_attempts": 3,
                "timeout_ms": 30000,
                "attempt": 1,
                "result": {
                    "output": "done",
                    "output_bytes": 4,
                    "artifacts": [],
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 20,
                        "cache_read_tokens": 5,
                        "cache_write_tokens": 0,
                    },
                    "cost_usd": 0.0015,
                    "cost_micros": 1500,
                    "provider": "mock",
                    "model": "mock-1",
                },
                "error": null,
                "waiting_for": null,
                "trace_id": null,
                "node_id": null,
                "retry_of": null,
                "tenant": "default",
                "created_at": "2023-11-14T22:13:20.123456Z",
                "updated_at": null,
                "started_at": null,
                "finished_at": "2023-11-14T22:13:25.000000Z",
                "next_attempt_at": null,
                "specialty": "bug_hunter",
                "routing_strategy": null,
                "preferred_providers": ["mock"],
                "excluded_providers": [],
                "max_cost_usd": 0.5,
                "attempts": [
                    {
                        "attempt": 1,
                        "provider": null,
                        "model": null,
                        "outcome": "rate_limited",
                        "usage": {
                            "input_tokens": 0,
                            "output_tokens": 0,
                            "cache_read_tokens": 0,
                            "cache_write_tokens": 0,
                        },
                        "cost_usd": 0.0,
                        "cost_micros": 0,
                        "finished_at": "2023-11-14T22:13:22.000000Z",
                    },
                    {
                        "attempt": 2,
                        "provider": "mock",
                        "model": "mock-1",
                        "outcome": "succeeded",
                        "usage": {
                            "input_tokens": 10,
                            "output_tokens": 20,
                            "cache_read_tokens": 5,
                            "cache_write_tokens": 0,
                        },
                        "cost_usd": 0.0015,
                        "cost_micros": 1500,
                        "finished_at": "2023-11-14T22:13:25.000000Z",
                    },
                ],
                "cost_usd": 0.0015,
                "cost_micros": 1500,
                "prediction": null,
            })
        );
    }

    #[test]
    fn unknown_enum_values_read_as_numbers() {
        let task = Task {
            status: 42,
            ..Default::default()
        };
        let value = serde_json::to_value(TaskJson::from(&task)).expect("serializes");
        assert_eq!(value["status"], "42");
        assert_eq!(value["type"], "unspecified");
        assert_eq!(value["result"], serde_json::Value::Null);
        assert_eq!(value["max_cost_usd"], serde_json::Value::Null);
        assert_eq!(value["attempts"], json!([]));
    }

    #[test]
    fn event_json_shape() {
        let event = TaskEvent {
            task_id: "t1".into(),
            seq: 3,
            r#type: TaskEventType::RetryScheduled as i32,
            status: TaskStatus::RetryWait as i32,
            attempt: 2,
            message: "provider timed out".into(),
            output: String::new(),
            at: Some(timestamp_from_micros(0)),
            node: "n1".into(),
            fence: 2,
        };
        let value = serde_json::to_value(EventJson::from(&event)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "task_id": "t1",
                "seq": 3,
                "type": "retry_scheduled",
                "status": "retry_wait",
                "attempt": 2,
                "message": "provider timed out",
                "output": "",
                "at": "1970-01-01T00:00:00.000000Z",
                "node": "n1",
                "fence": 2,
            })
        );
    }

    #[test]
    fn stats_json_adds_a_total() {
        let stats = TaskStats {
            queued: 1,
            running: 2,
            retry_wait: 3,
            succeeded: 4,
            failed: 5,
            cancelled: 6,
            ..Default::default()
        };
        let value = serde_json::to_value(StatsJson::from(&stats)).expect("serializes");
        assert_eq!(value["total"], 21);
        assert_eq!(value["retry_wait"], 3);
    }
}
