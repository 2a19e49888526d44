//! Home Assistant MQTT discovery: what one site's snapshot becomes on the broker.
//!
//! Per Home Assistant's documented schema (integrations/mqtt: sensor, binary_sensor, switch,
//! the shared `device`, `origin` and `availability` blocks): every gateway is a device with a
//! connectivity `binary_sensor`; every meter a device (`via_device` its gateway) with `power`,
//! `voltage` and `current` sensors where measured (`state_class: measurement`) and its active
//! import and export registers as `energy` sensors in kWh (`state_class: total_increasing`);
//! every relay a `switch` whose state is the relay's *reported* state. Discovery configs and
//! states are retained, so Home Assistant finds them after its own restart; commands never are.

use serde_json::{json, Map, Value};

use super::snapshot::{Device, Gateway, Meter, Relay, Snapshot};
use super::topics::{slug, SiteTopics};
use crate::accounting::roles::Role;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    /// A discovery config (removed with an empty retained payload when its entity goes).
    pub config: bool,
}

pub const ON: &str = "ON";
pub const OFF: &str = "OFF";

/// Everything the site publishes (configs and states), in a stable order.
pub fn messages(topics: &SiteTopics, commands: bool, snapshot: &Snapshot) -> Vec<Message> {
    let mut out = Vec::new();
    for gateway in &snapshot.gateways {
        gateway_messages(topics, gateway, &mut out);
    }
    for meter in &snapshot.meters {
        meter_messages(topics, meter, &mut out);
    }
    for relay in &snapshot.relays {
        relay_messages(topics, commands, relay, &mut out);
    }
    out
}

/// The key of a device in topics and unique ids: `<gateway slug>_<port><slot>`.
pub fn device_key(device: &Device) -> String {
    format!(
        "{}_{}{}",
        slug(&device.gateway_serial),
        slug(&device.port),
        device.slot
    )
}

fn gateway_id(serial: &str) -> String {
    format!("headend_gw_{}", slug(serial))
}

fn gateway_online_topic(topics: &SiteTopics, serial: &str) -> String {
    topics.state("gateway", &slug(serial), "online")
}

fn origin() -> Value {
    json!({ "name": "Headend", "sw_version": env!("CARGO_PKG_VERSION") })
}

