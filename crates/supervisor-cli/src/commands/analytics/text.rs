//! Summaries, trends and predictions as text.

use std::fmt::Write as _;

use supervisor_model::Dimension;
use supervisor_proto::convert::EnumName;
use supervisor_proto::v1::{
    GetSummaryResponse, GetTrendResponse, Group, Prediction, Stats, TaskType,
};

use crate::commands::output::{Table, cost, field_lines, rfc3339_seconds};

/// A latency in milliseconds, short: `850ms`, `12.5s`, `3m 20s`.
pub fn latency(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1e3),
        _ => humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string(),
    }
}

/// A rate as a percentage, `-` when there is none.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// What a group's value of `d` is.
fn group_value(g: &Group, d: Dimension) -> String {
    match d {
        Dimension::Tenant => g.tenant.clone(),
        Dimension::TaskType => TaskType::name_of(g.r#type).into_owned(),
        Dimension::Specialty => g.specialty.clone(),
        Dimension::Provider => match g.provider.as_deref() {
            Some("") | None => "(none)".into(),
            Some(p) => p.to_string(),
        },
        Dimension::SizeClass => g.size_class.clone(),
        Dimension::Repository => match g.repository {
            Some(true) => "yes".into(),
            _ => "no".into(),
        },
    }
}

fn header(d: Dimension) -> &'static str {
    match d {
        Dimension::Tenant => "TENANT",
        Dimension::TaskType => "TYPE",
        Dimension::Specialty => "SPECIALTY",
        Dimension::Provider => "PROVIDER",
        Dimension::SizeClass => "SIZE",
        Dimension::Repository => "REPOSITORY",
    }
}

const STAT_HEADERS: [&str; 11] = [
    "FINISHED",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
    "SUCCESS",
    "P50",
    "P90",
    "P99",
    "ATTEMPTS",
    "TOKENS IN/OUT",
    "COST",
];

fn stat_cells(s: &Stats) -> Vec<String> {
    // No latency when nothing finished (the message says 0).
    let q = |ms: u64| {
        if s.finished == 0 {
            "-".to_string()
        } else {
            latency(ms)
        }
    };
    vec![
        s.finished.to_string(),
        s.succeeded.to_string(),
        s.failed.to_string(),
        s.cancelled.to_string(),
        percent(s.success_rate),
        q(s.latency_p50_ms),
        q(s.latency_p90_ms),
        q(s.latency_p99_ms),
        s.attempts.to_string(),
        format!("{}/{}", s.input_tokens, s.output_tokens),
        cost(s.cost_micros),
    ]
}

/// The fields of one set of stats, one per line.
fn stat_lines(s: &Stats) -> Vec<(&'static str, String)> {
    let mut fields = vec![(
        "finished",
        format!(
            "{} ({} succeeded, {} failed, {} cancelled)",
            s.finished, s.succeeded, s.failed, s.cancelled
        ),
    )];
    fields.push(("success rate", percent(s.success_rate)));
    if s.finished > 0 {
        fields.push((
            "latency",
            format!(
                "p50 {}, p90 {}, p99 {} (submit to end)",
                latency(s.latency_p50_ms),
                latency(s.latency_p90_ms),
                latency(s.latency_p99_ms)
            ),
        ));
    }
    fields.push(("attempts", s.attempts.to_string()));
    fields.push((
        "tokens",
        format!("{} in, {} out", s.input_tokens, s.output_tokens),
    ));
    fields.push(("cost", cost(s.cost_micros)));
    fields
}

fn window_text(r: &GetSummaryResponse) -> String {
    let w = r.window.unwrap_or_default();
    let at = |t: Option<&prost_types::Timestamp>| t.map(rfc3339_seconds).unwrap_or_default();
    format!("{} to {}", at(w.from.as_ref()), at(w.to.as_ref()))
}

