//! The runner's side of the lease protocol: lease a batch of ready tasks, stream progress,
//! finish, renew. Every write after the lease carries the fencing token and is refused when
//! the token is stale, so a task is never completed twice even if two nodes ran it.

use std::time::Duration;

use supervisor_model::{AttemptRecord, EventKind, Task, TaskId, TaskResult, TaskStatus};
use supervisor_store::{Priority, RangeOptions, Watch};

use crate::keyspace;
use crate::ledger;
use crate::nodes::EpochCheck;
use crate::records::{self, TimerEntry, TimerKind};
use crate::{Engine, EngineError, Inner};

/// Leases renewed per transaction by [`Engine::renew`].
const RENEW_CHUNK: usize = 64;
/// Renewal transactions [`Engine::renew`] runs at once (the store's system lane has four
/// connections on PostgreSQL).
const RENEWS_AT_ONCE: usize = 3;

/// Names a running task and the lease under which a write is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// Tenant of the task.
    pub tenant: String,
    /// The task.
    pub id: TaskId,
    /// The fencing token of the lease.
    pub fence: u64,
}

/// A task this node now holds a lease on.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    /// The task as leased (status `Running`, attempt already counted).
    pub task: Task,
    /// The reference every runner write must carry.
    pub task_ref: TaskRef,
}

/// The outcome of [`Engine::lease`].
pub struct LeaseBatch {
    /// Tasks now leased to the caller.
    pub tasks: Vec<LeasedTask>,
    /// Fires when more tasks may have become ready since this lease's snapshot, so a
    /// dispatcher that found nothing can sleep on it without missing a submit.
    pub ready_watch: Watch,
    /// Ready work was held back (a tenant at its running limit, repository tasks this
    /// node declined): lease again soon, as no commit may wake the watch.
    pub held_back: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It produced a result.
    Succeeded(TaskResult),
    /// It failed. `retryable` failures are retried with backoff while attempts remain.
    Failed {
        /// What went wrong.
        error: String,
        /// A short category (`rate_limited`, `timeout`, `panicked`...).
        kind: String,
        /// Whether another attempt may succeed.
        retryable: bool,
        /// The earliest the provider asked to be called again; the next attempt waits
        /// at least this long.
        retry_after: Option<Duration>,
    },
}

/// Something streamed by a running attempt, recorded as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streamed {
    /// Output text (an `Output` event).
    Output(String),
    /// A line about what the agent did (an `Activity` event).
    Activity(String),
}

/// A finished attempt, as reported by the runner.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The task and lease.
    pub task_ref: TaskRef,
    /// The provider that ran it (for the durable per-provider counters).
    pub provider: String,
    /// The model that answered, if any.
    pub model: String,
    /// Tokens the attempt used (zero if the provider reported none).
    pub usage: supervisor_model::Usage,
    /// What the attempt cost, in millionths of a dollar.
    pub cost_micros: u64,
    /// What was streamed since the last progress write, recorded before the outcome.
    pub trailing: Vec<Streamed>,
    /// How it ended.
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub(crate) enum RunnerWrite {
    Progress {
        task_ref: TaskRef,
        items: Vec<Streamed>,
    },
    Finish(Box<Finish>),
}

/// What became of a runner write.
#[derive(Debug, Clone, PartialEq)]
pub enum RunnerWriteResult {
    /// Written; the task's status after the write.
    Accepted(TaskStatus),
    /// Refused because the lease is no longer this runner's (the task was cancelled,
    /// its lease lapsed and another runner took it, or it already finished).
    Refused(String),
}

/// The events streamed pieces make: one per activity line, and one per run of output
/// pieces between them (their text joined), so a flush of many small pieces costs one
/// event, not one each.
fn events_of(streamed: &[Streamed]) -> Vec<(EventKind, String, String)> {
    let mut events: Vec<(EventKind, String, String)> = Vec::new();
    for piece in streamed {
        match piece {
            Streamed::Output(t) if t.is_empty() => {}
            Streamed::Output(t) => match events.last_mut() {
                Some((EventKind::Output, _, text)) => text.push_str(t),
                _ => events.push((EventKind::Output, String::new(), t.clone())),
            },
            Streamed::Activity(m) => events.push((EventKind::Activity, m.clone(), String::new())),
        }
    }
    events
}

