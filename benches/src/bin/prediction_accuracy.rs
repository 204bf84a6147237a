//! `prediction-accuracy`: how accurate `supervisor_model::Predictor` is, measured rather
//! than claimed. Generates a synthetic history of finished tasks from a seeded RNG (the
//! same seed gives the same history and the same figures), splits it by time, folds the
//! first 80% of days into hour rollups exactly as the engine keeps them, trains the
//! predictor on those rows only, and scores its predictions for every task submitted in
//! the last 20% of days against what happened. A naive baseline (global quantiles,
//! failure rate and mean cost of the training window) is scored alike, so the report
//! shows what the grouping and shrinkage add.
//!
//! # The synthetic history: assumptions
//!
//! Every number is a constant below ([`KINDS`], [`VENDORS`] and the `const`s after
//! them); the report prints its assumptions from those constants, so text and code agree.
//!
//! - Arrivals are uniform over the span (60 days, 50,000 tasks; `--quick`: 14 days,
//!   5,000), five tenants (ignored by the model).
//! - Task types follow the mix in [`KINDS`]; the specialty is the type's default
//!   (`Specialty::default_for`) 85% of the time, otherwise another specialty that serves
//!   the type.
//! - Three providers ([`VENDORS`]), picked by share independently of the task (routing
//!   balances load): one fast, reliable and dear; one average; one slow, flaky and cheap.
//! - Prompt sizes are log-normal around a per-type median; whether a task works on a
//!   repository is a per-type probability.
//! - Failure: logistic in type, provider, log prompt size, repository and an off-default
//!   specialty, plus a latent per-task term the dimensions cannot see. Failed tasks used
//!   3 attempts (retryable errors) or 1 (permanent); 8% of successes needed a retry.
//! - Attempt durations are log-normal around a median set by type × provider speed ×
//!   size^0.25 × (1.8 with a repository), with a heavy tail (5% of attempts take a
//!   Pareto(α 1.3) multiple); a failing attempt stops part-way; retries back off; a queue
//!   wait (exponential) comes first.
//! - Tokens: input ∝ prompt size (× a log-normal context factor for repository tasks),
//!   output log-normal per type; cost = tokens × the provider's prices.
//! - 2% of tasks are cancelled: half while queued (no provider, no cost), half part-way
//!   through running.
//! - Non-stationarity, on purpose: `beta` gets 20% slower from mid-history on (in both
//!   windows); `alpha` has a failure incident at 30–33% of the span (training only);
//!   `gamma` has an outage at 85–90% of the span (evaluation only: failures up, durations
//!   doubled), which no model trained on the past can foresee.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
#[path = "../utc.rs"]
mod utc;

use serde_json::{Value, json};
use supervisor_model::{
    FinishedSample, Prediction, PredictionQuery, Predictor, RollupDims, RollupStats, Specialty,
    TaskStatus, TaskType, size_class,
};

