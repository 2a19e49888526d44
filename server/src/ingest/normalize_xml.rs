//! MiSmart XML documents (`RecordKind::XmlPush`) to rows: the same measurements and counter
//! readings as the MQTT JSON path, on the device the listener pinned the meter to.
//!
//! The record is self-contained (document verbatim, device in the topic `xml/<port>/<slot>`,
//! receive time), so normalising it again, or a redelivered copy, gives the same rows.

use chrono::{DateTime, Duration, Utc};
use sg_wire::mismart::{parse_document, DateTimeSpec, IgnoredKind, Statistic};

use super::clock::CLOCK_FAULT;
use super::normalize::{
    beyond_horizon, bump_seen, measurement_values, CounterDef, CounterReading, DeviceAttrs,
    DeviceKey, DeviceKind, GatewayInfo, MeasurementRow, Rows,
};
use super::record::IngestRecord;

/// Longest `deviceType` kept as the device model, as for MQTT.
const MAX_MODEL_CHARS: usize = 64;

/// The device a record's topic names: `xml/<port>/<slot>`.
pub fn device_of(topic: &str, gateway_id: i64) -> Option<DeviceKey> {
    let mut parts = topic.split('/');
    let (Some("xml"), Some(port), Some(slot), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let port = match port {
        "ir" => "ir",
        "rs485" => "rs485",
        "xml" => "xml",
        _ => return None,
    };
    let slot: i16 = slot.parse().ok().filter(|s| (0..=255).contains(s))?;
    Some(DeviceKey {
        gateway_id,
        kind: DeviceKind::Meter,
        port,
        slot,
    })
}

/// What bounds the rows of one document.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A `dateTime` further ahead of the receive time is a clock fault.
    pub clock_tolerance: Duration,
    /// Counter readings dated further before the receive time are flagged
    /// [`BEYOND_HORIZON`](super::clock::BEYOND_HORIZON).
    pub backlog_horizon: Duration,
}

/// Adds what the document in `record` (journal sequence `seq`) says to `rows`; returns what
/// to record as a reject (reason, whether part of the document was stored).
pub fn push(
    rows: &mut Rows,
    record: &IngestRecord,
    seq: i64,
    gw: &GatewayInfo,
    limits: Limits,
) -> Option<(String, bool)> {
    let clock_tolerance = limits.clock_tolerance;
    let Some(device) = device_of(&record.topic, gw.id) else {
        return Some((
            format!("XML record names no device: topic {:?}", record.topic),
            false,
        ));
    };
    let parsed = match parse_document(&record.payload) {
        Ok(parsed) => parsed,
        Err(e) => return Some((format!("XML document refused: {e}"), false)),
    };
    let doc = parsed.document;
    let mut issues: Vec<String> = parsed
        .ignored
        .iter()
        .filter(|i| !matches!(i.kind, IgnoredKind::NotAvailable { .. }))
        .map(ToString::to_string)
        .collect();
    let model = clean_text(&doc.device_type, MAX_MODEL_CHARS);
    let kept_chars = doc.device_type.chars().filter(|c| !c.is_control()).count();
    if kept_chars > MAX_MODEL_CHARS {
        issues.push(format!(
            "deviceType: cut from {kept_chars} to {MAX_MODEL_CHARS} characters to fit (stored \
             cut; the original is this reject's payload)"
        ));
    }
    let attrs = DeviceAttrs {
        serial: doc.control_unit.clone(),
        model: (!model.is_empty()).then_some(model),
        ..DeviceAttrs::default()
    };
    rows.add_device(&device, attrs);
    let received_at = record.received_at;
    bump_seen(rows.gateways.entry(gw.id).or_default(), received_at);
    let before = rows.measurements.len() + rows.counter_readings.len();
    for (n, m) in doc.measurements.iter().enumerate() {
        let (ts, flags) = time(
            rows,
            gw,
            m.date_time,
            received_at,
            clock_tolerance,
            &mut issues,
        );
        let (values, field_issues) = m.measurements(Statistic::Avg);
        issues.extend(field_issues.iter().map(|i| format!("measurement {n}: {i}")));
        let values = measurement_values(&values);
        if values.iter().any(Option::is_some) {
            rows.measurements.push(MeasurementRow {
                device: device.clone(),
                seq,
                ts,
                received_at,
                flags,
                tariff: None,
                values,
            });
        }
        let (counters, counter_issues) = m.counters();
        issues.extend(
            counter_issues
                .iter()
                .map(|i| format!("measurement {n}: {i}")),
        );
        let flags = flags
            | beyond_horizon(
                ts,
                received_at,
                limits.backlog_horizon,
                !counters.is_empty(),
                &mut issues,
            );
        for c in counters {
            rows.counter_readings.push(CounterReading {
                device: device.clone(),
                seq,
                name: c.name.clone(),
                ts,
                value_milli: c.value_milli,
                received_at,
                flags,
            });
            rows.counter_defs.insert(
                (device.clone(), c.name.clone()),
                CounterDef {
                    device: device.clone(),
                    idx: i16::from(c.index),
                    resettable: c.resettable,
                    unit: c.unit.symbol(),
                    phase: c.phase,
                    tariffs: c.tariffs.into_iter().map(i16::from).collect(),
                    name: c.name,
                },
            );
        }
    }
    let stored = rows.measurements.len() + rows.counter_readings.len() > before;
    if stored {
        *rows.accepted.entry("xml").or_default() += 1;
    } else {
        issues.push("the document holds no measurement or energy register to store".into());
    }
    (!issues.is_empty()).then(|| (issues.join("; "), stored))
}

