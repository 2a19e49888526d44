//! Converters and their polled devices in the database: configuration (API, pages, config
//! file), communication state, and the counter reset log. Every read takes the principal's
//! scope: a converter is a gateway row, so it belongs to a site like any gateway.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use super::config::ModbusConfig;
use super::{Maps, ModbusError};
use crate::auth::Scope;
use crate::fleet::gateways;

/// An unusable password hash: not a PHC string, so no password ever verifies against it.
const NO_PASSWORD: &str = "!modbus-converter";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConverter {
    /// Its name, which is also its gateway serial.
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub site_id: Option<i64>,
    pub gap_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub retries: Option<u8>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub devices: Vec<NewPolledDevice>,
}

/// Changes to a converter; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConverterPatch {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub gap_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub retries: Option<u8>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPolledDevice {
    pub unit: i64,
    pub model: String,
    /// `meter` (default) or `relay`.
    pub kind: Option<String>,
    pub poll_interval_ms: Option<u32>,
    pub serial: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolledDevicePatch {
    pub model: Option<String>,
    pub poll_interval_ms: Option<u32>,
    pub serial: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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

/// A host name or an IP address, without scheme, port or path.
fn validate_host(host: &str) -> Result<(), ModbusError> {
    let ok = (1..=253).contains(&host.len())
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }));
    if ok {
        Ok(())
    } else {
        Err(ModbusError::Invalid(format!(
            "host {:?} must be a host name or an IP address (no scheme, port or path)",
            host.chars().take(64).collect::<String>()
        )))
    }
}

fn validate_port(port: u16) -> Result<(), ModbusError> {
    if port == 0 {
        return Err(ModbusError::Invalid(
            "port must be between 1 and 65535".into(),
        ));
    }
    Ok(())
}

fn validate_timing(
    gap_ms: Option<u32>,
    timeout_ms: Option<u32>,
    retries: Option<u8>,
) -> Result<(), ModbusError> {
    if gap_ms.is_some_and(|g| g > 10_000) {
        return Err(ModbusError::Invalid("gap_ms must be at most 10000".into()));
    }
    if timeout_ms.is_some_and(|t| !(10..=60_000).contains(&t)) {
        return Err(ModbusError::Invalid(
            "timeout_ms must be between 10 and 60000".into(),
        ));
    }
    if retries.is_some_and(|r| r > 5) {
        return Err(ModbusError::Invalid("retries must be at most 5".into()));
    }
    Ok(())
}

/// A device's settings, checked: unit, kind, known model, interval, serial.
struct CheckedDevice {
    unit: i16,
    kind: &'static str,
    model: String,
    interval_ms: i32,
    serial: String,
    enabled: bool,
}

fn check_device(
    d: &NewPolledDevice,
    maps: &Maps,
    default_interval_ms: u64,
) -> Result<CheckedDevice, ModbusError> {
    let unit = i16::try_from(d.unit)
        .ok()
        .filter(|u| (1..=247).contains(u))
        .ok_or_else(|| {
            ModbusError::Invalid(format!("unit {} must be between 1 and 247", d.unit))
        })?;
    let kind = match d.kind.as_deref().unwrap_or("meter") {
        "meter" => "meter",
        "relay" => "relay",
        other => {
            return Err(ModbusError::Invalid(format!(
                "kind {:?} must be meter or relay",
                other.chars().take(32).collect::<String>()
            )))
        }
    };
    let map = maps.get(&d.model).ok_or_else(|| {
        ModbusError::Invalid(format!(
            "unknown model {:?}; known models: {}",
            d.model.chars().take(100).collect::<String>(),
            maps.names().join(", ")
        ))
    })?;
    if kind == "relay" && !map.has_relay() {
        return Err(ModbusError::Invalid(format!(
            "model {:?} has no relay register: a relay needs a map with one",
            d.model
        )));
    }
    let interval = d.poll_interval_ms.map_or(default_interval_ms, u64::from);
    if !(100..=86_400_000).contains(&interval) {
        return Err(ModbusError::Invalid(
            "poll_interval_ms must be between 100 and 86400000".into(),
        ));
    }
    let serial = d.serial.clone().unwrap_or_default();
    check_serial(&serial)?;
    Ok(CheckedDevice {
        unit,
        kind,
        model: d.model.clone(),
        interval_ms: i32::try_from(interval).unwrap_or(i32::MAX),
        serial,
        enabled: d.enabled.unwrap_or(true),
    })
}

