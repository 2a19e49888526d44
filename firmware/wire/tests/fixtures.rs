//! Every real-device fixture in `tests/fixtures/sg-mqtt` parses and normalises as expected.

use sg_wire::message::{
    normalize_counters, normalize_measurements, parse_bicom_state, CountersDoc, EnergyUnit,
    FieldError, MeasurementsDoc, RelayState, StatusDoc, TextOrNumber,
};
use sg_wire::topic::{Port, SgTopic};
use sg_wire::value::ValueError;
use sg_wire::{parse_message, SgMessage};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/sg-mqtt/", $name))
    };
}

const MEASUREMENTS_IR: &str = fixture!("measurements-ir.json");
const MEASUREMENTS_MANUAL: &str = fixture!("measurements-rs485-manual.json");
const MEASUREMENTS_SINGLE: &str = fixture!("measurements-rs485-1-single-phase.json");
const COUNTERS_IR_MANUAL: &str = fixture!("counters-ir-manual.json");
const COUNTERS_WM3M4C: &str = fixture!("counters-rs485-2-wm3m4c.json");
const BICOM_IR: &str = fixture!("bicom-ir.json");
const BICOM_RS485: &str = fixture!("bicom-rs485-2.json");
const STATUS_HELLO: &str = fixture!("status-hello.json");

fn measurements(json: &str, port: Port) -> MeasurementsDoc {
    match parse_message(SgTopic::Measurements(port), json.as_bytes()) {
        Ok(SgMessage::Measurements(doc)) => doc,
        other => panic!("not a measurements document: {other:?}"),
    }
}

fn counters(json: &str, port: Port) -> CountersDoc {
    match parse_message(SgTopic::Counters(port), json.as_bytes()) {
        Ok(SgMessage::Counters(doc)) => doc,
        other => panic!("not a counters document: {other:?}"),
    }
}

#[test]
fn measurements_rs485_manual() {
    let doc = measurements(MEASUREMENTS_MANUAL, Port::Rs485(1));
    assert_eq!(doc.header.serial_number.as_deref(), Some("18230001"));
    assert_eq!(doc.header.modbus_addr, None);
    let (m, issues) = normalize_measurements(&doc);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(m.frequency_hz, Some(50.01));
    assert_eq!((m.u1, m.u2, m.u3), (Some(220.5), Some(220.6), Some(220.5)));
    assert_eq!(m.i3, Some(0.019));
    assert_eq!(m.p_total, Some(6.5));
    assert_eq!(m.q_total, Some(-27.7));
    assert_eq!(m.s_total, Some(30.5));
    assert_eq!(m.pf_total, Some(-0.2124));
    assert_eq!(m.pa1, Some(-80.57));
    assert_eq!(m.temperature_c, Some(36.7));
    assert_eq!(m.thd_i3, Some(74.02));
    assert_eq!(m.thd_u1, Some(2.5));
    assert_eq!(m.tariff, Some(1));
    assert_eq!((m.u12, m.i_n), (None, None));
}

#[test]
fn measurements_ir() {
    let doc = measurements(MEASUREMENTS_IR, Port::Ir);
    assert_eq!(doc.header.modbus_addr, Some(33));
    assert_eq!(doc.header.phases, Some(3));
    let (m, issues) = normalize_measurements(&doc);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(m.frequency_hz, Some(49.99));
    assert_eq!(m.p_total, Some(2815.0));
    assert_eq!(m.p3, Some(1071.0));
    assert_eq!(m.s_total, Some(2851.0));
    assert_eq!(m.pf_total, Some(0.9874));
    assert_eq!(m.pf2, Some(-0.8984));
    assert_eq!(m.pa2, Some(-26.07));
    assert_eq!(m.tariff, Some(1));

    let clean = doc.header.sanitized().unwrap();
    assert_eq!(clean.serial_number, "X0000124");
    assert_eq!(clean.labels.location.as_deref(), Some("Panel B, floor 2"));
    assert!(clean.labels.issues.is_empty());
}

#[test]
fn measurements_single_phase_leaves_other_phases_empty() {
    let doc = measurements(MEASUREMENTS_SINGLE, Port::Rs485(1));
    assert_eq!(doc.header.rs485_index, Some(1));
    let (m, issues) = normalize_measurements(&doc);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(m.u1, Some(231.0));
    assert_eq!(m.p_total, Some(2210.0));
    assert_eq!(m.p1, Some(2210.0));
    assert_eq!(m.pf1, Some(0.9731));
    assert_eq!(m.tariff, Some(2));
    assert_eq!(
        (m.u2, m.u3, m.i2, m.p2, m.pf3, m.thd_u2),
        (None, None, None, None, None, None)
    );
    // An empty location is no location.
    assert_eq!(doc.header.labels().location, None);
}

#[test]
fn counters_wm3m4c() {
    let doc = counters(COUNTERS_WM3M4C, Port::Rs485(2));
    assert_eq!(doc.header.number, Some(2));
    assert_eq!(doc.header.non_resetable_counters, Some(2));
    let (counters, issues) = normalize_counters(&doc);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(counters.len(), 2);
    let first = &counters[0];
    assert_eq!(first.name, "counter1nr");
    assert_eq!((first.index, first.resettable), (1, false));
    assert_eq!(first.unit, EnergyUnit::Wh);
    assert_eq!(first.value_milli, 184_233_125_000);
    assert_eq!(first.phase.as_deref(), Some("Total"));
    assert_eq!(first.tariffs, [1, 2, 3, 4]);
    assert_eq!(counters[1].name, "counter2nr");
    assert_eq!(counters[1].value_milli, 12_500);
}

