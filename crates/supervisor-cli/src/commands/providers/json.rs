//! Providers and spend as `--output json` prints them. A rate limit of 0 (none) and a
//! success rate or latency of -1 (nothing measured yet) read null.
//!
//! A provider's numbers are of two kinds, as the text table's footer says: the answering
//! node's live numbers, which start again from zero when that node restarts
//! (`in_flight`, `executions_*`, `success_rate`, `latency_*`, `throttled_for_ms`,
//! `circuit`, `healthy`), and durable, cluster-wide counters kept in the store
//! (`completions_*`, `input_tokens`, `output_tokens`, `cost_*`: the completions the store
//! accepted from the provider).

use serde::Serialize;
use supervisor_proto::v1::{GetSpendResponse, ProviderInfo, SpendRow};

use crate::commands::output::{measured, non_empty, non_zero, usd};

/// A provider and its counters.
#[derive(Debug, Serialize)]
pub struct ProviderJson {
    name: String,
    kind: String,
    /// The answering node's last health check.
    healthy: bool,
    health_detail: Option<String>,
    models: Vec<String>,
    /// The answering node's circuit breaker for it.
    circuit: String,
    throttled_for_ms: u64,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u64>,
    /// Live, answering node: executions running now.
    in_flight: u32,
    max_concurrency: u32,
    /// Live, answering node: executions started since the node started.
    executions_started: u64,
    /// Live, answering node: executions that succeeded since the node started.
    executions_succeeded: u64,
    /// Live, answering node: executions that failed since the node started.
    executions_failed: u64,
    /// Live, answering node: share of its recent executions that succeeded.
    success_rate: Option<f64>,
    /// Live, answering node: latency of its recent executions.
    latency_p50_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    /// Durable, cluster-wide: completions the store accepted.
    completions_accepted: u64,
    /// Durable, cluster-wide: completions refused for a stale fencing token.
    completions_refused: u64,
    /// Durable, cluster-wide: tokens of the accepted completions.
    input_tokens: u64,
    output_tokens: u64,
    /// Durable, cluster-wide: cost of the accepted completions (`providers spend`
    /// counts failed attempts too).
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
