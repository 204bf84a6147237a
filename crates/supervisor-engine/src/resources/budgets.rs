//! The budget manager: before an attempt starts, each budget covering its task must have
//! room for the attempt's estimate on top of the period's settled spend and what running
//! attempts reserved. The reservation is written in the lease transaction and settled in
//! the one that ends the attempt (`ledger::charge_budgets` adds the real spend,
//! `records::transition` gives the reservation back).
//!
//! Reservations of one budget are serialized by a gate key every reserving lease reads and
//! writes; spend and reservation counters are read as snapshots, which is conservative:
//! an ending attempt only adds its real spend and removes its (larger or equal)
//! reservation. So settled spend exceeds a hard limit only by what attempts spent beyond
//! their reservation (see docs/resources.md).

use std::collections::{HashMap, HashSet};

use supervisor_model::{
    Budget, BudgetLimit, BudgetScope, ExceedPolicy, Metric, Period, Reservation, Task, quote,
};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::{counter, decode};
use crate::ledger::{period_end, period_id};
use crate::{EngineError, keyspace};

/// What an attempt is expected to spend at most, for its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    /// Cost in millionths of a dollar; `None`: the task's cost ceiling or the budget's
    /// default reservation.
    pub cost_micros: Option<u64>,
    /// Input plus output tokens.
    pub tokens: u64,
}

/// Tokens reserved for an attempt's answer when the node gives no estimate.
pub const DEFAULT_ANSWER_TOKENS: u64 = 4096;

impl Estimate {
    /// An estimate from the prompt's size (about four bytes per token) plus
    /// [`DEFAULT_ANSWER_TOKENS`], and the task's cost ceiling if it has one.
    pub fn from_task(task: &Task) -> Estimate {
        Estimate {
            cost_micros: task.routing.max_cost_micros,
            tokens: (task.prompt.len() as u64 / 4).saturating_add(DEFAULT_ANSWER_TOKENS),
        }
    }
}

/// The budgets of one tenant, read once per lease.
pub(crate) async fn load(
    txn: &mut Transaction<'_>,
    tenant: &str,
) -> Result<Vec<Budget>, EngineError> {
    let (begin, end) = keyspace::budgets(tenant);
    let mut out = Vec::new();
    for kv in txn
        .get_range(&begin, &end, RangeOptions::new().snapshot())
        .await?
    {
        out.push(decode("budget", &kv.value)?);
    }
    Ok(out)
}

/// What the budgets say about starting an attempt.
pub(crate) enum Verdict {
    /// Room in every budget: these reservations are written; the warnings go in the
    /// task's events (soft limits passed).
    Reserved {
        reservations: Vec<Reservation>,
        warnings: Vec<String>,
    },
    /// A hard limit is reached.
    Blocked {
        why: String,
        policy: ExceedPolicy,
        /// When to look again: the end of the period, or sooner (a reservation may be
        /// given back, a limit raised).
        recheck_at: i64,
    },
}

/// What one lease transaction knows of a tenant's budgets: the gates it holds, and each
/// limit's use as first read plus what this transaction reserved since. The gate makes
/// the transaction the only one reserving in those budgets, so the running sum is exact
/// without reading the counters again for every task.
#[derive(Debug, Default)]
pub(crate) struct BatchUse {
    gated: HashSet<BudgetScope>,
    used: HashMap<(BudgetScope, Metric, Period), u64>,
}

/// One limit's use now: settled spend in the period `period_id` names, and what running
/// attempts reserved (snapshot reads).
pub(crate) struct Use {
    pub period_id: String,
    pub spent: u64,
    pub reserved: u64,
}

/// What `tenant`'s `budget` has used of `limit` now.
pub(crate) async fn limit_use(
    txn: &mut Transaction<'_>,
    tenant: &str,
    budget: &Budget,
    limit: &BudgetLimit,
    now: i64,
) -> Result<Use, EngineError> {
    let (kind, name) = budget.scope.parts();
    let metric = limit.metric.as_str();
    let period_id = period_id(limit.period, &budget.time_zone, now);
    let read = |bytes: Option<Vec<u8>>| counter(bytes.as_deref()).max(0) as u64;
    let spent = read(
        txn.get_snapshot(&keyspace::spend(tenant, kind, name, &period_id, metric))
            .await?,
    );
    let reserved = read(
        txn.get_snapshot(&keyspace::reserved(tenant, kind, name, metric))
            .await?,
    );
    Ok(Use {
        period_id,
        spent,
        reserved,
    })
}

/// `amount` of `metric` in words.
pub(crate) fn amount(metric: Metric, value: u64) -> String {
    match metric {
        Metric::CostMicros => format!("${:.2}", value as f64 / 1e6),
        Metric::Tokens => format!("{value} tokens"),
    }
}

