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
}
