//! Gateways: registration, MQTT credentials, topic layout and the authentication policy the
//! MQTT front door asks at every CONNECT.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sg_wire::topic::TopicLayout;
use sqlx::PgPool;

use super::credentials::{self, CredentialKey, Verified};
use crate::auth::throttle::{Limits, Throttle, Throttled};
use crate::auth::{password, Scope};
use crate::infra::cluster::InstanceId;
use crate::infra::db::decodable;
use crate::ingest::normalize::{Directory, GatewayInfo};
use crate::zone::TimeZone;

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

/// A gateway to register (the API's request body as it is).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct NewGateway {
    /// The gateway's serial, its MQTT user name and the root of its topics: 1 to 32 characters
    /// of A-Z, a-z, 0-9, '-', '_' or '.', starting with a letter or digit.
    pub serial: String,
    /// The MQTT password, at least 10 characters. Generated when absent; either way returned
    /// once and stored only as a hash.
    pub password: Option<String>,
    /// The site it is installed on.
    pub site_id: Option<i64>,
    /// IANA zone of its local times; default: the site's, else `default_time_zone`.
    pub time_zone: Option<TimeZone>,
    /// Topic layout; default: the SG convention for the serial.
    pub topic_root: Option<String>,
    pub topic_pub: Option<String>,
    pub topic_sub: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = GatewayCredentials)]
pub struct Created {
    pub id: i64,
    pub serial: String,
    /// The MQTT password, shown once; Headend keeps only its hash.
    pub password: String,
    pub publish_base: String,
    pub command_topic: String,
}

/// A gateway serial is its MQTT user name, part of its topics and a URL path segment: 1 to 32
/// characters of `A-Z a-z 0-9 - _ .`, starting with a letter or digit (so never `.` or `..`,
/// which a URL would resolve as a relative path, nor a leading `-` an option parser would take).
/// No topic wildcards or separators.
pub fn validate_serial(serial: &str) -> Result<(), GatewayError> {
    let ok = (1..=32).contains(&serial.len())
        && serial.as_bytes()[0].is_ascii_alphanumeric()
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(GatewayError::Invalid(format!(
            "gateway serial {:?} must be 1 to 32 characters of A-Z, a-z, 0-9, '-', '_' or '.', \
             starting with a letter or digit",
            serial.chars().take(40).collect::<String>()
        )))
    }
}

/// The MQTT client ids a gateway may use: `<serial>-1` and `<serial>-2`, one per SG push link
/// (the wire contract). Exactly these, never a prefix rule: stripping the final `-1` or `-2`
/// gives the serial back, so no two gateways can ever present the same client id, even when
/// serials contain `-` (gateway `A` may not use `A-1-1`, the id of gateway `A-1`).
pub fn mqtt_client_ids(serial: &str) -> Vec<String> {
    vec![format!("{serial}-1"), format!("{serial}-2")]
}

pub async fn create(
    pool: &PgPool,
    new: NewGateway,
    default_zone: TimeZone,
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
    let zone: TimeZone = match (new.time_zone, new.site_id) {
        (Some(zone), _) => zone,
        (None, Some(site)) => sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1")
            .bind(site)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| GatewayError::Invalid(format!("site {site} does not exist")))?,
        (None, None) => default_zone,
    };
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
    .bind(zone)
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
    zone: TimeZone,
}

pub async fn load_directory(pool: &PgPool) -> Result<Directory, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT g.id, g.serial, g.topic_root, g.topic_pub, g.topic_sub,
                COALESCE(s.time_zone, g.time_zone) AS zone
         FROM gateways g LEFT JOIN sites s ON s.id = g.site_id",
    )
    .fetch_all(pool)
    .await?;
    // Rows were validated on the way in; one that no longer decodes (a zone this build does
    // not know) or parses (topics) is skipped with an error, not fatal: its messages are kept
    // as rejects, never read in a wrong zone.
    let rows = decodable::<DirectoryRow>(&rows, "gateway");
    Ok(Directory::new(rows.into_iter().filter_map(|r| {
        let layout = TopicLayout::new(&r.topic_root, &r.topic_pub, &r.topic_sub)
            .map_err(
                |e| tracing::error!(serial = %r.serial, error = %e, "stored topics are invalid"),
            )
            .ok()?;
        Some(GatewayInfo {
            id: r.id,
            zone: r.zone.tz(),
            layout,
            serial: r.serial,
        })
    })))
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Gateway)]
pub struct GatewayView {
    pub id: i64,
    pub serial: String,
    pub site_id: Option<i64>,
    pub time_zone: TimeZone,
    pub publish_base: String,
    pub command_topic: String,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub hardware_version: Option<String>,
    pub online: bool,
    pub last_hello_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Gateway clock minus receive time, newest message, seconds.
    pub clock_skew_s: Option<f64>,
    pub clock_faults: i64,
    pub rejected_messages: i64,
}

