//! The documents the gateway publishes read back through `sg_wire` without issues and have
//! the fixtures' shape.

mod common;

use std::collections::BTreeSet;

use common::{counters, decode, fixture, json, measurements, monday, subtopics, Harness};
use serde_json::Value;
use sg_gateway_core::{Link, MeterSource, Slot};
use sg_wire::message::{normalize_counters, normalize_measurements, RelayState, StatusDoc};
use sg_wire::time::parse_local_time;
use sg_wire::SgMessage;

/// One full push of the example gateway at 10:15.
fn first_push() -> (Harness, Vec<sg_gateway_core::Outgoing>) {
    let mut h = Harness::example(monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(10, 15, 0), 1);
    let out = h.drain(Link::One);
    (h, out)
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

fn find<'a>(out: &'a [sg_gateway_core::Outgoing], subtopic: &str) -> &'a sg_gateway_core::Outgoing {
    let all = subtopics(out);
    let at = all
        .iter()
        .position(|s| s == subtopic)
        .unwrap_or_else(|| panic!("no {subtopic} in {all:?}"));
    &out[at]
}

#[test]
fn a_push_is_hello_then_every_device() {
    let (_, out) = first_push();
    assert_eq!(
        subtopics(&out),
        [
            "status",
            "measurements/ir",
            "counters/ir",
            "bicom/ir",
            "measurements/rs485/1",
            "counters/rs485/1",
            "bicom/rs485/2",
            "measurements/rs485/3",
            "counters/rs485/3",
        ]
    );
}

