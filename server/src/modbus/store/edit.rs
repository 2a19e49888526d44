//! Writing converters and their polled devices: created, changed and removed through the
//! API and pages, or applied from `[[modbus.converters]]`. A converter is a gateway row of
//! kind `converter`; each polled device has its `devices` row from the start.

use sqlx::{PgPool, Postgres, Transaction};

use super::input::{
    check_device, check_interval, check_serial, known_model, validate_host, validate_port,
    validate_timing, CheckedDevice, ConverterPatch, NewConverter, NewPolledDevice,
    PolledDevicePatch,
};
use crate::fleet::gateways;
use crate::modbus::config::ModbusConfig;
use crate::modbus::{Maps, ModbusError};
use crate::zone::TimeZone;

/// An unusable password hash: not a PHC string, so no password ever verifies against it.
const NO_PASSWORD: &str = "!modbus-converter";

pub async fn create(
    pool: &PgPool,
    maps: &Maps,
    settings: &ModbusConfig,
    new: NewConverter,
    default_zone: TimeZone,
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
    let zone: TimeZone = match new.site_id {
        Some(site) => sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1")
            .bind(site)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ModbusError::Invalid(format!("site {site} does not exist")))?,
        None => default_zone,
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
                .bind(zone)
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
            .bind(zone)
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
        known_model(maps, model)?;
    }
    if let Some(interval) = patch.poll_interval_ms {
        check_interval(u64::from(interval))?;
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
    default_zone: TimeZone,
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
