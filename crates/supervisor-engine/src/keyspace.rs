//! The engine's keyspace: every key it writes, built in one place with the tuple layer.
//!
//! Layout (all under the root subspace `("sv",)`):
//! - `("task", tenant, id)` → task record
//! - `("out", tenant, id, chunk)` → output text in chunks under the value limit
//! - `("art", tenant, id, name, chunk)` → an artifact's content, chunked the same way
//! - `("ev", tenant, id, seq)` → task event
//! - `("idem", tenant, key)` → the task it made and a fingerprint of the request
//!   (`idempotency::Entry`; older entries hold the bare task id)
//! - `("wf", tenant, id, chunk)` → workflow run record, chunked; `("wfev", tenant, id,
//!   seq)` → its events
//! - `("thread", tenant, id)` → conversation thread; `("thmsg", tenant, id, seq)` → its
//!   messages (`threads`)
//! - `("sched", tenant, name)` → schedule; `("singleton", duty)` → who holds a duty
//! - `("rq", tenant, 4 - priority, id)` → empty: a tenant's tasks waiting to be leased,
//!   highest priority first, oldest first within a priority (ids are time-ordered);
//!   `("rqt", tenant)` → empty: the tenant may have some (cleared by a lease that found
//!   its queue empty). `("ready", 4 - priority, id)` → tenant is the single queue of
//!   earlier versions, moved into these when a node registers
//! - `("vt", tenant)` / `("vtsys",)` → fair-queueing virtual times (`resources::fair`)
//! - `("lock", repo, ref, id)` → the holder of a repository lock; `("lockwait", repo, ref,
//!   id)` → tenant and mode: a task parked until the lock is free (leases look at the
//!   waiting list, oldest first, and send back to the queue those whose lock is free)
//! - `("budget", tenant, kind, name)` → budget; `("spend", tenant, kind, name, period,
//!   metric)` → settled spend; `("reserved", tenant, kind, name, metric)` → what running
//!   attempts reserved; `("budgetgate", tenant, kind, name)` → written by every lease that
//!   reserves, so reservations of one budget are serialized; `("budgetsoft", tenant,
//!   kind, name)` → attempts started past the soft limit; `("bwait", tenant, id)` → empty:
//!   a task parked because a budget is spent; `("bfree", tenant)` → counter of
//!   reservations given back, `("bfseen", tenant)` → its value when the tenant's parked
//!   tasks were last looked at again (a lease does so when they differ)
//! - `("qs", bucket, granted_at, node)` → count: a slice of a cluster-wide rate limit
//!   (`provider:<name>:rpm`...) granted to a node, settled to what it used
//! - `("qc", bucket, node)` → epoch and count: concurrency permits of a cluster-wide
//!   limit held by a node (void once that epoch is fenced or left)
//! - `("quota", tenant)` → its fair-queueing weight, running limit and lock policy;
//!   `("running", tenant)` → its running attempts; `("quotagate", tenant)` → written by
//!   every lease that counts against its running limit
//! - `("expt", tenant, finished_micros, id)` / `("expw", tenant, finished_micros, id)` →
//!   empty: a terminal task / ended workflow run, oldest first per tenant, for the
//!   retention sweeper (`retention`); `("expmig", tenant, status)` → the task id up to
//!   which tasks finished before these entries existed have been given one (empty once
//!   all have), `("expmigdone",)` → empty: all tenants' have
//! - `("timer", due_micros, id)` → timer entry: a retry waiting to vest or a lease to check
//! - `("ix", "status"|"type"|"label", tenant, value, id)` → empty: list indexes
//! - `("stat", "status", status)` / `("stat", "provider", name, field)` → counters
//! - `("qver",)` → bumped whenever a task becomes ready (dispatchers watch it)
//! - `("node", id)` → node record (epoch, state, addresses); `("nodebeat", id)` → its
//!   heartbeat revision and load; `("inbox", node, tenant, id)` → cancel notice,
//!   `("inboxver", node)` → bumped on each notice (the node watches it)
//! - `("tenant", name)` → tenant record; `("apikey", id)` → API key record (a hash, never
//!   the secret); `("apikeyuse", id)` → its last use; `("authkey",)` → the per-cluster key
//!   of the key hash; `("audit", at_micros, nonce)` → audit log entry
//! - `("stat", "tenant", tenant, status)` → per-tenant status counters (not for
//!   `default`, whose count is the cluster's minus every other tenant's)
//! - `("stat", "queued", priority)` → queued tasks per priority (metrics only)
//! - `("rollup", "minute"|"hour"|"day", tenant, period_ms, type, specialty, provider,
//!   size_class, repository, field)` → counter: analytics rollups (`analytics`); minute
//!   rows are added to by completions, hour and day rows by the roller
//! - `("rollupf", tenant, minute_ms, type, specialty, provider, size_class, repository,
//!   field)` → counter: how much of a minute row the roller already folded into its hour
//!   and day rows
//! - `("rollupdirty", minute_ms, tenant)` → empty: a completion added to that minute
//!   since the roller last folded it; `("rollupmark",)` → every minute before this one
//!   (ms) was folded at least once

