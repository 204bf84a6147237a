//! Analytics from the store, not from memory: what finished tasks add up to, per minute,
//! hour and day, by tenant, type, specialty, provider, prompt size and repository, and the
//! queries over it (summaries of a window grouped by any of those, trends period by
//! period) and the predictions learnt from it.
//!
//! The counts are durable and cluster-wide because they live in the store: a completion
//! adds to its minute's row in its own transaction ([`crate::rollups`]), and the holder of
//! the roller duty folds closed minutes into hour and day rows ([`roller`]) and drops
//! minute rows after 48 hours and hour rows after 90 days (day rows stay). Any node
//! answers a query from the rows; none keeps counts in memory, so a restart or a failover
//! loses nothing. A query reads the fewest rows that cover its window ([`plan`]).

mod plan;
mod predictions;
mod roller;

use std::collections::BTreeMap;

use supervisor_model::{
    Dimension, FieldError, Granularity, MAX_SUMMARY_GROUPS, MAX_TREND_PERIODS, RollupDims,
    RollupGroup, RollupStats,
};
use supervisor_store::{KeyValue, RangeOptions};

use crate::codec::counter;
use crate::{Engine, EngineError, keyspace};

pub(crate) use predictions::PredictorCache;
pub use predictions::{Predictors, prediction_query};
pub use roller::{ROLLER_DUTY, Roll};

/// Which rows a query reads: a tenant's or every tenant's, in a window, matching a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalyticsQuery {
    /// The tenant whose tasks count; `None`: every tenant (cluster admins only: the
    /// caller checks).
    pub tenant: Option<String>,
    /// Start of the window (unix microseconds), inclusive.
    pub from_micros: i64,
    /// End of the window (unix microseconds), exclusive.
    pub to_micros: i64,
    /// Only tasks with these values (the fields left `None` match anything).
    pub filter: RollupGroup,
}

/// Finished tasks of a window, grouped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalyticsSummary {
    /// The window the rows cover: the one asked for, its edges rounded out to the minute,
    /// or to the hour or day where finer rows are no longer kept.
    pub from_micros: i64,
    /// Its end (exclusive).
    pub to_micros: i64,
    /// One entry per group, most tasks finished first.
    pub groups: Vec<(RollupGroup, RollupStats)>,
    /// Every group together.
    pub total: RollupStats,
    /// Whether groups beyond [`MAX_SUMMARY_GROUPS`] were left out (the total counts them).
    pub truncated: bool,
}

/// Finished tasks period by period.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsTrend {
    /// The length of each period.
    pub granularity: Granularity,
    /// One entry per period of the window (aligned to the granularity), oldest first,
    /// empty periods included: its start (unix microseconds) and its counts.
    pub points: Vec<(i64, RollupStats)>,
}

/// Rows read from the store per transaction of a scan.
const SCAN_PAGE: usize = 10_000;

fn window_ms(q: &AnalyticsQuery) -> Result<(i64, i64), EngineError> {
    if q.from_micros >= q.to_micros {
        return Err(EngineError::InvalidArgument(FieldError::new(
            "window",
            "the window's start must come before its end",
        )));
    }
    Ok((q.from_micros.div_euclid(1000), ceil_div(q.to_micros, 1000)))
}

fn ceil_div(n: i64, d: i64) -> i64 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) == 0 { q } else { q + 1 }
}

