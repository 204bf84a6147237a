//! The Prometheus names of the catalog: dashboards and alerts under `deploy/` are written
//! against them, so a rename must fail here first.

use opentelemetry::KeyValue;
use supervisor_telemetry::{LogSetup, TelemetryConfig, metrics, tenant_kv};

#[tokio::test]
async fn every_instrument_is_exposed_under_its_documented_name() {
    let telemetry = supervisor_telemetry::install(
        &TelemetryConfig::default(),
        &LogSetup {
            filter: "warn".into(),
            json: false,
        },
        "node-test",
        true,
    )
    .expect("install");
    let m = metrics();
    let kv = |k: &'static str, v: &'static str| KeyValue::new(k, v);
    m.tasks_submitted
        .add(2, &[kv("task_type", "testing"), tenant_kv("acme")]);
    m.tasks_finished.add(
        1,
        &[
            kv("task_type", "testing"),
            kv("status", "succeeded"),
            tenant_kv("acme"),
            kv("provider", "mock"),
        ],
    );
    m.task_queue_wait
        .record(0.02, &[kv("task_type", "testing")]);
    m.task_duration.record(0.2, &[kv("task_type", "testing")]);
    m.tasks_current.record(3, &[kv("status", "queued")]);
    m.queue_depth.record(3, &[kv("priority", "normal")]);
    m.queue_oldest_age.record(1.5, &[]);
    m.attempts_running.add(1, &[kv("provider", "mock")]);
    m.leases_granted.add(1, &[]);
    m.lease_renewals.add(1, &[kv("outcome", "renewed")]);
    m.lease_reclaims.add(1, &[kv("reason", "expired")]);
    m.fencing_refusals.add(1, &[kv("operation", "finish")]);
    m.provider_requests
        .add(1, &[kv("provider", "mock"), kv("outcome", "ok")]);
    m.provider_errors
        .add(1, &[kv("provider", "mock"), kv("kind", "timeout")]);
    m.provider_duration.record(0.01, &[kv("provider", "mock")]);
    m.breaker_state.record(0, &[kv("provider", "mock")]);
    m.provider_tokens
        .add(10, &[kv("provider", "mock"), kv("type", "input")]);
    m.provider_cost.add(0.5, &[kv("provider", "mock")]);
    m.store_commit_duration
        .record(0.001, &[kv("backend", "embedded")]);
    m.store_batch_size.record(4, &[kv("backend", "embedded")]);
    m.store_conflicts.add(1, &[kv("backend", "embedded")]);
    m.cluster_nodes.record(1, &[kv("state", "active")]);
    m.node_epoch.record(7, &[kv("node", "node-test")]);
    m.node_serving.record(1, &[]);
    m.budget_used_ratio.record(0.5, &[tenant_kv("acme")]);
    m.spans_dropped.add(0, &[]);

    let text = telemetry.prometheus_text();
    for name in [
        "supervisor_tasks_submitted_total{task_type=\"testing\",tenant=\"acme\"",
        "supervisor_tasks_finished_total{",
        "supervisor_task_queue_wait_seconds_bucket{",
        "supervisor_task_duration_seconds_bucket{",
        "supervisor_task_duration_seconds_count{",
        "supervisor_tasks_current{",
        "supervisor_queue_depth{",
        "supervisor_queue_oldest_age_seconds ",
        "supervisor_attempts_running{",
        "supervisor_leases_granted_total ",
        "supervisor_lease_renewals_total{",
        "supervisor_lease_reclaims_total{",
        "supervisor_lease_fencing_refusals_total{",
        "supervisor_provider_requests_total{",
        "supervisor_provider_errors_total{",
        "supervisor_provider_request_duration_seconds_bucket{",
        "supervisor_provider_breaker_state{",
        "supervisor_provider_tokens_total{",
        "supervisor_provider_cost_usd_total{",
        "supervisor_store_commit_duration_seconds_bucket{",
        "supervisor_store_commit_batch_size_bucket{",
        "supervisor_store_conflicts_total{",
        "supervisor_cluster_nodes{",
        "supervisor_node_epoch{",
        "supervisor_node_serving ",
        "supervisor_budget_used_ratio{",
        "supervisor_telemetry_spans_dropped_total ",
        "target_info{",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
}
