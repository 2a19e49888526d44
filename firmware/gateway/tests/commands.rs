//! Every command of `commands.txt` does what it says; anything else is reported and
//! harmless.

mod common;

use common::{command_lines, counters, json, measurements, monday, subtopics, Harness};
use sg_gateway_core::{Action, Event, Link, Slot};
use sg_wire::message::RelayState;

/// The example gateway, connected, after its first push was sent.
fn ready() -> Harness {
    let mut h = Harness::example(monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(10, 16, 0), 1);
    h.drain(Link::One);
    h
}

#[test]
fn every_documented_command() {
    let lines = command_lines();
    assert_eq!(lines.len(), 9, "commands.txt changed: {lines:?}");
    let mut h = ready();
    for (command, comment) in lines {
        let action = h.command(Link::One, &command);
        let out = h.drain(Link::One);
        let topics = subtopics(&out);
        match command.as_str() {
            r#"{"data":{"cmd":"bicom","index":0,"val":"on"}}"# => {
                assert_eq!(
                    action,
                    Some(Action::SwitchRelay {
                        slot: Slot::IrRelay,
                        on: true
                    })
                );
                assert!(out.is_empty(), "{comment}: no acknowledgement");
            }
            r#"{"data":{"cmd":"bicom","index":2,"val":"off"}}"#
            | r#"{"data":{"cmd":"bicom","addr":40,"val":"off"}}"# => {
                let expected = Action::SwitchRelay {
                    slot: Slot::Rs485(2),
                    on: false,
                };
                assert_eq!(action, Some(expected), "{comment}");
                assert!(out.is_empty());
            }
            r#"{"data":{"cmd":"bicom","index":2,"val":"state"}}"# => {
                assert_eq!(topics, ["bicom/rs485/2"], "{comment}");
                assert_eq!(
                    json(&out[0])["bicom"]["state"],
                    0,
                    "the relay is off by now"
                );
            }
            r#"{"data":{"cmd":"measurements","index":0}}"# => {
                assert_eq!(topics, ["measurements/ir"], "{comment}");
                let doc = measurements(&out[0]);
                assert_eq!(
                    doc.header.local_time.as_deref(),
                    Some("02.03.2026 10:16:00")
                );
            }
            r#"{"data":{"cmd":"counters","index":1}}"# => {
                assert_eq!(topics, ["counters/rs485/1"], "{comment}");
                counters(&out[0]);
            }
            r#"{"data":{"cmd":"status"}}"# => {
                assert_eq!(topics, ["status"], "{comment}");
                let status = json(&out[0]);
                assert!(status.get("hello").is_none(), "not mistaken for a hello");
                assert_eq!(status["serial number"], common::SERIAL);
            }
            r#"{"data":{"cmd":"get_bicoms"}}"# => {
                assert_eq!(topics, ["status"], "{comment}");
                let bicoms = json(&out[0])["bicoms"].as_array().unwrap().clone();
                let states: Vec<_> = bicoms
                    .iter()
                    .map(|b| b["state"].as_i64().unwrap())
                    .collect();
                assert_eq!(states, [1, 0]);
            }
            r#"{"data":{"cmd":"reboot"}}"# => assert_eq!(action, Some(Action::Reboot)),
            other => panic!("a command this test does not know: {other}"),
        }
    }
}

#[test]
fn malformed_and_unknown_commands_are_rejected_and_harmless() {
    let mut h = ready();
    let big = vec![b' '; sg_wire::MAX_PAYLOAD_BYTES + 1];
    let bad: [&[u8]; 12] = [
        b"",
        b"\xff\xfe",
        b"not json",
        b"{}",
        br#"{"data":{"cmd":"toggle","index":0}}"#,
        br#"{"data":{"cmd":"bicom","index":0}}"#,
        br#"{"data":{"cmd":"bicom","index":5,"val":"on"}}"#,
        br#"{"data":{"cmd":"bicom","addr":41,"val":"on"}}"#,
        br#"{"data":{"cmd":"bicom","index":99,"val":"on"}}"#,
        br#"{"data":{"cmd":"measurements","index":2}}"#,
        br#"{"data":{"cmd":"counters"}}"#,
        &big,
    ];
    let before = h.gw.snapshot();
    for payload in bad {
        let rejected =
            h.gw.on_command(Link::One, payload)
                .expect_err("a rejected command");
        assert_eq!(rejected.link, Link::One);
        assert!(!rejected.reason.is_empty());
    }
    assert!(h.drain(Link::One).is_empty());
    assert_eq!(h.gw.snapshot(), before);
    assert_eq!(h.gw.relay(Slot::IrRelay).unwrap().commanded(), None);
}

