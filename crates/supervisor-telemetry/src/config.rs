//! The `[telemetry]` section and the standard `OTEL_*` variables over it.
//!
//! The OpenTelemetry variables are the ones every collector's docs tell people to set, so
//! they work here too and win over the file: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`), `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_METRIC_EXPORT_INTERVAL`
//! (milliseconds), and `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp` or
//! `none`, to send one signal only).

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;
use serde::{Deserialize, Serialize};

use crate::TelemetryError;

/// How spans and metrics leave the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP collector, e.g. `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318`
    /// (HTTP). Empty (the default): nothing is exported, no span is built, and metrics
    /// are only served on `/metrics`. `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it.
    pub otlp_endpoint: String,
    /// `grpc` (default) or `http/protobuf`. `OTEL_EXPORTER_OTLP_PROTOCOL` overrides it.
    pub otlp_protocol: String,
    /// The `service.name` of every span and metric. Default `supervisor`.
    /// `OTEL_SERVICE_NAME` overrides it.
    pub service_name: String,
    /// Which traces are kept: `parentbased_always_on` (default), `parentbased_always_off`,
    /// `parentbased_traceidratio`, `always_on`, `always_off` or `traceidratio`.
    /// `OTEL_TRACES_SAMPLER` overrides it.
    pub sampler: String,
    /// The ratio of the `*traceidratio` samplers, 0.0–1.0. Default 1.0.
    /// `OTEL_TRACES_SAMPLER_ARG` overrides it.
    pub sampler_ratio: f64,
    /// How often metrics are pushed over OTLP (when an endpoint is set). Default 15s.
    #[serde(with = "humantime_serde")]
    pub metric_export_interval: Duration,
    /// Spans waiting for export; when the collector is slow or gone, spans beyond it are
    /// dropped (and counted in `supervisor_telemetry_spans_dropped_total`), never
    /// waited for. Default 8192.
    pub max_queued_spans: usize,
    /// Put prompts and outputs on provider spans (`gen_ai.prompt`, `gen_ai.completion`).
    /// Default false: they may hold code and secrets.
    pub record_content: bool,
    /// Send traces to the collector (default true). `OTEL_TRACES_EXPORTER=none` turns it
    /// off.
    pub export_traces: bool,
    /// Push metrics to the collector (default true; `/metrics` serves them either way).
    /// `OTEL_METRICS_EXPORTER=none` turns it off.
    pub export_metrics: bool,
    /// Distinct tenant names a metric label takes; later tenants are counted under
    /// `_other`, so a cluster with many tenants cannot explode the series count.
    /// Default 50.
    pub max_tenant_labels: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            otlp_protocol: "grpc".into(),
            service_name: "supervisor".into(),
            sampler: "parentbased_always_on".into(),
            sampler_ratio: 1.0,
            metric_export_interval: Duration::from_secs(15),
            max_queued_spans: 8192,
            record_content: false,
            export_traces: true,
            export_metrics: true,
            max_tenant_labels: 50,
        }
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    HttpProtobuf,
}

/// [`TelemetryConfig`] with the `OTEL_*` variables applied and every value checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The collector, if any.
    pub endpoint: Option<String>,
    /// Whether spans go to it.
    pub traces: bool,
    /// Whether metrics go to it.
    pub metrics: bool,
    /// How to reach it.
    pub protocol: Protocol,
    /// `service.name`.
    pub service_name: String,
    /// The sampler.
    pub sampler: Sampler,
    /// Metric push interval.
    pub metric_export_interval: Duration,
    /// Span queue bound.
    pub max_queued_spans: usize,
    /// Whether provider spans carry prompts and outputs.
    pub record_content: bool,
    /// Tenant label cap.
    pub max_tenant_labels: usize,
}

