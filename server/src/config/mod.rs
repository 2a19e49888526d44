//! Configuration: built-in defaults, then a TOML file, then `HEADEND_*` environment variables
//! (layered by figment in `load.rs`, which says what is done by hand there and why).
//!
//! Secrets (database URL with its password, external broker URL, JWT secret) have no working
//! default and are redacted from `Debug` output, so a config can be logged safely.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::zone::TimeZone;

mod load;
pub mod northbound;

/// A string that must never be printed.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Headend keeps its own PostgreSQL cluster, ingest journal, keys and lock file.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub mqtt: MqttConfig,
    pub ingest: IngestConfig,
    pub energy: EnergyConfig,
    pub commands: CommandsConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    /// Modbus TCP polling of RS485/IP converters.
    pub modbus: crate::modbus::config::ModbusConfig,
    pub xml_push: XmlPushConfig,
    pub alarms: AlarmsConfig,
    pub cluster: ClusterConfig,
    /// Partitions ahead, raw measurements' retention (`crate::retention`).
    pub retention: crate::retention::RetentionConfig,
    /// Home Assistant MQTT discovery: the brokers sites may be published to.
    pub northbound: northbound::NorthboundConfig,
}

/// `[cluster]`: several instances sharing one database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's name (letters, digits, `.`, `_`, `-`). Unset: made once and kept in
    /// `data_dir/instance`.
    pub instance: Option<String>,
    /// Time to live of leases and of this instance's heartbeat: work another instance held (a
    /// converter's polling, the alarm timers ...) is taken over within this time after it died.
    pub lease_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            instance: None,
            lease_secs: 15,
        }
    }
}

impl ClusterConfig {
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs.clamp(2, 3600))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyConfig {
    /// A quarter-hour boundary with a counter reading at most this far from it is "measured";
    /// farther, its value is interpolated across the gap and the interval is "estimated".
    pub interval_tolerance_secs: u64,
    /// Counter readings dated more than this many days before they were received are kept
    /// (flagged 8 in `counter_readings.flags`, with a partial reject saying why) but never
    /// turned into energy intervals: a reading dated 1900 cannot make the profile worker fill
    /// a century of quarter-hours. Longer than any backlog a gateway can hold.
    pub backlog_horizon_days: u32,
    /// The engine never interpolates across a gap between two counter readings longer than
    /// this: the quarter-hours inside such a gap are missing (no rows), not estimated.
    pub max_interpolation_gap_hours: u32,
    /// The profile worker recomputes a counter's queued span in pieces of at most this many
    /// readings (a backfilled year is 35 040): its memory is bounded by this times 200 counters.
    pub worker_piece_readings: u32,
    /// ... and of at most this many days (bounds the quarter-hours made from sparse readings).
    pub worker_piece_days: u32,
}

impl EnergyConfig {
    pub fn backlog_horizon(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.backlog_horizon_days.max(1)))
    }

    /// The longest gap interpolated, in milliseconds.
    pub fn max_interpolation_gap_ms(&self) -> i64 {
        i64::from(self.max_interpolation_gap_hours.max(1)) * 3_600_000
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// A relay command not delivered and confirmed within this expires (a request may set its own).
    pub default_expiry_secs: u64,
    /// After sending, the relay must report the target state within this, or the command fails.
    pub confirm_timeout_secs: u64,
    /// Switching a critical relay off waits this long for a second operator's approval.
    pub approval_timeout_secs: u64,
    /// While waiting for a relay's state, it is asked again this often.
    pub state_poll_secs: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            default_expiry_secs: 300,
            confirm_timeout_secs: 30,
            approval_timeout_secs: 600,
            state_poll_secs: 5,
        }
    }
}

impl CommandsConfig {
    pub fn timing(&self) -> crate::relays::Timing {
        use std::time::Duration as D;
        crate::relays::Timing {
            default_expiry: D::from_secs(self.default_expiry_secs.max(1)),
            confirm_timeout: D::from_secs(self.confirm_timeout_secs.max(1)),
            approval_timeout: D::from_secs(self.approval_timeout_secs.max(1)),
            state_poll: D::from_secs(self.state_poll_secs.max(1)),
        }
    }
}

