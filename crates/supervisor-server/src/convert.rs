//! Mapping between domain types and protobuf messages, and from engine errors to gRPC
//! statuses. Input checks that belong to the wire format (enum numbers, id syntax, paging)
//! live here; everything else is validated by the domain.

use std::collections::HashMap;

use supervisor_engine::EngineError;
use supervisor_model::{
    EventKind, NewTask, Priority, RoutingPrefs, RoutingStrategy, Specialty, Task, TaskEvent,
    TaskId, TaskStatus, TaskType,
};
use supervisor_proto::convert::timestamp_from_micros;
use supervisor_proto::v1;
use tonic::Status;
use tonic_types::StatusExt as _;

pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", ")
}

/// Task type from the wire; unspecified is `None`, an unknown number is an error.
pub(crate) fn task_type_in(field: &str, raw: i32) -> Result<Option<TaskType>, Status> {
    let t = v1::TaskType::try_from(raw).map_err(|_| {
        invalid(
            field,
            format!(
                "unknown task type {raw}; expected one of: {}",
                names(TaskType::ALL, TaskType::as_str)
            ),
        )
    })?;
    Ok(match t {
        v1::TaskType::Unspecified => None,
        v1::TaskType::PrReview => Some(TaskType::PrReview),
        v1::TaskType::IssueSummary => Some(TaskType::IssueSummary),
        v1::TaskType::CodeAnalysis => Some(TaskType::CodeAnalysis),
        v1::TaskType::Refactor => Some(TaskType::Refactor),
        v1::TaskType::BugFix => Some(TaskType::BugFix),
        v1::TaskType::Feature => Some(TaskType::Feature),
        v1::TaskType::Documentation => Some(TaskType::Documentation),
        v1::TaskType::Testing => Some(TaskType::Testing),
        v1::TaskType::Deployment => Some(TaskType::Deployment),
        v1::TaskType::SecurityAudit => Some(TaskType::SecurityAudit),
    })
}

pub(crate) fn task_type_out(t: TaskType) -> v1::TaskType {
    match t {
        TaskType::PrReview => v1::TaskType::PrReview,
        TaskType::IssueSummary => v1::TaskType::IssueSummary,
        TaskType::CodeAnalysis => v1::TaskType::CodeAnalysis,
        TaskType::Refactor => v1::TaskType::Refactor,
        TaskType::BugFix => v1::TaskType::BugFix,
        TaskType::Feature => v1::TaskType::Feature,
        TaskType::Documentation => v1::TaskType::Documentation,
        TaskType::Testing => v1::TaskType::Testing,
        TaskType::Deployment => v1::TaskType::Deployment,
        TaskType::SecurityAudit => v1::TaskType::SecurityAudit,
    }
}

/// Status from the wire; unspecified is `None`.
pub(crate) fn status_in(field: &str, raw: i32) -> Result<Option<TaskStatus>, Status> {
    let s = v1::TaskStatus::try_from(raw).map_err(|_| {
        invalid(
            field,
            format!(
                "unknown task status {raw}; expected one of: {}",
                names(TaskStatus::ALL, TaskStatus::as_str)
            ),
        )
    })?;
    Ok(match s {
        v1::TaskStatus::Unspecified => None,
        v1::TaskStatus::Queued => Some(TaskStatus::Queued),
        v1::TaskStatus::Running => Some(TaskStatus::Running),
        v1::TaskStatus::RetryWait => Some(TaskStatus::RetryWait),
        v1::TaskStatus::Succeeded => Some(TaskStatus::Succeeded),
        v1::TaskStatus::Failed => Some(TaskStatus::Failed),
        v1::TaskStatus::Cancelled => Some(TaskStatus::Cancelled),
    })
}

pub(crate) fn status_out(s: TaskStatus) -> v1::TaskStatus {
    match s {
        TaskStatus::Queued => v1::TaskStatus::Queued,
        TaskStatus::Running => v1::TaskStatus::Running,
        TaskStatus::RetryWait => v1::TaskStatus::RetryWait,
        TaskStatus::Succeeded => v1::TaskStatus::Succeeded,
        TaskStatus::Failed => v1::TaskStatus::Failed,
        TaskStatus::Cancelled => v1::TaskStatus::Cancelled,
    }
}

