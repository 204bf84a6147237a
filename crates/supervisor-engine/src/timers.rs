//! Housekeeping over the timer range: retries that vested go back to the queue, leases
//! that lapsed are taken back, and leases held by an earlier incarnation of a node are
//! reclaimed at once when it restarts.

use supervisor_model::{EventKind, Task, TaskStatus};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::decode;
use crate::keyspace;
use crate::nodes::NodeIdentity;
use crate::records::{self, TimerEntry, TimerKind};
use crate::{Engine, EngineError};

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerSweep {
    /// Retries requeued.
    pub retries_vested: usize,
    /// Lapsed or orphaned leases taken back (requeued without counting the attempt, or
    /// failed once the task was abandoned too often).
    pub leases_reclaimed: usize,
    /// Workflow runs stopped because their deadline passed.
    pub runs_timed_out: usize,
    /// When the earliest remaining timer is due (unix microseconds), if any.
    pub next_due: Option<i64>,
    /// The sweep was on behalf of the reaper duty, which has passed to another node:
    /// nothing was done.
    pub lost_duty: bool,
}

/// The singleton duty of sweeping timers (vesting retries, taking back lapsed leases,
/// ending overdue workflow runs): one node at a time does it.
pub const REAPER_DUTY: &str = "reaper";

/// Takes back a running task whose lease can no longer be trusted because its node
/// stopped answering. The attempt does not count against `max_attempts` (the task did
/// nothing wrong): it is requeued, and counted in `abandoned_attempts` instead, so a task
/// that brings its node down every time fails once it has been abandoned more than
/// `max_attempts * ABANDONED_ATTEMPTS_PER_ATTEMPT` times.
async fn reclaim(
    txn: &mut Transaction<'_>,
    task: &mut Task,
    now: i64,
    (reason, why): (&'static str, &str),
    cfg: &crate::EngineConfig,
) -> Result<(), EngineError> {
    crate::observe::reclaimed(txn, reason);
    if let Some(lease) = &task.lease {
        // Conflicts with a renewal of this lease racing the reclaim (it read this key).
        txn.clear(&keyspace::lease_expiry(task.id, lease.fence));
    }
    records::disarm_timers(txn, task);
    let node = task
        .lease
        .as_ref()
        .map(|l| l.node_id.clone())
        .unwrap_or_default();
    task.lease = None;
    let attempt = task.attempt;
    task.attempt = task.attempt.saturating_sub(1);
    task.abandoned_attempts = task.abandoned_attempts.saturating_add(1);
    let allowed = task
        .max_attempts
        .saturating_mul(supervisor_model::ABANDONED_ATTEMPTS_PER_ATTEMPT);
    if task.abandoned_attempts <= allowed {
        let message = format!(
            "attempt {attempt} abandoned: {why}; the attempt does not count (node {node} stopped answering); requeued ({} of {allowed} abandoned attempts allowed)",
            task.abandoned_attempts
        );
        records::requeue(txn, task, now, message)
    } else {
        let message = format!(
            "attempt {attempt} abandoned: {why} (node {node} stopped answering); failed: {} attempts were abandoned by nodes that stopped answering, over the limit of {allowed} ({} per allowed attempt), so the task may be what brings its nodes down",
            task.abandoned_attempts,
            supervisor_model::ABANDONED_ATTEMPTS_PER_ATTEMPT
        );
        task.error = Some(message.clone());
        records::transition(
            txn,
            task,
            TaskStatus::Failed,
            now,
            EventKind::Failed,
            message,
        )?;
        records::put(txn, task)?;
        crate::workflows::on_task_terminal(txn, task, now, cfg).await
    }
}

/// Whether the lease timer `entry`, due `at`, still guards the lease of `task` (the
/// task record, `None` if it is gone): the task runs under the same lease (fencing
/// token), not since renewed past `at`. A timer that guards nothing (left by a renewal
/// that raced the end of its lease, or moved by a later renewal) is the caller's to
/// clear; the lease's expiry key goes here once the lease is over.
async fn guards_lease(
    txn: &mut Transaction<'_>,
    task: Option<&Task>,
    id: supervisor_model::TaskId,
    entry: &TimerEntry,
    at: i64,
) -> Result<bool, EngineError> {
    let current = task
        .filter(|t| t.status == TaskStatus::Running)
        .and_then(|t| t.lease.as_ref())
        .filter(|l| l.fence == entry.fence);
    match current {
        Some(lease) => Ok(records::lease_expires_at(txn, id, lease).await? == at),
        None => {
            txn.clear(&keyspace::lease_expiry(id, entry.fence));
            Ok(false)
        }
    }
}

impl Engine {
    /// Handles up to `limit` timers that are due: vests retries and reclaims lapsed leases.
    pub async fn sweep_timers(&self, limit: usize) -> Result<TimerSweep, EngineError> {
        self.sweep(limit, None).await
    }

    /// Like [`Engine::sweep_timers`], on behalf of the holder of the reaper duty
    /// ([`REAPER_DUTY`]) granted with `fence`: sweeps nothing once the duty passed on.
    pub async fn sweep_timers_as_reaper(
        &self,
        limit: usize,
        fence: u64,
    ) -> Result<TimerSweep, EngineError> {
        self.sweep(limit, Some(fence)).await
    }

    async fn sweep(&self, limit: usize, duty: Option<u64>) -> Result<TimerSweep, EngineError> {
        let now = self.now_micros();
        let cfg = &self.inner.cfg;
        let (begin, end) = keyspace::timers_due(now);
        let (all_begin, all_end) = keyspace::timer_range();
        let sweep = self
            .inner
            .db
            .run(|txn| {
                let (begin, end) = (begin.clone(), end.clone());
                let (all_begin, all_end) = (all_begin.clone(), all_end.clone());
                Box::pin(async move {
                    let mut sweep = TimerSweep::default();
                    if let Some(fence) = duty
                        && !crate::schedules::holds_duty(txn, REAPER_DUTY, fence, now).await?
                    {
                        sweep.lost_duty = true;
                        return Ok(sweep);
                    }
                    let due = txn
                        .get_range(
                            &begin,
                            &end,
                            RangeOptions::new().snapshot().limit(limit.max(1)),
                        )
                        .await?;
                    for kv in &due {
                        txn.add_read_conflict_key(&kv.key);
                        txn.clear(&kv.key);
                        let Some((at, id)) = keyspace::parse_timer(&kv.key) else {
                            continue;
                        };
                        let entry: TimerEntry = decode("timer entry", &kv.value)?;
                        if entry.kind == TimerKind::RunDeadline {
                            if crate::workflows::on_deadline(txn, &entry.tenant, id, at, now, cfg)
                                .await?
                            {
                                sweep.runs_timed_out += 1;
                            }
                            continue;
                        }
                        let Some(mut task) = records::load(txn, &entry.tenant, id).await? else {
                            if entry.kind == TimerKind::Lease {
                                guards_lease(txn, None, id, &entry, at).await?;
                            }
                            continue;
                        };
                        match entry.kind {
                            TimerKind::RunDeadline => {}
                            TimerKind::Retry => {
                                if task.status == TaskStatus::RetryWait
                                    && task.next_attempt_at == Some(at)
                                {
                                    task.next_attempt_at = None;
                                    let message = format!(
                                        "retry vested; attempt {} queued",
                                        task.attempt + 1
                                    );
                                    records::requeue(txn, &mut task, now, message)?;
                                    sweep.retries_vested += 1;
                                }
                            }
                            TimerKind::Unpark => {
                                if task.status == TaskStatus::Queued
                                    && task.next_attempt_at == Some(at)
                                {
                                    task.next_attempt_at = None;
                                    records::make_ready(txn, &task);
                                    records::put(txn, &task)?;
                                    sweep.retries_vested += 1;
                                }
                            }
                            TimerKind::Lease => {
                                let live = guards_lease(txn, Some(&task), id, &entry, at).await?;
                                if live {
                                    reclaim(
                                        txn,
                                        &mut task,
                                        now,
                                        ("expired", "lease lapsed without renewal"),
                                        cfg,
                                    )
                                    .await?;
                                    sweep.leases_reclaimed += 1;
                                }
                            }
                        }
                    }
                    // The earliest timer left (after this transaction's own clears).
                    let next = txn
                        .get_range(
                            &all_begin,
                            &all_end,
                            RangeOptions::new().snapshot().limit(1),
                        )
                        .await?;
                    sweep.next_due = next
                        .first()
                        .and_then(|kv| keyspace::parse_timer(&kv.key))
                        .map(|(at, _)| at);
                    Ok::<_, EngineError>(sweep)
                })
            })
            .await?;
        if sweep.retries_vested + sweep.leases_reclaimed > 0 {
            self.inner.ready.notify_one();
        }
        Ok(sweep)
    }

    /// Requeues at once every task leased by an earlier epoch of `node` (its previous
    /// process is gone: it crashed or was killed). Returns how many were reclaimed.
    pub async fn reclaim_orphaned_leases(&self, node: &NodeIdentity) -> Result<usize, EngineError> {
        self.reclaim_leases_of(node, ("restarted", "node restarted"))
            .await
    }

    /// Requeues every task leased by `node.id` under an epoch before `node.epoch`, saying
    /// `why` in each task's log.
    pub(crate) async fn reclaim_leases_of(
        &self,
        node: &NodeIdentity,
        (reason, why): (&'static str, &str),
    ) -> Result<usize, EngineError> {
        let now = self.now_micros();
        let cfg = &self.inner.cfg;
        let (begin, end) = keyspace::timer_range();
        let mut total = 0;
        let mut cursor = begin;
        loop {
            let (reclaimed, next) = self
                .inner
                .db
                .run(|txn| {
                    let (cursor, end) = (cursor.clone(), end.clone());
                    Box::pin(async move {
                        let kvs = txn
                            .get_range(&cursor, &end, RangeOptions::new().snapshot().limit(500))
                            .await?;
                        let next = if kvs.len() == 500 {
                            kvs.last()
                                .map(|kv| supervisor_store::keys::key_after(&kv.key))
                        } else {
                            None
                        };
                        let mut reclaimed = 0;
                        for kv in &kvs {
                            let entry: TimerEntry = decode("timer entry", &kv.value)?;
                            if entry.kind != TimerKind::Lease
                                || entry.node != node.id
                                || entry.epoch >= node.epoch
                            {
                                continue;
                            }
                            let Some((at, id)) = keyspace::parse_timer(&kv.key) else {
                                continue;
                            };
                            txn.add_read_conflict_key(&kv.key);
                            let mut task = records::load(txn, &entry.tenant, id).await?;
                            let live = guards_lease(txn, task.as_ref(), id, &entry, at).await?;
                            if let Some(task) = task.as_mut().filter(|_| live) {
                                let why = format!(
                                    "{why} (epoch {} replaced {})",
                                    node.epoch, entry.epoch
                                );
                                reclaim(txn, task, now, (reason, &why), cfg).await?;
                                reclaimed += 1;
                            }
                            // The timer found (a renewal may have moved it from where
                            // the task record says) goes too.
                            txn.clear(&kv.key);
                        }
                        Ok::<_, EngineError>((reclaimed, next))
                    })
                })
                .await?;
            total += reclaimed;
            match next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        if total > 0 {
            self.inner.ready.notify_one();
        }
        Ok(total)
    }
}