#[derive(Debug, Parser)]
#[command(about = "Accuracy of the duration, failure and cost predictions on a synthetic history")]
struct Args {
    /// A small history (14 days, 5,000 tasks) for CI: finishes in seconds.
    #[arg(long)]
    quick: bool,
    /// Seed of the history's RNG.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Where to write the Markdown report and its JSON (`<date>-predictions[-quick]`).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

/// A task type's share of the mix and how its tasks behave.
struct Kind {
    task_type: TaskType,
    share: f64,
    /// Median attempt duration before provider, size and repository factors, seconds.
    median_s: f64,
    /// Added to the failure log-odds.
    logit: f64,
    /// Median prompt size, bytes.
    prompt_bytes: f64,
    /// Probability the task works on a repository.
    repository: f64,
    /// Median output tokens per attempt.
    output_tokens: f64,
}

#[rustfmt::skip]
const KINDS: [Kind; 10] = [
    Kind { task_type: TaskType::PrReview, share: 0.20, median_s: 90.0, logit: -0.3, prompt_bytes: 6000.0, repository: 0.9, output_tokens: 800.0 },
    Kind { task_type: TaskType::IssueSummary, share: 0.08, median_s: 20.0, logit: -0.8, prompt_bytes: 2000.0, repository: 0.1, output_tokens: 400.0 },
    Kind { task_type: TaskType::CodeAnalysis, share: 0.12, median_s: 120.0, logit: 0.0, prompt_bytes: 1500.0, repository: 0.8, output_tokens: 1500.0 },
    Kind { task_type: TaskType::Refactor, share: 0.08, median_s: 480.0, logit: 0.5, prompt_bytes: 2000.0, repository: 0.95, output_tokens: 4000.0 },
    Kind { task_type: TaskType::BugFix, share: 0.16, median_s: 420.0, logit: 0.6, prompt_bytes: 1500.0, repository: 0.85, output_tokens: 3000.0 },
    Kind { task_type: TaskType::Feature, share: 0.10, median_s: 720.0, logit: 0.8, prompt_bytes: 2500.0, repository: 0.9, output_tokens: 6000.0 },
    Kind { task_type: TaskType::Documentation, share: 0.08, median_s: 150.0, logit: -0.5, prompt_bytes: 1200.0, repository: 0.5, output_tokens: 2500.0 },
    Kind { task_type: TaskType::Testing, share: 0.10, median_s: 300.0, logit: 0.4, prompt_bytes: 1200.0, repository: 0.85, output_tokens: 3500.0 },
    Kind { task_type: TaskType::Deployment, share: 0.03, median_s: 240.0, logit: 0.9, prompt_bytes: 800.0, repository: 0.7, output_tokens: 1000.0 },
    Kind { task_type: TaskType::SecurityAudit, share: 0.05, median_s: 360.0, logit: 0.3, prompt_bytes: 3000.0, repository: 0.9, output_tokens: 2000.0 },
];

/// A provider's share of tasks, speed, reliability and prices.
struct Vendor {
    name: &'static str,
    share: f64,
    /// Duration multiplier.
    speed: f64,
    /// Added to the failure log-odds.
    logit: f64,
    /// Millionths of a dollar per input token.
    input_price: f64,
    /// Millionths of a dollar per output token.
    output_price: f64,
}

#[rustfmt::skip]
const VENDORS: [Vendor; 3] = [
    Vendor { name: "alpha", share: 0.45, speed: 0.8, logit: -0.4, input_price: 3.0, output_price: 15.0 },
    Vendor { name: "beta", share: 0.35, speed: 1.0, logit: 0.0, input_price: 1.0, output_price: 5.0 },
    Vendor { name: "gamma", share: 0.20, speed: 1.5, logit: 0.5, input_price: 0.3, output_price: 1.5 },
];

const DEFAULT_SEED: u64 = 20_261_203;
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const TENANTS: usize = 5;
/// Share of history (by time) trained on; the rest is evaluated.
const TRAIN_SHARE: f64 = 0.8;
const DEFAULT_SPECIALTY_SHARE: f64 = 0.85;
const PROMPT_SIGMA: f64 = 1.0;
/// Failure log-odds: base, per doubling of the prompt over 1,500 bytes, with a
/// repository, with an off-default specialty, and the sigma of the latent per-task term.
const BASE_LOGIT: f64 = -3.0;
const SIZE_LOGIT: f64 = 0.35;
const REPOSITORY_LOGIT: f64 = 0.4;
const OFF_SPECIALTY_LOGIT: f64 = 0.3;
const LATENT_SIGMA: f64 = 0.7;
/// Share of failed tasks that used three attempts, of successes that used two.
const FAILED_RETRIED: f64 = 0.6;
const SUCCEEDED_RETRIED: f64 = 0.08;
const DURATION_SIGMA: f64 = 0.45;
const SIZE_EXPONENT: f64 = 0.25;
const REPOSITORY_SLOWDOWN: f64 = 1.8;
const TAIL_SHARE: f64 = 0.05;
const TAIL_ALPHA: f64 = 1.3;
const QUEUE_MEAN_MS: f64 = 10_000.0;
/// Input tokens per prompt byte, and the median context factor of repository tasks.
const TOKENS_PER_BYTE: f64 = 0.25;
const REPOSITORY_CONTEXT: f64 = 10.0;
const CANCEL_SHARE: f64 = 0.02;
/// `beta` slows down by this factor from this share of the span on.
const BETA_SLOWDOWN: (f64, f64) = (0.5, 1.2);
/// `alpha`'s incident and `gamma`'s outage: window (shares of the span) and added
/// log-odds; the outage also doubles durations.
const ALPHA_INCIDENT: (f64, f64, f64) = (0.30, 0.33, 1.5);
const GAMMA_OUTAGE: (f64, f64, f64) = (0.85, 0.90, 2.5);

/// The assumptions, as the report states them, from the constants above.
fn assumptions(days: u32, tasks: usize) -> Vec<String> {
    let kinds: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{} {:.0}%", k.task_type, k.share * 100.0))
        .collect();
    vec![
        format!(
            "{tasks} tasks arriving uniformly over {days} days, {TENANTS} tenants (pooled by \
             the model)."
        ),
        format!("Type mix: {}.", kinds.join(", ")),
        format!(
            "Specialty: the type's default {:.0}% of the time, otherwise another specialty \
             serving the type (failure log-odds +{OFF_SPECIALTY_LOGIT}).",
            DEFAULT_SPECIALTY_SHARE * 100.0
        ),
        "Providers picked by share, independently of the task; see the provider table.".into(),
        format!(
            "Prompt bytes log-normal (σ {PROMPT_SIGMA}) around a per-type median, clamped to \
             40 B–64 KiB; repository with a per-type probability."
        ),
        format!(
            "Failure: logistic({BASE_LOGIT} + type + provider + \
             {SIZE_LOGIT}·log2(bytes/1500) + {REPOSITORY_LOGIT} with a repository + \
             N(0, {LATENT_SIGMA}) unseen per-task term). Failed tasks took 3 attempts ({:.0}%) \
             or 1; {:.0}% of successes took 2.",
            FAILED_RETRIED * 100.0,
            SUCCEEDED_RETRIED * 100.0
        ),
        format!(
            "Attempt duration log-normal (σ {DURATION_SIGMA}) around type median × provider \
             speed × (bytes/1500)^{SIZE_EXPONENT} × {REPOSITORY_SLOWDOWN} with a repository; \
             {:.0}% of attempts multiplied by a Pareto(α {TAIL_ALPHA}) tail; a failing attempt \
             stops at 10–100% of its run; retries back off 2^n s; an exponential queue wait \
             (mean {:.0} s) first.",
            TAIL_SHARE * 100.0,
            QUEUE_MEAN_MS / 1000.0
        ),
        format!(
            "Tokens per attempt: input = bytes × {TOKENS_PER_BYTE} (× a log-normal context \
             factor, median {REPOSITORY_CONTEXT}, with a repository) × log-normal noise; output \
             log-normal (σ 0.6) around the type's median. Cost = tokens × provider prices."
        ),
        format!(
            "{:.0}% cancelled: half while queued (no provider, no cost), half part-way through \
             a run.",
            CANCEL_SHARE * 100.0
        ),
        format!(
            "Drift: beta {:.0}% slower from {:.0}% of the span on; alpha failure incident \
             (+{} log-odds) at {:.0}–{:.0}% of the span (training window); gamma outage \
             (+{} log-odds, durations ×2) at {:.0}–{:.0}% (evaluation window, unforeseeable \
             from training).",
            (BETA_SLOWDOWN.1 - 1.0) * 100.0,
            BETA_SLOWDOWN.0 * 100.0,
            ALPHA_INCIDENT.2,
            ALPHA_INCIDENT.0 * 100.0,
            ALPHA_INCIDENT.1 * 100.0,
            GAMMA_OUTAGE.2,
            GAMMA_OUTAGE.0 * 100.0,
            GAMMA_OUTAGE.1 * 100.0
        ),
    ]
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller; 1 - u keeps the logarithm finite.
    let u = 1.0 - rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.random::<f64>()).cos()
}

fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T], share: impl Fn(&T) -> f64) -> &'a T {
    let mut u = rng.random::<f64>() * items.iter().map(&share).sum::<f64>();
    for item in items {
        u -= share(item);
        if u < 0.0 {
            return item;
        }
    }
    &items[items.len() - 1]
}

/// One generated task.
struct Task {
    sample: FinishedSample,
    submitted_at: i64,
    /// On `gamma` during its outage.
    in_outage: bool,
    /// Its true failure probability given its dimensions and the time (the outage
    /// included), averaged over the latent term no predictor can see: the best any
    /// predictor from these dimensions could say.
    true_p: f64,
}

/// The logistic function averaged over the latent term: ∫ σ(logit + LATENT_SIGMA·z) φ(z) dz,
/// by the trapezoid rule over z in [−6, 6].
fn marginal_failure(logit: f64) -> f64 {
    let (mut sum, mut weight) = (0.0, 0.0);
    for i in -120..=120 {
        let z = f64::from(i) * 0.05;
        let w = (-z * z / 2.0).exp();
        sum += w / (1.0 + (-(logit + LATENT_SIGMA * z)).exp());
        weight += w;
    }
    sum / weight
}

fn generate(rng: &mut StdRng, span_ms: i64) -> Task {
    let submitted_at = (rng.random::<f64>() * span_ms as f64) as i64;
    let at = submitted_at as f64 / span_ms as f64;
    let within = |(from, to, _): (f64, f64, f64)| (from..to).contains(&at);
    let kind = pick(rng, &KINDS, |k| k.share);
    let default = Specialty::default_for(kind.task_type);
    let others: Vec<Specialty> = Specialty::ALL
        .iter()
        .copied()
        .filter(|s| *s != default && s.serves().contains(&kind.task_type))
        .collect();
    let specialty = if others.is_empty() || chance(rng, DEFAULT_SPECIALTY_SHARE) {
        default
    } else {
        others[rng.random_range(0..others.len())]
    };
    let vendor = pick(rng, &VENDORS, |v| v.share);
    let bytes = log_normal(rng, kind.prompt_bytes, PROMPT_SIGMA).clamp(40.0, 65_536.0);
    let repository = chance(rng, kind.repository);
    let in_outage = vendor.name == "gamma" && within(GAMMA_OUTAGE);
    let incident = vendor.name == "alpha" && within(ALPHA_INCIDENT);

    let seen_logit = BASE_LOGIT
        + kind.logit
        + vendor.logit
        + SIZE_LOGIT * (bytes / 1500.0).log2()
        + if repository { REPOSITORY_LOGIT } else { 0.0 }
        + if specialty != default {
            OFF_SPECIALTY_LOGIT
        } else {
            0.0
        }
        + if in_outage { GAMMA_OUTAGE.2 } else { 0.0 }
        + if incident { ALPHA_INCIDENT.2 } else { 0.0 };
    let logit = seen_logit + LATENT_SIGMA * normal(rng);
    let failed = chance(rng, 1.0 / (1.0 + (-logit).exp()));
    let attempts: u32 = match (failed, rng.random::<f64>()) {
        (true, u) if u < FAILED_RETRIED => 3,
        (false, u) if u < SUCCEEDED_RETRIED => 2,
        _ => 1,
    };

    let mut speed = vendor.speed;
    if vendor.name == "beta" && at >= BETA_SLOWDOWN.0 {
        speed *= BETA_SLOWDOWN.1;
    }
    if in_outage {
        speed *= 2.0;
    }
    let median_ms = kind.median_s
        * 1000.0
        * speed
        * (bytes / 1500.0).powf(SIZE_EXPONENT)
        * if repository { REPOSITORY_SLOWDOWN } else { 1.0 };
    let mut latency = -QUEUE_MEAN_MS * (1.0 - rng.random::<f64>()).ln();
    let (mut input, mut output) = (0.0, 0.0);
    for a in 0..attempts {
        // Every attempt of a failed task fails, and every one but the last of a success.
        let part = if failed || a + 1 < attempts {
            0.1 + 0.9 * rng.random::<f64>()
        } else {
            1.0
        };
        let mut ms = log_normal(rng, median_ms, DURATION_SIGMA);
        if chance(rng, TAIL_SHARE) {
            ms *= (1.0 - rng.random::<f64>()).powf(-1.0 / TAIL_ALPHA);
        }
        latency += ms * part
            + if a > 0 {
                1000.0 * 2f64.powi(a as i32)
            } else {
                0.0
            };
        let context = if repository {
            log_normal(rng, REPOSITORY_CONTEXT, 0.5)
        } else {
            1.0
        };
        input += bytes * TOKENS_PER_BYTE * context * log_normal(rng, 1.0, 0.3) * part;
        output += log_normal(rng, kind.output_tokens, 0.6) * part;
    }

    let mut status = if failed {
        TaskStatus::Failed
    } else {
        TaskStatus::Succeeded
    };
    let mut provider = vendor.name.to_string();
    let mut attempts_made = attempts;
    if chance(rng, CANCEL_SHARE) {
        status = TaskStatus::Cancelled;
        if chance(rng, 0.5) {
            // While queued: nothing ran.
            provider.clear();
            attempts_made = 0;
            latency = -6.0 * QUEUE_MEAN_MS * (1.0 - rng.random::<f64>()).ln();
            (input, output) = (0.0, 0.0);
        } else {
            let done = rng.random::<f64>();
            latency *= done;
            (input, output) = (input * done, output * done);
            attempts_made = ((f64::from(attempts) * done).ceil() as u32).max(1);
        }
    }
    let cost = input * vendor.input_price + output * vendor.output_price;
    let latency_ms = latency.round() as u64;
    Task {
        sample: FinishedSample {
            dims: RollupDims {
                tenant: format!("tenant-{}", rng.random_range(0..TENANTS)),
                task_type: kind.task_type,
                specialty,
                provider,
                size_class: size_class(bytes as usize),
                repository,
            },
            status,
            latency_ms,
            attempts: attempts_made,
            input_tokens: input.round() as u64,
            output_tokens: output.round() as u64,
            cost_micros: cost.round() as u64,
            finished_at: submitted_at + latency_ms as i64,
        },
        submitted_at,
        in_outage,
        true_p: marginal_failure(seen_logit),
    }
}

