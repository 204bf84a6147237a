//! The JSON shapes of `--output json`, mapped from the protobuf types.
//!
//! Field names are snake_case and stable; enums are their short names (`"succeeded"`,
//! `"bug_fix"`), timestamps RFC 3339 in UTC with microseconds (null when unset), and
//! optional strings null when empty. An unspecified priority reads `"normal"` (its
//! meaning in the contract). Numbers the contract marks as "none" with a sentinel are
//! null instead: a `max_cost_usd` or rate limit of 0 (no limit), a success rate or
//! latency of -1 (nothing measured yet). A workflow run's definition is its JSON object;
//! a schedule's unset time zone reads `"UTC"` and its unset missed-tick policy `"skip"`.

use std::collections::BTreeMap;

use serde::Serialize;
use supervisor_proto::{
    convert::EnumName,
    v1::{
        Attempt, GetSpendResponse, ProviderInfo, Schedule, SpendRow, StepRun, Task, TaskEvent,
        TaskEventType, TaskResult, TaskStats, TaskStatus, TaskType, Usage,
        ValidateWorkflowResponse, ValidationIssue, WorkflowEvent, WorkflowRun,
    },
};

use super::format::{missed_name, priority_name, rfc3339, run_status_name, timezone_name};

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
    node_id: Option<String>,
    retry_of: Option<String>,
    tenant: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    next_attempt_at: Option<String>,
    specialty: Option<String>,
    routing_strategy: Option<String>,
    preferred_providers: Vec<String>,
    excluded_providers: Vec<String>,
    max_cost_usd: Option<f64>,
    attempts: Vec<AttemptJson>,
    cost_usd: f64,
    cost_micros: u64,
}

