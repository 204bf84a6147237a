//! The scale measurement: the same offered load on one node and on three nodes sharing
//! one PostgreSQL store, no faults. Reports completions per second while the load ran,
//! how long the backlog took to drain, and submit-to-completion latency, and runs the
//! audit's invariants on each run.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use supervisor_model::EventKind;

use crate::audit::{self, Findings, Observed};
use crate::cluster::{Cluster, ClusterSpec};
use crate::load::{Load, LoadSettings};

/// The offered load of a scale run.
#[derive(Debug, Clone)]
pub struct ScaleLoad {
    /// Submits per second over the whole cluster.
    pub rate: f64,
    /// How long the load runs.
    pub duration: Duration,
    /// Longest wait for the backlog to drain.
    pub drain_limit: Duration,
}

/// What one cluster size did.
#[derive(Debug, Clone)]
pub struct ScaleRun {
    /// Node count.
    pub nodes: usize,
    /// Offered submits per second.
    pub rate: f64,
    /// Tasks accepted.
    pub accepted: usize,
    /// Submits never accepted.
    pub given_up: usize,
    /// Completions per second while the load ran (after a 2 s warm-up).
    pub completions_per_s: f64,
    /// Completions per second from the first submit to the last completion.
    pub overall_per_s: f64,
    /// Last completion minus the end of the load, in seconds (the backlog's drain).
    pub drain_s: f64,
    /// Submit → completion latency percentiles in milliseconds (p50, p95, p99).
    pub latency_ms: (f64, f64, f64),
    /// The audit's verdict.
    pub violations: Vec<String>,
}

/// Runs the load on a fresh cluster of `nodes` nodes and measures it.
pub async fn measure(spec: &ClusterSpec, nodes: usize, load: &ScaleLoad) -> Result<ScaleRun> {
    let spec = ClusterSpec {
        nodes,
        namespaces: false,
        work_dir: spec.work_dir.join(format!("scale-{nodes}")),
        ..spec.clone()
    };
    std::fs::create_dir_all(&spec.work_dir)?;
    let cluster = Cluster::start(&spec).await?;
    let engine = audit::open(&cluster.url).await?;
    let running = Load::start(
        LoadSettings {
            rate: load.rate,
            call_timeout: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
            key_prefix: format!("scale-{nodes}-{}", std::process::id()),
            max_attempts: 3,
            stop_retrying_when_stopped: false,
        },
        cluster.targets.clone(),
    );
    tokio::time::sleep(load.duration).await;
    let report = running.finish().await?;
    audit::wait_drained(&engine, load.drain_limit).await?;
    let observed = audit::observe(&engine).await?;
    let accepted: Vec<String> = report.accepted.iter().map(|a| a.id.clone()).collect();
    let findings: Findings = audit::audit(
        &observed,
        &accepted,
        &[],
        (report.started_at, report.stopped_at),
    );
    let (per_s, overall, drain, latency) = rates(&observed, report.started_at, report.stopped_at);
    Ok(ScaleRun {
        nodes,
        rate: load.rate,
        accepted: report.accepted.len(),
        given_up: report.given_up.len(),
        completions_per_s: per_s,
        overall_per_s: overall,
        drain_s: drain,
        latency_ms: latency,
        violations: findings.violations,
    })
}

fn rates(observed: &Observed, start: i64, stop: i64) -> (f64, f64, f64, (f64, f64, f64)) {
    let mut done = Vec::new();
    let mut latencies = Vec::new();
    for log in &observed.tasks {
        let submitted = log.events.iter().find(|e| e.kind == EventKind::Submitted);
        let succeeded = log.events.iter().find(|e| e.kind == EventKind::Succeeded);
        if let Some(s) = succeeded {
            done.push(s.at);
            if let Some(sub) = submitted {
                latencies.push((s.at - sub.at) as f64 / 1000.0);
            }
        }
    }
    let from = start + 2_000_000;
    let in_window = done.iter().filter(|t| **t >= from && **t < stop).count();
    let per_s = in_window as f64 / ((stop - from).max(1) as f64 / 1e6);
    let last = done.iter().copied().max().unwrap_or(stop);
    let overall = done.len() as f64 / ((last - start).max(1) as f64 / 1e6);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    (
        per_s,
        overall,
        (last - stop).max(0) as f64 / 1e6,
        (pct(0.5), pct(0.95), pct(0.99)),
    )
}

/// The markdown report of a scale comparison.
pub fn render(header: &[String], runs: &[ScaleRun]) -> String {
    let mut out = String::from("# Cluster throughput on PostgreSQL: 1 node against 3 nodes\n\n");
    for line in header {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "\n| offered/s | nodes | tasks accepted | given up | completions/s under load | completions/s first submit → last completion | backlog drained in | latency p50 / p95 / p99 | audit |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let audit = if r.violations.is_empty() {
            "pass".to_string()
        } else {
            format!("{} violations: {}", r.violations.len(), r.violations[0])
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} s | {:.0} / {:.0} / {:.0} ms | {audit} |",
            r.rate,
            r.nodes,
            r.accepted,
            r.given_up,
            r.completions_per_s,
            r.overall_per_s,
            r.drain_s,
            r.latency_ms.0,
            r.latency_ms.1,
            r.latency_ms.2
        );
    }
    out
}