use supervisor_model::{Granularity, RollupDims, TaskId, TaskStatus};
use supervisor_store::keys::{Subspace, pack};

/// Root of every key the engine writes.
fn root() -> Subspace {
    Subspace::from_bytes(pack(&("sv",)))
}

pub(crate) fn task(tenant: &str, id: TaskId) -> Vec<u8> {
    root().pack(&("task", tenant, id.to_string()))
}

pub(crate) fn task_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("task", tenant)).range()
}

pub(crate) fn output_chunk(tenant: &str, id: TaskId, chunk: u32) -> Vec<u8> {
    root().pack(&("out", tenant, id.to_string(), chunk as i64))
}

pub(crate) fn output_range(tenant: &str, id: TaskId) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("out", tenant, id.to_string())).range()
}

pub(crate) fn artifact_chunk(tenant: &str, id: TaskId, name: &str, chunk: u32) -> Vec<u8> {
    root().pack(&("art", tenant, id.to_string(), name, chunk as i64))
}

pub(crate) fn artifact_range(tenant: &str, id: TaskId, name: &str) -> (Vec<u8>, Vec<u8>) {
    root()
        .subspace(&("art", tenant, id.to_string(), name))
        .range()
}

/// Every artifact of a task.
pub(crate) fn artifacts_of(tenant: &str, id: TaskId) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("art", tenant, id.to_string())).range()
}

/// Every event of a task.
pub(crate) fn events_of(tenant: &str, id: TaskId) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("ev", tenant, id.to_string())).range()
}

pub(crate) fn event(tenant: &str, id: TaskId, seq: u64) -> Vec<u8> {
    root().pack(&("ev", tenant, id.to_string(), seq as i64))
}

/// Events of a task with `seq > after`.
pub(crate) fn events_after(tenant: &str, id: TaskId, after: u64) -> (Vec<u8>, Vec<u8>) {
    let (_, end) = root().subspace(&("ev", tenant, id.to_string())).range();
    seqs_after(after, end, |seq| event(tenant, id, seq))
}

/// The range `[key(after + 1), end)`, or an empty range when no sequence number the
/// tuple layer stores (an `i64`) lies above `after`: a `u64` above `i64::MAX` would wrap
/// to a negative number and sort before every event.
fn seqs_after(after: u64, end: Vec<u8>, key: impl Fn(u64) -> Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    match after
        .checked_add(1)
        .filter(|first| i64::try_from(*first).is_ok())
    {
        Some(first) => (key(first), end),
        None => (end.clone(), end),
    }
}

pub(crate) fn idempotency(tenant: &str, key: &str) -> Vec<u8> {
    root().pack(&("idem", tenant, key))
}

pub(crate) fn ready(tenant: &str, priority_rank: u8, id: TaskId) -> Vec<u8> {
    root().pack(&("rq", tenant, 4 - priority_rank as i64, id.to_string()))
}

/// One tenant's ready tasks.
pub(crate) fn ready_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("rq", tenant)).range()
}

pub(crate) fn parse_ready(key: &[u8]) -> Option<TaskId> {
    let (_, _, _, id): (String, String, i64, String) = root().unpack(key).ok()?;
    id.parse().ok()
}

/// The marker of a tenant that may have ready tasks.
pub(crate) fn ready_tenant(tenant: &str) -> Vec<u8> {
    root().pack(&("rqt", tenant))
}

