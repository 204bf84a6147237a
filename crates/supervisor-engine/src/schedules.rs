//! Schedules: cron-driven starts of workflow runs, and the singleton lease that decides
//! which node fires them.
//!
//! A schedule remembers the last tick it considered (`last`). Firing is one transaction
//! that reads the schedule, asks the cron rules which tick is due after `last`, starts the
//! run and stores the new `last` together; two nodes racing on the same tick conflict and
//! the loser finds nothing due. The singleton lease (`("singleton", duty)` with a fencing
//! token) keeps that race rare: only its holder fires, and a firing under a stale token
//! is refused inside the same transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisor_model::{FieldError, TaskId};
use supervisor_store::{RangeOptions, Transaction};
use supervisor_workflow::{ScheduleDef, WorkflowDef};

use crate::codec::{decode, decode_page, encode};
use crate::nodes::NodeIdentity;
use crate::workflows::{WorkflowRun, start_run_in_txn};
use crate::{Engine, EngineError, keyspace};

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Its tenant.
    pub tenant: String,
    /// Its name, unique per tenant.
    pub name: String,
    /// Cron, time zone and missed-tick policy.
    pub spec: ScheduleDef,
    /// The workflow it starts.
    pub def: WorkflowDef,
    /// Variables for each run (over the definition's).
    pub vars: BTreeMap<String, String>,
    /// Whether ticks are ignored.
    pub paused: bool,
    /// The last tick considered (fired or skipped), or the creation time.
    pub last: i64,
    /// The next tick.
    pub next_fire_at: Option<i64>,
    /// When a tick last started a run.
    pub last_fired_at: Option<i64>,
    /// The run it last started.
    pub last_run: Option<TaskId>,
    /// Runs started so far (ticks and triggers).
    pub runs_started: u64,
    /// Creation time.
    pub created_at: i64,
}

/// A page of schedules, by name.
#[derive(Debug, Clone)]
pub struct SchedulePage {
    /// The schedules.
    pub schedules: Vec<ScheduleRecord>,
    /// Whether more schedules follow the last one.
    pub more: bool,
}

/// Who holds a singleton duty.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SingletonLease {
    node: String,
    epoch: u64,
    expires_at: i64,
    fence: u64,
}

/// The duty that fires schedules.
pub const SCHEDULER_DUTY: &str = "scheduler";

/// Longest schedule name, in bytes.
pub const MAX_SCHEDULE_NAME_BYTES: usize = 64;

/// Checks a schedule name (1 to 64 of `a-z 0-9 - _`) in every call that takes one, so an
/// empty or malformed name is `InvalidArgument`, not "not found".
fn check_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    let what = if name.is_empty() {
        "a schedule name is required".to_string()
    } else {
        format!("{} is not a schedule name", supervisor_model::quote(name))
    };
    Err(EngineError::InvalidArgument(FieldError::new(
        "name",
        format!("{what}; use 1 to {MAX_SCHEDULE_NAME_BYTES} of a-z, 0-9, - and _"),
    )))
}

async fn load(
    txn: &mut Transaction<'_>,
    tenant: &str,
    name: &str,
) -> Result<Option<ScheduleRecord>, EngineError> {
    match txn.get(&keyspace::schedule(tenant, name)).await? {
        Some(bytes) => Ok(Some(decode("schedule", &bytes)?)),
        None => Ok(None),
    }
}

fn put(txn: &mut Transaction<'_>, s: &ScheduleRecord) -> Result<(), EngineError> {
    txn.set(&keyspace::schedule(&s.tenant, &s.name), &encode(s)?);
    Ok(())
}

fn not_found(name: &str) -> EngineError {
    EngineError::ScheduleNotFound {
        name: name.to_string(),
    }
}

/// Whether the lease of `duty` is still the one granted with `fence` and has not lapsed.
/// Reading it puts the lease in the transaction's read set, so a takeover committed
/// concurrently makes the caller's transaction retry and refuse.
pub(crate) async fn holds_duty(
    txn: &mut supervisor_store::Transaction<'_>,
    duty: &str,
    fence: u64,
    now: i64,
) -> Result<bool, EngineError> {
    let lease = match txn.get(&keyspace::singleton(duty)).await? {
        Some(b) => decode::<SingletonLease>("singleton lease", &b)?,
        None => return Ok(false),
    };
    Ok(lease.fence == fence && lease.expires_at > now)
}

/// Voids every singleton duty's lease: whoever held one holds it no more, and the next
/// taker gets a fencing token no earlier holder ever had.
pub(crate) async fn void_singletons(
    txn: &mut supervisor_store::Transaction<'_>,
) -> Result<usize, EngineError> {
    let (begin, end) = keyspace::singletons();
    let leases = txn.get_range(&begin, &end, RangeOptions::new()).await?;
    for kv in &leases {
        let mut lease = decode::<SingletonLease>("singleton lease", &kv.value)?;
        // Tokens grow by one per taker; a wide jump clears any handed out after a
        // backup the store was restored from.
        lease.fence += 1_000_000;
        lease.expires_at = 0;
        lease.node.clear();
        txn.set(&kv.key, &encode(&lease)?);
    }
    Ok(leases.len())
}

