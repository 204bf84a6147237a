//! Providers as text: their live state, and spend per day.

use std::{fmt::Write as _, time::Duration};

use supervisor_proto::v1::{GetSpendResponse, ProviderInfo};

use crate::commands::output::{Table, cost, elapsed, or_dash};

/// What the numbers of [`providers_table`] count, printed under it: the node's live
/// numbers start again from zero when it restarts; the durable ones do not.
pub const PROVIDERS_FOOTER: &str = "\
IN-FLIGHT now, OK/FAILED since the answering node started, SUCCESS and P50/P95 MS over its \
recent executions: that node's live numbers.
TOKENS IN/OUT and SPEND: durable and cluster-wide, for the completions the store accepted \
(`providers spend` also counts failed attempts).
";

/// The providers: health, circuit breaker, load, executions, success rate, latency,
/// rate limits, tokens and spend, and the health check's detail last; then
/// [`PROVIDERS_FOOTER`], which says which numbers are the answering node's since it
/// started and which are durable.
///
/// Started executions, accepted and refused completions and the models are left to
/// `--output json`.
pub fn providers_table(providers: &[ProviderInfo]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "HEALTH",
        "CIRCUIT",
        "IN-FLIGHT",
        "OK/FAILED",
        "SUCCESS",
        "P50/P95 MS",
        "LIMITS RPM/TPM",
        "TOKENS IN/OUT",
        "SPEND",
        "DETAIL",
    ]);
    for p in providers {
        let mut circuit = or_dash(&p.circuit);
        if p.throttled_for_ms > 0 {
            let left = elapsed(Duration::from_millis(p.throttled_for_ms));
            let _ = write!(circuit, ", throttled {left}");
        }
        table.row(vec![
            p.name.clone(),
            p.kind.clone(),
            if p.healthy { "ok" } else { "unhealthy" }.to_owned(),
            circuit,
            format!("{}/{}", p.in_flight, p.max_concurrency),
            format!("{}/{}", p.executions_succeeded, p.executions_failed),
            percent(p.success_rate),
            pair(&latency_ms(p.latency_p50_ms), &latency_ms(p.latency_p95_ms)),
            pair(
                &limit(u64::from(p.requests_per_minute)),
                &limit(p.tokens_per_minute),
            ),
            format!("{}/{}", p.input_tokens, p.output_tokens),
            cost(p.cost_micros),
            p.health_detail.clone(),
        ]);
    }
    let mut text = table.render();
    text.push_str(PROVIDERS_FOOTER);
    text
}

/// `a/b`, or `-` when both are `-`.
fn pair(a: &str, b: &str) -> String {
    if a == "-" && b == "-" {
        "-".to_owned()
    } else {
        format!("{a}/{b}")
    }
}

/// A share as a percentage (`97.5%`, `100%`); `-` when negative (not measured yet).
pub fn percent(share: f64) -> String {
    if share.is_nan() || share < 0.0 {
        return "-".to_owned();
    }
    let text = format!("{:.1}", share * 100.0);
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// Milliseconds: one decimal under 10 (`0.4`), whole above (`820`); `-` when negative
/// (not measured yet).
pub fn latency_ms(ms: f64) -> String {
    if ms.is_nan() || ms < 0.0 {
        "-".to_owned()
    } else if ms < 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A rate limit; `-` when 0 (none).
fn limit(per_minute: u64) -> String {
    if per_minute == 0 {
        "-".to_owned()
    } else {
        per_minute.to_string()
    }
}

/// Spend per day and provider, then the total.
pub fn spend_table(spend: &GetSpendResponse) -> String {
    let mut table = Table::new(&[
        "DAY",
        "PROVIDER",
        "ATTEMPTS",
        "TOKENS IN",
        "TOKENS OUT",
        "COST",
    ]);
    let (mut attempts, mut input, mut output) = (0u64, 0u64, 0u64);
    for row in &spend.rows {
        attempts = attempts.saturating_add(row.attempts);
        input = input.saturating_add(row.input_tokens);
        output = output.saturating_add(row.output_tokens);
        table.row(vec![
            row.day.clone(),
            row.provider.clone(),
            row.attempts.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            cost(row.cost_micros),
        ]);
    }
    table.row(vec![
        "total".to_owned(),
        String::new(),
        attempts.to_string(),
        input.to_string(),
        output.to_string(),
        cost(spend.total_cost_micros),
    ]);
    table.render()
}

#[cfg(test)]
mod tests {
    use supervisor_proto::v1::SpendRow;

    use super::*;

    #[test]
    fn provider_table_rows() {
        let fresh = ProviderInfo {
            name: "mock".into(),
            kind: "mock".into(),
            healthy: true,
            circuit: "closed".into(),
            in_flight: 1,
            max_concurrency: 4,
            success_rate: -1.0,
            latency_p50_ms: -1.0,
            latency_p95_ms: -1.0,
            cost_micros: 1,
            ..Default::default()
        };
        let busy = ProviderInfo {
            name: "claude".into(),
            kind: "anthropic".into(),
            healthy: false,
            health_detail: "401 from the API".into(),
            circuit: "open".into(),
            throttled_for_ms: 2_500,
            max_concurrency: 8,
            executions_succeeded: 39,
            executions_failed: 1,
            success_rate: 0.975,
            latency_p50_ms: 812.4,
            latency_p95_ms: 2_301.0,
            requests_per_minute: 50,
            input_tokens: 1_000,
            output_tokens: 200,
            cost_micros: 1_234_567,
            ..Default::default()
        };
        let text = providers_table(&[fresh, busy]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "NAME    KIND       HEALTH     CIRCUIT               IN-FLIGHT  OK/FAILED  \
                 SUCCESS  P50/P95 MS  LIMITS RPM/TPM  TOKENS IN/OUT  SPEND      DETAIL",
                "mock    mock       ok         closed                1/4        0/0        \
                 -        -           -               0/0            $0.000001",
                "claude  anthropic  unhealthy  open, throttled 2.5s  0/8        39/1       \
                 97.5%    812/2301    50/-            1000/200       $1.234567  401 from the API",
            ]
        );
    }

    #[test]
    fn percentages_and_latencies() {
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.9751), "97.5%");
        assert_eq!(percent(-1.0), "-");
        assert_eq!(percent(f64::NAN), "-");
        assert_eq!(latency_ms(0.42), "0.4");
        assert_eq!(latency_ms(12.5), "12");
        assert_eq!(latency_ms(-1.0), "-");
        assert_eq!(pair("-", "-"), "-");
        assert_eq!(pair("50", "-"), "50/-");
    }

    #[test]
    fn spend_rows_and_total() {
        let spend = GetSpendResponse {
            rows: vec![
                SpendRow {
                    day: "2026-01-30".into(),
                    provider: "claude".into(),
                    attempts: 3,
                    input_tokens: 1_000,
                    output_tokens: 100,
                    cost_micros: 2_000_000,
                    cost_usd: 2.0,
                },
                SpendRow {
                    day: "2026-01-31".into(),
                    provider: "mock".into(),
                    attempts: 1,
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_micros: 1,
                    cost_usd: 0.000_001,
                },
            ],
            total_cost_micros: 2_000_001,
        };
        let lines: Vec<_> = spend_table(&spend).lines().map(str::to_owned).collect();
        assert_eq!(
            lines,
            [
                "DAY         PROVIDER  ATTEMPTS  TOKENS IN  TOKENS OUT  COST",
                "2026-01-30  claude    3         1000       100         $2.000000",
                "2026-01-31  mock      1         10         5           $0.000001",
                "total                 4         1010       105         $2.000001",
            ]
        );
    }
}
