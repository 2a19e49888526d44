//! Modbus TCP polling end to end: Headend polls a simulated RS485/IP converter (a Modbus TCP
//! server with the registers of `tests/fixtures/modbus/`) and stores what it reads through the
//! journal; faults of one unit stay that unit's; relays and counter resets go through the bus.

use std::net::SocketAddr;
use std::time::Duration;

use headend::config::Config;
use headend_e2e::converter::{
    Fault, SimConverter, SimOptions, SPEC_046_77_UNIT, SPEC_BICOM_UNIT, SPEC_EMDX3_UNIT,
    SPEC_ISKRA_UNIT,
};
use headend_e2e::{eventually, MqttClient, TestApp};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Fast timing for tests: short backoff so recovery is quick, the seeds' 200 ms timeout.
fn fast(config: &mut Config) {
    config.modbus.timeout_ms = 200;
    config.modbus.gap_ms = 2;
    config.modbus.retries = 1;
    config.modbus.backoff_min_ms = 500;
    config.modbus.backoff_max_ms = 2_000;
}

async fn admin(app: &TestApp) -> String {
    app.user_token("admin@example.com", "admin", &[]).await
}

async fn create_converter(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .request("POST", "/api/v1/converters", Some(token), Some(body))
        .await;
    assert_eq!(response.status, 201, "create converter: {}", response.body);
    response.json()
}

fn converter_body(name: &str, addr: SocketAddr, site: Option<i64>, devices: Value) -> Value {
    json!({
        "name": name, "host": addr.ip().to_string(), "port": addr.port(),
        "site_id": site, "devices": devices,
    })
}

/// The newest value of a measurement column of the meter at `unit` behind converter `name`.
async fn measurement(app: &TestApp, name: &str, unit: u8, column: &str) -> Option<f32> {
    sqlx::query_scalar::<_, Option<f32>>(&format!(
        "SELECT m.{column} FROM measurements m JOIN devices d ON d.id = m.device_id
         JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = $1 AND d.port = 'modbus' AND d.slot = $2 AND d.kind = 'meter'
         ORDER BY m.ts DESC LIMIT 1"
    ))
    .bind(name)
    .bind(i16::from(unit))
    .fetch_optional(&app.pool)
    .await
    .expect("measurement query")
    .flatten()
}

async fn counter(app: &TestApp, name: &str, unit: u8, counter: &str) -> Option<(i64, bool)> {
    sqlx::query_as(
        "SELECT r.value_milli, c.resettable FROM counter_readings r
         JOIN counters c ON c.id = r.counter_id JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = $1 AND d.slot = $2 AND d.port = 'modbus' AND c.name = $3
         ORDER BY r.ts DESC LIMIT 1",
    )
    .bind(name)
    .bind(i16::from(unit))
    .bind(counter)
    .fetch_optional(&app.pool)
    .await
    .expect("counter query")
}

async fn wait_measurement(app: &TestApp, name: &str, unit: u8, column: &str) -> f32 {
    eventually(WAIT, || measurement(app, name, unit, column))
        .await
        .unwrap_or_else(|| panic!("no {column} stored for unit {unit}"))
}

/// The polled device of `unit` as the API shows it.
async fn polled(app: &TestApp, token: &str, id: i64, unit: u8) -> Value {
    let response = app.get(&format!("/api/v1/converters/{id}"), token).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["unit"] == json!(unit))
        .cloned()
        .unwrap_or_else(|| panic!("unit {unit} not listed"))
}

async fn wait_comm(app: &TestApp, token: &str, id: i64, unit: u8, comm: &str) -> Value {
    eventually(WAIT, || async {
        let d = polled(app, token, id, unit).await;
        (d["comm"] == comm).then_some(d)
    })
    .await
    .unwrap_or_else(|| {
        panic!("unit {unit} never reached comm {comm:?}");
    })
}

