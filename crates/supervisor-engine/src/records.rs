//! Reading and writing task records inside a transaction. Every status change goes through
//! [`transition`], which keeps the status index and counters in step and appends the event,
//! so no code path can change a status without leaving its trace.

use serde::{Deserialize, Serialize};
use supervisor_model::{EventKind, Metric, RepoLock, Task, TaskEvent, TaskId, TaskStatus};
use supervisor_store::Transaction;

use crate::EngineError;
use crate::codec::{decode, encode};
use crate::keyspace::{self, Index};

/// Reads a task record (with a read conflict).
pub(crate) async fn load(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<Option<Task>, EngineError> {
    match txn.get(&keyspace::task(tenant, id)).await? {
        Some(bytes) => Ok(Some(decode("task record", &bytes)?)),
        None => Ok(None),
    }
}

/// Reads the records of `tasks` (tenant, id) in one round trip where the store has one,
/// in order, `None` for a task that does not exist: [`load`] on each, or without read
/// conflicts when `snapshot`.
pub(crate) async fn load_many(
    txn: &mut Transaction<'_>,
    tasks: &[(&str, TaskId)],
    snapshot: bool,
) -> Result<Vec<Option<Task>>, EngineError> {
    let keys: Vec<Vec<u8>> = tasks
        .iter()
        .map(|(tenant, id)| keyspace::task(tenant, *id))
        .collect();
    let records = if snapshot {
        txn.get_many_snapshot(&keys).await?
    } else {
        txn.get_many(&keys).await?
    };
    records
        .into_iter()
        .map(|record| {
            record
                .map(|bytes| decode("task record", &bytes))
                .transpose()
        })
        .collect()
}

/// Reads a task record that must exist.
pub(crate) async fn load_existing(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<Task, EngineError> {
    load(txn, tenant, id)
        .await?
        .ok_or(EngineError::NotFound { id })
}

/// Reads a task record with its output and artifacts' content filled in.
pub(crate) async fn load_full(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<Option<Task>, EngineError> {
    let Some(mut task) = load(txn, tenant, id).await? else {
        return Ok(None);
    };
    if let Some(result) = task.result.clone() {
        let output = read_output(txn, &task).await?;
        let mut contents = Vec::with_capacity(result.artifacts.len());
        for a in &result.artifacts {
            contents.push(read_artifact(txn, &task, &a.name, a.size_bytes).await?);
        }
        if let Some(result) = task.result.as_mut() {
            result.output = output;
            for (a, content) in result.artifacts.iter_mut().zip(contents) {
                a.content = content;
            }
        }
    }
    Ok(Some(task))
}

/// Deletes a terminal task and everything kept beside it (output, artifacts, events,
/// lease expiry keys, index entries, its retention entry `expiry`, its idempotency key
/// when that still names it), keeping the status counters in step. The cost ledger,
/// spend and analytics rollups are separate records and stay.
pub(crate) async fn delete(
    txn: &mut Transaction<'_>,
    task: &Task,
    expiry: &[u8],
) -> Result<(), EngineError> {
    debug_assert!(task.status.is_terminal(), "only terminal tasks are deleted");
    let (tenant, id) = (task.tenant.as_str(), task.id);
    txn.clear(&keyspace::task(tenant, id));
    for (begin, end) in [
        keyspace::output_range(tenant, id),
        keyspace::artifacts_of(tenant, id),
        keyspace::events_of(tenant, id),
        keyspace::lease_expiries(id),
    ] {
        txn.clear_range(&begin, &end);
    }
    for key in index_keys(task) {
        txn.clear(&key);
    }
    count_status(txn, tenant, task.status, -1);
    if let Some(key) = &task.idempotency_key {
        let idem = keyspace::idempotency(tenant, key);
        if let Some(bytes) = txn.get(&idem).await?
            && crate::idempotency::Entry::decode(&bytes)?.task == id
        {
            txn.clear(&idem);
        }
    }
    txn.clear(expiry);
    Ok(())
}

/// Writes a task record.
pub(crate) fn put(txn: &mut Transaction<'_>, task: &Task) -> Result<(), EngineError> {
    txn.set(&keyspace::task(&task.tenant, task.id), &encode(task)?);
    Ok(())
}

/// Appends an event to the task's log (the caller writes the record afterwards, which
/// persists the advanced sequence number).
pub(crate) fn append_event(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    now: i64,
    kind: EventKind,
    message: String,
    output: String,
) -> Result<TaskEvent, EngineError> {
    let holder = holder(task);
    append_event_by(txn, task, now, kind, message, output, holder)
}

/// Who holds the task's lease and its current fencing token, as events record them.
fn holder(task: &Task) -> (String, u64) {
    let node = task
        .lease
        .as_ref()
        .map(|l| l.node_id.clone())
        .unwrap_or_default();
    (node, task.fence)
}

/// Appends an event recording `holder` (node, fencing token) as the writer.
fn append_event_by(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    now: i64,
    kind: EventKind,
    message: String,
    output: String,
    (node, fence): (String, u64),
) -> Result<TaskEvent, EngineError> {
    let event = TaskEvent {
        seq: task.next_event_seq,
        at: now,
        kind,
        status: task.status,
        attempt: task.attempt,
        message,
        output,
        node,
        fence,
    };
    txn.set(
        &keyspace::event(&task.tenant, task.id, event.seq),
        &crate::codec::encode_large(&event)?,
    );
    task.next_event_seq += 1;
    Ok(event)
}

/// Adds `delta` to the count of `status`: the cluster's, and the tenant's own (the
/// `default` tenant's count is the cluster's minus every other tenant's, so tasks from
/// before tenants existed count).
fn count_status(txn: &mut Transaction<'_>, tenant: &str, status: TaskStatus, delta: i64) {
    txn.atomic_add(&keyspace::status_counter(status), delta);
    if tenant != supervisor_model::DEFAULT_TENANT {
        txn.atomic_add(&keyspace::tenant_status_counter(tenant, status), delta);
    }
}

/// The list-index entries of a task in its current status (status, type, each label):
/// written when it is made, cleared when it is deleted.
fn index_keys(task: &Task) -> impl Iterator<Item = Vec<u8>> + '_ {
    [
        Index::Status(task.status),
        Index::Type(task.task_type.as_str()),
    ]
    .into_iter()
    .chain(task.labels.iter().map(|l| Index::Label(l)))
    .map(|ix| keyspace::index(&task.tenant, ix, task.id))
}

/// Moves a task to `to`, keeping the status index and counters in step, and appends the
/// event that records it; a task that becomes terminal is added to the analytics rollups
/// ([`crate::rollups`]). Refuses transitions the state machine does not allow.
pub(crate) fn transition(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    to: TaskStatus,
    now: i64,
    kind: EventKind,
    message: String,
) -> Result<TaskEvent, EngineError> {
    let from = task.status;
    if !from.can_become(to) {
        debug_assert!(
            false,
            "illegal transition {from} -> {to} for task {}",
            task.id
        );
        return Err(EngineError::Internal(format!(
            "illegal transition {from} -> {to} for task {}",
            task.id
        )));
    }
    txn.clear(&keyspace::index(&task.tenant, Index::Status(from), task.id));
    txn.set(
        &keyspace::index(&task.tenant, Index::Status(to), task.id),
        &[],
    );
    count_status(txn, &task.tenant, from, -1);
    count_status(txn, &task.tenant, to, 1);
    crate::observe::transition(txn, task, from, to, now);
    if from == TaskStatus::Queued {
        txn.atomic_add(&keyspace::queued_counter(task.priority), -1);
    }
    if to == TaskStatus::Queued {
        txn.atomic_add(&keyspace::queued_counter(task.priority), 1);
    }
    if from == TaskStatus::Running {
        release_holds(txn, task);
        txn.atomic_add(&keyspace::running(&task.tenant), -1);
    }
    if to == TaskStatus::Running {
        txn.atomic_add(&keyspace::running(&task.tenant), 1);
    }
    if to != TaskStatus::Queued {
        task.waiting_for = None;
    }
    // The writer as it was before the transition (a completion clears the lease).
    let writer = holder(task);
    task.status = to;
    task.updated_at = now;
    if to.is_terminal() {
        task.finished_at = Some(now);
        task.lease = None;
        // Any write still carrying an earlier token is now stale.
        task.fence += 1;
        crate::rollups::record_finished(txn, task);
        // The retention sweeper finds it here once its time is up.
        txn.set(
            &keyspace::expiry(keyspace::Expiring::Task, &task.tenant, now, task.id),
            &[],
        );
    }
    append_event_by(txn, task, now, kind, message, String::new(), writer)
}

/// Writes the indexes and counters of a brand-new task (status index included).
pub(crate) fn index_new(txn: &mut Transaction<'_>, task: &Task) {
    for key in index_keys(task) {
        txn.set(&key, &[]);
    }
    count_status(txn, &task.tenant, task.status, 1);
    if task.status == TaskStatus::Queued {
        txn.atomic_add(&keyspace::queued_counter(task.priority), 1);
    }
}

/// Gives back what an attempt held, in the transaction that ends it: its repository lock
/// (the next lease looks at the lock's waiters) and its budget
/// reservations (its real spend was charged by whoever ended it).
fn release_holds(txn: &mut Transaction<'_>, task: &mut Task) {
    let holds = std::mem::take(&mut task.holds);
    if let Some(lock) = &holds.lock {
        txn.clear(&keyspace::lock_holder(&lock.repo, &lock.git_ref, task.id));
        // Dispatchers wake; the next lease looks at the lock's waiters.
        txn.atomic_add(&keyspace::queue_version(), 1);
    }
    if !holds.reservations.is_empty() {
        txn.atomic_add(&keyspace::budget_freed(&task.tenant), 1);
        txn.atomic_add(&keyspace::queue_version(), 1);
    }
    for r in &holds.reservations {
        let (kind, name) = r.scope.parts();
        let reserved =
            |metric: Metric| keyspace::reserved(&task.tenant, kind, name, metric.as_str());
        txn.atomic_add(&reserved(Metric::CostMicros), -(r.cost_micros as i64));
        txn.atomic_add(&reserved(Metric::Tokens), -(r.tokens as i64));
    }
}

/// Records why a queued task is held back and writes it: an `Activity` event when what it
/// waits for changed (`what` maps a reason to the part that names the resource, so
/// amounts that move between looks do not make new events), and `waiting_for` always.
pub(crate) fn note_waiting(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    now: i64,
    why: String,
    what: fn(&str) -> &str,
) -> Result<(), EngineError> {
    if task.waiting_for.as_deref().map(what) != Some(what(&why)) {
        let message = format!("waiting: {why}");
        append_event(txn, task, now, EventKind::Activity, message, String::new())?;
    }
    task.waiting_for = Some(why);
    put(txn, task)
}

/// Puts a task in its tenant's ready range and wakes dispatchers watching the queue.
pub(crate) fn make_ready(txn: &mut Transaction<'_>, task: &Task) {
    txn.set(
        &keyspace::ready(&task.tenant, task.priority.rank(), task.id),
        &[],
    );
    txn.set(&keyspace::ready_tenant(&task.tenant), &[]);
    txn.atomic_add(&keyspace::queue_version(), 1);
}

/// Sends a task back to the queue: `QUEUED` with a `Requeued` event, a ready entry, and
/// the record written. The caller has already disarmed its timers and cleared its lease.
pub(crate) fn requeue(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    now: i64,
    message: String,
) -> Result<(), EngineError> {
    transition(
        txn,
        task,
        TaskStatus::Queued,
        now,
        EventKind::Requeued,
        message,
    )?;
    make_ready(txn, task);
    put(txn, task)
}

/// Cancels an unfinished task inside the caller's transaction: takes it out of the queue
/// or its timers, tells the node running it (through that node's inbox), advances its
/// fencing token and records the event. The caller checked that it is not terminal.
pub(crate) fn cancel(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    now: i64,
    reason: String,
) -> Result<(), EngineError> {
    match task.status {
        TaskStatus::Queued => {
            txn.clear(&keyspace::ready(
                &task.tenant,
                task.priority.rank(),
                task.id,
            ));
            // It may be parked behind a repository lock.
            if let Some(lock) = RepoLock::for_task(task) {
                txn.clear(&keyspace::lock_waiter(&lock.repo, &lock.git_ref, task.id));
            }
            // Or by a budget.
            txn.clear(&keyspace::budget_waiter(&task.tenant, task.id));
        }
        TaskStatus::Running => {
            if let Some(lease) = &task.lease {
                txn.set(&keyspace::inbox(&lease.node_id, &task.tenant, task.id), &[]);
                txn.atomic_add(&keyspace::inbox_version(&lease.node_id), 1);
            }
        }
        _ => {}
    }
    disarm_timers(txn, task);
    task.next_attempt_at = None;
    task.error = Some(reason.clone());
    transition(
        txn,
        task,
        TaskStatus::Cancelled,
        now,
        EventKind::Cancelled,
        reason,
    )?;
    put(txn, task)
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TimerKind {
    /// A retry waiting to vest.
    Retry,
    /// A lease to check for expiry.
    Lease,
    /// A workflow run's deadline (the timer's id is the run's).
    RunDeadline,
    /// A queued task parked by a resource manager (a budget) goes back to the queue.
    Unpark,
}

/// The value of a timer key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TimerEntry {
    pub tenant: String,
    pub kind: TimerKind,
    /// For lease timers: the fence of the lease it guards.
    pub fence: u64,
    /// For lease timers: the node and epoch that hold it.
    pub node: String,
    pub epoch: u64,
}

impl TimerEntry {
    /// A timer that is not a lease's: a retry, an unpark, a run's deadline.
    pub(crate) fn waiting(tenant: &str, kind: TimerKind, fence: u64) -> TimerEntry {
        TimerEntry {
            tenant: tenant.to_string(),
            kind,
            fence,
            node: String::new(),
            epoch: 0,
        }
    }

    /// The timer guarding `lease` of a task of `tenant`.
    pub(crate) fn lease(tenant: &str, lease: &supervisor_model::Lease) -> TimerEntry {
        TimerEntry {
            tenant: tenant.to_string(),
            kind: TimerKind::Lease,
            fence: lease.fence,
            node: lease.node_id.clone(),
            epoch: lease.node_epoch,
        }
    }
}

pub(crate) fn arm_timer(
    txn: &mut Transaction<'_>,
    due: i64,
    id: TaskId,
    entry: &TimerEntry,
) -> Result<(), EngineError> {
    txn.set(&keyspace::timer(due, id), &encode(entry)?);
    Ok(())
}

/// A renewed lease's expiry, kept beside the task record (see [`keyspace::lease_expiry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RenewedLease {
    /// When the lease lapses unless renewed again (unix microseconds).
    pub expires_at: i64,
}

/// When `lease` of task `id` lapses: its last renewal's expiry, or the one it was taken
/// with. Read with a conflict: a renewal and a reaper deciding on the same lease
/// serialize on it.
pub(crate) async fn lease_expires_at(
    txn: &mut Transaction<'_>,
    id: TaskId,
    lease: &supervisor_model::Lease,
) -> Result<i64, EngineError> {
    let stored = txn.get(&keyspace::lease_expiry(id, lease.fence)).await?;
    current_expiry(stored.as_deref(), lease)
}

/// The expiry of `lease` given what its expiry key holds (`None`: never renewed).
pub(crate) fn current_expiry(
    stored: Option<&[u8]>,
    lease: &supervisor_model::Lease,
) -> Result<i64, EngineError> {
    match stored {
        Some(bytes) => Ok(decode::<RenewedLease>("lease expiry", bytes)?.expires_at),
        None => Ok(lease.expires_at),
    }
}

/// Moves the timer of `lease` (task `id`, tenant `tenant`) from `old` to `due` and records
/// the new expiry beside the task, leaving the task record alone.
pub(crate) fn extend_lease(
    txn: &mut Transaction<'_>,
    (tenant, id): (&str, TaskId),
    lease: &supervisor_model::Lease,
    old: i64,
    due: i64,
) -> Result<(), EngineError> {
    txn.clear(&keyspace::timer(old, id));
    arm_timer(txn, due, id, &TimerEntry::lease(tenant, lease))?;
    let renewed = RenewedLease { expires_at: due };
    txn.set(&keyspace::lease_expiry(id, lease.fence), &encode(&renewed)?);
    Ok(())
}

/// Disarms whatever timer the task's current state armed (its lease or its retry).
///
/// A renewed lease's timer and expiry key are not touched (that would need a read, and
/// make the renewal conflict with this write): the timer is left to come due, and the
/// reaper then drops both, since the lease they guarded is gone.
pub(crate) fn disarm_timers(txn: &mut Transaction<'_>, task: &Task) {
    if let Some(lease) = &task.lease {
        txn.clear(&keyspace::timer(lease.expires_at, task.id));
    }
    if let Some(at) = task.next_attempt_at {
        txn.clear(&keyspace::timer(at, task.id));
    }
}

/// Writes `text` (compressed when long: [`crate::codec::pack_text`]) in chunks of at most
/// `chunk_bytes` under `[begin, end)` (cleared first),
/// keying chunk `i` with `key(i)`; returns its length.
fn write_chunks(
    txn: &mut Transaction<'_>,
    (begin, end): (Vec<u8>, Vec<u8>),
    key: impl Fn(u32) -> Vec<u8>,
    text: &str,
    chunk_bytes: usize,
) -> u64 {
    txn.clear_range(&begin, &end);
    let stored = crate::codec::pack_text(text);
    for (i, chunk) in stored.chunks(chunk_bytes.max(1)).enumerate() {
        txn.set(&key(i as u32), chunk);
    }
    text.len() as u64
}

/// Reads back what [`write_chunks`] wrote under `[begin, end)`.
async fn read_chunks(
    txn: &mut Transaction<'_>,
    (begin, end): (Vec<u8>, Vec<u8>),
    expected: u64,
    what: &str,
) -> Result<String, EngineError> {
    if expected == 0 {
        return Ok(String::new());
    }
    let chunks = txn
        .get_range(
            &begin,
            &end,
            supervisor_store::RangeOptions::new().snapshot(),
        )
        .await?;
    let mut bytes = Vec::with_capacity(expected as usize);
    for kv in chunks {
        bytes.extend_from_slice(&kv.value);
    }
    crate::codec::unpack_text(what, &bytes)
}

/// Stores output text in chunks under the value limit; returns its length.
pub(crate) fn write_output(
    txn: &mut Transaction<'_>,
    task: &Task,
    output: &str,
    chunk_bytes: usize,
) -> u64 {
    let range = keyspace::output_range(&task.tenant, task.id);
    let key = |i| keyspace::output_chunk(&task.tenant, task.id, i);
    write_chunks(txn, range, key, output, chunk_bytes)
}

/// Reads output text back from its chunks.
pub(crate) async fn read_output(
    txn: &mut Transaction<'_>,
    task: &Task,
) -> Result<String, EngineError> {
    let range = keyspace::output_range(&task.tenant, task.id);
    read_chunks(
        txn,
        range,
        task.output_bytes,
        &format!("output of task {}", task.id),
    )
    .await
}

/// Stores an artifact's content in chunks; returns its length.
pub(crate) fn write_artifact(
    txn: &mut Transaction<'_>,
    task: &Task,
    name: &str,
    content: &str,
    chunk_bytes: usize,
) -> u64 {
    let range = keyspace::artifact_range(&task.tenant, task.id, name);
    let key = |i| keyspace::artifact_chunk(&task.tenant, task.id, name, i);
    write_chunks(txn, range, key, content, chunk_bytes)
}

/// Reads an artifact's content back.
pub(crate) async fn read_artifact(
    txn: &mut Transaction<'_>,
    task: &Task,
    name: &str,
    size: u64,
) -> Result<String, EngineError> {
    let range = keyspace::artifact_range(&task.tenant, task.id, name);
    read_chunks(
        txn,
        range,
        size,
        &format!("artifact {name} of task {}", task.id),
    )
    .await
}
