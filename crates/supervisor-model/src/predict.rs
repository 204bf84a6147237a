//! What a task is likely to take, cost and risk, learnt from the analytics rollups.
//!
//! The system this project replaces advertised a failure predictor as "90% accurate"
//! and never measured it. This one is deliberately simple, so a reader can check it, and
//! its accuracy is measured on a time split of a synthetic history by
//! `benches/src/bin/prediction_accuracy.rs` (results in `benches/results/*-predictions.md`);
//! quote only figures that bench produced.
//!
//! # The model
//!
//! History is the rollup rows ([`RollupDims`], [`RollupStats`]) of every finished task,
//! whatever its period. The tenant is not a dimension of the model: whoever trains it
//! chooses whose rows it sees (the engine trains one predictor per tenant, on that
//! tenant's rows only, so no prediction reveals another tenant's tasks). Rows are merged into
//! groups along one chain of keys, from the most specific to everything:
//!
//! 1. type + specialty + provider + size class + repository
//! 2. type + specialty + provider + size class
//! 3. type + specialty + provider
//! 4. type + specialty
//! 5. type
//! 6. all tasks
//!
//! A query that leaves the provider open ([`PredictionQuery::provider`] is `None`) uses
//! the same chain without the provider (levels 3 and 4 then coincide and count once), so
//! its groups mix providers as past routing did.
//!
//! - **Duration** (submit → end): the 10th, 50th and 90th percentiles of the merged
//!   [`LatencyHistogram`] of the most specific group holding at least [`MIN_SAMPLES`]
//!   tasks (all tasks when none does). The histogram reports a bucket's upper bound, so
//!   these overstate by up to 19%. Cancelled tasks are in the histogram too (rollups do
//!   not keep them apart).
//! - **Cost**: the mean cost per finished task of that same group.
//! - **Failure probability**: a Beta-binomial (empirical-Bayes) estimate, shrunk level by
//!   level ([`shrunk_failure_rate`]): the most specific group's failures are blended with
//!   [`PRIOR_STRENGTH`] pseudo-tasks at the rate of its siblings (the tasks of its parent
//!   group that are not in it), whose rate is itself blended with the rate of the next
//!   ring out, and so on up to all tasks. A group with few decided tasks stays near the
//!   rate of tasks like it; one with many keeps its own. The rings are disjoint, so each
//!   task counts once (shrinking toward the parent itself would count the group's own
//!   tasks again at every level, and a group that is most of its parent would shrink
//!   toward itself).
//!
//! Everything is counting and division over ordered maps: the same rows give the same
//! predictions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{RollupDims, RollupStats, Specialty, TaskType};

/// Fewest tasks a group needs before its duration quantiles and mean cost are used
/// instead of its parent's: below it, a 10th or 90th percentile rests on one or two
/// tasks.
pub const MIN_SAMPLES: u64 = 20;

/// How many pseudo-tasks at the failure rate of tasks like it (its siblings; see the
/// module docs) a group's own counts are blended with ([`shrunk_failure_rate`]): a group
/// with 10 decided tasks sits halfway between its own rate and theirs.
pub const PRIOR_STRENGTH: f64 = 10.0;

/// The rate assumed above "all tasks" (the root of the chain), with the same
/// [`PRIOR_STRENGTH`]: it only matters while history holds a handful of decided tasks.
const ROOT_PRIOR_RATE: f64 = 0.5;

/// A task to predict, described by the dimensions the rollups keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictionQuery {
    /// Its type.
    pub task_type: TaskType,
    /// The specialty it goes to.
    pub specialty: Specialty,
    /// The provider it will run on; `None` when routing has not chosen yet (history is
    /// then pooled over providers as routing spread it).
    pub provider: Option<String>,
    /// Its prompt's size class ([`crate::size_class`]).
    pub size_class: u8,
    /// Whether it works on a repository.
    pub repository: bool,
}

/// What history says about a task like the query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Median duration, submit → end, in milliseconds.
    pub duration_p50_ms: u64,
    /// 10th percentile of the duration, in milliseconds.
    pub duration_p10_ms: u64,
    /// 90th percentile of the duration, in milliseconds: 80% of similar tasks ended
    /// between the 10th and 90th percentiles.
    pub duration_p90_ms: u64,
    /// Probability it fails rather than succeeds (cancelled tasks are left out of both).
    pub failure_probability: f64,
    /// Expected cost over all its attempts, in millionths of a US dollar.
    pub cost_micros: u64,
    /// Finished tasks in the group the duration and cost come from.
    pub based_on: u64,
    /// That group's key, as `type+specialty+provider+size+repository`, ..., `type` or
    /// `all tasks`.
    pub basis: String,
}

