//! The node's seam for randomness: jitter that spreads retries of many nodes apart (a
//! failed lease, a redial after a partition heals) comes from one seeded generator the
//! node is given, so a test that fixes the seed sees the same delays every run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

/// A shared, seedable random number generator. Cheap to clone (clones share the stream).
#[derive(Clone)]
pub struct Rng(Arc<Mutex<StdRng>>);

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng")
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::from_entropy()
    }
}

impl Rng {
    /// Seeded from the operating system.
    pub fn from_entropy() -> Rng {
        Rng(Arc::new(Mutex::new(StdRng::from_os_rng())))
    }

    /// The same stream every time for the same seed.
    pub fn seeded(seed: u64) -> Rng {
        Rng(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }

    /// `d` scaled by a uniform factor in `[1 - spread, 1 + spread]` (`spread` is clamped
    /// to `0..=1`).
    pub fn jitter(&self, d: Duration, spread: f64) -> Duration {
        let spread = spread.clamp(0.0, 1.0);
        if spread == 0.0 {
            return d;
        }
        let factor = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random_range(1.0 - spread..=1.0 + spread);
        d.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_band_and_a_seed_repeats_it() {
        let base = Duration::from_millis(1000);
        let a: Vec<Duration> = {
            let r = Rng::seeded(7);
            (0..50).map(|_| r.jitter(base, 0.2)).collect()
        };
        let b: Vec<Duration> = {
            let r = Rng::seeded(7);
            (0..50).map(|_| r.jitter(base, 0.2)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter()
                .all(|d| *d >= Duration::from_millis(800) && *d <= Duration::from_millis(1200))
        );
        assert!(a.iter().any(|d| *d != base));
        assert_eq!(Rng::seeded(1).jitter(base, 0.0), base);
    }
}
