//! Snapshots polled from devices behind Modbus converters (`RecordKind::Polled`), to rows.
//!
//! The converter's bus task decodes the registers with the device's register map and journals
//! the result as one self-contained record: client = the converter's gateway serial, topic
//! `modbus/<unit>` (a snapshot) or `modbus/<unit>/error` (a communication error worth an event),
//! receive time = when the device answered. Normalising it again gives the same rows.

use serde::{Deserialize, Serialize};

use super::normalize::{
    bump_seen, truncate, CounterDef, CounterReading, DeviceAttrs, DeviceKey, DeviceKind, EventRow,
    GatewayInfo, MeasurementRow, RelayStateRow, Rows, MEASUREMENT_COLUMNS,
};
use super::record::IngestRecord;

/// `devices.port` of a device behind a converter (its slot is the unit id).
pub const PORT: &str = "modbus";

/// Format version of [`Snapshot`] and [`CommError`] payloads.
const VERSION: u8 = 1;

/// Longest register map name kept as the device model, in bytes.
const MAX_MODEL_BYTES: usize = 100;

/// One poll of one device, decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub v: u8,
    pub unit: u8,
    /// Register map name.
    pub model: String,
    /// Nameplate serial as configured ('' when unknown).
    pub serial: String,
    /// Measurements: column of `measurements`, SI value.
    pub m: Vec<(String, f32)>,
    pub c: Vec<PolledCounter>,
    /// 1 on, 0 off, -1 unknown; absent when the map has no relay.
    pub relay: Option<i16>,
    pub tariff: Option<i16>,
    /// What the map could not decode (kept as a partial reject).
    pub issues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolledCounter {
    pub name: String,
    /// `Wh`, `varh` or `VAh`.
    pub unit: String,
    pub resettable: bool,
    /// Exact value in milli-units.
    pub value_milli: i64,
}

/// A communication error of a device, shown as a gateway event of the converter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommError {
    pub v: u8,
    pub unit: u8,
    pub error: String,
}

impl Snapshot {
    pub fn new(unit: u8, model: &str, serial: &str) -> Self {
        Self {
            v: VERSION,
            unit,
            model: model.to_owned(),
            serial: serial.to_owned(),
            m: Vec::new(),
            c: Vec::new(),
            relay: None,
            tariff: None,
            issues: Vec::new(),
        }
    }

    pub fn topic(unit: u8) -> String {
        format!("modbus/{unit}")
    }
}

impl CommError {
    pub fn new(unit: u8, error: String) -> Self {
        Self {
            v: VERSION,
            unit,
            error,
        }
    }

    pub fn topic(unit: u8) -> String {
        format!("modbus/{unit}/error")
    }
}

fn key(gw: &GatewayInfo, kind: DeviceKind, unit: u8) -> DeviceKey {
    DeviceKey {
        gateway_id: gw.id,
        kind,
        port: PORT,
        slot: i16::from(unit),
    }
}