/// `dateTime` is UTC; `now` (the gateway clock is not set) and a time too far ahead are clock
/// faults: the receive time is used and flagged, as for MQTT.
fn time(
    rows: &mut Rows,
    gw: &GatewayInfo,
    spec: DateTimeSpec,
    received_at: DateTime<Utc>,
    tolerance: Duration,
    issues: &mut Vec<String>,
) -> (DateTime<Utc>, i16) {
    let update = rows.gateways.entry(gw.id).or_default();
    let (ts, flags, fault) = match spec {
        DateTimeSpec::Now => (
            received_at,
            CLOCK_FAULT,
            Some("dateTime is `now` (gateway clock not set)".to_owned()),
        ),
        DateTimeSpec::Utc(ts) => {
            let skew = ts - received_at;
            let skew_s = skew.num_milliseconds() as f64 / 1000.0;
            if update.skew.is_none_or(|(at, _)| at <= received_at) {
                update.skew = Some((received_at, skew_s));
            }
            if skew > tolerance {
                (
                    received_at,
                    CLOCK_FAULT,
                    Some(format!(
                        "dateTime {spec} is {skew_s:.0} s ahead of the receive time (tolerance {} s)",
                        tolerance.num_seconds()
                    )),
                )
            } else {
                (ts, 0, None)
            }
        }
    };
    if let Some(fault) = fault {
        update.clock_faults += 1;
        issues.push(format!("clock fault, receive time used: {fault}"));
    }
    (ts, flags)
}

fn clean_text(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::normalize::MEASUREMENT_COLUMNS;
    use bytes::Bytes;
    use sg_wire::topic::TopicLayout;

    use crate::ingest::record::RecordKind;

    fn fixture(name: &str) -> Bytes {
        let path = format!(
            "{}/../tests/fixtures/mismart-xml/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    fn gateway() -> GatewayInfo {
        GatewayInfo {
            id: 7,
            serial: "SG7".into(),
            layout: TopicLayout::default_for("SG7").unwrap(),
            zone: chrono_tz::Europe::Ljubljana,
        }
    }

    fn record(topic: &str, payload: Bytes, received_at: &str) -> IngestRecord {
        IngestRecord {
            kind: RecordKind::XmlPush,
            received_at: received_at.parse().unwrap(),
            source: "xml-push".into(),
            client: "SG7".into(),
            topic: topic.into(),
            payload,
            reason: "127.0.0.1:5000".into(),
        }
    }

    fn limits() -> Limits {
        Limits {
            clock_tolerance: Duration::seconds(300),
            backlog_horizon: Duration::days(400),
        }
    }

    fn col(row: &MeasurementRow, name: &str) -> Option<f32> {
        row.values[MEASUREMENT_COLUMNS.iter().position(|c| *c == name).unwrap()]
    }

    #[test]
    fn the_ie38_fixture_gives_the_mqtt_rows() {
        let mut rows = Rows::default();
        let r = record(
            "xml/xml/3",
            fixture("push-ie38-15min.xml"),
            "2026-03-29T00:45:04Z",
        );
        let reject = push(&mut rows, &r, 1, &gateway(), limits());
        assert_eq!(reject, None);
        let m = &rows.measurements[0];
        assert_eq!(m.device.port, "xml");
        assert_eq!(m.device.slot, 3);
        assert_eq!(m.ts.to_rfc3339(), "2026-03-29T00:45:00+00:00");
        assert_eq!(m.flags, 0);
        assert_eq!(col(m, "p"), Some(2815.0));
        assert_eq!(col(m, "s"), Some(2851.0));
        assert_eq!(col(m, "thd_i3"), Some(14.02));
        assert_eq!(col(m, "temperature"), Some(30.7));
        let counters: Vec<_> = rows
            .counter_readings
            .iter()
            .map(|c| (c.name.as_str(), c.value_milli))
            .collect();
        assert_eq!(
            counters,
            [
                ("counter1nr", 18_423_312_500),
                ("counter2nr", 12_500),
                ("counter3nr", 441_002_000),
                ("counter4nr", 0),
                ("counter1", 20_010_000),
                ("counter2", 0),
            ]
        );
        let device = rows.devices.get(&m.device).unwrap();
        assert_eq!(device.serial, "X0000124");
        assert_eq!(device.model.as_deref(), Some("IE38MD"));
    }

    #[test]
    fn now_uses_the_receive_time_and_flags_a_clock_fault() {
        let mut rows = Rows::default();
        let r = record(
            "xml/ir/0",
            fixture("push-no-clock.xml"),
            "2026-11-21T10:00:00Z",
        );
        let (reason, partial) = push(&mut rows, &r, 1, &gateway(), limits()).unwrap();
        assert!(partial);
        assert!(reason.contains("clock fault"), "{reason}");
        let m = &rows.measurements[0];
        assert_eq!(m.ts, r.received_at);
        assert_eq!(m.flags, CLOCK_FAULT);
        assert_eq!(rows.counter_readings[0].value_milli, 184_233_125_000);
        assert_eq!(rows.gateways[&7].clock_faults, 1);
    }

    #[test]
    fn a_bad_topic_or_document_is_a_reject_not_a_panic() {
        for topic in [
            "xml",
            "xml/modbus/1",
            "xml/xml/256",
            "xml/xml/1/2",
            "mqtt/x/1",
        ] {
            let mut rows = Rows::default();
            let r = record(topic, fixture("push-no-clock.xml"), "2026-11-21T10:00:00Z");
            assert!(push(&mut rows, &r, 1, &gateway(), limits()).is_some());
            assert!(rows.measurements.is_empty());
        }
        let mut rows = Rows::default();
        let r = record(
            "xml/xml/1",
            Bytes::from_static(b"<data logId=\"1\""),
            "2026-11-21T10:00:00Z",
        );
        let (_, partial) = push(&mut rows, &r, 1, &gateway(), limits()).unwrap();
        assert!(!partial);
    }
}