pub(crate) fn ready_tenants() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("rqt",)).range()
}

pub(crate) fn parse_ready_tenant(key: &[u8]) -> Option<String> {
    let (_, tenant): (String, String) = root().unpack(key).ok()?;
    Some(tenant)
}

/// The single ready queue of earlier versions (value: the tenant).
pub(crate) fn legacy_ready_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("ready",)).range()
}

/// A ready entry as earlier versions wrote it.
#[cfg(test)]
pub(crate) fn legacy_ready(priority_rank: u8, id: TaskId) -> Vec<u8> {
    root().pack(&("ready", 4 - priority_rank as i64, id.to_string()))
}

pub(crate) fn parse_legacy_ready(key: &[u8]) -> Option<(u8, TaskId)> {
    let (_, rank, id): (String, i64, String) = root().unpack(key).ok()?;
    Some((u8::try_from(4 - rank).ok()?, id.parse().ok()?))
}

pub(crate) fn virtual_time(tenant: &str) -> Vec<u8> {
    root().pack(&("vt", tenant))
}

pub(crate) fn system_virtual_time() -> Vec<u8> {
    root().pack(&("vtsys",))
}

pub(crate) fn lock_holder(repo: &str, git_ref: &str, id: TaskId) -> Vec<u8> {
    root().pack(&("lock", repo, git_ref, id.to_string()))
}

/// Every holder of one repository and ref.
pub(crate) fn lock_holders(repo: &str, git_ref: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("lock", repo, git_ref)).range()
}

/// Every lock holder of the cluster.
pub(crate) fn all_lock_holders() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("lock",)).range()
}

pub(crate) fn lock_waiter(repo: &str, git_ref: &str, id: TaskId) -> Vec<u8> {
    root().pack(&("lockwait", repo, git_ref, id.to_string()))
}

pub(crate) fn lock_waiters(repo: &str, git_ref: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("lockwait", repo, git_ref)).range()
}

pub(crate) fn all_lock_waiters() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("lockwait",)).range()
}

/// The repository, ref and task of a holder or waiter key.
pub(crate) fn parse_lock_entry(key: &[u8]) -> Option<(String, String, TaskId)> {
    let (_, repo, git_ref, id): (String, String, String, String) = root().unpack(key).ok()?;
    Some((repo, git_ref, id.parse().ok()?))
}

pub(crate) fn budget(tenant: &str, kind: &str, name: &str) -> Vec<u8> {
    root().pack(&("budget", tenant, kind, name))
}

pub(crate) fn budgets(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("budget", tenant)).range()
}

pub(crate) fn spend(tenant: &str, kind: &str, name: &str, period: &str, metric: &str) -> Vec<u8> {
    root().pack(&("spend", tenant, kind, name, period, metric))
}

pub(crate) fn reserved(tenant: &str, kind: &str, name: &str, metric: &str) -> Vec<u8> {
    root().pack(&("reserved", tenant, kind, name, metric))
}

pub(crate) fn budget_gate(tenant: &str, kind: &str, name: &str) -> Vec<u8> {
    root().pack(&("budgetgate", tenant, kind, name))
}

pub(crate) fn budget_soft(tenant: &str, kind: &str, name: &str) -> Vec<u8> {
    root().pack(&("budgetsoft", tenant, kind, name))
}

pub(crate) fn budget_waiter(tenant: &str, id: TaskId) -> Vec<u8> {
    root().pack(&("bwait", tenant, id.to_string()))
}

pub(crate) fn budget_waiters() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("bwait",)).range()
}

/// Every task of `tenant` parked because a budget is spent.
pub(crate) fn budget_waiters_of(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("bwait", tenant)).range()
}

/// Counts the reservations `tenant`'s attempts gave back; a lease that sees it move
/// looks at the tenant's budget waiters again.
pub(crate) fn budget_freed(tenant: &str) -> Vec<u8> {
    root().pack(&("bfree", tenant))
}

/// The value of [`budget_freed`] when the tenant's waiters were last looked at.
pub(crate) fn budget_freed_seen(tenant: &str) -> Vec<u8> {
    root().pack(&("bfseen", tenant))
}

