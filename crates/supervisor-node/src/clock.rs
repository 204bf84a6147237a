//! The node's seam for time. Every actor of the node reads the monotonic time and sleeps
//! through a [`Clock`] it is given, never through `Instant::now` or `tokio::time`
//! directly, so a test can start a whole node on a [`ManualClock`] and move its timers by
//! hand: heartbeats, fencing of silent peers, lease renewals, breaker cooldowns, restart
//! backoffs and route waits then happen exactly when the test says, without sleeping.
//!
//! Durable time (lease expiry, retry timers, schedules) is the engine's own `Clock`; this
//! one only drives what a node process decides on its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A future that resolves when a sleep ends.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

trait TimeSource: Send + Sync + 'static {
    fn now(&self) -> Instant;
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// Monotonic time and sleeping, shared by every actor of a node. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn TimeSource>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

struct SystemTime;

impl TimeSource for SystemTime {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

impl Clock {
    /// The real clock (tokio's timers).
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime))
    }

    /// A clock that only moves when the returned [`ManualClock`] is advanced.
    pub fn manual() -> (Clock, ManualClock) {
        let manual = ManualClock {
            state: Arc::new(Mutex::new(ManualState {
                now: Instant::now(),
                sleepers: Vec::new(),
            })),
        };
        (Clock(Arc::new(manual.clone())), manual)
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        self.0.now()
    }

    /// Resolves at `deadline` (at once if it has passed).
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        self.0.sleep_until(deadline)
    }

    /// Resolves after `d`.
    pub fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now() + d)
    }

    /// Time since `earlier`, on this clock.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Runs `fut` for at most `d`; `None` when the time ran out first.
    pub async fn timeout<T>(&self, d: Duration, fut: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = fut => Some(out),
            _ = self.sleep(d) => None,
        }
    }

    /// Casts `msg()` to `actor` after `delay` (the clock's version of ractor's
    /// `send_after`). Nothing happens if the actor is gone by then.
    pub fn send_after<M: ractor::Message>(
        &self,
        actor: &ractor::ActorRef<M>,
        delay: Duration,
        msg: impl FnOnce() -> M + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let sleep = self.sleep(delay);
        let actor = actor.clone();
        tokio::spawn(async move {
            sleep.await;
            let _ = actor.cast(msg());
        })
    }

    /// Casts `msg()` to `actor` every `period`, first after one period, until the actor
    /// is gone (the clock's version of ractor's `send_interval`).
    pub fn send_interval<M: ractor::Message>(
        &self,
        actor: &ractor::ActorRef<M>,
        period: Duration,
        msg: impl Fn() -> M + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let clock = self.clone();
        let actor = actor.clone();
        tokio::spawn(async move {
            let mut next = clock.now() + period;
            loop {
                clock.sleep_until(next).await;
                if actor.cast(msg()).is_err() {
                    return;
                }
                next += period;
            }
        })
    }
}

struct ManualState {
    now: Instant,
    sleepers: Vec<(Instant, oneshot::Sender<()>)>,
}

/// The hand of a manual [`Clock`]: time stands still until [`ManualClock::advance`].
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

impl ManualClock {
    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves time forward by `d` and wakes every sleep that ends by then.
    pub fn advance(&self, d: Duration) {
        let due = {
            let mut state = self.state();
            state.now += d;
            let now = state.now;
            let (due, waiting): (Vec<_>, Vec<_>) =
                state.sleepers.drain(..).partition(|(at, _)| *at <= now);
            state.sleepers = waiting;
            due
        };
        for (_, wake) in due {
            let _ = wake.send(());
        }
    }

    /// Sleeps that have not ended yet (a test waits for an actor to arm its timer).
    pub fn sleepers(&self) -> usize {
        let mut state = self.state();
        state.sleepers.retain(|(_, wake)| !wake.is_closed());
        state.sleepers.len()
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> Instant {
        self.state().now
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut state = self.state();
        if deadline <= state.now {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        state.sleepers.push((deadline, tx));
        Box::pin(async move {
            // A dropped clock never wakes its sleepers.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_advanced() {
        let (clock, hand) = Clock::manual();
        let t0 = clock.now();
        let short = tokio::spawn(clock.sleep(Duration::from_secs(1)));
        let long = tokio::spawn(clock.sleep(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert_eq!(hand.sleepers(), 2);
        hand.advance(Duration::from_millis(999));
        tokio::task::yield_now().await;
        assert!(!short.is_finished());
        hand.advance(Duration::from_millis(1));
        short.await.expect("short sleep ends");
        assert!(!long.is_finished());
        hand.advance(Duration::from_secs(4));
        long.await.expect("long sleep ends");
        assert_eq!(clock.since(t0), Duration::from_secs(5));
        assert_eq!(hand.sleepers(), 0);
        // A deadline in the past is due at once.
        clock.sleep_until(t0).await;
    }

    #[tokio::test]
    async fn timeout_follows_the_clock() {
        let (clock, hand) = Clock::manual();
        let c = clock.clone();
        let waiting = tokio::spawn(async move {
            c.timeout(Duration::from_secs(3), std::future::pending::<()>())
                .await
        });
        while hand.sleepers() == 0 {
            tokio::task::yield_now().await;
        }
        hand.advance(Duration::from_secs(3));
        assert_eq!(waiting.await.expect("joined"), None);
    }
}