/// Adds what a polled record says to `rows`; `Some((reason, partial))` when (part of) it is
/// refused.
pub(super) fn push(
    rows: &mut Rows,
    record: &IngestRecord,
    seq: i64,
    gw: &GatewayInfo,
) -> Option<(String, bool)> {
    let at = record.received_at;
    if let Some(unit) = record
        .topic
        .strip_prefix("modbus/")
        .and_then(|t| t.strip_suffix("/error"))
    {
        let error: CommError = match serde_json::from_slice(&record.payload) {
            Ok(e) => e,
            Err(e) => return Some((format!("polled error record: {e}"), false)),
        };
        if error.unit.to_string() != unit {
            return Some(("polled error record names another unit".into(), false));
        }
        rows.events.push(EventRow {
            gateway_id: gw.id,
            kind: "error",
            received_at: at,
            body: truncate(&format!("unit {}: {}", error.unit, error.error), 4096),
            seq,
        });
        return None;
    }
    let snapshot: Snapshot = match serde_json::from_slice(&record.payload) {
        Ok(s) => s,
        Err(e) => return Some((format!("polled snapshot: {e}"), false)),
    };
    if snapshot.v != VERSION || record.topic != Snapshot::topic(snapshot.unit) {
        return Some((
            format!(
                "polled snapshot version {} for topic {:?} is not understood",
                snapshot.v, record.topic
            ),
            false,
        ));
    }
    if !(1..=247).contains(&snapshot.unit) {
        return Some((
            format!("unit id {} is outside 1..247", snapshot.unit),
            false,
        ));
    }
    // '' means "not configured"; anything else must be a serial (sg_wire::message::validate_serial).
    if !snapshot.serial.is_empty() {
        if let Err(e) = sg_wire::message::validate_serial(&snapshot.serial) {
            return Some((
                format!(
                    "unit {}: {e} (got {:?})",
                    snapshot.unit,
                    truncate(&snapshot.serial, 40)
                ),
                false,
            ));
        }
    }
    bump_seen(rows.gateways.entry(gw.id).or_default(), at);
    let mut issues = snapshot.issues.clone();
    if snapshot.model.len() > MAX_MODEL_BYTES {
        issues.push(super::normalize::cut_issue(
            "model",
            snapshot.model.len(),
            MAX_MODEL_BYTES,
        ));
    }
    let attrs = DeviceAttrs {
        serial: snapshot.serial.clone(),
        model: Some(truncate(&snapshot.model, MAX_MODEL_BYTES)),
        modbus_addr: Some(i32::from(snapshot.unit)),
        ..DeviceAttrs::default()
    };
    let mut stored = false;
    if !snapshot.m.is_empty() || !snapshot.c.is_empty() {
        let meter = key(gw, DeviceKind::Meter, snapshot.unit);
        rows.add_device(&meter, attrs.clone());
        let mut values = [None; MEASUREMENT_COLUMNS.len()];
        for (column, value) in &snapshot.m {
            let position = MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1]
                .iter()
                .position(|c| c == column);
            match position {
                Some(i) if value.is_finite() => values[i] = Some(*value),
                Some(_) => issues.push(format!("{column}: {value} is not a finite number")),
                None => issues.push(format!("{:?} is not a measurement", truncate(column, 64))),
            }
        }
        if values.iter().any(Option::is_some) || snapshot.tariff.is_some() {
            rows.measurements.push(MeasurementRow {
                device: meter.clone(),
                seq,
                ts: at,
                received_at: at,
                flags: 0,
                tariff: snapshot.tariff,
                values,
            });
            stored = true;
        }
        for (idx, c) in snapshot.c.iter().enumerate() {
            let unit = match c.unit.as_str() {
                "Wh" => "Wh",
                "varh" => "varh",
                "VAh" => "VAh",
                other => {
                    issues.push(format!(
                        "counter {:?}: unit {:?} is not Wh, varh or VAh",
                        truncate(&c.name, 64),
                        truncate(other, 16)
                    ));
                    continue;
                }
            };
            let name_ok =
                (1..=64).contains(&c.name.len()) && c.name.chars().all(|ch| !ch.is_control());
            if !name_ok || c.value_milli < 0 {
                issues.push(format!(
                    "counter {:?}: bad name or negative value",
                    truncate(&c.name, 64)
                ));
                continue;
            }
            rows.counter_defs.insert(
                (meter.clone(), c.name.clone()),
                CounterDef {
                    device: meter.clone(),
                    name: c.name.clone(),
                    idx: i16::try_from(idx).unwrap_or(i16::MAX),
                    resettable: c.resettable,
                    unit,
                    phase: None,
                    tariffs: Vec::new(),
                },
            );
            rows.counter_readings.push(CounterReading {
                device: meter.clone(),
                seq,
                name: c.name.clone(),
                ts: at,
                value_milli: c.value_milli,
                received_at: at,
                flags: 0,
            });
            stored = true;
        }
    }
    if let Some(state) = snapshot.relay {
        let relay = key(gw, DeviceKind::Relay, snapshot.unit);
        rows.add_device(&relay, attrs);
        let state = if matches!(state, -1..=1) {
            state
        } else {
            issues.push(format!(
                "relay state {state} is not 1, 0 or -1; stored as unknown"
            ));
            -1
        };
        rows.relay_states.push(RelayStateRow {
            device: relay,
            seq,
            ts: at,
            state,
            received_at: at,
            flags: 0,
        });
        stored = true;
    }
    if stored {
        *rows.accepted.entry("polled").or_default() += 1;
    }
    (!issues.is_empty()).then(|| (issues.join("; "), stored))
}

#[cfg(test)]
mod tests {
    use super::super::record::RecordKind;
    use super::*;
    use sg_wire::topic::TopicLayout;

