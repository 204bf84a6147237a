//! The repository lock manager: exclusive and shared locks on a repository and ref, held
//! by an attempt under its fencing token, taken in the lease transaction and given back in
//! the one that ends the attempt (`records::transition`). A task that cannot have its lock
//! is parked on the lock's waiting list; a release wakes the list at the next lease.

use serde::{Deserialize, Serialize};
use supervisor_model::{EventKind, LockMode, LockPolicy, Priority, RepoLock, Task, TaskId};
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
    txn.set(
        &keyspace::lock_waiter(&lock.repo, &lock.git_ref, task.id),
        task.tenant.as_bytes(),
    );
    let why = describe_holders(lock, holders);
    if task.waiting_for.as_deref() != Some(why.as_str()) {
        let message = format!("waiting: {why}");
        records::append_event(txn, task, now, EventKind::Activity, message, String::new())?;
        task.waiting_for = Some(why);
    }
    records::put(txn, task)
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

/// Sends the waiters of locks released since the last lease back to the queue.
pub(crate) async fn wake_released(txn: &mut Transaction<'_>) -> Result<usize, EngineError> {
    let (begin, end) = keyspace::locks_freed();
    let freed = txn
        .get_range(&begin, &end, RangeOptions::new().snapshot().limit(64))
        .await?;
    let mut woken = 0;
    for kv in freed {
        txn.add_read_conflict_key(&kv.key);
        txn.clear(&kv.key);
        let Some((repo, git_ref)) = keyspace::parse_lock_freed(&kv.key) else {
            continue;
        };
        let (wbegin, wend) = keyspace::lock_waiters(&repo, &git_ref);
        for waiter in txn.get_range(&wbegin, &wend, RangeOptions::new()).await? {
            txn.clear(&waiter.key);
            let Some((_, _, id)) = keyspace::parse_lock_entry(&waiter.key) else {
                continue;
            };
            let tenant = String::from_utf8_lossy(&waiter.value).into_owned();
            if let Some(task) = records::load(txn, &tenant, id).await?
                && task.status == supervisor_model::TaskStatus::Queued
            {
                records::make_ready(txn, &task);
                woken += 1;
            }
        }
    }
    Ok(woken)
}