pub(crate) fn budgets_freed() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("bfree",)).range()
}

pub(crate) fn parse_budget_freed(key: &[u8]) -> Option<String> {
    let (_, tenant): (String, String) = root().unpack(key).ok()?;
    Some(tenant)
}

pub(crate) fn parse_budget_waiter(key: &[u8]) -> Option<(String, TaskId)> {
    let (_, tenant, id): (String, String, String) = root().unpack(key).ok()?;
    Some((tenant, id.parse().ok()?))
}

pub(crate) fn slice(bucket: &str, granted_at: i64, node: &str) -> Vec<u8> {
    root().pack(&("qs", bucket, granted_at, node))
}

pub(crate) fn slices(bucket: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("qs", bucket)).range()
}

/// Where slices granted at or after `at` begin.
pub(crate) fn slices_since(bucket: &str, at: i64) -> Vec<u8> {
    root().subspace(&("qs", bucket, at)).range().0
}

pub(crate) fn parse_slice(key: &[u8]) -> Option<(i64, String)> {
    let (_, _, at, node): (String, String, i64, String) = root().unpack(key).ok()?;
    Some((at, node))
}

pub(crate) fn permits(bucket: &str, node: &str) -> Vec<u8> {
    root().pack(&("qc", bucket, node))
}

pub(crate) fn all_permits(bucket: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("qc", bucket)).range()
}

pub(crate) fn parse_permits(key: &[u8]) -> Option<String> {
    let (_, _, node): (String, String, String) = root().unpack(key).ok()?;
    Some(node)
}

pub(crate) fn quota(tenant: &str) -> Vec<u8> {
    root().pack(&("quota", tenant))
}

pub(crate) fn quotas() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("quota",)).range()
}

pub(crate) fn parse_quota(key: &[u8]) -> Option<String> {
    let (_, tenant): (String, String) = root().unpack(key).ok()?;
    Some(tenant)
}

pub(crate) fn running(tenant: &str) -> Vec<u8> {
    root().pack(&("running", tenant))
}

pub(crate) fn quota_gate(tenant: &str) -> Vec<u8> {
    root().pack(&("quotagate", tenant))
}

/// Where the current expiry of the lease with fencing token `fence` on task `id` lives
/// once renewed: renewals write this small key (and move the lease timer) instead of
/// rewriting the task record, so they never conflict with the task's progress or
/// completion, and a late renewal of an earlier lease cannot touch a later one's.
pub(crate) fn lease_expiry(id: TaskId, fence: u64) -> Vec<u8> {
    root().pack(&("leasex", id.to_string(), fence))
}

/// Which records the retention sweeper deletes: terminal tasks or ended workflow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiring {
    Task,
    Run,
}

impl Expiring {
    fn name(self) -> &'static str {
        match self {
            Expiring::Task => "expt",
            Expiring::Run => "expw",
        }
    }
}

/// The retention entry of a task or run that ended at `ended_micros`.
pub(crate) fn expiry(kind: Expiring, tenant: &str, ended_micros: i64, id: TaskId) -> Vec<u8> {
    root().pack(&(kind.name(), tenant, ended_micros, id.to_string()))
}

/// Every retention entry of `kind` (all tenants), for finding the tenants that have some.
pub(crate) fn expiries(kind: Expiring) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&(kind.name(),)).range()
}

/// `tenant`'s retention entries of `kind` for records that ended before `before_micros`.
pub(crate) fn expiries_before(
    kind: Expiring,
    tenant: &str,
    before_micros: i64,
) -> (Vec<u8>, Vec<u8>) {
    let (begin, _) = root().subspace(&(kind.name(), tenant)).range();
    (begin, root().pack(&(kind.name(), tenant, before_micros)))
}

/// Every retention entry of `kind` of `tenant`.
pub(crate) fn expiries_of(kind: Expiring, tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&(kind.name(), tenant)).range()
}

/// The tenant, end time and id of a retention entry.
pub(crate) fn parse_expiry(key: &[u8]) -> Option<(String, i64, TaskId)> {
    let (_, tenant, at, id): (String, String, i64, String) = root().unpack(key).ok()?;
    Some((tenant, at, id.parse().ok()?))
}

