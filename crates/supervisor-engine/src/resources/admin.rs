//! Reading and setting what the resource managers enforce: budgets and their spend,
//! tenant quotas, who holds which repository lock and who waits.

use supervisor_model::{
    Budget, BudgetScope, FieldError, LockMode, MAX_BUDGETS_PER_TENANT, Metric, Period, TaskId,
    TenantQuota, quote,
};
use supervisor_store::RangeOptions;

use super::locks::HolderEntry;
use crate::codec::{counter, decode, encode};
use crate::ledger::period_end;
use crate::{Engine, EngineError, keyspace, records};

/// Most entries one listing of allocations or waiting tasks returns.
pub const MAX_LISTED: usize = 1000;

/// One limit of a budget with what is used of it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// What it counts.
    pub metric: Metric,
    /// Over which period.
    pub period: Period,
    /// The period it is in now (`d2026-12-02`, `m2026-12`), in the budget's time zone.
    pub period_id: String,
    /// When that period ends (unix microseconds).
    pub period_ends_at: i64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit (warnings past it).
    pub soft: u64,
    /// Settled spend in the period.
    pub spent: u64,
    /// What running attempts reserved.
    pub reserved: u64,
}

/// A budget with its limits' current use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    /// The tenant it belongs to.
    pub tenant: String,
    /// The budget as set.
    pub budget: Budget,
    /// Each limit's use now.
    pub limits: Vec<LimitStatus>,
    /// Attempts started past a soft limit, since the budget was first set.
    pub soft_exceeded: u64,
}

/// A tenant's quota with what it uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantQuotaInfo {
    /// The tenant.
    pub tenant: String,
    /// The quota in force (defaults when never set).
    pub quota: TenantQuota,
    /// Its attempts running now.
    pub running: u64,
}

/// A repository lock held by a running attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The repository.
    pub repo: String,
    /// The ref.
    pub git_ref: String,
    /// How it is held.
    pub mode: LockMode,
    /// The holder's tenant.
    pub tenant: String,
    /// The holder.
    pub task: TaskId,
    /// The fencing token of the attempt holding it.
    pub fence: u64,
    /// The node running that attempt.
    pub node: String,
    /// Since when (unix microseconds).
    pub since: i64,
}

/// A queued task a resource manager holds back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingTask {
    /// Its tenant.
    pub tenant: String,
    /// The task.
    pub task: TaskId,
    /// `lock` or `budget`.
    pub resource: String,
    /// What it waits for, in words.
    pub reason: String,
}

fn check_budget_count(existing: usize, replacing: bool) -> Result<(), EngineError> {
    if !replacing && existing >= MAX_BUDGETS_PER_TENANT {
        return Err(EngineError::FailedPrecondition(format!(
            "this tenant has {existing} budgets, the most allowed; delete one first (`supervisor budget delete`)"
        )));
    }
    Ok(())
}

