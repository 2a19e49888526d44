//! Panels (distribution boards) of a site and their circuits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::super::worker::queue_rollups;
use super::{check_description, check_name, check_usage, unique_violation, StructureError, Usage};

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Panel)]
pub struct PanelView {
    pub id: i64,
    pub site_id: i64,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// A panel to create, or the fields to change (absent: unchanged).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PanelInput {
    /// 1 to 200 characters, unique in the site; required on creation.
    pub name: Option<String>,
    /// At most 2000 characters.
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

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Circuit)]
pub struct CircuitView {
    pub id: i64,
    pub panel_id: i64,
    pub site_id: i64,
    pub name: String,
    #[schema(value_type = Usage)]
    pub usage: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// A circuit to create, or the fields to change (absent: unchanged).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitInput {
    /// 1 to 200 characters, unique in the panel; required on creation.
    pub name: Option<String>,
    /// Default `other`.
    #[schema(value_type = Option<Usage>)]
    pub usage: Option<String>,
    /// At most 2000 characters.
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