    /// The map crate's copy of the column names is the server's, in the same order.
    #[test]
    fn map_columns_are_the_measurement_columns() {
        assert_eq!(
            headend_modbus_map::COLUMNS[..],
            MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1]
        );
    }

    fn gw() -> GatewayInfo {
        GatewayInfo {
            id: 7,
            serial: "cv-1".into(),
            layout: TopicLayout::default_for("cv-1").unwrap(),
            zone: chrono_tz::UTC,
        }
    }

    fn record(topic: String, payload: Vec<u8>) -> IngestRecord {
        IngestRecord {
            kind: RecordKind::Polled,
            received_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            source: "modbus".into(),
            client: "cv-1".into(),
            topic,
            payload: payload.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_snapshot_becomes_measurements_counters_and_a_relay_state() {
        let mut s = Snapshot::new(6, "legrand", "");
        s.m = vec![
            ("u1".into(), 235.8),
            ("p".into(), -190.0),
            ("pf".into(), 0.82),
        ];
        s.c = vec![PolledCounter {
            name: "partial_active".into(),
            unit: "Wh".into(),
            resettable: true,
            value_milli: 12_345_000,
        }];
        s.relay = Some(1);
        let mut rows = Rows::default();
        let out = push(
            &mut rows,
            &record(Snapshot::topic(6), serde_json::to_vec(&s).unwrap()),
            1,
            &gw(),
        );
        assert_eq!(out, None);
        assert_eq!(rows.measurements.len(), 1);
        let m = &rows.measurements[0];
        assert_eq!(m.device.port, "modbus");
        assert_eq!(m.device.slot, 6);
        assert_eq!(m.values[1], Some(235.8));
        assert_eq!(m.values[11], Some(-190.0));
        assert_eq!(rows.counter_readings[0].value_milli, 12_345_000);
        assert!(rows.counter_defs.values().next().unwrap().resettable);
        assert_eq!(rows.relay_states[0].state, 1);
        assert_eq!(rows.devices.len(), 2);
    }

    #[test]
    fn hostile_parts_are_refused_and_the_rest_kept() {
        let mut s = Snapshot::new(6, "m", "");
        s.m = vec![
            ("u1".into(), 230.0),
            ("drop table".into(), 1.0),
            ("p".into(), 1e30),
        ];
        s.c = vec![PolledCounter {
            name: "x".into(),
            unit: "parsec".into(),
            resettable: false,
            value_milli: 1,
        }];
        let mut rows = Rows::default();
        let (reason, partial) = push(
            &mut rows,
            &record(Snapshot::topic(6), serde_json::to_vec(&s).unwrap()),
            1,
            &gw(),
        )
        .unwrap();
        assert!(partial);
        assert!(reason.contains("not a measurement"), "{reason}");
        assert!(reason.contains("parsec"), "{reason}");
        assert_eq!(rows.measurements.len(), 1);
        assert!(rows.counter_readings.is_empty());

        let mut rows = Rows::default();
        let (reason, partial) = push(
            &mut rows,
            &record("modbus/6".into(), b"{".to_vec()),
            2,
            &gw(),
        )
        .unwrap();
        assert!(!partial && reason.contains("polled snapshot"));
        // A snapshot under another unit's topic is refused whole.
        let (_, partial) = push(
            &mut rows,
            &record("modbus/7".into(), serde_json::to_vec(&s).unwrap()),
            3,
            &gw(),
        )
        .unwrap();
        assert!(!partial);
    }

    #[test]
    fn a_configured_serial_outside_the_character_set_refuses_the_snapshot() {
        let mut s = Snapshot::new(6, "legrand", "<script>x</script>");
        s.m = vec![("u1".into(), 230.0)];
        let mut rows = Rows::default();
        let (reason, partial) = push(
            &mut rows,
            &record(Snapshot::topic(6), serde_json::to_vec(&s).unwrap()),
            1,
            &gw(),
        )
        .unwrap();
        assert!(!partial);
        assert!(reason.contains("`serial_number`"), "{reason}");
        assert!(rows.measurements.is_empty() && rows.devices.is_empty());
        // '' means not configured; a real serial is fine.
        for serial in ["", "046770001"] {
            let mut s = s.clone();
            s.serial = serial.into();
            let mut rows = Rows::default();
            let out = push(
                &mut rows,
                &record(Snapshot::topic(6), serde_json::to_vec(&s).unwrap()),
                1,
                &gw(),
            );
            assert_eq!(out, None);
            assert_eq!(rows.measurements.len(), 1);
        }
    }

    #[test]
    fn a_comm_error_becomes_an_event() {
        let e = CommError::new(9, "no reply within 200 ms".into());
        let mut rows = Rows::default();
        let out = push(
            &mut rows,
            &record(CommError::topic(9), serde_json::to_vec(&e).unwrap()),
            4,
            &gw(),
        );
        assert_eq!(out, None);
        assert_eq!(rows.events[0].kind, "error");
        assert!(rows.events[0].body.contains("unit 9"));
    }
}
