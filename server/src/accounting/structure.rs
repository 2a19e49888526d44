//! Site structure: panels, circuits, and where gateways and meters are placed.
//!
//! Every change that alters which meters add up to what, or in which calendar, queues a
//! rebuild of the affected rollups in the same transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::worker::{queue_commissioning, queue_rollups};

pub const USAGES: [&str; 8] = [
    "heating",
    "cooling",
    "hot_water",
    "lighting",
    "sockets",
    "ventilation",
    "process",
    "other",
];

#[derive(Debug, thiserror::Error)]
pub enum StructureError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn check_name(what: &str, name: &str) -> Result<String, StructureError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(StructureError::Invalid(format!(
            "a {what} name is 1 to 200 characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_description(d: &str) -> Result<String, StructureError> {
    if d.chars().count() > 2000 || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(StructureError::Invalid(
            "a description is at most 2000 characters without control characters".into(),
        ));
    }
    Ok(d.to_owned())
}

pub fn check_usage(usage: &str) -> Result<(), StructureError> {
    if USAGES.contains(&usage) {
        Ok(())
    } else {
        Err(StructureError::Invalid(format!(
            "usage {usage:?} is not one of {}",
            USAGES.join(", ")
        )))
    }
}

fn unique_violation(e: sqlx::Error, message: String) -> StructureError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StructureError::Conflict(message),
        _ => StructureError::Db(e),
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct PanelView {
    pub id: i64,
    pub site_id: i64,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelInput {
    pub name: Option<String>,
    pub description: Option<String>,
}

pub async fn list_panels(pool: &PgPool, site: i64) -> Result<Vec<PanelView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, site_id, name, description, created_at FROM panels WHERE site_id = $1 ORDER BY name",
    )
    .bind(site)
    .fetch_all(pool)
    .await
}

pub async fn get_panel(pool: &PgPool, id: i64) -> Result<Option<PanelView>, sqlx::Error> {
    sqlx::query_as("SELECT id, site_id, name, description, created_at FROM panels WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn create_panel(
    pool: &PgPool,
    site: i64,
    input: &PanelInput,
) -> Result<i64, StructureError> {
    let name = check_name("panel", input.name.as_deref().unwrap_or_default())?;
    let description = check_description(input.description.as_deref().unwrap_or_default())?;
    sqlx::query_scalar(
        "INSERT INTO panels (site_id, name, description) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(site)
    .bind(&name)
    .bind(&description)
    .fetch_one(pool)
    .await
    .map_err(|e| unique_violation(e, format!("the site already has a panel named {name:?}")))
}

pub async fn update_panel(
    pool: &PgPool,
    id: i64,
    input: &PanelInput,
) -> Result<(), StructureError> {
    let name = input
        .name
        .as_deref()
        .map(|n| check_name("panel", n))
        .transpose()?;
    let description = input
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    let done = sqlx::query(
        "UPDATE panels SET name = COALESCE($2, name), description = COALESCE($3, description) WHERE id = $1",
    )
    .bind(id)
    .bind(&name)
    .bind(&description)
    .execute(pool)
    .await
    .map_err(|e| unique_violation(e, "the site already has a panel of that name".into()))?;
    if done.rows_affected() == 0 {
        return Err(StructureError::NotFound("panel"));
    }
    Ok(())
}

/// Deleting a panel deletes its circuits; its meters become unplaced, so the site's totals
/// are rebuilt.
pub async fn delete_panel(pool: &PgPool, id: i64) -> Result<(), StructureError> {
    let mut tx = pool.begin().await?;
    let site: Option<i64> =
        sqlx::query_scalar("DELETE FROM panels WHERE id = $1 RETURNING site_id")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let site = site.ok_or(StructureError::NotFound("panel"))?;
    sqlx::query(
        "UPDATE devices SET measures = NULL WHERE measures IN ('panel', 'circuit')
         AND panel_id IS NULL AND circuit_id IS NULL",
    )
    .execute(&mut *tx)
    .await?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CircuitView {
    pub id: i64,
    pub panel_id: i64,
    pub site_id: i64,
    pub name: String,
    pub usage: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitInput {
    pub name: Option<String>,
    pub usage: Option<String>,
    pub description: Option<String>,
}

const CIRCUIT_SQL: &str =
    "SELECT c.id, c.panel_id, p.site_id, c.name, c.usage, c.description, c.created_at
     FROM circuits c JOIN panels p ON p.id = c.panel_id";

pub async fn list_circuits(pool: &PgPool, panel: i64) -> Result<Vec<CircuitView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{CIRCUIT_SQL} WHERE c.panel_id = $1 ORDER BY c.name"
    ))
    .bind(panel)
    .fetch_all(pool)
    .await
}

pub async fn list_site_circuits(pool: &PgPool, site: i64) -> Result<Vec<CircuitView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{CIRCUIT_SQL} WHERE p.site_id = $1 ORDER BY p.name, c.name"
    ))
    .bind(site)
    .fetch_all(pool)
    .await
}

