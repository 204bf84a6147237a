//! Budgets, quotas, locks, waiting tasks and node measurements as text.

use supervisor_proto::v1::{Allocation, BudgetStatus, NodeResources, TenantQuota, WaitingTask};

use crate::commands::output::{Table, bytes, field_lines, rfc3339_seconds};

/// An amount of a limit's metric in words.
pub fn amount(metric: &str, value: u64) -> String {
    match metric {
        "usd" => format!("${:.2}", value as f64 / 1e6),
        _ => format!("{value} tokens"),
    }
}

/// Budgets, each with a table of its limits.
pub fn budgets(budgets: &[BudgetStatus]) -> String {
    if budgets.is_empty() {
        return "no budgets: this tenant's spending is not limited (`supervisor budget set` makes one)\n".into();
    }
    let mut out = String::new();
    for b in budgets {
        let Some(budget) = &b.budget else { continue };
        out.push_str(&field_lines(&[
            ("budget", budget.scope.clone()),
            ("tenant", b.tenant.clone()),
            ("at a hard limit", budget.on_exceed.clone()),
            ("time zone", budget.time_zone.clone()),
            (
                "soft limit",
                format!("{}% of each hard limit", budget.soft_percent),
            ),
            (
                "default reservation",
                amount("usd", budget.default_reserve_micros),
            ),
            ("past soft limit", format!("{} attempts", b.soft_exceeded)),
        ]));
        let mut table = Table::new(&[
            "LIMIT", "PERIOD", "SPENT", "RESERVED", "HARD", "USED", "ENDS",
        ]);
        for l in &b.limits {
            let Some(limit) = &l.limit else { continue };
            let used = l.spent.saturating_add(l.reserved);
            let share = if limit.hard == 0 {
                "-".to_string()
            } else {
                format!("{:.0}%", used as f64 * 100.0 / limit.hard as f64)
            };
            table.row(vec![
                format!("{} per {}", limit.metric, limit.period),
                l.period_id.clone(),
                amount(&limit.metric, l.spent),
                amount(&limit.metric, l.reserved),
                amount(&limit.metric, limit.hard),
                share,
                l.period_ends_at
                    .as_ref()
                    .map(rfc3339_seconds)
                    .unwrap_or_default(),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
    }
    out
}

/// A tenant's quota.
pub fn quota(q: &TenantQuota) -> String {
    field_lines(&[
        ("tenant", q.tenant.clone()),
        ("weight", q.weight.to_string()),
        (
            "max running",
            if q.max_running == 0 {
                "no limit".into()
            } else {
                q.max_running.to_string()
            },
        ),
        ("running", q.running.to_string()),
        (
            "starts per minute",
            if q.starts_per_minute == 0 {
                "no limit".into()
            } else {
                q.starts_per_minute.to_string()
            },
        ),
        ("lock policy", q.lock_policy.clone()),
    ])
}

/// Locks held.
pub fn allocations(held: &[Allocation]) -> String {
    if held.is_empty() {
        return "no repository locks are held\n".into();
    }
    let mut table = Table::new(&[
        "REPOSITORY",
        "REF",
        "MODE",
        "TASK",
        "TENANT",
        "NODE",
        "SINCE",
    ]);
    for a in held {
        table.row(vec![
            a.repo.clone(),
            a.r#ref.clone(),
            a.mode.clone(),
            a.task_id.clone(),
            a.tenant.clone(),
            a.node.clone(),
            a.since.as_ref().map(rfc3339_seconds).unwrap_or_default(),
        ]);
    }
    table.render()
}

/// Waiting tasks.
pub fn waiting(tasks: &[WaitingTask]) -> String {
    if tasks.is_empty() {
        return "no task waits for a resource\n".into();
    }
    let mut table = Table::new(&["TASK", "TENANT", "WAITS FOR", "WHY"]);
    for w in tasks {
        table.row(vec![
            w.task_id.clone(),
            w.tenant.clone(),
            w.resource.clone(),
            w.reason.clone(),
        ]);
    }
    table.render()
}

/// Every node's machine, then the attempts' processes.
pub fn nodes(nodes: &[NodeResources]) -> String {
    let mut table = Table::new(&[
        "NODE", "STATE", "CPU", "MEMORY", "NODE RSS", "ATTEMPTS", "DISKS", "MEASURED",
    ]);
    let mut attempts = Table::new(&["NODE", "ATTEMPT", "PROCESSES", "RSS", "CPU TIME"]);
    let mut any_attempt = false;
    for n in nodes {
        let disks: Vec<String> = n
            .disks
            .iter()
            .map(|d| {
                format!(
                    "{} {} free of {}",
                    d.purpose,
                    bytes(d.free_bytes),
                    bytes(d.total_bytes)
                )
            })
            .collect();
        let mut disks = disks.join("; ");
        if n.low_on_disk {
            disks.push_str(" (LOW: no repository tasks)");
        }
        let measured = n.measured_at.is_some();
        table.row(vec![
            n.node.clone(),
            n.state.clone(),
            if measured {
                format!(
                    "{:.1}% of {}",
                    n.cpu_busy_permille as f64 / 10.0,
                    n.cpu_cores
                )
            } else {
                "-".into()
            },
            if measured {
                format!(
                    "{} free of {}",
                    bytes(n.memory_available_bytes),
                    bytes(n.memory_total_bytes)
                )
            } else {
                "-".into()
            },
            if measured {
                bytes(n.process_rss_bytes)
            } else {
                "-".into()
            },
            n.in_flight.to_string(),
            if disks.is_empty() { "-".into() } else { disks },
            n.measured_at
                .as_ref()
                .map(rfc3339_seconds)
                .unwrap_or_else(|| "never".into()),
        ]);
        for a in &n.attempts {
            any_attempt = true;
            attempts.row(vec![
                n.node.clone(),
                a.attempt.clone(),
                a.processes.to_string(),
                bytes(a.rss_bytes),
                format!("{:.1}s", a.cpu_ms as f64 / 1000.0),
            ]);
        }
    }
    let mut out = table.render();
    if any_attempt {
        out.push('\n');
        out.push_str(&attempts.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_amounts_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(amount("usd", 1_234_567), "$1.23");
        assert_eq!(amount("tokens", 42), "42 tokens");
    }
}
