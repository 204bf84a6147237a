//! The node's spans. Each one of a task continues the trace stored in the task record
//! (its submit's, or its workflow run's), so one trace holds the submit on one node and
//! the lease, attempt, provider call and completion on another. Every such span carries
//! `supervisor.task.id` (and `supervisor.run.id` / `supervisor.step.id` for a workflow
//! step) and `supervisor.node.id`. Provider spans follow OpenTelemetry's GenAI
//! conventions. With tracing off, each function returns a disabled span.

use supervisor_model::Task;
use supervisor_providers::ProviderRequest;
use supervisor_telemetry::context::{self, set_attribute, tracing_on};
use tracing::Span;

/// A span of `task`'s life on this node continuing its stored trace:
/// `supervisor.lease`, `supervisor.attempt`.
pub(crate) fn task(name: &'static str, task: &Task, node: &str) -> Span {
    let span = within(name, task, node);
    context::continue_trace(&span, task.trace.as_deref());
    span
}

/// A span of `task` under the current span (the attempt's): `supervisor.complete`.
pub(crate) fn within(name: &'static str, task: &Task, node: &str) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "supervisor_node",
        "supervisor.task",
        otel.name = name,
        supervisor.task.id = %task.id,
        supervisor.task.type = task.task_type.as_str(),
        supervisor.tenant = %task.tenant,
        supervisor.attempt = task.attempt,
        supervisor.node.id = node,
    );
    if let Some(w) = &task.workflow {
        set_attribute(&span, "supervisor.run.id", w.run.to_string());
        set_attribute(&span, "supervisor.step.id", w.step.clone());
    }
    span
}

/// The GenAI system a provider kind talks to.
fn gen_ai_system(kind: &str) -> &'static str {
    match kind {
        "anthropic" | "claude_cli" => "anthropic",
        "openai" => "openai",
        _ => "supervisor.mock",
    }
}

/// The span of one provider call made by this node for `request`, a child of the
/// current (attempt) span: `chat <model>` (or `invoke_agent <model>` for an agent CLI).
pub(crate) fn provider_call(
    provider: &str,
    kind: &str,
    model: &str,
    request: &ProviderRequest,
) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    let operation = if kind == "claude_cli" {
        "invoke_agent"
    } else {
        "chat"
    };
    let name = if model.is_empty() {
        operation.to_string()
    } else {
        format!("{operation} {model}")
    };
    let span = tracing::info_span!(
        target: "supervisor_node",
        "supervisor.provider",
        otel.name = %name,
        otel.kind = "client",
        gen_ai.operation.name = operation,
        gen_ai.system = gen_ai_system(kind),
        gen_ai.provider.name = gen_ai_system(kind),
        gen_ai.request.model = model,
        supervisor.provider = provider,
        supervisor.task.id = %request.task_id,
        supervisor.attempt = request.attempt,
    );
    if context::record_content() {
        set_attribute(&span, "gen_ai.prompt", request.prompt.clone());
        set_attribute(
            &span,
            "gen_ai.system_instructions",
            request.system_prompt.clone(),
        );
    }
    span
}

/// Records what a provider call used on its span.
pub(crate) fn provider_usage(
    span: &Span,
    response_model: &str,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
) {
    if !tracing_on() {
        return;
    }
    if !response_model.is_empty() {
        set_attribute(span, "gen_ai.response.model", response_model.to_string());
    }
    set_attribute(span, "gen_ai.usage.input_tokens", input_tokens as i64);
    set_attribute(span, "gen_ai.usage.output_tokens", output_tokens as i64);
    set_attribute(span, "supervisor.cost_usd", cost_micros as f64 / 1e6);
}

/// The span of a call this node serves for another node's attempt, continuing the
/// caller's trace.
pub(crate) fn remote_call(provider: &str, request: &ProviderRequest, trace: Option<&str>) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "supervisor_node",
        "supervisor.provider.serve",
        otel.name = "supervisor.provider.serve",
        otel.kind = "server",
        supervisor.provider = provider,
        supervisor.task.id = %request.task_id,
        supervisor.attempt = request.attempt,
    );
    context::continue_trace(&span, trace);
    span
}