impl Engine {
    /// Sets (creates or replaces) a budget of `tenant`. Fails with `InvalidArgument` on a
    /// budget that does not validate.
    pub async fn set_budget(&self, tenant: &str, budget: Budget) -> Result<Budget, EngineError> {
        budget.validate()?;
        let budget = &budget;
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let (kind, name) = budget.scope.parts();
                    let key = keyspace::budget(tenant, kind, name);
                    let replacing = txn.get(&key).await?.is_some();
                    let (begin, end) = keyspace::budgets(tenant);
                    let existing = txn
                        .get_range(
                            &begin,
                            &end,
                            RangeOptions::new()
                                .snapshot()
                                .limit(MAX_BUDGETS_PER_TENANT + 1),
                        )
                        .await?
                        .len();
                    check_budget_count(existing, replacing)?;
                    txn.set(&key, &encode(budget)?);
                    Ok::<_, EngineError>(budget.clone())
                })
            })
            .await
    }

    /// Deletes the budget of `tenant` with `scope`. Fails with `NotFound`-like
    /// `FailedPrecondition` when there is none. Running attempts keep their reservations
    /// until they end.
    pub async fn delete_budget(
        &self,
        tenant: &str,
        scope: &BudgetScope,
    ) -> Result<(), EngineError> {
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let (kind, name) = scope.parts();
                    let key = keyspace::budget(tenant, kind, name);
                    if txn.get(&key).await?.is_none() {
                        return Err(EngineError::FailedPrecondition(format!(
                            "tenant {} has no budget for {}; `supervisor budget list` shows its budgets",
                            quote(tenant),
                            scope.describe()
                        )));
                    }
                    txn.clear(&key);
                    Ok::<_, EngineError>(())
                })
            })
            .await
    }

    /// The budgets of `tenant` with the use of each limit now.
    pub async fn budgets(&self, tenant: &str) -> Result<Vec<BudgetStatus>, EngineError> {
        let now = self.now_micros();
        let mut txn = self.db().begin().await?;
        let budgets = super::budgets::load(&mut txn, tenant).await?;
        let mut out = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let (kind, name) = budget.scope.parts();
            let mut limits = Vec::with_capacity(budget.limits.len());
            for limit in &budget.limits {
                let now_used =
                    super::budgets::limit_use(&mut txn, tenant, &budget, limit, now).await?;
                limits.push(LimitStatus {
                    metric: limit.metric,
                    period: limit.period,
                    period_ends_at: period_end(limit.period, &budget.time_zone, now),
                    period_id: now_used.period_id,
                    hard: limit.hard,
                    soft: budget.soft(limit),
                    spent: now_used.spent,
                    reserved: now_used.reserved,
                });
            }
            let soft_exceeded = counter(
                txn.get_snapshot(&keyspace::budget_soft(tenant, kind, name))
                    .await?
                    .as_deref(),
            );
            out.push(BudgetStatus {
                tenant: tenant.to_string(),
                budget,
                limits,
                soft_exceeded: soft_exceeded.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Sets `tenant`'s quota (fair-queueing weight, running limit, lock policy).
    pub async fn set_quota(
        &self,
        tenant: &str,
        quota: TenantQuota,
    ) -> Result<TenantQuotaInfo, EngineError> {
        quota.validate()?;
        let quota = &quota;
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.set(&keyspace::quota(tenant), &encode(quota)?);
                    // Work held back by the old quota may start now.
                    txn.atomic_add(&keyspace::queue_version(), 1);
                    Ok::<_, EngineError>(())
                })
            })
            .await?;
        self.quota(tenant).await
    }

    /// `tenant`'s quota and what it uses now.
    pub async fn quota(&self, tenant: &str) -> Result<TenantQuotaInfo, EngineError> {
        let mut txn = self.db().begin().await?;
        let quota = match txn.get_snapshot(&keyspace::quota(tenant)).await? {
            Some(bytes) => decode("tenant quota", &bytes)?,
            None => TenantQuota::default(),
        };
        let running = counter(
            txn.get_snapshot(&keyspace::running(tenant))
                .await?
                .as_deref(),
        );
        Ok(TenantQuotaInfo {
            tenant: tenant.to_string(),
            quota,
            running: running.max(0) as u64,
        })
    }

    /// Every tenant whose quota was set, with what it uses now.
    pub async fn quotas(&self) -> Result<Vec<TenantQuotaInfo>, EngineError> {
        let (begin, end) = keyspace::quotas();
        let mut txn = self.db().begin().await?;
        let kvs = txn
            .get_range(
                &begin,
                &end,
                RangeOptions::new().snapshot().limit(MAX_LISTED),
            )
            .await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let Some(tenant) = keyspace::parse_quota(&kv.key) else {
                continue;
            };
            let running = counter(
                txn.get_snapshot(&keyspace::running(&tenant))
                    .await?
                    .as_deref(),
            );
            out.push(TenantQuotaInfo {
                quota: decode("tenant quota", &kv.value)?,
                tenant,
                running: running.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Repository locks held now, of `tenant` (or of every tenant), at most
    /// [`MAX_LISTED`].
    pub async fn allocations(&self, tenant: Option<&str>) -> Result<Vec<Allocation>, EngineError> {
        let (begin, end) = keyspace::all_lock_holders();
        let mut txn = self.db().begin().await?;
        let kvs = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?;
        let mut out = Vec::new();
        for kv in kvs {
            let Some((repo, git_ref, task)) = keyspace::parse_lock_entry(&kv.key) else {
                continue;
            };
            let holder: HolderEntry = decode("lock holder", &kv.value)?;
            if tenant.is_some_and(|t| t != holder.tenant) {
                continue;
            }
            out.push(Allocation {
                repo,
                git_ref,
                mode: holder.mode,
                tenant: holder.tenant,
                task,
                fence: holder.fence,
                node: holder.node,
                since: holder.since,
            });
            if out.len() >= MAX_LISTED {
                break;
            }
        }
        Ok(out)
    }

    /// Queued tasks a resource manager holds back (a repository lock, a budget), of
    /// `tenant` (or of every tenant), at most [`MAX_LISTED`].
    pub async fn waiting(&self, tenant: Option<&str>) -> Result<Vec<WaitingTask>, EngineError> {
        let mut txn = self.db().begin().await?;
        let mut found: Vec<(String, TaskId, &'static str)> = Vec::new();
        let (begin, end) = keyspace::all_lock_waiters();
        for kv in txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?
        {
            if let Some((_, _, id)) = keyspace::parse_lock_entry(&kv.key) {
                let waiter: super::locks::WaiterEntry = decode("lock waiter", &kv.value)?;
                found.push((waiter.tenant, id, "lock"));
            }
        }
        let (begin, end) = keyspace::budget_waiters();
        for kv in txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?
        {
            if let Some((t, id)) = keyspace::parse_budget_waiter(&kv.key) {
                found.push((t, id, "budget"));
            }
        }
        let mut out = Vec::new();
        for (t, id, resource) in found {
            if tenant.is_some_and(|want| want != t) {
                continue;
            }
            let Some(task) = records::load(&mut txn, &t, id).await? else {
                continue;
            };
            if task.status != supervisor_model::TaskStatus::Queued {
                continue;
            }
            out.push(WaitingTask {
                tenant: t,
                task: id,
                resource: resource.to_string(),
                reason: task.waiting_for.unwrap_or_default(),
            });
            if out.len() >= MAX_LISTED {
                break;
            }
        }
        Ok(out)
    }
}

/// A budget scope from the API's words: `tenant`, `key:<id>` or `label:<name>`.
pub fn parse_scope(text: &str) -> Result<BudgetScope, FieldError> {
    let scope = match text.split_once(':') {
        None if text == "tenant" => Some(BudgetScope::Tenant),
        Some((kind, name)) if !name.is_empty() => {
            BudgetScope::from_parts(kind, name).filter(|s| !matches!(s, BudgetScope::Tenant))
        }
        _ => None,
    };
    scope.ok_or_else(|| {
        FieldError::new(
            "scope",
            format!(
                "{} is not a budget scope (tenant, key:<key id> or label:<label>)",
                quote(text)
            ),
        )
    })
}
