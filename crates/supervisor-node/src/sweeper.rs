//! The retention sweeper: a singleton [duty](crate::duty) that deletes finished work past
//! its retention period (`[retention]`), a small batch per transaction with a pause
//! between batches so foreground work goes first, archiving it first when an archive
//! directory is set. The engine checks the duty's fencing token in every transaction.

use std::time::Duration;

use supervisor_engine::archive::Archiver;
use supervisor_engine::{Engine, RETENTION_DUTY, RetentionConfig};

use crate::duty::{Round, Work};

/// Sweeps under the retention duty.
pub struct Sweeper {
    /// What to keep and how to sweep.
    pub config: RetentionConfig,
    /// Where deleted records are archived first, if anywhere.
    pub archive: Option<Archiver>,
}

impl Sweeper {
    /// A sweeper for `config`.
    pub fn new(config: RetentionConfig) -> Sweeper {
        let archive = config.archive_dir.clone().map(Archiver::new);
        Sweeper { config, archive }
    }
}

/// Counts what a sweep deleted in the node's metrics.
fn count(sweep: &supervisor_engine::RetentionSweep) {
    if !supervisor_telemetry::metrics_on() {
        return;
    }
    let m = supervisor_telemetry::metrics();
    for (kind, n) in [
        ("task", sweep.tasks_deleted),
        ("workflow_run", sweep.runs_deleted),
    ] {
        if n > 0 {
            m.retention_deleted
                .add(n as u64, &[opentelemetry::KeyValue::new("kind", kind)]);
        }
    }
}

impl Work for Sweeper {
    fn key(&self) -> &'static str {
        RETENTION_DUTY
    }

    async fn round(&mut self, engine: &Engine, fence: u64) -> Round {
        match engine
            .sweep_retention(&self.config, self.archive.as_ref(), Some(fence))
            .await
        {
            Ok(sweep) if sweep.lost_duty => Round::LostDuty,
            Ok(sweep) if sweep.more => {
                count(&sweep);
                Round::After(self.config.pause)
            }
            Ok(sweep) => {
                count(&sweep);
                Round::After(self.config.sweep_every())
            }
            Err(err) => {
                tracing::warn!(error = %err, "the retention sweep failed; retrying shortly");
                Round::Retry(Duration::from_secs(5).min(self.config.sweep_every()))
            }
        }
    }
}