impl Default for EnergyConfig {
    fn default() -> Self {
        Self {
            interval_tolerance_secs: 120,
            backlog_horizon_days: crate::ingest::normalize::DEFAULT_BACKLOG_HORIZON_DAYS,
            max_interpolation_gap_hours: crate::accounting::worker::DEFAULT_MAX_GAP_HOURS,
            worker_piece_readings: crate::accounting::worker::DEFAULT_PIECE_READINGS,
            worker_piece_days: crate::accounting::worker::DEFAULT_PIECE_DAYS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Mark the session cookie `Secure`: set it when Headend is served over HTTPS (behind a
    /// TLS-terminating proxy), so browsers never send the cookie in clear text.
    pub secure_cookies: bool,
    /// Bearer token a Prometheus scraper sends to `/metrics`. Unset: only admins (their API
    /// token or session) may read the metrics.
    pub metrics_token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// An external PostgreSQL server. Unset: Headend runs its own cluster in `data_dir/pg`.
    pub url: Option<Secret>,
    /// A read replica for dashboards and CSV exports (`HEADEND_DATABASE_READ_URL`). Unset: they
    /// read from `url`. Everything that writes, or must see its own write, uses `url`.
    pub read_url: Option<Secret>,
    pub max_connections: u32,
    /// Where the PostgreSQL server binaries are, when they are in none of the usual places.
    pub pg_bindir: Option<PathBuf>,
    /// Extra `postgresql.conf` settings for the embedded cluster.
    pub embedded_settings: Vec<(String, String)>,
    /// Tests only: skip fsync in the embedded cluster. Never for real data.
    pub embedded_unsafe_fast: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Plain MQTT listener of the embedded broker's front door.
    pub addr: SocketAddr,
    /// MQTTS listener, active when `tls_cert` and `tls_key` are set.
    pub tls_addr: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// When set, MQTTS clients must present a certificate signed by this CA (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Attach to an external broker (`mqtt://user:password@host:1883`) instead of embedding one.
    pub external_url: Option<Secret>,
    /// Subscription used on an external broker; `$share/<group>/...` lets instances share load.
    pub external_filter: String,
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    /// PUBLISH packets of one connection that may wait on the journal before the gate stops
    /// reading from it: with `max_payload_bytes`, what one gateway can pin in memory.
    pub max_in_flight: usize,
    /// Bytes of the in-memory log the embedded broker keeps per topic, in each of its two
    /// segments (a segment always takes one more message, however large). Only command topics
    /// have subscribers; readings are in the journal already, so this stays small: every
    /// topic of every gateway has such a log.
    pub broker_topic_log_bytes: usize,
    /// Trusted proxies (networks, `127.0.0.1/32`) whose connections to both MQTT listeners must
    /// start with a PROXY protocol header (v1/v2), whose client address replaces theirs; empty: off.
    pub proxy_protocol_from: Vec<headend_mqtt_gate::IpNet>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Concurrent database writers draining the journal.
    pub writers: usize,
    /// Largest number of messages committed in one transaction.
    pub batch_max_messages: usize,
    /// How long a writer with a batch short of `batch_max_messages` waits for more messages
    /// before committing it: fewer, larger transactions at moderate rates, for some latency
    /// (the gateways' PUBACK does not wait for it; it comes once the journal holds the
    /// message). 0 (the default) to 1000; docs/benchmarks/ingest.md has the trade-off.
    pub batch_linger_ms: u64,
    /// Time zone of a new gateway that is not assigned to a site (IANA name; an unknown one is
    /// refused when the configuration is read, naming this key).
    pub default_time_zone: TimeZone,
    /// A `local_time` further ahead of the receive time than this is a clock fault.
    pub clock_tolerance_secs: u64,
    /// Disk budget of the journal; when full, gateways are not acknowledged (they keep their data).
    pub journal_max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC key for session tokens. Unset: generated once into `data_dir/jwt.key`.
    pub jwt_secret: Option<Secret>,
    pub token_ttl_secs: u64,
}

/// MiSmart XML push over TCP (`docs/xml-push.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct XmlPushConfig {
    /// Listener address; unset: no XML push listener.
    pub addr: Option<SocketAddr>,
    /// TLS on that listener, when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// When set, TLS clients must present a certificate signed by this CA.
    pub tls_client_ca: Option<PathBuf>,
    pub max_connections: usize,
    /// A connection silent for this long is closed.
    pub idle_timeout_secs: u64,
    /// An acknowledgement the peer does not take within this is the last one written to it
    /// (its documents are still stored).
    pub write_timeout_secs: u64,
    /// Trusted proxies whose connections must start with a PROXY protocol header; the source
    /// is then identified by the header's address. Empty: off.
    pub proxy_protocol_from: Vec<headend_mqtt_gate::IpNet>,
}

impl Default for XmlPushConfig {
    fn default() -> Self {
        Self {
            addr: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_connections: 1_000,
            idle_timeout_secs: 900,
            write_timeout_secs: 10,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[alarms]`: where notifications go and how they are retried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmsConfig {
    /// SMTP relay for alarm e-mails. Unset: e-mails wait in the outbox until one is configured.
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `starttls` (default, port 587), `tls` (implicit, port 465) or `none` (a local relay only;
    /// credentials are never sent without TLS).
    pub smtp_tls: String,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<Secret>,
    pub smtp_from: String,
    /// Extra CA certificate (PEM) trusted for SMTP and webhooks beside the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// HMAC-SHA256 key of webhook signatures (at least 32 characters). Unset: webhooks wait in
    /// the outbox; they are never sent unsigned.
    pub webhook_secret: Option<Secret>,
    /// First retry delay; doubled per attempt up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// After this many attempts a notification is marked failed (kept, in the alarm's history).
    pub max_attempts: u32,
    /// Timeout of one SMTP session or webhook request.
    pub send_timeout_secs: u64,
    /// How often offline, no-data, clock-skew and reject rules are evaluated, and escalations
    /// checked.
    pub timer_period_secs: u64,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: "starttls".into(),
            smtp_user: None,
            smtp_password: None,
            smtp_from: "headend@localhost".into(),
            tls_ca_file: None,
            webhook_secret: None,
            retry_base_secs: 10,
            retry_max_secs: 900,
            max_attempts: 50,
            send_timeout_secs: 30,
            timer_period_secs: 10,
        }
    }
}

impl AlarmsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if crate::alarms::smtp::TlsMode::parse(&self.smtp_tls).is_none() {
            return Err(format!(
                "alarms.smtp_tls {:?} is not starttls, tls or none",
                self.smtp_tls
            ));
        }
        if self.smtp_user.is_some() != self.smtp_password.is_some() {
            return Err("alarms.smtp_user and alarms.smtp_password go together".into());
        }
        if self.smtp_user.is_some() && self.smtp_tls == "none" {
            return Err("alarms.smtp_user needs alarms.smtp_tls = starttls or tls".into());
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 32)
        {
            return Err("alarms.webhook_secret must be at least 32 characters".into());
        }
        if self.retry_base_secs == 0 && self.retry_max_secs == 0
            || self.max_attempts == 0
            || self.timer_period_secs == 0
            || self.send_timeout_secs == 0
        {
            return Err(
                "alarms: retries, attempts, send timeout and timer period must be positive".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info,headend=debug`.
    pub filter: String,
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("headend-data"),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            mqtt: MqttConfig::default(),
            ingest: IngestConfig::default(),
            energy: EnergyConfig::default(),
            commands: CommandsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            modbus: crate::modbus::config::ModbusConfig::default(),
            xml_push: XmlPushConfig::default(),
            alarms: AlarmsConfig::default(),
            cluster: ClusterConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
            northbound: northbound::NorthboundConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: ([127, 0, 0, 1], 8080).into(),
            max_body_bytes: 1024 * 1024,
            secure_cookies: false,
            metrics_token: None,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            read_url: None,
            max_connections: 16,
            pg_bindir: None,
            embedded_settings: Vec::new(),
            embedded_unsafe_fast: false,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            addr: ([0, 0, 0, 0], 1883).into(),
            tls_addr: ([0, 0, 0, 0], 8883).into(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            external_url: None,
            external_filter: "sg/+/pub/#".into(),
            max_payload_bytes: sg_wire::MAX_PAYLOAD_BYTES,
            max_connections: 10_000,
            max_in_flight: headend_mqtt_gate::GateConfig::DEFAULT_MAX_IN_FLIGHT,
            broker_topic_log_bytes: crate::mqtt::DEFAULT_TOPIC_LOG_BYTES,
            proxy_protocol_from: Vec::new(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            writers: 2,
            batch_max_messages: 2_000,
            batch_linger_ms: 0,
            default_time_zone: TimeZone::UTC,
            clock_tolerance_secs: 300,
            journal_max_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            token_ttl_secs: 12 * 3600,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            json: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A value that does not fit its key, an unknown key, or a file that is not TOML: `origin`
    /// is where it was written (`config file <path>` or `environment variable <NAME>`), `key`
    /// the dotted key (empty for a file that does not parse).
    #[error("{origin} is not valid: {}{reason}", key_prefix(key))]
    Value {
        origin: String,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.modbus.validate().map_err(ConfigError::Invalid)?;
        self.alarms.validate().map_err(ConfigError::Invalid)?;
        self.northbound.validate().map_err(ConfigError::Invalid)?;
        if self.ingest.writers == 0 || self.ingest.batch_max_messages == 0 {
            return Err(ConfigError::Invalid(
                "ingest.writers and ingest.batch_max_messages must be at least 1".into(),
            ));
        }
        if self.ingest.batch_linger_ms > 1_000 {
            return Err(ConfigError::Invalid(
                "ingest.batch_linger_ms is at most 1000 (readings would wait a second to commit)"
                    .into(),
            ));
        }
        if self.mqtt.tls_cert.is_some() != self.mqtt.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "mqtt.tls_cert and mqtt.tls_key go together: set both to enable MQTTS, or neither"
                    .into(),
            ));
        }
        if self.xml_push.tls_cert.is_some() != self.xml_push.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "xml_push.tls_cert and xml_push.tls_key go together: set both for TLS, or neither"
                    .into(),
            ));
        }
        if let Some(token) = &self.http.metrics_token {
            if token.expose().len() < 16 {
                return Err(ConfigError::Invalid(
                    "http.metrics_token (HEADEND_METRICS_TOKEN) must be at least 16 characters; generate one with `openssl rand -hex 24`".into(),
                ));
            }
        }
        if let Some(secret) = &self.auth.jwt_secret {
            if secret.expose().len() < 32 {
                return Err(ConfigError::Invalid(
                    "auth.jwt_secret must be at least 32 characters; or leave it unset and Headend generates one into its data directory".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn clock_tolerance(&self) -> Duration {
        Duration::from_secs(self.ingest.clock_tolerance_secs)
    }

    /// The annotated default configuration, printed by `headend default-config`.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::default()).unwrap_or_default();
        let mut names = String::new();
        let mut line = String::from("#");
        for (name, key) in load::NAMES {
            let item = format!(" {name} ({key}),");
            if line.len() + item.len() > 98 {
                names.push_str(&line);
                names.push('\n');
                line = String::from("#");
            }
            line.push_str(&item);
        }
        names.push_str(line.trim_end_matches(','));
        format!(
            "# Headend configuration. Every value shown is the default.\n\
             # Environment variables override the file: HEADEND_<SECTION>__<KEY> sets any key\n\
             # (HEADEND_ALARMS__SMTP_HOST sets alarms.smtp_host), and so do these names:\n\
             {names}.\n\
             # Secrets have no defaults: database.url (unset = embedded PostgreSQL),\n\
             # mqtt.external_url (unset = embedded broker), auth.jwt_secret (unset = generated\n\
             # into the data directory on first start), alarms.smtp_password, alarms.webhook_secret\n\
             # (unset = webhooks wait in the outbox, never sent unsigned), http.metrics_token\n\
             # (unset = only admins read /metrics), northbound.brokers[].password (keep this\n\
             # file 0600 when it holds one).\n\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips() {
        let text = Config::default_toml();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed.http.addr, Config::default().http.addr);
    }

    #[test]
    fn the_sample_deployment_config_is_valid() {
        let config: Config = toml::from_str(include_str!("../../../deploy/headend.toml")).unwrap();
        config.validate().unwrap();
        assert!(config.http.secure_cookies);
        assert_eq!(config.ingest.default_time_zone, "Europe/Ljubljana");
    }

    #[test]
    fn trusted_proxies_are_networks_from_the_environment_or_the_file() {
        let var = "HEADEND_MQTT__PROXY_PROTOCOL_FROM";
        let config = Config::load_from(None, [(var, "[127.0.0.1/32, 2001:db8::/64]")]).unwrap();
        let shown = format!("{:?}", config.mqtt.proxy_protocol_from);
        assert_eq!(shown, "[127.0.0.1/32, 2001:db8::/64]");
        assert!(Config::load_from(None, [(var, "[127.0.0.1]")]).is_err());
        let file = "[xml_push]\nproxy_protocol_from = [\"10.0.0.0/8\"]";
        let file: Config = toml::from_str(file).unwrap();
        assert_eq!(
            format!("{:?}", file.xml_push.proxy_protocol_from),
            "[10.0.0.0/8]"
        );
        assert!(Config::default().mqtt.proxy_protocol_from.is_empty());
    }

    #[test]
    fn a_linger_of_more_than_a_second_is_refused_naming_the_key() {
        let mut config = Config::default();
        config.ingest.batch_linger_ms = 1_000;
        config.validate().unwrap();
        config.ingest.batch_linger_ms = 1_001;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ingest.batch_linger_ms"), "{err}");
    }

    #[test]
    fn short_jwt_secret_is_refused_with_a_fix() {
        let mut config = Config::default();
        config.auth.jwt_secret = Some(Secret::new("short"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
    }
}
