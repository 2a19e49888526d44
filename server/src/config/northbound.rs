//! `[northbound]`: the external brokers Headend may publish sites to (Home Assistant MQTT
//! discovery, `crate::northbound`). Which site goes to which broker is data (an admin picks a
//! broker by name per site); the brokers and their credentials are configuration, so a
//! password never enters the database.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NorthboundConfig {
    /// How often the publisher reads the sites' settings and their newest values, and
    /// publishes what changed (seconds).
    pub interval_secs: u64,
    /// The brokers an admin may pick for a site.
    pub brokers: Vec<BrokerConfig>,
}

impl Default for NorthboundConfig {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            brokers: Vec::new(),
        }
    }
}

/// One `[[northbound.brokers]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// What admins pick (letters, digits, `.`, `_`, `-`; at most 64).
    pub name: String,
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`; credentials go in the fields below.
    pub url: String,
    pub username: Option<String>,
    /// No default: unset means the broker is used without a password.
    pub password: Option<Secret>,
    /// Extra CA certificate (PEM) trusted for this `mqtts://` broker beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Prefix of the MQTT client id (one client per site: `<prefix>-site<id>`).
    #[serde(default = "default_client_prefix")]
    pub client_id_prefix: String,
}

fn default_client_prefix() -> String {
    "headend".into()
}

/// Where a broker is, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerConfig {
    pub fn address(&self) -> Result<BrokerAddress, String> {
        let bad = || {
            format!(
                "northbound broker {:?}: url must be mqtt://host[:port] or mqtts://host[:port] (credentials go in username and password)",
                self.name
            )
        };
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['@', '/', '?', '#']) || rest.is_empty() {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                (host, port.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl NorthboundConfig {
    pub fn broker(&self, name: &str) -> Option<&BrokerConfig> {
        self.brokers.iter().find(|b| b.name == name)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.interval_secs == 0 || self.interval_secs > 3600 {
            return Err("northbound.interval_secs is 1 to 3600".into());
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let name_ok = !b.name.is_empty()
                && b.name.len() <= 64
                && b.name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
            if !name_ok {
                return Err(format!(
                    "northbound.brokers[{i}].name {:?}: 1 to 64 letters, digits, '.', '_' or '-'",
                    b.name
                ));
            }
            if self.brokers[..i].iter().any(|o| o.name == b.name) {
                return Err(format!("northbound broker {:?} is declared twice", b.name));
            }
            let address = b.address()?;
            if b.password.is_some() && b.username.is_none() {
                return Err(format!(
                    "northbound broker {:?}: a password needs a username",
                    b.name
                ));
            }
            if b.ca_file.is_some() && !address.tls {
                return Err(format!(
                    "northbound broker {:?}: ca_file needs an mqtts:// url",
                    b.name
                ));
            }
            let prefix_ok = !b.client_id_prefix.is_empty()
                && b.client_id_prefix.len() <= 40
                && b.client_id_prefix
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-".contains(&c));
            if !prefix_ok {
                return Err(format!(
                    "northbound broker {:?}: client_id_prefix is 1 to 40 letters, digits, '_' or '-'",
                    b.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(url: &str) -> BrokerConfig {
        BrokerConfig {
            name: "ha".into(),
            url: url.into(),
            username: None,
            password: None,
            ca_file: None,
            client_id_prefix: default_client_prefix(),
        }
    }

    #[test]
    fn broker_urls() {
        let a = broker("mqtt://ha.local").address().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("ha.local", 1883, false));
        let a = broker("mqtts://10.0.0.2:8884/").address().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("10.0.0.2", 8884, true));
        for bad in [
            "http://x",
            "mqtt://u:p@host",
            "mqtt://",
            "mqtt://host:0",
            "mqtt://host:x",
        ] {
            assert!(broker(bad).address().is_err(), "{bad}");
        }
    }

    #[test]
    fn brokers_are_validated_and_secrets_redacted() {
        let text = r#"
            [[brokers]]
            name = "home"
            url = "mqtt://127.0.0.1:1883"
            username = "headend"
            password = "s3cret"
        "#;
        let config: NorthboundConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(config.broker("home").unwrap().client_id_prefix, "headend");
        let mut twice = config.clone();
        twice.brokers.push(config.brokers[0].clone());
        assert!(twice.validate().unwrap_err().contains("twice"));
        let mut bad = config.clone();
        bad.brokers[0].name = "a/b".into();
        assert!(bad.validate().is_err());
        let mut no_user = config;
        no_user.brokers[0].username = None;
        assert!(no_user.validate().unwrap_err().contains("username"));
    }
}