fn priority_in(raw: i32) -> Result<Priority, Status> {
    let p = v1::Priority::try_from(raw).map_err(|_| {
        invalid(
            "priority",
            format!(
                "unknown priority {raw}; expected one of: {}",
                names(Priority::ALL, Priority::as_str)
            ),
        )
    })?;
    Ok(match p {
        v1::Priority::Unspecified | v1::Priority::Normal => Priority::Normal,
        v1::Priority::Low => Priority::Low,
        v1::Priority::High => Priority::High,
        v1::Priority::Urgent => Priority::Urgent,
        v1::Priority::Critical => Priority::Critical,
    })
}

fn priority_out(p: Priority) -> v1::Priority {
    match p {
        Priority::Low => v1::Priority::Low,
        Priority::Normal => v1::Priority::Normal,
        Priority::High => v1::Priority::High,
        Priority::Urgent => v1::Priority::Urgent,
        Priority::Critical => v1::Priority::Critical,
    }
}

fn event_kind_out(k: EventKind) -> v1::TaskEventType {
    match k {
        EventKind::Submitted => v1::TaskEventType::Submitted,
        EventKind::Started => v1::TaskEventType::Started,
        EventKind::Output => v1::TaskEventType::Output,
        EventKind::Activity => v1::TaskEventType::Activity,
        EventKind::RetryScheduled => v1::TaskEventType::RetryScheduled,
        EventKind::Requeued => v1::TaskEventType::Requeued,
        EventKind::Succeeded => v1::TaskEventType::Succeeded,
        EventKind::Failed => v1::TaskEventType::Failed,
        EventKind::Cancelled => v1::TaskEventType::Cancelled,
    }
}

/// Parses an id field; `what` names the kind of id in the error ("task id").
pub(crate) fn id_in(field: &str, raw: &str, what: &str) -> Result<TaskId, Status> {
    if raw.trim().is_empty() {
        return Err(invalid(field, format!("a {what} is required")));
    }
    raw.parse::<TaskId>().map_err(|_| {
        invalid(
            field,
            format!(
                "{} is not a {what}; expected a UUID such as 0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f",
                supervisor_model::quote(raw)
            ),
        )
    })
}

/// Parses a task id field.
pub(crate) fn task_id_in(field: &str, raw: &str) -> Result<TaskId, Status> {
    id_in(field, raw, "task id")
}

/// Checks a list request's page size (0 means the default): above the limit is refused,
/// never clamped.
pub(crate) fn page_size_in(page_size: u32) -> Result<(), Status> {
    if page_size > crate::MAX_PAGE_SIZE {
        return Err(invalid(
            "page_size",
            format!(
                "{page_size} is too large; the limit is {}",
                crate::MAX_PAGE_SIZE
            ),
        ));
    }
    Ok(())
}

/// Checks a list request's paging: the page size within the limit (0 means the default)
/// and the token, when given, one a previous `rpc` response returned.
pub(crate) fn paging_in(
    page_size: u32,
    page_token: &str,
    rpc: &str,
) -> Result<(usize, Option<TaskId>), Status> {
    page_size_in(page_size)?;
    let token = if page_token.is_empty() {
        None
    } else {
        Some(task_id_in("page_token", page_token).map_err(|_| {
            invalid(
                "page_token",
                format!("not a token from a previous {rpc} response"),
            )
        })?)
    };
    let size = if page_size == 0 {
        crate::DEFAULT_PAGE_SIZE
    } else {
        page_size
    };
    Ok((size as usize, token))
}

/// Checks a task's provider choices against the providers the cluster knows (this
/// node's and those seen on others): every name must be one of them, and the exclusions
/// must leave at least one, or the task could only fail when it runs. The error names
/// the field (`preferred_providers`, `excluded_providers`) and the known providers.
pub(crate) fn check_providers(
    preferred: &[String],
    excluded: &[String],
    known: &[String],
) -> Result<(), (&'static str, String)> {
    let known_list = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    for (field, names) in [
        ("preferred_providers", preferred),
        ("excluded_providers", excluded),
    ] {
        if let Some(name) = names.iter().find(|n| !known.contains(n)) {
            return Err((
                field,
                format!(
                    "unknown provider {}; the providers of the cluster are: {known_list}",
                    supervisor_model::quote(name)
                ),
            ));
        }
    }
    if !excluded.is_empty() && !known.is_empty() && known.iter().all(|k| excluded.contains(k)) {
        return Err((
            "excluded_providers",
            format!(
                "excludes every provider of the cluster ({known_list}), so the task could never run; leave at least one"
            ),
        ));
    }
    Ok(())
}

