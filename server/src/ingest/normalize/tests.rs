//! The normaliser as a whole: records in, rows and rejects out.

use super::publish::MAX_EVENT_TEXT;
use super::*;
use crate::ingest::clock::BEYOND_HORIZON;
use bytes::Bytes;
use sg_wire::topic::TopicLayout;

fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/../tests/fixtures/sg-mqtt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn directory() -> Directory {
    Directory::new([
        GatewayInfo {
            id: 1,
            serial: "SG1".into(),
            layout: TopicLayout::default_for("SG1").unwrap(),
            zone: chrono_tz::Europe::Ljubljana,
        },
        GatewayInfo {
            id: 2,
            serial: "SG2".into(),
            layout: TopicLayout::new("site/x/SG2", "up", "down").unwrap(),
            zone: chrono_tz::UTC,
        },
    ])
}

fn record(kind: RecordKind, client: &str, topic: &str, payload: Bytes) -> IngestRecord {
    IngestRecord {
        kind,
        received_at: "2026-11-21T10:00:00Z".parse().unwrap(),
        source: "mqtt".into(),
        client: client.into(),
        topic: topic.into(),
        payload,
        reason: String::new(),
    }
}

fn run(records: Vec<IngestRecord>) -> Rows {
    let dir = directory();
    let normalizer = Normalizer {
        directory: &dir,
        clock_tolerance: Duration::seconds(300),
        backlog_horizon: Duration::days(i64::from(DEFAULT_BACKLOG_HORIZON_DAYS)),
    };
    let mut rows = Rows::default();
    for (seq, r) in records.into_iter().enumerate() {
        normalizer.push(&mut rows, seq as i64 + 1, r);
    }
    rows
}

#[test]
fn gateways_are_found_by_serial_or_by_publish_base() {
    let dir = directory();
    assert_eq!(dir.by_topic("site/x/SG2/up/status").map(|g| g.id), Some(2));
    assert_eq!(
        dir.by_topic("sg/SG1/pub/measurements/ir").map(|g| g.id),
        Some(1)
    );
    assert!(dir.by_topic("sg/SG9/pub/status").is_none());
    assert!(dir.by_topic("site/x/SG2/upx/status").is_none());
}

#[test]
fn a_measurement_becomes_one_wide_row_in_si_units() {
    let rows = run(vec![record(
        RecordKind::Publish,
        "SG1",
        "sg/SG1/pub/measurements/ir",
        fixture("measurements-ir.json"),
    )]);
    assert!(rows.rejects.is_empty(), "{:?}", rows.rejects);
    let m = &rows.measurements[0];
    let col = |name: &str| m.values[MEASUREMENT_COLUMNS.iter().position(|c| *c == name).unwrap()];
    assert_eq!(col("p"), Some(2815.0));
    assert_eq!(col("pf2"), Some(-0.8984));
    assert_eq!(col("u12"), None);
    assert_eq!(m.tariff, Some(1));
    assert_eq!(m.ts.to_rfc3339(), "2020-04-14T15:45:30+00:00");
    let device = rows.devices.get(&m.device).unwrap();
    assert_eq!(device.serial, "X0000124");
    assert_eq!(device.location.as_deref(), Some("Panel B, floor 2"));
    assert_eq!(rows.accepted.get("measurements"), Some(&1));
}

#[test]
fn refused_parts_are_a_partial_reject_and_refused_wholes_are_not() {
    let rows = run(vec![
        record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/counters/ir",
            fixture("counters-ir-manual.json"),
        ),
        record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/measurements/ir",
            Bytes::from_static(
                br#"{"header":{"local_time":"01.01.2026 00:00:00"},"measurements":{}}"#,
            ),
        ),
        record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/status",
            Bytes::from_static(b"{"),
        ),
    ]);
    assert_eq!(rows.counter_readings.len(), 16);
    assert_eq!(rows.rejects.len(), 3);
    assert!(rows.rejects[0].partial && rows.rejects[0].reason.contains("counter13"));
    assert!(!rows.rejects[1].partial, "no serial: nothing stored");
    assert!(
        rows.rejects[1].reason.contains("serial"),
        "{}",
        rows.rejects[1].reason
    );
    assert!(!rows.rejects[2].partial);
    assert_eq!(rows.rejects[2].seq, 3);
    assert_eq!(rows.rejects[2].payload, Bytes::from_static(b"{"));
}

#[test]
fn unknown_gateways_and_command_echoes() {
    let mut external = record(
        RecordKind::Publish,
        "",
        "sg/SG9/pub/status",
        fixture("status-hello.json"),
    );
    external.source = EXTERNAL_SOURCE.into();
    let mut echo = external.clone();
    echo.topic = "site/x/SG2/down".into();
    let mut hello = external.clone();
    hello.topic = "site/x/SG2/up/status".into();
    let rows = run(vec![external, echo, hello]);
    assert_eq!(rows.rejects.len(), 2, "{:?}", rows.rejects);
    assert!(rows.rejects[0].reason.contains("unknown gateway"));
    // The hello names SG000017 but comes from SG2: stored, and the mismatch recorded.
    assert!(rows.rejects[1].partial && rows.rejects[1].reason.contains("SG000017"));
    let update = &rows.gateways[&2];
    assert_eq!(
        update.hello.as_ref().unwrap().firmware_version.as_deref(),
        Some("0.51")
    );
    assert_eq!(
        update.online.map(|(_, o)| o),
        Some(true),
        "external hello = online"
    );
}