/// How far the giving of retention entries to tasks that finished before they existed
/// has come, for one tenant and terminal status: the last task id handled.
pub(crate) fn expiry_backfill(tenant: &str, status: TaskStatus) -> Vec<u8> {
    root().pack(&("expmig", tenant, status.as_str()))
}

/// Every tenant that has a status index (a task, even a deleted one, once had one).
pub(crate) fn status_indexes() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("ix", "status")).range()
}

/// Every status index entry of `tenant`.
pub(crate) fn status_index_of(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("ix", "status", tenant)).range()
}

/// Set once every task that finished before retention entries existed has one.
pub(crate) fn expiry_backfill_done() -> Vec<u8> {
    root().pack(&("expmigdone",))
}

/// The tenant of a status index key.
pub(crate) fn parse_status_index_tenant(key: &[u8]) -> Option<String> {
    let (_, _, tenant, _, _): (String, String, String, String, String) = root().unpack(key).ok()?;
    Some(tenant)
}

/// Every lease expiry key of a task.
pub(crate) fn lease_expiries(id: TaskId) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("leasex", id.to_string())).range()
}

pub(crate) fn timer(due_micros: i64, id: TaskId) -> Vec<u8> {
    root().pack(&("timer", due_micros, id.to_string()))
}

/// Timers due at or before `now`.
pub(crate) fn timers_due(now_micros: i64) -> (Vec<u8>, Vec<u8>) {
    let (begin, _) = root().subspace(&("timer",)).range();
    (begin, root().pack(&("timer", now_micros.saturating_add(1))))
}

pub(crate) fn timer_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("timer",)).range()
}

pub(crate) fn parse_timer(key: &[u8]) -> Option<(i64, TaskId)> {
    let (_, due, id): (String, i64, String) = root().unpack(key).ok()?;
    Some((due, id.parse().ok()?))
}

/// The list indexes a task appears in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Index<'a> {
    Status(TaskStatus),
    Type(&'a str),
    Label(&'a str),
}

impl Index<'_> {
    fn parts(&self) -> (&'static str, String) {
        match self {
            Index::Status(s) => ("status", s.as_str().to_string()),
            Index::Type(t) => ("type", t.to_string()),
            Index::Label(l) => ("label", l.to_string()),
        }
    }
}

pub(crate) fn index(tenant: &str, ix: Index<'_>, id: TaskId) -> Vec<u8> {
    let (name, value) = ix.parts();
    root().pack(&("ix", name, tenant, value, id.to_string()))
}

pub(crate) fn index_range(tenant: &str, ix: Index<'_>) -> (Vec<u8>, Vec<u8>) {
    let (name, value) = ix.parts();
    root().subspace(&("ix", name, tenant, value)).range()
}

/// The task id at the end of an index key.
pub(crate) fn parse_index(key: &[u8]) -> Option<TaskId> {
    let (_, _, _, _, id): (String, String, String, String, String) = root().unpack(key).ok()?;
    id.parse().ok()
}

/// The task id at the end of a primary task key.
pub(crate) fn parse_task(key: &[u8]) -> Option<TaskId> {
    let (_, _, id): (String, String, String) = root().unpack(key).ok()?;
    id.parse().ok()
}

pub(crate) fn status_counter(status: TaskStatus) -> Vec<u8> {
    root().pack(&("stat", "status", status.as_str()))
}

/// Queued tasks of one priority, cluster-wide (kept by every move into or out of
/// `queued`; a gauge of the metrics, nothing decides on it).
pub(crate) fn queued_counter(priority: supervisor_model::Priority) -> Vec<u8> {
    root().pack(&("stat", "queued", priority.as_str()))
}

/// The tenant a per-tenant counter key counts for.
pub(crate) fn parse_tenant_of_status_counter(key: &[u8]) -> Option<String> {
    let (_, _, tenant, _): (String, String, String, String) = root().unpack(key).ok()?;
    Some(tenant)
}

pub(crate) fn provider_counter(provider: &str, field: &str) -> Vec<u8> {
    root().pack(&("stat", "provider", provider, field))
}

pub(crate) fn queue_version() -> Vec<u8> {
    root().pack(&("qver",))
}

pub(crate) fn node(id: &str) -> Vec<u8> {
    root().pack(&("node", id))
}

