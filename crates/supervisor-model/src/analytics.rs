//! What finished tasks add up to: the durable analytics rollups and the samples they are
//! made of.
//!
//! A task that reaches a terminal status becomes one [`FinishedSample`]; samples are
//! added into [`RollupStats`] per period ([`Granularity`]) and per [`RollupDims`] (tenant,
//! type, specialty, provider, prompt size class, repository or not). Everything here is
//! plain arithmetic on counters, so a rollup can be kept as atomic adds in the store and
//! two rollups merge by adding. Latency quantiles come from a log-scale histogram
//! ([`LatencyHistogram`]) whose buckets are about 19% wide, so a quantile read from it is
//! within 19% of the true one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Specialty, Task, TaskStatus, TaskType};

/// How long one rollup period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// The period's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Granularity::Minute => 60_000,
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }

    /// The start (milliseconds since the Unix epoch, UTC) of the period holding `at_ms`.
    pub fn start_of(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.millis()) * self.millis()
    }

    /// The stable name used in keys, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

/// How long minute rows are kept: 48 hours. Windows reaching further back are read from
/// hour rows (their edges rounded out to whole hours).
pub const MINUTE_ROWS_KEPT_MS: i64 = 48 * 3_600_000;
/// How long hour rows are kept: 90 days. Windows reaching further back are read from day
/// rows (their edges rounded out to whole days), which are kept for good.
pub const HOUR_ROWS_KEPT_MS: i64 = 90 * 86_400_000;
/// Most periods one trend answers (48 hours of minutes, 90 days of hours, about eight
/// years of days), so its answer stays well under the response limit.
pub const MAX_TREND_PERIODS: usize = 2880;
/// Most groups one summary answers; the largest groups (by tasks finished) are kept.
pub const MAX_SUMMARY_GROUPS: usize = 1000;

/// Prompt sizes are grouped into four classes so history can tell a one-line request from
/// a long specification without a dimension per byte count.
pub const SIZE_CLASS_NAMES: [&str; 4] = ["<1KiB", "1-4KiB", "4-16KiB", ">=16KiB"];

/// The size class (index into [`SIZE_CLASS_NAMES`]) of a prompt of `bytes` bytes.
pub fn size_class(bytes: usize) -> u8 {
    match bytes {
        0..1024 => 0,
        1024..4096 => 1,
        4096..16384 => 2,
        _ => 3,
    }
}

/// What a rollup row is grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RollupDims {
    /// The task's tenant.
    pub tenant: String,
    /// The task's type.
    pub task_type: TaskType,
    /// The specialty the task was routed to ([`crate::analyze`]).
    pub specialty: Specialty,
    /// The provider of the task's last attempt; empty when no attempt ran (cancelled
    /// while queued, failed at admission).
    pub provider: String,
    /// The prompt's size class ([`size_class`]).
    pub size_class: u8,
    /// Whether the task works on a repository (its context names one).
    pub repository: bool,
}

named_enum!(
    /// A dimension rollups can be grouped or filtered by.
    Dimension, "dimension", {
        /// The task's tenant.
        Tenant => "tenant",
        /// The task's type.
        TaskType => "type",
        /// The specialty it was routed to.
        Specialty => "specialty",
        /// The provider of its last attempt.
        Provider => "provider",
        /// Its prompt's size class.
        SizeClass => "size",
        /// Whether it works on a repository.
        Repository => "repository",
    }
);

/// Some of the dimensions of a rollup row: a summary's group (the dimensions grouped by
/// are set, the others `None`), or a filter (the dimensions it requires are set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RollupGroup {
    /// The tenant.
    pub tenant: Option<String>,
    /// The task type.
    pub task_type: Option<TaskType>,
    /// The specialty.
    pub specialty: Option<Specialty>,
    /// The provider (`Some("")`: tasks no attempt of which reached a provider).
    pub provider: Option<String>,
    /// The prompt size class ([`size_class`]).
    pub size_class: Option<u8>,
    /// Whether the task works on a repository.
    pub repository: Option<bool>,
}

impl RollupGroup {
    /// The group of `dims` when grouping by `by` (every other dimension left out).
    pub fn of(dims: &RollupDims, by: &[Dimension]) -> RollupGroup {
        let has = |d| by.contains(&d);
        RollupGroup {
            tenant: has(Dimension::Tenant).then(|| dims.tenant.clone()),
            task_type: has(Dimension::TaskType).then_some(dims.task_type),
            specialty: has(Dimension::Specialty).then_some(dims.specialty),
            provider: has(Dimension::Provider).then(|| dims.provider.clone()),
            size_class: has(Dimension::SizeClass).then_some(dims.size_class),
            repository: has(Dimension::Repository).then_some(dims.repository),
        }
    }

