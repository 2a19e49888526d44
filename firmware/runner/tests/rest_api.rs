//! The SG JSON API in the shapes pyiskra reads (`pyiskra/adapters/RestAPI.py`): the gateway
//! under `device` with `model_type`/`serial_number`, the device list in the SG's order with
//! `Disabled` and `Not Detected`, measurements as `{"value", "unit"}` in base units, counters
//! in Wh/varh/VAh with their direction, the login cookie and its 403, JSON 404s. Documents are
//! the SG fixtures of `tests/fixtures/sg-mqtt`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sg_gateway::rest::{router, DocError, DocRequest, Documents, GatewayInfo, Login, Position};
use sg_gateway::source::Direction;
use sg_gateway_core::config::Slot;
use sg_gateway_core::Fault;
use tower::ServiceExt;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../tests/fixtures/sg-mqtt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A gateway with the single-phase WM1-6 in RS485 1 (measurements fixture), the WM3M4C in
/// RS485 2 (counters fixture), a silent meter in RS485 3 and the IR relay.
struct Fixtures;

impl Documents for Fixtures {
    fn document(&self, request: DocRequest) -> Result<String, DocError> {
        match request {
            DocRequest::Measurements(1) => Ok(fixture("measurements-rs485-1-single-phase.json")),
            DocRequest::Counters(2) => Ok(fixture("counters-rs485-2-wm3m4c.json")),
            DocRequest::Measurements(0) => Ok(fixture("measurements-ir.json")),
            DocRequest::Counters(0) => Ok(fixture("counters-ir-manual.json")),
            _ => Err(DocError::NotResponding("no reading yet".into())),
        }
    }

    fn stats(&self) -> Value {
        json!({})
    }

    fn inject(&self, _fault: Fault) -> Result<(), String> {
        Ok(())
    }

    fn gateway_info(&self) -> GatewayInfo {
        GatewayInfo {
            model: "SG-W1".into(),
            serial: "SG000017".into(),
            sw_ver: "0.51".into(),
            description: String::new(),
            location: String::new(),
        }
    }

    fn positions(&self) -> Vec<Position> {
        let position = |slot, model: &str, serial: &str, phases, detected| Position {
            slot,
            model: model.into(),
            serial: serial.into(),
            description: "Heat pump".into(),
            location: "Basement".into(),
            phases,
            detected,
        };
        vec![
            position(Slot::IrMeter, "IE38MD", "X0000124", Some(3), true),
            position(Slot::IrRelay, "IR Bicom", "", None, true),
            position(Slot::Rs485(1), "WM1-6", "21450077", Some(1), true),
            position(Slot::Rs485(2), "WM3M4C", "18230001", Some(3), true),
            position(Slot::Rs485(3), "WM3M4C", "18230002", Some(3), false),
        ]
    }

    fn directions(&self, slot: Slot) -> BTreeMap<String, Direction> {
        match slot {
            Slot::Rs485(2) => [
                ("counter1nr".to_owned(), Direction::Import),
                ("counter2nr".to_owned(), Direction::Export),
            ]
            .into(),
            _ => BTreeMap::new(),
        }
    }
}

async fn call(login: Option<Login>, uri: &str, cookie: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(uri);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = router(Arc::new(Fixtures), login)
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(uri: &str) -> (StatusCode, Value) {
    call(None, uri, None).await
}

#[tokio::test]
async fn the_gateway_answers_with_its_model_and_serial() {
    let (status, body) = get("/api").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "device": { "model_type": "SG-W1", "serial_number": "SG000017",
                            "description": "", "location": "", "sw_ver": "0.51" } })
    );
}

