//! The engine's tunables, with the defaults documented where they are defined.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tunables of the durable layer. Every field has a default; see `supervisor.example.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How long a lease lasts unless renewed (running attempts renew every third of it).
    /// A node that dies holding tasks delays them by at most this much. Default 5s.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// Attempts per task when the submitter gives none. Default 3.
    pub default_max_attempts: u32,
    /// Time limit of one attempt when the submitter gives none. Default 10m.
    #[serde(with = "humantime_serde")]
    pub default_attempt_timeout: Duration,
    /// Backoff before the second attempt; doubles per attempt. Default 1s.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Largest backoff between attempts. Default 5m.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Most requests the group-commit batchers put in one transaction. Default 512.
    pub max_batch: usize,
    /// Batches each batcher may have committing at once. Default 2.
    pub batches_in_flight: usize,
    /// Output is stored in chunks of at most this many bytes (below the store's value
    /// limit). Default 65536.
    pub output_chunk_bytes: usize,
    /// Shortest time between two ticks a workflow schedule may have: a cron that fires
    /// more often (`* * * * * *`) is refused. Default 1m.
    #[serde(with = "humantime_serde")]
    pub min_schedule_interval: Duration,
    /// When submits are refused for overload (`[engine.admission]`).
    pub admission: crate::AdmissionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease_duration: Duration::from_secs(5),
            default_max_attempts: 3,
            default_attempt_timeout: Duration::from_secs(600),
            retry_initial_backoff: Duration::from_secs(1),
            retry_max_backoff: Duration::from_secs(300),
            max_batch: 512,
            batches_in_flight: 2,
            output_chunk_bytes: 64 * 1024,
            min_schedule_interval: supervisor_workflow::schedule::DEFAULT_MIN_INTERVAL,
            admission: crate::AdmissionConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Checks that the values make sense together, naming the first one that does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_millis(100) {
            return Err("engine.lease_duration must be at least 100ms".into());
        }
        if self.default_max_attempts == 0
            || self.default_max_attempts > supervisor_model::MAX_ATTEMPTS_LIMIT
        {
            return Err(format!(
                "engine.default_max_attempts must be 1 to {}",
                supervisor_model::MAX_ATTEMPTS_LIMIT
            ));
        }
        if self.default_attempt_timeout.is_zero()
            || self.default_attempt_timeout.as_millis()
                > u128::from(supervisor_model::MAX_TIMEOUT_MS)
        {
            return Err(format!(
                "engine.default_attempt_timeout must be above zero and at most {}ms (24h)",
                supervisor_model::MAX_TIMEOUT_MS
            ));
        }
        if self.retry_initial_backoff > self.retry_max_backoff {
            return Err(
                "engine.retry_initial_backoff must not exceed engine.retry_max_backoff".into(),
            );
        }
        if self.max_batch == 0 || self.batches_in_flight == 0 {
            return Err("engine.max_batch and engine.batches_in_flight must be at least 1".into());
        }
        if self.output_chunk_bytes < 1024 || self.output_chunk_bytes > 90_000 {
            return Err("engine.output_chunk_bytes must be 1024 to 90000".into());
        }
        if self.admission.retry_after.is_zero() {
            return Err("engine.admission.retry_after must be above zero".into());
        }
        if self.min_schedule_interval < Duration::from_secs(1) {
            return Err("engine.min_schedule_interval must be at least 1s (cron ticks fall on whole seconds)".into());
        }
        Ok(())
    }

    /// Backoff before attempt `failed_attempt + 1`: exponential from the initial backoff,
    /// capped, with "equal jitter" (half fixed, half random) so retries spread out.
    pub fn backoff(&self, failed_attempt: u32, random_unit: f64) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(30);
        let base = self
            .retry_initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.retry_max_backoff);
        let half = base / 2;
        half + half.mul_f64(random_unit.clamp(0.0, 1.0))
    }
}