    /// Whether `dims` has every value this group (as a filter) sets.
    pub fn matches(&self, dims: &RollupDims) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == dims.tenant)
            && self.task_type.is_none_or(|t| t == dims.task_type)
            && self.specialty.is_none_or(|s| s == dims.specialty)
            && self.provider.as_ref().is_none_or(|p| *p == dims.provider)
            && self.size_class.is_none_or(|c| c == dims.size_class)
            && self.repository.is_none_or(|r| r == dims.repository)
    }
}

/// One finished task, as the rollups count it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedSample {
    /// What it is grouped by.
    pub dims: RollupDims,
    /// Its terminal status.
    pub status: TaskStatus,
    /// Milliseconds from submit to its terminal status.
    pub latency_ms: u64,
    /// Attempts it took (0 when none started).
    pub attempts: u32,
    /// Input tokens over every attempt.
    pub input_tokens: u64,
    /// Output tokens over every attempt.
    pub output_tokens: u64,
    /// Cost over every attempt, in millionths of a US dollar.
    pub cost_micros: u64,
    /// When it finished, milliseconds since the Unix epoch.
    pub finished_at: i64,
}

impl FinishedSample {
    /// What `task` adds to the rollups, once terminal (`None` before): its specialty as
    /// [`crate::analyze`] picks it, the provider of its last attempt, its latency from
    /// submit to its terminal status, and its attempts, tokens and cost over every
    /// attempt.
    pub fn of(task: &Task) -> Option<FinishedSample> {
        if !task.status.is_terminal() {
            return None;
        }
        let finished_at = task.finished_at.unwrap_or(task.updated_at);
        let specialty = crate::analyze(
            task.task_type,
            &task.labels,
            &task.prompt,
            task.routing.specialty,
        )
        .specialty;
        let provider = task
            .attempts
            .last()
            .map(|a| a.provider.clone())
            .or_else(|| task.result.as_ref().map(|r| r.provider.clone()))
            .unwrap_or_default();
        let repository = task
            .context
            .get(crate::REPO_CONTEXT_KEY)
            .is_some_and(|r| !r.trim().is_empty());
        let (input_tokens, output_tokens) = task.attempts.iter().fold((0u64, 0u64), |(i, o), a| {
            (
                i.saturating_add(a.usage.input_tokens),
                o.saturating_add(a.usage.output_tokens),
            )
        });
        Some(FinishedSample {
            dims: RollupDims {
                tenant: task.tenant.clone(),
                task_type: task.task_type,
                specialty,
                provider,
                size_class: size_class(task.prompt.len()),
                repository,
            },
            status: task.status,
            latency_ms: (finished_at.saturating_sub(task.created_at).max(0) / 1000) as u64,
            attempts: task.attempt,
            input_tokens,
            output_tokens,
            cost_micros: task.cost_micros,
            finished_at: finished_at.div_euclid(1000),
        })
    }
}

/// Counts of finished tasks in one period and group; merging two adds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupStats {
    /// Tasks that finished (every terminal status).
    pub finished: u64,
    /// Of them, succeeded.
    pub succeeded: u64,
    /// Of them, failed.
    pub failed: u64,
    /// Of them, cancelled.
    pub cancelled: u64,
    /// Attempts over all of them.
    pub attempts: u64,
    /// Input tokens over all of them.
    pub input_tokens: u64,
    /// Output tokens over all of them.
    pub output_tokens: u64,
    /// Cost over all of them, in millionths of a US dollar.
    pub cost_micros: u64,
    /// Submit → terminal latency.
    pub latency: LatencyHistogram,
}

impl RollupStats {
    /// Adds one finished task.
    pub fn add(&mut self, sample: &FinishedSample) {
        self.finished += 1;
        match sample.status {
            TaskStatus::Succeeded => self.succeeded += 1,
            TaskStatus::Failed => self.failed += 1,
            TaskStatus::Cancelled => self.cancelled += 1,
            // Not terminal: never sampled; counted as finished only.
            TaskStatus::Queued | TaskStatus::Running | TaskStatus::RetryWait => {}
        }
        self.attempts += u64::from(sample.attempts);
        self.input_tokens += sample.input_tokens;
        self.output_tokens += sample.output_tokens;
        self.cost_micros += sample.cost_micros;
        self.latency.record(sample.latency_ms);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &RollupStats) {
        self.finished += other.finished;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.attempts += other.attempts;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_micros += other.cost_micros;
        self.latency.merge(&other.latency);
    }

    /// Succeeded out of succeeded and failed (cancelled tasks say nothing about success);
    /// `None` when there is neither.
    pub fn success_rate(&self) -> Option<f64> {
        let decided = self.succeeded + self.failed;
        (decided > 0).then(|| self.succeeded as f64 / decided as f64)
    }
}

/// Bucket `i` of a [`LatencyHistogram`] holds latencies in `[B^(i-1), B^i)` milliseconds
/// with `B = 2^(1/4)`; bucket 0 holds 0 ms. 128 buckets reach past 3,000 days.
const BUCKETS_PER_DOUBLING: f64 = 4.0;
/// The largest bucket index; longer latencies are counted there.
pub const MAX_LATENCY_BUCKET: u16 = 127;