pub(crate) fn node_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("node",)).range()
}

pub(crate) fn parse_node(key: &[u8]) -> Option<String> {
    let (_, id): (String, String) = root().unpack(key).ok()?;
    Some(id)
}

pub(crate) fn node_beat(id: &str) -> Vec<u8> {
    root().pack(&("nodebeat", id))
}

pub(crate) fn node_beat_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("nodebeat",)).range()
}

pub(crate) fn parse_node_beat(key: &[u8]) -> Option<String> {
    let (_, id): (String, String) = root().unpack(key).ok()?;
    Some(id)
}

pub(crate) fn inbox(node: &str, tenant: &str, id: TaskId) -> Vec<u8> {
    root().pack(&("inbox", node, tenant, id.to_string()))
}

pub(crate) fn inbox_range(node: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("inbox", node)).range()
}

pub(crate) fn parse_inbox(key: &[u8]) -> Option<(String, TaskId)> {
    let (_, _, tenant, id): (String, String, String, String) = root().unpack(key).ok()?;
    Some((tenant, id.parse().ok()?))
}

pub(crate) fn inbox_version(node: &str) -> Vec<u8> {
    root().pack(&("inboxver", node))
}

pub(crate) fn ledger(tenant: &str, day: &str, provider: &str, field: &str) -> Vec<u8> {
    root().pack(&("ledger", tenant, day, provider, field))
}

/// Ledger entries of a tenant for days `from..=to` (`YYYY-MM-DD`).
pub(crate) fn ledger_days(tenant: &str, from: &str, to: &str) -> (Vec<u8>, Vec<u8>) {
    let begin = root().pack(&("ledger", tenant, from));
    let (_, end) = root().subspace(&("ledger", tenant, to)).range();
    (begin, end)
}

pub(crate) fn parse_ledger(key: &[u8]) -> Option<(String, String, String)> {
    let (_, _, day, provider, field): (String, String, String, String, String) =
        root().unpack(key).ok()?;
    Some((day, provider, field))
}

/// Chunk `chunk` of a workflow run's record (a run's record may exceed one value).
pub(crate) fn workflow_chunk(tenant: &str, id: TaskId, chunk: u32) -> Vec<u8> {
    root().pack(&("wf", tenant, id.to_string(), chunk as i64))
}

/// Every chunk of one run's record.
pub(crate) fn workflow_chunks(tenant: &str, id: TaskId) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("wf", tenant, id.to_string())).range()
}

/// The run and chunk number of a workflow record key.
pub(crate) fn parse_workflow_chunk(key: &[u8]) -> Option<(TaskId, u32)> {
    let (_, _, id, chunk): (String, String, String, i64) = root().unpack(key).ok()?;
    Some((id.parse().ok()?, u32::try_from(chunk).ok()?))
}

pub(crate) fn workflow_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("wf", tenant)).range()
}

/// Every event of a workflow run.
pub(crate) fn workflow_events(tenant: &str, id: TaskId) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("wfev", tenant, id.to_string())).range()
}

pub(crate) fn workflow_event(tenant: &str, id: TaskId, seq: u64) -> Vec<u8> {
    root().pack(&("wfev", tenant, id.to_string(), seq as i64))
}

/// Events of a run with `seq > after`.
pub(crate) fn workflow_events_after(tenant: &str, id: TaskId, after: u64) -> (Vec<u8>, Vec<u8>) {
    let (_, end) = root().subspace(&("wfev", tenant, id.to_string())).range();
    seqs_after(after, end, |seq| workflow_event(tenant, id, seq))
}

pub(crate) fn thread(tenant: &str, id: TaskId) -> Vec<u8> {
    root().pack(&("thread", tenant, id.to_string()))
}

/// A tenant's threads, in id (creation) order.
pub(crate) fn thread_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("thread", tenant)).range()
}

pub(crate) fn thread_message(tenant: &str, id: TaskId, seq: u64) -> Vec<u8> {
    root().pack(&("thmsg", tenant, id.to_string(), seq as i64))
}