/// How long a task blocked by a budget waits before it is looked at again, at most.
const RECHECK_MICROS: i64 = 60_000_000;

/// Checks every budget of `budgets` covering `task` and reserves `estimate` in each, or
/// says which limit blocks it. `batch` carries what this transaction already knows.
pub(crate) async fn reserve(
    txn: &mut Transaction<'_>,
    task: &Task,
    budgets: &[Budget],
    estimate: Estimate,
    now: i64,
    batch: &mut BatchUse,
) -> Result<Verdict, EngineError> {
    let mut reservations = Vec::new();
    let mut warnings = Vec::new();
    for budget in budgets.iter().filter(|b| b.scope.covers(task)) {
        let (kind, name) = budget.scope.parts();
        if batch.gated.insert(budget.scope.clone()) {
            let gate = keyspace::budget_gate(&task.tenant, kind, name);
            txn.get(&gate).await?;
            txn.set(&gate, &now.to_le_bytes());
        }
        let cost = estimate
            .cost_micros
            .unwrap_or(budget.default_reserve_micros);
        let mut soft_passed = false;
        for limit in &budget.limits {
            let need = match limit.metric {
                Metric::CostMicros => cost,
                Metric::Tokens => estimate.tokens,
            };
            let slot = (budget.scope.clone(), limit.metric, limit.period);
            let used = match batch.used.get(&slot) {
                Some(used) => *used,
                None => {
                    let u = limit_use(txn, &task.tenant, budget, limit, now).await?;
                    let used = u.spent.saturating_add(u.reserved);
                    batch.used.insert(slot, used);
                    used
                }
            };
            let after = used.saturating_add(need);
            if after > limit.hard {
                let ends = period_end(limit.period, &budget.time_zone, now);
                let why = format!(
                    "budget {} of tenant {} allows {} per {} ({}); {} is spent or reserved and this attempt needs {}",
                    budget.scope.describe(),
                    quote(&task.tenant),
                    amount(limit.metric, limit.hard),
                    limit.period.as_str(),
                    budget.time_zone,
                    amount(limit.metric, used),
                    amount(limit.metric, need),
                );
                return Ok(Verdict::Blocked {
                    why,
                    policy: budget.on_exceed,
                    recheck_at: ends.min(now.saturating_add(RECHECK_MICROS)),
                });
            }
            let soft = budget.soft(limit);
            if budget.soft_percent < 100 && after > soft {
                soft_passed = true;
                warnings.push(format!(
                    "budget {} is past its soft limit: {} of {} per {} spent or reserved with this attempt ({}%)",
                    budget.scope.describe(),
                    amount(limit.metric, after),
                    amount(limit.metric, limit.hard),
                    limit.period.as_str(),
                    budget.soft_percent
                ));
            }
        }
        if soft_passed {
            txn.atomic_add(&keyspace::budget_soft(&task.tenant, kind, name), 1);
        }
        for limit in &budget.limits {
            let need = match limit.metric {
                Metric::CostMicros => cost,
                Metric::Tokens => estimate.tokens,
            };
            if let Some(used) =
                batch
                    .used
                    .get_mut(&(budget.scope.clone(), limit.metric, limit.period))
            {
                *used = used.saturating_add(need);
            }
        }
        reservations.push(Reservation {
            scope: budget.scope.clone(),
            cost_micros: cost,
            tokens: estimate.tokens,
            time_zone: budget.time_zone.clone(),
        });
    }
    add_reservations(txn, &task.tenant, &reservations, 1);
    Ok(Verdict::Reserved {
        reservations,
        warnings,
    })
}

/// Adds (`sign` 1) or removes (`sign` -1) reservations from their budgets' counters.
fn add_reservations(
    txn: &mut Transaction<'_>,
    tenant: &str,
    reservations: &[Reservation],
    sign: i64,
) {
    for r in reservations {
        let (kind, name) = r.scope.parts();
        let key = |metric: Metric| keyspace::reserved(tenant, kind, name, metric.as_str());
        txn.atomic_add(&key(Metric::CostMicros), sign * r.cost_micros as i64);
        txn.atomic_add(&key(Metric::Tokens), sign * r.tokens as i64);
    }
}

/// Takes back reservations made earlier in the same transaction (the task was parked
/// after all).
pub(crate) fn unreserve(
    txn: &mut Transaction<'_>,
    tenant: &str,
    reservations: &[Reservation],
    batch: &mut BatchUse,
) {
    add_reservations(txn, tenant, reservations, -1);
    for r in reservations {
        for ((scope, metric, _), used) in batch.used.iter_mut() {
            if *scope == r.scope {
                let back = match metric {
                    Metric::CostMicros => r.cost_micros,
                    Metric::Tokens => r.tokens,
                };
                *used = used.saturating_sub(back);
            }
        }
    }
}
