//! Gateways: registration, MQTT credentials, topic layout and the authentication policy the
//! MQTT front door asks at every CONNECT.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sg_wire::topic::TopicLayout;
use sqlx::PgPool;

use crate::auth::{password, Scope};
use crate::ingest::normalize::{Directory, GatewayInfo};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("a gateway with serial {0:?} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Default)]
pub struct NewGateway {
    pub serial: String,
    /// Generated when absent; either way returned once and stored only as a hash.
    pub password: Option<String>,
    pub site_id: Option<i64>,
    pub time_zone: Option<String>,
    pub topic_root: Option<String>,
    pub topic_pub: Option<String>,
    pub topic_sub: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub id: i64,
    pub serial: String,
    /// Shown once; Headend keeps only its hash.
    pub password: String,
    pub publish_base: String,
    pub command_topic: String,
}

/// A gateway serial is its MQTT user name and part of its topics: printable ASCII, no topic
/// wildcards or separators.
pub fn validate_serial(serial: &str) -> Result<(), GatewayError> {
    let ok = (1..=32).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(GatewayError::Invalid(format!(
            "gateway serial {:?} must be 1 to 32 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
            serial.chars().take(40).collect::<String>()
        )))
    }
}

pub async fn create(
    pool: &PgPool,
    new: NewGateway,
    default_zone: &str,
) -> Result<Created, GatewayError> {
    validate_serial(&new.serial)?;
    let default = TopicLayout::default_for(&new.serial)
        .map_err(|e| GatewayError::Invalid(format!("topics: {e}")))?;
    let layout = TopicLayout::new(
        new.topic_root.as_deref().unwrap_or(default.root()),
        new.topic_pub.as_deref().unwrap_or(default.publish()),
        new.topic_sub.as_deref().unwrap_or(default.subscribe()),
    )
    .map_err(|e| GatewayError::Invalid(format!("topics: {e}")))?;
    let zone = match (&new.time_zone, new.site_id) {
        (Some(zone), _) => zone.clone(),
        (None, Some(site)) => sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1")
            .bind(site)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| GatewayError::Invalid(format!("site {site} does not exist")))?,
        (None, None) => default_zone.to_owned(),
    };
    if zone.parse::<Tz>().is_err() {
        return Err(GatewayError::Invalid(format!(
            "{zone:?} is not an IANA time zone name"
        )));
    }
    let secret = match new.password {
        Some(p) => {
            password::check_strength(&p).map_err(GatewayError::Invalid)?;
            p
        }
        None => password::generate(),
    };
    let hash = password::hash(secret.clone()).await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO gateways (serial, site_id, time_zone, password_hash, topic_root, topic_pub, topic_sub)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&new.serial)
    .bind(new.site_id)
    .bind(&zone)
    .bind(&hash)
    .bind(layout.root())
    .bind(layout.publish())
    .bind(layout.subscribe())
    .fetch_optional(pool)
    .await?;
    let Some(id) = id else {
        return Err(GatewayError::Exists(new.serial));
    };
    Ok(Created {
        id,
        serial: new.serial,
        password: secret,
        publish_base: layout.publish_base(),
        command_topic: layout.command_topic(),
    })
}

#[derive(sqlx::FromRow)]
struct DirectoryRow {
    id: i64,
    serial: String,
    topic_root: String,
    topic_pub: String,
    topic_sub: String,
    zone: String,
}

pub async fn load_directory(pool: &PgPool) -> Result<Directory, sqlx::Error> {
    let rows: Vec<DirectoryRow> = sqlx::query_as(
        "SELECT g.id, g.serial, g.topic_root, g.topic_pub, g.topic_sub,
                COALESCE(s.time_zone, g.time_zone) AS zone
         FROM gateways g LEFT JOIN sites s ON s.id = g.site_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(Directory::new(rows.into_iter().filter_map(|r| {
        // Rows were validated on the way in; one that no longer parses is skipped, not fatal.
        let layout = TopicLayout::new(&r.topic_root, &r.topic_pub, &r.topic_sub)
            .map_err(
                |e| tracing::error!(serial = %r.serial, error = %e, "stored topics are invalid"),
            )
            .ok()?;
        Some(GatewayInfo {
            id: r.id,
            zone: r.zone.parse().unwrap_or(Tz::UTC),
            layout,
            serial: r.serial,
        })
    })))
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GatewayView {
    pub id: i64,
    pub serial: String,
    pub site_id: Option<i64>,
    pub time_zone: String,
    pub publish_base: String,
    pub command_topic: String,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub hardware_version: Option<String>,
    pub online: bool,
    pub last_hello_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub clock_skew_s: Option<f64>,
    pub clock_faults: i64,
    pub rejected_messages: i64,
}

const VIEW_SQL: &str =
    "SELECT g.id, g.serial, g.site_id, COALESCE(s.time_zone, g.time_zone) AS time_zone,
        g.topic_root || '/' || g.topic_pub AS publish_base,
        g.topic_root || '/' || g.topic_sub AS command_topic,
        g.model, g.firmware_version, g.hardware_version, g.online, g.last_hello_at,
        g.last_seen_at, g.clock_skew_s, g.clock_faults,
        (SELECT count(*) FROM ingest_rejects r WHERE r.gateway_id = g.id) AS rejected_messages
 FROM gateways g LEFT JOIN sites s ON s.id = g.site_id
 WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1))";

pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<GatewayView>, sqlx::Error> {
    sqlx::query_as(&format!("{VIEW_SQL} ORDER BY g.serial"))
        .bind(scope.site_ids())
        .fetch_all(pool)
        .await
}

pub async fn get(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
) -> Result<Option<GatewayView>, sqlx::Error> {
    sqlx::query_as(&format!("{VIEW_SQL} AND g.serial = $2"))
        .bind(scope.site_ids())
        .bind(serial)
        .fetch_optional(pool)
        .await
}

/// Marks every gateway offline: at start no session is open yet.
pub async fn mark_all_offline(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE gateways SET online = false, online_changed_at = now() WHERE online")
        .execute(pool)
        .await
        .map(|_| ())
}

/// What an authenticated gateway may do on MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttGrant {
    pub serial: String,
    pub publish_base: String,
    pub command_topic: String,
}

/// When a grant was checked, the SHA-256 of the password it was checked with, and the stored
/// hash it was checked against.
type CachedGrant = (Instant, [u8; 32], String, MqttGrant);

/// Checks gateway MQTT credentials against the database.
///
/// Successful checks are remembered for a few minutes (keyed by a SHA-256 of the password, never
/// the password) so that a thousand gateways reconnecting after a restart do not queue behind a
/// thousand argon2 verifications.
pub struct GatewayAuthenticator {
    pool: PgPool,
    cache: Mutex<HashMap<String, CachedGrant>>,
    ttl: Duration,
}

impl GatewayAuthenticator {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            cache: Mutex::default(),
            ttl: Duration::from_secs(300),
        })
    }

    pub async fn authenticate(
        &self,
        username: &str,
        password: &[u8],
    ) -> Result<Option<MqttGrant>, sqlx::Error> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(password).into();
        let row: Option<(String, String, String, String)> = sqlx::query_as(
            // A Modbus converter is a gateway row too, but never an MQTT client.
            "SELECT password_hash, topic_root, topic_pub, topic_sub FROM gateways
             WHERE serial = $1 AND kind = 'sg'",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some((hash, root, publish, subscribe)) = row else {
            return Ok(None);
        };
        // The cache only saves the argon2 verification of a password already verified against
        // this very hash: a rotated password (new hash) is checked afresh, at once.
        if let Some((at, cached, cached_hash, grant)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(username)
        {
            if at.elapsed() < self.ttl && *cached == digest && *cached_hash == hash {
                return Ok(Some(grant.clone()));
            }
        }
        if !password::verify(password.to_vec(), hash.clone()).await {
            return Ok(None);
        }
        let layout = match TopicLayout::new(&root, &publish, &subscribe) {
            Ok(layout) => layout,
            Err(e) => {
                tracing::error!(serial = username, error = %e, "stored topics are invalid");
                return Ok(None);
            }
        };
        let grant = MqttGrant {
            serial: username.to_owned(),
            publish_base: layout.publish_base(),
            command_topic: layout.command_topic(),
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            username.to_owned(),
            (Instant::now(), digest, hash, grant.clone()),
        );
        Ok(Some(grant))
    }
}

/// Gives an SG gateway a new generated MQTT password and returns it (shown once); `None` when
/// no SG gateway has that serial. Sessions already open stay open until they reconnect; the
/// next CONNECT needs the new password.
pub async fn rotate_password(pool: &PgPool, serial: &str) -> Result<Option<String>, GatewayError> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    let done =
        sqlx::query("UPDATE gateways SET password_hash = $2 WHERE serial = $1 AND kind = 'sg'")
            .bind(serial)
            .bind(hash)
            .execute(pool)
            .await?;
    Ok((done.rows_affected() > 0).then_some(secret))
}