pub(crate) async fn write_batch(
    inner: &Inner,
    items: Vec<RunnerWrite>,
) -> Result<Vec<Result<RunnerWriteResult, EngineError>>, EngineError> {
    let now = inner.clock.now_micros();
    let jitter: Vec<f64> = items.iter().map(|_| rand::random::<f64>()).collect();
    let items = &items;
    let jitter = &jitter;
    let cfg = &inner.cfg;
    let (results, armed_retry) = inner
        .db
        .run(|txn| {
            Box::pin(async move {
                txn.set_priority(Priority::System);
                let mut out = Vec::with_capacity(items.len());
                let mut armed_retry = false;
                // Workflow steps that ended: their runs advance once, after the batch.
                let mut finished_steps = Vec::new();
                let mut epochs = EpochCheck::default();
                // Every record the batch writes, read in one round trip; an item after
                // another of the same task reads that one's write instead.
                let refs: Vec<&TaskRef> = items
                    .iter()
                    .map(|item| match item {
                        RunnerWrite::Progress { task_ref, .. } => task_ref,
                        RunnerWrite::Finish(f) => &f.task_ref,
                    })
                    .collect();
                let ids: Vec<(&str, TaskId)> =
                    refs.iter().map(|r| (r.tenant.as_str(), r.id)).collect();
                let mut prefetched = records::load_many(txn, &ids, false).await?;
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let task_ref = refs[i];
                    let record = if seen.insert(task_ref.id) {
                        prefetched[i].take()
                    } else {
                        records::load(txn, &task_ref.tenant, task_ref.id).await?
                    };
                    let Some(mut task) = record else {
                        out.push(Ok(RunnerWriteResult::Refused(format!(
                            "task {} does not exist",
                            task_ref.id
                        ))));
                        continue;
                    };
                    let mut refusal = stale(&task, task_ref.fence);
                    if refusal.is_none()
                        && let Some(lease) = &task.lease
                    {
                        refusal = epochs
                            .refusal(txn, &lease.node_id, lease.node_epoch)
                            .await?;
                    }
                    if let Some(reason) = refusal {
                        if let RunnerWrite::Finish(f) = item {
                            txn.atomic_add(&keyspace::provider_counter(&f.provider, "refused"), 1);
                            crate::observe::refused(txn, "finish");
                        } else {
                            crate::observe::refused(txn, "progress");
                        }
                        out.push(Ok(RunnerWriteResult::Refused(reason)));
                        continue;
                    }
                    let streamed = match item {
                        RunnerWrite::Progress { items, .. } => items,
                        RunnerWrite::Finish(f) => &f.trailing,
                    };
                    for (kind, message, output) in events_of(streamed) {
                        records::append_event(txn, &mut task, now, kind, message, output)?;
                    }
                    if let RunnerWrite::Finish(f) = item {
                        armed_retry |= finish(txn, &mut task, f, now, jitter[i], cfg)?;
                    }
                    records::put(txn, &task)?;
                    if task.status.is_terminal()
                        && (task.workflow.is_some() || task.thread.is_some())
                    {
                        finished_steps.push(task.clone());
                    }
                    out.push(Ok(RunnerWriteResult::Accepted(task.status)));
                }
                crate::workflows::on_tasks_terminal(txn, &finished_steps, now, cfg).await?;
                Ok::<_, EngineError>((out, armed_retry))
            })
        })
        .await?;
    if armed_retry {
        inner.timers.notify_one();
    }
    Ok(results)
}

/// The task `task_ref` leased, taken back from its runner without counting the attempt:
/// its timers disarmed, its lease dropped. `Err` says why the runner may no longer hand
/// it back (gone, another lease, a fenced node).
async fn take_back(
    txn: &mut supervisor_store::Transaction<'_>,
    task_ref: &TaskRef,
) -> Result<Result<Task, String>, EngineError> {
    let Some(mut task) = records::load(txn, &task_ref.tenant, task_ref.id).await? else {
        return Ok(Err(format!("task {} does not exist", task_ref.id)));
    };
    if let Some(why) = stale(&task, task_ref.fence) {
        return Ok(Err(why));
    }
    if let Some(lease) = &task.lease
        && let Some(why) = EpochCheck::default()
            .refusal(txn, &lease.node_id, lease.node_epoch)
            .await?
    {
        return Ok(Err(why));
    }
    records::disarm_timers(txn, &task);
    task.lease = None;
    task.attempt = task.attempt.saturating_sub(1);
    Ok(Ok(task))
}

