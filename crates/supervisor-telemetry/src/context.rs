//! W3C trace context: how a trace crosses a gRPC call, a task record and a node.
//!
//! A task carries the `traceparent` of the span that submitted it (or of its workflow
//! run), so whichever node leases it later continues that trace: the lease, the attempt,
//! the provider call and the completion all become descendants of the submit. With
//! tracing off (no collector configured) every function here is a cheap no-op and no
//! task stores a context.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once by [`crate::install`]). Code that would build
/// spans only for export asks this first.
pub fn tracing_on() -> bool {
    TRACING.load(Ordering::Relaxed)
}

pub(crate) fn set_tracing_on() {
    TRACING.store(true, Ordering::Relaxed);
}

static RECORD_CONTENT: AtomicBool = AtomicBool::new(false);

/// Whether spans may carry prompts and outputs (`telemetry.record_content`).
pub fn record_content() -> bool {
    tracing_on() && RECORD_CONTENT.load(Ordering::Relaxed)
}

pub(crate) fn set_record_content(on: bool) {
    RECORD_CONTENT.store(on, Ordering::Relaxed);
}

/// The `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), or `None` when
/// tracing is off or the span is not being recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !tracing_on() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span; see [`traceparent_of`].
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the span `traceparent` names (a task's stored context, or
/// one carried by a message from another node). Nothing happens when tracing is off,
/// `traceparent` is absent or it does not parse (a malformed context starts a new trace
/// rather than failing the work).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|_| tracing_on()) else {
        return;
    };
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), tp.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the context in `headers` (`traceparent`, `tracestate`) of an
/// incoming request, if any.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if !tracing_on() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id of a `traceparent`, as collectors and dashboards show it (32 hex digits).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let _version = parts.next()?;
    let id = parts.next()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Records `key = value` on `span` as an OpenTelemetry attribute (for attributes whose
/// names `tracing` fields cannot spell, like `gen_ai.usage.input_tokens`).
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    if tracing_on() {
        span.set_attribute(key, value);
    }
}

/// Marks `span` as failed with `message`.
pub fn set_error(span: &tracing::Span, message: impl Into<String>) {
    if tracing_on() {
        span.set_status(opentelemetry::trace::Status::error(message.into()));
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_well_formed_contexts_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(""), None);
    }
}
