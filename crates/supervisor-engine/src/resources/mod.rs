//! The resource managers' durable side: every lease goes through [`Engine::lease_with`],
//! which picks tasks by weighted fair queueing between tenants, holds back tenants at
//! their running limit, takes repository locks ([`locks`]) and budget reservations
//! ([`budgets`]) in the same transaction that hands out the lease. What an attempt holds
//! is recorded on its task and released by the transition that ends it, so a crash can
//! neither leak nor double-grant one, and taking several at once cannot deadlock (one
//! transaction takes them all or none).

mod admin;
mod budgets;
mod locks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use supervisor_model::{
    EventKind, ExceedPolicy, Holds, Lease, RepoLock, Task, TaskStatus, TenantQuota,
};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::{counter, decode};
use crate::nodes::{EpochCheck, NodeIdentity};
use crate::records::{self, TimerEntry, TimerKind};
use crate::runner::{LeaseBatch, LeasedTask, TaskRef};
use crate::{Engine, EngineError, keyspace};

pub use admin::{
    Allocation, BudgetStatus, LimitStatus, MAX_LISTED, TenantQuotaInfo, WaitingTask, parse_scope,
};
pub use budgets::{DEFAULT_ANSWER_TOKENS, Estimate};
pub(crate) use locks::refuse_if_held;

/// A node's estimate of what an attempt of a task will spend.
pub type Estimator = Arc<dyn Fn(&Task) -> Estimate + Send + Sync>;

/// What a node asks of a lease beyond "up to `max` tasks".
#[derive(Clone, Default)]
pub struct LeaseOptions {
    /// Leave repository tasks in the queue (the node is low on disk).
    pub no_repository_tasks: bool,
    /// The node's estimate of what an attempt will spend, for budget reservations;
    /// `None`: [`Estimate::from_task`].
    pub estimate: Option<Estimator>,
}

impl std::fmt::Debug for LeaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseOptions")
            .field("no_repository_tasks", &self.no_repository_tasks)
            .field("estimate", &self.estimate.is_some())
            .finish()
    }
}

/// Under contention a lease reads this many times the entries it may take and starts at
/// a random one of them.
const LEASE_SPREAD: usize = 4;
/// How long after a lease conflicted with another node's leases reads stay spread.
const SPREAD_FOR_MICROS: i64 = 10_000_000;

/// Virtual time one leased attempt costs a tenant of weight 1.
const VIRTUAL_UNIT: i64 = 1_000_000;

/// One tenant with ready work, as a lease sees it.
struct Queue {
    tenant: String,
    quota: TenantQuota,
    /// Its fair-queueing tag: the virtual time its next attempt starts at.
    tag: i64,
    served: bool,
    /// Ready keys read so far (`None`: not read yet).
    entries: Option<VecDeque<Vec<u8>>>,
    budgets: Option<Vec<supervisor_model::Budget>>,
    /// What this transaction knows of the tenant's budgets (gates held, use so far).
    budget_use: budgets::BatchUse,
    /// Whether this transaction holds the tenant's quota gate.
    gated: bool,
}

async fn read_quota(txn: &mut Transaction<'_>, tenant: &str) -> Result<TenantQuota, EngineError> {
    match txn.get_snapshot(&keyspace::quota(tenant)).await? {
        Some(bytes) => decode("tenant quota", &bytes),
        None => Ok(TenantQuota::default()),
    }
}

/// The lock policy of `tenant`'s tasks.
pub(crate) async fn lock_policy(
    txn: &mut Transaction<'_>,
    tenant: &str,
) -> Result<supervisor_model::LockPolicy, EngineError> {
    Ok(read_quota(txn, tenant).await?.lock_policy)
}

/// The tenants that may have ready tasks, each with its quota and fair-queueing tag.
async fn queues(txn: &mut Transaction<'_>, system_time: i64) -> Result<Vec<Queue>, EngineError> {
    let (begin, end) = keyspace::ready_tenants();
    let markers = txn
        .get_range(&begin, &end, RangeOptions::new().snapshot())
        .await?;
    let mut out = Vec::with_capacity(markers.len());
    for kv in markers {
        let Some(tenant) = keyspace::parse_ready_tenant(&kv.key) else {
            continue;
        };
        let quota = read_quota(txn, &tenant).await?;
        let own = counter(
            txn.get_snapshot(&keyspace::virtual_time(&tenant))
                .await?
                .as_deref(),
        );
        out.push(Queue {
            tenant,
            quota,
            // A tenant that was idle starts at the system's virtual time: idleness earns
            // no credit to burst with later.
            tag: own.max(system_time),
            served: false,
            entries: None,
            budgets: None,
            budget_use: budgets::BatchUse::default(),
            gated: false,
        });
    }
    Ok(out)
}