/// Whether gateway `g` is online, as SQL: an MQTT gateway by its session (its `status` and last
/// will), a gateway that never held an MQTT session (an XML push gateway: `online_changed_at`
/// never set) by having pushed within the last 15 minutes. Used by the gateway list, the
/// overview and the offline-gateway alarm timer.
pub const ONLINE_SQL: &str =
    "COALESCE(g.online OR (g.online_changed_at IS NULL AND g.last_seen_at > now() - interval '15 minutes'), false)";

/// The gateway view's query, up to its `WHERE` (callers add conditions and an order).
fn view_sql() -> String {
    format!(
        "SELECT g.id, g.serial, g.site_id, COALESCE(s.time_zone, g.time_zone) AS time_zone,
        g.topic_root || '/' || g.topic_pub AS publish_base,
        g.topic_root || '/' || g.topic_sub AS command_topic,
        g.model, g.firmware_version, g.hardware_version, {ONLINE_SQL} AS online, g.last_hello_at,
        g.last_seen_at, g.clock_skew_s, g.clock_faults,
        (SELECT count(*) FROM ingest_rejects r WHERE r.gateway_id = g.id) AS rejected_messages
 FROM gateways g LEFT JOIN sites s ON s.id = g.site_id
 WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1))"
    )
}

pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<GatewayView>, sqlx::Error> {
    sqlx::query_as(&format!("{} ORDER BY g.serial", view_sql()))
        .bind(scope.site_ids())
        .fetch_all(pool)
        .await
}

pub async fn get(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
) -> Result<Option<GatewayView>, sqlx::Error> {
    sqlx::query_as(&format!("{} AND g.serial = $2", view_sql()))
        .bind(scope.site_ids())
        .bind(serial)
        .fetch_optional(pool)
        .await
}

/// At start, marks offline the gateways whose session was this instance's (our previous
/// process died with them) or no instance's (written before sessions had owners): none of
/// them is open now. Sessions other instances hold are theirs; those of dead instances are
/// the reaper's ([`super::sessions`]).
pub async fn mark_own_offline(pool: &PgPool, instance: &InstanceId) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE gateways SET online = false, online_changed_at = now()
         WHERE online AND (session_instance = $1 OR session_instance IS NULL)",
    )
    .bind(instance.as_str())
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}

/// What an authenticated gateway may do on MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttGrant {
    /// The gateway's database id: immutable, unlike what it is called.
    pub id: i64,
    pub serial: String,
    pub publish_base: String,
    pub command_topic: String,
}

/// Why gateway credentials could not be decided now (none of these means "wrong password").
#[derive(Debug, thiserror::Error)]
pub enum GatewayAuthError {
    /// Too many attempts on this serial or from this address: nothing was checked.
    #[error("too many attempts; try again in {} s", .0.retry_after_secs())]
    Throttled(Throttled),
    /// The password hashing pool is full: nothing was checked.
    #[error(transparent)]
    Busy(#[from] password::Busy),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Checks gateway MQTT credentials against the database.
///
/// A password verified once (argon2) is remembered as a verified-credential record
/// ([`credentials`]: an HMAC under a key in the data directory, bound to the stored hash),
/// persisted beside the hash and loaded at start, so that ten thousand gateways reconnecting
/// after a restart cost ten thousand HMACs, not ten thousand argon2 verifications.
///
/// Every other check first passes a brute-force throttle per serial and per source address
/// ([`Limits::DEVICE`]); a wrong password costs the serial one more attempt. A remembered
/// password skips the throttle: it was verified already, so guessing cannot profit from it, and
/// a gateway keeps reconnecting while someone hammers its serial with wrong passwords. An
/// unknown serial (or a Modbus converter's row, which never logs in) is verified against a
/// dummy argon2 hash, so that its answer costs as long as a wrong password for a real one.
pub struct GatewayAuthenticator {
    pool: PgPool,
    key: CredentialKey,
    verified: Mutex<HashMap<String, Verified>>,
    throttle: Throttle,
}

impl GatewayAuthenticator {
    /// With a key of this process only: nothing verified survives a restart.
    pub fn new(pool: PgPool) -> Arc<Self> {
        Self::with_limits(pool, Limits::DEVICE)
    }

    /// With the key at `key_file` (created when missing) and the records stored under it. A key
    /// that cannot be read or written, or records that cannot be loaded, are logged: gateways
    /// are then verified by argon2, as on a first start.
    pub async fn with_key_file(pool: PgPool, key_file: &std::path::Path) -> Arc<Self> {
        let key = CredentialKey::load_or_generate(key_file).unwrap_or_else(|error| {
            tracing::error!(path = %key_file.display(), %error, "gateway credential key unusable; verified credentials will not survive a restart");
            CredentialKey::random()
        });
        let verified = credentials::load(&pool).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not load verified gateway credentials");
            HashMap::new()
        });
        tracing::info!(
            records = verified.len(),
            "verified gateway credentials loaded"
        );
        Arc::new(Self {
            pool,
            key,
            verified: Mutex::new(verified),
            throttle: Throttle::new(Limits::DEVICE),
        })
    }

