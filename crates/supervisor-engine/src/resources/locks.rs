//! The repository lock manager: exclusive and shared locks on a repository and ref, held
//! by an attempt under its fencing token, taken in the lease transaction and given back in
//! the one that ends the attempt (`records::transition`). A task that cannot have its lock
//! is parked on the lock's waiting list; leases send waiters whose lock is free back to
//! the queue, oldest first.

use serde::{Deserialize, Serialize};
use supervisor_model::{LockMode, LockPolicy, Priority, RepoLock, Task, TaskId};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::{decode, encode};
use crate::{EngineError, keyspace, records};

/// The value of a lock holder's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HolderEntry {
    pub tenant: String,
    pub mode: LockMode,
    /// The fencing token of the attempt that holds it.
    pub fence: u64,
    pub priority: Priority,
    pub node: String,
    pub since: i64,
}

/// What became of a lock request.
pub(crate) enum Acquire {
    /// The lock is the task's (its holder key is written).
    Held,
    /// Somebody holds it: the task is parked on the lock's waiting list.
    Parked,
}

/// The holders of `lock`'s repository and ref that `mode` cannot share with (read with a
/// conflict, so a release racing this transaction makes it retry).
async fn conflicting(
    txn: &mut Transaction<'_>,
    lock: &RepoLock,
    me: TaskId,
) -> Result<Vec<(TaskId, HolderEntry)>, EngineError> {
    let (begin, end) = keyspace::lock_holders(&lock.repo, &lock.git_ref);
    let mut out = Vec::new();
    for kv in txn.get_range(&begin, &end, RangeOptions::new()).await? {
        let Some((_, _, id)) = keyspace::parse_lock_entry(&kv.key) else {
            continue;
        };
        let entry: HolderEntry = decode("lock holder", &kv.value)?;
        if id != me && !lock.mode.compatible(entry.mode) {
            out.push((id, entry));
        }
    }
    Ok(out)
}

/// Who holds what, in words, for a waiting task's state.
fn describe_holders(lock: &RepoLock, holders: &[(TaskId, HolderEntry)]) -> String {
    let names: Vec<String> = holders
        .iter()
        .take(3)
        .map(|(id, h)| format!("task {id} ({}, on node {})", h.mode.as_str(), h.node))
        .collect();
    let more = holders.len().saturating_sub(3);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "repository {} ({} lock) is held by {}{more}",
        lock.describe(),
        lock.mode.as_str(),
        names.join(", ")
    )
}

/// Refuses a submit that would wait for a held lock when the tenant's policy is `reject`.
pub(crate) async fn refuse_if_held(
    txn: &mut Transaction<'_>,
    task: &Task,
    policy: LockPolicy,
) -> Result<(), EngineError> {
    if policy != LockPolicy::Reject {
        return Ok(());
    }
    let Some(lock) = RepoLock::for_task(task) else {
        return Ok(());
    };
    let holders = conflicting(txn, &lock, task.id).await?;
    if holders.is_empty() {
        return Ok(());
    }
    Err(EngineError::FailedPrecondition(format!(
        "{}; this tenant's lock policy is reject, so the task was not queued: submit it again once they end, or ask an admin for the queue policy (`supervisor quota set --lock-policy queue`)",
        describe_holders(&lock, &holders)
    )))
}

/// Takes `lock` for `task` (leased by `node` under the task's next fencing token), or
/// parks the task. Under the `preempt` policy a task takes the lock from holders of
/// lower priority, which go back to the queue without their attempt counting.
pub(crate) async fn acquire(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    lock: &RepoLock,
    policy: LockPolicy,
    node: &str,
    now: i64,
) -> Result<Acquire, EngineError> {
    let holders = conflicting(txn, lock, task.id).await?;
    let preempts = policy == LockPolicy::Preempt
        && !holders.is_empty()
        && holders
            .iter()
            .all(|(_, h)| h.priority.rank() < task.priority.rank());
    if !holders.is_empty() && !preempts {
        park(txn, task, lock, &holders, now).await?;
        return Ok(Acquire::Parked);
    }
    for (id, holder) in &holders {
        preempt(txn, *id, holder, task, lock, now).await?;
    }
    let entry = HolderEntry {
        tenant: task.tenant.clone(),
        mode: lock.mode,
        fence: task.fence + 1,
        priority: task.priority,
        node: node.to_string(),
        since: now,
    };
    txn.set(
        &keyspace::lock_holder(&lock.repo, &lock.git_ref, task.id),
        &encode(&entry)?,
    );
    Ok(Acquire::Held)
}

/// Parks a claimed task on the lock's waiting list; its event says who holds what (once
/// per change of holders, so waking and parking again does not repeat it).
async fn park(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    lock: &RepoLock,
    holders: &[(TaskId, HolderEntry)],
    now: i64,
) -> Result<(), EngineError> {
    let waiter = WaiterEntry {
        tenant: task.tenant.clone(),
        mode: lock.mode,
    };
    txn.set(
        &keyspace::lock_waiter(&lock.repo, &lock.git_ref, task.id),
        &encode(&waiter)?,
    );
    // The holders are the resource: a new event when they change.
    records::note_waiting(txn, task, now, describe_holders(lock, holders), |why| why)
}

