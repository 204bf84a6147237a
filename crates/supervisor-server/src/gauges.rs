//! The node's gauges: every few seconds, what the store says about the whole cluster
//! (tasks by status, queue depth by priority, the oldest queued task, budgets' use) and
//! what this node knows about itself (members by state, its epoch, whether its
//! supervision tree is whole, its providers' circuit breakers). Counters and histograms
//! are recorded where things happen; these are levels, so they are sampled.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use supervisor_engine::NodeState;
use supervisor_node::Node;
use supervisor_telemetry::{metrics, tenant_kv};

/// How often the gauges are read.
pub const EVERY: Duration = Duration::from_secs(5);
/// Tenants looked at for the oldest queued task and budgets.
const MAX_TENANTS: usize = 200;

/// Samples the gauges every [`EVERY`] until the task is aborted.
pub fn spawn(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(err) = sample(&node).await {
                tracing::debug!(error = %err, "could not read the cluster's gauges; trying again");
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}

async fn sample(node: &Node) -> Result<(), supervisor_engine::EngineError> {
    let m = metrics();
    let serving = node.serving().is_ok();
    m.node_serving.record(u64::from(serving), &[]);
    let me = node.identity();
    m.node_epoch
        .record(me.epoch, &[KeyValue::new("node", me.id.clone())]);
    for p in node.provider_snapshots() {
        let state = match p.circuit.as_str() {
            "open" => 2,
            "half_open" => 1,
            _ => 0,
        };
        m.breaker_state
            .record(state, &[KeyValue::new("provider", p.name.clone())]);
    }

    let engine = node.engine();
    if let Some(store) = engine.db().embedded() {
        m.store_file_bytes.record(store.file_bytes(), &[]);
    }
    let members = engine.list_nodes().await?;
    for state in [
        NodeState::Active,
        NodeState::Draining,
        NodeState::Fenced,
        NodeState::Left,
    ] {
        let n = members.iter().filter(|n| n.state == state).count() as u64;
        m.cluster_nodes
            .record(n, &[KeyValue::new("state", state.as_str())]);
    }

    let g = engine.cluster_gauges(MAX_TENANTS).await?;
    for status in [
        supervisor_model::TaskStatus::Queued,
        supervisor_model::TaskStatus::Running,
        supervisor_model::TaskStatus::RetryWait,
    ] {
        m.tasks_current.record(
            g.by_status.get(status),
            &[KeyValue::new("status", status.as_str())],
        );
    }
    for (priority, n) in &g.queued_by_priority {
        m.queue_depth
            .record(*n, &[KeyValue::new("priority", priority.as_str())]);
    }
    let age = g.oldest_queued_at_ms.map_or(0.0, |at| {
        ((engine.now_micros() / 1000 - at).max(0)) as f64 / 1000.0
    });
    m.queue_oldest_age.record(age, &[]);
    for b in &g.budgets {
        for l in &b.limits {
            let limit = if l.hard > 0 { l.hard } else { l.soft };
            if limit == 0 {
                continue;
            }
            let (kind, name) = b.budget.scope.parts();
            let scope = if name.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}:{name}")
            };
            m.budget_used_ratio.record(
                (l.spent + l.reserved) as f64 / limit as f64,
                &[
                    tenant_kv(&b.tenant),
                    KeyValue::new("scope", scope),
                    KeyValue::new(
                        "metric",
                        match l.metric {
                            supervisor_model::Metric::CostMicros => "cost",
                            supervisor_model::Metric::Tokens => "tokens",
                        },
                    ),
                    KeyValue::new("period", l.period.as_str()),
                ],
            );
        }
    }
    Ok(())
}
