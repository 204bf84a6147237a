//! The housekeeper vests retries and takes back lapsed leases: a singleton
//! [duty](crate::duty) (the reaper), its fencing token checked in every sweep's
//! transaction. It sleeps until the earliest timer is due or a local commit arms an
//! earlier one, never on a fixed poll; `max_idle` only bounds the sleep so timers armed
//! by other nodes are not missed.

use std::time::Duration;

use supervisor_engine::{Engine, REAPER_DUTY};

use crate::duty::{Early, Round, Work};

/// Sweeps due timers, `batch` per transaction.
pub struct Housekeeper {
    /// Longest sleep between sweeps.
    pub max_idle: Duration,
    /// Most timers handled per transaction.
    pub batch: usize,
}

impl Work for Housekeeper {
    fn key(&self) -> &'static str {
        REAPER_DUTY
    }

    async fn round(&mut self, engine: &Engine, fence: u64) -> Round {
        match engine.sweep_timers_as_reaper(self.batch, fence).await {
            Ok(sweep) if sweep.lost_duty => Round::LostDuty,
            Ok(sweep) if sweep.retries_vested + sweep.leases_reclaimed >= self.batch => {
                Round::Again
            }
            Ok(sweep) => {
                if sweep.retries_vested + sweep.leases_reclaimed > 0 {
                    tracing::debug!(
                        vested = sweep.retries_vested,
                        reclaimed = sweep.leases_reclaimed,
                        "timers handled"
                    );
                }
                Round::After(match sweep.next_due {
                    Some(due) => {
                        let wait = due.saturating_sub(engine.now_micros()).max(0) as u64;
                        Duration::from_micros(wait).min(self.max_idle)
                    }
                    None => self.max_idle,
                })
            }
            Err(err) => {
                tracing::warn!(error = %err, "timer sweep failed; retrying shortly");
                Round::Retry(Duration::from_millis(500))
            }
        }
    }

    fn early(&self, engine: &Engine) -> Option<Early> {
        let engine = engine.clone();
        Some(Box::pin(async move { engine.timers_notified().await }))
    }
}
