//! The roller keeps the analytics rollups: a singleton [duty](crate::duty) that folds
//! closed minutes into hour and day rows and drops rows past their retention. It is its
//! own duty rather than a step of the scheduler's so that a long fold never delays a
//! schedule's tick; the engine makes each fold exactly once whoever runs it.

use std::time::{Duration, Instant};

use supervisor_engine::{Engine, ROLLER_DUTY};

use crate::clock::Clock;
use crate::duty::{Round, Work};

/// How often the holder drops expired rows (folding happens at every round).
const EXPIRE_EVERY: Duration = Duration::from_secs(600);

/// Folds at every round (every third of the duty's lease), expires now and then.
pub struct Roller {
    /// Times the expiry.
    pub clock: Clock,
    /// When this node last dropped expired rows, while it holds the duty.
    pub expired_at: Option<Instant>,
}

impl Work for Roller {
    fn key(&self) -> &'static str {
        ROLLER_DUTY
    }

    async fn round(&mut self, engine: &Engine, fence: u64) -> Round {
        match engine.roll_analytics_as_roller(fence).await {
            Ok(roll) if roll.lost_duty => return Round::LostDuty,
            Ok(roll) => {
                if roll.minutes_folded > 0 {
                    tracing::debug!(minutes = roll.minutes_folded, "analytics minutes folded");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "folding the analytics rollups failed; retrying shortly");
                return Round::Retry(Duration::from_secs(1));
            }
        }
        if self
            .expired_at
            .is_none_or(|at| self.clock.since(at) >= EXPIRE_EVERY)
        {
            match engine.expire_analytics(Some(fence)).await {
                Ok(_) => self.expired_at = Some(self.clock.now()),
                Err(err) => {
                    tracing::warn!(error = %err, "dropping expired analytics rows failed; retrying at the next round");
                }
            }
        }
        // The duty's renewal brings it back every third of the lease.
        Round::After(Duration::MAX)
    }

    fn stand_by(&mut self) {
        self.expired_at = None;
    }
}