#[tokio::test]
async fn spec_values_land_in_storage_exactly() {
    let sim = SimConverter::spec(SimOptions::default());
    let app = TestApp::spawn_with(fast).await;
    let token = admin(&app).await;
    let created = create_converter(
        &app,
        &token,
        converter_body(
            "cv-spec",
            sim.addr(),
            None,
            json!([
                { "unit": SPEC_EMDX3_UNIT, "model": "legrand-emdx3", "poll_interval_ms": 200 },
                { "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 },
                { "unit": SPEC_ISKRA_UNIT, "model": "iskra-meter", "poll_interval_ms": 200 },
                { "unit": SPEC_BICOM_UNIT, "model": "iskra-bicom", "kind": "relay", "poll_interval_ms": 200 },
            ]),
        ),
    )
    .await;
    let id = created["id"].as_i64().unwrap();

    // FF FF FF ED at 0.01 kW: -0.19 kW.
    assert_eq!(
        wait_measurement(&app, "cv-spec", SPEC_EMDX3_UNIT, "p").await,
        -190.0
    );
    // 00 03 99 18 mV and 00 52.
    assert_eq!(
        wait_measurement(&app, "cv-spec", SPEC_046_77_UNIT, "u1").await,
        235.8
    );
    assert_eq!(
        wait_measurement(&app, "cv-spec", SPEC_046_77_UNIT, "pf").await,
        0.82
    );
    assert_eq!(
        wait_measurement(&app, "cv-spec", SPEC_ISKRA_UNIT, "pf2").await,
        -0.8984
    );
    let exact = |unit, name: &'static str| {
        let app = &app;
        async move { eventually(WAIT, || counter(app, "cv-spec", unit, name)).await }
    };
    assert_eq!(
        exact(SPEC_046_77_UNIT, "counter1nr").await,
        Some((1_234_560_000, false))
    );
    assert_eq!(
        exact(SPEC_046_77_UNIT, "counter1").await,
        Some((20_000, true))
    );
    assert_eq!(
        exact(SPEC_ISKRA_UNIT, "counter1nr").await,
        Some((12_345_678_000, false))
    );
    let relay: i16 = eventually(WAIT, || async {
        sqlx::query_scalar(
            "SELECT s.state FROM relay_states s JOIN devices d ON d.id = s.device_id
             WHERE d.port = 'modbus' AND d.slot = 20 AND d.kind = 'relay' ORDER BY s.ts DESC LIMIT 1",
        )
        .fetch_optional(&app.pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .expect("relay state");
    assert_eq!(relay, 0);

    // The converter is a gateway on line; every unit communicates.
    let converter = app
        .get(&format!("/api/v1/converters/{id}"), &token)
        .await
        .json();
    assert_eq!(converter["online"], true, "{converter}");
    for unit in [
        SPEC_EMDX3_UNIT,
        SPEC_046_77_UNIT,
        SPEC_ISKRA_UNIT,
        SPEC_BICOM_UNIT,
    ] {
        wait_comm(&app, &token, id, unit, "ok").await;
    }
    // Polled meters are ordinary devices: the device list shows them with port modbus.
    let devices = app.get("/api/v1/devices", &token).await.json();
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["port"] == "modbus" && d["slot"] == 6 && d["gateway"] == "cv-spec"));
    app.stop().await;
}

/// A map that also asks for 0x4000, which unit 1 answers with 83 01.
const PROBE_MAP: &str = r#"
model = "emdx3-probe"
description = "EMDX3 active power plus a register the meter refuses"
notation = "wire"
function = "holding"

[[readable]]
first = 0x4000
last = 0x4000

[[readable]]
first = 0xC786
last = 0xC78F

[[measurement]]
column = "temperature"
register = 0x4000
type = "u16"
unit = "degC"

[[measurement]]
column = "p"
register = 0xC786
type = "i32"
scale = "0.01"
unit = "kW"
"#;

#[tokio::test]
async fn exception_83_01_is_logged_and_visible_and_the_bus_keeps_working() {
    let sim = SimConverter::spec(SimOptions::default());
    let maps = tempfile::tempdir().unwrap();
    std::fs::write(maps.path().join("probe.toml"), PROBE_MAP).unwrap();
    let dir = maps.path().to_path_buf();
    let app = TestApp::spawn_with(move |c| {
        fast(c);
        c.modbus.maps_dir = Some(dir);
    })
    .await;
    let token = admin(&app).await;
    let id = create_converter(
        &app,
        &token,
        converter_body(
            "cv-exc",
            sim.addr(),
            None,
            json!([
                { "unit": SPEC_EMDX3_UNIT, "model": "emdx3-probe", "poll_interval_ms": 200 },
                { "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 },
            ]),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    // The refused register is named with the exception's meaning on the device's row...
    let device = eventually(WAIT, || async {
        let d = polled(&app, &token, id, SPEC_EMDX3_UNIT).await;
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exception 01"))
            .then_some(d)
    })
    .await
    .expect("exception visible on the device");
    let error = device["last_error"].as_str().unwrap();
    assert!(error.contains("0x4000"), "{error}");
    assert!(error.contains("function not supported"), "{error}");
    assert!(error.contains("function 3"), "{error}");
    // ...the device still answers (an exception is an answer), its other block is stored...
    assert_eq!(device["comm"], "ok");
    assert_eq!(
        wait_measurement(&app, "cv-exc", SPEC_EMDX3_UNIT, "p").await,
        -190.0
    );
    assert_eq!(
        measurement(&app, "cv-exc", SPEC_EMDX3_UNIT, "temperature").await,
        None
    );
    // ...the issue is kept as a partial reject of the converter...
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE client = 'cv-exc' AND partial
           AND reason LIKE '%exception 01%'",
        1,
    )
    .await;
    assert!(app.metric("headend_modbus_exceptions_total").await >= Some(1.0));
    // ...and the other unit keeps being polled.
    let before = sim.requests(SPEC_046_77_UNIT);
    eventually(WAIT, || async {
        (sim.requests(SPEC_046_77_UNIT) >= before + 5).then_some(())
    })
    .await
    .expect("unit 6 keeps being polled");
    assert_eq!(
        wait_measurement(&app, "cv-exc", SPEC_046_77_UNIT, "u1").await,
        235.8
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dead_unit_is_backed_off_and_does_not_slow_the_others() {
    let sim = SimConverter::spec(SimOptions::default());
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::Dead);
    let app = TestApp::spawn_with(fast).await;
    let token = admin(&app).await;
    let id = create_converter(
        &app,
        &token,
        converter_body(
            "cv-dead",
            sim.addr(),
            None,
            json!([
                { "unit": SPEC_EMDX3_UNIT, "model": "legrand-emdx3", "poll_interval_ms": 200 },
                { "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 },
                { "unit": SPEC_BICOM_UNIT, "model": "iskra-bicom", "kind": "relay", "poll_interval_ms": 200 },
            ]),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    // Communication loss is visible through the API.
    let dead = wait_comm(&app, &token, id, SPEC_EMDX3_UNIT, "failing").await;
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("no reply within 200 ms"),
        "{dead}"
    );
    assert!(dead["backoff_until"].is_string(), "{dead}");
    app.wait_count(
        "SELECT count(*) FROM gateway_events e JOIN gateways g ON g.id = e.gateway_id
         WHERE g.serial = 'cv-dead' AND e.kind = 'error' AND e.body LIKE 'unit 1:%'",
        1,
    )
    .await;

    // Over a window in which each healthy unit is polled 20 times (one block each), the dead
    // one is asked at most once per backoff period: 500 ms, 1 s, then 2 s.
    let (dead0, ok0, relay0) = (
        sim.requests(SPEC_EMDX3_UNIT),
        sim.requests(SPEC_046_77_UNIT),
        sim.requests(SPEC_BICOM_UNIT),
    );
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(60), || async {
        (sim.requests(SPEC_046_77_UNIT) >= ok0 + 20).then_some(())
    })
    .await
    .expect("the healthy meter keeps its schedule");
    let window = started.elapsed();
    let dead_asked = sim.requests(SPEC_EMDX3_UNIT) - dead0;
    let relay_asked = sim.requests(SPEC_BICOM_UNIT) - relay0;
    // Backoff periods in the window, at least 500 ms each; +1 for one already due.
    let allowed = window.as_millis() as u64 / 500 + 1;
    assert!(
        dead_asked <= allowed,
        "dead unit asked {dead_asked} times in {window:?} (at most {allowed})"
    );
    // Both healthy units run on the same interval: neither waits behind the dead one.
    assert!(
        relay_asked * 10 >= 20 * 8,
        "relay polled {relay_asked} times while the meter was polled 20 times"
    );
    assert!(app.metric("headend_modbus_poll_failures_total").await >= Some(1.0));
    assert!(app.metric("headend_modbus_polls_total").await >= Some(20.0));
    // Back to life: polled again after its backoff, and its state clears.
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::None);
    wait_comm(&app, &token, id, SPEC_EMDX3_UNIT, "ok").await;
    assert_eq!(
        wait_measurement(&app, "cv-dead", SPEC_EMDX3_UNIT, "p").await,
        -190.0
    );
    app.stop().await;
}

#[tokio::test]
async fn short_wrong_unit_and_gateway_exception_replies_are_rejected() {
    let sim = SimConverter::spec(SimOptions::default());
    sim.set_fault(SPEC_046_77_UNIT, Fault::ShortReply);
    sim.set_fault(SPEC_ISKRA_UNIT, Fault::WrongUnit);
    sim.set_fault(SPEC_BICOM_UNIT, Fault::Exception(0x0B));
    let app = TestApp::spawn_with(fast).await;
    let token = admin(&app).await;
    let id = create_converter(
        &app,
        &token,
        converter_body(
            "cv-bad",
            sim.addr(),
            None,
            json!([
                { "unit": SPEC_EMDX3_UNIT, "model": "legrand-emdx3", "poll_interval_ms": 200 },
                { "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 },
                { "unit": SPEC_ISKRA_UNIT, "model": "iskra-meter", "poll_interval_ms": 200 },
                { "unit": SPEC_BICOM_UNIT, "model": "iskra-bicom", "kind": "relay", "poll_interval_ms": 200 },
            ]),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let short = wait_comm(&app, &token, id, SPEC_046_77_UNIT, "failing").await;
    assert!(
        short["last_error"]
            .as_str()
            .unwrap()
            .contains("short reply"),
        "{short}"
    );
    let wrong = wait_comm(&app, &token, id, SPEC_ISKRA_UNIT, "failing").await;
    assert!(
        wrong["last_error"]
            .as_str()
            .unwrap()
            .contains("reply rejected"),
        "{wrong}"
    );
    let gateway = wait_comm(&app, &token, id, SPEC_BICOM_UNIT, "failing").await;
    assert!(
        gateway["last_error"]
            .as_str()
            .unwrap()
            .contains("exception 0B"),
        "{gateway}"
    );
    // Nothing of the rejected replies was stored; the healthy unit was.
    assert_eq!(
        wait_measurement(&app, "cv-bad", SPEC_EMDX3_UNIT, "p").await,
        -190.0
    );
    for unit in [SPEC_046_77_UNIT, SPEC_ISKRA_UNIT] {
        assert_eq!(measurement(&app, "cv-bad", unit, "u1").await, None);
    }
    assert_eq!(
        app.count(
            "SELECT count(*) FROM relay_states s JOIN devices d ON d.id = s.device_id
             WHERE d.port = 'modbus' AND d.slot = 20"
        )
        .await,
        0
    );
    app.stop().await;
}

/// A TCP relay on a fixed port in front of the simulated converter, to take the converter
/// off the network and bring it back on the same address.
struct Link {
    stop: CancellationToken,
}

impl Link {
    async fn up(listen: SocketAddr, target: SocketAddr) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("bind link");
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = s.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let s = s.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = tokio::net::TcpStream::connect(target).await else { return };
                            tokio::select! {
                                () = s.cancelled() => {}
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            }
                        });
                    }
                }
            }
        });
        (Self { stop }, addr)
    }

    fn down(self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn converter_down_and_back_goes_offline_then_online() {
    let sim = SimConverter::spec(SimOptions::default());
    let (link, addr) = Link::up("127.0.0.1:0".parse().unwrap(), sim.addr()).await;
    let app = TestApp::spawn_with(fast).await;
    let token = admin(&app).await;
    let id = create_converter(
        &app,
        &token,
        converter_body(
            "cv-link",
            addr,
            None,
            json!([{ "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 }]),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let online = |want: bool| {
        let (app, token) = (&app, &token);
        async move {
            eventually(WAIT, || async {
                let c = app
                    .get(&format!("/api/v1/converters/{id}"), token)
                    .await
                    .json();
                (c["online"] == want).then_some(c)
            })
            .await
            .unwrap_or_else(|| panic!("converter never became online={want}"))
        }
    };
    online(true).await;
    link.down();
    let down = online(false).await;
    assert!(down["last_error"].is_string(), "{down}");
    app.wait_count(
        "SELECT count(*) FROM gateway_events e JOIN gateways g ON g.id = e.gateway_id
         WHERE g.serial = 'cv-link' AND e.kind = 'disconnect'",
        1,
    )
    .await;
    let (_link, _) = Link::up(addr, sim.addr()).await;
    online(true).await;
    let before = sim.requests(SPEC_046_77_UNIT);
    eventually(WAIT, || async {
        (sim.requests(SPEC_046_77_UNIT) > before).then_some(())
    })
    .await
    .expect("polled again after the link is back");
    app.stop().await;
}

async fn command_status(app: &TestApp, token: &str, command: i64) -> String {
    app.get(&format!("/api/v1/commands/{command}"), token)
        .await
        .json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_relay_on_a_converter_is_commanded_through_the_ledger_and_confirmed_by_read_back() {
    let sim = SimConverter::spec(SimOptions::default());
    let app = TestApp::spawn_with(fast).await;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let token = admin(&app).await;
    create_converter(
        &app,
        &token,
        converter_body(
            "cv-relay",
            sim.addr(),
            Some(site),
            json!([{ "unit": SPEC_BICOM_UNIT, "model": "iskra-bicom", "kind": "relay", "poll_interval_ms": 5000 }]),
        ),
    )
    .await;
    let operator = app.user_token("op@example.com", "operator", &[site]).await;
    let relays = app.get("/api/v1/relays", &operator).await.json();
    let relay = relays
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["gateway"] == "cv-relay" && r["port"] == "modbus")
        .cloned()
        .expect("the converter's relay is listed");
    let relay_id = relay["id"].as_i64().unwrap();
    // The converter must be on line before a command can be sent.
    eventually(WAIT, || async {
        let r = app
            .get(&format!("/api/v1/relays/{relay_id}"), &operator)
            .await
            .json();
        (r["gateway_online"] == true && r["state"] == 0).then_some(())
    })
    .await
    .expect("relay state known and converter online");

    let response = app
        .request(
            "POST",
            &format!("/api/v1/relays/{relay_id}/commands"),
            Some(&operator),
            Some(json!({ "action": "on", "reason": "test" })),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.body);
    let command = response.json()["id"].as_i64().unwrap();
    let status = eventually(WAIT, || async {
        let s = command_status(&app, &operator, command).await;
        (s == "confirmed" || s == "failed" || s == "expired").then_some(s)
    })
    .await
    .expect("command settled");
    assert_eq!(status, "confirmed");
    // Holding register 141 was written with 1; the state register followed.
    assert_eq!(sim.holding(SPEC_BICOM_UNIT, 141, 1), vec![1]);
    assert_eq!(sim.input(SPEC_BICOM_UNIT, 101, 1), vec![1]);
    let shown = app
        .get(&format!("/api/v1/relays/{relay_id}"), &operator)
        .await
        .json();
    assert_eq!(shown["state"], 1, "{shown}");
    app.stop().await;
}

#[tokio::test]
async fn an_admin_counter_reset_is_recorded_and_accounted_as_a_reset() {
    let sim = SimConverter::spec(SimOptions::default());
    let app = TestApp::spawn_with(fast).await;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    let token = admin(&app).await;
    create_converter(
        &app,
        &token,
        converter_body(
            "cv-reset",
            sim.addr(),
            Some(site),
            json!([{ "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 }]),
        ),
    )
    .await;
    assert_eq!(
        eventually(WAIT, || counter(
            &app,
            "cv-reset",
            SPEC_046_77_UNIT,
            "counter1"
        ))
        .await,
        Some((20_000, true))
    );
    let device: i64 = sqlx::query_scalar(
        "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = 'cv-reset' AND d.kind = 'meter'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/devices/{device}/counters/counter1/reset");
    // Operators may not; a reason is required; a counter without a reset register is refused.
    let operator = app.user_token("op@example.com", "operator", &[site]).await;
    let refused = app
        .request(
            "POST",
            &path,
            Some(&operator),
            Some(json!({ "reason": "x" })),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refused = app
        .request("POST", &path, Some(&token), Some(json!({ "reason": "  " })))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let refused = app
        .request(
            "POST",
            &format!("/api/v1/devices/{device}/counters/counter1nr/reset"),
            Some(&token),
            Some(json!({ "reason": "no" })),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("counter1"), "{}", refused.body);

    let done = app
        .request(
            "POST",
            &path,
            Some(&token),
            Some(json!({ "reason": "new tenant <b>\"A\"</b>" })),
        )
        .await;
    assert_eq!(done.status, 201, "{}", done.body);
    let record = done.json();
    assert_eq!(record["status"], "done");
    assert_eq!(record["requested_email"], "admin@example.com");
    assert_eq!(record["reason"], "new tenant <b>\"A\"</b>");
    // The meter zeroed its partial energy (through the 0x00C8 write), Headend read it back.
    assert_eq!(sim.holding(SPEC_046_77_UNIT, 0x200C, 2), vec![0, 0]);
    eventually(WAIT, || async {
        (counter(&app, "cv-reset", SPEC_046_77_UNIT, "counter1").await == Some((0, true)))
            .then_some(())
    })
    .await
    .expect("the zeroed counter is stored");
    // The meter counts on: 0.05 kWh.
    sim.set_holding(SPEC_046_77_UNIT, 0x200C, &[0, 5]);
    eventually(WAIT, || async {
        (counter(&app, "cv-reset", SPEC_046_77_UNIT, "counter1").await == Some((50_000, true)))
            .then_some(())
    })
    .await
    .expect("the counter counts again");
    // Energy accounting took the drop as a reset: no glitch, no exchange...
    app.wait_count(
        "SELECT count(*) FROM counter_events e JOIN counters c ON c.id = e.counter_id
         WHERE c.name = 'counter1' AND e.kind = 'reset' AND e.previous = 20000 AND e.value = 0",
        1,
    )
    .await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM counter_events e JOIN counters c ON c.id = e.counter_id
             WHERE c.name = 'counter1' AND e.kind <> 'reset'"
        )
        .await,
        0
    );
    // ...so the energy over the stored readings is what the meter counted: 0 before the
    // reset (the value stood still), then the 0.05 kWh counted after it.
    let readings: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT r.ts, r.value_milli FROM counter_readings r JOIN counters c ON c.id = r.counter_id
         WHERE c.name = 'counter1' ORDER BY r.ts",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let readings: Vec<headend_energy::engine::Reading> = readings
        .iter()
        .map(|(ts, v)| headend_energy::engine::Reading {
            ts_ms: ts.timestamp_millis(),
            value: *v,
        })
        .collect();
    let outcome = headend_energy::engine::compute(
        &readings,
        headend_energy::engine::Register { resettable: true },
        &headend_energy::engine::Params {
            tolerance_ms: 120_000,
        },
    );
    assert!(outcome.ignored.len() <= 1, "{:?}", outcome.ignored);
    assert!(outcome
        .events
        .iter()
        .all(|e| e.kind == headend_energy::engine::EventKind::Reset));
    let counted: i64 = readings
        .windows(2)
        .map(|w| {
            if w[1].value < w[0].value {
                w[1].value
            } else {
                w[1].value - w[0].value
            }
        })
        .sum();
    assert_eq!(counted, 50_000);
    app.wait_count(
        "SELECT count(*) FROM counter_resets WHERE counter = 'counter1' AND status = 'done'",
        1,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn users_of_other_sites_see_nothing_of_a_converter() {
    let sim = SimConverter::spec(SimOptions::default());
    let app = TestApp::spawn_with(fast).await;
    let (a, b) = (
        app.site("A", "Europe/Ljubljana").await,
        app.site("B", "Europe/Ljubljana").await,
    );
    let token = admin(&app).await;
    let id = create_converter(
        &app,
        &token,
        converter_body(
            "cv-a",
            sim.addr(),
            Some(a),
            json!([
                { "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 500 },
                { "unit": SPEC_BICOM_UNIT, "model": "iskra-bicom", "kind": "relay", "poll_interval_ms": 500 },
            ]),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    wait_measurement(&app, "cv-a", SPEC_046_77_UNIT, "u1").await;
    let viewer_b = app.user_token("vb@example.com", "viewer", &[b]).await;
    let operator_b = app.user_token("ob@example.com", "operator", &[b]).await;
    let viewer_a = app.user_token("va@example.com", "viewer", &[a]).await;
    assert_eq!(
        app.get("/api/v1/converters", &viewer_b).await.json(),
        json!([])
    );
    assert_eq!(
        app.get(&format!("/api/v1/converters/{id}"), &viewer_b)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/api/v1/converters/{id}"), &viewer_a)
            .await
            .status,
        200
    );
    let relays = app.get("/api/v1/relays", &operator_b).await.json();
    assert_eq!(relays, json!([]));
    let (meter, relay): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT id FROM devices WHERE port = 'modbus' AND kind = 'meter'),
                (SELECT id FROM devices WHERE port = 'modbus' AND kind = 'relay')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let command = app
        .request(
            "POST",
            &format!("/api/v1/relays/{relay}/commands"),
            Some(&operator_b),
            Some(json!({ "action": "off" })),
        )
        .await;
    assert_eq!(command.status, 404, "{}", command.body);
    let reset = app
        .request(
            "POST",
            &format!("/api/v1/devices/{meter}/counters/counter1/reset"),
            Some(&viewer_b),
            Some(json!({ "reason": "x" })),
        )
        .await;
    assert_eq!(reset.status, 403, "{}", reset.body);
    // Writes are for admins only, whatever the site.
    let patch = app
        .request(
            "PATCH",
            &format!("/api/v1/converters/{id}"),
            Some(&viewer_a),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(patch.status, 403);
    assert_eq!(sim.holding(SPEC_046_77_UNIT, 0x200C, 2), vec![0, 2]);
    app.stop().await;
}

#[tokio::test]
async fn converter_api_validates_and_a_converter_never_logs_in_over_mqtt() {
    let app = TestApp::spawn_with(fast).await;
    let token = admin(&app).await;
    let post = |body: Value| {
        let (app, token) = (&app, &token);
        async move {
            app.request("POST", "/api/v1/converters", Some(token), Some(body))
                .await
        }
    };
    let base = |host: &str, port: u16, devices: Value| json!({ "name": "cv-v", "host": host, "port": port, "devices": devices });
    for (body, want) in [
        (base("http://10.0.0.5", 502, json!([])), "host"),
        (base("10.0.0.5 ; drop", 502, json!([])), "host"),
        (base("10.0.0.5", 0, json!([])), "port"),
        (
            base(
                "10.0.0.5",
                502,
                json!([{ "unit": 0, "model": "legrand-emdx3" }]),
            ),
            "unit 0",
        ),
        (
            base(
                "10.0.0.5",
                502,
                json!([{ "unit": 248, "model": "legrand-emdx3" }]),
            ),
            "unit 248",
        ),
        (
            base("10.0.0.5", 502, json!([{ "unit": 3, "model": "<script>" }])),
            "known models: iskra-bicom, iskra-meter, legrand-046-77, legrand-emdx3",
        ),
        (
            base(
                "10.0.0.5",
                502,
                json!([{ "unit": 3, "model": "legrand-emdx3", "kind": "relay" }]),
            ),
            "no relay",
        ),
        (json!({ "name": "bad name!", "host": "10.0.0.5" }), "serial"),
    ] {
        let response = post(body.clone()).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert!(response.body.contains(want), "{body}: {}", response.body);
    }
    let created = post(base(
        "127.0.0.1",
        9,
        json!([{ "unit": 3, "model": "legrand-emdx3" }]),
    ))
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_i64().unwrap();
    assert_eq!(post(base("127.0.0.1", 9, json!([]))).await.status, 409);
    // A gateway's serial is taken too.
    app.gateway("SG000001", None, None).await;
    let taken = post(json!({ "name": "SG000001", "host": "10.0.0.1" })).await;
    assert_eq!(taken.status, 409, "{}", taken.body);

    let add = |unit: i64| {
        let (app, token) = (&app, &token);
        async move {
            app.request(
                "POST",
                &format!("/api/v1/converters/{id}/devices"),
                Some(token),
                Some(json!({ "unit": unit, "model": "iskra-meter", "poll_interval_ms": 1000 })),
            )
            .await
        }
    };
    assert_eq!(add(4).await.status, 201);
    assert_eq!(add(4).await.status, 409);
    assert_eq!(add(300).await.status, 400);
    let patched = app
        .request(
            "PATCH",
            &format!("/api/v1/converters/{id}"),
            Some(&token),
            Some(json!({ "host": "converter-1.plant.example", "timeout_ms": 300 })),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.json()["host"], "converter-1.plant.example");
    let patched = app
        .request(
            "PATCH",
            &format!("/api/v1/converters/{id}/devices/4"),
            Some(&token),
            Some(json!({ "model": "nope" })),
        )
        .await;
    assert_eq!(patched.status, 400);
    assert_eq!(
        app.request(
            "DELETE",
            &format!("/api/v1/converters/{id}/devices/4"),
            Some(&token),
            None
        )
        .await
        .status,
        204
    );
    let models = app.get("/api/v1/converters/models", &token).await.json();
    assert!(models
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model"] == "iskra-bicom" && m["relay"] == true));

    // The converter's gateway row refuses every MQTT login.
    let mqtt = app.mqtt.expect("embedded MQTT");
    assert!(MqttClient::connect(mqtt, "cv-v-1", "cv-v", "")
        .await
        .is_err());
    assert!(
        MqttClient::connect(mqtt, "cv-v-2", "cv-v", "!modbus-converter")
            .await
            .is_err()
    );

    // Deleting stops polling; the gateway row and devices stay, and the name can be reused.
    assert_eq!(
        app.request(
            "DELETE",
            &format!("/api/v1/converters/{id}"),
            Some(&token),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.get(&format!("/api/v1/converters/{id}"), &token)
            .await
            .status,
        404
    );
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE port = 'modbus' AND slot = 3")
            .await,
        1
    );
    let again = post(base("127.0.0.1", 9, json!([]))).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.json()["id"].as_i64(), Some(id));
    app.stop().await;
}

#[tokio::test]
async fn converters_from_the_config_file_are_applied_and_polled() {
    let sim = SimConverter::spec(SimOptions::default());
    let addr = sim.addr();
    let app = TestApp::spawn_with(move |c| {
        fast(c);
        c.modbus
            .converters
            .push(headend::modbus::config::ConverterConfig {
                name: "cv-file".into(),
                host: addr.ip().to_string(),
                port: addr.port(),
                site: None,
                gap_ms: Some(1),
                timeout_ms: None,
                retries: None,
                devices: vec![headend::modbus::config::DeviceConfig {
                    unit: SPEC_046_77_UNIT,
                    model: "legrand-046-77".into(),
                    kind: "meter".into(),
                    poll_interval_ms: Some(200),
                    serial: "046770001".into(),
                }],
            });
    })
    .await;
    let token = admin(&app).await;
    assert_eq!(
        wait_measurement(&app, "cv-file", SPEC_046_77_UNIT, "u1").await,
        235.8
    );
    let list = app.get("/api/v1/converters", &token).await.json();
    assert_eq!(list[0]["source"], "config", "{list}");
    assert_eq!(list[0]["gap_ms"], 1);
    // The configured serial identifies the meter in the serial-based device API.
    let latest = app.get("/api/v1/devices/046770001/latest", &token).await;
    assert_eq!(latest.status, 200, "{}", latest.body);
    // The page: signed-out users go to the login; an admin sees the converter and its unit.
    let page = headend_e2e::http_request(app.http, "GET", "/converters", None, None)
        .await
        .unwrap();
    assert!(matches!(page.status, 302 | 303 | 307), "{}", page.status);
    let session = format!("headend_session={token}; headend_csrf={}", "ab".repeat(16));
    let page =
        headend_e2e::raw_request(app.http, "GET", "/converters", &[("Cookie", &session)], "")
            .await
            .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("cv-file") && page.body.contains("legrand-046-77"));
    // A form with another CSRF token than the cookie's is refused; with it, the hostile serial
    // is refused with the reason.
    let form = "unit=7&model=legrand-046-77&kind=meter&poll_interval_ms=60000&serial=%3Cscript%3Ex%3C%2Fscript%3E";
    let id = list[0]["id"].as_i64().unwrap();
    let path = format!("/converters/{id}/devices");
    let form_headers = [
        ("Cookie", session.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let forged = format!("csrf={}&{form}", "cd".repeat(16));
    let refused = headend_e2e::raw_request(app.http, "POST", &path, &form_headers, &forged)
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    let with_token = format!("csrf={}&{form}", "ab".repeat(16));
    let added = headend_e2e::raw_request(app.http, "POST", &path, &form_headers, &with_token)
        .await
        .unwrap();
    // Refused beside the serial field (422), what was typed shown escaped.
    assert_eq!(added.status, 422, "{}", added.body);
    assert!(added.body.contains("id=\"serial-error\""), "{}", added.body);
    assert!(!added.body.contains("<script>x"));
    let page =
        headend_e2e::raw_request(app.http, "GET", "/converters", &[("Cookie", &session)], "")
            .await
            .unwrap();
    // A serial outside the meter serial character set is refused (it would end up in URLs),
    // and nothing of it reaches the page raw.
    assert!(!page.body.contains("<script>x"));
    assert_eq!(
        app.count("SELECT count(*) FROM polled_devices WHERE unit_id = 7")
            .await,
        0
    );
    app.stop().await;
}

/// A meter on a converter that stops answering raises a `not_answering` alarm on its site, and
/// the alarm clears once the meter answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_stops_answering_raises_an_alarm_that_clears_when_it_answers() {
    let sim = SimConverter::spec(SimOptions::default());
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.alarms.timer_period_secs = 1;
    })
    .await;
    let token = admin(&app).await;
    let site = app.site("Plant", "UTC").await;
    create_converter(
        &app,
        &token,
        converter_body(
            "cv-alarm",
            sim.addr(),
            Some(site),
            json!([{ "unit": SPEC_046_77_UNIT, "model": "legrand-046-77", "poll_interval_ms": 200 }]),
        ),
    )
    .await;
    wait_measurement(&app, "cv-alarm", SPEC_046_77_UNIT, "u1").await;
    let rule = app
        .request(
            "POST",
            "/api/v1/alarm-rules",
            Some(&token),
            Some(json!({
                "site_id": site, "name": "Meter silent", "severity": "critical",
                "target": "site", "watch": {"kind": "not_answering"},
                "condition": {"op": "above", "threshold": 1.0},
            })),
        )
        .await;
    assert_eq!(rule.status, 201, "{}", rule.body);
    // Answering: no alarm.
    assert_eq!(app.count("SELECT count(*) FROM alarms").await, 0);

    sim.set_fault(SPEC_046_77_UNIT, Fault::Dead);
    app.wait_count("SELECT count(*) FROM alarms WHERE active", 1)
        .await;
    let alarms = app.get("/api/v1/alarms", &token).await.json();
    assert_eq!(alarms[0]["severity"], "critical", "{alarms}");

    sim.set_fault(SPEC_046_77_UNIT, Fault::None);
    app.wait_count("SELECT count(*) FROM alarms WHERE NOT active", 1)
        .await;
    app.stop().await;
}