/// Text from a device, cut to what Home Assistant shows.
fn text(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

fn gateway_messages(topics: &SiteTopics, gateway: &Gateway, out: &mut Vec<Message>) {
    let id = gateway_id(&gateway.serial);
    let mut device = Map::new();
    device.insert("identifiers".into(), json!([id]));
    device.insert(
        "name".into(),
        json!(format!("Gateway {}", text(&gateway.serial))),
    );
    device.insert("manufacturer".into(), json!("Iskra"));
    device.insert(
        "model".into(),
        json!(text(gateway.model.as_deref().unwrap_or("SG gateway"))),
    );
    device.insert("serial_number".into(), json!(text(&gateway.serial)));
    if let Some(v) = &gateway.firmware_version {
        device.insert("sw_version".into(), json!(text(v)));
    }
    let state_topic = gateway_online_topic(topics, &gateway.serial);
    let config = json!({
        "name": "Connectivity",
        "unique_id": format!("{id}_online"),
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "state_topic": state_topic,
        "payload_on": ON,
        "payload_off": OFF,
        "availability_topic": topics.availability(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": origin(),
    });
    out.push(config_message(
        topics.discovery("binary_sensor", &id, "online"),
        &config,
    ));
    out.push(state(state_topic, if gateway.online { ON } else { OFF }));
}

/// The device block of a meter or relay, and its availability (the site's link and its
/// gateway's session: a value from a gateway that is offline is not current).
fn device_block(
    topics: &SiteTopics,
    device: &Device,
    kind: &str,
    fallback: &str,
) -> (Value, Value) {
    let key = device_key(device);
    let name = device
        .name
        .as_deref()
        .or(device.description.as_deref())
        .filter(|n| !n.trim().is_empty())
        .map(text)
        .unwrap_or_else(|| {
            let model = device.model.as_deref().unwrap_or(fallback);
            if device.serial.is_empty() {
                text(&format!("{model} {} {}", device.port, device.slot))
            } else {
                text(&format!("{model} {}", device.serial))
            }
        });
    let mut block = Map::new();
    block.insert(
        "identifiers".into(),
        json!([format!("headend_{key}_{kind}")]),
    );
    block.insert("name".into(), json!(name));
    block.insert("manufacturer".into(), json!("Iskra"));
    block.insert(
        "model".into(),
        json!(text(device.model.as_deref().unwrap_or(fallback))),
    );
    if !device.serial.is_empty() {
        block.insert("serial_number".into(), json!(text(&device.serial)));
    }
    block.insert(
        "via_device".into(),
        json!(gateway_id(&device.gateway_serial)),
    );
    let availability = json!([
        { "topic": topics.availability(), "payload_available": "online", "payload_not_available": "offline" },
        { "topic": gateway_online_topic(topics, &device.gateway_serial), "payload_available": ON, "payload_not_available": OFF },
    ]);
    (Value::Object(block), availability)
}

struct Quantity {
    what: &'static str,
    name: &'static str,
    class: &'static str,
    unit: &'static str,
    precision: u8,
}

const fn q(
    what: &'static str,
    name: &'static str,
    class: &'static str,
    unit: &'static str,
    precision: u8,
) -> Quantity {
    Quantity {
        what,
        name,
        class,
        unit,
        precision,
    }
}

fn meter_messages(topics: &SiteTopics, meter: &Meter, out: &mut Vec<Message>) {
    let key = device_key(&meter.device);
    let (device, availability) = device_block(topics, &meter.device, "meter", "Meter");
    let m = &meter.measured;
    let instant = [
        (q("power", "Power", "power", "W", 0), m.p),
        (q("voltage_l1", "Voltage L1", "voltage", "V", 1), m.u1),
        (q("voltage_l2", "Voltage L2", "voltage", "V", 1), m.u2),
        (q("voltage_l3", "Voltage L3", "voltage", "V", 1), m.u3),
        (q("current_l1", "Current L1", "current", "A", 2), m.i1),
        (q("current_l2", "Current L2", "current", "A", 2), m.i2),
        (q("current_l3", "Current L3", "current", "A", 2), m.i3),
        (
            q("frequency", "Frequency", "frequency", "Hz", 2),
            m.frequency,
        ),
    ];
    let mut sensor = |quantity: &Quantity, state_class: &str, value: String| {
        let state_topic = topics.state("meter", &key, quantity.what);
        let config = json!({
            "name": quantity.name,
            "unique_id": format!("headend_{key}_meter_{}", quantity.what),
            "state_topic": state_topic,
            "device_class": quantity.class,
            "unit_of_measurement": quantity.unit,
            "state_class": state_class,
            "suggested_display_precision": quantity.precision,
            "availability": availability,
            "availability_mode": "all",
            "device": device,
            "origin": origin(),
        });
        out.push(config_message(
            topics.discovery(
                "sensor",
                &format!("headend_{key}"),
                &format!("meter_{}", quantity.what),
            ),
            &config,
        ));
        out.push(state(state_topic, &value));
    };
    for (quantity, value) in &instant {
        // Only what this meter measures (a single-phase meter has no L2, L3).
        if let Some(v) = value.filter(|v| v.is_finite()) {
            sensor(quantity, "measurement", v.to_string());
        }
    }
    for (role, value) in &meter.energy {
        let quantity = match role {
            Role::Import => q("energy_import", "Energy import", "energy", "kWh", 3),
            _ => q("energy_export", "Energy export", "energy", "kWh", 3),
        };
        // A register never read yet: Home Assistant's "unknown".
        let value = value.map_or_else(|| "None".to_owned(), kwh);
        sensor(&quantity, "total_increasing", value);
    }
}

/// Milli-watt-hours as exact decimal kilowatt-hours (no floating point: energy is exact).
pub fn kwh(milli: i64) -> String {
    let sign = if milli < 0 { "-" } else { "" };
    let m = milli.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

fn relay_messages(topics: &SiteTopics, commands: bool, relay: &Relay, out: &mut Vec<Message>) {
    let key = device_key(&relay.device);
    let (device, availability) = device_block(topics, &relay.device, "relay", "Relay");
    let state_topic = topics.state("relay", &key, "state");
    let unique_id = format!("headend_{key}_relay");
    let node = format!("headend_{key}");
    let config = if commands {
        json!({
            "name": null,
            "unique_id": unique_id,
            "device_class": "switch",
            "state_topic": state_topic,
            "command_topic": topics.command(&key),
            "payload_on": ON,
            "payload_off": OFF,
            "state_on": ON,
            "state_off": OFF,
            "optimistic": false,
            "retain": false,
            "qos": 1,
            "availability": availability,
            "availability_mode": "all",
            "device": device,
            "origin": origin(),
        })
    } else {
        json!({
            "name": null,
            "unique_id": unique_id,
            "device_class": "power",
            "state_topic": state_topic,
            "payload_on": ON,
            "payload_off": OFF,
            "availability": availability,
            "availability_mode": "all",
            "device": device,
            "origin": origin(),
        })
    };
    let (component, other) = if commands {
        ("switch", "binary_sensor")
    } else {
        ("binary_sensor", "switch")
    };
    out.push(config_message(
        topics.discovery(component, &node, "relay"),
        &config,
    ));
    // The other component's config, if an earlier setting published it, goes away.
    out.push(Message {
        topic: topics.discovery(other, &node, "relay"),
        payload: String::new(),
        config: false,
    });
    let shown = match relay.state {
        Some(1) => ON,
        Some(0) => OFF,
        // Unknown or never reported: Home Assistant's "unknown", never a guess.
        _ => "None",
    };
    out.push(state(state_topic, shown));
}

fn config_message(topic: String, config: &Value) -> Message {
    Message {
        topic,
        payload: config.to_string(),
        config: true,
    }
}

fn state(topic: String, payload: &str) -> Message {
    Message {
        topic,
        payload: payload.to_owned(),
        config: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::Measured;
    use super::*;

    fn device(serial: &str) -> Device {
        Device {
            id: 7,
            gateway_id: 1,
            gateway_serial: "SG1".into(),
            port: "ir".into(),
            slot: 0,
            serial: serial.into(),
            model: Some("IE38MD".into()),
            name: None,
            description: None,
        }
    }

    #[test]
    fn energy_is_exact_kwh() {
        assert_eq!(kwh(0), "0.000000");
        assert_eq!(kwh(200_000), "0.200000");
        assert_eq!(kwh(12_345_678_901), "12345.678901");
        assert_eq!(kwh(-1), "-0.000001");
    }

    #[test]
    fn a_meter_has_only_what_it_measures_and_hostile_serials_stay_in_json() {
        let topics = SiteTopics {
            discovery_prefix: "homeassistant".into(),
            base: "headend/plant".into(),
        };
        let snapshot = Snapshot {
            gateways: vec![],
            meters: vec![Meter {
                device: device("x/+#\"\u{0}"),
                measured: Measured {
                    p: Some(2815.0),
                    u1: Some(229.5),
                    ..Measured::default()
                },
                energy: vec![(Role::Import, Some(200_000))],
            }],
            relays: vec![],
        };
        let all = messages(&topics, true, &snapshot);
        let configs: Vec<_> = all.iter().filter(|m| m.config).collect();
        assert_eq!(configs.len(), 3, "{all:#?}");
        for m in &all {
            assert!(!m.topic.contains(['+', '#', '\0']), "{}", m.topic);
        }
        let energy: Value = serde_json::from_str(&configs[2].payload).unwrap();
        assert_eq!(energy["state_class"], "total_increasing");
        assert_eq!(energy["unit_of_measurement"], "kWh");
        assert_eq!(energy["device"]["serial_number"], "x/+#\"");
        assert!(all.iter().any(|m| m.payload == "0.200000"));
    }
}