/// [`holds_duty`] for work done on behalf of a duty (`Some(fence)`) or of anyone (`None`:
/// tests and operators' tools), which always may.
pub(crate) async fn holds_duty_if(
    txn: &mut supervisor_store::Transaction<'_>,
    duty: &str,
    fence: Option<u64>,
    now: i64,
) -> Result<bool, EngineError> {
    match fence {
        Some(fence) => holds_duty(txn, duty, fence, now).await,
        None => Ok(true),
    }
}

impl Engine {
    /// Creates or replaces the schedule `name`. The definition and the cron rules are
    /// checked first; errors name the field.
    pub async fn create_schedule(
        &self,
        tenant: &str,
        name: &str,
        spec: ScheduleDef,
        def: WorkflowDef,
        vars: BTreeMap<String, String>,
    ) -> Result<ScheduleRecord, EngineError> {
        check_name(name)?;
        let compiled = spec.compile().map_err(|e| {
            let field = match e {
                supervisor_workflow::ScheduleError::Timezone { .. } => "timezone",
                _ => "cron",
            };
            EngineError::InvalidArgument(FieldError::new(field, e.to_string()))
        })?;
        let min = self.inner.cfg.min_schedule_interval;
        let every = compiled.min_interval();
        if every < min {
            return Err(EngineError::InvalidArgument(FieldError::new(
                "cron",
                format!(
                    "{} fires every {}; the shortest interval allowed is {} (engine.min_schedule_interval)",
                    supervisor_model::quote(&spec.cron),
                    humantime::format_duration(every),
                    humantime::format_duration(min)
                ),
            )));
        }
        crate::workflows::check_definition(&def)?;
        // Checked now (a misspelt variable would otherwise fail only at the first tick),
        // stored as given: each run merges them over the definition's.
        let all_vars = supervisor_workflow::run_vars(&def.vars, vars.clone())?;
        crate::workflows::check_run_size(&def, &all_vars)?;
        let now = self.now_micros();
        let record = ScheduleRecord {
            tenant: tenant.to_string(),
            name: name.to_string(),
            next_fire_at: compiled.next_after(now),
            spec,
            def,
            vars,
            paused: false,
            last: now,
            last_fired_at: None,
            last_run: None,
            runs_started: 0,
            created_at: now,
        };
        self.inner
            .db
            .run(|txn| {
                let record = record.clone();
                Box::pin(async move {
                    put(txn, &record)?;
                    Ok::<_, EngineError>(record)
                })
            })
            .await
    }