/// The next ready key of `queue`, reading its range on first use. A queue found empty
/// under a conflict-checked read loses its marker.
async fn next_entry(
    txn: &mut Transaction<'_>,
    queue: &mut Queue,
    max: usize,
    spread: bool,
) -> Result<Option<Vec<u8>>, EngineError> {
    if queue.entries.is_none() {
        let (begin, end) = keyspace::ready_range(&queue.tenant);
        let limit = if spread {
            max.saturating_mul(LEASE_SPREAD)
        } else {
            max
        };
        let kvs = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot().limit(limit))
            .await?;
        if kvs.is_empty() {
            // Confirm with a read a concurrent submit would conflict with, then drop
            // the marker.
            let confirm = txn
                .get_range(&begin, &end, RangeOptions::new().limit(1))
                .await?;
            if confirm.is_empty() {
                txn.clear(&keyspace::ready_tenant(&queue.tenant));
            }
        }
        let mut entries: VecDeque<Vec<u8>> = kvs.into_iter().map(|kv| kv.key).collect();
        if spread && entries.len() > 1 {
            // Nodes leasing at once start at different places of the queue's head, so
            // they stop claiming the same entries (QuiCK's randomized dequeue).
            let start = rand::random_range(0..entries.len());
            entries.rotate_left(start);
        }
        queue.entries = Some(entries);
    }
    Ok(queue.entries.as_mut().and_then(|e| e.pop_front()))
}

