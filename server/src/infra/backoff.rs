//! The one exponential backoff: a retry waits longer after each consecutive failure, so a dead
//! peer costs little, and never longer than a cap, so a recovered one is noticed soon.

use std::time::Duration;

/// Delay after `failures` consecutive failures (1 = the first; 0 counts as 1):
/// `base × 2^(failures − 1)`, at most `max`. The exponent stops at 20 and the product
/// saturates, so no count overflows.
pub fn delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    base.saturating_mul(1 << exp).min(max)
}

/// A retry loop's backoff: counts consecutive failures and answers the [`delay`] for the next
/// wait, so each loop keeps a count instead of doubling a duration by hand.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }

    /// Counts one more failure and answers how long to wait before retrying:
    /// `base`, `2 × base`, `4 × base`, … at most `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.base, self.max, self.failures)
    }

    /// After a success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_is_capped() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(delay(b, m, 1), Duration::from_secs(1));
        assert_eq!(delay(b, m, 2), Duration::from_secs(2));
        assert_eq!(delay(b, m, 4), Duration::from_secs(8));
        assert_eq!(delay(b, m, 7), Duration::from_secs(60));
        assert_eq!(delay(b, m, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn outbox_retries_double_and_are_capped() {
        let (b, m) = (Duration::from_secs(10), Duration::from_secs(900));
        assert_eq!(delay(b, m, 0), Duration::from_secs(10));
        assert_eq!(delay(b, m, 1), Duration::from_secs(10));
        assert_eq!(delay(b, m, 2), Duration::from_secs(20));
        assert_eq!(delay(b, m, 4), Duration::from_secs(80));
        assert_eq!(delay(b, m, 10), m);
        assert_eq!(delay(b, m, u32::MAX), m);
    }

    #[test]
    fn backoff_counts_failures_until_reset() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let waits: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }
}
