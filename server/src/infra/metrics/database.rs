//! Levels kept in PostgreSQL, read at each scrape: the profile worker's backlog, gateways by
//! state, the alarm outbox and the relay command ledger.
//!
//! One round trip, bounded twice: the server cancels the statement after
//! [`STATEMENT_TIMEOUT_MS`], and the scrape stops waiting after [`SCRAPE_TIMEOUT`] (a pool with
//! no free connection). A failed read keeps the previous values and is logged at debug: a
//! scrape never fails because the database is slow, and the database's own health has
//! `/healthz` and `headend_db_errors_total`. The values are the database's, so every instance
//! of a cluster reports the same ones.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use super::{gauge, register, Metrics};
use crate::relays::ledger::Status;

/// Server-side bound of the scrape's query (milliseconds).
const STATEMENT_TIMEOUT_MS: u64 = 1_000;
/// How long a scrape waits for the query, connection included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Values of the `state` label of `headend_gateways`, in [`Levels::gateways`] order.
const GATEWAY_STATES: [&str; 3] = ["online", "offline", "never_seen"];

/// Every status of a relay command (checked against the enum by `every_status_is_listed`).
const STATUSES: [Status; 7] = [
    Status::AwaitingApproval,
    Status::Queued,
    Status::Sent,
    Status::Confirmed,
    Status::Failed,
    Status::Expired,
    Status::Cancelled,
];

/// What one scrape read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Levels {
    pub backlog_counters: u64,
    pub backlog_age_seconds: f64,
    /// Online, offline, never seen ([`GATEWAY_STATES`] order).
    pub gateways: [u64; 3],
    pub outbox_pending: u64,
    pub relay_commands_pending: u64,
}

/// The registered gauges [`Levels`] are copied into.
#[derive(Debug)]
pub(super) struct Database {
    backlog_counters: Gauge<u64, AtomicU64>,
    backlog_age_seconds: Gauge<f64, AtomicU64>,
    gateways: [Gauge<u64, AtomicU64>; 3],
    outbox_pending: Gauge<u64, AtomicU64>,
    relay_commands_pending: Gauge<u64, AtomicU64>,
}

impl Database {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let backlog_counters = gauge(
            registry,
            "headend_profile_backlog_counters",
            "Counters queued for the profile worker (energy_dirty), quarantined ones excepted.",
        );
        let backlog_age_seconds = Gauge::<f64, AtomicU64>::default();
        register(
            registry,
            "headend_profile_backlog_age_seconds",
            "Age of the oldest span queued for the profile worker, from its newest reading; 0 when the queue is empty.",
            backlog_age_seconds.clone(),
        );
        let family = Family::<[(&'static str, &'static str); 1], Gauge<u64, AtomicU64>>::default();
        register(
            registry,
            "headend_gateways",
            "Registered gateways (and Modbus converters) by state: online, offline, never_seen.",
            family.clone(),
        );
        let gateways = GATEWAY_STATES.map(|state| family.get_or_create_owned(&[("state", state)]));
        Self {
            backlog_counters,
            backlog_age_seconds,
            gateways,
            outbox_pending: gauge(
                registry,
                "headend_alarm_outbox_pending",
                "Alarm notifications not yet delivered (outbox rows pending, retries included).",
            ),
            relay_commands_pending: gauge(
                registry,
                "headend_relay_commands_pending",
                "Relay commands not yet in a final state (awaiting approval, queued or sent).",
            ),
        }
    }

    fn set(&self, levels: &Levels) {
        self.backlog_counters.set(levels.backlog_counters);
        self.backlog_age_seconds.set(levels.backlog_age_seconds);
        for (gauge, n) in self.gateways.iter().zip(levels.gateways) {
            gauge.set(n);
        }
        self.outbox_pending.set(levels.outbox_pending);
        self.relay_commands_pending
            .set(levels.relay_commands_pending);
    }
}

impl Metrics {
    /// Reads the database's levels into their gauges; on failure they keep their last values.
    pub async fn refresh_database(&self, pool: &PgPool) {
        match tokio::time::timeout(SCRAPE_TIMEOUT, read(pool)).await {
            Ok(Ok(levels)) => self.database.set(&levels),
            Ok(Err(e)) => tracing::debug!(error = %e, "metrics: database levels not read"),
            Err(_) => tracing::debug!("metrics: database levels not read in time"),
        }
    }
}

/// The scrape's query: `SET LOCAL` and the `SELECT` in one simple-protocol message, which
/// PostgreSQL runs as one implicit transaction, so the timeout ends with it.
fn query() -> String {
    let open: Vec<String> = STATUSES
        .iter()
        .filter(|s| !s.is_finished())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS};
         WITH queued AS (
             SELECT e.counter_id, e.to_ts FROM energy_dirty e
             WHERE NOT EXISTS (SELECT 1 FROM energy_quarantine q
                               WHERE q.counter_id = e.counter_id AND q.active)
         ), fleet AS (
             SELECT {online} AS online,
                    g.last_seen_at IS NULL AND g.online_changed_at IS NULL AS never
             FROM gateways g
         )
         SELECT (SELECT count(DISTINCT counter_id) FROM queued),
                (SELECT GREATEST(COALESCE(EXTRACT(EPOCH FROM now() - min(to_ts)), 0), 0)::float8
                 FROM queued),
                (SELECT count(*) FROM fleet WHERE online),
                (SELECT count(*) FROM fleet WHERE NOT online AND NOT never),
                (SELECT count(*) FROM fleet WHERE NOT online AND never),
                (SELECT count(*) FROM alarm_outbox WHERE status = 'pending'),
                (SELECT count(*) FROM relay_commands WHERE status IN ({open}))",
        online = crate::fleet::gateways::ONLINE_SQL,
        open = open.join(", "),
    )
}

async fn read(pool: &PgPool) -> Result<Levels, sqlx::Error> {
    use sqlx::Row as _;
    let row = sqlx::raw_sql(&query()).fetch_one(pool).await?;
    let count = |i: usize| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0))
    };
    Ok(Levels {
        backlog_counters: count(0)?,
        backlog_age_seconds: row.try_get(1)?,
        gateways: [count(2)?, count(3)?, count(4)?],
        outbox_pending: count(5)?,
        relay_commands_pending: count(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_listed() {
        // A new status makes this match fail to compile: add it to STATUSES.
        for status in STATUSES {
            match status {
                Status::AwaitingApproval
                | Status::Queued
                | Status::Sent
                | Status::Confirmed
                | Status::Failed
                | Status::Expired
                | Status::Cancelled => {}
            }
        }
        let q = query();
        assert!(
            q.contains("status IN ('awaiting_approval', 'queued', 'sent')"),
            "{q}"
        );
    }

    #[test]
    fn levels_show_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.database.set(&Levels {
            backlog_counters: 3,
            backlog_age_seconds: 12.5,
            gateways: [4, 1, 2],
            outbox_pending: 5,
            relay_commands_pending: 6,
        });
        let text = metrics.render(&super::super::Gauges::default());
        for line in [
            "headend_profile_backlog_counters 3\n",
            "headend_profile_backlog_age_seconds 12.5\n",
            "headend_gateways{state=\"online\"} 4\n",
            "headend_gateways{state=\"offline\"} 1\n",
            "headend_gateways{state=\"never_seen\"} 2\n",
            "headend_alarm_outbox_pending 5\n",
            "headend_relay_commands_pending 6\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }
}