/// Whether the tenant is at its running limit or has started as many attempts in the
/// last minute as it may. The first check in a transaction takes the tenant's gate, so
/// concurrent leases count one after another and both limits hold exactly.
async fn at_tenant_limit(
    txn: &mut Transaction<'_>,
    queue: &mut Queue,
    now: i64,
) -> Result<bool, EngineError> {
    let quota = &queue.quota;
    if quota.max_running == 0 && quota.starts_per_minute == 0 {
        return Ok(false);
    }
    if !queue.gated {
        let gate = keyspace::quota_gate(&queue.tenant);
        txn.get(&gate).await?;
        txn.set(&gate, &now.to_le_bytes());
        queue.gated = true;
    }
    if quota.max_running > 0 {
        let running = counter(
            txn.get_snapshot(&keyspace::running(&queue.tenant))
                .await?
                .as_deref(),
        );
        if running.max(0) as u64 >= u64::from(quota.max_running) {
            return Ok(true);
        }
    }
    if quota.starts_per_minute > 0 {
        let started =
            crate::slices::used_in_window(txn, &starts_bucket(&queue.tenant), now).await?;
        if started >= u64::from(quota.starts_per_minute) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The bucket counting a tenant's attempt starts of the last minute.
fn starts_bucket(tenant: &str) -> String {
    format!("tenant:{tenant}:starts")
}

/// Most parked tasks of one tenant looked at again per given-back reservation.
const WAKE_PER_RELEASE: usize = 64;

/// Sends the budget-parked tasks of tenants that gave a reservation back since the last
/// look to the queue (their unpark timers disarmed): there may be room for them now.
/// Reads the counters as snapshots and writes only blind sets, so ending attempts never
/// make a lease retry.
async fn wake_budget_waiters(txn: &mut Transaction<'_>) -> Result<(), EngineError> {
    let (begin, end) = keyspace::budgets_freed();
    let freed = txn
        .get_range(&begin, &end, RangeOptions::new().snapshot())
        .await?;
    for kv in freed {
        let Some(tenant) = keyspace::parse_budget_freed(&kv.key) else {
            continue;
        };
        let seen_key = keyspace::budget_freed_seen(&tenant);
        let seen = counter(txn.get_snapshot(&seen_key).await?.as_deref());
        let now_at = counter(Some(&kv.value));
        if now_at == seen {
            continue;
        }
        txn.set(&seen_key, &now_at.to_le_bytes());
        let (wbegin, wend) = keyspace::budget_waiters_of(&tenant);
        let waiters = txn
            .get_range(
                &wbegin,
                &wend,
                RangeOptions::new().snapshot().limit(WAKE_PER_RELEASE),
            )
            .await?;
        for waiter in waiters {
            let Some((_, id)) = keyspace::parse_budget_waiter(&waiter.key) else {
                continue;
            };
            let Some(mut task) = records::load(txn, &tenant, id).await? else {
                txn.clear(&waiter.key);
                continue;
            };
            if task.status != TaskStatus::Queued || task.next_attempt_at.is_none() {
                continue;
            }
            records::disarm_timers(txn, &task);
            task.next_attempt_at = None;
            records::make_ready(txn, &task);
            records::put(txn, &task)?;
        }
    }
    Ok(())
}

/// Parks a claimed task until `due` (a budget blocks it): it stays `QUEUED`, says why,
/// and an unpark timer puts it back in the queue.
fn park_until(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    why: String,
    due: i64,
    now: i64,
) -> Result<(), EngineError> {
    records::disarm_timers(txn, task);
    txn.set(&keyspace::budget_waiter(&task.tenant, task.id), &[]);
    task.next_attempt_at = Some(due);
    records::arm_timer(
        txn,
        due,
        task.id,
        &TimerEntry::waiting(&task.tenant, TimerKind::Unpark, task.fence),
    )?;
    // One event per limit it waits for, not one per look (the amounts after `;` change).
    records::note_waiting(txn, task, now, why, |why| {
        why.split(';').next().unwrap_or_default()
    })
}

/// What one lease step needs besides the transaction.
struct Step<'a> {
    node: &'a NodeIdentity,
    now: i64,
    lease_micros: i64,
    cfg: &'a crate::EngineConfig,
    options: &'a LeaseOptions,
}

/// What became of one ready entry.
#[derive(Default)]
struct StepOutcome {
    leased: Option<LeasedTask>,
    held_back: bool,
}

/// Claims the ready entry `key` of `queue` and leases its task, or parks it (lock held,
/// budget reached), fails it (budget policy `fail`), or leaves it for another node.
async fn lease_one(
    txn: &mut Transaction<'_>,
    queue: &mut Queue,
    key: &[u8],
    step: &Step<'_>,
) -> Result<StepOutcome, EngineError> {
    let mut outcome = StepOutcome::default();
    txn.add_read_conflict_key(key);
    txn.clear(key);
    let Some(id) = keyspace::parse_ready(key) else {
        tracing::warn!("dropping an unparsable ready-queue entry");
        return Ok(outcome);
    };
    let Some(mut task) = records::load(txn, &queue.tenant, id).await? else {
        return Ok(outcome);
    };
    if task.status != TaskStatus::Queued {
        return Ok(outcome);
    }
    let lock = RepoLock::for_task(&task);
    if lock.is_some() && step.options.no_repository_tasks {
        // Not for this node: leave it for another.
        txn.set(key, &[]);
        outcome.held_back = true;
        return Ok(outcome);
    }
    if queue.budgets.is_none() {
        queue.budgets = Some(budgets::load(txn, &queue.tenant).await?);
    }
    let tenant_budgets = queue.budgets.as_deref().unwrap_or_default();
    let batch = &mut queue.budget_use;
    // Estimating builds the provider request: only worth it when a budget counts the task.
    let estimate = match &step.options.estimate {
        _ if !tenant_budgets.iter().any(|b| b.scope.covers(&task)) => Estimate::default(),
        Some(estimate) => estimate(&task),
        None => Estimate::from_task(&task),
    };
    let verdict = budgets::reserve(txn, &task, tenant_budgets, estimate, step.now, batch).await?;
    let (reservations, warnings) = match verdict {
        budgets::Verdict::Reserved {
            reservations,
            warnings,
        } => (reservations, warnings),
        budgets::Verdict::Blocked {
            why,
            policy: ExceedPolicy::Wait,
            recheck_at,
        } => {
            park_until(txn, &mut task, why, recheck_at, step.now)?;
            return Ok(outcome);
        }
        budgets::Verdict::Blocked {
            why,
            policy: ExceedPolicy::Fail,
            ..
        } => {
            txn.clear(&keyspace::budget_waiter(&task.tenant, task.id));
            let message = format!("failed before it started: {why}");
            task.error = Some(message.clone());
            records::transition(
                txn,
                &mut task,
                TaskStatus::Failed,
                step.now,
                EventKind::Failed,
                message,
            )?;
            records::put(txn, &task)?;
            crate::workflows::on_task_terminal(txn, &task, step.now, step.cfg).await?;
            return Ok(outcome);
        }
    };
    if let Some(lock) = &lock
        && let locks::Acquire::Parked = locks::acquire(
            txn,
            &mut task,
            lock,
            queue.quota.lock_policy,
            &step.node.id,
            step.now,
        )
        .await?
    {
        budgets::unreserve(txn, &task.tenant, &reservations, &mut queue.budget_use);
        return Ok(outcome);
    }
    records::disarm_timers(txn, &task);
    txn.clear(&keyspace::budget_waiter(&task.tenant, task.id));
    task.next_attempt_at = None;
    task.holds = Holds { lock, reservations };
    task.attempt += 1;
    task.fence += 1;
    let expires_at = step.now + step.lease_micros;
    let lease = Lease {
        node_id: step.node.id.clone(),
        node_epoch: step.node.epoch,
        fence: task.fence,
        expires_at,
    };
    task.lease = Some(lease.clone());
    task.started_at = Some(step.now);
    let message = format!(
        "attempt {} of {} started on node {}",
        task.attempt, task.max_attempts, step.node.id
    );
    records::transition(
        txn,
        &mut task,
        TaskStatus::Running,
        step.now,
        EventKind::Started,
        message,
    )?;
    for warning in warnings {
        records::append_event(
            txn,
            &mut task,
            step.now,
            EventKind::Activity,
            warning,
            String::new(),
        )?;
    }
    records::arm_timer(
        txn,
        expires_at,
        task.id,
        &TimerEntry::lease(&task.tenant, &lease),
    )?;
    records::put(txn, &task)?;
    let task_ref = TaskRef {
        tenant: task.tenant.clone(),
        id: task.id,
        fence: task.fence,
    };
    outcome.leased = Some(LeasedTask { task, task_ref });
    Ok(outcome)
}

impl Engine {
    /// Leases up to `max` ready tasks to `node` with default options (see
    /// [`Engine::lease_with`]).
    pub async fn lease(&self, node: &NodeIdentity, max: usize) -> Result<LeaseBatch, EngineError> {
        self.lease_with(node, max, &LeaseOptions::default()).await
    }

    /// Leases up to `max` ready tasks to `node`. Tenants with ready work take turns by
    /// weighted fair queueing (a tenant's backlog does not delay another's tasks); within
    /// a tenant, highest priority and oldest first. A tenant at its running limit is held
    /// back; a task whose repository lock is held is parked on the lock; a task a budget
    /// blocks waits (or fails, by the budget's policy). Each leased task gets a fresh
    /// fencing token, a lease timer, its lock and its reservations, all in one
    /// transaction. Scans with snapshot reads and claims only the entries it takes, so it
    /// does not conflict with concurrent submits.
    pub async fn lease_with(
        &self,
        node: &NodeIdentity,
        max: usize,
        options: &LeaseOptions,
    ) -> Result<LeaseBatch, EngineError> {
        let now = self.now_micros();
        let cfg = &self.inner.cfg;
        let lease_micros = cfg.lease_duration.as_micros() as i64;
        let relax = self.inner.db.relaxed_commits_die_with_process();
        // Spread over the queue's head while leases have been conflicting lately (other
        // nodes lease from it too), and on every retry after a conflict.
        let contended = &self.inner.lease_contended_at;
        let recently = now.saturating_sub(contended.load(Ordering::Relaxed)) < SPREAD_FOR_MICROS;
        let runs = AtomicUsize::new(0);
        let runs = &runs;
        let (tasks, ready_watch, held_back) = self
            .inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let spread = runs.fetch_add(1, Ordering::Relaxed) > 0 || recently;
                    if relax {
                        // Lost only with this process, and with it every attempt started
                        // under it: the tasks are simply leased again (see "Commits per
                        // task" in docs/ARCHITECTURE.md).
                        txn.relax_durability();
                    }
                    let ready_watch = txn.watch(&keyspace::queue_version());
                    // Read the version so the watch compares against this snapshot.
                    txn.get_snapshot(&keyspace::queue_version()).await?;
                    let mut leased = Vec::new();
                    let mut held_back = false;
                    if max == 0 {
                        return Ok((leased, ready_watch, held_back));
                    }
                    if let Some(detail) = EpochCheck::default()
                        .refusal(txn, &node.id, node.epoch)
                        .await?
                    {
                        return Err(EngineError::Fenced {
                            node: node.id.clone(),
                            epoch: node.epoch,
                            detail,
                        });
                    }
                    locks::wake_waiters(txn).await?;
                    wake_budget_waiters(txn).await?;
                    let mut system_time = counter(
                        txn.get_snapshot(&keyspace::system_virtual_time())
                            .await?
                            .as_deref(),
                    );
                    let mut queues = queues(txn, system_time).await?;
                    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = queues
                        .iter()
                        .enumerate()
                        .map(|(i, q)| Reverse((q.tag, i)))
                        .collect();
                    let step = Step {
                        node,
                        now,
                        lease_micros,
                        cfg,
                        options,
                    };
                    while leased.len() < max {
                        let Some(Reverse((_, i))) = heap.pop() else {
                            break;
                        };
                        let queue = &mut queues[i];
                        if at_tenant_limit(txn, queue, now).await? {
                            held_back = true;
                            continue;
                        }
                        let Some(key) = next_entry(txn, queue, max, spread).await? else {
                            continue;
                        };
                        let outcome = lease_one(txn, queue, &key, &step).await?;
                        held_back |= outcome.held_back;
                        if let Some(task) = outcome.leased {
                            if queue.quota.starts_per_minute > 0 {
                                txn.atomic_add(
                                    &keyspace::slice(&starts_bucket(&queue.tenant), now, &node.id),
                                    1,
                                );
                            }
                            // The tenant's next turn comes later by its inverse weight.
                            system_time = system_time.max(queue.tag);
                            queue.tag = queue.tag.saturating_add(
                                VIRTUAL_UNIT / i64::from(queue.quota.weight.max(1)),
                            );
                            queue.served = true;
                            leased.push(task);
                        }
                        heap.push(Reverse((queue.tag, i)));
                    }
                    for queue in queues.iter().filter(|q| q.served) {
                        txn.set(
                            &keyspace::virtual_time(&queue.tenant),
                            &queue.tag.to_le_bytes(),
                        );
                    }
                    if !leased.is_empty() {
                        txn.set(&keyspace::system_virtual_time(), &system_time.to_le_bytes());
                    }
                    Ok::<_, EngineError>((leased, ready_watch, held_back))
                })
            })
            .await?;
        if runs.load(Ordering::Relaxed) > 1 {
            contended.store(now, Ordering::Relaxed);
        }
        Ok(LeaseBatch {
            tasks,
            ready_watch,
            held_back,
        })
    }

    /// Moves the ready entries of earlier versions' single queue into the per-tenant
    /// queues, a batch per transaction. Returns how many moved.
    pub(crate) async fn move_legacy_ready(&self) -> Result<usize, EngineError> {
        let (begin, end) = keyspace::legacy_ready_range();
        let mut moved = 0;
        loop {
            let n = self
                .inner
                .db
                .run(|txn| {
                    let (begin, end) = (begin.clone(), end.clone());
                    Box::pin(async move {
                        let kvs = txn
                            .get_range(&begin, &end, RangeOptions::new().limit(500))
                            .await?;
                        for kv in &kvs {
                            txn.clear(&kv.key);
                            let Some((_, id)) = keyspace::parse_legacy_ready(&kv.key) else {
                                continue;
                            };
                            let tenant = String::from_utf8_lossy(&kv.value).into_owned();
                            if let Some(task) = records::load(txn, &tenant, id).await?
                                && task.status == TaskStatus::Queued
                            {
                                records::make_ready(txn, &task);
                            }
                        }
                        Ok::<_, EngineError>(kvs.len())
                    })
                })
                .await?;
            moved += n;
            if n == 0 {
                return Ok(moved);
            }
        }
    }
}
