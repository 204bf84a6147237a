//! The roller: folds closed minutes into hour and day rows, exactly once, and drops rows
//! past their retention. One node at a time does it, the holder of the roller duty (a
//! store lease with a fencing token checked in each of its transactions).
//!
//! Exactly once without making completions read anything: a completion marks its
//! `(minute, tenant)` as changed; the roller, in one transaction, reads the marks of
//! closed minutes (with a read conflict, so a completion marking one meanwhile makes it
//! retry), clears them, and for each row of those minutes adds to its hour and day rows
//! what the row gained since the roller last looked (the row's value minus the amount
//! recorded as folded, which it then records). A late completion (a node with a slow
//! clock, a commit that outlived the grace) adds to a minute already folded and marks it
//! again; the next roll folds just what it added. Folding twice folds nothing the second
//! time. The watermark (`("rollupmark",)`) says up to which minute every mark was folded at
//! least once: queries read hour and day rows before it and minute rows after.

use std::collections::BTreeMap;

use supervisor_model::{Granularity, HOUR_ROWS_KEPT_MS, MINUTE_ROWS_KEPT_MS, RollupDims};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::counter;
use crate::{Engine, EngineError, keyspace};

/// The duty of folding and expiring the analytics rollups.
pub const ROLLER_DUTY: &str = "roller";

/// How long after a minute ends the roller waits before folding it, so completions
/// committing at the minute's end usually land before it looks (those that do not are
/// folded on the next roll).
const GRACE_MS: i64 = 5_000;

/// Changed minutes (of one tenant each) folded per transaction, so a transaction stays
/// well under the store's size and time limits.
const MINUTES_PER_TXN: usize = 8;

/// What one roll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roll {
    /// Minutes (of one tenant each) folded into hours and days.
    pub minutes_folded: usize,
    /// Every minute before this one (unix microseconds) has been folded.
    pub watermark_micros: i64,
    /// The roll was on behalf of the roller duty, which has passed to another node:
    /// it stopped at once.
    pub lost_duty: bool,
}

/// What one fold transaction did.
enum Step {
    Folded(usize),
    Done(i64),
    LostDuty,
}

/// Whether the caller still holds the duty granted with `fence` (always, without one).
async fn holds(
    txn: &mut Transaction<'_>,
    duty: Option<u64>,
    now: i64,
) -> Result<bool, EngineError> {
    crate::schedules::holds_duty_if(txn, ROLLER_DUTY, duty, now).await
}

/// Folds what one tenant's minute gained since it was last folded.
async fn fold_minute(
    txn: &mut Transaction<'_>,
    tenant: &str,
    minute: i64,
) -> Result<(), EngineError> {
    let g = Granularity::Minute;
    let (begin, end) = keyspace::rollup_periods(g, tenant, minute, minute + g.millis());
    let rows = txn
        .get_range(&begin, &end, RangeOptions::new().snapshot())
        .await?;
    let (begin, end) = keyspace::rollup_folded_minute(tenant, minute);
    let mut folded: BTreeMap<(RollupDims, String), i64> = txn
        .get_range(&begin, &end, RangeOptions::new().snapshot())
        .await?
        .iter()
        .filter_map(|kv| {
            let (_, dims, field) = keyspace::parse_rollup_folded(&kv.key)?;
            Some(((dims, field), counter(Some(&kv.value))))
        })
        .collect();
    let hour = Granularity::Hour.start_of(minute);
    let day = Granularity::Day.start_of(minute);
    for kv in &rows {
        // A row this version cannot read (a newer version's name) is left as it is.
        let Some((_, dims, field)) = keyspace::parse_rollup(&kv.key) else {
            continue;
        };
        let value = counter(Some(&kv.value));
        let before = folded.remove(&(dims.clone(), field.clone())).unwrap_or(0);
        let gained = value.wrapping_sub(before);
        if gained == 0 {
            continue;
        }
        txn.atomic_add(
            &keyspace::rollup(Granularity::Hour, hour, &dims, &field),
            gained,
        );
        txn.atomic_add(
            &keyspace::rollup(Granularity::Day, day, &dims, &field),
            gained,
        );
        txn.set(
            &keyspace::rollup_folded(minute, &dims, &field),
            &value.to_le_bytes(),
        );
    }
    Ok(())
}

