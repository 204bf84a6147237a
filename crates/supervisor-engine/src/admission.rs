//! Admission control: submits are refused, with a time to retry after, while the cluster's
//! backlog or this node's store latency is past its bound.
//!
//! Why: a queue that accepts work faster than the cluster finishes it only grows, and every
//! task in it costs store space and makes every lease scan longer; a store whose commits
//! slow down under a flood of submits slows lease renewals and completions with them. A
//! refusal that says when to come back (gRPC `RESOURCE_EXHAUSTED` with a `RetryInfo`)
//! pushes the excess back to the clients, which know whether it can wait, while the work
//! already accepted drains at full speed. Renewals, completions and heartbeats never pass
//! through here, and they have a lane of their own in the store
//! ([`supervisor_store::Priority::System`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisor_model::TaskStatus;

use crate::codec::counter;
use crate::{Engine, EngineError, keyspace};

/// How long a read of the backlog serves later submits.
const BACKLOG_FRESH: Duration = Duration::from_millis(250);

/// The bounds of admission control (`[engine.admission]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Submits are refused while at least this many tasks are queued (ready, not yet
    /// leased) in the whole cluster. 0 turns the bound off. Default 1,000,000.
    pub max_queued: u64,
    /// Submits are refused while this node's store commits take longer than this on
    /// average (over the last few dozen). 0 turns the bound off. Default 2s.
    #[serde(with = "humantime_serde")]
    pub max_commit_latency: Duration,
    /// How long a refused client is told to wait before retrying. Default 1s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_queued: 1_000_000,
            max_commit_latency: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The backlog as last read, shared by the submits of one engine.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// When it was read (engine clock, unix microseconds), and what it was.
    last: std::sync::Mutex<Option<(i64, u64)>>,
    /// A submit is reading it now.
    reading: AtomicBool,
}

impl Engine {
    /// Refuses a submit while the cluster is past a bound of [`AdmissionConfig`].
    pub(crate) async fn admit(&self) -> Result<(), EngineError> {
        let cfg = &self.inner.cfg.admission;
        if !cfg.max_commit_latency.is_zero() {
            let latency = self.inner.db.commit_latency();
            if latency > cfg.max_commit_latency {
                return Err(EngineError::Overloaded {
                    reason: format!(
                        "the store's commits take {:.0} ms on average on this node, over \
                         engine.admission.max_commit_latency ({:.0} ms)",
                        latency.as_secs_f64() * 1e3,
                        cfg.max_commit_latency.as_secs_f64() * 1e3
                    ),
                    retry_after: cfg.retry_after,
                });
            }
        }
        if cfg.max_queued > 0 {
            let queued = self.backlog().await?;
            if queued >= cfg.max_queued {
                return Err(EngineError::Overloaded {
                    reason: format!(
                        "{queued} tasks are queued in the cluster, at \
                         engine.admission.max_queued ({})",
                        cfg.max_queued
                    ),
                    retry_after: cfg.retry_after,
                });
            }
        }
        Ok(())
    }

    /// Queued tasks in the cluster, read at most every [`BACKLOG_FRESH`]; submits that
    /// arrive while another reads it use the previous reading.
    async fn backlog(&self) -> Result<u64, EngineError> {
        let backlog = &self.inner.backlog;
        let now = self.now_micros();
        let fresh = i64::try_from(BACKLOG_FRESH.as_micros()).unwrap_or(i64::MAX);
        let cached = *backlog.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, queued)) = cached
            && now.saturating_sub(at) < fresh
        {
            return Ok(queued);
        }
        if backlog.reading.swap(true, Ordering::AcqRel) {
            return Ok(cached.map_or(0, |(_, queued)| queued));
        }
        let read = async {
            let mut txn = self.inner.db.begin().await?;
            let value = txn
                .get_snapshot(&keyspace::status_counter(TaskStatus::Queued))
                .await?;
            Ok::<_, EngineError>(counter(value.as_deref()).max(0) as u64)
        }
        .await;
        if let Ok(queued) = read {
            *backlog.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, queued));
        }
        backlog.reading.store(false, Ordering::Release);
        read
    }
}
