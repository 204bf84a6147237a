//! The audit: what must hold after a fault, read from the store itself.
//!
//! The audit opens the PostgreSQL store directly with the engine's public API, so it does
//! not depend on any node being up or telling the truth. Checks:
//!
//! - every accepted task exists, its record is terminal, and its log holds exactly one
//!   terminal event, which agrees with the record;
//! - every task succeeded (the mock provider never fails), so the provider's count of
//!   accepted completions equals the number of tasks;
//! - no idempotency key made two tasks;
//! - no `Succeeded` event carries a fencing token lower than the task's last `Started`
//!   before it: nothing was completed under a stale token.
//!
//! It also measures, from event timestamps (one machine, one wall clock): recovery time
//! (fault → first re-lease of a task the faulted node held, on another node), and
//! completions per second before, during and after the disruption.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use supervisor_engine::{
    Engine, EngineConfig, ListQuery, NodeInfo, ProviderStats, StatusCounts, SystemClock,
};
use supervisor_model::{EventKind, Task, TaskEvent, TaskStatus};
use supervisor_store::postgres::{PostgresOptions, open_db};

/// The tenant every gRPC caller is, until authentication arrives.
pub const TENANT: &str = "default";

/// The provider the nodes run the load on.
pub const PROVIDER: &str = "mock";

/// What the audit needs of one task: its record's final state and its whole event log.
#[derive(Debug, Clone)]
pub struct TaskLog {
    /// Task id.
    pub id: String,
    /// Status in the record.
    pub status: TaskStatus,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// The record's error, when it failed.
    pub error: Option<String>,
    /// Its events, in order.
    pub events: Vec<TaskEvent>,
}

/// Everything the audit reads from the store.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Every task of the tenant.
    pub tasks: Vec<TaskLog>,
    /// The mock provider's durable counters.
    pub stats: ProviderStats,
    /// The membership table.
    pub nodes: Vec<NodeInfo>,
    /// Tasks the durable status counters count (every status).
    pub counted: u64,
}

/// An injected fault, as the scenario recorded it.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What was done (`kill -9 n2`).
    pub what: String,
    /// The node it hit, if it hit one.
    pub node: Option<String>,
    /// When it was injected (unix microseconds, taken just before the signal or command).
    pub at: i64,
    /// When it was lifted (SIGCONT, link up, server back, node restarted); `at` when it
    /// is never lifted (kill -9).
    pub cleared: i64,
}

/// How fast the cluster took over after one fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// The fault.
    pub what: String,
    /// Tasks the faulted node held (leased, unfinished) at the fault.
    pub orphans: usize,
    /// Fault → first re-lease of an orphan by another node, in milliseconds.
    pub first_release_ms: Option<f64>,
    /// Fault → the last orphan re-leased, in milliseconds.
    pub all_released_ms: Option<f64>,
    /// Fault → first completion accepted after the fault was lifted, in milliseconds.
    pub first_completion_after_ms: Option<f64>,
}

/// Completions per second around the faults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throughput {
    /// Mean rate in the window before the first fault.
    pub before: f64,
    /// Mean rate from the first fault to the end of the disruption (every fault lifted
    /// and every orphan re-leased).
    pub during: f64,
    /// Mean rate after the disruption, until the load stopped.
    pub after: f64,
    /// The lowest completions in one whole second from the first fault to the end of
    /// the disruption.
    pub worst_second: f64,
    /// Length of the disruption in seconds.
    pub disruption_s: f64,
}

/// The audit's verdict and measurements.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Tasks in the store.
    pub tasks: usize,
    /// Tasks the load generator saw accepted.
    pub accepted: usize,
    /// Tasks in the store whose submit the generator never saw answered (created by a
    /// call whose answer was lost; not a fault, the idempotency key kept it single).
    pub unacknowledged: usize,
    /// Tasks that succeeded.
    pub succeeded: usize,
    /// The provider's accepted completions.
    pub completions_accepted: u64,
    /// The provider's refused (stale-token) completions.
    pub completions_refused: u64,
    /// Tasks leased more than once.
    pub released: usize,
    /// What is wrong; empty when every invariant holds.
    pub violations: Vec<String>,
    /// One per fault.
    pub recoveries: Vec<Recovery>,
    /// Around the faults.
    pub throughput: Throughput,
    /// The logs of a few tasks leased more than once, one line each, times relative to
    /// the first fault: what a reader checks the figures against.
    pub samples: Vec<String>,
}