#[test]
fn sessions_set_online_state_newest_first() {
    let mut open = record(
        RecordKind::Connect,
        "SG1",
        "",
        Bytes::from_static(b"opened"),
    );
    open.reason = "1".into();
    let mut second_closed = record(
        RecordKind::Disconnect,
        "SG1",
        "",
        Bytes::from_static(b"closed"),
    );
    second_closed.received_at += Duration::seconds(1);
    second_closed.reason = "1".into();
    let rows = run(vec![open.clone(), second_closed]);
    assert_eq!(
        rows.gateways[&1].online.map(|(_, o)| o),
        Some(true),
        "one link still open"
    );
    let mut closed = record(
        RecordKind::Disconnect,
        "SG1",
        "",
        Bytes::from_static(b"closed"),
    );
    closed.received_at += Duration::seconds(2);
    closed.reason = "0".into();
    // Out of order within a batch: the newest change wins.
    let rows = run(vec![closed, open]);
    assert_eq!(rows.gateways[&1].online.map(|(_, o)| o), Some(false));
    assert_eq!(
        rows.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        ["disconnect", "connect"]
    );
}

#[test]
fn hostile_serials_refuse_the_message_and_name_the_field() {
    let doc = |serial: &str| {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "header": { "serial_number": serial, "local_time": "21.11.2026 09:00:00" },
                "measurements": { "U1": "230 V" }
            }))
            .unwrap(),
        )
    };
    let hostile = ["X1<b>", "../x", "X 1", "-x", ".", "a\u{202E}b"];
    let rows = run(hostile
        .iter()
        .map(|s| {
            record(
                RecordKind::Publish,
                "SG1",
                "sg/SG1/pub/measurements/ir",
                doc(s),
            )
        })
        .collect());
    assert!(rows.measurements.is_empty() && rows.devices.is_empty());
    assert_eq!(rows.rejects.len(), hostile.len());
    for (reject, serial) in rows.rejects.iter().zip(hostile) {
        assert!(!reject.partial);
        assert!(
            reject.reason.contains("`serial_number`"),
            "{}",
            reject.reason
        );
        assert!(
            reject.reason.contains(&format!("{serial:?}")),
            "{}",
            reject.reason
        );
    }
    let rows = run(vec![record(
        RecordKind::Publish,
        "SG1",
        "sg/SG1/pub/measurements/ir",
        doc("X0000124"),
    )]);
    assert!(rows.rejects.is_empty(), "{:?}", rows.rejects);
}

#[test]
fn counter_readings_beyond_the_horizon_are_flagged_and_reported() {
    let doc = |local_time: &str| {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "header": { "serial_number": "X1", "local_time": local_time },
                "counters": { "counter1nr": "1 kWh" }
            }))
            .unwrap(),
        )
    };
    let topic = "sg/SG1/pub/counters/ir";
    let rows = run(vec![
        record(
            RecordKind::Publish,
            "SG1",
            topic,
            doc("01.01.1900 00:00:00"),
        ),
        record(
            RecordKind::Publish,
            "SG1",
            topic,
            doc("21.11.2026 09:00:00"),
        ),
        // 399 days before the receive time: a backlog, accounted.
        record(
            RecordKind::Publish,
            "SG1",
            topic,
            doc("18.10.2025 12:00:00"),
        ),
    ]);
    let flags: Vec<i16> = rows.counter_readings.iter().map(|c| c.flags).collect();
    assert_eq!(flags, [BEYOND_HORIZON, 0, 0]);
    assert_eq!(rows.rejects.len(), 1);
    assert!(rows.rejects[0].partial);
    assert_eq!(rows.rejects[0].seq, 1);
    assert!(
        rows.rejects[0].reason.contains("backlog_horizon_days"),
        "{}",
        rows.rejects[0].reason
    );
    // Every record that gave keyed rows is kept for conflict rejects.
    assert_eq!(rows.records.len(), 3);
}

#[test]
fn text_cut_to_fit_is_recorded() {
    let long = "x".repeat(MAX_EVENT_TEXT + 10);
    let hello = serde_json::json!({
        "hello": "hello world", "serial number": "SG1", "model_type": "M".repeat(70)
    });
    let rows = run(vec![
        record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/log",
            Bytes::from(long.clone()),
        ),
        record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/status",
            Bytes::from(serde_json::to_vec(&hello).unwrap()),
        ),
    ]);
    assert_eq!(rows.events[0].body.len(), MAX_EVENT_TEXT);
    assert_eq!(rows.rejects.len(), 2, "{:?}", rows.rejects);
    assert!(rows.rejects[0].partial);
    assert!(rows.rejects[0]
        .reason
        .contains("log line: cut from 8202 to 8192 bytes"));
    assert_eq!(rows.rejects[0].payload, Bytes::from(long));
    assert!(rows.rejects[1]
        .reason
        .contains("hello model_type: cut from 70 to 64"));
    let model = rows.gateways[&1].hello.as_ref().unwrap().model.clone();
    assert_eq!(model, Some("M".repeat(64)));
}

#[test]
fn violations_are_rejects_attributed_to_their_gateway() {
    let mut v = record(
        RecordKind::Violation,
        "SG1",
        "sg/SG2/pub/status",
        Bytes::from_static(b"{}"),
    );
    v.reason = "publish refused".into();
    let rows = run(vec![v]);
    assert_eq!(rows.rejects[0].gateway_id, Some(1));
    assert_eq!(rows.rejects[0].reason, "publish refused");
}