/// Why a write under `fence` must be refused, if it must.
fn stale(task: &Task, fence: u64) -> Option<String> {
    if task.status != TaskStatus::Running {
        return Some(format!(
            "task {} {}, no longer running under this lease",
            task.id,
            task.status.predicate()
        ));
    }
    match &task.lease {
        Some(lease) if lease.fence == fence => None,
        Some(lease) => Some(format!(
            "stale fencing token {fence} for task {}: the current lease (token {}) belongs to node {}",
            task.id, lease.fence, lease.node_id
        )),
        None => Some(format!("task {} has no lease", task.id)),
    }
}

/// Applies an attempt's outcome: records the attempt, charges its cost to the task and
/// the ledger, then succeeds, schedules a retry or fails. Returns whether a retry timer
/// was armed.
fn finish(
    txn: &mut supervisor_store::Transaction<'_>,
    task: &mut Task,
    f: &Finish,
    now: i64,
    jitter: f64,
    cfg: &crate::EngineConfig,
) -> Result<bool, EngineError> {
    records::disarm_timers(txn, task);
    let outcome_name = match &f.outcome {
        Outcome::Succeeded(_) => "succeeded".to_string(),
        Outcome::Failed { kind, .. } => kind.clone(),
    };
    task.attempts.push(AttemptRecord {
        attempt: task.attempt,
        provider: f.provider.clone(),
        model: f.model.clone(),
        outcome: outcome_name,
        usage: f.usage,
        cost_micros: f.cost_micros,
        finished_at: now,
    });
    task.cost_micros = task.cost_micros.saturating_add(f.cost_micros);
    if !f.provider.is_empty() {
        // Attempts that never reached a provider (no route, agent panic) cost nothing.
        ledger::charge(txn, &task.tenant, &f.provider, now, &f.usage, f.cost_micros);
    }
    ledger::charge_budgets(txn, task, now, &f.usage, f.cost_micros);
    match &f.outcome {
        Outcome::Succeeded(result) => {
            let mut stored = result.clone();
            task.output_bytes =
                records::write_output(txn, task, &result.output, cfg.output_chunk_bytes);
            stored.output = String::new();
            let mut seen = std::collections::HashSet::new();
            stored.artifacts.retain(|a| seen.insert(a.name.clone()));
            stored.artifacts.truncate(supervisor_model::MAX_ARTIFACTS);
            for artifact in &mut stored.artifacts {
                artifact.size_bytes = records::write_artifact(
                    txn,
                    task,
                    &artifact.name,
                    &artifact.content,
                    cfg.output_chunk_bytes,
                );
                artifact.content = String::new();
            }
            let message = format!(
                "succeeded on attempt {} via {} ({} in / {} out tokens)",
                task.attempt,
                result.provider,
                result.usage.input_tokens,
                result.usage.output_tokens
            );
            task.result = Some(stored);
            task.error = None;
            records::transition(
                txn,
                task,
                TaskStatus::Succeeded,
                now,
                EventKind::Succeeded,
                message,
            )?;
            let counter = |field| keyspace::provider_counter(&f.provider, field);
            txn.atomic_add(&counter("accepted"), 1);
            txn.atomic_add(&counter("input_tokens"), result.usage.input_tokens as i64);
            txn.atomic_add(&counter("output_tokens"), result.usage.output_tokens as i64);
            txn.atomic_add(&counter("cost_micros"), result.cost_micros as i64);
            Ok(false)
        }
        Outcome::Failed {
            error,
            retryable,
            retry_after,
            ..
        } => {
            task.error = Some(error.clone());
            if *retryable && task.attempt < task.max_attempts {
                let backoff = cfg.backoff(task.attempt, jitter);
                let delay = retry_after.map_or(backoff, |r| backoff.max(r));
                let due = now + delay.as_micros() as i64;
                task.lease = None;
                task.next_attempt_at = Some(due);
                // The error names who failed (the runner writes it); the wait says who
                // asked for it when it is longer than the backoff.
                let why = match retry_after {
                    Some(r) if *r >= backoff && !f.provider.is_empty() => {
                        format!(" (the provider asked for {})", humanize(*r))
                    }
                    Some(r) if *r >= backoff => {
                        format!(" (no provider can take it before {})", humanize(*r))
                    }
                    _ => String::new(),
                };
                let message = format!(
                    "attempt {} of {} failed: {error}; retrying in {}{why}",
                    task.attempt,
                    task.max_attempts,
                    humanize(delay)
                );
                records::transition(
                    txn,
                    task,
                    TaskStatus::RetryWait,
                    now,
                    EventKind::RetryScheduled,
                    message,
                )?;
                records::arm_timer(
                    txn,
                    due,
                    task.id,
                    &TimerEntry::waiting(&task.tenant, TimerKind::Retry, task.fence),
                )?;
                Ok(true)
            } else {
                let why = if *retryable {
                    format!(
                        "failed after {} of {} attempts: {error}",
                        task.attempt, task.max_attempts
                    )
                } else {
                    format!(
                        "failed with a permanent error on attempt {}: {error}",
                        task.attempt
                    )
                };
                records::transition(txn, task, TaskStatus::Failed, now, EventKind::Failed, why)?;
                Ok(false)
            }
        }
    }
}