/// A submit request as the domain's `NewTask`; `providers` are the configured provider
/// names, against which preferred and excluded names are checked.
pub(crate) fn new_task_in(
    r: v1::SubmitTaskRequest,
    providers: &[String],
) -> Result<NewTask, Status> {
    let task_type = task_type_in("type", r.r#type)?;
    let priority = priority_in(r.priority)?;
    let specialty = match r.specialty.trim() {
        "" => None,
        s => Some(
            s.parse::<Specialty>()
                .map_err(|e| invalid("specialty", e))?,
        ),
    };
    let strategy = match r.routing_strategy.trim() {
        "" => None,
        s => Some(
            s.parse::<RoutingStrategy>()
                .map_err(|e| invalid("routing_strategy", e))?,
        ),
    };
    if !r.max_cost_usd.is_finite() || r.max_cost_usd < 0.0 {
        return Err(invalid(
            "max_cost_usd",
            format!(
                "{} is not a cost; give dollars, 0 for no limit",
                r.max_cost_usd
            ),
        ));
    }
    let max_dollars = supervisor_model::MAX_COST_MICROS / 1_000_000;
    if r.max_cost_usd > max_dollars as f64 {
        // Refused, never clamped: a ceiling the caller did not ask for is no ceiling.
        return Err(invalid(
            "max_cost_usd",
            format!(
                "${:e} per attempt is over the limit of ${max_dollars}; give less, or 0 for no limit",
                r.max_cost_usd
            ),
        ));
    }
    if !r.preferred_providers.is_empty() || !r.excluded_providers.is_empty() {
        check_providers(&r.preferred_providers, &r.excluded_providers, providers)
            .map_err(|(field, message)| invalid(field, message))?;
    }
    let routing = RoutingPrefs {
        specialty,
        strategy,
        preferred_providers: r.preferred_providers,
        excluded_providers: r.excluded_providers,
        max_cost_micros: (r.max_cost_usd > 0.0).then(|| (r.max_cost_usd * 1e6).round() as u64),
    };
    let new = NewTask {
        routing,
        task_type,
        prompt: r.prompt,
        priority,
        labels: r.labels,
        idempotency_key: Some(r.idempotency_key).filter(|k| !k.is_empty()),
        context: r.context.into_iter().collect(),
        max_attempts: Some(r.max_attempts).filter(|n| *n > 0),
        timeout_ms: Some(r.timeout_ms).filter(|n| *n > 0),
        submitted_by: None,
        trace: None,
    };
    new.validate().map_err(|e| invalid(e.field, &e.message))?;
    Ok(new)
}

/// A task as its protobuf message, fitted under the response limit (`fit::task`).
pub(crate) fn task_out(t: Task) -> v1::Task {
    let mut task = task_message(t);
    crate::fit::task(&mut task, crate::fit::ITEM_BUDGET);
    task
}

fn task_message(t: Task) -> v1::Task {
    let ts = |m: Option<i64>| m.map(timestamp_from_micros);
    let output_bytes = t.output_bytes;
    v1::Task {
        id: t.id.to_string(),
        r#type: task_type_out(t.task_type) as i32,
        status: status_out(t.status) as i32,
        prompt: t.prompt,
        priority: priority_out(t.priority) as i32,
        labels: t.labels,
        context: t.context.into_iter().collect::<HashMap<_, _>>(),
        idempotency_key: t.idempotency_key.unwrap_or_default(),
        max_attempts: t.max_attempts,
        timeout_ms: t.timeout_ms,
        attempt: t.attempt,
        abandoned_attempts: t.abandoned_attempts,
        waiting_for: t.waiting_for.unwrap_or_default(),
        submitted_by: t.submitted_by.clone().unwrap_or_default(),
        trace_id: t
            .trace
            .as_deref()
            .and_then(supervisor_telemetry::context::trace_id)
            .unwrap_or_default()
            .to_string(),
        specialty: t
            .routing
            .specialty
            .map(|s| s.to_string())
            .unwrap_or_default(),
        routing_strategy: t
            .routing
            .strategy
            .map(|s| s.to_string())
            .unwrap_or_default(),
        preferred_providers: t.routing.preferred_providers,
        excluded_providers: t.routing.excluded_providers,
        max_cost_usd: t.routing.max_cost_micros.map_or(0.0, |m| m as f64 / 1e6),
        attempts: t
            .attempts
            .into_iter()
            .map(|a| v1::Attempt {
                attempt: a.attempt,
                provider: a.provider,
                model: a.model,
                outcome: a.outcome,
                usage: Some(usage_out(&a.usage)),
                cost_micros: a.cost_micros,
                finished_at: Some(timestamp_from_micros(a.finished_at)),
            })
            .collect(),
        cost_usd: t.cost_micros as f64 / 1e6,
        cost_micros: t.cost_micros,
        result: t.result.map(|r| v1::TaskResult {
            output: r.output,
            usage: Some(usage_out(&r.usage)),
            cost_usd: r.cost_micros as f64 / 1_000_000.0,
            cost_micros: r.cost_micros,
            provider: r.provider,
            model: r.model,
            output_bytes,
            artifacts: r
                .artifacts
                .into_iter()
                .map(|a| v1::Artifact {
                    name: a.name,
                    media_type: a.media_type,
                    size_bytes: a.size_bytes,
                    content: a.content,
                })
                .collect(),
        }),
        error: t.error.unwrap_or_default(),
        node_id: t.lease.map(|l| l.node_id).unwrap_or_default(),
        retry_of: t.retry_of.map(|id| id.to_string()).unwrap_or_default(),
        tenant: t.tenant,
        created_at: Some(timestamp_from_micros(t.created_at)),
        updated_at: Some(timestamp_from_micros(t.updated_at)),
        started_at: ts(t.started_at),
        finished_at: ts(t.finished_at),
        next_attempt_at: ts(t.next_attempt_at),
        truncated_fields: Vec::new(),
        prediction: None,
    }
}

fn usage_out(u: &supervisor_model::Usage) -> v1::Usage {
    v1::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
    }
}

