//! What a finished task adds to the analytics rollups, written in the transaction that
//! makes it terminal (`records::transition` calls [`record_finished`]).
//!
//! Every completion pays for this, so it writes as little as it can and reads nothing: one
//! atomic add per non-zero counter of the task's minute row (its status, attempts, tokens
//! in and out, cost, and one latency bucket: at most six) and one blind write marking the
//! minute as changed for the roller (`analytics`), which folds minutes into hour and day
//! rows later. No read means a completion never conflicts with the roller or with another
//! completion, and a node with a slow clock is no problem: its task lands in the minute its
//! clock names, which is marked again, and the roller folds whatever that minute gained
//! since it last looked.

use std::borrow::Cow;

use supervisor_model::{FinishedSample, Granularity, LatencyHistogram, RollupStats, Task};
use supervisor_store::Transaction;

use crate::keyspace;

/// Counter names of a rollup row (besides the latency buckets, `lat<bucket>`). The number
/// of finished tasks is not stored: it is the sum of the three statuses.
pub(crate) const SUCCEEDED: &str = "succeeded";
pub(crate) const FAILED: &str = "failed";
pub(crate) const CANCELLED: &str = "cancelled";
pub(crate) const ATTEMPTS: &str = "attempts";
pub(crate) const INPUT_TOKENS: &str = "input_tokens";
pub(crate) const OUTPUT_TOKENS: &str = "output_tokens";
pub(crate) const COST_MICROS: &str = "cost_micros";
/// Prefix of a latency bucket's counter.
const LATENCY_PREFIX: &str = "lat";

/// The counter of latency bucket `bucket`.
fn latency_field(bucket: u16) -> String {
    format!("{LATENCY_PREFIX}{bucket}")
}

/// The non-zero counters `sample` adds to its row.
pub(crate) fn counters(sample: &FinishedSample) -> Vec<(Cow<'static, str>, i64)> {
    let status = match sample.status {
        supervisor_model::TaskStatus::Succeeded => SUCCEEDED,
        supervisor_model::TaskStatus::Failed => FAILED,
        _ => CANCELLED,
    };
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let all = [
        (Cow::Borrowed(status), 1),
        (Cow::Borrowed(ATTEMPTS), i64::from(sample.attempts)),
        (Cow::Borrowed(INPUT_TOKENS), clamp(sample.input_tokens)),
        (Cow::Borrowed(OUTPUT_TOKENS), clamp(sample.output_tokens)),
        (Cow::Borrowed(COST_MICROS), clamp(sample.cost_micros)),
        (
            Cow::Owned(latency_field(LatencyHistogram::bucket_of(
                sample.latency_ms,
            ))),
            1,
        ),
    ];
    all.into_iter().filter(|(_, n)| *n != 0).collect()
}

/// Adds `task` (which just became terminal) to its minute's rollup row and marks the
/// minute for the roller. Atomic adds and a blind write: no read, no conflict.
pub(crate) fn record_finished(txn: &mut Transaction<'_>, task: &Task) {
    let Some(sample) = FinishedSample::of(task) else {
        return;
    };
    let minute = Granularity::Minute.start_of(sample.finished_at);
    for (field, n) in counters(&sample) {
        txn.atomic_add(
            &keyspace::rollup(Granularity::Minute, minute, &sample.dims, &field),
            n,
        );
    }
    txn.set(&keyspace::rollup_dirty(minute, &task.tenant), &[]);
}

/// Adds the stored counter `field` of value `n` to `stats`; returns `false` for a field
/// this version does not know (it is skipped).
pub(crate) fn add_counter(stats: &mut RollupStats, field: &str, n: i64) -> bool {
    let n = u64::try_from(n).unwrap_or(0);
    match field {
        SUCCEEDED => {
            stats.succeeded += n;
            stats.finished += n;
        }
        FAILED => {
            stats.failed += n;
            stats.finished += n;
        }
        CANCELLED => {
            stats.cancelled += n;
            stats.finished += n;
        }
        ATTEMPTS => stats.attempts += n,
        INPUT_TOKENS => stats.input_tokens += n,
        OUTPUT_TOKENS => stats.output_tokens += n,
        COST_MICROS => stats.cost_micros += n,
        other => match other
            .strip_prefix(LATENCY_PREFIX)
            .and_then(|b| b.parse::<u16>().ok())
        {
            Some(bucket) => stats.latency.add_to_bucket(bucket, n),
            None => return false,
        },
    }
    true
}

#[cfg(test)]
mod tests {
    use supervisor_model::{RollupDims, Specialty, TaskStatus, TaskType};

    use super::*;

    #[test]
    fn counters_read_back_as_the_sample_and_skip_zeros() {
        let sample = FinishedSample {
            dims: RollupDims {
                tenant: "t".into(),
                task_type: TaskType::BugFix,
                specialty: Specialty::BugHunter,
                provider: String::new(),
                size_class: 0,
                repository: false,
            },
            status: TaskStatus::Cancelled,
            latency_ms: 1500,
            attempts: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
            finished_at: 0,
        };
        let written = counters(&sample);
        assert_eq!(written.len(), 2, "{written:?}");
        let mut stats = RollupStats::default();
        for (field, n) in &written {
            assert!(add_counter(&mut stats, field, *n));
        }
        let mut expected = RollupStats::default();
        expected.add(&sample);
        assert_eq!(stats, expected);
        assert!(!add_counter(&mut stats, "from_the_future", 1));
    }
}