    /// With other throttle limits (tests).
    pub fn with_limits(pool: PgPool, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            pool,
            key: CredentialKey::random(),
            verified: Mutex::default(),
            throttle: Throttle::new(limits),
        })
    }

    /// `Ok(None)` for an unknown serial, a converter or a wrong password (indistinguishable on
    /// purpose, in the answer and in the time it takes). `source` is the client's address.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &[u8],
        source: IpAddr,
    ) -> Result<Option<MqttGrant>, GatewayAuthError> {
        let remembered = self.remembered(username, password);
        if remembered.is_none() {
            self.throttle
                .attempt(username, source)
                .map_err(GatewayAuthError::Throttled)?;
        }
        let row: Option<(i64, String, String, String, String)> = sqlx::query_as(
            // A Modbus converter is a gateway row too, but never an MQTT client.
            "SELECT id, password_hash, topic_root, topic_pub, topic_sub FROM gateways
             WHERE serial = $1 AND kind = 'sg'",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, hash, root, publish, subscribe)) = row else {
            // The same argon2 work as for a known serial: the answer time must not tell which
            // serials exist. A busy pool is "try again" here too.
            password::verify(password.to_vec(), password::dummy_hash().await).await?;
            self.throttle.failed(username);
            return Ok(None);
        };
        match remembered {
            // A record only saves the argon2 verification of a password already verified
            // against this very hash (of this very gateway): a rotated password (new hash) is
            // checked afresh, at once.
            Some(known) if known.hash == hash && known.grant.id == id => {
                return Ok(Some(known.grant))
            }
            Some(_) => self
                .throttle
                .attempt(username, source)
                .map_err(GatewayAuthError::Throttled)?,
            None => {}
        }
        if !password::verify(password.to_vec(), hash.clone()).await? {
            self.throttle.failed(username);
            return Ok(None);
        }
        let Some(grant) = credentials::grant(id, username, &root, &publish, &subscribe) else {
            return Ok(None);
        };
        let mac = self.key.mac(username, &hash, password);
        if let Err(error) = credentials::persist(&self.pool, id, &hash, &mac).await {
            // Only the next restart pays: it verifies this gateway by argon2 again.
            tracing::warn!(serial = username, %error, "could not store a verified credential");
        }
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                username.to_owned(),
                Verified {
                    hash,
                    mac,
                    grant: grant.clone(),
                },
            );
        Ok(Some(grant))
    }

    /// The record of `username` when `password` is the one it was made with.
    fn remembered(&self, username: &str, password: &[u8]) -> Option<Verified> {
        let record = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(username)
            .cloned()?;
        self.key
            .matches(&record.mac, username, &record.hash, password)
            .then_some(record)
    }
}

/// Gives an SG gateway a new generated MQTT password and returns it (shown once); `None` when
/// no SG gateway has that serial. Sessions already open stay open until they reconnect; the
/// next CONNECT needs the new password.
pub async fn rotate_password(pool: &PgPool, serial: &str) -> Result<Option<String>, GatewayError> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    // The verified-credential record is bound to the old hash already; cleared all the same.
    let done = sqlx::query(
        "UPDATE gateways SET password_hash = $2, credential_mac = NULL
         WHERE serial = $1 AND kind = 'sg'",
    )
    .bind(serial)
    .bind(hash)
    .execute(pool)
    .await?;
    Ok((done.rows_affected() > 0).then_some(secret))
}

