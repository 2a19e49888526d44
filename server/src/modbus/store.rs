//! Converters and their polled devices in the database: configuration (API, pages, config
//! file), communication state, and the counter reset log. Every read takes the principal's
//! scope: a converter is a gateway row, so it belongs to a site like any gateway.
//!
//! - `input`: what is asked (new converters and devices, patches) and its checks.
//! - `edit`: creating, changing and removing converters and devices; the config file's.
//! - here: the read side, what the bus tasks load and write back, the counter reset log.

mod edit;
mod input;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::auth::Scope;
pub use edit::{add_device, apply_config, create, delete, delete_device, update, update_device};
pub use input::{ConverterPatch, NewConverter, NewPolledDevice, PolledDevicePatch};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Converter)]
pub struct ConverterView {
    /// The converter's gateway id.
    pub id: i64,
    pub name: String,
    pub site_id: Option<i64>,
    pub host: String,
    pub port: i32,
    pub gap_ms: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub retries: Option<i16>,
    pub enabled: bool,
    pub source: String,
    /// The TCP link to the converter is up.
    pub online: bool,
    pub online_changed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub devices: Vec<PolledDeviceView>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = PolledDevice)]
pub struct PolledDeviceView {
    pub id: i64,
    pub converter_id: i64,
    /// The `devices` row its values are stored under.
    pub device_id: Option<i64>,
    pub unit: i16,
    pub kind: String,
    pub model: String,
    pub serial: String,
    pub poll_interval_ms: i32,
    pub enabled: bool,
    /// `ok`, `failing` (communication lost: backed off) or `unknown` (not polled yet).
    pub comm: String,
    pub last_ok_at: Option<DateTime<Utc>>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
    pub backoff_until: Option<DateTime<Utc>>,
}

const CONVERTER_SQL: &str = "
SELECT g.id, g.serial AS name, g.site_id, c.host, c.port, c.gap_ms, c.timeout_ms, c.retries,
       c.enabled, c.source, g.online, g.online_changed_at, c.last_error, c.last_error_at
FROM converters c JOIN gateways g ON g.id = c.gateway_id
WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1))";

const DEVICE_SQL: &str = "
SELECT p.id, p.gateway_id AS converter_id, d.id AS device_id, p.unit_id AS unit, p.kind, p.model,
       p.serial, p.poll_interval_ms, p.enabled,
       CASE WHEN p.consecutive_failures > 0 THEN 'failing'
            WHEN p.last_ok_at IS NOT NULL THEN 'ok' ELSE 'unknown' END AS comm,
       p.last_ok_at, p.last_error_at, p.last_error, p.consecutive_failures, p.backoff_until
FROM polled_devices p
LEFT JOIN devices d ON d.gateway_id = p.gateway_id AND d.kind = p.kind AND d.port = 'modbus'
                   AND d.slot = p.unit_id
WHERE p.gateway_id = ANY($1)
ORDER BY p.gateway_id, p.unit_id";

pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<ConverterView>, sqlx::Error> {
    let mut converters: Vec<ConverterView> =
        sqlx::query_as(&format!("{CONVERTER_SQL} ORDER BY g.serial"))
            .bind(scope.site_ids())
            .fetch_all(pool)
            .await?;
    attach_devices(pool, &mut converters).await?;
    Ok(converters)
}

pub async fn get(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
) -> Result<Option<ConverterView>, sqlx::Error> {
    let converter: Option<ConverterView> =
        sqlx::query_as(&format!("{CONVERTER_SQL} AND g.id = $2"))
            .bind(scope.site_ids())
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let Some(converter) = converter else {
        return Ok(None);
    };
    let mut one = [converter];
    attach_devices(pool, &mut one).await?;
    let [converter] = one;
    Ok(Some(converter))
}

async fn attach_devices(
    pool: &PgPool,
    converters: &mut [ConverterView],
) -> Result<(), sqlx::Error> {
    let ids: Vec<i64> = converters.iter().map(|c| c.id).collect();
    let devices: Vec<PolledDeviceView> = sqlx::query_as(DEVICE_SQL)
        .bind(&ids)
        .fetch_all(pool)
        .await?;
    for d in devices {
        if let Some(c) = converters.iter_mut().find(|c| c.id == d.converter_id) {
            c.devices.push(d);
        }
    }
    Ok(())
}

