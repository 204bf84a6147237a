//! Retention: terminal tasks and ended workflow runs are deleted once they have been over
//! for the retention period, with everything kept beside them (output, artifacts, event
//! logs, index entries, idempotency keys), by one node at a time (the retention duty,
//! its fencing token checked in every transaction).
//!
//! Every task that becomes terminal and every run that ends writes a retention entry
//! `("expt"|"expw", tenant, ended_at, id)` in the same transaction, so the sweeper reads
//! what is due oldest first per tenant without scanning anything that is not. A sweep
//! takes at most `batch` entries per tenant and kind in one transaction, and re-reads
//! each record in it: a record that is gone, or a run that ended at another time than its
//! entry says (it was retried since) only loses the stale entry. A task of a workflow run
//! that still exists waits for its run: its entry moves to just after the run's end (or
//! to now while the run goes on), so a run's steps are never deleted before the run,
//! whose retry may still read their results.
//!
//! What stays: the cost ledger, budget spend and analytics rollups are separate records
//! that no deletion touches, so spend is never lost. Status counters drop with the tasks
//! they counted (they count tasks the store holds).
//!
//! With an archive directory, the records of a batch (the task with its output,
//! artifacts and events; the run with its events) are appended to the archive and
//! flushed to disk before the transaction that deletes them: a crash between the two
//! archives a record twice (readers keep the last line per id), never loses one.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisor_model::{Task, TaskEvent, TaskId, TaskStatus};
use supervisor_store::keys::strinc;
use supervisor_store::{RangeOptions, Transaction};

use crate::archive::{ArchiveRecord, Archiver};
use crate::codec::decode;
use crate::keyspace::{self, Expiring};
use crate::workflows::{self, WorkflowEvent, WorkflowRun};
use crate::{Engine, EngineError, records};

/// The singleton duty of deleting expired records.
pub const RETENTION_DUTY: &str = "retention";

/// How long finished work is kept (`[retention]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a terminal task or ended workflow run is kept after it ended, with its
    /// output, artifacts and events; `0` keeps everything forever. Default 30d.
    #[serde(with = "period")]
    pub keep: Duration,
    /// Tenants kept for another period than `keep` (`acme = "90d"`, `0` for forever).
    #[serde(with = "periods")]
    pub tenants: BTreeMap<String, Duration>,
    /// Append what is deleted to zstd-compressed JSON-lines files in this directory, one
    /// per tenant and hour (`supervisor archive read FILE` prints one). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
    /// Most records deleted per transaction (per tenant and kind). Default 128.
    pub batch: usize,
    /// Pause between two transactions of a sweep, so foreground work goes first.
    /// Default 20ms.
    #[serde(with = "humantime_serde")]
    pub pause: Duration,
    /// How often the sweeper looks when nothing was due. Default: a tenth of the
    /// shortest retention period, within 1s to 1m.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: Duration::from_secs(30 * 24 * 3600),
            tenants: BTreeMap::new(),
            archive_dir: None,
            batch: 128,
            pause: Duration::from_millis(20),
            every: None,
        }
    }
}

impl RetentionConfig {
    /// How long `tenant`'s finished work is kept (zero: forever).
    pub fn keep_for(&self, tenant: &str) -> Duration {
        self.tenants.get(tenant).copied().unwrap_or(self.keep)
    }

    /// How often the sweeper looks when nothing was due.
    pub fn sweep_every(&self) -> Duration {
        self.every.unwrap_or_else(|| {
            let shortest = std::iter::once(self.keep)
                .chain(self.tenants.values().copied())
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(Duration::from_secs(600));
            (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
        })
    }

    /// Checks the values, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch == 0 || self.batch > 10_000 {
            return Err("retention.batch must be 1 to 10000".into());
        }
        for tenant in self.tenants.keys() {
            supervisor_model::validate_tenant(tenant)
                .map_err(|e| format!("retention.tenants: {e}"))?;
        }
        if self.every.is_some_and(|d| d.is_zero()) {
            return Err("retention.every must be above zero".into());
        }
        Ok(())
    }
}

/// A retention period in the configuration: a duration (`"30d"`), or `0` (as a number
/// or a string) for forever, the way an environment variable gives it too.
mod period {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Given {
        Text(String),
        Number(u64),
    }

