//! The SG's JSON API as the Iskra client library `pyiskra` reads it (Home Assistant's `iskra`
//! integration): `GET /api` (the gateway), `GET /api/devices` (every position),
//! `GET /api/measurement/{i}` and `GET /api/counter/{i}` (one meter).
//!
//! Values come from the newest documents the gateway pushed, normalised by `sg_wire` exactly
//! as Headend normalises them, so Home Assistant and Headend see the same numbers for the
//! same instant. Every value is `{"value", "unit"}` in base units (V, A, W, var, VA, Hz, Wh,
//! varh, VAh): pyiskra takes the unit as given and Home Assistant declares unprefixed units.
//! A power factor is signed as in Headend (inductive positive, capacitive negative).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sg_gateway_core::config::{DeviceConfig, DeviceKind, GatewayConfig, Slot};
use sg_wire::message::{
    normalize_counters, normalize_measurements, Counter, CountersDoc, MeasurementsDoc, TextOrNumber,
};
use sg_wire::topic::MAX_RS485_SLOT;

use crate::source::Direction;

/// The gateway itself, for `GET /api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInfo {
    /// `SG-W1`: pyiskra recognises a gateway by a model starting with `SG`.
    pub model: String,
    pub serial: String,
    pub sw_ver: String,
    pub description: String,
    pub location: String,
}

/// A configured device and whether the gateway reads it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub slot: Slot,
    pub model: String,
    pub serial: String,
    pub description: String,
    pub location: String,
    /// A meter's phase count (1 or 3); `None` for a relay.
    pub phases: Option<u8>,
    /// The device answered its last read (and, for a meter, has been read at least once);
    /// otherwise the list says `Not Detected`, as the SG does for a silent meter.
    pub detected: bool,
}

/// The gateway's identity from its settings (no description or location are kept there).
#[must_use]
pub fn gateway_info(config: &GatewayConfig) -> GatewayInfo {
    GatewayInfo {
        model: config.model.clone(),
        serial: config.serial.clone(),
        sw_ver: match &config.sw_ver {
            TextOrNumber::Text(text) => text.clone(),
            TextOrNumber::Number(number) => number.to_string(),
        },
        description: String::new(),
        location: String::new(),
    }
}

/// The configured devices with their labels; `detected` says whether one answers now.
pub fn positions(
    config: &GatewayConfig,
    detected: impl Fn(&DeviceConfig) -> bool,
) -> Vec<Position> {
    config
        .devices
        .iter()
        .map(|device| {
            let (model, serial, description, location, phases) = match &device.kind {
                DeviceKind::Meter(m) => (
                    &m.model,
                    &m.serial,
                    &m.description,
                    &m.location,
                    Some(m.phases),
                ),
                DeviceKind::Relay(r) => (&r.model, &r.serial, &r.description, &r.location, None),
            };
            Position {
                slot: device.slot,
                model: model.clone(),
                serial: serial.clone(),
                description: description.clone(),
                location: location.clone(),
                phases,
                detected: detected(device),
            }
        })
        .collect()
}

/// `GET /api`.
#[must_use]
pub fn gateway_json(info: &GatewayInfo) -> Value {
    json!({
        "device": {
            "model_type": info.model,
            "serial_number": info.serial,
            "description": info.description,
            "location": info.location,
            "sw_ver": info.sw_ver,
        }
    })
}

/// The SG's name of a position: `Left IR`, `Right IR`, `RS485 1` … `RS485 16`.
#[must_use]
pub fn interface(slot: Slot) -> String {
    match slot {
        Slot::IrMeter => "Left IR".into(),
        Slot::IrRelay => "Right IR".into(),
        Slot::Rs485(n) => format!("RS485 {n}"),
    }
}

/// Every position in the SG's order: Left IR, Right IR, RS485 1 … 16.
pub fn all_slots() -> impl Iterator<Item = Slot> {
    [Slot::IrMeter, Slot::IrRelay]
        .into_iter()
        .chain((1..=MAX_RS485_SLOT).map(Slot::Rs485))
}

/// `GET /api/devices`: every position in order; an empty one is `Disabled`, a device that
/// does not answer `Not Detected` (pyiskra skips both).
#[must_use]
pub fn devices_json(positions: &[Position]) -> Value {
    let devices: Vec<Value> = all_slots()
        .map(|slot| {
            let entry = |model: &str, p: Option<&Position>| {
                json!({
                    "interface": interface(slot),
                    "model": model,
                    "serial": p.map_or("", |p| p.serial.as_str()),
                    "description": p.map_or("", |p| p.description.as_str()),
                    "location": p.map_or("", |p| p.location.as_str()),
                })
            };
            match positions.iter().find(|p| p.slot == slot) {
                Some(p) if p.detected => entry(&p.model, Some(p)),
                Some(p) => entry("Not Detected", Some(p)),
                None => entry("Disabled", None),
            }
        })
        .collect();
    json!({ "devices": devices })
}

