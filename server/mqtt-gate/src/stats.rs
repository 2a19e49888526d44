//! Counters shared between the gate's tasks and whoever watches them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Live counters of a gate. Cheap to clone; every clone reads the same
/// counters, so a handle taken before [`Gate::serve`](crate::Gate::serve)
/// keeps working while it runs.
#[derive(Debug, Clone, Default)]
pub struct GateStats(Arc<Counters>);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) sessions_established: AtomicU64,
    pub(crate) connects_refused: AtomicU64,
    pub(crate) publishes_forwarded: AtomicU64,
    pub(crate) publishes_denied: AtomicU64,
    pub(crate) subscriptions_denied: AtomicU64,
    pub(crate) tap_failures: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
}

/// A point-in-time copy of [`GateStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// TCP connections accepted (before TLS and CONNECT).
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_rejected: u64,
    /// Connections currently open.
    pub connections_active: u64,
    /// CONNECTs accepted by the policy and the upstream broker.
    pub sessions_established: u64,
    /// CONNECTs refused by the policy, the client id or the will ACL.
    pub connects_refused: u64,
    /// PUBLISH packets tapped, then forwarded upstream (or answered by the gate:
    /// `GateConfig::answer_durable_publishes`).
    pub publishes_forwarded: u64,
    /// PUBLISH packets dropped by the ACL.
    pub publishes_denied: u64,
    /// SUBSCRIBE filters answered with 0x80 by the ACL.
    pub subscriptions_denied: u64,
    /// Publishes the tap failed to make durable.
    pub tap_failures: u64,
    /// Connections closed for malformed, oversized or out-of-place packets,
    /// or for not sending CONNECT in time.
    pub protocol_errors: u64,
}

impl GateStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &*self.0;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: read(&c.connections_accepted),
            connections_rejected: read(&c.connections_rejected),
            connections_active: read(&c.connections_active),
            sessions_established: read(&c.sessions_established),
            connects_refused: read(&c.connects_refused),
            publishes_forwarded: read(&c.publishes_forwarded),
            publishes_denied: read(&c.publishes_denied),
            subscriptions_denied: read(&c.subscriptions_denied),
            tap_failures: read(&c.tap_failures),
            protocol_errors: read(&c.protocol_errors),
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.0
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts a connection as active for as long as it lives.
pub(crate) struct ActiveGuard(GateStats);

impl ActiveGuard {
    pub(crate) fn new(stats: GateStats) -> Self {
        bump(&stats.counters().connections_active);
        Self(stats)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .counters()
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}