/// A polled device's serial: empty (none known), or the meter serial character set every
/// ingest path enforces (`sg_wire::message::validate_serial`): it ends up in URLs and forms.
fn check_serial(serial: &str) -> Result<(), ModbusError> {
    if serial.is_empty() {
        return Ok(());
    }
    sg_wire::message::validate_serial(serial)
        .map(|_| ())
        .map_err(|_| ModbusError::Invalid(sg_wire::message::SERIAL_RULE.into()))
}

pub async fn create(
    pool: &PgPool,
    maps: &Maps,
    settings: &ModbusConfig,
    new: NewConverter,
    default_zone: &str,
    source: &str,
) -> Result<i64, ModbusError> {
    gateways::validate_serial(&new.name).map_err(|e| ModbusError::Invalid(e.to_string()))?;
    validate_host(&new.host)?;
    let port = new.port.unwrap_or(502);
    validate_port(port)?;
    validate_timing(new.gap_ms, new.timeout_ms, new.retries)?;
    let devices = new
        .devices
        .iter()
        .map(|d| check_device(d, maps, settings.default_poll_interval_ms))
        .collect::<Result<Vec<_>, _>>()?;
    let mut units = std::collections::HashSet::new();
    if let Some(d) = devices.iter().find(|d| !units.insert(d.unit)) {
        return Err(ModbusError::Invalid(format!(
            "unit {} is listed twice",
            d.unit
        )));
    }
    let mut tx = pool.begin().await?;
    let zone: String = match new.site_id {
        Some(site) => sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1")
            .bind(site)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ModbusError::Invalid(format!("site {site} does not exist")))?,
        None => default_zone.to_owned(),
    };
    let layout = sg_wire::topic::TopicLayout::default_for(&new.name)
        .map_err(|e| ModbusError::Invalid(format!("name: {e}")))?;
    // A converter deleted earlier left its gateway row (and data): it is taken back.
    let existing: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT g.id, g.kind, EXISTS (SELECT 1 FROM converters c WHERE c.gateway_id = g.id)
         FROM gateways g WHERE g.serial = $1 FOR UPDATE",
    )
    .bind(&new.name)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match existing {
        Some((id, kind, false)) if kind == "converter" => {
            sqlx::query("UPDATE gateways SET site_id = $2, time_zone = $3 WHERE id = $1")
                .bind(id)
                .bind(new.site_id)
                .bind(&zone)
                .execute(&mut *tx)
                .await?;
            id
        }
        Some(_) => {
            return Err(ModbusError::Conflict(format!(
                "a gateway or converter named {:?} already exists",
                new.name
            )))
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO gateways (serial, site_id, time_zone, password_hash, topic_root,
                                       topic_pub, topic_sub, kind, model)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'converter', 'Modbus TCP converter')
                 RETURNING id",
            )
            .bind(&new.name)
            .bind(new.site_id)
            .bind(&zone)
            .bind(NO_PASSWORD)
            .bind(layout.root())
            .bind(layout.publish())
            .bind(layout.subscribe())
            .fetch_one(&mut *tx)
            .await?
        }
    };
    sqlx::query(
        "INSERT INTO converters (gateway_id, host, port, gap_ms, timeout_ms, retries, enabled, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&new.host)
    .bind(i32::from(port))
    .bind(new.gap_ms.map(|v| v as i32))
    .bind(new.timeout_ms.map(|v| v as i32))
    .bind(new.retries.map(i16::from))
    .bind(new.enabled.unwrap_or(true))
    .bind(source)
    .execute(&mut *tx)
    .await?;
    for d in &devices {
        insert_device(&mut tx, id, d).await?;
    }
    tx.commit().await?;
    Ok(id)
}

