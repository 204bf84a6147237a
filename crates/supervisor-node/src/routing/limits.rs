//! The two pure rules that decide whether a provider may take one more request now: a
//! token bucket (requests or tokens per minute) and a circuit breaker. Time is an
//! argument, never read here, so every rule is a unit test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A token bucket: `capacity` tokens, refilled continuously at `capacity` per minute.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens.
    pub fn per_minute(per_minute: u64, now: Instant) -> Self {
        TokenBucket {
            capacity: per_minute as f64,
            tokens: per_minute as f64,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.capacity / 60.0).min(self.capacity);
        self.updated = now;
    }

    /// How long until `n` tokens are available (zero if they are now).
    pub fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        let n = n.min(self.capacity);
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) * 60.0 / self.capacity)
        }
    }

    /// Takes `n` tokens (may go negative when actual use exceeded the estimate).
    pub fn take(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }
}

/// State of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Taking work.
    Closed,
    /// Refusing work until the cooldown ends.
    Open {
        /// When it half-opens.
        until: Instant,
    },
    /// One trial request decides whether it closes or opens again.
    HalfOpen {
        /// Whether the trial is running.
        trial_running: bool,
    },
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Opens after `threshold` failures within `window`, cools down, then lets one trial
/// through: success closes it, failure opens it again.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    window: Duration,
    cooldown: Duration,
    failures: VecDeque<Instant>,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, window: Duration, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            window,
            cooldown,
            failures: VecDeque::new(),
            state: BreakerState::Closed,
        }
    }

    /// The state now (an open breaker whose cooldown ended reads as half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen {
                trial_running: false,
            };
        }
        self.state
    }

    /// Whether a request may go now; `Err` holds how long until it might.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } => Err(until.saturating_duration_since(now)),
            BreakerState::HalfOpen {
                trial_running: true,
            } => Err(self.cooldown),
            BreakerState::HalfOpen {
                trial_running: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    trial_running: true,
                };
                Ok(())
            }
        }
    }

    /// Records a success.
    pub fn success(&mut self) {
        if matches!(self.state, BreakerState::HalfOpen { .. }) {
            self.state = BreakerState::Closed;
            self.failures.clear();
        }
    }

    /// Records a failure that is the provider's fault.
    pub fn failure(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
            }
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() as u32 >= self.threshold {
                    self.failures.clear();
                    self.state = BreakerState::Open {
                        until: now + self.cooldown,
                    };
                }
            }
        }
    }

    /// A trial that never reported (abandoned) must not keep the breaker half-open.
    pub(crate) fn release_trial(&mut self) {
        if let BreakerState::HalfOpen {
            trial_running: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                trial_running: false,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(60, t0);
        b.take(60.0, t0);
        assert_eq!(b.wait_for(1.0, t0), Duration::from_secs(1));
        assert_eq!(b.wait_for(1.0, t0 + Duration::from_secs(1)), Duration::ZERO);
        // Actual use over the estimate goes negative and delays later requests.
        b.take(30.0, t0 + Duration::from_secs(1));
        assert_eq!(
            b.wait_for(1.0, t0 + Duration::from_secs(1)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn breaker_opens_cools_down_and_half_opens_with_one_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10), Duration::from_secs(5));
        for i in 0..2 {
            b.failure(t0 + Duration::from_secs(i));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0 + Duration::from_secs(2));
        assert!(matches!(
            b.state(t0 + Duration::from_secs(2)),
            BreakerState::Open { .. }
        ));
        assert!(b.admit(t0 + Duration::from_secs(3)).is_err());
        let later = t0 + Duration::from_secs(8);
        assert!(b.admit(later).is_ok(), "one trial after the cooldown");
        assert!(b.admit(later).is_err(), "only one trial at a time");
        b.failure(later);
        assert!(
            matches!(b.state(later), BreakerState::Open { .. }),
            "a failed trial reopens"
        );
        let much_later = later + Duration::from_secs(6);
        assert!(b.admit(much_later).is_ok());
        b.success();
        assert_eq!(b.state(much_later), BreakerState::Closed);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(10), Duration::from_secs(5));
        b.failure(t0);
        b.failure(t0 + Duration::from_secs(11));
        assert_eq!(b.state(t0 + Duration::from_secs(11)), BreakerState::Closed);
    }
}