/// A thread's messages with `seq > after`.
pub(crate) fn thread_messages_after(tenant: &str, id: TaskId, after: u64) -> (Vec<u8>, Vec<u8>) {
    let (_, end) = root().subspace(&("thmsg", tenant, id.to_string())).range();
    seqs_after(after, end, |seq| thread_message(tenant, id, seq))
}

pub(crate) fn schedule(tenant: &str, name: &str) -> Vec<u8> {
    root().pack(&("sched", tenant, name))
}

pub(crate) fn schedule_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("sched", tenant)).range()
}

pub(crate) fn all_schedules() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("sched",)).range()
}

/// Every singleton duty's lease.
pub(crate) fn singletons() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("singleton",)).range()
}

pub(crate) fn singleton(duty: &str) -> Vec<u8> {
    root().pack(&("singleton", duty))
}

pub(crate) fn tenant(name: &str) -> Vec<u8> {
    root().pack(&("tenant", name))
}

pub(crate) fn tenant_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("tenant",)).range()
}

pub(crate) fn api_key(id: &str) -> Vec<u8> {
    root().pack(&("apikey", id))
}

pub(crate) fn api_key_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("apikey",)).range()
}

pub(crate) fn api_key_use(id: &str) -> Vec<u8> {
    root().pack(&("apikeyuse", id))
}

pub(crate) fn auth_hash_key() -> Vec<u8> {
    root().pack(&("authkey",))
}

pub(crate) fn audit(at_micros: i64, nonce: u64) -> Vec<u8> {
    root().pack(&("audit", at_micros, nonce))
}

pub(crate) fn audit_range() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("audit",)).range()
}

/// Where entries at or after `at_micros` begin.
pub(crate) fn audit_since(at_micros: i64) -> Vec<u8> {
    root().subspace(&("audit", at_micros)).range().0
}

pub(crate) fn tenant_status_counter(tenant: &str, status: TaskStatus) -> Vec<u8> {
    root().pack(&("stat", "tenant", tenant, status.as_str()))
}

pub(crate) fn tenant_status_counters() -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("stat", "tenant")).range()
}

/// The status a per-tenant counter key counts.
pub(crate) fn parse_tenant_status_counter(key: &[u8]) -> Option<TaskStatus> {
    let (_, _, _, status): (String, String, String, String) = root().unpack(key).ok()?;
    TaskStatus::ALL
        .iter()
        .copied()
        .find(|s| s.as_str() == status)
}

/// The dimensions of a rollup row, as its key holds them (after the period).
type RollupTail<'a> = (&'a str, &'a str, &'a str, i64, i64, &'a str);

fn rollup_tail<'a>(dims: &'a RollupDims, field: &'a str) -> RollupTail<'a> {
    (
        dims.task_type.as_str(),
        dims.specialty.as_str(),
        &dims.provider,
        i64::from(dims.size_class),
        i64::from(dims.repository),
        field,
    )
}

/// A counter of one analytics rollup row (`field`: `finished`, ..., or `lat<bucket>`).
pub(crate) fn rollup(
    granularity: Granularity,
    period_ms: i64,
    dims: &RollupDims,
    field: &str,
) -> Vec<u8> {
    let (t, s, p, c, r, f) = rollup_tail(dims, field);
    root().pack(&(
        "rollup",
        granularity.as_str(),
        dims.tenant.as_str(),
        period_ms,
        t,
        s,
        p,
        c,
        r,
        f,
    ))
}

/// A tenant's rollup rows of periods starting in `[from_ms, to_ms)`.
pub(crate) fn rollup_periods(
    granularity: Granularity,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> (Vec<u8>, Vec<u8>) {
    (
        root().pack(&("rollup", granularity.as_str(), tenant, from_ms)),
        root().pack(&("rollup", granularity.as_str(), tenant, to_ms)),
    )
}

/// Every tenant's rollup rows of one granularity.
pub(crate) fn rollup_tenants(granularity: Granularity) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("rollup", granularity.as_str())).range()
}

/// Every rollup row of one tenant and granularity.
pub(crate) fn rollup_tenant(granularity: Granularity, tenant: &str) -> (Vec<u8>, Vec<u8>) {
    root()
        .subspace(&("rollup", granularity.as_str(), tenant))
        .range()
}

