//! The node's one exponential backoff, for restarts of supervised actors and redials of
//! peers: delays start at a base and double up to a cap. The delays come from `backon`;
//! it multiplies in `f32`, so each delay is rounded to whole microseconds, which keeps
//! configured values exact (a 100 ms base gives 200 ms, not 200.000003 ms).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays from `base`, doubling, never above `cap`, without end.
pub fn exponential(base: Duration, cap: Duration) -> Delays {
    Delays(
        ExponentialBuilder::new()
            .with_min_delay(base)
            .with_max_delay(cap.max(base))
            .with_factor(2.0)
            .without_max_times()
            .build(),
    )
}

/// The delays of one backoff, in order.
#[derive(Debug)]
pub struct Delays(ExponentialBackoff);

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.0
            .next()
            .map(|d| Duration::from_micros((d.as_secs_f64() * 1e6).round() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_exactly_up_to_the_cap() {
        let got: Vec<Duration> =
            exponential(Duration::from_millis(100), Duration::from_millis(750))
                .take(5)
                .collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(got, vec![ms(100), ms(200), ms(400), ms(750), ms(750)]);
    }
}
