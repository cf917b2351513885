//! Decorrelated-jitter backoff: each delay is random between the initial delay and three
//! times the previous one, capped, so many clients retrying at once spread out.

use rand::Rng;
use std::time::Duration;

/// Backoff state for one retried operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    previous: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(5))
    }
}

impl Backoff {
    /// A backoff starting around `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            previous: initial,
        }
    }

    /// The next delay to sleep.
    pub fn next_delay(&mut self) -> Duration {
        let lo = self.initial.as_secs_f64();
        let hi = (self.previous.as_secs_f64() * 3.0).max(lo);
        let pick = if hi > lo {
            rand::rng().random_range(lo..hi)
        } else {
            lo
        };
        let next = Duration::from_secs_f64(pick).min(self.max);
        self.previous = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
    }
}