/// A tenant's rollup rows of periods starting before `before_ms`.
pub(crate) fn rollup_before(
    granularity: Granularity,
    tenant: &str,
    before_ms: i64,
) -> (Vec<u8>, Vec<u8>) {
    (
        rollup_tenant(granularity, tenant).0,
        root().pack(&("rollup", granularity.as_str(), tenant, before_ms)),
    )
}

/// A rollup row's key: `("rollup", granularity, tenant, period, type, specialty,
/// provider, size class, repository, field)`.
type RollupKey = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    String,
);

/// Rollup dimensions as a key spells them; `None` for a name this version does not know.
fn rollup_dims(
    tenant: String,
    task_type: &str,
    specialty: &str,
    provider: String,
    size_class: i64,
    repository: i64,
) -> Option<RollupDims> {
    Some(RollupDims {
        tenant,
        task_type: task_type.parse().ok()?,
        specialty: specialty.parse().ok()?,
        provider,
        size_class: u8::try_from(size_class).ok()?,
        repository: repository != 0,
    })
}

/// The tenant of a rollup key, whatever names its dimensions hold.
pub(crate) fn parse_rollup_tenant(key: &[u8]) -> Option<String> {
    let (_, _, tenant, ..): RollupKey = root().unpack(key).ok()?;
    Some(tenant)
}

/// A rollup key's period start, dimensions and field; `None` for a key of another shape
/// or with a name this version does not know (a newer task type...).
pub(crate) fn parse_rollup(key: &[u8]) -> Option<(i64, RollupDims, String)> {
    let (_, _, tenant, period, t, s, provider, class, repo, field): RollupKey =
        root().unpack(key).ok()?;
    Some((
        period,
        rollup_dims(tenant, &t, &s, provider, class, repo)?,
        field,
    ))
}

/// How much of the minute row `(minute_ms, dims, field)` was folded into hours and days.
pub(crate) fn rollup_folded(minute_ms: i64, dims: &RollupDims, field: &str) -> Vec<u8> {
    let (t, s, p, c, r, f) = rollup_tail(dims, field);
    root().pack(&("rollupf", dims.tenant.as_str(), minute_ms, t, s, p, c, r, f))
}

/// The folded amounts of one tenant's minute `minute_ms`.
pub(crate) fn rollup_folded_minute(tenant: &str, minute_ms: i64) -> (Vec<u8>, Vec<u8>) {
    root().subspace(&("rollupf", tenant, minute_ms)).range()
}

/// The folded amounts of one tenant's minutes before `before_ms`.
pub(crate) fn rollup_folded_before(tenant: &str, before_ms: i64) -> (Vec<u8>, Vec<u8>) {
    (
        root().subspace(&("rollupf", tenant)).range().0,
        root().pack(&("rollupf", tenant, before_ms)),
    )
}

/// A folded-amount key's minute, dimensions and field (like [`parse_rollup`]).
pub(crate) fn parse_rollup_folded(key: &[u8]) -> Option<(i64, RollupDims, String)> {
    type Key = (
        String,
        String,
        i64,
        String,
        String,
        String,
        i64,
        i64,
        String,
    );
    let (_, tenant, minute, t, s, provider, class, repo, field): Key = root().unpack(key).ok()?;
    Some((
        minute,
        rollup_dims(tenant, &t, &s, provider, class, repo)?,
        field,
    ))
}

/// The mark of a tenant's minute that completions added to since it was last folded.
pub(crate) fn rollup_dirty(minute_ms: i64, tenant: &str) -> Vec<u8> {
    root().pack(&("rollupdirty", minute_ms, tenant))
}

/// The marks of minutes before `before_ms`.
pub(crate) fn rollup_dirty_before(before_ms: i64) -> (Vec<u8>, Vec<u8>) {
    (
        root().subspace(&("rollupdirty",)).range().0,
        root().pack(&("rollupdirty", before_ms)),
    )
}

pub(crate) fn parse_rollup_dirty(key: &[u8]) -> Option<(i64, String)> {
    let (_, minute, tenant): (String, i64, String) = root().unpack(key).ok()?;
    Some((minute, tenant))
}

/// Every minute before the one this key holds (ms) was folded at least once.
pub(crate) fn rollup_watermark() -> Vec<u8> {
    root().pack(&("rollupmark",))
}
