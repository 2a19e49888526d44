//! Home Assistant's Iskra integration against the companion firmware: the real `pyiskra` from
//! PyPI (`tests/python/pyiskra_check.py`, installed by `deploy/install-python.sh`) drives
//! `sg-gateway --rest-addr` as Home Assistant does (gateway info, device list, each meter's
//! measurements and counters), and what it reads equals what the gateway pushed over MQTT
//! into Headend for the same instant. Also: the login cookie (403 → pyiskra's
//! `NotAuthorised`), a clear JSON 404 for an index without a meter, and a silent meter listed
//! as `Not Detected`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use headend_e2e::firmware::SgGateway;
use headend_e2e::{eventually, raw_request, TestApp};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};

const SERIAL: &str = "SGI000001";
const USER: &str = "admin";
const PASSWORD: &str = "s3cret-ha";
const WAIT: Duration = Duration::from_secs(30);
/// `Authorization=Basic base64("admin:s3cret-ha")`, as pyiskra sends it.
const COOKIE: &str = "Authorization=Basic YWRtaW46czNjcmV0LWhh";

/// The Python of `deploy/install-python.sh`, with pyiskra.
fn python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/python/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `bash deploy/install-python.sh` (tests/run.sh does)",
        path.display()
    );
    path
}

/// `pyiskra_check.py <rest> <args>`: its JSON.
async fn pyiskra(rest: SocketAddr, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/pyiskra_check.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .arg(rest.to_string())
        .args(args)
        .output()
        .await
        .expect("run pyiskra_check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pyiskra_check.py failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `method path` on the gateway's REST API with the login cookie: (status, JSON); `None`
/// while it does not listen yet.
async fn try_call(rest: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let response = raw_request(rest, method, path, &[("cookie", COOKIE)], body)
        .await
        .ok()?;
    let json = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    Some((response.status, json))
}

async fn call(rest: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    try_call(rest, method, path, body)
        .await
        .expect("the REST API answers")
}

async fn get(rest: SocketAddr, path: &str) -> (u16, Value) {
    call(rest, "GET", path, "").await
}

/// The stored measurement row of meter (`port`, `slot`) at `ts`, column by column.
async fn stored_measurements(
    pool: &PgPool,
    port: &str,
    slot: i16,
    ts: DateTime<Utc>,
) -> Option<sqlx::postgres::PgRow> {
    sqlx::query(
        "SELECT m.* FROM measurements m JOIN devices d ON d.id = m.device_id
         JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = $1 AND d.kind = 'meter' AND d.port = $2 AND d.slot = $3 AND m.ts = $4",
    )
    .bind(SERIAL)
    .bind(port)
    .bind(slot)
    .bind(ts)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// The stored counter readings of meter (`port`, `slot`) at `ts`: (name, value_milli).
async fn stored_counters(
    pool: &PgPool,
    port: &str,
    slot: i16,
    ts: DateTime<Utc>,
) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT c.name, r.value_milli FROM counter_readings r
         JOIN counters c ON c.id = r.counter_id JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = $1 AND d.kind = 'meter' AND d.port = $2 AND d.slot = $3 AND r.ts = $4
         ORDER BY c.resettable, c.idx",
    )
    .bind(SERIAL)
    .bind(port)
    .bind(slot)
    .bind(ts)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// pyiskra's `{"value", "unit"}`, checked against the stored REAL (Headend keeps `f32`).
fn check(what: &str, read: &Value, unit: &str, stored: Option<f32>) {
    let stored = stored.unwrap_or_else(|| panic!("{what}: nothing stored"));
    assert_eq!(read["unit"], unit, "{what}: {read}");
    let value = read["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {read}"));
    assert_eq!(
        value as f32, stored,
        "{what}: pyiskra {value}, Headend {stored}"
    );
}

fn check_meter(device: &Value, row: &sqlx::postgres::PgRow) {
    let col = |name: &str| row.get::<Option<f32>, _>(name);
    let index = &device["index"];
    let m = &device["measurements"];
    let phases = m["phases"].as_array().expect("phases");
    assert_eq!(
        phases.len() as u64,
        device["phases"].as_u64().unwrap(),
        "{index}"
    );
    for (n, phase) in (1..).zip(phases) {
        for (key, column, unit) in [
            ("U", "u", "V"),
            ("I", "i", "A"),
            ("P", "p", "W"),
            ("Q", "q", "var"),
            ("S", "s", "VA"),
            ("PF", "pf", ""),
            ("PA", "pa", "°"),
            ("THDUp", "thd_u", "%"),
            ("THDI", "thd_i", "%"),
        ] {
            let what = format!("device {index} {key}{n}");
            check(&what, &phase[key], unit, col(&format!("{column}{n}")));
        }
    }
    for (key, column, unit) in [
        ("P", "p", "W"),
        ("Q", "q", "var"),
        ("S", "s", "VA"),
        ("PF", "pf", ""),
        ("PA", "pa", "°"),
    ] {
        let what = format!("device {index} total {key}");
        check(&what, &m["total"][key], unit, col(column));
    }
    check("frequency", &m["frequency"], "Hz", col("frequency"));
    check("temperature", &m["temperature"], "°C", col("temperature"));
}

/// pyiskra's counters, in its order (non-resettable, then resettable, each by index), against
/// the stored registers; returns (name, direction, type) for the caller's checks.
fn check_counters(device: &Value, stored: &[(String, i64)]) -> Vec<(String, String, String)> {
    let counters = &device["counters"];
    let read: Vec<&Value> = counters["non_resettable"]
        .as_array()
        .unwrap()
        .iter()
        .chain(counters["resettable"].as_array().unwrap())
        .collect();
    assert_eq!(read.len(), stored.len(), "{counters}\n{stored:?}");
    read.iter()
        .zip(stored)
        .map(|(counter, (name, milli))| {
            let value = counter["value"].as_f64().unwrap();
            assert_eq!((value * 1000.0).round() as i64, *milli, "{name}: {counter}");
            let unit = counter["unit"].as_str().unwrap();
            assert!(matches!(unit, "Wh" | "varh" | "VAh"), "{name}: {counter}");
            (
                name.clone(),
                counter["direction"].as_str().unwrap_or_default().into(),
                counter["type"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiskra_reads_what_the_gateway_pushed_to_headend() {
    let app = TestApp::spawn().await;
    let password = app.gateway(SERIAL, None, Some("UTC")).await;
    let gateway = SgGateway::simulated(
        SERIAL,
        &password,
        app.mqtt.unwrap(),
        &[
            "--push-interval",
            "2",
            "--rest-user",
            USER,
            "--rest-password",
            PASSWORD,
        ],
    );
    let rest = gateway.rest;
    // Every meter has been pushed (the device list shows meters once they are read).
    eventually(WAIT, || async {
        let (status, devices) = try_call(rest, "GET", "/api/devices", "").await?;
        let listed = devices["devices"].as_array()?.clone();
        let read = listed.iter().filter(|d| d["model"] != "Disabled").count();
        (status == 200 && listed.iter().all(|d| d["model"] != "Not Detected") && read == 5)
            .then_some(())
    })
    .await
    .expect("the gateway lists its five devices, every meter read");

    // Home Assistant's config flow: without a login pyiskra is refused (so it asks for one),
    // and with a wrong one too.
    let refused = pyiskra(rest, &["--basic-info"]).await;
    assert_eq!(refused["error"], "NotAuthorised", "{refused}");
    let refused = pyiskra(
        rest,
        &["--basic-info", "--user", USER, "--password", "guess"],
    )
    .await;
    assert_eq!(refused["error"], "NotAuthorised", "{refused}");

    // The whole integration, retried until one round read a single push.
    let (read, ts) = eventually(WAIT, || async {
        let read = pyiskra(rest, &["--user", USER, "--password", PASSWORD]).await;
        assert!(read.get("error").is_none(), "{read}");
        let before = read["local_time_before"]["measurements"].as_str()?;
        let after = read["local_time_after"]["measurements"].as_str()?;
        let counters = read["local_time_after"]["counters"].as_str()?;
        (before == after && after == counters).then(|| {
            let local = NaiveDateTime::parse_from_str(after, "%d.%m.%Y %H:%M:%S").unwrap();
            (read.clone(), local.and_utc())
        })
    })
    .await
    .expect("a pyiskra round within one push");

    assert_eq!(
        read["basic_info"],
        json!({ "model": "SG-W1", "serial": SERIAL, "sw_ver": "0.51",
                "description": "", "location": "" })
    );
    assert_eq!(read["gateway"]["class"], "SmartGateway");
    assert_eq!(read["gateway"]["is_gateway"], true);
    assert_eq!(read["gateway"]["fw_version"], "0.51");
    let devices = read["devices"].as_array().unwrap();
    let summary: Vec<_> = devices
        .iter()
        .map(|d| {
            (
                d["index"].clone(),
                d["class"].clone(),
                d["model"].clone(),
                d["phases"].clone(),
            )
        })
        .collect();
    // The Bicom relay in RS485 2 is listed but is no meter: pyiskra skips it.
    assert_eq!(
        summary,
        [
            (json!(0), json!("Impact"), json!("IE38MD"), json!(3)),
            (json!(1), json!("WM"), json!("WM1-6"), json!(1)),
            (json!(3), json!("WM"), json!("WM3M4C"), json!(3)),
        ]
    );

    for device in devices {
        let index = device["index"].as_u64().unwrap();
        let (port, slot) = if index == 0 {
            ("ir", 0)
        } else {
            ("rs485", index as i16)
        };
        let row = eventually(WAIT, || stored_measurements(&app.pool, port, slot, ts))
            .await
            .unwrap_or_else(|| panic!("Headend stored the measurements of {index} at {ts}"));
        check_meter(device, &row);
        let stored = eventually(WAIT, || async {
            let stored = stored_counters(&app.pool, port, slot, ts).await;
            (!stored.is_empty()).then_some(stored)
        })
        .await
        .unwrap_or_else(|| panic!("Headend stored the counters of {index} at {ts}"));
        let directions = check_counters(device, &stored);
        // The simulator's registers: counter1nr active import, counter2nr active export (and
        // on the IE38MD, counter3nr/4nr reactive import/export; counter1..12 the same by four).
        let expect = |name: &str| -> (&str, &str) {
            let n: u32 = name
                .trim_start_matches("counter")
                .trim_end_matches("nr")
                .parse()
                .unwrap();
            match (n - 1) % 4 {
                0 => ("import", "active_import"),
                1 => ("export", "active_export"),
                2 => ("import", "reactive_import"),
                _ => ("export", "reactive_export"),
            }
        };
        for (name, direction, kind) in &directions {
            assert_eq!(
                (direction.as_str(), kind.as_str()),
                expect(name),
                "{index} {name}"
            );
        }
    }

    // An index without a meter: a clear JSON 404 (pyiskra reads 404 as "not supported").
    for path in ["/api/measurement/2", "/api/counter/7", "/api/measurement/x"] {
        let (status, body) = get(rest, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("no ")),
            "{path}: {body}"
        );
    }

    // A meter that stops answering is listed as Not Detected, and its values are refused.
    let (status, body) = call(
        rest,
        "POST",
        "/faults",
        r#"{"meter_silent":{"slot":{"rs485":3},"pushes":30}}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (_, listed) = get(rest, "/api/devices").await;
    assert_eq!(listed["devices"][4]["interface"], "RS485 3");
    assert_eq!(listed["devices"][4]["model"], "Not Detected", "{listed}");
    let (status, body) = get(rest, "/api/measurement/3").await;
    assert_eq!(status, 504, "{body}");
    app.stop().await;
}
