//! Per-site northbound settings (`northbound_sites`): read and written by admins through the
//! API and the page, read by the publisher, which writes its connection state back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::topics::{slug, valid_prefix};
use crate::config::northbound::NorthboundConfig;

/// A site's northbound settings with the publisher's last known state.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = NorthboundSettings)]
pub struct SiteSettings {
    pub site_id: i64,
    pub enabled: bool,
    /// A broker named in the configuration (`[[northbound.brokers]]`).
    pub broker: String,
    pub discovery_prefix: String,
    /// The site's state, availability and command topics start with this.
    pub base_topic: String,
    /// Relays are switches commanding through the ledger; false: read-only sensors.
    pub commands: bool,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
    /// The publisher is connected to the broker.
    pub connected: bool,
    pub status_at: Option<DateTime<Utc>>,
    /// Why the publisher is not connected (e.g. the broker refused the credentials).
    pub last_error: Option<String>,
}

/// What an admin sets.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NorthboundInput)]
pub struct SettingsInput {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub broker: String,
    /// Default `homeassistant`, Home Assistant's own.
    pub discovery_prefix: Option<String>,
    /// Default `headend/<site name as a slug>`.
    pub base_topic: Option<String>,
    #[serde(default = "yes")]
    pub commands: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error("site not found")]
    NoSite,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "site_id, enabled, broker, discovery_prefix, base_topic, commands,
    updated_at, updated_by, connected, status_at, last_error";

pub async fn get(pool: &PgPool, site: i64) -> Result<Option<SiteSettings>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM northbound_sites WHERE site_id = $1"
    ))
    .bind(site)
    .fetch_optional(pool)
    .await
}

/// Every enabled site, for the publisher.
pub async fn enabled(pool: &PgPool) -> Result<Vec<SiteSettings>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM northbound_sites WHERE enabled ORDER BY site_id"
    ))
    .fetch_all(pool)
    .await
}

/// The default base topic of a site: `headend/<slug of its name>`.
pub fn default_base(site_name: &str) -> String {
    format!("headend/{}", slug(site_name))
}

/// Validates `input` against the configured brokers and stores it.
pub async fn put(
    pool: &PgPool,
    config: &NorthboundConfig,
    site: i64,
    input: SettingsInput,
    by: &str,
) -> Result<SiteSettings, SettingsError> {
    if config.broker(&input.broker).is_none() {
        let known: Vec<&str> = config.brokers.iter().map(|b| b.name.as_str()).collect();
        return Err(SettingsError::Invalid(if known.is_empty() {
            "no northbound broker is configured: add a [[northbound.brokers]] entry to the configuration file".into()
        } else {
            format!(
                "broker {:?} is not configured; configured: {}",
                input.broker.chars().take(64).collect::<String>(),
                known.join(", ")
            )
        }));
    }
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM sites WHERE id = $1")
        .bind(site)
        .fetch_optional(pool)
        .await?;
    let name = name.ok_or(SettingsError::NoSite)?;
    let prefix = input
        .discovery_prefix
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "homeassistant".into());
    let base = input
        .base_topic
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| default_base(&name));
    for (field, value) in [("discovery_prefix", &prefix), ("base_topic", &base)] {
        if !valid_prefix(value) {
            return Err(SettingsError::Invalid(format!(
                "{field}: topic levels of letters, digits, '_' and '-' separated by '/', at most 100 characters (no '+', '#' or empty level)"
            )));
        }
    }
    if base == prefix || base.starts_with(&format!("{prefix}/")) {
        return Err(SettingsError::Invalid(
            "base_topic must not be under the discovery prefix".into(),
        ));
    }
    let clash: Option<i64> = sqlx::query_scalar(
        "SELECT site_id FROM northbound_sites WHERE site_id <> $1 AND broker = $2
           AND (base_topic = $3 OR starts_with(base_topic, $3 || '/') OR starts_with($3, base_topic || '/'))
         LIMIT 1",
    )
    .bind(site)
    .bind(&input.broker)
    .bind(&base)
    .fetch_optional(pool)
    .await?;
    if let Some(other) = clash {
        return Err(SettingsError::Invalid(format!(
            "base_topic overlaps site {other}'s on the same broker"
        )));
    }
    let saved = sqlx::query_as(&format!(
        "INSERT INTO northbound_sites (site_id, enabled, broker, discovery_prefix, base_topic,
             commands, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (site_id) DO UPDATE SET enabled = $2, broker = $3, discovery_prefix = $4,
             base_topic = $5, commands = $6, updated_by = $7, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(site)
    .bind(input.enabled)
    .bind(&input.broker)
    .bind(&prefix)
    .bind(&base)
    .bind(input.commands)
    .bind(by)
    .fetch_one(pool)
    .await?;
    Ok(saved)
}

/// The publisher's connection state; written only when it changes.
pub async fn set_status(
    pool: &PgPool,
    site: i64,
    connected: bool,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let error = error.map(|e| e.chars().take(1000).collect::<String>());
    sqlx::query(
        "UPDATE northbound_sites SET connected = $2, last_error = $3, status_at = now()
         WHERE site_id = $1 AND (connected IS DISTINCT FROM $2 OR last_error IS DISTINCT FROM $3)",
    )
    .bind(site)
    .bind(connected)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