/// A summary: one block of fields without groups, else a table with a total line.
pub fn summary(r: &GetSummaryResponse, by: &[Dimension]) -> String {
    let total = r.total.unwrap_or_default();
    if by.is_empty() {
        let mut fields = vec![("window", window_text(r))];
        fields.extend(stat_lines(&total));
        return field_lines(&fields);
    }
    let mut out = field_lines(&[("window", window_text(r))]);
    if r.rows.is_empty() {
        out.push_str("no task finished in this window\n");
        return out;
    }
    let mut headers: Vec<&str> = by.iter().map(|d| header(*d)).collect();
    headers.extend(STAT_HEADERS);
    let mut table = Table::new(&headers);
    for row in &r.rows {
        let group = row.group.clone().unwrap_or_default();
        let mut cells: Vec<String> = by.iter().map(|d| group_value(&group, *d)).collect();
        cells.extend(stat_cells(&row.stats.unwrap_or_default()));
        table.row(cells);
    }
    let mut cells = vec!["total".to_string()];
    cells.extend(by.iter().skip(1).map(|_| String::new()));
    cells.extend(stat_cells(&total));
    table.row(cells);
    out.push_str(&table.render());
    if r.truncated {
        out.push_str("(only the 1000 largest groups are listed; the total counts them all)\n");
    }
    out
}

/// A trend: one line per period.
pub fn trend(r: &GetTrendResponse) -> String {
    let mut headers = vec!["START"];
    headers.extend(STAT_HEADERS);
    let mut table = Table::new(&headers);
    for p in &r.points {
        let mut cells = vec![p.start.as_ref().map(rfc3339_seconds).unwrap_or_default()];
        cells.extend(stat_cells(&p.stats.unwrap_or_default()));
        table.row(cells);
    }
    table.render()
}

/// A prediction on one line (as `task get` shows it).
pub fn prediction_line(p: &Prediction) -> String {
    let mut line = format!(
        "{} (80% between {} and {}), fails {:.0}% of the time, costs {}",
        latency(p.duration_p50_ms),
        latency(p.duration_p10_ms),
        latency(p.duration_p90_ms),
        p.failure_probability * 100.0,
        cost(p.cost_micros)
    );
    let _ = write!(line, "; from {} tasks like it ({})", p.based_on, p.basis);
    line
}

/// A prediction, one field per line.
pub fn prediction(p: &Prediction) -> String {
    field_lines(&[
        (
            "duration",
            format!(
                "p50 {}, p10 {}, p90 {} (submit to end)",
                latency(p.duration_p50_ms),
                latency(p.duration_p10_ms),
                latency(p.duration_p90_ms)
            ),
        ),
        (
            "failure",
            format!("{:.1}% likely", p.failure_probability * 100.0),
        ),
        ("cost", cost(p.cost_micros)),
        (
            "based on",
            format!("{} finished tasks ({})", p.based_on, p.basis),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use supervisor_proto::v1::SummaryRow;

    use super::*;

    fn stats() -> Stats {
        Stats {
            finished: 6,
            succeeded: 3,
            failed: 2,
            cancelled: 1,
            success_rate: Some(0.6),
            attempts: 5,
            input_tokens: 10,
            output_tokens: 20,
            cost_micros: 1500,
            cost_usd: 0.0015,
            latency_p50_ms: 1250,
            latency_p90_ms: 90_000,
            latency_p99_ms: 400,
        }
    }

    #[test]
    fn a_grouped_summary_is_a_table_with_a_total() {
        let r = GetSummaryResponse {
            rows: vec![SummaryRow {
                group: Some(Group {
                    provider: Some(String::new()),
                    ..Group::default()
                }),
                stats: Some(stats()),
            }],
            total: Some(stats()),
            ..GetSummaryResponse::default()
        };
        let text = summary(&r, &[Dimension::Provider]);
        assert!(text.contains("PROVIDER"), "{text}");
        assert!(text.contains("(none)"), "{text}");
        assert!(text.contains("60.0%"), "{text}");
        assert!(text.contains("1.2s"), "{text}");
        assert!(text.contains("1m 30s"), "{text}");
        assert!(
            text.lines().last().unwrap_or_default().starts_with("total"),
            "{text}"
        );
    }

    #[test]
    fn an_ungrouped_summary_is_fields() {
        let r = GetSummaryResponse {
            total: Some(stats()),
            ..GetSummaryResponse::default()
        };
        let text = summary(&r, &[]);
        assert!(
            text.contains("6 (3 succeeded, 2 failed, 1 cancelled)"),
            "{text}"
        );
        assert!(text.contains("$0.001500"), "{text}");
    }
}