impl Engine {
    /// Folds every closed minute changed since the last roll into hour and day rows and
    /// advances the watermark. Safe to run anywhere, any number of times, concurrently
    /// with completions and with itself: nothing is folded twice.
    pub async fn roll_analytics(&self) -> Result<Roll, EngineError> {
        self.roll(None).await
    }

    /// Like [`Engine::roll_analytics`], on behalf of the holder of the roller duty
    /// ([`ROLLER_DUTY`]) granted with `fence`: stops once the duty passed on.
    pub async fn roll_analytics_as_roller(&self, fence: u64) -> Result<Roll, EngineError> {
        self.roll(Some(fence)).await
    }

    async fn roll(&self, duty: Option<u64>) -> Result<Roll, EngineError> {
        let now = self.now_micros();
        let closed_end = Granularity::Minute.start_of(now.div_euclid(1000) - GRACE_MS);
        let mut roll = Roll::default();
        loop {
            let step = self
                .inner
                .db
                .run(|txn| {
                    Box::pin(async move {
                        if !holds(txn, duty, now).await? {
                            return Ok(Step::LostDuty);
                        }
                        let (begin, end) = keyspace::rollup_dirty_before(closed_end);
                        // Not a snapshot read: a completion marking one of these minutes
                        // meanwhile makes this transaction retry and fold it too.
                        let marks = txn
                            .get_range(&begin, &end, RangeOptions::new().limit(MINUTES_PER_TXN))
                            .await?;
                        if marks.is_empty() {
                            let key = keyspace::rollup_watermark();
                            let mark = counter(txn.get(&key).await?.as_deref());
                            if mark < closed_end {
                                txn.set(&key, &closed_end.to_le_bytes());
                            }
                            return Ok(Step::Done(mark.max(closed_end)));
                        }
                        for kv in &marks {
                            txn.clear(&kv.key);
                            if let Some((minute, tenant)) = keyspace::parse_rollup_dirty(&kv.key) {
                                fold_minute(txn, &tenant, minute).await?;
                            }
                        }
                        Ok::<_, EngineError>(Step::Folded(marks.len()))
                    })
                })
                .await?;
            match step {
                Step::Folded(n) => roll.minutes_folded += n,
                Step::Done(mark) => {
                    roll.watermark_micros = mark.saturating_mul(1000);
                    return Ok(roll);
                }
                Step::LostDuty => {
                    roll.lost_duty = true;
                    return Ok(roll);
                }
            }
        }
    }

    /// Drops minute rows older than 48 hours and hour rows older than 90 days (day rows
    /// are kept), on behalf of the holder of the roller duty granted with `fence`
    /// (without one, unconditionally). Minutes not folded yet are never dropped. Returns
    /// whether the duty was lost.
    pub async fn expire_analytics(&self, fence: Option<u64>) -> Result<bool, EngineError> {
        let now = self.now_micros();
        let now_ms = now.div_euclid(1000);
        let minute_tenants = self.rollup_tenants(Granularity::Minute).await?;
        let hour_tenants = self.rollup_tenants(Granularity::Hour).await?;
        let (minute_tenants, hour_tenants) = (&minute_tenants, &hour_tenants);
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    if !holds(txn, fence, now).await? {
                        return Ok(true);
                    }
                    let mark = counter(
                        txn.get_snapshot(&keyspace::rollup_watermark())
                            .await?
                            .as_deref(),
                    );
                    let cut = mark.min(Granularity::Minute.start_of(now_ms - MINUTE_ROWS_KEPT_MS));
                    let (begin, end) = keyspace::rollup_dirty_before(cut);
                    // A late completion that changed an old minute is folded first (and
                    // marking one meanwhile makes this transaction retry).
                    let unfolded = !txn
                        .get_range(&begin, &end, RangeOptions::new().limit(1))
                        .await?
                        .is_empty();
                    if !unfolded {
                        for t in minute_tenants {
                            let (b, e) = keyspace::rollup_before(Granularity::Minute, t, cut);
                            txn.clear_range(&b, &e);
                            let (b, e) = keyspace::rollup_folded_before(t, cut);
                            txn.clear_range(&b, &e);
                        }
                    }
                    let cut = Granularity::Hour.start_of(now_ms - HOUR_ROWS_KEPT_MS);
                    for t in hour_tenants {
                        let (b, e) = keyspace::rollup_before(Granularity::Hour, t, cut);
                        txn.clear_range(&b, &e);
                    }
                    Ok::<_, EngineError>(false)
                })
            })
            .await
    }
}
