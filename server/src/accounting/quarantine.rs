//! The counters the profile worker set aside (`energy_quarantine`): listing them and releasing
//! one for another try.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QuarantinedCounter {
    pub counter_id: i64,
    /// Register name, e.g. counter1nr
    pub counter: String,
    pub device_id: i64,
    pub device_serial: String,
    pub gateway_serial: String,
    pub site_id: Option<i64>,
    pub reason: String,
    pub since: DateTime<Utc>,
    pub attempts: i32,
    /// Still set aside (false: released by an admin, waiting for or past its retry).
    pub active: bool,
    pub released_at: Option<DateTime<Utc>>,
    /// Queued spans of the counter waiting for the worker.
    pub queued: i64,
}

/// Every counter ever quarantined (the newest 1000), active ones first.
pub async fn list(pool: &PgPool) -> Result<Vec<QuarantinedCounter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT q.counter_id, c.name AS counter, d.id AS device_id, d.serial AS device_serial,
                g.serial AS gateway_serial, g.site_id, q.reason, q.since, q.attempts, q.active,
                q.released_at,
                (SELECT count(*) FROM energy_dirty e WHERE e.counter_id = q.counter_id) AS queued
         FROM energy_quarantine q
         JOIN counters c ON c.id = q.counter_id
         JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         ORDER BY q.active DESC, q.since DESC, q.counter_id
         LIMIT 1000",
    )
    .fetch_all(pool)
    .await
}

/// Releases an active quarantine; whether there was one.
pub async fn release(pool: &PgPool, counter_id: i64) -> Result<bool, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE energy_quarantine SET active = false, released_at = now()
         WHERE counter_id = $1 AND active",
    )
    .bind(counter_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(released > 0)
}