/// Predictions learnt from rollup rows; see the module docs for the model. The default
/// predictor has seen nothing and predicts nothing.
#[derive(Debug, Clone, Default)]
pub struct Predictor {
    /// Merged stats per group, every level of the chain (with and without provider).
    groups: BTreeMap<GroupKey, RollupStats>,
    /// Finished tasks seen.
    trained_on: u64,
}

/// A group of history: the dimensions a level keeps, `None` for those it pools.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    task_type: Option<TaskType>,
    specialty: Option<Specialty>,
    provider: Option<String>,
    size_class: Option<u8>,
    repository: Option<bool>,
}

/// One level of the chain: which dimensions it keeps, in the order
/// (type, specialty, provider, size class, repository).
type Level = [bool; 5];

/// The chain, most specific first.
const LEVELS: [Level; 6] = [
    [true, true, true, true, true],
    [true, true, true, true, false],
    [true, true, true, false, false],
    [true, true, false, false, false],
    [true, false, false, false, false],
    [false, false, false, false, false],
];

const DIM_NAMES: [&str; 5] = ["type", "specialty", "provider", "size", "repository"];

/// The chain a query walks, most specific first: [`LEVELS`], without the provider when
/// it is open, with levels that became equal counted once.
fn chain(with_provider: bool) -> Vec<Level> {
    let mut levels: Vec<Level> = LEVELS
        .iter()
        .map(|&[t, s, p, z, r]| [t, s, p && with_provider, z, r])
        .collect();
    levels.dedup();
    levels
}

fn basis_name(level: Level) -> String {
    let kept: Vec<&str> = DIM_NAMES
        .iter()
        .zip(level)
        .filter_map(|(name, keep)| keep.then_some(*name))
        .collect();
    if kept.is_empty() {
        "all tasks".into()
    } else {
        kept.join("+")
    }
}

impl GroupKey {
    fn new(level: Level, q: &PredictionQuery, provider: Option<&str>) -> GroupKey {
        let [t, s, p, z, r] = level;
        GroupKey {
            task_type: t.then_some(q.task_type),
            specialty: s.then_some(q.specialty),
            provider: if p {
                provider.map(str::to_string)
            } else {
                None
            },
            size_class: z.then_some(q.size_class),
            repository: r.then_some(q.repository),
        }
    }
}

/// The Beta-binomial estimate of a failure rate: `failed` failures out of `decided`
/// (succeeded + failed) tasks, blended with [`PRIOR_STRENGTH`] pseudo-tasks failing at
/// `prior_rate` (the rate of similar tasks):
///
/// ```text
/// p = (failed + K · p_prior) / (decided + K),   K = PRIOR_STRENGTH
/// ```
///
/// It is the mean of the Beta(failed + K·p_prior, succeeded + K·(1 − p_prior))
/// posterior. With no decided tasks it is `prior_rate`; as `decided` grows it tends to
/// `failed / decided`.
pub fn shrunk_failure_rate(failed: u64, decided: u64, prior_rate: f64) -> f64 {
    (failed as f64 + PRIOR_STRENGTH * prior_rate) / (decided as f64 + PRIOR_STRENGTH)
}