#[test]
fn the_state_push_shows_reality_not_the_command() {
    let mut h = ready();
    h.gw.source_mut().set_faulty(Slot::Rs485(2), true);
    h.command(
        Link::One,
        r#"{"data":{"cmd":"bicom","addr":40,"val":"off"}}"#,
    );
    assert_eq!(h.gw.relay(Slot::Rs485(2)).unwrap().commanded(), Some(false));
    h.command(
        Link::One,
        r#"{"data":{"cmd":"bicom","index":2,"val":"state"}}"#,
    );
    let out = h.drain(Link::One);
    assert_eq!(json(&out[0])["bicom"]["state"], 1);
    assert_eq!(h.gw.relay(Slot::Rs485(2)).unwrap().state(), RelayState::On);
    let events: Vec<_> = std::iter::from_fn(|| h.gw.poll_event()).collect();
    assert!(events.contains(&Event::RelayMismatch {
        slot: Slot::Rs485(2),
        commanded: false,
        actual: RelayState::On,
    }));
}

#[test]
fn switching_the_ir_relay_off_cuts_the_ir_meters_load() {
    let mut h = ready();
    h.command(
        Link::One,
        r#"{"data":{"cmd":"bicom","addr":0,"val":"off"}}"#,
    );
    h.run_until(monday(10, 20, 0), 1);
    h.command(Link::One, r#"{"data":{"cmd":"measurements","index":0}}"#);
    let (values, _) =
        sg_wire::message::normalize_measurements(&measurements(&h.drain(Link::One)[0]));
    assert_eq!(values.p_total, Some(0.0));
    assert_eq!(values.i1, Some(0.0));
    // The next periodic push says off.
    h.run_until(monday(10, 30, 0), 1);
    let out = h.drain(Link::One);
    let bicom = out.iter().find(|m| m.topic.ends_with("bicom/ir")).unwrap();
    assert_eq!(json(bicom)["bicom"]["state"], 0);
}

#[test]
fn a_silent_meter_gives_an_error_line_per_push() {
    let mut h = ready();
    h.gw.inject(sg_gateway_core::Fault::MeterSilent {
        slot: Slot::Rs485(1),
        pushes: 2,
    });
    h.command(Link::One, r#"{"data":{"cmd":"measurements","index":1}}"#);
    let out = h.drain(Link::One);
    assert_eq!(subtopics(&out), ["error"]);
    assert_eq!(
        out[0].payload,
        b"Error: RS485 device:1 Energy meter not responding. Addr:11"
    );
    h.run_until(monday(10, 45, 0), 1);
    let topics = subtopics(&h.drain(Link::One));
    let rs485_1: Vec<_> = topics
        .iter()
        .filter(|t| t.ends_with("rs485/1") || *t == "error")
        .collect();
    assert_eq!(
        rs485_1,
        ["error", "measurements/rs485/1", "counters/rs485/1"]
    );
    assert!(matches!(
        h.gw.poll_event(),
        Some(Event::ReadFailed {
            slot: Slot::Rs485(1),
            ..
        })
    ));
}

#[test]
fn go_offline_and_unknown_device_faults() {
    let mut h = ready();
    assert_eq!(
        h.gw.inject(sg_gateway_core::Fault::GoOffline { secs: 120 }),
        Some(Action::GoOffline { secs: 120 })
    );
    let fault = sg_gateway_core::Fault::CounterReset {
        slot: Slot::Rs485(9),
    };
    assert_eq!(h.gw.inject(fault), None);
    assert_eq!(h.gw.poll_event(), Some(Event::FaultIgnored(fault)));
}