/// Scores of one predictor over the evaluation tasks.
#[derive(Default)]
struct Scores {
    /// Succeeded or failed tasks (durations and failures are scored on these).
    decided: usize,
    duration_mae_ms: f64,
    /// MAE over the median actual duration.
    duration_mae_relative: f64,
    /// Median of |predicted p50 − actual| / actual.
    duration_mdape: f64,
    /// Share of actual durations within [p10, p90].
    interval_coverage: f64,
    /// Median of p90 / p10: how wide the interval is.
    interval_width: f64,
    failures: usize,
    auc: f64,
    brier: f64,
    mean_predicted: f64,
    /// Every evaluated task (cost is scored on all of them).
    all: usize,
    cost_mae_micros: f64,
    /// MAE over the mean actual cost.
    cost_mae_relative: f64,
    cost_mdape: f64,
    /// Sum predicted over sum actual, minus one.
    cost_total_bias: f64,
    /// How many predictions rested on each group.
    basis: BTreeMap<String, usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The area under the ROC curve, by ranks (Mann–Whitney U; ties get their average rank):
/// the probability a failed task was given a higher probability than a succeeded one.
fn auc(scored: &[(f64, bool)]) -> f64 {
    let mut v = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < v.len() {
        let j = i + v[i..].iter().take_while(|x| x.0 == v[i].0).count();
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn brier(scored: &[(f64, bool)]) -> f64 {
    let sum: f64 = scored
        .iter()
        .map(|&(p, y)| (p - f64::from(u8::from(y))).powi(2))
        .sum();
    sum / scored.len() as f64
}

/// (probability, failed) of the succeeded or failed tasks among `tasks` that `keep`
/// selects, with the probability `p` gives the `i`th task.
fn failure_pairs(
    tasks: &[&Task],
    p: impl Fn(usize) -> f64,
    keep: impl Fn(&Task) -> bool,
) -> Vec<(f64, bool)> {
    let decided = |t: &Task| t.sample.status != TaskStatus::Cancelled;
    (0..tasks.len())
        .filter(|&i| decided(tasks[i]) && keep(tasks[i]))
        .map(|i| (p(i), tasks[i].sample.status == TaskStatus::Failed))
        .collect()
}

fn score(tasks: &[&Task], predictions: &[Prediction]) -> Scores {
    let mut s = Scores {
        all: tasks.len(),
        ..Scores::default()
    };
    let (mut abs_err, mut actual, mut rel, mut covered, mut width) =
        (0.0, Vec::new(), Vec::new(), 0usize, Vec::new());
    let mut scored = Vec::new();
    let (mut cost_err, mut cost_rel, mut cost_pred, mut cost_actual) = (0.0, Vec::new(), 0.0, 0.0);
    for (task, p) in tasks.iter().zip(predictions) {
        let t = &task.sample;
        *s.basis.entry(p.basis.clone()).or_default() += 1;
        let (pc, ac) = (p.cost_micros as f64, t.cost_micros as f64);
        cost_err += (pc - ac).abs();
        cost_pred += pc;
        cost_actual += ac;
        if ac > 0.0 {
            cost_rel.push((pc - ac).abs() / ac);
        }
        if t.status == TaskStatus::Cancelled {
            continue;
        }
        let ms = t.latency_ms as f64;
        abs_err += (p.duration_p50_ms as f64 - ms).abs();
        actual.push(ms);
        rel.push((p.duration_p50_ms as f64 - ms).abs() / ms.max(1.0));
        covered += usize::from((p.duration_p10_ms..=p.duration_p90_ms).contains(&t.latency_ms));
        width.push(p.duration_p90_ms as f64 / (p.duration_p10_ms as f64).max(1.0));
        scored.push((p.failure_probability, t.status == TaskStatus::Failed));
    }
    let n = actual.len() as f64;
    s.decided = actual.len();
    s.duration_mae_ms = abs_err / n;
    s.duration_mae_relative = s.duration_mae_ms / median(actual);
    s.duration_mdape = median(rel);
    s.interval_coverage = covered as f64 / n;
    s.interval_width = median(width);
    s.failures = scored.iter().filter(|x| x.1).count();
    s.auc = auc(&scored);
    s.brier = brier(&scored);
    s.mean_predicted = scored.iter().map(|x| x.0).sum::<f64>() / n;
    s.cost_mae_micros = cost_err / s.all as f64;
    s.cost_mae_relative = cost_err / cost_actual;
    s.cost_mdape = median(cost_rel);
    s.cost_total_bias = cost_pred / cost_actual - 1.0;
    s
}

impl Scores {
    fn json(&self) -> Value {
        json!({
            "duration": {
                "tasks": self.decided,
                "mae_ms": self.duration_mae_ms,
                "mae_over_median_actual": self.duration_mae_relative,
                "median_absolute_percentage_error": self.duration_mdape,
                "p10_p90_coverage": self.interval_coverage,
                "median_p90_over_p10": self.interval_width,
            },
            "failure": {
                "tasks": self.decided,
                "failed": self.failures,
                "auc": self.auc,
                "brier": self.brier,
                "mean_predicted": self.mean_predicted,
                "observed_rate": self.failures as f64 / self.decided as f64,
            },
            "cost": {
                "tasks": self.all,
                "mae_micros": self.cost_mae_micros,
                "mae_over_mean_actual": self.cost_mae_relative,
                "median_absolute_percentage_error": self.cost_mdape,
                "total_bias": self.cost_total_bias,
            },
            "basis": self.basis,
        })
    }
}

/// Equal-count bins of (predicted failure probability, failed) by the prediction:
/// (lowest and highest predicted, mean predicted, observed rate, tasks).
fn calibration(mut v: Vec<(f64, bool)>, bins: usize) -> Vec<(f64, f64, f64, f64, usize)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    (0..bins)
        .map(|b| &v[b * v.len() / bins..(b + 1) * v.len() / bins])
        .filter(|bin| !bin.is_empty())
        .map(|bin| {
            let n = bin.len() as f64;
            (
                bin[0].0,
                bin[bin.len() - 1].0,
                bin.iter().map(|x| x.0).sum::<f64>() / n,
                bin.iter().filter(|x| x.1).count() as f64 / n,
                bin.len(),
            )
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn secs(ms: f64) -> String {
    format!("{:.0} s", ms / 1000.0)
}

fn dollars(micros: f64) -> String {
    format!("${:.4}", micros / 1e6)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let (days, n_tasks) = if args.quick {
        (14, 5_000)
    } else {
        (60, 50_000)
    };
    let span_ms = i64::from(days) * DAY_MS;
    let cutoff = (span_ms as f64 * TRAIN_SHARE) as i64;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let tasks: Vec<Task> = (0..n_tasks).map(|_| generate(&mut rng, span_ms)).collect();
    let generated = started.elapsed();

    // Training: what the engine's hour rollups hold at the cutoff (tasks finished before
    // it). Evaluation: tasks submitted after it.
    let train_started = Instant::now();
    let mut hours: BTreeMap<(i64, RollupDims), RollupStats> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.sample.finished_at < cutoff) {
        let hour = t.sample.finished_at.div_euclid(HOUR_MS);
        hours
            .entry((hour, t.sample.dims.clone()))
            .or_default()
            .add(&t.sample);
    }
    let model = Predictor::train(hours.iter().map(|((_, d), s)| (d, s)));
    let mut everything = RollupStats::default();
    hours.values().for_each(|s| everything.merge(s));
    let trained = train_started.elapsed();
    anyhow::ensure!(
        model.trained_on() > 0,
        "no task finished in the training window; use more days"
    );

    let test: Vec<&Task> = tasks.iter().filter(|t| t.submitted_at >= cutoff).collect();
    let query = |t: &Task, provider_known: bool| PredictionQuery {
        task_type: t.sample.dims.task_type,
        specialty: t.sample.dims.specialty,
        provider: (provider_known && !t.sample.dims.provider.is_empty())
            .then(|| t.sample.dims.provider.clone()),
        size_class: t.sample.dims.size_class,
        repository: t.sample.dims.repository,
    };
    let predict_started = Instant::now();
    let predict_all = |provider_known: bool| -> anyhow::Result<Vec<Prediction>> {
        test.iter()
            .map(|t| {
                model
                    .predict(&query(t, provider_known))
                    .context("a trained predictor predicted nothing")
            })
            .collect()
    };
    let known = predict_all(true)?;
    let predict_us = predict_started.elapsed().as_secs_f64() * 1e6 / test.len().max(1) as f64;
    let open = predict_all(false)?;
    let base_rate =
        everything.failed as f64 / (everything.succeeded + everything.failed).max(1) as f64;
    let baseline_prediction = Prediction {
        duration_p50_ms: everything.latency.quantile(0.5).unwrap_or(0),
        duration_p10_ms: everything.latency.quantile(0.1).unwrap_or(0),
        duration_p90_ms: everything.latency.quantile(0.9).unwrap_or(0),
        failure_probability: base_rate,
        cost_micros: everything.cost_micros / everything.finished.max(1),
        based_on: everything.finished,
        basis: "global (baseline)".into(),
    };
    let baseline = vec![baseline_prediction; test.len()];
    let scores = [
        ("model, provider known", score(&test, &known)),
        ("model, provider open", score(&test, &open)),
        ("baseline: global figures", score(&test, &baseline)),
    ];
    let deciles = calibration(
        failure_pairs(&test, |i| known[i].failure_probability, |_| true),
        10,
    );

    // The truth, for reference, and the outage: what the model said about gamma's tasks
    // during it, what happened, and how the scores look without it.
    let truth = failure_pairs(&test, |i| test[i].true_p, |_| true);
    let outage = failure_pairs(&test, |i| known[i].failure_probability, |t| t.in_outage);
    let outage_predicted = outage.iter().map(|x| x.0).sum::<f64>() / outage.len().max(1) as f64;
    let outage_observed = outage.iter().filter(|x| x.1).count() as f64 / outage.len().max(1) as f64;
    let calm = |p: &dyn Fn(usize) -> f64| {
        let pairs = failure_pairs(&test, p, |t| !t.in_outage);
        (auc(&pairs), brier(&pairs))
    };
    let calm_model = calm(&|i| known[i].failure_probability);
    let calm_base = calm(&|_| base_rate);
    let calm_truth = calm(&|i| test[i].true_p);
    let elapsed = started.elapsed();

    // The report: every figure in it comes from the values above.
    let date = utc::today();
    let stem = format!(
        "{date}-predictions{}",
        if args.quick { "-quick" } else { "" }
    );
    let train_days = days as f64 * TRAIN_SHARE;
    let train_tasks = model.trained_on();
    let [(_, m), (_, o), (_, b)] = &scores;
    let mut flags = String::new();
    if args.quick {
        flags.push_str(" -- --quick");
    }
    if args.seed != DEFAULT_SEED {
        let sep = if args.quick { "" } else { " --" };
        write!(flags, "{sep} --seed {}", args.seed)?;
    }
    let mut md = String::new();
    writeln!(md, "# Prediction accuracy ({date})\n")?;
    writeln!(
        md,
        "`cargo run --release -p supervisor-bench --bin prediction-accuracy{}`: a synthetic \
         history of {n_tasks} tasks over {days} days (seed {}), split by time. The predictor \
         (`supervisor_model::Predictor`) was trained on the {train_tasks} tasks that finished in \
         the first {train_days:.0} days, folded into {} hour rollup rows as the engine keeps them, \
         and scored on the {} tasks submitted in the last {:.0} days ({} succeeded or failed). \
         JSON: `{stem}.json`. The history is synthetic: these figures say how the model does on \
         data built from the assumptions below, not on any real workload.\n",
        flags,
        args.seed,
        hours.len(),
        test.len(),
        days as f64 - train_days,
        m.decided,
    )?;
    writeln!(md, "## Summary\n")?;
    writeln!(
        md,
        "- **Duration**: the predicted median is off by a median {} of the actual duration \
         (global median: {}); the p10–p90 interval held {} of actual durations (nominal 80%; \
         global interval: {}), with a median p90/p10 of {:.1}× (global: {:.1}×).",
        pct(m.duration_mdape),
        pct(b.duration_mdape),
        pct(m.interval_coverage),
        pct(b.interval_coverage),
        m.interval_width,
        b.interval_width
    )?;
    writeln!(
        md,
        "- **Failure**: AUC {:.3} (provider open: {:.3}; a constant rate scores 0.5); Brier \
         score {:.4} against {:.4} for the training base rate ({}), a skill of {} \
         (1 − Brier / baseline Brier). For reference, each task's true probability given \
         its dimensions and the time (the outage included; only the per-task latent term \
         hidden), the best a predictor from these dimensions could expect, scores AUC {:.3}, \
         Brier {:.4}.",
        m.auc,
        o.auc,
        m.brier,
        b.brier,
        pct(base_rate),
        pct(1.0 - m.brier / b.brier),
        auc(&truth),
        brier(&truth)
    )?;
    writeln!(
        md,
        "- **Cost**: mean absolute error {} per task, {} of the mean cost (global mean: {}, \
         {}); total predicted cost off by {} (global: {}).",
        dollars(m.cost_mae_micros),
        pct(m.cost_mae_relative),
        dollars(b.cost_mae_micros),
        pct(b.cost_mae_relative),
        pct(m.cost_total_bias),
        pct(b.cost_total_bias)
    )?;
    writeln!(
        md,
        "- **Outage**: during gamma's outage (in the evaluation window only) the model gave \
         gamma's {} decided tasks a mean failure probability of {} and {} failed: history \
         cannot foresee an outage, so watch live error rates too. Without those tasks: AUC \
         {:.3}, Brier {:.4} against {:.4} for the base rate (true probability: AUC {:.3}, \
         Brier {:.4}): the model makes {} of the Brier improvement the truth makes over the \
         base rate.\n",
        outage.len(),
        pct(outage_predicted),
        pct(outage_observed),
        calm_model.0,
        calm_model.1,
        calm_base.1,
        calm_truth.0,
        calm_truth.1,
        pct((calm_base.1 - calm_model.1) / (calm_base.1 - calm_truth.1))
    )?;
    writeln!(md, "## Scores\n")?;
    writeln!(
        md,
        "| metric | {} |",
        scores.iter().map(|s| s.0).collect::<Vec<_>>().join(" | ")
    )?;
    writeln!(md, "| --- | --- | --- | --- |")?;
    let row = |md: &mut String, name: &str, f: &dyn Fn(&Scores) -> String| {
        writeln!(
            md,
            "| {name} | {} |",
            scores
                .iter()
                .map(|s| f(&s.1))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    row(&mut md, "duration: MAE of the median", &|s| {
        secs(s.duration_mae_ms)
    })?;
    row(&mut md, "duration: MAE / median actual", &|s| {
        pct(s.duration_mae_relative)
    })?;
    row(&mut md, "duration: median abs. % error", &|s| {
        pct(s.duration_mdape)
    })?;
    row(&mut md, "duration: p10–p90 coverage", &|s| {
        pct(s.interval_coverage)
    })?;
    row(&mut md, "duration: median p90/p10", &|s| {
        format!("{:.1}×", s.interval_width)
    })?;
    row(&mut md, "failure: AUC", &|s| format!("{:.3}", s.auc))?;
    row(&mut md, "failure: Brier score", &|s| {
        format!("{:.4}", s.brier)
    })?;
    row(&mut md, "failure: mean predicted / observed", &|s| {
        format!(
            "{} / {}",
            pct(s.mean_predicted),
            pct(s.failures as f64 / s.decided as f64)
        )
    })?;
    row(&mut md, "cost: MAE per task", &|s| {
        dollars(s.cost_mae_micros)
    })?;
    row(&mut md, "cost: MAE / mean actual", &|s| {
        pct(s.cost_mae_relative)
    })?;
    row(&mut md, "cost: median abs. % error", &|s| pct(s.cost_mdape))?;
    row(&mut md, "cost: total predicted vs actual", &|s| {
        format!("{:+.1}%", s.cost_total_bias * 100.0)
    })?;
    writeln!(
        md,
        "\nDurations and failures are scored on succeeded and failed tasks (cancelled ones \
         neither failed nor ran their course); cost on every evaluated task. The duration \
         MAE weighs the heavy tail in; the median absolute percentage error is the typical \
         miss.\n"
    )?;
    writeln!(
        md,
        "Groups the duration and cost came from (model, provider known):\n"
    )?;
    writeln!(md, "| basis | predictions |\n| --- | --- |")?;
    for (basis, n) in &m.basis {
        writeln!(md, "| {basis} | {n} |")?;
    }
    writeln!(md, "\n## Calibration (model, provider known)\n")?;
    writeln!(
        md,
        "Decided tasks in ten equal bins by predicted failure probability.\n"
    )?;
    writeln!(
        md,
        "| bin | predicted range | mean predicted | observed | tasks |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- |")?;
    for (i, (lo, hi, mean, observed, n)) in deciles.iter().enumerate() {
        writeln!(
            md,
            "| {} | {}–{} | {} | {} | {n} |",
            i + 1,
            pct(*lo),
            pct(*hi),
            pct(*mean),
            pct(*observed)
        )?;
    }
    writeln!(md, "\n## The synthetic history\n")?;
    for a in assumptions(days, n_tasks) {
        writeln!(md, "- {a}")?;
    }
    writeln!(
        md,
        "\n| type | share | median attempt | failure log-odds | median prompt | repository \
         | median output tokens |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for k in &KINDS {
        writeln!(
            md,
            "| {} | {:.0}% | {:.0} s | {:+.1} | {:.0} B | {:.0}% | {:.0} |",
            k.task_type,
            k.share * 100.0,
            k.median_s,
            k.logit,
            k.prompt_bytes,
            k.repository * 100.0,
            k.output_tokens
        )?;
    }
    writeln!(
        md,
        "\n| provider | share | speed (duration ×) | failure log-odds \
         | $ per M input / output tokens |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- |")?;
    for v in &VENDORS {
        writeln!(
            md,
            "| {} | {:.0}% | {:.1} | {:+.1} | {:.2} / {:.2} |",
            v.name,
            v.share * 100.0,
            v.speed,
            v.logit,
            v.input_price,
            v.output_price
        )?;
    }
    writeln!(
        md,
        "\nRun time: {:.2} s in all (history {:.2} s, rollups and training {:.3} s, {:.1} µs per \
         prediction).",
        elapsed.as_secs_f64(),
        generated.as_secs_f64(),
        trained.as_secs_f64(),
        predict_us
    )?;

    let report = json!({
        "date": date,
        "seed": args.seed,
        "quick": args.quick,
        "history": {
            "days": days,
            "tasks": n_tasks,
            "train_days": train_days,
            "train_tasks": train_tasks,
            "hour_rollup_rows": hours.len(),
            "test_tasks": test.len(),
            "training_base_failure_rate": base_rate,
        },
        "assumptions": assumptions(days, n_tasks),
        "predictors": scores
            .iter()
            .map(|(name, s)| (name.to_string(), s.json()))
            .collect::<serde_json::Map<_, _>>(),
        "calibration": deciles
            .iter()
            .map(|&(lo, hi, mean, observed, n)| json!({
                "lowest": lo, "highest": hi, "mean_predicted": mean, "observed": observed,
                "tasks": n,
            }))
            .collect::<Vec<_>>(),
        "true_probability": {"auc": auc(&truth), "brier": brier(&truth)},
        "gamma_outage": {
            "tasks": outage.len(),
            "mean_predicted": outage_predicted,
            "observed": outage_observed,
            "without_outage_tasks": {
                "model": {"auc": calm_model.0, "brier": calm_model.1},
                "base_rate": {"auc": calm_base.0, "brier": calm_base.1},
                "true_probability": {"auc": calm_truth.0, "brier": calm_truth.1},
            },
        },
        "timing_s": {
            "total": elapsed.as_secs_f64(),
            "history": generated.as_secs_f64(),
            "training": trained.as_secs_f64(),
            "per_prediction_us": predict_us,
        },
    });
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}; pass another --out", args.out.display()))?;
    for (ext, text) in [("md", md), ("json", serde_json::to_string_pretty(&report)?)] {
        let path = args.out.join(format!("{stem}.{ext}"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