impl Engine {
    /// Finished tasks of `q`'s window grouped by `group_by` (no dimension: one group),
    /// with success rate, latency quantiles, attempts, tokens and cost per group.
    pub async fn analytics_summary(
        &self,
        q: &AnalyticsQuery,
        group_by: &[Dimension],
    ) -> Result<AnalyticsSummary, EngineError> {
        let (from_ms, to_ms) = window_ms(q)?;
        let kept = self.rows_kept().await?;
        let plan = plan::summary(from_ms, to_ms, kept);
        let mut by_dims: BTreeMap<RollupDims, RollupStats> = BTreeMap::new();
        self.read_rows(q.tenant.as_deref(), &plan, |_, dims, field, n| {
            if q.filter.matches(&dims) {
                crate::rollups::add_counter(by_dims.entry(dims).or_default(), field, n);
            }
        })
        .await?;
        let mut groups: BTreeMap<RollupGroup, RollupStats> = BTreeMap::new();
        let mut total = RollupStats::default();
        for (dims, stats) in &by_dims {
            total.merge(stats);
            groups
                .entry(RollupGroup::of(dims, group_by))
                .or_default()
                .merge(stats);
        }
        let mut groups: Vec<(RollupGroup, RollupStats)> =
            groups.into_iter().filter(|(_, s)| s.finished > 0).collect();
        groups.sort_by(|(ga, a), (gb, b)| b.finished.cmp(&a.finished).then_with(|| ga.cmp(gb)));
        let truncated = groups.len() > MAX_SUMMARY_GROUPS;
        groups.truncate(MAX_SUMMARY_GROUPS);
        Ok(AnalyticsSummary {
            from_micros: plan.from_ms.saturating_mul(1000),
            to_micros: plan.to_ms.saturating_mul(1000),
            groups,
            total,
            truncated,
        })
    }

    /// Finished tasks of `q`'s window (aligned to whole periods) period by period. A trend
    /// by minute reaches back 48 hours and one by hour 90 days (how long those rows are
    /// kept), and one covers at most [`MAX_TREND_PERIODS`] periods.
    pub async fn analytics_trend(
        &self,
        q: &AnalyticsQuery,
        granularity: Granularity,
    ) -> Result<AnalyticsTrend, EngineError> {
        let (from_ms, to_ms) = window_ms(q)?;
        let g = granularity;
        let (from_ms, to_ms) = (g.start_of(from_ms), plan::ceil(g, to_ms));
        let kept = self.rows_kept().await?;
        let too_old = match g {
            Granularity::Minute => (from_ms < kept.minutes_from_ms)
                .then_some("minute rows are kept 48 hours: a trend by minute starts at most 48 hours ago; ask for hours"),
            Granularity::Hour => (from_ms < kept.hours_from_ms)
                .then_some("hour rows are kept 90 days: a trend by hour starts at most 90 days ago; ask for days"),
            Granularity::Day => None,
        };
        if let Some(why) = too_old {
            return Err(EngineError::InvalidArgument(FieldError::new("window", why)));
        }
        let periods = (to_ms - from_ms) / g.millis();
        if periods > MAX_TREND_PERIODS as i64 {
            return Err(EngineError::InvalidArgument(FieldError::new(
                "window",
                format!(
                    "a trend by {g} covers at most {MAX_TREND_PERIODS} periods and this window holds {periods}; shorten the window or ask for longer periods",
                    g = g.as_str()
                ),
            )));
        }
        let plan = plan::trend(from_ms, to_ms, kept, g);
        let mut points: BTreeMap<i64, RollupStats> = (0..periods)
            .map(|i| (from_ms + i * g.millis(), RollupStats::default()))
            .collect();
        self.read_rows(q.tenant.as_deref(), &plan, |period, dims, field, n| {
            if q.filter.matches(&dims)
                && let Some(stats) = points.get_mut(&g.start_of(period))
            {
                crate::rollups::add_counter(stats, field, n);
            }
        })
        .await?;
        Ok(AnalyticsTrend {
            granularity: g,
            points: points
                .into_iter()
                .map(|(start, stats)| (start.saturating_mul(1000), stats))
                .collect(),
        })
    }

