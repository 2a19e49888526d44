//! Where meters and gateways are: a meter's placement, usage, billing registers and
//! commissioning date; a gateway's site.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use super::super::worker::{queue_commissioning, queue_rollups};
use super::{check_name, check_usage, StructureError, Usage};
use crate::zone::TimeZone;

/// `PATCH /devices/{serial}`: a field left out stays; `null` clears it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// 1 to 200 characters.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// "site", "panel" or "circuit"; implied by a non-null `circuit_id` or `panel_id` when
    /// left out. `panel` needs `panel_id`, `circuit` needs `circuit_id`; null (or `site`)
    /// clears panel and circuit.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub measures: Option<Option<String>>,
    /// A panel of the meter's site.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub panel_id: Option<Option<i64>>,
    /// A circuit of the meter's site; its panel becomes `panel_id`.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub circuit_id: Option<Option<i64>>,
    /// Overrides the circuit's usage.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Usage>)]
    pub usage: Option<Option<String>>,
    /// Counter name of active import (`^[A-Za-z0-9_]{1,32}$`); null: the SG convention
    /// (counter1nr).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub import_register: Option<Option<String>>,
    /// Counter name of active export; null: the SG convention (counter2nr).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub export_register: Option<Option<String>>,
    /// Counter name of reactive energy; null: the SG convention (counter3nr).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub reactive_register: Option<Option<String>>,
    /// When the meter was commissioned: an RFC 3339 instant, or a date meaning local midnight
    /// in the meter's zone (its site's, else its gateway's), between 1990-01-01 and a day after
    /// now; `null`: unknown (no bound). Counter readings dated before it are kept (listed as
    /// partial rejects) but never accounted; a change recomputes the meter's intervals.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
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
    time_zone: TimeZone,
}

/// The earliest commissioning date accepted: older is a typing error, not a meter.
pub const COMMISSIONED_MIN: &str = "1990-01-01T00:00:00Z";

/// A commissioning date as the API and the admin form give it (see
/// [`DevicePatch::commissioned_at`]): not before [`COMMISSIONED_MIN`], and not more than a
/// day after `now` (a date a little ahead of UTC is today somewhere).
pub fn parse_commissioned_at(
    value: &str,
    zone: TimeZone,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, StructureError> {
    let value = value.trim();
    let at = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if !headend_energy::calendar::supported(d) {
            return Err(StructureError::Invalid(format!(
                "commissioned_at {value:?} is not between 1990 and tomorrow"
            )));
        }
        headend_energy::calendar::period_bounds(zone.tz(), d, headend_energy::calendar::Period::Day)
            .0
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
        Some(Some(v)) => Some(parse_commissioned_at(v, current.time_zone, Utc::now())?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commissioning_dates_are_instants_or_local_dates_between_1990_and_tomorrow() {
        let now: DateTime<Utc> = "2026-12-07T09:00:00Z".parse().unwrap();
        let ok = |v: &str, zone: &str| {
            parse_commissioned_at(v, zone.parse().unwrap(), now)
                .unwrap()
                .to_rfc3339()
        };
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
                    parse_commissioned_at(bad, TimeZone::UTC, now),
                    Err(StructureError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}
