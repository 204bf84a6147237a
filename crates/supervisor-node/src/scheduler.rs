//! The scheduler fires workflow schedules: a singleton [duty](crate::duty). Each tick is
//! fired in one transaction that also records it, so a tick starts one run however many
//! nodes try.

use std::time::Duration;

use supervisor_engine::{Engine, SCHEDULER_DUTY};

use crate::duty::{Round, Work};

/// Fires what is due, then sleeps until the next schedule's tick.
pub struct Scheduler;

impl Work for Scheduler {
    fn key(&self) -> &'static str {
        SCHEDULER_DUTY
    }

    async fn round(&mut self, engine: &Engine, fence: u64) -> Round {
        match engine.fire_due_schedules(fence).await {
            Ok((fired, next)) => {
                if fired > 0 {
                    tracing::info!(fired, "scheduled workflow runs started");
                }
                match next {
                    Some(n) => Round::After(
                        Duration::from_micros(n.saturating_sub(engine.now_micros()).max(0) as u64)
                            .max(Duration::from_millis(10)),
                    ),
                    // Nothing scheduled: only the lease's renewal brings it back.
                    None => Round::After(Duration::MAX),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "firing schedules failed; retrying shortly");
                Round::Retry(Duration::from_secs(1))
            }
        }
    }
}