pub async fn get_circuit(pool: &PgPool, id: i64) -> Result<Option<CircuitView>, sqlx::Error> {
    sqlx::query_as(&format!("{CIRCUIT_SQL} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn create_circuit(
    pool: &PgPool,
    panel: i64,
    input: &CircuitInput,
) -> Result<i64, StructureError> {
    let name = check_name("circuit", input.name.as_deref().unwrap_or_default())?;
    let usage = input.usage.clone().unwrap_or_else(|| "other".into());
    check_usage(&usage)?;
    let description = check_description(input.description.as_deref().unwrap_or_default())?;
    sqlx::query_scalar(
        "INSERT INTO circuits (panel_id, name, usage, description) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(panel)
    .bind(&name)
    .bind(&usage)
    .bind(&description)
    .fetch_one(pool)
    .await
    .map_err(|e| unique_violation(e, format!("the panel already has a circuit named {name:?}")))
}

pub async fn update_circuit(
    pool: &PgPool,
    id: i64,
    input: &CircuitInput,
) -> Result<(), StructureError> {
    let name = input
        .name
        .as_deref()
        .map(|n| check_name("circuit", n))
        .transpose()?;
    if let Some(u) = &input.usage {
        check_usage(u)?;
    }
    let description = input
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    let done = sqlx::query(
        "UPDATE circuits SET name = COALESCE($2, name), usage = COALESCE($3, usage),
                description = COALESCE($4, description) WHERE id = $1",
    )
    .bind(id)
    .bind(&name)
    .bind(&input.usage)
    .bind(&description)
    .execute(pool)
    .await
    .map_err(|e| unique_violation(e, "the panel already has a circuit of that name".into()))?;
    if done.rows_affected() == 0 {
        return Err(StructureError::NotFound("circuit"));
    }
    Ok(())
}

pub async fn delete_circuit(pool: &PgPool, id: i64) -> Result<(), StructureError> {
    let mut tx = pool.begin().await?;
    let site: Option<i64> = sqlx::query_scalar(
        "DELETE FROM circuits c USING panels p WHERE c.id = $1 AND p.id = c.panel_id RETURNING p.site_id",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let site = site.ok_or(StructureError::NotFound("circuit"))?;
    sqlx::query("UPDATE devices SET measures = NULL, panel_id = NULL WHERE measures = 'circuit' AND circuit_id IS NULL")
        .execute(&mut *tx)
        .await?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(())
}

/// `PATCH /devices/{serial}`: a field left out stays; `null` clears it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[serde(default, with = "double_option")]
    pub name: Option<Option<String>>,
    /// "site", "panel" or "circuit"; implied by `circuit_id` or `panel_id` when left out.
    #[serde(default, with = "double_option")]
    pub measures: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub panel_id: Option<Option<i64>>,
    #[serde(default, with = "double_option")]
    pub circuit_id: Option<Option<i64>>,
    #[serde(default, with = "double_option")]
    pub usage: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub import_register: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub export_register: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub reactive_register: Option<Option<String>>,
    /// When the meter was commissioned: an RFC 3339 instant, or a date meaning local midnight
    /// in the meter's zone (its site's, else its gateway's); `null`: unknown (no bound).
    /// Counter readings dated before it are kept but never accounted.
    #[serde(default, with = "double_option")]
    pub commissioned_at: Option<Option<String>>,
}

/// Distinguishes a field that is absent from one that is `null`.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Placed {
    site_id: Option<i64>,
    name: Option<String>,
    measures: Option<String>,
    panel_id: Option<i64>,
    circuit_id: Option<i64>,
    usage: Option<String>,
    import_register: Option<String>,
    export_register: Option<String>,
    reactive_register: Option<String>,
    commissioned_at: Option<DateTime<Utc>>,
    time_zone: String,
}

/// The earliest commissioning date accepted: older is a typing error, not a meter.
pub const COMMISSIONED_MIN: &str = "1990-01-01T00:00:00Z";

/// A commissioning date as the API and the admin form give it (see
/// [`DevicePatch::commissioned_at`]): not before [`COMMISSIONED_MIN`], and not more than a
/// day after `now` (a date a little ahead of UTC is today somewhere).
pub fn parse_commissioned_at(
    value: &str,
    zone: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, StructureError> {
    let value = value.trim();
    let at = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
        if !headend_energy::calendar::supported(d) {
            return Err(StructureError::Invalid(format!(
                "commissioned_at {value:?} is not between 1990 and tomorrow"
            )));
        }
        headend_energy::calendar::period_bounds(tz, d, headend_energy::calendar::Period::Day).0
    } else {
        return Err(StructureError::Invalid(format!(
            "commissioned_at {:?} is not an RFC 3339 instant (2026-03-01T00:00:00+01:00) or a \
             date (2026-03-01)",
            crate::ingest::normalize::truncate(value, 64)
        )));
    };
    let min: DateTime<Utc> = COMMISSIONED_MIN.parse().unwrap_or(DateTime::<Utc>::MIN_UTC);
    if at < min || at > now + chrono::Duration::days(1) {
        return Err(StructureError::Invalid(format!(
            "commissioned_at {} is not between 1990 and tomorrow",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    Ok(at)
}

fn check_register(r: &Option<String>) -> Result<(), StructureError> {
    match r {
        Some(r)
            if r.is_empty()
                || r.len() > 32
                || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Err(StructureError::Invalid(format!(
                "register {r:?} is not a counter name such as counter1nr"
            )))
        }
        _ => Ok(()),
    }
}

/// Places a meter. The panel or circuit must belong to the site of the meter's gateway.
pub async fn patch_device(
    pool: &PgPool,
    device: i64,
    patch: DevicePatch,
) -> Result<(), StructureError> {
    let mut tx = pool.begin().await?;
    let current: Placed = sqlx::query_as(
        "SELECT g.site_id, d.name, d.measures, d.panel_id, d.circuit_id, d.usage,
                d.import_register, d.export_register, d.reactive_register, d.commissioned_at,
                COALESCE(s.time_zone, g.time_zone) AS time_zone
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN sites s ON s.id = g.site_id
         WHERE d.id = $1 FOR UPDATE OF d",
    )
    .bind(device)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StructureError::NotFound("device"))?;

    let name = match patch.name {
        Some(Some(n)) => Some(check_name("meter", &n)?),
        Some(None) => None,
        None => current.name.clone(),
    };
    let usage = patch.usage.unwrap_or(current.usage.clone());
    if let Some(u) = &usage {
        check_usage(u)?;
    }
    let mut circuit_id = patch.circuit_id.unwrap_or(current.circuit_id);
    let mut panel_id = patch.panel_id.unwrap_or(current.panel_id);
    let measures = match patch.measures {
        Some(m) => m,
        None if patch.circuit_id.flatten().is_some() => Some("circuit".into()),
        None if patch.panel_id.flatten().is_some() => Some("panel".into()),
        None => current.measures.clone(),
    };
    let site = current.site_id;
    match measures.as_deref() {
        None => {
            circuit_id = None;
            panel_id = None;
        }
        Some("site") => {
            if site.is_none() {
                return Err(StructureError::Invalid(
                    "the meter's gateway is not assigned to a site".into(),
                ));
            }
            circuit_id = None;
            panel_id = None;
        }
        Some("panel") => {
            circuit_id = None;
            let p = panel_id.ok_or_else(|| {
                StructureError::Invalid("measures \"panel\" needs panel_id".into())
            })?;
            let panel_site: Option<i64> =
                sqlx::query_scalar("SELECT site_id FROM panels WHERE id = $1")
                    .bind(p)
                    .fetch_optional(&mut *tx)
                    .await?;
            if panel_site.is_none() || panel_site != site {
                return Err(StructureError::Invalid(format!(
                    "panel {p} does not exist on the site of the meter's gateway"
                )));
            }
        }
        Some("circuit") => {
            let c = circuit_id.ok_or_else(|| {
                StructureError::Invalid("measures \"circuit\" needs circuit_id".into())
            })?;
            let found: Option<(i64, i64)> = sqlx::query_as(
                "SELECT p.site_id, p.id FROM circuits c JOIN panels p ON p.id = c.panel_id WHERE c.id = $1",
            )
            .bind(c)
            .fetch_optional(&mut *tx)
            .await?;
            match found {
                Some((s, p)) if Some(s) == site => panel_id = Some(p),
                _ => {
                    return Err(StructureError::Invalid(format!(
                        "circuit {c} does not exist on the site of the meter's gateway"
                    )))
                }
            }
        }
        Some(other) => {
            return Err(StructureError::Invalid(format!(
                "measures {other:?} is not one of site, panel, circuit (or null)"
            )))
        }
    }
    let import_register = patch
        .import_register
        .unwrap_or(current.import_register.clone());
    let export_register = patch
        .export_register
        .unwrap_or(current.export_register.clone());
    let reactive_register = patch
        .reactive_register
        .unwrap_or(current.reactive_register.clone());
    for r in [&import_register, &export_register, &reactive_register] {
        check_register(r)?;
    }
    let commissioned_at = match &patch.commissioned_at {
        Some(Some(v)) => Some(parse_commissioned_at(v, &current.time_zone, Utc::now())?),
        Some(None) => None,
        None => current.commissioned_at,
    };
    sqlx::query(
        "UPDATE devices SET name = $2, measures = $3, panel_id = $4, circuit_id = $5, usage = $6,
                import_register = $7, export_register = $8, reactive_register = $9,
                commissioned_at = $10, updated_at = now()
         WHERE id = $1",
    )
    .bind(device)
    .bind(&name)
    .bind(&measures)
    .bind(panel_id)
    .bind(circuit_id)
    .bind(&usage)
    .bind(&import_register)
    .bind(&export_register)
    .bind(&reactive_register)
    .bind(commissioned_at)
    .execute(&mut *tx)
    .await?;
    // Intervals depend on which readings count: recomputed from the readings, then the
    // rollups and site totals follow (in the worker, from this queue row).
    if commissioned_at != current.commissioned_at {
        queue_commissioning(&mut tx, device, current.commissioned_at, commissioned_at).await?;
    }
    let accounting_changed = measures != current.measures
        || panel_id != current.panel_id
        || circuit_id != current.circuit_id
        || import_register != current.import_register
        || export_register != current.export_register
        || reactive_register != current.reactive_register;
    if accounting_changed {
        queue_rollups(&mut tx, site, &[device]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `PATCH /gateways/{serial}`: moves a gateway (and its meters) to a site, or off any site.
/// Meters keep no placement from the old site.
pub async fn assign_gateway(
    pool: &PgPool,
    gateway: i64,
    site: Option<i64>,
) -> Result<(), StructureError> {
    let mut tx = pool.begin().await?;
    let old: Option<Option<i64>> =
        sqlx::query_scalar("SELECT site_id FROM gateways WHERE id = $1 FOR UPDATE")
            .bind(gateway)
            .fetch_optional(&mut *tx)
            .await?;
    let old = old.ok_or(StructureError::NotFound("gateway"))?;
    if old == site {
        return Ok(());
    }
    if let Some(s) = site {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sites WHERE id = $1)")
            .bind(s)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(StructureError::Invalid(format!("site {s} does not exist")));
        }
    }
    sqlx::query("UPDATE gateways SET site_id = $2 WHERE id = $1")
        .bind(gateway)
        .bind(site)
        .execute(&mut *tx)
        .await?;
    let devices: Vec<i64> = sqlx::query_scalar(
        "UPDATE devices SET measures = NULL, panel_id = NULL, circuit_id = NULL
         WHERE gateway_id = $1 RETURNING id",
    )
    .bind(gateway)
    .fetch_all(&mut *tx)
    .await?;
    // The old site's totals lose these meters; the new site's calendar and contract apply.
    if let Some(old) = old {
        queue_rollups(&mut tx, Some(old), &[]).await?;
    }
    queue_rollups(&mut tx, site, &devices).await?;
    tx.commit().await?;
    Ok(())
}

/// Site settings: name and time zone. A new zone moves every local day, so the site's
/// rollups are rebuilt.
pub async fn update_site(
    pool: &PgPool,
    site: i64,
    name: Option<&str>,
    time_zone: Option<&str>,
) -> Result<(), StructureError> {
    let name = name.map(|n| check_name("site", n)).transpose()?;
    if let Some(tz) = time_zone {
        headend_energy::calendar::parse_zone(tz)
            .map_err(|e| StructureError::Invalid(e.to_string()))?;
    }
    let mut tx = pool.begin().await?;
    let old: Option<String> =
        sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1 FOR UPDATE")
            .bind(site)
            .fetch_optional(&mut *tx)
            .await?;
    let old = old.ok_or(StructureError::NotFound("site"))?;
    sqlx::query("UPDATE sites SET name = COALESCE($2, name), time_zone = COALESCE($3, time_zone) WHERE id = $1")
        .bind(site)
        .bind(&name)
        .bind(time_zone)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, "a site of that name already exists".into()))?;
    if time_zone.is_some_and(|tz| tz != old) {
        sqlx::query("DELETE FROM site_days WHERE site_id = $1")
            .bind(site)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM energy_days e USING counters c, devices d, gateways g
             WHERE e.counter_id = c.id AND c.device_id = d.id AND d.gateway_id = g.id AND g.site_id = $1",
        )
        .bind(site)
        .execute(&mut *tx)
        .await?;
        queue_rollups(&mut tx, Some(site), &[]).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn delete_site(pool: &PgPool, site: i64) -> Result<(), StructureError> {
    let done = sqlx::query("DELETE FROM sites WHERE id = $1")
        .bind(site)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StructureError::NotFound("site"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commissioning_dates_are_instants_or_local_dates_between_1990_and_tomorrow() {
        let now: DateTime<Utc> = "2026-12-07T09:00:00Z".parse().unwrap();
        let ok = |v: &str, zone: &str| parse_commissioned_at(v, zone, now).unwrap().to_rfc3339();
        assert_eq!(
            ok("2026-03-01T00:00:00+01:00", "UTC"),
            "2026-02-28T23:00:00+00:00"
        );
        assert_eq!(
            ok("2026-07-01", "Europe/Ljubljana"),
            "2026-06-30T22:00:00+00:00"
        );
        assert_eq!(ok(" 1990-01-01 ", "UTC"), "1990-01-01T00:00:00+00:00");
        assert_eq!(
            ok("2026-12-08T08:59:59Z", "UTC"),
            "2026-12-08T08:59:59+00:00"
        );
        for bad in [
            "",
            "soon",
            "1989-12-31",
            "1989-12-31T23:59:59Z",
            "2026-12-08T09:00:01Z",
            "2026-02-30",
            "1900-01-01",
            "9999-01-01",
        ] {
            assert!(
                matches!(
                    parse_commissioned_at(bad, "UTC", now),
                    Err(StructureError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}
