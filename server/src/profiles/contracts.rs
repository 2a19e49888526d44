//! Supply contracts of a site. A contract applies from its `valid_from` local date until the
//! next one; creating, changing or deleting one queues a rebuild of the site's rollups, so
//! costs always follow the contract in force on each day.

use chrono::{DateTime, NaiveDate, Utc};
use headend_energy::tariff::Contract;
use serde::Serialize;
use sqlx::PgPool;

use super::structure::StructureError;
use super::worker::queue_rollups;

#[derive(Debug, Serialize)]
pub struct ContractView {
    pub id: i64,
    pub site_id: i64,
    pub valid_from: NaiveDate,
    pub contract: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

type Row = (
    i64,
    i64,
    NaiveDate,
    sqlx::types::Json<serde_json::Value>,
    DateTime<Utc>,
);

fn view((id, site_id, valid_from, body, created_at): Row) -> ContractView {
    ContractView {
        id,
        site_id,
        valid_from,
        contract: body.0,
        created_at,
    }
}

/// Parses and validates a contract as an API user sends it; the error says what is wrong.
pub fn parse(body: serde_json::Value) -> Result<Contract, StructureError> {
    let contract: Contract = serde_json::from_value(body)
        .map_err(|e| StructureError::Invalid(format!("contract: {e}")))?;
    contract
        .validate()
        .map_err(|e| StructureError::Invalid(format!("contract: {e}")))?;
    Ok(contract)
}

pub async fn list(pool: &PgPool, site: i64) -> Result<Vec<ContractView>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, site_id, valid_from, body, created_at FROM contracts WHERE site_id = $1 ORDER BY valid_from",
    )
    .bind(site)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(view).collect())
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<ContractView>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, site_id, valid_from, body, created_at FROM contracts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(view))
}

fn check_valid_from(date: NaiveDate) -> Result<(), StructureError> {
    if headend_energy::calendar::supported(date) {
        Ok(())
    } else {
        Err(StructureError::Invalid(format!(
            "valid_from must lie in the years {} to {}",
            headend_energy::calendar::MIN_YEAR,
            headend_energy::calendar::MAX_YEAR
        )))
    }
}

pub async fn create(
    pool: &PgPool,
    site: i64,
    valid_from: NaiveDate,
    contract: &Contract,
) -> Result<i64, StructureError> {
    check_valid_from(valid_from)?;
    let body =
        serde_json::to_value(contract).map_err(|e| StructureError::Invalid(e.to_string()))?;
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO contracts (site_id, valid_from, body) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(site)
    .bind(valid_from)
    .bind(sqlx::types::Json(body))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StructureError::Conflict(format!(
            "the site already has a contract valid from {valid_from}"
        )),
        _ => StructureError::Db(e),
    })?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn replace(
    pool: &PgPool,
    id: i64,
    valid_from: Option<NaiveDate>,
    contract: &Contract,
) -> Result<(), StructureError> {
    if let Some(date) = valid_from {
        check_valid_from(date)?;
    }
    let body =
        serde_json::to_value(contract).map_err(|e| StructureError::Invalid(e.to_string()))?;
    let mut tx = pool.begin().await?;
    let site: Option<i64> = sqlx::query_scalar(
        "UPDATE contracts SET body = $2, valid_from = COALESCE($3, valid_from) WHERE id = $1 RETURNING site_id",
    )
    .bind(id)
    .bind(sqlx::types::Json(body))
    .bind(valid_from)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StructureError::Conflict("the site already has a contract valid from that date".into())
        }
        _ => StructureError::Db(e),
    })?;
    let site = site.ok_or(StructureError::NotFound("contract"))?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn delete(pool: &PgPool, id: i64) -> Result<(), StructureError> {
    let mut tx = pool.begin().await?;
    let site: Option<i64> =
        sqlx::query_scalar("DELETE FROM contracts WHERE id = $1 RETURNING site_id")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let site = site.ok_or(StructureError::NotFound("contract"))?;
    queue_rollups(&mut tx, Some(site), &[]).await?;
    tx.commit().await?;
    Ok(())
}
