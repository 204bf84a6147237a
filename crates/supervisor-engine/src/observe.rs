//! The engine's metrics, recorded once per committed change: each function here hangs
//! its recording on the transaction ([`Transaction::after_commit`]), so a transaction
//! retried after a conflict counts once and one that fails counts nothing. With metrics
//! off (no telemetry installed) each is a load and a branch.

use opentelemetry::KeyValue;
use supervisor_model::{Task, TaskStatus};
use supervisor_store::Transaction;
use supervisor_telemetry::{metrics, metrics_on, tenant_kv};

/// Seconds between two instants in unix microseconds (0 when out of order).
fn seconds(from_micros: i64, to_micros: i64) -> f64 {
    (to_micros - from_micros).max(0) as f64 / 1e6
}

/// A task was created.
pub(crate) fn submitted(txn: &mut Transaction<'_>, task: &Task) {
    if !metrics_on() {
        return;
    }
    let attrs = [
        KeyValue::new("task_type", task.task_type.as_str()),
        tenant_kv(&task.tenant),
    ];
    txn.after_commit(move || metrics().tasks_submitted.add(1, &attrs));
}

/// `task` moves from `from` to `to` at `now`: a first start records the queue wait, a
/// terminal status the task's count and duration.
pub(crate) fn transition(
    txn: &mut Transaction<'_>,
    task: &Task,
    from: TaskStatus,
    to: TaskStatus,
    now: i64,
) {
    if !metrics_on() {
        return;
    }
    let task_type = KeyValue::new("task_type", task.task_type.as_str());
    // The first start only: a lease taken back without counting (a node that died, a
    // deferral) leaves `attempt` at 1 again, but not `abandoned_attempts` or `attempts`.
    let first_start = task.attempt <= 1 && task.attempts.is_empty() && task.abandoned_attempts == 0;
    if to == TaskStatus::Running && from == TaskStatus::Queued && first_start {
        let wait = seconds(task.created_at, now);
        let attrs = [task_type, tenant_kv(&task.tenant)];
        txn.after_commit(move || metrics().task_queue_wait.record(wait, &attrs));
    } else if to.is_terminal() {
        let took = seconds(task.created_at, now);
        let status = KeyValue::new("status", to.as_str());
        let provider = task
            .result
            .as_ref()
            .map(|r| r.provider.clone())
            .or_else(|| task.attempts.last().map(|a| a.provider.clone()))
            .unwrap_or_default();
        let counted = [
            task_type.clone(),
            status.clone(),
            tenant_kv(&task.tenant),
            KeyValue::new("provider", provider),
        ];
        let timed = [task_type, status];
        txn.after_commit(move || {
            let m = metrics();
            m.tasks_finished.add(1, &counted);
            m.task_duration.record(took, &timed);
        });
    }
}

/// A write of a lease holder was refused (stale token or fenced node); `operation` says
/// which (`progress`, `finish`).
pub(crate) fn refused(txn: &mut Transaction<'_>, operation: &'static str) {
    if metrics_on() {
        txn.after_commit(move || {
            metrics()
                .fencing_refusals
                .add(1, &[KeyValue::new("operation", operation)])
        });
    }
}

/// A lease was taken back from its holder; `reason` is `expired`, `fenced` or
/// `restarted`.
pub(crate) fn reclaimed(txn: &mut Transaction<'_>, reason: &'static str) {
    if metrics_on() {
        txn.after_commit(move || {
            metrics()
                .lease_reclaims
                .add(1, &[KeyValue::new("reason", reason)])
        });
    }
}

/// Cluster-wide numbers every node reports as gauges, read from the store.
#[derive(Debug, Clone, Default)]
pub struct ClusterGauges {
    /// Tasks per status.
    pub by_status: crate::StatusCounts,
    /// Queued tasks per priority.
    pub queued_by_priority: Vec<(supervisor_model::Priority, u64)>,
    /// When the oldest queued task was submitted (unix milliseconds), among the tenants
    /// looked at.
    pub oldest_queued_at_ms: Option<i64>,
    /// Budgets with their use, of the tenants looked at.
    pub budgets: Vec<crate::BudgetStatus>,
}

/// Queued tasks per priority, cluster-wide, from the counters every move into or out of
/// the queue keeps.
async fn queued_by_priority(
    txn: &mut supervisor_store::Transaction<'static>,
) -> Result<Vec<(supervisor_model::Priority, u64)>, crate::EngineError> {
    let mut counts = Vec::with_capacity(supervisor_model::Priority::ALL.len());
    for p in supervisor_model::Priority::ALL {
        let v = txn
            .get_snapshot(&crate::keyspace::queued_counter(*p))
            .await?;
        let n = v
            .as_deref()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, i64::from_le_bytes);
        counts.push((*p, n.max(0) as u64));
    }
    Ok(counts)
}

impl crate::Engine {
    /// Queued tasks per priority across every tenant.
    pub async fn queued_by_priority(
        &self,
    ) -> Result<Vec<(supervisor_model::Priority, u64)>, crate::EngineError> {
        let mut txn = self.db().begin().await?;
        queued_by_priority(&mut txn).await
    }

    /// Reads [`ClusterGauges`], looking at no more than `max_tenants` tenants for the
    /// oldest queued task and the budgets (`default` first, then by name).
    pub async fn cluster_gauges(
        &self,
        max_tenants: usize,
    ) -> Result<ClusterGauges, crate::EngineError> {
        use supervisor_store::RangeOptions;
        let by_status = self.status_counts().await?;
        let mut txn = self.db().begin().await?;
        let queued_by_priority = queued_by_priority(&mut txn).await?;
        let (begin, end) = crate::keyspace::tenant_status_counters();
        let counters = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?;
        let mut tenants = vec![supervisor_model::DEFAULT_TENANT.to_string()];
        for kv in &counters {
            if let Some(t) = crate::keyspace::parse_tenant_of_status_counter(&kv.key)
                && tenants.last() != Some(&t)
                && t != supervisor_model::DEFAULT_TENANT
            {
                tenants.push(t);
            }
        }
        tenants.truncate(max_tenants.max(1));
        let mut oldest: Option<i64> = None;
        for tenant in &tenants {
            let (b, e) = crate::keyspace::index_range(
                tenant,
                crate::keyspace::Index::Status(TaskStatus::Queued),
            );
            let first = txn
                .get_range(&b, &e, RangeOptions::new().snapshot().limit(1))
                .await?;
            let at = first
                .first()
                .and_then(|kv| crate::keyspace::parse_index(&kv.key))
                .and_then(|id| id.0.get_timestamp())
                .map(|ts| {
                    let (secs, nanos) = ts.to_unix();
                    secs as i64 * 1000 + i64::from(nanos / 1_000_000)
                });
            if let Some(at) = at {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        drop(txn);
        let mut budgets = Vec::new();
        for tenant in &tenants {
            budgets.extend(self.budgets(tenant).await?);
        }
        Ok(ClusterGauges {
            by_status,
            queued_by_priority,
            oldest_queued_at_ms: oldest,
            budgets,
        })
    }
}