    /// Up to `limit` schedules of a tenant by name, after the one named `after` when
    /// given; `more` says whether others follow.
    pub async fn list_schedules(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SchedulePage, EngineError> {
        let (mut begin, end) = keyspace::schedule_range(tenant);
        if let Some(after) = after {
            begin = supervisor_store::keys::key_after(&keyspace::schedule(tenant, after));
        }
        let limit = limit.max(1);
        let mut txn = self.inner.db.begin().await?;
        let kvs = txn
            .get_range(
                &begin,
                &end,
                RangeOptions::new().snapshot().limit(limit + 1),
            )
            .await?;
        let (schedules, more) = decode_page("schedule", &kvs, limit)?;
        Ok(SchedulePage { schedules, more })
    }

    /// Pauses or resumes a schedule. Ticks that pass while paused are not caught up.
    pub async fn set_schedule_paused(
        &self,
        tenant: &str,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleRecord, EngineError> {
        check_name(name)?;
        let now = self.now_micros();
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let mut s = load(txn, tenant, name)
                        .await?
                        .ok_or_else(|| not_found(name))?;
                    if s.paused != paused {
                        s.paused = paused;
                        if !paused {
                            s.last = now;
                            s.next_fire_at = s.spec.compile().ok().and_then(|c| c.next_after(now));
                        }
                        put(txn, &s)?;
                    }
                    Ok::<_, EngineError>(s)
                })
            })
            .await
    }

    /// Deletes a schedule; returns it as it was.
    pub async fn delete_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<ScheduleRecord, EngineError> {
        check_name(name)?;
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let s = load(txn, tenant, name)
                        .await?
                        .ok_or_else(|| not_found(name))?;
                    txn.clear(&keyspace::schedule(tenant, name));
                    Ok::<_, EngineError>(s)
                })
            })
            .await
    }

    /// Starts a run of the schedule's workflow now, outside its ticks.
    pub async fn trigger_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<WorkflowRun, EngineError> {
        check_name(name)?;
        let now = self.now_micros();
        let id = TaskId::generate();
        let cfg = &self.inner.cfg;
        let run = self
            .inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let mut s = load(txn, tenant, name)
                        .await?
                        .ok_or_else(|| not_found(name))?;
                    let mut vars = s.def.vars.clone();
                    vars.extend(s.vars.clone());
                    let run =
                        start_run_in_txn(txn, tenant, id, s.def.clone(), vars, now, cfg).await?;
                    s.runs_started += 1;
                    s.last_run = Some(run.id);
                    put(txn, &s)?;
                    Ok::<_, EngineError>(run)
                })
            })
            .await?;
        self.inner.ready.notify_one();
        Ok(run)
    }

    /// Takes or renews the lease on a singleton duty for `ttl`. Returns the fencing token
    /// while `node` holds it, `None` while another live node does.
    pub async fn acquire_singleton(
        &self,
        duty: &str,
        node: &NodeIdentity,
        ttl: Duration,
    ) -> Result<Option<u64>, EngineError> {
        let now = self.now_micros();
        let key = keyspace::singleton(duty);
        self.inner
            .db
            .run(|txn| {
                let key = key.clone();
                Box::pin(async move {
                    let current = match txn.get(&key).await? {
                        Some(b) => Some(decode::<SingletonLease>("singleton lease", &b)?),
                        None => None,
                    };
                    // A fenced incarnation takes and keeps nothing.
                    if crate::nodes::EpochCheck::default()
                        .refusal(txn, &node.id, node.epoch)
                        .await?
                        .is_some()
                    {
                        return Ok(None);
                    }
                    let mine = current
                        .as_ref()
                        .is_some_and(|l| l.node == node.id && l.epoch == node.epoch);
                    // Free when it lapsed, or at once when its holder was fenced or
                    // replaced by a newer start (no clock comparison needed then).
                    let mut free = current.as_ref().is_none_or(|l| l.expires_at <= now);
                    if let Some(l) = current.as_ref().filter(|_| !mine && !free) {
                        free = crate::nodes::EpochCheck::default()
                            .refusal(txn, &l.node, l.epoch)
                            .await?
                            .is_some();
                    }
                    if !mine && !free {
                        return Ok(None);
                    }
                    let fence = match (&current, mine) {
                        (Some(l), true) => l.fence,
                        (Some(l), false) => l.fence + 1,
                        (None, _) => 1,
                    };
                    let lease = SingletonLease {
                        node: node.id.clone(),
                        epoch: node.epoch,
                        expires_at: now + ttl.as_micros() as i64,
                        fence,
                    };
                    txn.set(&key, &encode(&lease)?);
                    Ok::<_, EngineError>(Some(fence))
                })
            })
            .await
    }

    /// Fires every due schedule (of every tenant) under the scheduler lease `fence`.
    /// Returns how many runs started and when the next tick is due.
    pub async fn fire_due_schedules(
        &self,
        fence: u64,
    ) -> Result<(usize, Option<i64>), EngineError> {
        let now = self.now_micros();
        let (begin, end) = keyspace::all_schedules();
        let all: Vec<ScheduleRecord> = {
            let mut txn = self.inner.db.begin().await?;
            let kvs = txn
                .get_range(&begin, &end, RangeOptions::new().snapshot())
                .await?;
            kvs.iter()
                .map(|kv| decode("schedule", &kv.value))
                .collect::<Result<_, _>>()?
        };
        let mut fired = 0;
        let mut next_due: Option<i64> = None;
        let cfg = &self.inner.cfg;
        for s in all {
            if s.paused {
                continue;
            }
            let (started, next) = self
                .inner
                .db
                .run(|txn| {
                    let (tenant, name) = (s.tenant.clone(), s.name.clone());
                    Box::pin(async move {
                        // Refuse to fire under a stale lease.
                        if !holds_duty(txn, SCHEDULER_DUTY, fence, now).await? {
                            return Ok((false, None));
                        }
                        let Some(mut s) = load(txn, &tenant, &name).await? else {
                            return Ok((false, None));
                        };
                        if s.paused {
                            return Ok((false, None));
                        }
                        let Ok(compiled) = s.spec.compile() else {
                            return Ok((false, None));
                        };
                        let firing = compiled.due(s.last, now);
                        let Some(tick) = firing.scheduled_for else {
                            return Ok((false, firing.next));
                        };
                        s.last = tick;
                        s.next_fire_at = firing.next;
                        let mut started = false;
                        if firing.fire {
                            let mut vars = s.def.vars.clone();
                            vars.extend(s.vars.clone());
                            let run = start_run_in_txn(
                                txn,
                                &tenant,
                                TaskId::generate(),
                                s.def.clone(),
                                vars,
                                now,
                                cfg,
                            )
                            .await?;
                            s.last_fired_at = Some(now);
                            s.last_run = Some(run.id);
                            s.runs_started += 1;
                            started = true;
                        }
                        put(txn, &s)?;
                        Ok::<_, EngineError>((started, firing.next))
                    })
                })
                .await?;
            if started {
                fired += 1;
            }
            if let Some(n) = next {
                next_due = Some(next_due.map_or(n, |d| d.min(n)));
            }
        }
        if fired > 0 {
            self.inner.ready.notify_one();
        }
        Ok((fired, next_due))
    }
}
