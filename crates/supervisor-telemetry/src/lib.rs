//! Telemetry of a Supervisor node, set up in one place: logs, OpenTelemetry traces and
//! metrics, and the Prometheus exposition of those metrics.
//!
//! [`install`] runs once at start. It builds the `tracing` subscriber (log lines, plus a
//! layer turning spans into OpenTelemetry spans when a collector is configured), the
//! meter provider (read by `/metrics` and, with a collector, pushed over OTLP), and sets
//! both as the process's globals. The rest of the code only records: spans with
//! `tracing`, numbers with the instruments of [`metrics()`], and trace context with
//! [`context`].

#![warn(missing_docs)]

pub mod config;
pub mod context;
mod export;
mod metrics;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::{mpsc, oneshot};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use config::{Protocol, Resolved, TelemetryConfig};
pub use metrics::{Metrics, metrics, metrics_on, set_tenant_label_cap, tenant_kv, tenant_label};

/// Telemetry that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting is wrong; `key` names it (a config key or an `OTEL_*` variable).
    #[error("invalid configuration: {key}: {message}")]
    Config {
        /// The key or variable.
        key: String,
        /// What is wrong and what to give instead.
        message: String,
    },
    /// An exporter could not be built (a malformed endpoint the URL check let through).
    #[error("could not set up the OTLP exporter for {endpoint}: {message}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The Prometheus registry refused the exporter.
    #[error("could not set up the Prometheus exposition: {0}")]
    Prometheus(String),
}

/// How log lines are written.
#[derive(Debug, Clone)]
pub struct LogSetup {
    /// A `tracing` filter (`info`, `supervisor_engine=debug,info`); `RUST_LOG` wins.
    pub filter: String,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// The installed telemetry: serves `/metrics` and flushes at exit.
pub struct Telemetry {
    registry: prometheus::Registry,
    meter_provider: SdkMeterProvider,
    tracer_provider: Option<SdkTracerProvider>,
    spans: Option<mpsc::Sender<export::Message>>,
    resolved: Resolved,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

/// Sets up logs, traces and metrics for this process (see the crate docs). Call once,
/// inside the tokio runtime, before the node starts: instruments made earlier stay
/// no-ops. `instance` is the node id (`service.instance.id`); `serve_metrics` says
/// whether anything will read [`Telemetry::prometheus_text`]: with neither that nor an
/// OTLP metrics export, nothing is recorded at all.
pub fn install(
    cfg: &TelemetryConfig,
    log: &LogSetup,
    instance: &str,
    serve_metrics: bool,
) -> Result<Telemetry, TelemetryError> {
    let resolved = cfg.resolve()?;
    metrics::set_tenant_label_cap(resolved.max_tenant_labels);
    let resource = Resource::builder()
        .with_service_name(resolved.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", instance.to_string()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();

    let registry = prometheus::Registry::new();
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prometheus);
    if let Some(endpoint) = resolved.endpoint.as_ref().filter(|_| resolved.metrics) {
        let exporter = metric_exporter(endpoint, resolved.protocol)?;
        let reader =
            opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .with_interval(resolved.metric_export_interval)
            .build();
        meters = meters.with_reader(reader);
    }
    let meter_provider = meters.build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    // Made now, from the provider just set.
    let _ = metrics();
    if serve_metrics || (resolved.endpoint.is_some() && resolved.metrics) {
        metrics::set_metrics_on();
    }

    let env_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = if log.json {
        fmt.json().with_filter(env_filter).boxed()
    } else {
        fmt.with_filter(env_filter).boxed()
    };

    let (tracer_provider, spans, otel_layer) =
        match resolved.endpoint.as_ref().filter(|_| resolved.traces) {
            Some(endpoint) => {
                let exporter = span_exporter(endpoint, resolved.protocol)?;
                let mut exporter = exporter;
                opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
                let (processor, queue) =
                    export::QueueProcessor::start(exporter, resolved.max_queued_spans);
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource)
                    .with_sampler(resolved.sampler.clone())
                    .with_span_processor(processor)
                    .build();
                opentelemetry::global::set_tracer_provider(provider.clone());
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("supervisor"))
                    .with_threads(false)
                    .with_location(false)
                    .with_tracked_inactivity(false)
                    // Only the node's own spans, at info: not every library's.
                    .with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target("supervisor", tracing::Level::INFO),
                    );
                context::set_tracing_on();
                context::set_record_content(resolved.record_content);
                (Some(provider), Some(queue), Some(layer))
            }
            None => (None, None, None),
        };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel_layer)
        .try_init();
    Ok(Telemetry {
        registry,
        meter_provider,
        tracer_provider,
        spans,
        resolved,
    })
}

impl Telemetry {
    /// What [`install`] resolved (endpoint, protocol, sampler...).
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// One line saying where telemetry goes, for the node's start banner.
    pub fn describe(&self) -> String {
        let signals = match (self.resolved.traces, self.resolved.metrics) {
            (true, true) => "traces and metrics",
            (true, false) => "traces",
            (false, true) => "metrics",
            (false, false) => "nothing (OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER are none)",
        };
        match &self.resolved.endpoint {
            Some(endpoint) => format!(
                "{signals} over OTLP ({}) to {endpoint} as service {:?}",
                match self.resolved.protocol {
                    Protocol::Grpc => "grpc",
                    Protocol::HttpProtobuf => "http/protobuf",
                },
                self.resolved.service_name
            ),
            None => "no OTLP collector configured (telemetry.otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT); spans are not built".into(),
        }
    }

    /// The node's metrics in the Prometheus text format (version 0.0.4).
    pub fn prometheus_text(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::warn!("could not encode metrics: {e}");
        }
        out
    }

    /// Sends what is queued (spans, and metrics over OTLP) and waits up to `timeout`.
    /// Called at exit, after the node drained.
    pub async fn flush(&self, timeout: Duration) {
        if let Some(queue) = &self.spans {
            let (tx, rx) = oneshot::channel();
            if queue.send(export::Message::Flush(tx)).await.is_ok() {
                let _ = tokio::time::timeout(timeout, rx).await;
            }
        }
        let meters = self.meter_provider.clone();
        let _ = tokio::time::timeout(
            timeout,
            tokio::task::spawn_blocking(move || meters.force_flush()),
        )
        .await;
        if let Some(tracer) = &self.tracer_provider {
            let _ = tracer.force_flush();
        }
    }
}

fn span_exporter(
    endpoint: &str,
    protocol: Protocol,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let built = match protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http_client())
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build(),
    };
    built.map_err(|e| TelemetryError::Exporter {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    })
}

fn metric_exporter(
    endpoint: &str,
    protocol: Protocol,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let built = match protocol {
        Protocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(http_client())
            .with_endpoint(format!("{endpoint}/v1/metrics"))
            .build(),
    };
    built.map_err(|e| TelemetryError::Exporter {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    })
}

/// An async HTTP client for OTLP/HTTP (the exporter's default one blocks a thread).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}
