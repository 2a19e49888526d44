//! What the API, the pages and the configuration file ask of converters and their polled
//! devices, and the checks every such request passes before anything is written.

use serde::Deserialize;

use headend_modbus_map::RegisterMap;

use crate::modbus::{Maps, ModbusError};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConverter {
    /// Its name, which is also its gateway serial.
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub site_id: Option<i64>,
    pub gap_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub retries: Option<u8>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub devices: Vec<NewPolledDevice>,
}

/// Changes to a converter; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConverterPatch {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub gap_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub retries: Option<u8>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolledDevice {
    pub unit: i64,
    pub model: String,
    /// `meter` (default) or `relay`.
    pub kind: Option<String>,
    pub poll_interval_ms: Option<u32>,
    pub serial: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolledDevicePatch {
    pub model: Option<String>,
    pub poll_interval_ms: Option<u32>,
    pub serial: Option<String>,
    pub enabled: Option<bool>,
}

/// A host name or an IP address, without scheme, port or path.
pub(super) fn validate_host(host: &str) -> Result<(), ModbusError> {
    let ok = (1..=253).contains(&host.len())
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }));
    if ok {
        Ok(())
    } else {
        Err(ModbusError::Invalid(format!(
            "host {:?} must be a host name or an IP address (no scheme, port or path)",
            host.chars().take(64).collect::<String>()
        )))
    }
}

pub(super) fn validate_port(port: u16) -> Result<(), ModbusError> {
    if port == 0 {
        return Err(ModbusError::Invalid(
            "port must be between 1 and 65535".into(),
        ));
    }
    Ok(())
}

pub(super) fn validate_timing(
    gap_ms: Option<u32>,
    timeout_ms: Option<u32>,
    retries: Option<u8>,
) -> Result<(), ModbusError> {
    if gap_ms.is_some_and(|g| g > 10_000) {
        return Err(ModbusError::Invalid("gap_ms must be at most 10000".into()));
    }
    if timeout_ms.is_some_and(|t| !(10..=60_000).contains(&t)) {
        return Err(ModbusError::Invalid(
            "timeout_ms must be between 10 and 60000".into(),
        ));
    }
    if retries.is_some_and(|r| r > 5) {
        return Err(ModbusError::Invalid("retries must be at most 5".into()));
    }
    Ok(())
}

/// A device's settings, checked: unit, kind, known model, interval, serial.
pub(super) struct CheckedDevice {
    pub(super) unit: i16,
    pub(super) kind: &'static str,
    pub(super) model: String,
    pub(super) interval_ms: i32,
    pub(super) serial: String,
    pub(super) enabled: bool,
}

pub(super) fn check_device(
    d: &NewPolledDevice,
    maps: &Maps,
    default_interval_ms: u64,
) -> Result<CheckedDevice, ModbusError> {
    let unit = i16::try_from(d.unit)
        .ok()
        .filter(|u| (1..=247).contains(u))
        .ok_or_else(|| {
            ModbusError::Invalid(format!("unit {} must be between 1 and 247", d.unit))
        })?;
    let kind = match d.kind.as_deref().unwrap_or("meter") {
        "meter" => "meter",
        "relay" => "relay",
        other => {
            return Err(ModbusError::Invalid(format!(
                "kind {:?} must be meter or relay",
                other.chars().take(32).collect::<String>()
            )))
        }
    };
    let map = known_model(maps, &d.model)?;
    if kind == "relay" && !map.has_relay() {
        return Err(ModbusError::Invalid(format!(
            "model {:?} has no relay register: a relay needs a map with one",
            d.model
        )));
    }
    let interval = d.poll_interval_ms.map_or(default_interval_ms, u64::from);
    check_interval(interval)?;
    let serial = d.serial.clone().unwrap_or_default();
    check_serial(&serial)?;
    Ok(CheckedDevice {
        unit,
        kind,
        model: d.model.clone(),
        interval_ms: i32::try_from(interval).unwrap_or(i32::MAX),
        serial,
        enabled: d.enabled.unwrap_or(true),
    })
}

/// The register map of `model`; refused with the list of the known ones.
pub(super) fn known_model<'m>(maps: &'m Maps, model: &str) -> Result<&'m RegisterMap, ModbusError> {
    maps.get(model).ok_or_else(|| {
        ModbusError::Invalid(format!(
            "unknown model {:?}; known models: {}",
            model.chars().take(100).collect::<String>(),
            maps.names().join(", ")
        ))
    })
}

pub(super) fn check_interval(ms: u64) -> Result<(), ModbusError> {
    if !(100..=86_400_000).contains(&ms) {
        return Err(ModbusError::Invalid(
            "poll_interval_ms must be between 100 and 86400000".into(),
        ));
    }
    Ok(())
}

/// A polled device's serial: empty (none known), or the meter serial character set every
/// ingest path enforces (`sg_wire::message::validate_serial`): it ends up in URLs and forms.
pub(super) fn check_serial(serial: &str) -> Result<(), ModbusError> {
    if serial.is_empty() {
        return Ok(());
    }
    sg_wire::message::validate_serial(serial)
        .map(|_| ())
        .map_err(|_| ModbusError::Invalid(sg_wire::message::SERIAL_RULE.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in ["10.0.0.5", "::1", "converter-1.plant.example", "cv1"] {
            validate_host(ok).unwrap();
        }
        for bad in ["", "http://x", "a b", "host:502", "-x", "x/y", "<script>"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }
}
