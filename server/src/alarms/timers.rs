//! Rules on last-seen times, evaluated on a timer (not by ingest): a gateway offline, a meter
//! without data or (behind a converter) not answering, clock skew, rejected messages. Each tick
//! reads the values from what ingest keeps (gateways' online and skew, the newest measurement
//! and counter reading, `ingest_rejects`, the converters' per-unit state) and hands them to the
//! evaluator as observations; then it escalates what is due. Quarter-hour rules are not here:
//! the profile worker hands its committed intervals to the evaluator as they are computed.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::infra::cluster::{run_while_held, Leases};

use super::engine::{AlarmFeed, Observation, MEMBERS_JOIN};
use super::lifecycle::{self, Subject};
use super::AlarmsHandle;

pub struct Timers {
    pub pool: PgPool,
    pub feed: AlarmFeed,
    pub period: Duration,
    pub handle: AlarmsHandle,
    /// Timers tick on one instance at a time (lease [`LEASE`]): two instances would observe
    /// and escalate the same alarms twice.
    pub leases: Leases,
}

/// The lease that makes an instance the one running the timer rules and escalation.
pub const LEASE: &str = "alarms:timers";

/// The gateways a rule `r` covers: every gateway of its site for a site rule, else the
/// gateways of the meters it covers.
const GATEWAYS_OF_RULE: &str = "
    JOIN gateways g ON g.site_id = r.site_id
    WHERE r.enabled AND r.watch->>'kind' = $1 AND (r.target = 'site' OR EXISTS (
        SELECT 1 FROM devices d LEFT JOIN circuits c ON c.id = d.circuit_id
        WHERE d.gateway_id = g.id AND d.kind = 'meter' AND (
            (r.target = 'meter' AND d.id = r.device_id)
            OR (r.target = 'circuit' AND d.circuit_id = r.circuit_id)
            OR (r.target = 'panel' AND (d.panel_id = r.panel_id OR c.panel_id = r.panel_id)))))";

impl Timers {
    /// Ticks until `shutdown`, only while this instance holds [`LEASE`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let this = &self;
        run_while_held(&self.leases, LEASE, &shutdown, |lost| async move {
            this.tick_until(lost).await;
            Ok(())
        })
        .await
    }

    /// Ticks until `lost` (the lease lost, or shutdown).
    async fn tick_until(&self, lost: CancellationToken) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = lost.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.observe().await {
                Ok(obs) => self.feed.observations(obs).await,
                Err(e) => tracing::warn!(error = %e, "alarm timer rules not evaluated this tick"),
            }
            match lifecycle::escalate_due(&self.pool).await {
                Ok(0) => {}
                Ok(_) => self.handle.outbox_wake.notify_one(),
                Err(e) => tracing::warn!(error = %e, "alarm escalation not checked this tick"),
            }
        }
    }

    pub async fn observe(&self) -> Result<Vec<Observation>, sqlx::Error> {
        let now = Utc::now();
        let mut out = Vec::new();
        let gateway_rows = |rows: Vec<(i64, i64, Option<f64>)>, out: &mut Vec<Observation>| {
            for (rule, gateway, value) in rows {
                if let Some(value) = value {
                    out.push(Observation {
                        rule_id: rule,
                        subject: Subject::gateway(gateway),
                        at: now,
                        value,
                    });
                }
            }
        };
        let offline: Vec<(i64, i64, Option<f64>)> = sqlx::query_as(&format!(
            "SELECT r.id, g.id, CASE WHEN {online} THEN 0
                 ELSE EXTRACT(EPOCH FROM (now() - COALESCE(g.online_changed_at,
                     g.last_seen_at + interval '15 minutes', g.created_at)))
                 END::float8
             FROM alarm_rules r {GATEWAYS_OF_RULE}",
            online = crate::fleet::gateways::ONLINE_SQL
        ))
        .bind("gateway_offline")
        .fetch_all(&self.pool)
        .await?;
        gateway_rows(offline, &mut out);
        let skew: Vec<(i64, i64, Option<f64>)> = sqlx::query_as(&format!(
            "SELECT r.id, g.id, abs(g.clock_skew_s) FROM alarm_rules r {GATEWAYS_OF_RULE}"
        ))
        .bind("clock_skew")
        .fetch_all(&self.pool)
        .await?;
        gateway_rows(skew, &mut out);
        let rejects: Vec<(i64, i64, Option<f64>)> = sqlx::query_as(&format!(
            "SELECT r.id, g.id, (SELECT count(*) FROM ingest_rejects x WHERE x.gateway_id = g.id
                 AND x.received_at > now() - make_interval(secs => (r.watch->>'window_s')::float8)
             )::float8
             FROM alarm_rules r {GATEWAYS_OF_RULE}"
        ))
        .bind("rejects")
        .fetch_all(&self.pool)
        .await?;
        gateway_rows(rejects, &mut out);
        let no_data: Vec<(i64, i64, i64, Option<f64>)> = sqlx::query_as(&format!(
            "SELECT r.id, m.device_id, m.gateway_id,
                 EXTRACT(EPOCH FROM (now() - COALESCE(
                     -- Measurements or counter readings: a meter that sends only its
                     -- counters (an energy-only push) is not silent.
                     GREATEST(
                         (SELECT max(ts) FROM measurements x WHERE x.device_id = m.device_id),
                         (SELECT max(r.ts) FROM counters k
                          JOIN counter_readings r ON r.counter_id = k.id
                          WHERE k.device_id = m.device_id)),
                     (SELECT first_seen_at FROM devices WHERE id = m.device_id))))::float8
             FROM alarm_rules r {MEMBERS_JOIN}
             WHERE r.enabled AND r.watch->>'kind' = 'no_data'"
        ))
        .fetch_all(&self.pool)
        .await?;
        // Meters behind converters: their bus keeps the communication state per unit.
        let not_answering: Vec<(i64, i64, i64, Option<f64>)> = sqlx::query_as(&format!(
            "SELECT r.id, m.device_id, m.gateway_id,
                 CASE WHEN p.consecutive_failures = 0 THEN 0
                      ELSE EXTRACT(EPOCH FROM (now() - COALESCE(p.last_ok_at, p.created_at)))
                 END::float8
             FROM alarm_rules r {MEMBERS_JOIN}
             JOIN devices d ON d.id = m.device_id AND d.port = 'modbus'
             JOIN polled_devices p ON p.gateway_id = d.gateway_id AND p.unit_id = d.slot
                  AND p.enabled
             WHERE r.enabled AND r.watch->>'kind' = 'not_answering'"
        ))
        .fetch_all(&self.pool)
        .await?;
        for (rule, device, gateway, value) in no_data.into_iter().chain(not_answering) {
            if let Some(value) = value {
                out.push(Observation {
                    rule_id: rule,
                    subject: Subject::meter(device, gateway),
                    at: now,
                    value,
                });
            }
        }
        Ok(out)
    }
}
