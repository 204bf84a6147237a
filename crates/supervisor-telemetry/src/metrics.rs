//! The metric catalog: every instrument a node records, named and described in one
//! place (docs/observability.md lists the same names; dashboards and alerts under
//! `deploy/` use only these).
//!
//! Names follow OpenTelemetry's conventions (dotted, unit in the unit field); the
//! Prometheus exposition turns `supervisor.task.duration` with unit `s` into
//! `supervisor_task_duration_seconds` and adds `_total` to counters. Instruments are made
//! from the global meter provider the first time [`metrics`] is called: [`crate::install`]
//! sets that provider first, and anywhere telemetry was never installed (unit tests, a
//! node embedded in a test) they are no-ops that cost a branch.

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use opentelemetry::{KeyValue, Value};

/// Bucket bounds (seconds) for task latencies: 5 ms to an hour.
const TASK_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
/// Bucket bounds (seconds) for provider calls: 1 ms to 30 minutes.
const CALL_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];
/// Bucket bounds (seconds) for store commits: 100 µs to 5 s.
const COMMIT_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Bucket bounds for group-commit batch sizes.
const BATCH_SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every instrument of a node. See the module docs for names and units.
#[derive(Debug)]
pub struct Metrics {
    /// Tasks accepted by `SubmitTask` and by workflows [task_type, tenant].
    pub tasks_submitted: Counter<u64>,
    /// Tasks that reached a terminal status [task_type, status, tenant, provider].
    pub tasks_finished: Counter<u64>,
    /// Submit → first attempt start, seconds [task_type, tenant].
    pub task_queue_wait: Histogram<f64>,
    /// Submit → terminal status, seconds [task_type, status].
    pub task_duration: Histogram<f64>,
    /// Tasks per non-terminal status, cluster-wide, read from the store [status].
    pub tasks_current: Gauge<u64>,
    /// Queued tasks per priority, cluster-wide [priority].
    pub queue_depth: Gauge<u64>,
    /// Age of the oldest queued task, seconds, cluster-wide.
    pub queue_oldest_age: Gauge<f64>,
    /// Attempts running on this node [provider].
    pub attempts_running: UpDownCounter<i64>,
    /// Leases this node took.
    pub leases_granted: Counter<u64>,
    /// Lease renewals this node attempted [outcome: renewed|lost].
    pub lease_renewals: Counter<u64>,
    /// Leases this node took back from a holder [reason: expired|fenced|restarted].
    pub lease_reclaims: Counter<u64>,
    /// Writes refused because their holder was fenced or its token stale [operation].
    pub fencing_refusals: Counter<u64>,
    /// Provider calls [provider, model, outcome: ok|error].
    pub provider_requests: Counter<u64>,
    /// Failed provider calls [provider, kind].
    pub provider_errors: Counter<u64>,
    /// Provider call time, seconds [provider].
    pub provider_duration: Histogram<f64>,
    /// Circuit breaker per provider: 0 closed, 1 half-open, 2 open [provider].
    pub breaker_state: Gauge<i64>,
    /// Tokens [provider, model, type: input|output].
    pub provider_tokens: Counter<u64>,
    /// US dollars spent [provider, model].
    pub provider_cost: Counter<f64>,
    /// Store commit time, seconds [backend].
    pub store_commit_duration: Histogram<f64>,
    /// Transactions per group commit [backend].
    pub store_batch_size: Histogram<u64>,
    /// Transactions refused for a conflict [backend].
    pub store_conflicts: Counter<u64>,
    /// Members as this node sees them [state].
    pub cluster_nodes: Gauge<u64>,
    /// This node's epoch [node].
    pub node_epoch: Gauge<u64>,
    /// 1 while this node's supervision tree is whole.
    pub node_serving: Gauge<u64>,
    /// Spend over limit per budget, cluster-wide [tenant, scope, metric, period].
    pub budget_used_ratio: Gauge<f64>,
    /// Spans not exported: queue full or collector unreachable.
    pub spans_dropped: Counter<u64>,
    /// Size of this node's embedded store file, bytes (its growth is `deriv()` of it).
    pub store_file_bytes: Gauge<u64>,
    /// Finished records the retention sweeper deleted [kind: task, workflow_run].
    pub retention_deleted: Counter<u64>,
}