impl Predictor {
    /// Learns from rollup rows (any period, any tenant; rows for the same group add up).
    pub fn train<'a>(
        rows: impl IntoIterator<Item = (&'a RollupDims, &'a RollupStats)>,
    ) -> Predictor {
        let mut p = Predictor::default();
        for (dims, stats) in rows {
            p.trained_on += stats.finished;
            let q = PredictionQuery {
                task_type: dims.task_type,
                specialty: dims.specialty,
                provider: None,
                size_class: dims.size_class,
                repository: dims.repository,
            };
            // A task with no attempt has no provider: it counts only in groups that pool
            // providers.
            let provider = (!dims.provider.is_empty()).then_some(dims.provider.as_str());
            let mut keys: Vec<GroupKey> = [true, false]
                .into_iter()
                .flat_map(chain)
                .map(|level| GroupKey::new(level, &q, provider))
                .collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                p.groups.entry(key).or_default().merge(stats);
            }
        }
        p
    }

    /// Finished tasks it learnt from.
    pub fn trained_on(&self) -> u64 {
        self.trained_on
    }

    /// What history says about tasks like `q`; `None` when it learnt from no task.
    pub fn predict(&self, q: &PredictionQuery) -> Option<Prediction> {
        if self.trained_on == 0 {
            return None;
        }
        let levels = chain(q.provider.is_some());
        let groups: Vec<(Level, Option<&RollupStats>)> = levels
            .iter()
            .map(|&level| {
                let key = GroupKey::new(level, q, q.provider.as_deref());
                (level, self.groups.get(&key))
            })
            .collect();

        // Failure: from the root inwards, each ring (the tasks of a level that are not in
        // the next, more specific one) shrunk toward the ring outside it; the group
        // itself last. Rings are disjoint, so every task counts once.
        let decided: Vec<(u64, u64)> = groups
            .iter()
            .rev()
            .map(|(_, g)| g.map_or((0, 0), |g| (g.failed, g.succeeded + g.failed)))
            .collect();
        let mut failure_probability = ROOT_PRIOR_RATE;
        for (i, &(failed, n)) in decided.iter().enumerate() {
            let (inner_failed, inner_n) = decided.get(i + 1).copied().unwrap_or((0, 0));
            failure_probability = shrunk_failure_rate(
                failed.saturating_sub(inner_failed),
                n.saturating_sub(inner_n),
                failure_probability,
            );
        }

        // Duration and cost: the most specific group with enough tasks, else the root.
        let (level, stats) = groups
            .iter()
            .find_map(|&(level, g)| {
                g.filter(|g| g.latency.count() >= MIN_SAMPLES)
                    .map(|g| (level, g))
            })
            .or_else(|| groups.last().and_then(|&(level, g)| g.map(|g| (level, g))))?;
        let q_ms = |q| stats.latency.quantile(q).unwrap_or(0);
        Some(Prediction {
            duration_p50_ms: q_ms(0.5),
            duration_p10_ms: q_ms(0.1),
            duration_p90_ms: q_ms(0.9),
            failure_probability,
            cost_micros: stats.cost_micros.checked_div(stats.finished).unwrap_or(0),
            based_on: stats.finished,
            basis: basis_name(level),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishedSample, TaskStatus};

    fn dims(task_type: TaskType, provider: &str, size_class: u8) -> RollupDims {
        RollupDims {
            tenant: "t".into(),
            task_type,
            specialty: Specialty::default_for(task_type),
            provider: provider.into(),
            size_class,
            repository: true,
        }
    }

    fn query(d: &RollupDims) -> PredictionQuery {
        PredictionQuery {
            task_type: d.task_type,
            specialty: d.specialty,
            provider: Some(d.provider.clone()),
            size_class: d.size_class,
            repository: d.repository,
        }
    }

    /// Stats of `n` tasks, `failed` failed and `cancelled` cancelled, the `i`th lasting
    /// `ms(i)` and costing `cost`.
    fn stats(
        d: &RollupDims,
        n: u64,
        failed: u64,
        cancelled: u64,
        ms: impl Fn(u64) -> u64,
        cost: u64,
    ) -> RollupStats {
        let mut s = RollupStats::default();
        for i in 0..n {
            let status = if i < failed {
                TaskStatus::Failed
            } else if i < failed + cancelled {
                TaskStatus::Cancelled
            } else {
                TaskStatus::Succeeded
            };
            s.add(&FinishedSample {
                dims: d.clone(),
                status,
                latency_ms: ms(i),
                attempts: 1,
                input_tokens: 0,
                output_tokens: 0,
                cost_micros: cost,
                finished_at: 0,
            });
        }
        s
    }

    #[test]
    fn an_untrained_predictor_predicts_nothing() {
        let d = dims(TaskType::BugFix, "p", 1);
        assert_eq!(Predictor::default().predict(&query(&d)), None);
        assert_eq!(Predictor::train([]).predict(&query(&d)), None);
        assert_eq!(Predictor::default().trained_on(), 0);
    }

    #[test]
    fn a_group_with_enough_history_predicts_its_own_figures() {
        let mine = dims(TaskType::BugFix, "fast", 2);
        let other = dims(TaskType::Documentation, "slow", 0);
        // 1,000 tasks of 1..=1000 s, 20% failed; the other group is slow and reliable.
        let a = stats(&mine, 1000, 200, 0, |i| (i + 1) * 1000, 500);
        let b = stats(&other, 1000, 0, 0, |_| 9_000_000, 10);
        let p = Predictor::train([(&mine, &a), (&other, &b)]);
        assert_eq!(p.trained_on(), 2000);
        let got = p.predict(&query(&mine)).unwrap();
        assert_eq!(got.basis, "type+specialty+provider+size+repository");
        assert_eq!(got.based_on, 1000);
        assert_eq!(got.cost_micros, 500);
        for (q, v) in [
            (0.1, got.duration_p10_ms),
            (0.5, got.duration_p50_ms),
            (0.9, got.duration_p90_ms),
        ] {
            let truth = q * 1_000_000.0;
            assert!(v as f64 >= truth && v as f64 <= truth * 1.2, "p{q}: {v}");
        }
        // 200 of 1,000 plus 10 pseudo-tasks at its siblings' rate (the other group: 0 of
        // 1,000, shrunk to 0.5%): 19.8%, within a point of its own 20%.
        assert!(
            (got.failure_probability - 0.2).abs() < 0.01,
            "{}",
            got.failure_probability
        );
    }

    #[test]
    fn a_sparse_group_leans_on_its_parent() {
        let big = dims(TaskType::BugFix, "a", 1);
        let sparse = dims(TaskType::BugFix, "b", 1);
        let a = stats(&big, 2000, 200, 0, |_| 60_000, 100);
        // 3 tasks, all failed, all slow: its own rate would be 100%.
        let b = stats(&sparse, 3, 3, 0, |_| 6_000_000, 9000);
        let p = Predictor::train([(&big, &a), (&sparse, &b)]);
        let got = p.predict(&query(&sparse)).unwrap();
        // Its siblings (same type+specialty, other provider) failed 10%, and no other task
        // is in its rings: (3 + 10 · 10.2%) / 13 ≈ 31%, not 100%.
        let siblings = shrunk_failure_rate(200, 2000, ROOT_PRIOR_RATE);
        let expected = shrunk_failure_rate(3, 3, siblings);
        assert!((got.failure_probability - expected).abs() < 1e-9);
        assert!(
            got.failure_probability < 0.35,
            "{}",
            got.failure_probability
        );
        // Duration and cost come from the first level with MIN_SAMPLES tasks: type+specialty.
        assert_eq!(got.basis, "type+specialty");
        assert_eq!(got.based_on, 2003);
        assert!(got.duration_p50_ms < 80_000, "{}", got.duration_p50_ms);
    }

    #[test]
    fn an_unknown_group_gets_the_figures_of_all_tasks() {
        let d = dims(TaskType::BugFix, "a", 1);
        let s = stats(&d, 100, 10, 0, |_| 1000, 7);
        let p = Predictor::train([(&d, &s)]);
        let other = dims(TaskType::Feature, "z", 3);
        let got = p.predict(&query(&other)).unwrap();
        assert_eq!(got.basis, "all tasks");
        assert_eq!(got.based_on, 100);
        assert!(
            (got.failure_probability - shrunk_failure_rate(10, 100, ROOT_PRIOR_RATE)).abs() < 1e-9
        );
    }

    #[test]
    fn cancelled_tasks_are_not_failures() {
        let d = dims(TaskType::Testing, "a", 0);
        // 1,000 tasks: 100 failed, 500 cancelled, 400 succeeded → 100 of 500 decided,
        // (100 + 10 · 0.5) / 510 = 20.6% (60% if cancelled counted as failed).
        let s = stats(&d, 1000, 100, 500, |_| 1000, 0);
        let got = Predictor::train([(&d, &s)]).predict(&query(&d)).unwrap();
        assert!((got.failure_probability - shrunk_failure_rate(100, 500, 0.5)).abs() < 1e-9);
        assert!(
            (got.failure_probability - 0.2).abs() < 0.01,
            "{}",
            got.failure_probability
        );
    }

    #[test]
    fn an_open_provider_pools_providers_and_tasks_without_one_count_there_only() {
        let a = dims(TaskType::PrReview, "a", 0);
        let b = dims(TaskType::PrReview, "b", 0);
        let none = dims(TaskType::PrReview, "", 0);
        let (sa, sb, sn) = (
            stats(&a, 100, 0, 0, |_| 1000, 10),
            stats(&b, 100, 0, 0, |_| 1000, 30),
            stats(&none, 50, 0, 50, |_| 1000, 0),
        );
        let p = Predictor::train([(&a, &sa), (&b, &sb), (&none, &sn)]);
        let open = p
            .predict(&PredictionQuery {
                provider: None,
                ..query(&a)
            })
            .unwrap();
        assert_eq!(open.basis, "type+specialty+size+repository");
        assert_eq!((open.based_on, open.cost_micros), (250, 16));
        let on_a = p.predict(&query(&a)).unwrap();
        assert_eq!((on_a.based_on, on_a.cost_micros), (100, 10));
    }
}
