//! Summaries, trends and predictions as JSON. A summary's groups carry only the keys of
//! the dimensions grouped by (`provider` is `""` for tasks that reached no provider);
//! `success_rate` is null when no task succeeded or failed.

use serde_json::{Map, Value, json};
use supervisor_model::Dimension;
use supervisor_proto::convert::EnumName;
use supervisor_proto::v1::{
    GetSummaryResponse, GetTrendResponse, Group, Prediction, Stats, TaskType,
};

use crate::commands::output::optional_rfc3339;

pub fn stats(s: &Stats) -> Value {
    json!({
        "finished": s.finished,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "success_rate": s.success_rate,
        "attempts": s.attempts,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "cost_micros": s.cost_micros,
        "cost_usd": s.cost_usd,
        "latency_p50_ms": s.latency_p50_ms,
        "latency_p90_ms": s.latency_p90_ms,
        "latency_p99_ms": s.latency_p99_ms,
    })
}

fn group(g: &Group, by: &[Dimension]) -> Map<String, Value> {
    let mut out = Map::new();
    for d in by {
        let value = match d {
            Dimension::Tenant => json!(g.tenant),
            Dimension::TaskType => json!(TaskType::name_of(g.r#type)),
            Dimension::Specialty => json!(g.specialty),
            Dimension::Provider => json!(g.provider.clone().unwrap_or_default()),
            Dimension::SizeClass => json!(g.size_class),
            Dimension::Repository => json!(g.repository.unwrap_or(false)),
        };
        out.insert(d.as_str().to_string(), value);
    }
    out
}

pub fn summary(r: &GetSummaryResponse, by: &[Dimension]) -> Value {
    let window = r.window.unwrap_or_default();
    json!({
        "from": optional_rfc3339(window.from.as_ref()),
        "to": optional_rfc3339(window.to.as_ref()),
        "group_by": by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "groups": r.rows.iter().map(|row| {
            let mut g = group(&row.group.clone().unwrap_or_default(), by);
            g.insert("stats".into(), stats(&row.stats.unwrap_or_default()));
            Value::Object(g)
        }).collect::<Vec<_>>(),
        "total": stats(&r.total.unwrap_or_default()),
        "truncated": r.truncated,
    })
}

pub fn trend(r: &GetTrendResponse) -> Value {
    let granularity = match r.granularity() {
        supervisor_proto::v1::Granularity::Minute => "minute",
        supervisor_proto::v1::Granularity::Day => "day",
        _ => "hour",
    };
    json!({
        "granularity": granularity,
        "points": r.points.iter().map(|p| json!({
            "start": optional_rfc3339(p.start.as_ref()),
            "stats": stats(&p.stats.unwrap_or_default()),
        })).collect::<Vec<_>>(),
    })
}

pub fn prediction(p: &Prediction) -> Value {
    json!({
        "duration_p50_ms": p.duration_p50_ms,
        "duration_p10_ms": p.duration_p10_ms,
        "duration_p90_ms": p.duration_p90_ms,
        "failure_probability": p.failure_probability,
        "cost_micros": p.cost_micros,
        "cost_usd": p.cost_usd,
        "based_on": p.based_on,
        "basis": p.basis,
    })
}
