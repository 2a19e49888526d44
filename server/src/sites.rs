//! Sites: where gateways are installed, with the time zone their local times are read in.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::auth::Scope;
use crate::zone::TimeZone;

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("{0}")]
    Invalid(String),
    #[error("a site named {0:?} already exists")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Site)]
pub struct SiteView {
    pub id: i64,
    pub name: String,
    /// IANA zone of the site's local days.
    pub time_zone: TimeZone,
    /// The same zone under the name the energy API uses.
    pub timezone: TimeZone,
    pub created_at: DateTime<Utc>,
}

/// Creates a site; the zone was checked where it entered (API body, form, command line).
pub async fn create(pool: &PgPool, name: &str, time_zone: TimeZone) -> Result<i64, SiteError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(SiteError::Invalid(
            "a site name is 1 to 200 characters without control characters".into(),
        ));
    }
    sqlx::query_scalar(
        "INSERT INTO sites (name, time_zone) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(time_zone)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| SiteError::Exists(name.to_owned()))
}

pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<SiteView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, time_zone, time_zone AS timezone, created_at FROM sites
         WHERE ($1::int8[] IS NULL OR id = ANY($1)) ORDER BY name",
    )
    .bind(scope.site_ids())
    .fetch_all(pool)
    .await
}

pub async fn id_by_name(pool: &PgPool, name: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM sites WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// One site, if the scope may see it.
pub async fn get(pool: &PgPool, scope: &Scope, id: i64) -> Result<Option<SiteView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, time_zone, time_zone AS timezone, created_at FROM sites
         WHERE id = $2 AND ($1::int8[] IS NULL OR id = ANY($1))",
    )
    .bind(scope.site_ids())
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A site as the administration page lists it.
#[derive(Debug, sqlx::FromRow)]
pub struct SiteSummary {
    pub id: i64,
    pub name: String,
    pub time_zone: TimeZone,
    /// How many supply contracts it has.
    pub contracts: i64,
}

/// Every site with its number of contracts, by name.
pub async fn summaries(pool: &PgPool) -> Result<Vec<SiteSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.name, s.time_zone,
                (SELECT count(*) FROM contracts c WHERE c.site_id = s.id) AS contracts
         FROM sites s ORDER BY s.name",
    )
    .fetch_all(pool)
    .await
}

/// The names of the sites `ids`, by id (unknown ids are left out).
pub async fn names(
    pool: &PgPool,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, String>, sqlx::Error> {
    Ok(
        sqlx::query_as::<_, (i64, String)>("SELECT id, name FROM sites WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect(),
    )
}

/// How many of the sites `ids` exist.
pub async fn count_existing(pool: &PgPool, ids: &[i64]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM sites WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
}

/// Whether the site exists.
pub async fn exists(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sites WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}