    /// Every tenant's stats per dimensions over `[from_ms, to_ms)` (hour rows and the
    /// minutes not folded yet): what predictions learn from.
    pub(crate) async fn rollups_by_dims(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<BTreeMap<RollupDims, RollupStats>, EngineError> {
        let kept = self.rows_kept().await?;
        let from_ms = Granularity::Hour
            .start_of(from_ms)
            .max(plan::ceil(Granularity::Hour, kept.hours_from_ms));
        let plan = plan::trend(from_ms, to_ms, kept, Granularity::Hour);
        let mut by_dims: BTreeMap<RollupDims, RollupStats> = BTreeMap::new();
        self.read_rows(None, &plan, |_, dims, field, n| {
            crate::rollups::add_counter(by_dims.entry(dims).or_default(), field, n);
        })
        .await?;
        Ok(by_dims)
    }

    /// Every row of granularity `g` of `tenant` added up (tests look at one granularity).
    #[cfg(test)]
    pub(crate) async fn rollup_rows_total(
        &self,
        g: Granularity,
        tenant: &str,
    ) -> Result<RollupStats, EngineError> {
        let mut total = RollupStats::default();
        self.scan(keyspace::rollup_tenant(g, tenant), |kv| {
            if let Some((_, _, field)) = keyspace::parse_rollup(&kv.key) {
                crate::rollups::add_counter(&mut total, &field, counter(Some(&kv.value)));
            }
        })
        .await?;
        Ok(total)
    }

    /// What the store keeps now: where the roller's watermark stands (0 before its first
    /// roll: every row is then read from minutes).
    async fn rows_kept(&self) -> Result<plan::Kept, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        let mark = txn.get_snapshot(&keyspace::rollup_watermark()).await?;
        let now_ms = self.now_micros().div_euclid(1000);
        Ok(plan::Kept::at(now_ms, counter(mark.as_deref()).max(0)))
    }

    /// Calls `visit(period_ms, dims, field, value)` for every counter of the rows `plan`
    /// names, of `tenant` or of every tenant.
    async fn read_rows(
        &self,
        tenant: Option<&str>,
        plan: &plan::Plan,
        mut visit: impl FnMut(i64, RollupDims, &str, i64),
    ) -> Result<(), EngineError> {
        let mut tenants: BTreeMap<Granularity, Vec<String>> = BTreeMap::new();
        for piece in &plan.pieces {
            let g = piece.granularity;
            if let std::collections::btree_map::Entry::Vacant(entry) = tenants.entry(g) {
                entry.insert(match tenant {
                    Some(t) => vec![t.to_string()],
                    None => self.rollup_tenants(g).await?,
                });
            }
            for t in tenants.get(&g).map(Vec::as_slice).unwrap_or_default() {
                let range = keyspace::rollup_periods(g, t, piece.from_ms, piece.to_ms);
                self.scan(range, |kv| {
                    if let Some((period, dims, field)) = keyspace::parse_rollup(&kv.key) {
                        visit(period, dims, &field, counter(Some(&kv.value)));
                    }
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The tenants with rows of granularity `g` (one short read per tenant: each read
    /// jumps past the tenant it found).
    pub(crate) async fn rollup_tenants(&self, g: Granularity) -> Result<Vec<String>, EngineError> {
        let (mut begin, end) = keyspace::rollup_tenants(g);
        let mut txn = self.inner.db.begin().await?;
        let mut tenants = Vec::new();
        loop {
            let kvs = txn
                .get_range(&begin, &end, RangeOptions::new().snapshot().limit(1))
                .await?;
            let Some(kv) = kvs.first() else {
                return Ok(tenants);
            };
            match keyspace::parse_rollup_tenant(&kv.key) {
                Some(t) => {
                    begin = keyspace::rollup_tenant(g, &t).1;
                    tenants.push(t);
                }
                None => begin = supervisor_store::keys::key_after(&kv.key),
            }
        }
    }

    /// Visits every key of `[begin, end)`, a page per transaction (snapshot reads), so a
    /// long range never outlives a transaction's time limit.
    async fn scan(
        &self,
        (mut begin, end): (Vec<u8>, Vec<u8>),
        mut visit: impl FnMut(&KeyValue),
    ) -> Result<(), EngineError> {
        loop {
            let mut txn = self.inner.db.begin().await?;
            let kvs = txn
                .get_range(
                    &begin,
                    &end,
                    RangeOptions::new().snapshot().limit(SCAN_PAGE),
                )
                .await?;
            kvs.iter().for_each(&mut visit);
            match kvs.last() {
                Some(last) if kvs.len() == SCAN_PAGE => {
                    begin = supervisor_store::keys::key_after(&last.key);
                }
                _ => return Ok(()),
            }
        }
    }
}