#[test]
fn every_document_parses_back_without_issues() {
    let (h, out) = first_push();
    for message in &out {
        let (_, decoded) = decode(message);
        match decoded {
            SgMessage::Measurements(doc) => {
                let (values, issues) = normalize_measurements(&doc);
                assert!(issues.is_empty(), "{}: {issues:?}", message.topic);
                assert!(values.u1.is_some() && values.p_total.is_some());
                doc.header.sanitized().expect("an identified device");
                let time = parse_local_time(doc.header.local_time.as_deref().unwrap()).unwrap();
                assert_eq!(time, monday(10, 15, 0));
            }
            SgMessage::Counters(doc) => {
                let (registers, issues) = normalize_counters(&doc);
                assert!(issues.is_empty(), "{}: {issues:?}", message.topic);
                assert!(!registers.is_empty());
                doc.header.sanitized().expect("an identified device");
            }
            SgMessage::Bicom(doc) => {
                assert_eq!(doc.bicom.relay_state(), RelayState::On);
                doc.bicom.serial().expect("a usable serial");
            }
            SgMessage::Status(StatusDoc::Hello(hello)) => {
                assert_eq!(hello.serial_number, h.gw.config().serial);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn hello_is_the_fixture() {
    let (_, out) = first_push();
    assert_eq!(json(&out[0]), fixture("status-hello.json"));
}

#[test]
fn measurement_fields_match_the_fixtures() {
    let (_, out) = first_push();
    let three = json(find(&out, "measurements/ir"));
    let reference = fixture("measurements-ir.json");
    assert_eq!(keys(&three["header"]), keys(&reference["header"]));
    assert_eq!(
        keys(&three["measurements"]),
        keys(&reference["measurements"])
    );

    let one = json(find(&out, "measurements/rs485/1"));
    let reference = fixture("measurements-rs485-1-single-phase.json");
    assert_eq!(keys(&one["header"]), keys(&reference["header"]));
    assert_eq!(keys(&one["measurements"]), keys(&reference["measurements"]));
    assert_eq!(one["header"]["RS485 index"], 1);
    assert_eq!(one["header"]["port"], "RS485");
    assert_eq!(three["header"]["port"], "Left IR");
    assert_eq!(three["header"]["local_time"], "02.03.2026 10:15:00");
}

#[test]
fn single_phase_totals_are_phase_one() {
    let (_, out) = first_push();
    let doc = json(find(&out, "measurements/rs485/1"));
    let m = &doc["measurements"];
    for (total, phase) in [
        ("P0", "P1"),
        ("Q0", "Q1"),
        ("S0", "S1"),
        ("PF0", "PF1"),
        ("PA0", "PA1"),
    ] {
        assert_eq!(m[total], m[phase], "{total}");
    }
}

#[test]
fn counter_fields_match_the_fixtures() {
    let (_, out) = first_push();
    let basic = json(find(&out, "counters/rs485/3"));
    let reference = fixture("counters-rs485-2-wm3m4c.json");
    assert_eq!(keys(&basic["header"]), keys(&reference["header"]));
    assert_eq!(keys(&basic["counters"]), keys(&reference["counters"]));
    assert_eq!(keys(&basic["settings"]), keys(&reference["settings"]));
    assert_eq!(basic["settings"]["tariff1nr"], "1 2 3 4 ");
    assert_eq!(basic["settings"]["phase1nr"], "Total");

    // The IR meter has the IE38MD's registers (the fixture adds unconfigured 13..16).
    let full = json(find(&out, "counters/ir"));
    let reference = fixture("counters-ir-manual.json");
    let ours = keys(&full["counters"]);
    assert_eq!(ours.len(), 16);
    assert!(ours.is_subset(&keys(&reference["counters"])));
    assert!(keys(&full["settings"]).is_subset(&keys(&reference["settings"])));
    for (name, value) in full["counters"].as_object().unwrap() {
        let reference = reference["counters"][name].as_str().unwrap();
        let unit = |s: &str| s.rsplit(' ').next().unwrap().to_owned();
        assert_eq!(unit(value.as_str().unwrap()), unit(reference), "{name}");
    }
}

#[test]
fn counters_round_trip_exactly() {
    let (mut h, out) = first_push();
    for (slot, subtopic) in [
        (Slot::IrMeter, "counters/ir"),
        (Slot::Rs485(3), "counters/rs485/3"),
    ] {
        let (registers, issues) = normalize_counters(&counters(find(&out, subtopic)));
        assert!(issues.is_empty());
        let truth = h.gw.source_mut().read_counters(slot).unwrap();
        assert_eq!(registers, truth, "{subtopic}");
    }
}

#[test]
fn measurements_round_trip_within_display_precision() {
    let (mut h, out) = first_push();
    let (values, _) = normalize_measurements(&measurements(find(&out, "measurements/ir")));
    let truth = h.gw.source_mut().read_measurements(Slot::IrMeter).unwrap();
    let close = |a: Option<f64>, b: f64, tol: f64| {
        let a = a.expect("a value");
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    };
    close(values.u1, truth.phases[0].u_v, 0.05);
    close(values.i2, truth.phases[1].i_a, 0.0005);
    close(
        values.p_total,
        truth.total.p_w,
        truth.total.p_w.abs() * 1e-3 + 0.05,
    );
    close(values.pf_total, truth.total.pf, 5e-5);
    close(values.frequency_hz, truth.frequency_hz, 0.005);
    assert_eq!(values.tariff, Some(1));
}

#[test]
fn bicom_fields_match_the_fixtures() {
    let (_, out) = first_push();
    let ir = json(find(&out, "bicom/ir"));
    assert_eq!(keys(&ir["bicom"]), keys(&fixture("bicom-ir.json")["bicom"]));
    assert_eq!(ir["bicom"]["modbus_addr"], "N/A");
    assert_eq!(ir["bicom"]["port"], "Right IR");
    let rs485 = json(find(&out, "bicom/rs485/2"));
    let reference = fixture("bicom-rs485-2.json");
    assert_eq!(keys(&rs485["bicom"]), keys(&reference["bicom"]));
    for key in [
        "RS485 index",
        "modbus_addr",
        "port",
        "model",
        "serial_number",
        "cmd",
    ] {
        assert_eq!(rs485["bicom"][key], reference["bicom"][key], "{key}");
    }
}

#[test]
fn receipts_add_a_monotonic_seq() {
    let mut config = sg_gateway_core::GatewayConfig::example(common::SERIAL);
    config.receipts = true;
    let mut h = Harness::new(config, 7, monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(10, 30, 0), 5);
    let out = h.drain(Link::One);
    let seqs: Vec<u64> = out
        .iter()
        .filter_map(|m| {
            let doc = json(m);
            doc.get("header")
                .or_else(|| doc.get("bicom"))
                .map(|h| h["seq"].as_u64().expect("a seq"))
        })
        .collect();
    assert_eq!(seqs.len(), 16);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(h.gw.next_seq(), seqs.last().unwrap() + 1);
}

#[test]
#[ignore = "prints a push for eyeballing"]
fn print_a_push() {
    let (_, out) = first_push();
    for m in &out {
        println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
    }
}