async fn insert_device(
    tx: &mut Transaction<'_, Postgres>,
    gateway_id: i64,
    d: &CheckedDevice,
) -> Result<(), ModbusError> {
    let inserted = sqlx::query(
        "INSERT INTO polled_devices (gateway_id, unit_id, kind, model, serial, poll_interval_ms, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(gateway_id)
    .bind(d.unit)
    .bind(d.kind)
    .bind(&d.model)
    .bind(&d.serial)
    .bind(d.interval_ms)
    .bind(d.enabled)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ModbusError::Conflict(format!(
            "unit {} is already configured on this converter",
            d.unit
        )));
    }
    // The device row exists from now on (a relay can be commanded before its first poll).
    sqlx::query(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial, model, modbus_addr)
         VALUES ($1, $2, 'modbus', $3, $4, $5, $3)
         ON CONFLICT (gateway_id, kind, port, slot) DO UPDATE SET
             serial = EXCLUDED.serial, model = EXCLUDED.model, updated_at = now()",
    )
    .bind(gateway_id)
    .bind(d.kind)
    .bind(d.unit)
    .bind(&d.serial)
    .bind(&d.model)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn update(pool: &PgPool, id: i64, patch: &ConverterPatch) -> Result<(), ModbusError> {
    if let Some(host) = &patch.host {
        validate_host(host)?;
    }
    if let Some(port) = patch.port {
        validate_port(port)?;
    }
    validate_timing(patch.gap_ms, patch.timeout_ms, patch.retries)?;
    sqlx::query(
        "UPDATE converters SET host = COALESCE($2, host), port = COALESCE($3, port),
                gap_ms = COALESCE($4, gap_ms), timeout_ms = COALESCE($5, timeout_ms),
                retries = COALESCE($6, retries), enabled = COALESCE($7, enabled),
                updated_at = now()
         WHERE gateway_id = $1",
    )
    .bind(id)
    .bind(&patch.host)
    .bind(patch.port.map(i32::from))
    .bind(patch.gap_ms.map(|v| v as i32))
    .bind(patch.timeout_ms.map(|v| v as i32))
    .bind(patch.retries.map(i16::from))
    .bind(patch.enabled)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stops polling a converter. Its gateway row, devices and stored data stay (creating a
/// converter of the same name takes them back).
pub async fn delete(pool: &PgPool, id: i64) -> Result<(), ModbusError> {
    sqlx::query("DELETE FROM converters WHERE gateway_id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn add_device(
    pool: &PgPool,
    maps: &Maps,
    settings: &ModbusConfig,
    id: i64,
    new: &NewPolledDevice,
) -> Result<(), ModbusError> {
    let d = check_device(new, maps, settings.default_poll_interval_ms)?;
    let mut tx = pool.begin().await?;
    insert_device(&mut tx, id, &d).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn update_device(
    pool: &PgPool,
    maps: &Maps,
    id: i64,
    unit: i16,
    patch: &PolledDevicePatch,
) -> Result<(), ModbusError> {
    if let Some(model) = &patch.model {
        if maps.get(model).is_none() {
            return Err(ModbusError::Invalid(format!(
                "unknown model {:?}; known models: {}",
                model.chars().take(100).collect::<String>(),
                maps.names().join(", ")
            )));
        }
    }
    if patch
        .poll_interval_ms
        .is_some_and(|i| !(100..=86_400_000).contains(&i))
    {
        return Err(ModbusError::Invalid(
            "poll_interval_ms must be between 100 and 86400000".into(),
        ));
    }
    if let Some(serial) = &patch.serial {
        check_serial(serial)?;
    }
    let updated = sqlx::query(
        "UPDATE polled_devices SET model = COALESCE($3, model),
                poll_interval_ms = COALESCE($4, poll_interval_ms),
                serial = COALESCE($5, serial), enabled = COALESCE($6, enabled), updated_at = now()
         WHERE gateway_id = $1 AND unit_id = $2",
    )
    .bind(id)
    .bind(unit)
    .bind(&patch.model)
    .bind(patch.poll_interval_ms.map(|v| v as i32))
    .bind(&patch.serial)
    .bind(patch.enabled)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ModbusError::NotFound("polled device"));
    }
    Ok(())
}

/// Stops polling a unit; its device row and data stay.
pub async fn delete_device(pool: &PgPool, id: i64, unit: i16) -> Result<(), ModbusError> {
    let deleted = sqlx::query("DELETE FROM polled_devices WHERE gateway_id = $1 AND unit_id = $2")
        .bind(id)
        .bind(unit)
        .execute(pool)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ModbusError::NotFound("polled device"));
    }
    Ok(())
}

