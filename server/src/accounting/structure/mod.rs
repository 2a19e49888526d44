//! Site structure: panels, circuits, and where gateways and meters are placed.
//!
//! Every change that alters which meters add up to what, or in which calendar, queues a
//! rebuild of the affected rollups in the same transaction.

mod panels;
mod placement;

use sqlx::PgPool;

use super::worker::queue_rollups;
use crate::zone::TimeZone;

pub use panels::{
    create_circuit, create_panel, delete_circuit, delete_panel, get_circuit, get_panel,
    list_circuits, list_panels, list_site_circuits, update_circuit, update_panel, CircuitInput,
    CircuitView, PanelInput, PanelView,
};
pub use placement::{
    assign_gateway, parse_commissioned_at, patch_device, DevicePatch, COMMISSIONED_MIN,
};

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

// Usages are stored as text and checked against `USAGES`; this enum is only their schema in
// the API document (a unit test keeps the two equal).
/// What a circuit or meter supplies, for grouping consumption.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Usage {
    Heating,
    Cooling,
    HotWater,
    Lighting,
    Sockets,
    Ventilation,
    Process,
    Other,
}

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

/// Site settings: name and time zone. A new zone moves every local day, so the site's
/// rollups are rebuilt.
pub async fn update_site(
    pool: &PgPool,
    site: i64,
    name: Option<&str>,
    time_zone: Option<TimeZone>,
) -> Result<(), StructureError> {
    let name = name.map(|n| check_name("site", n)).transpose()?;
    let mut tx = pool.begin().await?;
    // The stored zone as text: a zone this build no longer knows can still be replaced.
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
    if time_zone.is_some_and(|tz| tz != *old) {
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
    fn the_usage_schema_lists_the_usages() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Usage::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(USAGES));
    }
}