/// The position pyiskra's device index `{i}` stands for: the device list without its Right
/// IR entry, so 0 is the Left IR meter and `n` is RS485 slot `n`. `None` for anything else.
#[must_use]
pub fn slot_of_index(index: &str) -> Option<Slot> {
    if index.len() > 3 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match index.parse::<u8>().ok()? {
        0 => Some(Slot::IrMeter),
        n if n <= MAX_RS485_SLOT => Some(Slot::Rs485(n)),
        _ => None,
    }
}

fn quantity(value: Option<f64>, unit: &str) -> Option<Value> {
    value
        .filter(|v| v.is_finite())
        .map(|v| json!({ "value": v, "unit": unit }))
}

/// Puts the present values of `fields` (key, value, unit) into an object; absent (`N/A`)
/// values are left out, which pyiskra reads as "not measured".
fn object(fields: &[(&str, Option<f64>, &str)]) -> Value {
    let mut map = Map::new();
    for &(key, value, unit) in fields {
        if let Some(v) = quantity(value, unit) {
            map.insert(key.into(), v);
        }
    }
    Value::Object(map)
}

/// `GET /api/measurement/{i}` from a pushed measurements document of a meter with `phases`
/// phases.
#[must_use]
pub fn measurements_json(doc: &MeasurementsDoc, phases: u8) -> Value {
    let (m, _issues) = normalize_measurements(doc);
    let phase_values = [
        [
            m.u1, m.i1, m.p1, m.q1, m.s1, m.pf1, m.pa1, m.thd_u1, m.thd_i1,
        ],
        [
            m.u2, m.i2, m.p2, m.q2, m.s2, m.pf2, m.pa2, m.thd_u2, m.thd_i2,
        ],
        [
            m.u3, m.i3, m.p3, m.q3, m.s3, m.pf3, m.pa3, m.thd_u3, m.thd_i3,
        ],
    ];
    let phases: Vec<Value> = phase_values
        .iter()
        .take(if phases == 1 { 1 } else { 3 })
        .map(|&[u, i, p, q, s, pf, pa, thd_u, thd_i]| {
            object(&[
                ("U", u, "V"),
                ("I", i, "A"),
                ("P", p, "W"),
                ("Q", q, "var"),
                ("S", s, "VA"),
                ("PF", pf, ""),
                ("PA", pa, "°"),
                ("THDUp", thd_u, "%"),
                ("THDI", thd_i, "%"),
            ])
        })
        .collect();
    let total = object(&[
        ("P", m.p_total, "W"),
        ("Q", m.q_total, "var"),
        ("S", m.s_total, "VA"),
        ("PF", m.pf_total, ""),
        ("PA", m.pa_total, "°"),
    ]);
    let mut out = Map::new();
    out.insert("Phases".into(), Value::Array(phases));
    out.insert("Total".into(), total);
    if let Some(v) = quantity(m.frequency_hz, "Hz") {
        out.insert("Frequency".into(), v);
    }
    if let Some(v) = quantity(m.temperature_c, "°C") {
        out.insert("Temperature".into(), v);
    }
    json!({ "measurements": out })
}

/// `GET /api/counter/{i}` from a pushed counters document: registers in Wh, varh or VAh
/// (exact to the milli-unit), non-resettable and resettable apart, each in index order, with
/// the direction its configuration gives (left out when unknown).
#[must_use]
pub fn counters_json(doc: &CountersDoc, directions: &BTreeMap<String, Direction>) -> Value {
    let (registers, _issues) = normalize_counters(doc);
    let entry = |c: &Counter| {
        let mut entry = json!({
            "name": c.name,
            // Exact below 2^53 mWh (9 TWh): the nearest double to the decimal value.
            "value": c.value_milli as f64 / 1000.0,
            "unit": c.unit.symbol(),
        });
        if let Some(direction) = directions.get(&c.name) {
            entry["direction"] = json!(direction);
        }
        entry
    };
    let of = |resettable: bool| -> Vec<Value> {
        registers
            .iter()
            .filter(|c| c.resettable == resettable)
            .map(entry)
            .collect()
    };
    json!({
        "counters": {
            "non_resettable": of(false),
            "resettable": of(true),
        }
    })
}