impl Findings {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Opens the store at `url` with an engine of default settings.
pub async fn open(url: &str) -> Result<Engine> {
    let db = open_db(url, PostgresOptions::default())
        .await
        .with_context(|| format!("the audit cannot open the store at {url}"))?;
    Ok(Engine::new(
        db,
        EngineConfig::default(),
        Arc::new(SystemClock),
    ))
}

/// Tasks not yet terminal.
fn unfinished(counts: &StatusCounts) -> u64 {
    [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::RetryWait,
    ]
    .iter()
    .map(|s| counts.get(*s))
    .sum()
}

/// Waits until no task is queued, running or waiting to retry, up to `limit`.
pub async fn wait_drained(engine: &Engine, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_said = tokio::time::Instant::now();
    let mut settled: Option<u64> = None;
    loop {
        let counts = match engine.status_counts().await {
            Ok(counts) => counts,
            Err(err) if tokio::time::Instant::now() < deadline => {
                eprintln!("  (audit: reading counts failed, retrying: {err})");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let total: u64 = counts.counts.iter().map(|(_, n)| n).sum();
        if unfinished(&counts) == 0 {
            // Submits a node accepted before a client gave up may still be committing:
            // drained means nothing unfinished and nothing new for a second.
            if settled == Some(total) {
                return Ok(());
            }
            settled = Some(total);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        settled = None;
        if last_said.elapsed() >= Duration::from_secs(10) {
            last_said = tokio::time::Instant::now();
            println!(
                "  draining: {} queued, {} running, {} waiting to retry, {} succeeded",
                counts.get(TaskStatus::Queued),
                counts.get(TaskStatus::Running),
                counts.get(TaskStatus::RetryWait),
                counts.get(TaskStatus::Succeeded)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the queue did not drain within {limit:?}: {} queued, {} running, {} waiting to retry",
                counts.get(TaskStatus::Queued),
                counts.get(TaskStatus::Running),
                counts.get(TaskStatus::RetryWait)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads every task with its log, the provider's counters and the membership table.
pub async fn observe(engine: &Engine) -> Result<Observed> {
    let mut tasks = Vec::new();
    let mut token = None;
    loop {
        let query = ListQuery {
            page_size: 1000,
            page_token: token,
            ..ListQuery::default()
        };
        let page = engine.list(TENANT, &query).await?;
        for task in page.tasks {
            tasks.push(read_log(engine, &task).await?);
        }
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    Ok(Observed {
        tasks,
        stats: engine.provider_stats(PROVIDER).await?,
        nodes: engine.list_nodes().await?,
        counted: engine
            .status_counts()
            .await?
            .counts
            .iter()
            .map(|(_, n)| n)
            .sum(),
    })
}

/// The task's log, with the record read in the same snapshot as the log's last page (the
/// listing's copy may be older than the log).
async fn read_log(engine: &Engine, task: &Task) -> Result<TaskLog> {
    let mut events: Vec<TaskEvent> = Vec::new();
    loop {
        let after = events.last().map(|e| e.seq).unwrap_or(0);
        let (page, record, _watch) = engine.read_events(TENANT, task.id, after, 1000).await?;
        let done = page
            .last()
            .is_none_or(|e| e.seq + 1 >= record.next_event_seq);
        events.extend(page);
        if done {
            return Ok(TaskLog {
                id: record.id.to_string(),
                status: record.status,
                idempotency_key: record.idempotency_key,
                error: record.error,
                events,
            });
        }
    }
}

fn is_terminal(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled
    )
}

fn terminal_status(kind: EventKind) -> Option<TaskStatus> {
    match kind {
        EventKind::Succeeded => Some(TaskStatus::Succeeded),
        EventKind::Failed => Some(TaskStatus::Failed),
        EventKind::Cancelled => Some(TaskStatus::Cancelled),
        _ => None,
    }
}

/// Checks the invariants and measures; pure, so it can be tested on made-up logs.
/// `accepted` are the task ids the load generator saw accepted; `load` the instants the
/// load started and stopped (unix microseconds).
pub fn audit(
    observed: &Observed,
    accepted: &[String],
    faults: &[Fault],
    load: (i64, i64),
) -> Findings {
    let mut v = Vec::new();
    let by_id: HashMap<String, &TaskLog> =
        observed.tasks.iter().map(|t| (t.id.clone(), t)).collect();
    let accepted_set: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    for id in accepted {
        if !by_id.contains_key(id) {
            v.push(format!("accepted task {id} is not in the store"));
        }
    }
    let mut keys: HashMap<&str, Vec<String>> = HashMap::new();
    let mut succeeded = 0;
    let mut released = 0;
    for log in &observed.tasks {
        let id = log.id.clone();
        if let Some(key) = &log.idempotency_key {
            keys.entry(key.as_str()).or_default().push(id.clone());
        }
        check_task(log, &id, &mut v);
        if log.status == TaskStatus::Succeeded {
            succeeded += 1;
        }
        let starts = log
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Started)
            .count();
        if starts > 1 {
            released += 1;
        }
    }
    for (key, ids) in keys {
        if ids.len() > 1 {
            v.push(format!(
                "idempotency key {key} made {} tasks: {}",
                ids.len(),
                ids.join(", ")
            ));
        }
    }
    let tasks = observed.tasks.len();
    if observed.counted != tasks as u64 {
        v.push(format!(
            "the status counters count {} tasks, but {tasks} are listed",
            observed.counted
        ));
    }
    if observed.stats.completions_accepted != tasks as u64 {
        v.push(format!(
            "the {PROVIDER} provider's accepted completions ({}) differ from the number of tasks ({tasks})",
            observed.stats.completions_accepted
        ));
    }
    let unacknowledged = by_id
        .keys()
        .filter(|id| !accepted_set.contains(id.as_str()))
        .count();
    let recoveries = faults
        .iter()
        .map(|f| recovery(&observed.tasks, f))
        .collect::<Vec<_>>();
    let throughput = throughput(&observed.tasks, faults, &recoveries, load);
    let origin = faults.iter().map(|f| f.at).min().unwrap_or(load.0);
    let samples = observed
        .tasks
        .iter()
        .filter(|t| {
            t.events
                .iter()
                .filter(|e| e.kind == EventKind::Started)
                .count()
                > 1
        })
        .take(SAMPLES)
        .map(|t| sample(t, origin))
        .collect();
    Findings {
        tasks,
        accepted: accepted.len(),
        unacknowledged,
        succeeded,
        completions_accepted: observed.stats.completions_accepted,
        completions_refused: observed.stats.completions_refused,
        released,
        violations: v,
        recoveries,
        throughput,
        samples,
    }
}

/// How many re-leased tasks' logs a report shows.
const SAMPLES: usize = 4;

/// `task: +12.3s started n2 f1, +17.0s requeued, ...` (times from `origin`; output and
/// activity events left out).
fn sample(log: &TaskLog, origin: i64) -> String {
    let steps: Vec<String> = log
        .events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Output | EventKind::Activity))
        .map(|e| {
            let mut step = format!("{:+.3}s {}", (e.at - origin) as f64 / 1e6, e.kind);
            if !e.node.is_empty() {
                step.push_str(&format!(" {} f{}", e.node, e.fence));
            }
            step
        })
        .collect();
    format!("{}: {}", log.id, steps.join(", "))
}

fn check_task(log: &TaskLog, id: &str, v: &mut Vec<String>) {
    let terminals: Vec<&TaskEvent> = log.events.iter().filter(|e| is_terminal(e.kind)).collect();
    match terminals.as_slice() {
        [] => v.push(format!(
            "task {id} has no terminal event (record: {})",
            log.status
        )),
        [only] => {
            if terminal_status(only.kind) != Some(log.status) {
                v.push(format!(
                    "task {id}: its terminal event is {} but its record says {}",
                    only.kind, log.status
                ));
            }
        }
        many => v.push(format!(
            "task {id} has {} terminal events: {}",
            many.len(),
            many.iter()
                .map(|e| format!("#{} {} by {} fence {}", e.seq, e.kind, e.node, e.fence))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
    if log.status != TaskStatus::Succeeded && log.status.is_terminal() {
        v.push(format!(
            "task {id} ended {} (the mock provider never fails): {}",
            log.status,
            log.error.as_deref().unwrap_or("no error recorded")
        ));
    }
    let mut last_start: Option<&TaskEvent> = None;
    for e in &log.events {
        match e.kind {
            EventKind::Started => last_start = Some(e),
            EventKind::Succeeded => match last_start {
                None => v.push(format!("task {id} succeeded (#{}) without a Started event", e.seq)),
                Some(s) if e.fence < s.fence => v.push(format!(
                    "task {id} completed under a stale fencing token: Succeeded #{} by {} carries fence {} but the last Started (#{} by {}) had fence {}",
                    e.seq, e.node, e.fence, s.seq, s.node, s.fence
                )),
                Some(_) => {}
            },
            _ => {}
        }
    }
}

fn ms(from: i64, to: i64) -> f64 {
    (to - from) as f64 / 1000.0
}

/// Orphans of a fault on a node: tasks whose last `Started` before the fault was on that
/// node and that had no terminal event before it. Recovery: their first `Started` after
/// the fault on another node (on any node when the faulted node took it back itself).
fn recovery(tasks: &[TaskLog], fault: &Fault) -> Recovery {
    let mut orphans = 0;
    let mut releases: Vec<i64> = Vec::new();
    if let Some(node) = &fault.node {
        for log in tasks {
            let before: Vec<&TaskEvent> = log.events.iter().filter(|e| e.at < fault.at).collect();
            let held = before
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::Started || e.kind == EventKind::Requeued)
                .is_some_and(|e| e.kind == EventKind::Started && &e.node == node);
            let ended = before.iter().any(|e| is_terminal(e.kind));
            // A node that drains may finish what it holds: then nothing was orphaned.
            let finished_by_holder = log
                .events
                .iter()
                .find(|e| e.at >= fault.at && (e.kind == EventKind::Started || is_terminal(e.kind)))
                .is_some_and(|e| is_terminal(e.kind));
            if !held || ended || finished_by_holder {
                continue;
            }
            orphans += 1;
            let after = || {
                log.events
                    .iter()
                    .filter(|e| e.at >= fault.at && e.kind == EventKind::Started)
            };
            if let Some(e) = after().find(|e| &e.node != node).or_else(|| after().next()) {
                releases.push(e.at);
            }
        }
    }
    let first_completion_after = tasks
        .iter()
        .flat_map(|t| t.events.iter())
        .filter(|e| e.kind == EventKind::Succeeded && e.at >= fault.cleared)
        .map(|e| e.at)
        .min();
    Recovery {
        what: fault.what.clone(),
        orphans,
        first_release_ms: releases.iter().min().map(|t| ms(fault.at, *t)),
        all_released_ms: if releases.len() == orphans && orphans > 0 {
            releases.iter().max().map(|t| ms(fault.at, *t))
        } else {
            None
        },
        first_completion_after_ms: first_completion_after.map(|t| ms(fault.at, t)),
    }
}

/// Seconds of steady load before the first fault that count as "before" (the first
/// seconds of load are a warm-up and left out).
const WARM_UP_US: i64 = 2_000_000;

fn throughput(
    tasks: &[TaskLog],
    faults: &[Fault],
    rec: &[Recovery],
    load: (i64, i64),
) -> Throughput {
    let Some(first) = faults.iter().map(|f| f.at).min() else {
        return Throughput::default();
    };
    let mut end = faults.iter().map(|f| f.cleared).max().unwrap_or(first);
    for (f, r) in faults.iter().zip(rec) {
        if let Some(all) = r.all_released_ms {
            end = end.max(f.at + (all * 1000.0) as i64);
        }
    }
    let done: Vec<i64> = tasks
        .iter()
        .flat_map(|t| t.events.iter())
        .filter(|e| e.kind == EventKind::Succeeded)
        .map(|e| e.at)
        .collect();
    let rate = |from: i64, to: i64| -> f64 {
        if to <= from {
            return 0.0;
        }
        let n = done.iter().filter(|t| **t >= from && **t < to).count();
        n as f64 / ((to - from) as f64 / 1e6)
    };
    let before_from = (load.0 + WARM_UP_US).min(first);
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    let whole_seconds = ((end - first) / 1_000_000).max(1);
    for s in 0..whole_seconds {
        per_second.insert(s, 0);
    }
    for t in &done {
        if *t >= first {
            let s = (t - first) / 1_000_000;
            if let Some(n) = per_second.get_mut(&s) {
                *n += 1;
            }
        }
    }
    Throughput {
        before: rate(before_from, first),
        during: rate(first, end),
        after: rate(end, load.1),
        worst_second: per_second.values().copied().min().unwrap_or(0) as f64,
        disruption_s: (end - first) as f64 / 1e6,
    }
}

#[cfg(test)]
mod tests;