/// An event as its protobuf message.
pub(crate) fn event_out(task_id: TaskId, e: TaskEvent) -> v1::TaskEvent {
    v1::TaskEvent {
        task_id: task_id.to_string(),
        seq: e.seq,
        r#type: event_kind_out(e.kind) as i32,
        status: status_out(e.status) as i32,
        attempt: e.attempt,
        message: e.message,
        output: e.output,
        at: Some(timestamp_from_micros(e.at)),
        node: e.node,
        fence: e.fence,
    }
}

/// The gRPC status for an engine error.
pub(crate) fn status_from(err: EngineError) -> Status {
    match err {
        EngineError::InvalidArgument(e) => invalid(e.field, &e.message),
        EngineError::NotFound { id } => Status::not_found(format!("no task with id {id}")),
        EngineError::RunNotFound { id } => {
            Status::not_found(format!("no workflow run with id {id}"))
        }
        EngineError::FailedPrecondition(m) => Status::failed_precondition(m),
        e @ (EngineError::NodeNotFound { .. }
        | EngineError::KeyNotFound { .. }
        | EngineError::ScheduleNotFound { .. }
        | EngineError::ThreadNotFound { .. }) => Status::not_found(e.to_string()),
        EngineError::AlreadyExists(m) => Status::already_exists(m),
        e @ EngineError::Fenced { .. } => Status::unavailable(e.to_string()),
        EngineError::Store(e) if e.is_retryable() => Status::unavailable(format!(
            "the store is busy or unreachable ({e}); retry the call"
        )),
        EngineError::Store(e) => Status::internal(format!("store error: {e}")),
        EngineError::Corrupt(m) => Status::data_loss(m),
        EngineError::Internal(m) => Status::internal(m),
        EngineError::ShuttingDown => {
            Status::unavailable("the node is shutting down; retry on another node or later")
        }
        e @ EngineError::Overloaded { retry_after, .. } => Status::with_error_details(
            tonic::Code::ResourceExhausted,
            e.to_string(),
            tonic_types::ErrorDetails::with_retry_info(Some(retry_after)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn overload_is_resource_exhausted_with_a_retry_delay() {
        let status = status_from(EngineError::Overloaded {
            reason: "12 tasks are queued".into(),
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("12 tasks are queued"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("retry in 1.5s"),
            "{}",
            status.message()
        );
        let retry = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay);
        assert_eq!(retry, Some(Duration::from_millis(1500)));
    }
}