/// Applies `[[modbus.converters]]`: creates what is missing, updates what is there (the file
/// wins for the fields it sets), adds missing devices and updates configured ones.
pub async fn apply_config(
    pool: &PgPool,
    maps: &Maps,
    settings: &ModbusConfig,
    default_zone: &str,
) -> Result<(), ModbusError> {
    for c in &settings.converters {
        let site_id = match &c.site {
            Some(name) => Some(crate::sites::id_by_name(pool, name).await?.ok_or_else(|| {
                ModbusError::Invalid(format!(
                    "modbus.converters {:?}: site {name:?} does not exist",
                    c.name
                ))
            })?),
            None => None,
        };
        let devices: Vec<NewPolledDevice> = c
            .devices
            .iter()
            .map(|d| NewPolledDevice {
                unit: i64::from(d.unit),
                model: d.model.clone(),
                kind: Some(d.kind.clone()),
                poll_interval_ms: d.poll_interval_ms,
                serial: Some(d.serial.clone()),
                enabled: Some(true),
            })
            .collect();
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT g.id FROM gateways g JOIN converters c ON c.gateway_id = g.id WHERE g.serial = $1",
        )
        .bind(&c.name)
        .fetch_optional(pool)
        .await?;
        let Some(id) = existing else {
            create(
                pool,
                maps,
                settings,
                NewConverter {
                    name: c.name.clone(),
                    host: c.host.clone(),
                    port: Some(c.port),
                    site_id,
                    gap_ms: c.gap_ms,
                    timeout_ms: c.timeout_ms,
                    retries: c.retries,
                    enabled: Some(true),
                    devices,
                },
                default_zone,
                "config",
            )
            .await?;
            continue;
        };
        validate_host(&c.host)?;
        validate_timing(c.gap_ms, c.timeout_ms, c.retries)?;
        sqlx::query(
            "UPDATE converters SET host = $2, port = $3, gap_ms = $4, timeout_ms = $5,
                    retries = $6, source = 'config', updated_at = now()
             WHERE gateway_id = $1",
        )
        .bind(id)
        .bind(&c.host)
        .bind(i32::from(c.port))
        .bind(c.gap_ms.map(|v| v as i32))
        .bind(c.timeout_ms.map(|v| v as i32))
        .bind(c.retries.map(i16::from))
        .execute(pool)
        .await?;
        if site_id.is_some() {
            sqlx::query("UPDATE gateways SET site_id = $2 WHERE id = $1")
                .bind(id)
                .bind(site_id)
                .execute(pool)
                .await?;
        }
        for d in &devices {
            let checked = check_device(d, maps, settings.default_poll_interval_ms)?;
            sqlx::query(
                "INSERT INTO polled_devices (gateway_id, unit_id, kind, model, serial, poll_interval_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (gateway_id, unit_id) DO UPDATE SET kind = EXCLUDED.kind,
                     model = EXCLUDED.model, serial = EXCLUDED.serial,
                     poll_interval_ms = EXCLUDED.poll_interval_ms, updated_at = now()",
            )
            .bind(id)
            .bind(checked.unit)
            .bind(checked.kind)
            .bind(&checked.model)
            .bind(&checked.serial)
            .bind(checked.interval_ms)
            .execute(pool)
            .await?;
            sqlx::query(
                "INSERT INTO devices (gateway_id, kind, port, slot, serial, model, modbus_addr)
                 VALUES ($1, $2, 'modbus', $3, $4, $5, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(checked.kind)
            .bind(checked.unit)
            .bind(&checked.serial)
            .bind(&checked.model)
            .execute(pool)
            .await?;
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in ["10.0.0.5", "::1", "converter-1.plant.example", "cv1"] {
            validate_host(ok).unwrap();
        }
        for bad in ["", "http://x", "a b", "host:502", "-x", "x/y", "<script>"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }
}