/// Hands a lock holder of lower priority back to the queue: its lease ends here (the
/// attempt does not count), its node is told to stop it, and its lock is released by the
/// transition.
async fn preempt(
    txn: &mut Transaction<'_>,
    id: TaskId,
    holder: &HolderEntry,
    by: &Task,
    lock: &RepoLock,
    now: i64,
) -> Result<(), EngineError> {
    let Some(mut victim) = records::load(txn, &holder.tenant, id).await? else {
        txn.clear(&keyspace::lock_holder(&lock.repo, &lock.git_ref, id));
        return Ok(());
    };
    let current = victim.status == supervisor_model::TaskStatus::Running
        && victim
            .lease
            .as_ref()
            .is_some_and(|l| l.fence == holder.fence);
    if !current {
        // A holder entry that outlived its attempt (never expected: the transition that
        // ends an attempt clears it). Drop it.
        txn.clear(&keyspace::lock_holder(&lock.repo, &lock.git_ref, id));
        return Ok(());
    }
    if let Some(lease) = &victim.lease {
        txn.set(&keyspace::inbox(&lease.node_id, &victim.tenant, id), &[]);
        txn.atomic_add(&keyspace::inbox_version(&lease.node_id), 1);
    }
    records::disarm_timers(txn, &victim);
    victim.lease = None;
    victim.attempt = victim.attempt.saturating_sub(1);
    let message = format!(
        "preempted by task {} (priority {}) which needs repository {}; requeued, the attempt does not count",
        by.id,
        by.priority.as_str(),
        lock.describe()
    );
    records::requeue(txn, &mut victim, now, message)
}

/// The value of a waiter's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WaiterEntry {
    pub tenant: String,
    pub mode: LockMode,
}

/// Waiters read per range read, and range reads per lease, when looking at the waiting
/// lists.
const WAITERS_PER_READ: usize = 64;
const READS_PER_LEASE: usize = 16;

/// Sends back to the queue the waiters whose lock is free now, oldest first per lock: the
/// first waiter of a free lock, and after a shared one every shared waiter behind it. A
/// lock whose first waiter cannot go is skipped whole, so a long queue on one busy lock
/// does not hide the others. Reads as snapshots (a waiter sent back too early is parked
/// again by its lease), so ending attempts never make a lease retry; nothing to read
/// when nobody waits.
pub(crate) async fn wake_waiters(txn: &mut Transaction<'_>) -> Result<usize, EngineError> {
    let (mut cursor, end) = keyspace::all_lock_waiters();
    let mut woken = 0;
    'reads: for _ in 0..READS_PER_LEASE {
        let waiting = txn
            .get_range(
                &cursor,
                &end,
                RangeOptions::new().snapshot().limit(WAITERS_PER_READ),
            )
            .await?;
        let Some(last) = waiting.last() else {
            break;
        };
        let mut next = last.key.clone();
        next.push(0);
        // The lock being looked at and the modes it is held in (woken waiters included).
        let mut current: Option<(String, String, Vec<LockMode>)> = None;
        for kv in &waiting {
            let Some((repo, git_ref, id)) = keyspace::parse_lock_entry(&kv.key) else {
                continue;
            };
            let waiter: WaiterEntry = decode("lock waiter", &kv.value)?;
            if !current
                .as_ref()
                .is_some_and(|(r, g, _)| *r == repo && *g == git_ref)
            {
                let (hbegin, hend) = keyspace::lock_holders(&repo, &git_ref);
                let mut modes = Vec::new();
                for holder in txn
                    .get_range(&hbegin, &hend, RangeOptions::new().snapshot())
                    .await?
                {
                    let entry: HolderEntry = decode("lock holder", &holder.value)?;
                    modes.push(entry.mode);
                }
                current = Some((repo.clone(), git_ref.clone(), modes));
            }
            let Some((_, _, modes)) = current.as_mut() else {
                continue;
            };
            if !modes.iter().all(|m| waiter.mode.compatible(*m)) {
                // Queue order: nobody overtakes a waiter that cannot go yet. Go on with
                // the next lock's list.
                cursor = keyspace::lock_waiters(&repo, &git_ref).1;
                continue 'reads;
            }
            // Woken: from now on it counts as a holder for the waiters behind it.
            modes.push(waiter.mode);
            txn.clear(&kv.key);
            if let Some(task) = records::load(txn, &waiter.tenant, id).await?
                && task.status == supervisor_model::TaskStatus::Queued
            {
                records::make_ready(txn, &task);
                woken += 1;
            }
        }
        cursor = next;
    }
    Ok(woken)
}