impl TelemetryConfig {
    /// Checks the file's values alone (as `supervisor config check` does).
    pub fn validate(&self) -> Result<(), String> {
        self.resolve_with(|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Applies the process's `OTEL_*` variables and checks the result.
    pub fn resolve(&self) -> Result<Resolved, TelemetryError> {
        self.resolve_with(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`resolve`](Self::resolve) with the environment given as a lookup (for tests).
    pub fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved, TelemetryError> {
        let bad = |key: &str, message: String| TelemetryError::Config {
            key: key.to_string(),
            message,
        };
        let (endpoint_key, endpoint) = match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(v) => ("OTEL_EXPORTER_OTLP_ENDPOINT", v),
            None => ("telemetry.otlp_endpoint", self.otlp_endpoint.clone()),
        };
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        if !endpoint.is_empty()
            && !endpoint.starts_with("http://")
            && !endpoint.starts_with("https://")
        {
            return Err(bad(
                endpoint_key,
                format!("{endpoint:?} is not a URL; give one like http://127.0.0.1:4317"),
            ));
        }
        let (protocol_key, protocol) = match env("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL", v),
            None => ("telemetry.otlp_protocol", self.otlp_protocol.clone()),
        };
        let protocol = match protocol.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            other => {
                return Err(bad(
                    protocol_key,
                    format!("{other:?} is not supported; use grpc or http/protobuf"),
                ));
            }
        };
        let service_name = env("OTEL_SERVICE_NAME").unwrap_or_else(|| self.service_name.clone());
        if service_name.trim().is_empty() {
            return Err(bad("telemetry.service_name", "must not be empty".into()));
        }
        let (sampler_key, sampler) = match env("OTEL_TRACES_SAMPLER") {
            Some(v) => ("OTEL_TRACES_SAMPLER", v),
            None => ("telemetry.sampler", self.sampler.clone()),
        };
        let ratio = match env("OTEL_TRACES_SAMPLER_ARG") {
            Some(v) => v.trim().parse::<f64>().map_err(|_| {
                bad(
                    "OTEL_TRACES_SAMPLER_ARG",
                    format!("{v:?} is not a number between 0.0 and 1.0"),
                )
            })?,
            None => self.sampler_ratio,
        };
        if !(0.0..=1.0).contains(&ratio) {
            return Err(bad(
                "telemetry.sampler_ratio",
                format!("{ratio} is not between 0.0 and 1.0"),
            ));
        }
        let sampler = parse_sampler(sampler.trim(), ratio).ok_or_else(|| {
            bad(
                sampler_key,
                format!(
                    "{sampler:?} is not a sampler; use parentbased_always_on, parentbased_always_off, parentbased_traceidratio, always_on, always_off or traceidratio"
                ),
            )
        })?;
        let metric_export_interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => Duration::from_millis(v.trim().parse::<u64>().map_err(|_| {
                bad(
                    "OTEL_METRIC_EXPORT_INTERVAL",
                    format!("{v:?} is not a number of milliseconds"),
                )
            })?),
            None => self.metric_export_interval,
        };
        if metric_export_interval < Duration::from_millis(100) {
            return Err(bad(
                "telemetry.metric_export_interval",
                "must be at least 100ms".into(),
            ));
        }
        let exporter = |var: &str, file: bool| -> Result<bool, TelemetryError> {
            match env(var).as_deref().map(str::trim) {
                None => Ok(file),
                Some("otlp") => Ok(true),
                Some("none") => Ok(false),
                Some(other) => Err(bad(
                    var,
                    format!("{other:?} is not supported; use otlp or none"),
                )),
            }
        };
        let traces = exporter("OTEL_TRACES_EXPORTER", self.export_traces)?;
        let metrics = exporter("OTEL_METRICS_EXPORTER", self.export_metrics)?;
        if self.max_queued_spans == 0 {
            return Err(bad(
                "telemetry.max_queued_spans",
                "must be at least 1".into(),
            ));
        }
        Ok(Resolved {
            endpoint: (!endpoint.is_empty()).then_some(endpoint),
            traces,
            metrics,
            protocol,
            service_name,
            sampler,
            metric_export_interval,
            max_queued_spans: self.max_queued_spans,
            record_content: self.record_content,
            max_tenant_labels: self.max_tenant_labels,
        })
    }
}

fn parse_sampler(name: &str, ratio: f64) -> Option<Sampler> {
    let ratio_sampler = || Sampler::TraceIdRatioBased(ratio);
    Some(match name {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => ratio_sampler(),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(ratio_sampler())),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_default_exports_nothing() {
        let r = TelemetryConfig::default().resolve_with(|_| None).unwrap();
        assert_eq!(r.endpoint, None);
        assert_eq!(r.protocol, Protocol::Grpc);
        assert_eq!(r.service_name, "supervisor");
    }

    #[test]
    fn otel_variables_win_over_the_file() {
        let cfg = TelemetryConfig {
            otlp_endpoint: "http://file:4317".into(),
            ..TelemetryConfig::default()
        };
        let r = cfg
            .resolve_with(env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "node-a"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]))
            .unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://env:4318"));
        assert_eq!(r.protocol, Protocol::HttpProtobuf);
        assert_eq!(r.service_name, "node-a");
        assert!(matches!(r.sampler, Sampler::TraceIdRatioBased(x) if x == 0.25));
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = TelemetryConfig::default()
            .resolve_with(env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
        let cfg = TelemetryConfig {
            sampler: "sometimes".into(),
            ..TelemetryConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("telemetry.sampler"));
        let cfg = TelemetryConfig {
            otlp_endpoint: "collector:4317".into(),
            ..TelemetryConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("not a URL"));
    }
}
