//! `[modbus]` in the configuration: polling defaults, extra register maps, and converters
//! declared in the file (applied at start as an upsert, so a file is one way to configure them).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Poll converters at all.
    pub enabled: bool,
    /// Extra register maps (`*.toml`), beside the built-in ones.
    pub maps_dir: Option<std::path::PathBuf>,
    /// Per-request timeout: the seeds say meters answer within 200 ms.
    pub timeout_ms: u64,
    /// Extra silence between the end of one reply and the next request on a bus. The
    /// converter keeps the RTU inter-frame silence (3.5 characters) itself; set this for a
    /// converter or device that needs more.
    pub gap_ms: u64,
    /// Extra attempts of a failed request to a device that answered its previous poll.
    pub retries: u32,
    /// A failing device (or an unreachable converter) is retried after this, doubling...
    pub backoff_min_ms: u64,
    /// ...up to this.
    pub backoff_max_ms: u64,
    /// Poll interval of a device that does not set its own.
    pub default_poll_interval_ms: u64,
    pub converters: Vec<ConverterConfig>,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            maps_dir: None,
            timeout_ms: 200,
            gap_ms: 0,
            retries: 1,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
            default_poll_interval_ms: 10_000,
            converters: Vec::new(),
        }
    }
}

/// A converter declared in the configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConverterConfig {
    /// Its name, also its gateway serial: 1 to 32 of A-Z a-z 0-9 - _ .
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Site name; the converter is on no site when absent.
    pub site: Option<String>,
    pub gap_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub retries: Option<u8>,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

fn default_port() -> u16 {
    502
}

/// A device behind a configured converter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub unit: u8,
    /// Register map name.
    pub model: String,
    /// `meter` (default) or `relay`.
    #[serde(default = "default_kind")]
    pub kind: String,
    pub poll_interval_ms: Option<u32>,
    #[serde(default)]
    pub serial: String,
}

fn default_kind() -> String {
    "meter".into()
}

impl ModbusConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err("modbus.timeout_ms must be between 1 and 60000".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err(
                "modbus.backoff_min_ms must be at least 1 and at most modbus.backoff_max_ms".into(),
            );
        }
        if self.default_poll_interval_ms < 100 {
            return Err("modbus.default_poll_interval_ms must be at least 100".into());
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.converters {
            if !names.insert(c.name.as_str()) {
                return Err(format!(
                    "modbus.converters: the name {:?} is used twice",
                    c.name
                ));
            }
            let mut units = std::collections::HashSet::new();
            for d in &c.devices {
                if !(1..=247).contains(&d.unit) || !units.insert(d.unit) {
                    return Err(format!(
                        "modbus.converters {:?}: unit {} is outside 1..247 or used twice",
                        c.name, d.unit
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converters_parse_from_toml() {
        let config: ModbusConfig = toml::from_str(
            r#"
            timeout_ms = 250
            [[converters]]
            name = "cv-1"
            host = "10.0.0.5"
            site = "Plant"
            [[converters.devices]]
            unit = 6
            model = "legrand-emdx3"
            poll_interval_ms = 5000
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.timeout_ms, 250);
        assert_eq!(config.converters[0].port, 502);
        assert_eq!(config.converters[0].devices[0].kind, "meter");
    }

    #[test]
    fn duplicate_units_are_refused() {
        let mut config = ModbusConfig::default();
        config.converters.push(ConverterConfig {
            name: "a".into(),
            host: "h".into(),
            port: 502,
            site: None,
            gap_ms: None,
            timeout_ms: None,
            retries: None,
            devices: vec![
                DeviceConfig {
                    unit: 3,
                    model: "m".into(),
                    kind: "meter".into(),
                    poll_interval_ms: None,
                    serial: String::new(),
                };
                2
            ],
        });
        assert!(config.validate().unwrap_err().contains("unit 3"));
    }
}
