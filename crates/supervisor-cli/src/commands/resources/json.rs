//! Budgets, quotas, locks, waiting tasks and node measurements as JSON.

use serde_json::{Value, json};
use supervisor_proto::v1::{Allocation, BudgetStatus, NodeResources, TenantQuota, WaitingTask};

use crate::commands::output::optional_rfc3339;

pub fn budget(b: &BudgetStatus) -> Value {
    let budget = b.budget.clone().unwrap_or_default();
    json!({
        "tenant": b.tenant,
        "scope": budget.scope,
        "on_exceed": budget.on_exceed,
        "time_zone": budget.time_zone,
        "soft_percent": budget.soft_percent,
        "default_reserve_micros": budget.default_reserve_micros,
        "soft_exceeded": b.soft_exceeded,
        "updated_at": optional_rfc3339(b.updated_at.as_ref()),
        "updated_by": b.updated_by,
        "limits": b.limits.iter().map(|l| {
            let limit = l.limit.clone().unwrap_or_default();
            json!({
                "metric": limit.metric,
                "period": limit.period,
                "hard": limit.hard,
                "soft": l.soft,
                "period_id": l.period_id,
                "period_ends_at": optional_rfc3339(l.period_ends_at.as_ref()),
                "spent": l.spent,
                "reserved": l.reserved,
            })
        }).collect::<Vec<_>>(),
    })
}

pub fn quota(q: &TenantQuota) -> Value {
    json!({
        "tenant": q.tenant,
        "weight": q.weight,
        "max_running": q.max_running,
        "lock_policy": q.lock_policy,
        "running": q.running,
        "starts_per_minute": q.starts_per_minute,
    })
}

pub fn allocation(a: &Allocation) -> Value {
    json!({
        "repo": a.repo,
        "ref": a.r#ref,
        "mode": a.mode,
        "tenant": a.tenant,
        "task_id": a.task_id,
        "fence": a.fence,
        "node": a.node,
        "since": optional_rfc3339(a.since.as_ref()),
    })
}

pub fn waiting(w: &WaitingTask) -> Value {
    json!({
        "tenant": w.tenant,
        "task_id": w.task_id,
        "resource": w.resource,
        "reason": w.reason,
    })
}

pub fn node(n: &NodeResources) -> Value {
    json!({
        "node": n.node,
        "state": n.state,
        "measured_at": optional_rfc3339(n.measured_at.as_ref()),
        "cpu_cores": n.cpu_cores,
        "cpu_busy_permille": n.cpu_busy_permille,
        "memory_total_bytes": n.memory_total_bytes,
        "memory_available_bytes": n.memory_available_bytes,
        "process_rss_bytes": n.process_rss_bytes,
        "process_cpu_ms": n.process_cpu_ms,
        "in_flight": n.in_flight,
        "low_on_disk": n.low_on_disk,
        "disks": n.disks.iter().map(|d| json!({
            "purpose": d.purpose,
            "path": d.path,
            "total_bytes": d.total_bytes,
            "free_bytes": d.free_bytes,
        })).collect::<Vec<_>>(),
        "attempts": n.attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "processes": a.processes,
            "rss_bytes": a.rss_bytes,
            "cpu_ms": a.cpu_ms,
        })).collect::<Vec<_>>(),
    })
}