#[test]
fn counters_ir_manual_skips_unconfigured_registers() {
    let doc = counters(COUNTERS_IR_MANUAL, Port::Ir);
    let (counters, issues) = normalize_counters(&doc);

    let mut skipped: Vec<_> = issues.iter().map(|i| i.field.as_str()).collect();
    skipped.sort_unstable();
    assert_eq!(
        skipped,
        ["counter13", "counter14", "counter15", "counter16"]
    );
    for issue in &issues {
        assert_eq!(issue.raw, "0.00 k");
        assert_eq!(
            issue.error,
            FieldError::Value(ValueError::PrefixWithoutUnit('k'))
        );
    }

    assert_eq!(counters.len(), 16);
    let names: Vec<_> = counters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        &names[..5],
        [
            "counter1nr",
            "counter2nr",
            "counter3nr",
            "counter4nr",
            "counter1"
        ]
    );
    assert_eq!(names[15], "counter12");
    let c1 = &counters[4];
    assert_eq!(
        (c1.index, c1.resettable, c1.value_milli),
        (1, true, 200_000)
    );
    assert_eq!(c1.phase, None);
    assert_eq!(c1.tariffs, [1, 2, 3, 4]);
    let c3nr = &counters[2];
    assert_eq!((c3nr.unit, c3nr.value_milli), (EnergyUnit::Varh, 0));
    let c9 = counters.iter().find(|c| c.name == "counter9").unwrap();
    assert!(c9.tariffs.is_empty());
}

#[test]
fn bicom_ir() {
    let Ok(SgMessage::Bicom(doc)) = parse_message(SgTopic::Bicom(Port::Ir), BICOM_IR.as_bytes())
    else {
        panic!("bicom-ir.json did not parse");
    };
    let body = &doc.bicom;
    assert_eq!(body.modbus_addr, None);
    assert_eq!(body.port.as_deref(), Some("Right IR"));
    assert_eq!(body.relay_state(), RelayState::On);
    assert_eq!(body.serial(), Ok(None));
    assert_eq!(body.labels().description.as_deref(), Some("Water heater"));
}

#[test]
fn bicom_rs485() {
    let Ok(SgMessage::Bicom(doc)) =
        parse_message(SgTopic::Bicom(Port::Rs485(2)), BICOM_RS485.as_bytes())
    else {
        panic!("bicom-rs485-2.json did not parse");
    };
    let body = &doc.bicom;
    assert_eq!(body.rs485_index, Some(2));
    assert_eq!(body.modbus_addr, Some(40));
    assert_eq!(body.serial(), Ok(Some("19870012")));
    assert_eq!(body.relay_state(), RelayState::Off);
    assert_eq!(parse_bicom_state(-1), RelayState::Unknown);
}

#[test]
fn status_hello() {
    let Ok(SgMessage::Status(StatusDoc::Hello(hello))) =
        parse_message(SgTopic::Status, STATUS_HELLO.as_bytes())
    else {
        panic!("status-hello.json did not parse as a hello");
    };
    assert_eq!(hello.serial_number, "SG000017");
    assert_eq!(hello.model_type.as_deref(), Some("SG-W1"));
    assert_eq!(hello.sw_ver, Some(TextOrNumber::Text("0.51".into())));
    assert_eq!(
        hello.hw_ver.as_ref().map(ToString::to_string).as_deref(),
        Some("2")
    );
}

#[test]
fn status_other_replies_are_kept_raw() {
    let payload = br#"{"bicoms":[{"index":0,"state":1}]}"#;
    let Ok(SgMessage::Status(StatusDoc::Other(value))) = parse_message(SgTopic::Status, payload)
    else {
        panic!("status reply did not parse");
    };
    assert_eq!(value["bicoms"][0]["state"], 1);
}

/// The firmware publishes these models: serialising and re-reading must give the same
/// document, and the JSON must be the same JSON (field spelling included).
#[test]
fn documents_serialise_back_to_the_same_json() {
    fn same<T>(json: &str)
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        let doc: T = serde_json::from_str(json).unwrap();
        let written = serde_json::to_string(&doc).unwrap();
        let again: T = serde_json::from_str(&written).unwrap();
        assert_eq!(doc, again);
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        let written: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(original, written);
    }
    same::<MeasurementsDoc>(MEASUREMENTS_IR);
    same::<MeasurementsDoc>(MEASUREMENTS_MANUAL);
    same::<MeasurementsDoc>(MEASUREMENTS_SINGLE);
    same::<CountersDoc>(COUNTERS_IR_MANUAL);
    same::<CountersDoc>(COUNTERS_WM3M4C);
    same::<sg_wire::message::BicomDoc>(BICOM_IR);
    same::<sg_wire::message::BicomDoc>(BICOM_RS485);
    same::<StatusDoc>(STATUS_HELLO);
}

#[test]
fn commands_txt_examples_parse_and_serialise_exactly() {
    let commands = fixture!("commands.txt");
    let mut seen = 0;
    for line in commands.lines().filter(|l| l.starts_with('{')) {
        let json = line.split("  ").next().unwrap().trim();
        let command = sg_wire::command::Command::parse(json.as_bytes())
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(command.to_json(), json);
        seen += 1;
    }
    assert_eq!(seen, 9);
}