    pub(super) fn parse(given: Given) -> Result<Duration, String> {
        match given {
            Given::Number(0) => Ok(Duration::ZERO),
            Given::Number(n) => Err(format!(
                "a retention period is a duration like \"30d\" or \"12h\" (or 0 for forever), not the number {n}"
            )),
            Given::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                format!("{text:?} is not a retention period ({e}); write a duration like \"30d\" or \"12h\", or 0 for forever")
            }),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(Given::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_period(*value))
    }
}

/// A retention period as people write it: whole days, hours, minutes or seconds when it
/// is one (`"90d"`, not humantime's `"2months 29days 2h 52m 48s"`); `"0"` for forever.
pub fn format_period(period: Duration) -> String {
    let secs = period.as_secs();
    if period.subsec_nanos() != 0 {
        return humantime::format_duration(period).to_string();
    }
    match secs {
        0 => "0".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Per-tenant retention periods, each as [`period`] reads one.
mod periods {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, super::period::Given>::deserialize(d)?
            .into_iter()
            .map(|(tenant, given)| {
                super::period::parse(given)
                    .map(|period| (tenant.clone(), period))
                    .map_err(|e| serde::de::Error::custom(format!("tenant {tenant}: {e}")))
            })
            .collect()
    }

    pub(super) fn serialize<S: Serializer>(
        value: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(value.len()))?;
        for (tenant, period) in value {
            map.serialize_entry(tenant, &super::format_period(*period))?;
        }
        map.end()
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSweep {
    /// Tasks deleted.
    pub tasks_deleted: usize,
    /// Workflow runs deleted.
    pub runs_deleted: usize,
    /// Records archived before deletion.
    pub archived: usize,
    /// Tasks finished before retention entries existed that were given one.
    pub backfilled: usize,
    /// A batch was full: more may be due at once.
    pub more: bool,
    /// The duty passed to another node during the sweep; it stopped.
    pub lost_duty: bool,
}

/// What the deleting transaction does with one retention entry.
enum Fate {
    /// Delete the task.
    DeleteTask(Box<Task>),
    /// Delete the run.
    DeleteRun(Box<WorkflowRun>),
    /// Move the entry of a task to this time (its run still exists).
    Postpone(i64),
    /// The entry is stale: remove it alone.
    Stale,
}

/// Whether the caller still holds the retention duty (always, without a token).
async fn holds(
    txn: &mut Transaction<'_>,
    fence: Option<u64>,
    now: i64,
) -> Result<bool, EngineError> {
    crate::schedules::holds_duty_if(txn, RETENTION_DUTY, fence, now).await
}

/// What to do with the task entry `(at, id)` of `tenant`, reading with conflicts.
async fn task_fate(
    txn: &mut Transaction<'_>,
    tenant: &str,
    at: i64,
    id: TaskId,
    now: i64,
    cutoff: i64,
) -> Result<Fate, EngineError> {
    let Some(task) = records::load(txn, tenant, id).await? else {
        return Ok(Fate::Stale);
    };
    // Terminal is forever; an entry may lie later than the end (postponed for its run).
    if !task.status.is_terminal() || task.finished_at.is_none_or(|ended| ended > at) {
        return Ok(Fate::Stale);
    }
    if let Some(wf) = &task.workflow
        && let Some(run) = workflows::load_run(txn, tenant, wf.run).await?
    {
        // After the run's end when that is still to come due; else look again later.
        let after_run = run.finished_at.map(|end| end + 1).filter(|t| *t > cutoff);
        return Ok(Fate::Postpone(after_run.unwrap_or(now)));
    }
    Ok(Fate::DeleteTask(Box::new(task)))
}

/// What to do with the run entry `(at, id)` of `tenant`, reading with conflicts.
async fn run_fate(
    txn: &mut Transaction<'_>,
    tenant: &str,
    at: i64,
    id: TaskId,
) -> Result<Fate, EngineError> {
    match workflows::load_run(txn, tenant, id).await? {
        Some(run) if run.finished_at == Some(at) => Ok(Fate::DeleteRun(Box::new(run))),
        _ => Ok(Fate::Stale),
    }
}

/// The event log in `range`, in order (snapshot reads).
async fn events_in<E: serde::de::DeserializeOwned>(
    txn: &mut Transaction<'_>,
    (begin, end): (Vec<u8>, Vec<u8>),
    what: &str,
) -> Result<Vec<E>, EngineError> {
    txn.get_range(&begin, &end, RangeOptions::new().snapshot())
        .await?
        .iter()
        .map(|kv| decode::<E>(what, &kv.value))
        .collect()
}

/// Reads the archive form of the records behind `entries` (snapshot reads).
async fn archive_records(
    txn: &mut Transaction<'_>,
    kind: Expiring,
    tenant: &str,
    entries: &[(i64, TaskId)],
) -> Result<Vec<ArchiveRecord>, EngineError> {
    let mut out = Vec::with_capacity(entries.len());
    for (at, id) in entries {
        let record = match kind {
            Expiring::Task => {
                let Some(task) = records::load_full(txn, tenant, *id).await? else {
                    continue;
                };
                let events: Vec<TaskEvent> =
                    events_in(txn, keyspace::events_of(tenant, *id), "task event").await?;
                ArchiveRecord::task(*at, task, events)?
            }
            Expiring::Run => {
                let Some(run) = workflows::load_run(txn, tenant, *id).await? else {
                    continue;
                };
                let events: Vec<WorkflowEvent> = events_in(
                    txn,
                    keyspace::workflow_events(tenant, *id),
                    "workflow event",
                )
                .await?;
                ArchiveRecord::run(*at, run, events)?
            }
        };
        out.push(record);
    }
    Ok(out)
}

/// The entries of a retention range, oldest first.
fn parse_entries(kvs: &[supervisor_store::KeyValue]) -> Vec<(i64, TaskId)> {
    kvs.iter()
        .filter_map(|kv| keyspace::parse_expiry(&kv.key))
        .map(|(_, at, id)| (at, id))
        .collect()
}

impl Engine {
    /// Deletes what is past its retention period: for every tenant with a period (not
    /// zero), up to `cfg.batch` runs and `cfg.batch` tasks, each kind in one
    /// transaction; archives them first when `archive` is given. On behalf of the
    /// holder of the retention duty granted with `fence` (stops once it passed on), or
    /// of anyone without one (tests, the operator's tools).
    pub async fn sweep_retention(
        &self,
        cfg: &RetentionConfig,
        archive: Option<&Archiver>,
        fence: Option<u64>,
    ) -> Result<RetentionSweep, EngineError> {
        let mut sweep = RetentionSweep::default();
        let backfill = self.backfill_expiries(cfg.batch, fence).await?;
        sweep.backfilled = backfill.0;
        sweep.more |= backfill.1;
        // Runs first, so that a step's task whose run goes in this sweep goes with it
        // at the latest in the next.
        for kind in [Expiring::Run, Expiring::Task] {
            for tenant in self.tenants_with_entries(kind).await? {
                let keep = cfg.keep_for(&tenant);
                if keep.is_zero() {
                    continue;
                }
                let (deleted, archived, full, lost) = self
                    .expire_batch(kind, &tenant, keep, cfg.batch, archive, fence)
                    .await?;
                if lost {
                    sweep.lost_duty = true;
                    return Ok(sweep);
                }
                match kind {
                    Expiring::Task => sweep.tasks_deleted += deleted,
                    Expiring::Run => sweep.runs_deleted += deleted,
                }
                sweep.archived += archived;
                sweep.more |= full;
            }
        }
        if sweep.tasks_deleted + sweep.runs_deleted > 0 {
            tracing::debug!(
                tasks = sweep.tasks_deleted,
                runs = sweep.runs_deleted,
                "deleted finished work past its retention period"
            );
        }
        Ok(sweep)
    }

    /// The tenants that have retention entries of `kind`.
    async fn tenants_with_entries(&self, kind: Expiring) -> Result<Vec<String>, EngineError> {
        self.tenants_in(
            keyspace::expiries(kind),
            |key| keyspace::parse_expiry(key).map(|(tenant, _, _)| tenant),
            |tenant| keyspace::expiries_of(kind, tenant).1,
        )
        .await
    }

    /// The distinct tenants of the keys in `range` (ordered by tenant first): one short
    /// read per tenant, then on past that tenant's keys (`past`).
    async fn tenants_in(
        &self,
        (mut begin, end): (Vec<u8>, Vec<u8>),
        tenant_of: impl Fn(&[u8]) -> Option<String>,
        past: impl Fn(&str) -> Vec<u8>,
    ) -> Result<Vec<String>, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        let mut tenants = Vec::new();
        loop {
            let first = txn
                .get_range(&begin, &end, RangeOptions::new().limit(1).snapshot())
                .await?;
            let Some(tenant) = first.first().and_then(|kv| tenant_of(&kv.key)) else {
                break;
            };
            begin = past(&tenant);
            tenants.push(tenant);
        }
        Ok(tenants)
    }

    /// One transaction's worth of `tenant`'s due entries of `kind`: returns how many
    /// records were deleted and archived, whether the batch was full, and whether the
    /// duty was lost.
    async fn expire_batch(
        &self,
        kind: Expiring,
        tenant: &str,
        keep: Duration,
        batch: usize,
        archive: Option<&Archiver>,
        fence: Option<u64>,
    ) -> Result<(usize, usize, bool, bool), EngineError> {
        let now = self.now_micros();
        let cutoff = now.saturating_sub(keep.as_micros().min(i64::MAX as u128) as i64);
        let (begin, end) = keyspace::expiries_before(kind, tenant, cutoff);
        // Archive first, outside the deleting transaction: only what reached the disk
        // is deleted.
        let mut archived = 0;
        let only: Option<HashSet<TaskId>> = match archive {
            Some(archive) => {
                let mut txn = self.inner.db.begin().await?;
                let kvs = txn
                    .get_range(&begin, &end, RangeOptions::new().limit(batch).snapshot())
                    .await?;
                let entries = parse_entries(&kvs);
                let records = archive_records(&mut txn, kind, tenant, &entries).await?;
                drop(txn);
                archived = records.len();
                archive.append(tenant, &records).map_err(|e| {
                    EngineError::Internal(format!(
                        "could not write the retention archive in {}: {e}; nothing was deleted (fix the directory or remove retention.archive_dir)",
                        archive.dir().display()
                    ))
                })?;
                Some(entries.iter().map(|(_, id)| *id).collect())
            }
            None => None,
        };
        self.inner
            .db
            .run(|txn| {
                let (begin, end, only) = (begin.clone(), end.clone(), only.clone());
                Box::pin(async move {
                    if !holds(txn, fence, now).await? {
                        return Ok((0, archived, false, true));
                    }
                    let kvs = txn
                        .get_range(&begin, &end, RangeOptions::new().limit(batch))
                        .await?;
                    let full = kvs.len() >= batch;
                    let mut deleted = 0;
                    for (at, id) in parse_entries(&kvs) {
                        if only.as_ref().is_some_and(|ids| !ids.contains(&id)) {
                            continue;
                        }
                        let entry = keyspace::expiry(kind, tenant, at, id);
                        let fate = match kind {
                            Expiring::Task => task_fate(txn, tenant, at, id, now, cutoff).await?,
                            Expiring::Run => run_fate(txn, tenant, at, id).await?,
                        };
                        match fate {
                            Fate::DeleteTask(task) => {
                                records::delete(txn, &task, &entry).await?;
                                deleted += 1;
                            }
                            Fate::DeleteRun(run) => {
                                workflows::delete_run(txn, &run, &entry);
                                deleted += 1;
                            }
                            Fate::Postpone(to) => {
                                txn.clear(&entry);
                                txn.set(&keyspace::expiry(kind, tenant, to, id), &[]);
                            }
                            Fate::Stale => txn.clear(&entry),
                        }
                    }
                    Ok::<_, EngineError>((deleted, archived, full, false))
                })
            })
            .await
    }

    /// Gives a retention entry to up to `batch` tasks that finished before this version
    /// wrote them, per call, walking each tenant's terminal status indexes from where the
    /// last call stopped. Returns how many it gave and whether more may remain.
    async fn backfill_expiries(
        &self,
        batch: usize,
        fence: Option<u64>,
    ) -> Result<(usize, bool), EngineError> {
        let now = self.now_micros();
        let done = keyspace::expiry_backfill_done();
        if self
            .inner
            .db
            .begin()
            .await?
            .get_snapshot(&done)
            .await?
            .is_some()
        {
            return Ok((0, false));
        }
        let mut given = 0;
        let mut more = false;
        for tenant in self.tenants_with_tasks().await? {
            for status in TaskStatus::ALL.iter().filter(|s| s.is_terminal()) {
                let (n, full, lost) = self
                    .inner
                    .db
                    .run(|txn| {
                        let tenant = tenant.clone();
                        Box::pin(async move {
                            if !holds(txn, fence, now).await? {
                                return Ok((0, false, true));
                            }
                            let mark = keyspace::expiry_backfill(&tenant, *status);
                            let (mut begin, end) =
                                keyspace::index_range(&tenant, keyspace::Index::Status(*status));
                            match txn.get(&mark).await? {
                                // Done for this status: tasks that ended since have entries.
                                Some(last) if last.is_empty() => return Ok((0, false, false)),
                                Some(last) => {
                                    let id: TaskId = decode("retention backfill mark", &last)?;
                                    begin = strinc(&keyspace::index(
                                        &tenant,
                                        keyspace::Index::Status(*status),
                                        id,
                                    ));
                                }
                                None => {}
                            }
                            let kvs = txn
                                .get_range(
                                    &begin,
                                    &end,
                                    RangeOptions::new().limit(batch).snapshot(),
                                )
                                .await?;
                            let ids: Vec<TaskId> = kvs
                                .iter()
                                .filter_map(|kv| keyspace::parse_index(&kv.key))
                                .collect();
                            let keys: Vec<(&str, TaskId)> =
                                ids.iter().map(|id| (tenant.as_str(), *id)).collect();
                            let tasks = records::load_many(txn, &keys, true).await?;
                            let mut n = 0;
                            for task in tasks.into_iter().flatten() {
                                if let Some(at) =
                                    task.finished_at.filter(|_| task.status == *status)
                                {
                                    txn.set(
                                        &keyspace::expiry(Expiring::Task, &tenant, at, task.id),
                                        &[],
                                    );
                                    n += 1;
                                }
                            }
                            match ids.last() {
                                Some(last) if kvs.len() >= batch => {
                                    txn.set(&mark, &crate::codec::encode(last)?)
                                }
                                _ => txn.set(&mark, &[]),
                            }
                            Ok::<_, EngineError>((n, kvs.len() >= batch, false))
                        })
                    })
                    .await?;
                if lost {
                    return Ok((given, false));
                }
                given += n;
                more |= full;
            }
        }
        if !more {
            self.inner
                .db
                .run(|txn| {
                    let done = done.clone();
                    Box::pin(async move {
                        if holds(txn, fence, now).await? {
                            txn.set(&done, &[]);
                        }
                        Ok::<_, EngineError>(())
                    })
                })
                .await?;
        }
        Ok((given, more))
    }

    /// Tenants with a status index, i.e. that have (or had) tasks.
    async fn tenants_with_tasks(&self) -> Result<Vec<String>, EngineError> {
        self.tenants_in(
            keyspace::status_indexes(),
            keyspace::parse_status_index_tenant,
            |tenant| keyspace::status_index_of(tenant).1,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<RetentionConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn periods_read_as_durations_or_zero_and_name_what_is_wrong() {
        assert_eq!(parse(r#"{"keep": 0}"#).unwrap().keep, Duration::ZERO);
        assert_eq!(parse(r#"{"keep": "0"}"#).unwrap().keep, Duration::ZERO);
        assert_eq!(
            parse(r#"{"keep": "3s"}"#).unwrap().keep,
            Duration::from_secs(3)
        );
        let cfg = parse(r#"{"tenants": {"acme": "90d", "lab": 0}}"#).unwrap();
        assert_eq!(cfg.keep_for("acme"), Duration::from_secs(90 * 86_400));
        assert_eq!(cfg.keep_for("lab"), Duration::ZERO);
        assert_eq!(cfg.keep_for("other"), RetentionConfig::default().keep);
        let err = parse(r#"{"keep": 30}"#).unwrap_err();
        assert!(err.contains("not the number 30"), "{err}");
        let err = parse(r#"{"tenants": {"acme": "soon"}}"#).unwrap_err();
        assert!(
            err.contains("tenant acme") && err.contains("\"soon\""),
            "{err}"
        );
        // Serialized back, a period reads the same, written as people write it.
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(
            text.contains(r#""acme":"90d""#) && text.contains(r#""keep":"30d""#),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), cfg);
        let odd = parse(r#"{"keep": "90m 5s"}"#).unwrap();
        assert_eq!(parse(&serde_json::to_string(&odd).unwrap()).unwrap(), odd);
    }

    #[test]
    fn the_sweep_interval_follows_the_shortest_period() {
        let short = RetentionConfig {
            keep: Duration::from_secs(3),
            ..RetentionConfig::default()
        };
        assert_eq!(short.sweep_every(), Duration::from_secs(1));
        assert_eq!(
            RetentionConfig::default().sweep_every(),
            Duration::from_secs(60)
        );
        let forever = RetentionConfig {
            keep: Duration::ZERO,
            ..RetentionConfig::default()
        };
        assert_eq!(forever.sweep_every(), Duration::from_secs(60));
    }
}