/// One ended attempt of a task.
#[derive(Debug, Serialize)]
pub struct AttemptJson {
    attempt: u32,
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

/// A provider and its counters.
#[derive(Debug, Serialize)]
pub struct ProviderJson {
    name: String,
    kind: String,
    healthy: bool,
    health_detail: Option<String>,
    models: Vec<String>,
    circuit: String,
    throttled_for_ms: u64,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u64>,
    in_flight: u32,
    max_concurrency: u32,
    executions_started: u64,
    executions_succeeded: u64,
    executions_failed: u64,
    success_rate: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    completions_accepted: u64,
    completions_refused: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    cost_micros: u64,
}

/// Spend per day and provider, with the total.
#[derive(Debug, Serialize)]
pub struct SpendJson {
    rows: Vec<SpendRowJson>,
    total_cost_usd: f64,
    total_cost_micros: u64,
}

/// What one provider cost on one day.
#[derive(Debug, Serialize)]
pub struct SpendRowJson {
    day: String,
    provider: String,
    attempts: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    cost_micros: u64,
}

/// A workflow run and its steps.
#[derive(Debug, Serialize)]
pub struct WorkflowRunJson {
    id: String,
    name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    status: String,
    vars: BTreeMap<String, String>,
    steps: Vec<StepRunJson>,
    retries: u32,
    /// The definition it runs, as a JSON object (its text when it is not JSON).
    definition: Option<serde_json::Value>,
    created_at: Option<String>,
    updated_at: Option<String>,
    finished_at: Option<String>,
    deadline_at: Option<String>,
}

/// One step of a workflow run.
#[derive(Debug, Serialize)]
pub struct StepRunJson {
    id: String,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled` or `skipped`.
    state: String,
    task_id: Option<String>,
    output_summary: Option<String>,
    failure: Option<String>,
}

/// One event of a workflow run's log.
#[derive(Debug, Serialize)]
pub struct WorkflowEventJson {
    run_id: String,
    seq: u64,
    kind: String,
    step: Option<String>,
    task_id: Option<String>,
    message: String,
    at: Option<String>,
}

/// The verdict on a workflow definition, with every error and warning.
#[derive(Debug, Serialize)]
pub struct ValidationJson {
    valid: bool,
    errors: Vec<IssueJson>,
    warnings: Vec<IssueJson>,
}

/// One problem found in a workflow definition.
#[derive(Debug, Serialize)]
pub struct IssueJson {
    code: String,
    step: Option<String>,
    message: String,
}

/// A schedule of workflow runs.
#[derive(Debug, Serialize)]
pub struct ScheduleJson {
    name: String,
    cron: String,
    timezone: String,
    missed: String,
    paused: bool,
    workflow_name: Option<String>,
    next_fire_at: Option<String>,
    last_fired_at: Option<String>,
    last_run_id: Option<String>,
    runs_started: u64,
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn time(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    ts.map(rfc3339)
}

/// A count or limit where 0 means "none".
fn non_zero<N: Default + PartialEq>(n: N) -> Option<N> {
    (n != N::default()).then_some(n)
}

/// A measurement where a negative value means "not measured yet".
fn measured(value: f64) -> Option<f64> {
    (value >= 0.0).then_some(value)
}

/// Millionths of a dollar as dollars.
fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
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
            node_id: non_empty(&task.node_id),
            retry_of: non_empty(&task.retry_of),
            tenant: non_empty(&task.tenant),
            created_at: time(task.created_at.as_ref()),
            updated_at: time(task.updated_at.as_ref()),
            started_at: time(task.started_at.as_ref()),
            finished_at: time(task.finished_at.as_ref()),
            next_attempt_at: time(task.next_attempt_at.as_ref()),
            specialty: non_empty(&task.specialty),
            routing_strategy: non_empty(&task.routing_strategy),
            preferred_providers: task.preferred_providers.clone(),
            excluded_providers: task.excluded_providers.clone(),
            max_cost_usd: (task.max_cost_usd > 0.0).then_some(task.max_cost_usd),
            attempts: task.attempts.iter().map(AttemptJson::from).collect(),
            cost_usd: task.cost_usd,
            cost_micros: task.cost_micros,
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
            finished_at: time(attempt.finished_at.as_ref()),
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
            at: time(event.at.as_ref()),
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
            total: [
                stats.queued,
                stats.running,
                stats.retry_wait,
                stats.succeeded,
                stats.failed,
                stats.cancelled,
            ]
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n)),
        }
    }
}

impl From<&ProviderInfo> for ProviderJson {
    fn from(provider: &ProviderInfo) -> Self {
        Self {
            name: provider.name.clone(),
            kind: provider.kind.clone(),
            healthy: provider.healthy,
            health_detail: non_empty(&provider.health_detail),
            models: provider.models.clone(),
            circuit: provider.circuit.clone(),
            throttled_for_ms: provider.throttled_for_ms,
            requests_per_minute: non_zero(provider.requests_per_minute),
            tokens_per_minute: non_zero(provider.tokens_per_minute),
            in_flight: provider.in_flight,
            max_concurrency: provider.max_concurrency,
            executions_started: provider.executions_started,
            executions_succeeded: provider.executions_succeeded,
            executions_failed: provider.executions_failed,
            success_rate: measured(provider.success_rate),
            latency_p50_ms: measured(provider.latency_p50_ms),
            latency_p95_ms: measured(provider.latency_p95_ms),
            completions_accepted: provider.completions_accepted,
            completions_refused: provider.completions_refused,
            input_tokens: provider.input_tokens,
            output_tokens: provider.output_tokens,
            cost_usd: provider.cost_usd,
            cost_micros: provider.cost_micros,
        }
    }
}

impl From<&GetSpendResponse> for SpendJson {
    fn from(spend: &GetSpendResponse) -> Self {
        Self {
            rows: spend.rows.iter().map(SpendRowJson::from).collect(),
            total_cost_usd: usd(spend.total_cost_micros),
            total_cost_micros: spend.total_cost_micros,
        }
    }
}

impl From<&SpendRow> for SpendRowJson {
    fn from(row: &SpendRow) -> Self {
        Self {
            day: row.day.clone(),
            provider: row.provider.clone(),
            attempts: row.attempts,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cost_usd: row.cost_usd,
            cost_micros: row.cost_micros,
        }
    }
}

impl From<&WorkflowRun> for WorkflowRunJson {
    fn from(run: &WorkflowRun) -> Self {
        let definition = (!run.definition_json.is_empty()).then(|| {
            serde_json::from_str(&run.definition_json)
                .unwrap_or_else(|_| serde_json::Value::String(run.definition_json.clone()))
        });
        Self {
            id: run.id.clone(),
            name: run.name.clone(),
            status: run_status_name(run.status).into_owned(),
            vars: run
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            steps: run.steps.iter().map(StepRunJson::from).collect(),
            retries: run.retries,
            definition,
            created_at: time(run.created_at.as_ref()),
            updated_at: time(run.updated_at.as_ref()),
            finished_at: time(run.finished_at.as_ref()),
            deadline_at: time(run.deadline_at.as_ref()),
        }
    }
}

impl From<&StepRun> for StepRunJson {
    fn from(step: &StepRun) -> Self {
        Self {
            id: step.id.clone(),
            state: step.state.clone(),
            task_id: non_empty(&step.task_id),
            output_summary: non_empty(&step.output_summary),
            failure: non_empty(&step.failure),
        }
    }
}

impl From<&WorkflowEvent> for WorkflowEventJson {
    fn from(event: &WorkflowEvent) -> Self {
        Self {
            run_id: event.run_id.clone(),
            seq: event.seq,
            kind: event.kind.clone(),
            step: non_empty(&event.step),
            task_id: non_empty(&event.task_id),
            message: event.message.clone(),
            at: time(event.at.as_ref()),
        }
    }
}

impl From<&ValidateWorkflowResponse> for ValidationJson {
    fn from(report: &ValidateWorkflowResponse) -> Self {
        Self {
            valid: report.valid,
            errors: report.errors.iter().map(IssueJson::from).collect(),
            warnings: report.warnings.iter().map(IssueJson::from).collect(),
        }
    }
}

impl From<&ValidationIssue> for IssueJson {
    fn from(issue: &ValidationIssue) -> Self {
        Self {
            code: issue.code.clone(),
            step: non_empty(&issue.step),
            message: issue.message.clone(),
        }
    }
}

impl From<&Schedule> for ScheduleJson {
    fn from(schedule: &Schedule) -> Self {
        Self {
            name: schedule.name.clone(),
            cron: schedule.cron.clone(),
            timezone: timezone_name(&schedule.timezone).to_owned(),
            missed: missed_name(&schedule.missed).to_owned(),
            paused: schedule.paused,
            workflow_name: non_empty(&schedule.workflow_name),
            next_fire_at: time(schedule.next_fire_at.as_ref()),
            last_fired_at: time(schedule.last_fired_at.as_ref()),
            last_run_id: non_empty(&schedule.last_run_id),
            runs_started: schedule.runs_started,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use supervisor_proto::{
        convert::timestamp_from_micros,
        v1::{Priority, Usage},
    };

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
    fn workflow_run_json_shape() {
        let run = WorkflowRun {
            id: "r1".into(),
            name: "fix".into(),
            status: 3,
            vars: [("repo".to_owned(), "/src".to_owned())].into(),
            steps: vec![
                StepRun {
                    id: "analyse".into(),
                    state: "succeeded".into(),
                    task_id: "t1".into(),
                    output_summary: "found it".into(),
                    failure: String::new(),
                },
                StepRun {
                    id: "fix".into(),
                    state: "pending".into(),
                    ..Default::default()
                },
            ],
            retries: 0,
            definition_json: r#"{"name":"fix","steps":[]}"#.into(),
            created_at: Some(timestamp_from_micros(0)),
            ..Default::default()
        };
        let value = serde_json::to_value(WorkflowRunJson::from(&run)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "id": "r1",
                "name": "fix",
                "status": "failed",
                "vars": {"repo": "/src"},
                "steps": [
                    {
                        "id": "analyse",
                        "state": "succeeded",
                        "task_id": "t1",
                        "output_summary": "found it",
                        "failure": null,
                    },
                    {
                        "id": "fix",
                        "state": "pending",
                        "task_id": null,
                        "output_summary": null,
                        "failure": null,
                    },
                ],
                "retries": 0,
                "definition": {"name": "fix", "steps": []},
                "created_at": "1970-01-01T00:00:00.000000Z",
                "updated_at": null,
                "finished_at": null,
                "deadline_at": null,
            })
        );
        let odd = WorkflowRun {
            definition_json: "not json".into(),
            status: 1,
            ..Default::default()
        };
        let value = serde_json::to_value(WorkflowRunJson::from(&odd)).expect("serializes");
        assert_eq!(value["definition"], "not json");
        assert_eq!(value["status"], "running");
        let value =
            serde_json::to_value(WorkflowRunJson::from(&WorkflowRun::default())).expect("json");
        assert_eq!(value["definition"], serde_json::Value::Null);
    }

    #[test]
    fn validation_and_schedule_json_shapes() {
        let report = ValidateWorkflowResponse {
            valid: false,
            errors: vec![ValidationIssue {
                code: "cycle".into(),
                step: "fix".into(),
                message: "fix needs itself".into(),
            }],
            warnings: vec![ValidationIssue {
                code: "unused_var".into(),
                step: String::new(),
                message: "x is never used".into(),
            }],
        };
        let value = serde_json::to_value(ValidationJson::from(&report)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "valid": false,
                "errors": [{"code": "cycle", "step": "fix", "message": "fix needs itself"}],
                "warnings": [{"code": "unused_var", "step": null, "message": "x is never used"}],
            })
        );

        let schedule = Schedule {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            workflow_name: "audit".into(),
            next_fire_at: Some(timestamp_from_micros(0)),
            runs_started: 2,
            ..Default::default()
        };
        let value = serde_json::to_value(ScheduleJson::from(&schedule)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "name": "nightly",
                "cron": "0 3 * * *",
                "timezone": "UTC",
                "missed": "skip",
                "paused": false,
                "workflow_name": "audit",
                "next_fire_at": "1970-01-01T00:00:00.000000Z",
                "last_fired_at": null,
                "last_run_id": null,
                "runs_started": 2,
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
        };
        let value = serde_json::to_value(StatsJson::from(&stats)).expect("serializes");
        assert_eq!(value["total"], 21);
        assert_eq!(value["retry_wait"], 3);
    }

    #[test]
    fn provider_json_shape() {
        let provider = ProviderInfo {
            name: "mock".into(),
            kind: "mock".into(),
            healthy: true,
            max_concurrency: 4,
            ..Default::default()
        };
        let value = serde_json::to_value(ProviderJson::from(&provider)).expect("serializes");
        assert_eq!(value["healthy"], true);
        assert_eq!(value["health_detail"], serde_json::Value::Null);
        assert_eq!(value["max_concurrency"], 4);

        let measured = ProviderInfo {
            name: "claude".into(),
            kind: "anthropic".into(),
            models: vec!["m1".into(), "m2".into()],
            circuit: "half_open".into(),
            requests_per_minute: 50,
            tokens_per_minute: 0,
            throttled_for_ms: 1200,
            success_rate: 0.75,
            latency_p50_ms: 800.0,
            latency_p95_ms: -1.0,
            executions_succeeded: 3,
            cost_usd: 1.5,
            cost_micros: 1_500_000,
            ..Default::default()
        };
        let value = serde_json::to_value(ProviderJson::from(&measured)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "name": "claude",
                "kind": "anthropic",
                "healthy": false,
                "health_detail": null,
                "models": ["m1", "m2"],
                "circuit": "half_open",
                "throttled_for_ms": 1200,
                "requests_per_minute": 50,
                "tokens_per_minute": null,
                "in_flight": 0,
                "max_concurrency": 0,
                "executions_started": 0,
                "executions_succeeded": 3,
                "executions_failed": 0,
                "success_rate": 0.75,
                "latency_p50_ms": 800.0,
                "latency_p95_ms": null,
                "completions_accepted": 0,
                "completions_refused": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": 1.5,
                "cost_micros": 1_500_000,
            })
        );
    }

    #[test]
    fn spend_json_shape() {
        let spend = GetSpendResponse {
            rows: vec![SpendRow {
                day: "2026-01-31".into(),
                provider: "mock".into(),
                attempts: 3,
                input_tokens: 100,
                output_tokens: 200,
                cost_micros: 2_500_000,
                cost_usd: 2.5,
            }],
            total_cost_micros: 2_500_000,
        };
        let value = serde_json::to_value(SpendJson::from(&spend)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "rows": [{
                    "day": "2026-01-31",
                    "provider": "mock",
                    "attempts": 3,
                    "input_tokens": 100,
                    "output_tokens": 200,
                    "cost_usd": 2.5,
                    "cost_micros": 2_500_000,
                }],
                "total_cost_usd": 2.5,
                "total_cost_micros": 2_500_000,
            })
        );
    }
}
