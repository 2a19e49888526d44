//! Reconnect backoff: exponential growth with jitter, so that a fleet of gateways that lost
//! the broker at the same moment does not reconnect in lockstep.

use core::time::Duration;

use crate::rng::SplitMix64;

/// Exponential backoff with "equal jitter": the n-th delay is uniform in
/// `[base/2, base]` with `base = min(max, min * 2^n)`. Never below `min`, never above `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// The gateway's defaults: 1 s to 60 s.
    pub const DEFAULT_MIN: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX: Duration = Duration::from_secs(60);

    /// A backoff between `min` and `max` (swapped if given the wrong way round), with jitter
    /// drawn from `seed`.
    #[must_use]
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        Self {
            min,
            max,
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// 1 s to 60 s.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self::new(Self::DEFAULT_MIN, Self::DEFAULT_MAX, seed)
    }

    /// How long to wait before the next connection attempt; each call grows the next one.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1_u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let base = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        let half = base_ms / 2;
        let jittered = half + self.rng.below(base_ms - half + 1);
        Duration::from_millis(jittered).clamp(self.min, self.max)
    }

    /// Call on a successful connection: the next delay starts from `min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last [`reset`](Self::reset).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}