/// What a bus task needs of its converter.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BusConverter {
    pub id: i64,
    pub serial: String,
    pub host: String,
    pub port: i32,
    pub gap_ms: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub retries: Option<i16>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BusDevice {
    pub id: i64,
    pub gateway_id: i64,
    pub unit: i16,
    pub kind: String,
    pub model: String,
    pub serial: String,
    pub poll_interval_ms: i32,
}

/// Enabled converters with their enabled devices.
pub async fn load_buses(pool: &PgPool) -> Result<Vec<(BusConverter, Vec<BusDevice>)>, sqlx::Error> {
    let converters: Vec<BusConverter> = sqlx::query_as(
        "SELECT g.id, g.serial, c.host, c.port, c.gap_ms, c.timeout_ms, c.retries
         FROM converters c JOIN gateways g ON g.id = c.gateway_id
         WHERE c.enabled ORDER BY g.id",
    )
    .fetch_all(pool)
    .await?;
    let devices: Vec<BusDevice> = sqlx::query_as(
        "SELECT p.id, p.gateway_id, p.unit_id AS unit, p.kind, p.model, p.serial, p.poll_interval_ms
         FROM polled_devices p JOIN converters c ON c.gateway_id = p.gateway_id
         WHERE c.enabled AND p.enabled ORDER BY p.gateway_id, p.unit_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(converters
        .into_iter()
        .map(|c| {
            let mine = devices
                .iter()
                .filter(|d| d.gateway_id == c.id)
                .cloned()
                .collect();
            (c, mine)
        })
        .collect())
}

/// A poll of a device went through.
pub async fn comm_ok(pool: &PgPool, device: i64, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE polled_devices SET last_ok_at = $2, consecutive_failures = 0, backoff_until = NULL
         WHERE id = $1",
    )
    .bind(device)
    .bind(at)
    .execute(pool)
    .await
    .map(|_| ())
}

/// A poll of a device failed (or answered with an exception: `failures` then stays 0).
pub async fn comm_failed(
    pool: &PgPool,
    device: i64,
    at: DateTime<Utc>,
    error: &str,
    failures: u32,
    backoff_until: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE polled_devices SET last_error_at = $2, last_error = $3,
                consecutive_failures = $4, backoff_until = $5
         WHERE id = $1",
    )
    .bind(device)
    .bind(at)
    .bind(error.chars().take(1000).collect::<String>())
    .bind(i32::try_from(failures).unwrap_or(i32::MAX))
    .bind(backoff_until)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The converter's TCP link failed.
pub async fn link_failed(
    pool: &PgPool,
    converter: i64,
    at: DateTime<Utc>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE converters SET last_error = $2, last_error_at = $3 WHERE gateway_id = $1")
        .bind(converter)
        .bind(error.chars().take(1000).collect::<String>())
        .bind(at)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The device a counter reset addresses, if the scope sees it and it is polled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResetTarget {
    pub device_id: i64,
    pub gateway_id: i64,
    pub unit: i16,
    pub model: String,
}

pub async fn reset_target(
    pool: &PgPool,
    scope: &Scope,
    device_id: i64,
) -> Result<Option<ResetTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id AS device_id, d.gateway_id, p.unit_id AS unit, p.model
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         JOIN polled_devices p ON p.gateway_id = d.gateway_id AND p.unit_id = d.slot
         WHERE d.id = $2 AND d.port = 'modbus' AND d.kind = 'meter'
           AND ($1::int8[] IS NULL OR g.site_id = ANY($1))",
    )
    .bind(scope.site_ids())
    .bind(device_id)
    .fetch_optional(pool)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = CounterReset)]
pub struct CounterResetView {
    pub id: i64,
    pub device_id: i64,
    pub counter: String,
    pub requested_email: String,
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    pub status: String,
    pub detail: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub async fn log_reset(
    pool: &PgPool,
    device_id: i64,
    counter: &str,
    user_id: i64,
    email: &str,
    reason: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<CounterResetView, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO counter_resets (device_id, counter, requested_by, requested_email, reason,
                                     status, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, device_id, counter, requested_email, reason, requested_at, status, detail",
    )
    .bind(device_id)
    .bind(counter)
    .bind(user_id)
    .bind(email)
    .bind(reason)
    .bind(status)
    .bind(detail)
    .fetch_one(pool)
    .await
}