/// Which of the gateways `ids` are Modbus TCP converters (polled by Headend) rather than
/// gateways that push.
pub async fn converters_among(
    pool: &PgPool,
    ids: &[i64],
) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT id FROM gateways WHERE id = ANY($1) AND kind = 'converter'",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// How many gateways are on the site.
pub async fn count_on_site(pool: &PgPool, site: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM gateways WHERE site_id = $1")
        .bind(site)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_start_with_a_letter_or_digit() {
        for ok in ["SG000017", "A", "7", "A-1", "sg.01_x-2", &"S".repeat(32)] {
            assert!(validate_serial(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "_x",
            "a/b",
            "a+b",
            "a#",
            "a b",
            "é",
            &"S".repeat(33),
        ] {
            assert!(validate_serial(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_ids_of_two_gateways_never_overlap() {
        assert_eq!(mqtt_client_ids("SG000017"), ["SG000017-1", "SG000017-2"]);
        // Serials with '-' are where a prefix rule failed: "A" could present "A-1-1".
        let serials = ["A", "A-1", "A-1-1", "A-2", "A1", "B"];
        for a in serials {
            for b in serials.iter().filter(|b| **b != a) {
                let theirs = mqtt_client_ids(b);
                assert!(
                    mqtt_client_ids(a).iter().all(|id| !theirs.contains(id)),
                    "{a} and {b} share a client id"
                );
            }
        }
    }

    /// A pool whose every query fails at once: an attempt that reaches the database answers
    /// `Db`, one refused before it answers `Throttled`.
    fn unreachable_pool() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy("postgres://headend@localhost/none?host=/nonexistent/headend-test")
            .expect("lazy pool")
    }

    const TIGHT: Limits = Limits {
        account_burst: 2,
        account_period_ms: 3_600_000,
        source_burst: 4,
        source_period_ms: 3_600_000,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn throttled_attempts_reach_neither_the_database_nor_argon2() {
        let auth = GatewayAuthenticator::with_limits(unreachable_pool(), TIGHT);
        for _ in 0..2 {
            let r = auth.authenticate("SG1", b"guess", ip("192.0.2.1")).await;
            assert!(matches!(r, Err(GatewayAuthError::Db(_))), "{r:?}");
        }
        let r = auth.authenticate("SG1", b"guess", ip("192.0.2.2")).await;
        match r {
            Err(GatewayAuthError::Throttled(t)) => assert!(t.retry_after_secs() > 60),
            other => panic!("expected a throttled attempt, got {other:?}"),
        }
        // Another serial is not affected.
        let r = auth.authenticate("SG2", b"guess", ip("192.0.2.3")).await;
        assert!(matches!(r, Err(GatewayAuthError::Db(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_verified_credential_skips_the_throttle_and_a_wrong_password_does_not() {
        let auth = GatewayAuthenticator::with_limits(unreachable_pool(), TIGHT);
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$stored";
        let mac = auth.key.mac("SG1", hash, b"right password");
        let grant = credentials::grant(7, "SG1", "SG1", "pub", "sub").unwrap();
        auth.verified.lock().unwrap().insert(
            "SG1".into(),
            Verified {
                hash: hash.into(),
                mac,
                grant,
            },
        );
        let source = ip("192.0.2.1");
        // Spend the serial's allowance with wrong passwords: they are not remembered.
        for _ in 0..2 {
            let r = auth.authenticate("SG1", b"wrong password", source).await;
            assert!(matches!(r, Err(GatewayAuthError::Db(_))), "{r:?}");
        }
        let r = auth.authenticate("SG1", b"wrong password", source).await;
        assert!(matches!(r, Err(GatewayAuthError::Throttled(_))), "{r:?}");
        // The verified password still goes on to the database (which decides on the hash).
        let r = auth.authenticate("SG1", b"right password", source).await;
        assert!(matches!(r, Err(GatewayAuthError::Db(_))), "{r:?}");
        // A record made under another key (another instance, a lost key file) is no record.
        let other = GatewayAuthenticator::with_limits(unreachable_pool(), TIGHT);
        other
            .verified
            .lock()
            .unwrap()
            .insert("SG1".into(), auth.verified.lock().unwrap()["SG1"].clone());
        assert!(other.remembered("SG1", b"right password").is_none());
        assert!(auth.remembered("SG1", b"right password").is_some());
    }

    #[tokio::test]
    async fn a_source_spraying_serials_is_throttled() {
        let auth = GatewayAuthenticator::with_limits(unreachable_pool(), TIGHT);
        for i in 0..4 {
            let r = auth
                .authenticate(&format!("SG{i}"), b"guess", ip("2001:db8::1"))
                .await;
            assert!(matches!(r, Err(GatewayAuthError::Db(_))), "{r:?}");
        }
        // The same /64 is the same source.
        let r = auth.authenticate("SG9", b"guess", ip("2001:db8::2")).await;
        assert!(matches!(r, Err(GatewayAuthError::Throttled(_))), "{r:?}");
        let r = auth.authenticate("SG9", b"guess", ip("198.51.100.1")).await;
        assert!(matches!(r, Err(GatewayAuthError::Db(_))), "{r:?}");
    }
}