impl Metrics {
    fn new(meter: &Meter) -> Metrics {
        Metrics {
            tasks_submitted: meter
                .u64_counter("supervisor.tasks.submitted")
                .with_description("Tasks accepted")
                .build(),
            tasks_finished: meter
                .u64_counter("supervisor.tasks.finished")
                .with_description("Tasks that reached a terminal status")
                .build(),
            task_queue_wait: meter
                .f64_histogram("supervisor.task.queue_wait")
                .with_unit("s")
                .with_description("Time from submit to the first attempt's start")
                .with_boundaries(TASK_SECONDS.to_vec())
                .build(),
            task_duration: meter
                .f64_histogram("supervisor.task.duration")
                .with_unit("s")
                .with_description("Time from submit to a terminal status")
                .with_boundaries(TASK_SECONDS.to_vec())
                .build(),
            tasks_current: meter
                .u64_gauge("supervisor.tasks.current")
                .with_description("Tasks per non-terminal status, cluster-wide")
                .build(),
            queue_depth: meter
                .u64_gauge("supervisor.queue.depth")
                .with_description("Queued tasks per priority, cluster-wide")
                .build(),
            queue_oldest_age: meter
                .f64_gauge("supervisor.queue.oldest_age")
                .with_unit("s")
                .with_description("Age of the oldest queued task, cluster-wide")
                .build(),
            attempts_running: meter
                .i64_up_down_counter("supervisor.attempts.running")
                .with_description("Attempts running on this node")
                .build(),
            leases_granted: meter
                .u64_counter("supervisor.leases.granted")
                .with_description("Leases this node took")
                .build(),
            lease_renewals: meter
                .u64_counter("supervisor.lease.renewals")
                .with_description("Lease renewals, by outcome")
                .build(),
            lease_reclaims: meter
                .u64_counter("supervisor.lease.reclaims")
                .with_description("Leases taken back from their holder, by reason")
                .build(),
            fencing_refusals: meter
                .u64_counter("supervisor.lease.fencing_refusals")
                .with_description("Writes refused because their holder was fenced or stale")
                .build(),
            provider_requests: meter
                .u64_counter("supervisor.provider.requests")
                .with_description("Provider calls, by outcome")
                .build(),
            provider_errors: meter
                .u64_counter("supervisor.provider.errors")
                .with_description("Failed provider calls, by kind")
                .build(),
            provider_duration: meter
                .f64_histogram("supervisor.provider.request.duration")
                .with_unit("s")
                .with_description("Provider call time")
                .with_boundaries(CALL_SECONDS.to_vec())
                .build(),
            breaker_state: meter
                .i64_gauge("supervisor.provider.breaker_state")
                .with_description("Circuit breaker: 0 closed, 1 half-open, 2 open")
                .build(),
            provider_tokens: meter
                .u64_counter("supervisor.provider.tokens")
                .with_description("Tokens, by type (input or output)")
                .build(),
            provider_cost: meter
                .f64_counter("supervisor.provider.cost_usd")
                .with_description("US dollars spent")
                .build(),
            store_commit_duration: meter
                .f64_histogram("supervisor.store.commit.duration")
                .with_unit("s")
                .with_description("Store commit time (one group commit)")
                .with_boundaries(COMMIT_SECONDS.to_vec())
                .build(),
            store_batch_size: meter
                .u64_histogram("supervisor.store.commit.batch_size")
                .with_description("Transactions per group commit")
                .with_boundaries(BATCH_SIZES.to_vec())
                .build(),
            store_conflicts: meter
                .u64_counter("supervisor.store.conflicts")
                .with_description("Transactions refused for a conflict")
                .build(),
            cluster_nodes: meter
                .u64_gauge("supervisor.cluster.nodes")
                .with_description("Cluster members as this node sees them, by state")
                .build(),
            node_epoch: meter
                .u64_gauge("supervisor.node.epoch")
                .with_description("This node's epoch")
                .build(),
            node_serving: meter
                .u64_gauge("supervisor.node.serving")
                .with_description("1 while this node's supervision tree is whole")
                .build(),
            budget_used_ratio: meter
                .f64_gauge("supervisor.budget.used_ratio")
                .with_description("Spend over the limit, per budget, cluster-wide")
                .build(),
            spans_dropped: meter
                .u64_counter("supervisor.telemetry.spans_dropped")
                .with_description("Spans not exported (queue full or collector unreachable)")
                .build(),
            store_file_bytes: meter
                .u64_gauge("supervisor.store.file_bytes")
                .with_unit("By")
                .with_description("Size of this node's embedded store file")
                .build(),
            retention_deleted: meter
                .u64_counter("supervisor.retention.deleted")
                .with_description("Finished records deleted past their retention period, by kind")
                .build(),
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static METRICS_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether metrics are recorded (set by [`crate::install`]). Hot paths ask this before
/// building attributes, so a node or test without telemetry pays one load.
pub fn metrics_on() -> bool {
    METRICS_ON.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn set_metrics_on() {
    METRICS_ON.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The node's instruments (made on first use from the global meter provider).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter("supervisor")))
}

/// The tenants a label may name, and how many.
struct TenantCap {
    max: usize,
    admitted: HashSet<String>,
}

static TENANTS: RwLock<Option<TenantCap>> = RwLock::new(None);

/// The label value a metric uses for `tenant`: the tenant itself for the first
/// `max_tenant_labels` tenants seen, `_other` after that.
pub fn tenant_label(tenant: &str) -> Value {
    if let Ok(guard) = TENANTS.read() {
        match guard.as_ref() {
            Some(cap) if cap.admitted.contains(tenant) => return Value::from(tenant.to_string()),
            Some(cap) if cap.admitted.len() >= cap.max => return Value::from("_other"),
            _ => {}
        }
    }
    let Ok(mut guard) = TENANTS.write() else {
        return Value::from("_other");
    };
    let cap = guard.get_or_insert_with(|| TenantCap {
        max: crate::config::TelemetryConfig::default().max_tenant_labels,
        admitted: HashSet::new(),
    });
    if cap.admitted.contains(tenant) || cap.admitted.len() < cap.max {
        cap.admitted.insert(tenant.to_string());
        Value::from(tenant.to_string())
    } else {
        Value::from("_other")
    }
}

/// Sets how many distinct tenants metric labels name (set by [`crate::install`]).
pub fn set_tenant_label_cap(max: usize) {
    if let Ok(mut guard) = TENANTS.write() {
        let admitted = guard.take().map(|c| c.admitted).unwrap_or_default();
        *guard = Some(TenantCap { max, admitted });
    }
}

/// A `tenant` attribute, capped as [`tenant_label`] says.
pub fn tenant_kv(tenant: &str) -> KeyValue {
    KeyValue::new("tenant", tenant_label(tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_stop_at_the_cap() {
        set_tenant_label_cap(2);
        assert_eq!(tenant_label("a").as_str(), "a");
        assert_eq!(tenant_label("b").as_str(), "b");
        assert_eq!(tenant_label("c").as_str(), "_other");
        assert_eq!(tenant_label("a").as_str(), "a");
    }
}