/// A log-scale histogram of latencies in milliseconds, kept sparse (only buckets with
/// counts). Quantiles read from it are the upper bound of the bucket holding them, so they
/// overstate by at most one bucket width (19%).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Count per bucket index.
    pub buckets: BTreeMap<u16, u64>,
}

impl LatencyHistogram {
    /// The bucket holding `ms`.
    pub fn bucket_of(ms: u64) -> u16 {
        if ms == 0 {
            return 0;
        }
        let b = ((ms as f64).log2() * BUCKETS_PER_DOUBLING).floor() as i64 + 1;
        b.clamp(1, i64::from(MAX_LATENCY_BUCKET)) as u16
    }

    /// The largest latency bucket `b` holds, in milliseconds (its upper bound).
    pub fn upper_bound_ms(b: u16) -> u64 {
        if b == 0 {
            return 0;
        }
        (2f64.powf(f64::from(b) / BUCKETS_PER_DOUBLING)).ceil() as u64
    }

    /// Counts one latency.
    pub fn record(&mut self, ms: u64) {
        self.add_to_bucket(Self::bucket_of(ms), 1);
    }

    /// Adds `n` to bucket `b` (as a stored rollup is read back).
    pub fn add_to_bucket(&mut self, b: u16, n: u64) {
        if n > 0 {
            *self.buckets.entry(b.min(MAX_LATENCY_BUCKET)).or_default() += n;
        }
    }

    /// Adds every bucket of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (&b, &n) in &other.buckets {
            self.add_to_bucket(b, n);
        }
    }

    /// How many latencies it holds.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `q` quantile (0.0–1.0) in milliseconds, as the upper bound of its bucket;
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: the smallest count covering q of the total.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&b, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(Self::upper_bound_ms(b));
            }
        }
        self.buckets.keys().last().map(|&b| Self::upper_bound_ms(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_a_bucket_whose_bound_covers_it_within_a_fifth() {
        for ms in [1u64, 2, 3, 7, 10, 99, 1000, 12_345, 3_600_000, 86_400_000] {
            let b = LatencyHistogram::bucket_of(ms);
            let hi = LatencyHistogram::upper_bound_ms(b);
            assert!(hi >= ms, "{ms} ms in bucket {b} bounded by {hi}");
            assert!(
                (hi as f64) <= ms as f64 * 1.2 + 1.0,
                "{ms} ms bounded by {hi}"
            );
        }
        assert_eq!(LatencyHistogram::bucket_of(0), 0);
        assert_eq!(LatencyHistogram::bucket_of(u64::MAX), MAX_LATENCY_BUCKET);
    }

    #[test]
    fn quantiles_come_from_ranks() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(ms * 10);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((500..=600).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((990..=1200).contains(&p99), "p99 {p99}");
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn merging_adds_and_success_ignores_cancelled() {
        let dims = RollupDims {
            tenant: "t".into(),
            task_type: TaskType::Testing,
            specialty: Specialty::TestEngineer,
            provider: "mock".into(),
            size_class: size_class(10),
            repository: false,
        };
        let sample = |status| FinishedSample {
            dims: dims.clone(),
            status,
            latency_ms: 100,
            attempts: 1,
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: 7,
            finished_at: 0,
        };
        let mut a = RollupStats::default();
        a.add(&sample(TaskStatus::Succeeded));
        a.add(&sample(TaskStatus::Cancelled));
        let mut b = RollupStats::default();
        b.add(&sample(TaskStatus::Failed));
        a.merge(&b);
        assert_eq!(a.finished, 3);
        assert_eq!(a.cost_micros, 21);
        assert_eq!(a.latency.count(), 3);
        assert_eq!(a.success_rate(), Some(0.5));
    }

    #[test]
    fn groups_project_and_filters_match() {
        let dims = RollupDims {
            tenant: "t".into(),
            task_type: TaskType::Testing,
            specialty: Specialty::TestEngineer,
            provider: "mock".into(),
            size_class: 1,
            repository: true,
        };
        let g = RollupGroup::of(&dims, &[Dimension::Provider, Dimension::TaskType]);
        assert_eq!(g.provider.as_deref(), Some("mock"));
        assert_eq!(g.task_type, Some(TaskType::Testing));
        assert_eq!(g.tenant, None);
        assert!(g.matches(&dims));
        let other = RollupGroup {
            provider: Some(String::new()),
            ..RollupGroup::default()
        };
        assert!(!other.matches(&dims));
        assert!(RollupGroup::default().matches(&dims));
        assert_eq!("type".parse::<Dimension>(), Ok(Dimension::TaskType));
    }

    #[test]
    fn periods_start_on_their_boundary() {
        assert_eq!(Granularity::Hour.start_of(3_600_000 + 5), 3_600_000);
        assert_eq!(Granularity::Day.start_of(-1), -86_400_000);
        assert_eq!(size_class(1023), 0);
        assert_eq!(size_class(20_000), 3);
    }
}