#[tokio::test]
async fn devices_are_listed_in_the_sg_order() {
    let (status, body) = get("/api/devices").await;
    assert_eq!(status, StatusCode::OK);
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2 + 16, "Left IR, Right IR, RS485 1..16");
    let pairs: Vec<(&str, &str)> = devices
        .iter()
        .take(6)
        .map(|d| {
            (
                d["interface"].as_str().unwrap(),
                d["model"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("Left IR", "IE38MD"),
            ("Right IR", "IR Bicom"),
            ("RS485 1", "WM1-6"),
            ("RS485 2", "WM3M4C"),
            ("RS485 3", "Not Detected"),
            ("RS485 4", "Disabled"),
        ]
    );
    assert_eq!(devices[2]["serial"], "21450077");
    assert_eq!(devices[2]["location"], "Basement");
    assert_eq!(devices[17]["interface"], "RS485 16");
}

#[tokio::test]
async fn measurements_are_values_with_base_units() {
    let (status, body) = get("/api/measurement/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m = &body["measurements"];
    let phases = m["Phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "a single-phase meter");
    let phase = &phases[0];
    assert_eq!(phase["U"], json!({ "value": 231.0, "unit": "V" }));
    assert_eq!(phase["I"], json!({ "value": 9.84, "unit": "A" }));
    // "2.21 kW" is 2210 W: no kilo prefixes.
    assert_eq!(phase["P"], json!({ "value": 2210.0, "unit": "W" }));
    assert_eq!(phase["Q"], json!({ "value": 412.0, "unit": "var" }));
    assert_eq!(phase["S"], json!({ "value": 2270.0, "unit": "VA" }));
    assert_eq!(phase["PF"], json!({ "value": 0.9731, "unit": "" }));
    assert_eq!(phase["PA"], json!({ "value": 13.36, "unit": "°" }));
    assert_eq!(phase["THDUp"], json!({ "value": 1.9, "unit": "%" }));
    assert_eq!(phase["THDI"], json!({ "value": 6.2, "unit": "%" }));
    assert_eq!(m["Total"]["P"], json!({ "value": 2210.0, "unit": "W" }));
    assert_eq!(m["Total"]["S"], json!({ "value": 2270.0, "unit": "VA" }));
    assert_eq!(m["Frequency"], json!({ "value": 50.0, "unit": "Hz" }));
    assert_eq!(m["Temperature"], json!({ "value": 28.1, "unit": "°C" }));
}

#[tokio::test]
async fn a_three_phase_meter_has_three_phases_and_n_a_is_left_out() {
    let (status, body) = get("/api/measurement/0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let phases = body["measurements"]["Phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3);
    for phase in phases {
        for value in phase.as_object().unwrap().values() {
            assert!(value["value"].is_number(), "{phase}");
            let unit = value["unit"].as_str().unwrap();
            assert!(!unit.starts_with('k'), "no kilo prefix: {phase}");
        }
    }
}

#[tokio::test]
async fn counters_are_in_wh_with_their_direction() {
    let (status, body) = get("/api/counter/2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "counters": {
            "non_resettable": [
                { "name": "counter1nr", "value": 184_233_125.0, "unit": "Wh", "direction": "import" },
                { "name": "counter2nr", "value": 12.5, "unit": "Wh", "direction": "export" },
            ],
            "resettable": [],
        } })
    );
    // Without a known configuration the direction is left out, never guessed.
    let (status, body) = get("/api/counter/0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let registers = body["counters"]["non_resettable"].as_array().unwrap();
    assert!(!registers.is_empty());
    assert!(registers.iter().all(|r| r.get("direction").is_none()));
    let units: Vec<_> = registers.iter().map(|r| r["unit"].clone()).collect();
    assert!(units
        .iter()
        .all(|u| ["Wh", "varh", "VAh"].contains(&u.as_str().unwrap())));
}

#[tokio::test]
async fn an_index_without_a_meter_is_a_json_404_and_a_silent_meter_504() {
    for uri in [
        "/api/measurement/17",
        "/api/measurement/x",
        "/api/counter/-1",
        "/api/counter/4",
        "/api/nothing",
    ] {
        let (status, body) = get(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(body["error"].is_string(), "{uri}: {body}");
    }
    let (status, body) = get("/api/measurement/3").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        body["error"].as_str().unwrap().contains("RS485 3"),
        "{body}"
    );
}

#[tokio::test]
async fn the_login_cookie_is_required_and_checked() {
    let login = || Some(Login::new("admin", "s3cret").unwrap());
    // base64("admin:s3cret") and base64("admin:wrong")
    let good = "Authorization=Basic YWRtaW46czNjcmV0";
    let bad = "Authorization=Basic YWRtaW46d3Jvbmc=";
    for uri in [
        "/api",
        "/api/devices",
        "/api/measurement/1",
        "/get_command?command=get_measurements1",
        "/stats",
    ] {
        let (status, body) = call(login(), uri, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(body["error"].is_string());
        let (status, _) = call(login(), uri, Some(bad)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        let (status, _) = call(login(), uri, Some(good)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}
