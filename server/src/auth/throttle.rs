//! Brute-force throttling of password checks, per account and per source address.
//!
//! Every attempt that would cost a password verification (API login, page login, MQTT CONNECT,
//! XML push Basic auth) first takes a cell from two GCRA limiters (`governor`): one keyed by
//! the account name, one by the source address (IPv6 by /64, which one host usually owns).
//! An exhausted key answers [`Throttled`] with the time until the next attempt is allowed, so
//! that HTTP can send `429` with `Retry-After` and MQTT a CONNACK "server unavailable".
//! A failed attempt costs one more cell on the account ([`Throttle::failed`]), so guessing
//! slows down twice as fast as a user who mistypes once.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// How many attempts an account and a source may make: a burst, then one per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub account_burst: u32,
    pub account_period_ms: u64,
    pub source_burst: u32,
    pub source_period_ms: u64,
}

impl Limits {
    /// People: ten tries, then one every six seconds per account; a source may try 30 accounts
    /// in a burst, then two a second.
    pub const LOGIN: Limits = Limits {
        account_burst: 10,
        account_period_ms: 6_000,
        source_burst: 30,
        source_period_ms: 500,
    };
    /// Gateways: two links each reconnect a few times a minute at most; a whole fleet behind
    /// one NAT address may reconnect at once after an outage, so the source allowance is large
    /// (the hashing pool, not this, bounds the cost of such a burst).
    pub const DEVICE: Limits = Limits {
        account_burst: 10,
        account_period_ms: 6_000,
        source_burst: 2_000,
        source_period_ms: 5,
    };
}

/// The key may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds for a `Retry-After` header, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

/// Account names are attacker-chosen: they are bounded and folded before they become keys.
const MAX_ACCOUNT_KEY: usize = 128;
/// Forget idle keys every this many attempts, so a spray of random names cannot grow the maps.
const CLEANUP_EVERY: u64 = 4_096;

pub struct Throttle {
    accounts: DefaultKeyedRateLimiter<String>,
    sources: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    attempts: AtomicU64,
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        let quota = |burst: u32, period_ms: u64| {
            let period = Duration::from_millis(period_ms.max(1));
            Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least one"))
        };
        Self {
            accounts: RateLimiter::keyed(quota(limits.account_burst, limits.account_period_ms)),
            sources: RateLimiter::keyed(quota(limits.source_burst, limits.source_period_ms)),
            clock: DefaultClock::default(),
            attempts: AtomicU64::new(0),
        }
    }

    /// One attempt at `account` from `source`: allowed, or how long to wait.
    pub fn attempt(&self, account: &str, source: IpAddr) -> Result<(), Throttled> {
        self.housekeeping();
        let source = source_key(source);
        let account = account_key(account);
        // The source is checked first: a sprayer is refused without spending the allowance of
        // the accounts it names.
        self.sources
            .check_key(&source)
            .map_err(|until| self.throttled(until.wait_time_from(self.clock.now())))?;
        self.accounts
            .check_key(&account)
            .map_err(|until| self.throttled(until.wait_time_from(self.clock.now())))
    }

    /// A wrong password for `account`: it costs one more attempt.
    pub fn failed(&self, account: &str) {
        let _ = self.accounts.check_key(&account_key(account));
    }

    fn throttled(&self, retry_after: Duration) -> Throttled {
        Throttled { retry_after }
    }

    fn housekeeping(&self) {
        if self.attempts.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == CLEANUP_EVERY - 1 {
            self.accounts.retain_recent();
            self.sources.retain_recent();
            self.accounts.shrink_to_fit();
            self.sources.shrink_to_fit();
        }
    }
}

fn account_key(account: &str) -> String {
    let folded = account.trim().to_lowercase();
    let mut end = folded.len().min(MAX_ACCOUNT_KEY);
    while !folded.is_char_boundary(end) {
        end -= 1;
    }
    folded[..end].to_owned()
}

/// IPv4 by address; IPv6 by its /64 (one host typically owns a whole /64); a v4-mapped v6
/// address as the v4 address it is.
fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIGHT: Limits = Limits {
        account_burst: 3,
        account_period_ms: 60_000,
        source_burst: 5,
        source_period_ms: 60_000,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_account_is_throttled_after_its_burst_with_a_retry_time() {
        let t = Throttle::new(TIGHT);
        for _ in 0..3 {
            t.attempt("Admin@Example.org", ip("10.0.0.1")).unwrap();
        }
        let refused = t.attempt(" admin@example.org", ip("10.0.0.2")).unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(50));
        assert!(refused.retry_after_secs() <= 60);
        // Another account from another source is untouched.
        t.attempt("other@example.org", ip("10.0.0.3")).unwrap();
    }

    #[test]
    fn a_source_spraying_accounts_is_throttled() {
        let t = Throttle::new(TIGHT);
        for i in 0..5 {
            t.attempt(&format!("user{i}"), ip("192.0.2.7")).unwrap();
        }
        assert!(t.attempt("user99", ip("192.0.2.7")).is_err());
        assert!(t.attempt("user99", ip("192.0.2.8")).is_ok());
    }

    #[test]
    fn failures_cost_double() {
        let t = Throttle::new(TIGHT);
        t.attempt("gw", ip("10.0.0.1")).unwrap();
        t.failed("gw");
        t.attempt("gw", ip("10.0.0.1")).unwrap();
        assert!(t.attempt("gw", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn ipv6_hosts_share_their_64_and_mapped_v4_is_v4() {
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa::1")),
            source_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn account_keys_are_bounded() {
        let long = "é".repeat(1000);
        assert!(account_key(&long).len() <= MAX_ACCOUNT_KEY);
    }
}