fn humanize(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Engine {
    /// Records streamed output of a running attempt (fenced; batched with other writes).
    pub async fn progress(
        &self,
        task_ref: TaskRef,
        items: Vec<Streamed>,
    ) -> Result<RunnerWriteResult, EngineError> {
        self.inner
            .runner_writes
            .call(RunnerWrite::Progress { task_ref, items })
            .await
    }

    /// Records how an attempt ended (fenced; batched with other writes). A refused finish
    /// means another runner owns the task now: the caller must drop its result.
    pub async fn finish(&self, finish: Finish) -> Result<RunnerWriteResult, EngineError> {
        self.inner
            .runner_writes
            .call(RunnerWrite::Finish(Box::new(finish)))
            .await
    }

    /// Extends the leases of running attempts by the lease duration. Returns, per task,
    /// whether the lease is still this runner's.
    ///
    /// The refs are renewed [`RENEW_CHUNK`] to a transaction, a few transactions at once:
    /// a completion committing meanwhile conflicts with (and retries) only the chunk that
    /// read its task, so a node running thousands of attempts still renews them all well
    /// within a lease.
    pub async fn renew(&self, refs: &[TaskRef]) -> Result<Vec<bool>, EngineError> {
        let now = self.now_micros();
        let chunks: Vec<&[TaskRef]> = refs.chunks(RENEW_CHUNK).collect();
        let mut out = Vec::with_capacity(refs.len());
        for group in chunks.chunks(RENEWS_AT_ONCE) {
            let mut renewing = Vec::with_capacity(group.len());
            for chunk in group {
                renewing.push(self.renew_chunk(chunk, now));
            }
            for renewed in futures::future::join_all(renewing).await {
                out.extend(renewed?);
            }
        }
        Ok(out)
    }

    /// Renews `refs` in one transaction.
    async fn renew_chunk(&self, refs: &[TaskRef], now: i64) -> Result<Vec<bool>, EngineError> {
        let lease_micros = self.inner.cfg.lease_duration.as_micros() as i64;
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.set_priority(Priority::System);
                    // Snapshot reads of the records: the task's own writes (progress,
                    // finish) must not make the renewal conflict, or under load renewals
                    // retry until leases lapse. Renewing a lease that just ended is
                    // harmless (its timer guards nothing, and the reaper drops it); one
                    // taken back conflicts on its expiry key, which the reclaim clears.
                    let ids: Vec<(&str, TaskId)> =
                        refs.iter().map(|r| (r.tenant.as_str(), r.id)).collect();
                    let tasks = records::load_many(txn, &ids, true).await?;
                    let mut epochs = EpochCheck::default();
                    let mut held = Vec::with_capacity(refs.len());
                    for (i, (r, task)) in refs.iter().zip(tasks).enumerate() {
                        let Some(task) = task else { continue };
                        if stale(&task, r.fence).is_some() {
                            continue;
                        }
                        let Some(lease) = task.lease else { continue };
                        if epochs
                            .refusal(txn, &lease.node_id, lease.node_epoch)
                            .await?
                            .is_some()
                        {
                            continue;
                        }
                        held.push((i, lease));
                    }
                    let expiry_keys: Vec<Vec<u8>> = held
                        .iter()
                        .map(|(i, lease)| keyspace::lease_expiry(refs[*i].id, lease.fence))
                        .collect();
                    let stored = txn.get_many(&expiry_keys).await?;
                    let due = now + lease_micros;
                    let mut out = vec![false; refs.len()];
                    for ((i, lease), stored) in held.iter().zip(stored) {
                        let r = &refs[*i];
                        let old = records::current_expiry(stored.as_deref(), lease)?;
                        records::extend_lease(txn, (&r.tenant, r.id), lease, old, due)?;
                        out[*i] = true;
                    }
                    Ok::<_, EngineError>(out)
                })
            })
            .await
    }

    /// Hands a running task back to the queue without spending its attempt (a node that
    /// drains gives back what it cannot finish in time). Fenced like every runner write.
    pub async fn release(
        &self,
        task_ref: &TaskRef,
        reason: &str,
    ) -> Result<RunnerWriteResult, EngineError> {
        let now = self.now_micros();
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.set_priority(Priority::System);
                    let mut task = match take_back(txn, task_ref).await? {
                        Ok(task) => task,
                        Err(why) => return Ok(RunnerWriteResult::Refused(why)),
                    };
                    let message = format!("handed back: {reason}; the attempt does not count");
                    records::requeue(txn, &mut task, now, message)?;
                    Ok::<_, EngineError>(RunnerWriteResult::Accepted(task.status))
                })
            })
            .await
    }

    /// Hands a leased task back without counting its attempt, to be leased again after
    /// `wait`: no provider could take it now, for reasons that pass by themselves (a
    /// circuit breaker open or waiting for its trial, a `retry-after` throttle, a rate
    /// limit, the node of its only provider out of reach). The task waits in
    /// `RETRY_WAIT` under a retry timer; its event says why and that the attempt does not
    /// count. Refused like every runner write when the lease is no longer this runner's.
    pub async fn defer(
        &self,
        task_ref: &TaskRef,
        reason: &str,
        wait: Duration,
    ) -> Result<RunnerWriteResult, EngineError> {
        let now = self.now_micros();
        let due = now.saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
        let result = self
            .inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.set_priority(Priority::System);
                    let mut task = match take_back(txn, task_ref).await? {
                        Ok(task) => task,
                        Err(why) => return Ok(RunnerWriteResult::Refused(why)),
                    };
                    task.next_attempt_at = Some(due);
                    let message = format!(
                        "waiting {} for a provider: {reason}; the attempt does not count",
                        humanize(wait)
                    );
                    records::transition(
                        txn,
                        &mut task,
                        TaskStatus::RetryWait,
                        now,
                        EventKind::RetryScheduled,
                        message,
                    )?;
                    records::arm_timer(
                        txn,
                        due,
                        task.id,
                        &TimerEntry::waiting(&task.tenant, TimerKind::Retry, task.fence),
                    )?;
                    records::put(txn, &task)?;
                    Ok::<_, EngineError>(RunnerWriteResult::Accepted(task.status))
                })
            })
            .await?;
        if matches!(result, RunnerWriteResult::Accepted(_)) {
            self.inner.timers.notify_one();
        }
        Ok(result)
    }

    /// Takes the cancel notices addressed to `node`, and a watch that fires on the next one.
    pub async fn take_inbox(
        &self,
        node: &str,
    ) -> Result<(Vec<(String, TaskId)>, Watch), EngineError> {
        let (begin, end) = keyspace::inbox_range(node);
        self.inner
            .db
            .run(|txn| {
                let (begin, end) = (begin.clone(), end.clone());
                Box::pin(async move {
                    let watch = txn.watch(&keyspace::inbox_version(node));
                    txn.get_snapshot(&keyspace::inbox_version(node)).await?;
                    let kvs = txn.get_range(&begin, &end, RangeOptions::new()).await?;
                    let mut notices = Vec::with_capacity(kvs.len());
                    for kv in &kvs {
                        if let Some(notice) = keyspace::parse_inbox(&kv.key) {
                            notices.push(notice);
                        }
                        txn.clear(&kv.key);
                    }
                    Ok::<_, EngineError>((notices, watch))
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_output_pieces_make_one_event_and_activity_lines_one_each() {
        let streamed = [
            Streamed::Output("a".into()),
            Streamed::Output(String::new()),
            Streamed::Output("b".into()),
            Streamed::Activity("running tests".into()),
            Streamed::Output("c".into()),
        ];
        let events: Vec<(EventKind, String, String)> = events_of(&streamed);
        assert_eq!(
            events,
            vec![
                (EventKind::Output, String::new(), "ab".into()),
                (EventKind::Activity, "running tests".into(), String::new()),
                (EventKind::Output, String::new(), "c".into()),
            ]
        );
    }
}
