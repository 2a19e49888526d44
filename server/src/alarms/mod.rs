//! Alarms: rules that watch what Headend receives, and tell the right people once.
//!
//! ```text
//! ingest writer ──commit──▶ feed (measurements) ─┐
//! timers (offline, no data, skew, rejects) ──────┼─▶ engine: rules::step per (rule, subject)
//!                                                │     state ──▶ alarm_rule_states
//!                                                ▼     raise/clear ──▶ lifecycle (one tx):
//!                                        alarms, alarm_events, alarm_outbox
//! outbox sender ── e-mail (SMTP) / webhook (HMAC) / MQTT / relay ledger ──▶ marked sent
//! ```
//!
//! - [`rules`]: the pure state machine (conditions, hysteresis, delays, active hours).
//! - [`store`]: rule definitions (validation, CRUD, site scope) and the alarm read side.
//! - [`engine`]: the evaluator task, fed as data arrives; state persisted when it changes.
//! - [`lifecycle`]: raise, clear, acknowledge, shelve, escalate; history rows and outbox rows
//!   written in the same transaction as the change.
//! - [`timers`]: rules on last-seen times, evaluated on a timer; escalation.
//! - [`outbox`], [`smtp`], [`webhook`]: delivery with retries and backoff.

pub mod engine;
pub mod lifecycle;
pub mod outbox;
pub mod rules;
pub mod smtp;
pub mod store;
pub mod timers;
pub mod webhook;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the web layer needs to tell the alarm tasks.
#[derive(Clone)]
pub struct AlarmsHandle {
    /// Rules were created, changed or deleted: the engine reloads them.
    pub rules_changed: Arc<tokio::sync::Notify>,
    /// New outbox rows (an acknowledgement, a manual action): the sender looks now.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Rule changes asked for, and the last one the engine has loaded: a rule edit returns
    /// once the engine applies it, so a sample that arrives after the answer is judged by it.
    requested: Arc<std::sync::atomic::AtomicU64>,
    loaded: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for AlarmsHandle {
    fn default() -> Self {
        Self {
            rules_changed: Arc::default(),
            outbox_wake: Arc::default(),
            requested: Arc::default(),
            loaded: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl AlarmsHandle {
    /// Tells the engine the rules changed and waits (at most `timeout`) until it reloaded them.
    pub async fn rules_changed_and_loaded(&self, timeout: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let version = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut loaded = self.loaded.subscribe();
        self.rules_changed.notify_one();
        if tokio::time::timeout(timeout, loaded.wait_for(|v| *v >= version))
            .await
            .is_err()
        {
            tracing::warn!("the alarm engine did not reload the rules in time; it will shortly");
        }
    }

    /// For the engine: the newest change request, read before loading.
    pub(crate) fn requested(&self) -> u64 {
        self.requested.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// For the engine: rules as of `version` are loaded.
    pub(crate) fn loaded(&self, version: u64) {
        self.loaded.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// What a rule watches. Timer kinds are evaluated every `alarms.timer_period_secs` with the
/// value named below; every kind goes through the same condition (above, below, band).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Watch {
    /// An instantaneous quantity of a meter: a `measurements` column (u1, p, pf, thd_u1,
    /// frequency, temperature, ...), in SI units, as data arrives.
    Measurement { quantity: String },
    /// Seconds the meter's gateway has been offline (0 while online).
    GatewayOffline,
    /// Seconds since the meter's newest measurement or counter reading (no data for N
    /// intervals: N × interval).
    NoData,
    /// A meter polled over Modbus that does not answer: seconds since its last good poll while
    /// its polls fail (0 while it answers). Meters pushed by gateways are not covered (use
    /// `no_data` for them).
    NotAnswering,
    /// The gateway's clock skew in seconds, absolute.
    ClockSkew,
    /// Messages of the gateway rejected by ingest within the last `window_s` seconds.
    Rejects {
        #[schema(minimum = 60, maximum = 86400)]
        window_s: u32,
    },
    /// The meter's import energy in its newest quarter-hour, Wh (from the profile worker's
    /// intervals; each quarter-hour is judged once, at its end).
    #[serde(rename = "energy_15min")]
    Energy15,
    /// The meter's mean import power over its newest quarter-hour, W.
    #[serde(rename = "mean_power_15min")]
    MeanPower15,
    /// The site's demand: mean import power of the site total over its newest quarter-hour, W
    /// (the threshold is the contracted limit).
    PeakDemand,
}

impl Watch {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Measurement { quantity } if measurement_column(quantity).is_none() => {
                return Err(format!(
                    "unknown quantity {quantity:?}; use one of {}",
                    crate::ingest::normalize::MEASUREMENT_COLUMNS.join(", ")
                ));
            }
            Self::Rejects { window_s } if !(60..=86_400).contains(window_s) => {
                return Err("window_s is 60 to 86400 seconds".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// Evaluated per gateway rather than per meter.
    pub fn per_gateway(&self) -> bool {
        matches!(
            self,
            Self::GatewayOffline | Self::ClockSkew | Self::Rejects { .. }
        )
    }

    pub fn label(&self) -> String {
        match self {
            Self::Measurement { quantity } => quantity.clone(),
            Self::GatewayOffline => "seconds offline".into(),
            Self::NoData => "seconds without data".into(),
            Self::NotAnswering => "seconds not answering".into(),
            Self::ClockSkew => "clock skew (s)".into(),
            Self::Rejects { window_s } => format!("rejected messages in {window_s} s"),
            Self::Energy15 => "quarter-hour energy (Wh)".into(),
            Self::MeanPower15 => "quarter-hour mean power (W)".into(),
            Self::PeakDemand => "site demand (W)".into(),
        }
    }
}

pub fn measurement_column(name: &str) -> Option<usize> {
    crate::ingest::normalize::MEASUREMENT_COLUMNS
        .iter()
        .position(|c| *c == name)
}

/// What happens when an alarm of the rule is raised and cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// E-mail recipients, on raise (and on clear when `notify_clear`).
    #[serde(default)]
    pub email: Vec<String>,
    /// Second recipient list when the alarm is still unacknowledged after `escalate_after_min`.
    #[serde(default)]
    pub escalate_to: Vec<String>,
    #[serde(default)]
    pub escalate_after_min: Option<u32>,
    /// JSON POST signed with HMAC-SHA256 (`alarms.webhook_secret`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Published on Headend's MQTT broker.
    #[serde(default)]
    pub mqtt_topic: Option<String>,
    #[serde(default = "yes")]
    pub notify_clear: bool,
    /// A relay of the rule's site switched off through the command ledger when raised.
    #[serde(default)]
    pub shed_relay: Option<i64>,
    /// Switch the shed relay back on when the alarm clears.
    #[serde(default)]
    pub restore_on_clear: bool,
}

fn yes() -> bool {
    true
}

const MAX_RECIPIENTS: usize = 20;

fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    a.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && a.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | ';' | '"' | '\\'))
}

impl Actions {
    pub fn validate(&self) -> Result<(), String> {
        for list in [&self.email, &self.escalate_to] {
            if list.len() > MAX_RECIPIENTS {
                return Err(format!("at most {MAX_RECIPIENTS} recipients per list"));
            }
            if let Some(bad) = list.iter().find(|a| !valid_address(a)) {
                return Err(format!("{bad:?} is not an e-mail address"));
            }
        }
        if self.escalate_after_min.is_some() == self.escalate_to.is_empty() {
            return Err("escalate_to and escalate_after_min go together".into());
        }
        if self
            .escalate_after_min
            .is_some_and(|m| !(1..=10_080).contains(&m))
        {
            return Err("escalate_after_min is 1 to 10080".into());
        }
        if let Some(url) = &self.webhook_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() <= 2000
                && url.chars().all(|c| c.is_ascii_graphic())
                && webhook::Target::parse(url).is_ok();
            if !ok {
                return Err("webhook_url must be an http:// or https:// URL".into());
            }
        }
        if let Some(topic) = &self.mqtt_topic {
            if topic.is_empty()
                || topic.len() > 200
                || topic.starts_with('$')
                || topic.contains(['+', '#', '\0'])
            {
                return Err(
                    "mqtt_topic is 1 to 200 characters, without wildcards or a leading $".into(),
                );
            }
        }
        if self.restore_on_clear && self.shed_relay.is_none() {
            return Err("restore_on_clear needs shed_relay".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_refuse_header_injection_and_bad_urls() {
        let ok = Actions {
            email: vec!["ops@example.com".into()],
            webhook_url: Some("https://hooks.example.com/alarm?x=1".into()),
            mqtt_topic: Some("headend/alarms".into()),
            ..Actions::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            "ops@example.com\r\nBcc: x@y.z",
            "no-at-sign",
            "a@b",
            "<a@b.c>",
        ] {
            let a = Actions {
                email: vec![bad.into()],
                ..Actions::default()
            };
            assert!(a.validate().is_err(), "{bad:?}");
        }
        for url in ["ftp://x.y/", "http://", "https://a b/"] {
            let a = Actions {
                webhook_url: Some(url.into()),
                ..Actions::default()
            };
            assert!(a.validate().is_err(), "{url:?}");
        }
        let a = Actions {
            mqtt_topic: Some("sg/+/sub".into()),
            ..Actions::default()
        };
        assert!(a.validate().is_err());
    }

    #[test]
    fn the_alarms_config_refuses_unsafe_or_inconsistent_settings() {
        use crate::config::{AlarmsConfig, Secret};
        assert!(AlarmsConfig::default().validate().is_ok());
        let bad = [
            AlarmsConfig {
                smtp_tls: "ssl".into(),
                ..AlarmsConfig::default()
            },
            AlarmsConfig {
                smtp_user: Some("u".into()),
                ..AlarmsConfig::default()
            },
            AlarmsConfig {
                smtp_user: Some("u".into()),
                smtp_password: Some(Secret::new("p")),
                smtp_tls: "none".into(),
                ..AlarmsConfig::default()
            },
            AlarmsConfig {
                webhook_secret: Some(Secret::new("short")),
                ..AlarmsConfig::default()
            },
            AlarmsConfig {
                max_attempts: 0,
                ..AlarmsConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        let shown = format!(
            "{:?}",
            AlarmsConfig {
                smtp_password: Some(Secret::new("hunter2")),
                ..AlarmsConfig::default()
            }
        );
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn watch_names_a_real_column() {
        assert!(Watch::Measurement {
            quantity: "u1".into()
        }
        .validate()
        .is_ok());
        assert!(Watch::Measurement {
            quantity: "u1; DROP TABLE".into()
        }
        .validate()
        .is_err());
        let w: Watch = serde_json::from_str(r#"{"kind":"rejects","window_s":900}"#).unwrap();
        assert!(w.per_gateway());
    }
}
