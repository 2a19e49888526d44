//! The companion firmware (`sg-gateway --simulate`) misbehaving on demand against a running
//! Headend: faults injected over the runner's REST API (`POST /faults`) and from its command
//! line (`--fault-after`, `fleet --fault-gateway`), MQTTS with a CA file and with mutual TLS,
//! and relay commands carried out and read back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use headend_e2e::firmware::{free_port, sg_gateway_binary, SgGateway};
use headend_e2e::{eventually, MqttClient, TestApp};
use serde_json::{json, Value};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(30);

/// `(ts, received_at)` of the IR meter's measurements of gateway `serial`, oldest first.
async fn ir_measurements(pool: &PgPool, serial: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT m.ts, m.received_at FROM measurements m
         JOIN devices d ON d.id = m.device_id JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = $1 AND d.kind = 'meter' AND d.port = 'ir' ORDER BY m.ts",
    )
    .bind(serial)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// `(ts, value_milli)` of one counter of the IR meter of gateway `serial`, oldest first.
async fn ir_counter(pool: &PgPool, serial: &str, name: &str) -> Vec<(DateTime<Utc>, i64)> {
    sqlx::query_as(
        "SELECT r.ts, r.value_milli FROM counter_readings r
         JOIN counters c ON c.id = r.counter_id JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         WHERE g.serial = $1 AND d.kind = 'meter' AND d.port = 'ir' AND c.name = $2
         ORDER BY r.ts",
    )
    .bind(serial)
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn online(pool: &PgPool, serial: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT online FROM gateways WHERE serial = $1")
        .bind(serial)
        .fetch_one(pool)
        .await
        .ok()
}

/// Waits until the IR meter of `serial` has at least `n` measurements.
async fn wait_ir_measurements(pool: &PgPool, serial: &str, n: usize) {
    eventually(WAIT, || async {
        (ir_measurements(pool, serial).await.len() >= n).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{n} measurements of the IR meter of {serial}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_reset_over_rest_shows_as_a_drop_in_headend() {
    const SERIAL: &str = "SGC000001";
    let app = TestApp::spawn().await;
    let password = app.gateway(SERIAL, None, Some("UTC")).await;
    let gateway = SgGateway::simulated(SERIAL, &password, app.mqtt.unwrap(), &[]);

    // The resettable counter1 of the IR meter grows from 0 (the simulation's start) by the
    // meter's energy: a few readings make it clearly larger than one second's worth.
    let (last_ts, last_value) = eventually(WAIT, || async {
        let readings = ir_counter(&app.pool, SERIAL, "counter1").await;
        let &(ts, value) = readings.last()?;
        (readings.len() >= 4 && value > 0).then_some((ts, value))
    })
    .await
    .expect("counter readings of the IR meter");

    // Bad bodies are refused with the reason and change nothing.
    let refused = gateway.post_fault(json!({ "counter_reset": {} })).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("missing field `slot`"),
        "{}",
        refused.body
    );
    let refused = gateway
        .post_fault(json!({ "counter_reset": { "slot": "ir_relay" } }))
        .await;
    assert_eq!(
        refused.status, 422,
        "a relay has no counters: {}",
        refused.body
    );

    gateway
        .inject(json!({ "counter_reset": { "slot": "ir_meter" } }))
        .await;
    let (reset_ts, reset_value) = eventually(WAIT, || async {
        ir_counter(&app.pool, SERIAL, "counter1")
            .await
            .into_iter()
            .find(|&(ts, value)| ts > last_ts && value < last_value)
    })
    .await
    .expect("a counter1 reading lower than before the reset");
    assert!(reset_value >= 0, "{reset_value}");

    // The non-resettable register went on counting through the reset.
    eventually(WAIT, || async {
        let readings = ir_counter(&app.pool, SERIAL, "counter1nr").await;
        readings.iter().any(|&(ts, _)| ts >= reset_ts).then_some(())
    })
    .await
    .expect("counter1nr readings after the reset");
    let register = ir_counter(&app.pool, SERIAL, "counter1nr").await;
    assert!(
        register.windows(2).all(|w| w[0].1 <= w[1].1),
        "counter1nr never goes down: {register:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_offline_over_rest_marks_the_gateway_offline_and_the_backlog_arrives() {
    const SERIAL: &str = "SGO000001";
    const OFFLINE_SECS: i64 = 4;
    let app = TestApp::spawn().await;
    let password = app.gateway(SERIAL, None, Some("UTC")).await;
    let gateway = SgGateway::simulated(SERIAL, &password, app.mqtt.unwrap(), &[]);
    app.wait_count(
        "SELECT count(*) FROM gateways WHERE online AND firmware_version IS NOT NULL",
        1,
    )
    .await;
    wait_ir_measurements(&app.pool, SERIAL, 2).await;

    gateway
        .inject(json!({ "go_offline": { "secs": OFFLINE_SECS } }))
        .await;
    eventually(WAIT, || async {
        (!online(&app.pool, SERIAL).await?).then_some(())
    })
    .await
    .expect("Headend marks the gateway offline");
    eventually(WAIT, || async {
        online(&app.pool, SERIAL).await?.then_some(())
    })
    .await
    .expect("and online again once it reconnects");

    // The session events say when it was away.
    let down: DateTime<Utc> = sqlx::query_scalar(
        "SELECT min(e.received_at) FROM gateway_events e JOIN gateways g ON g.id = e.gateway_id
         WHERE g.serial = $1 AND e.kind = 'disconnect'",
    )
    .bind(SERIAL)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let up: DateTime<Utc> = sqlx::query_scalar(
        "SELECT min(e.received_at) FROM gateway_events e JOIN gateways g ON g.id = e.gateway_id
         WHERE g.serial = $1 AND e.kind = 'connect' AND e.received_at > $2",
    )
    .bind(SERIAL)
    .bind(down)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        up - down >= chrono::Duration::seconds(OFFLINE_SECS - 1),
        "away {} ms",
        (up - down).num_milliseconds()
    );

    // What the gateway measured while away arrives, and the pushes have no gap: one reading
    // per second from before the outage to after it.
    let margin = chrono::Duration::seconds(3);
    eventually(WAIT, || async {
        let rows = ir_measurements(&app.pool, SERIAL).await;
        rows.iter().any(|&(ts, _)| ts >= up + margin).then_some(())
    })
    .await
    .expect("readings after the reconnection");
    let (_, dropped) = gateway.queue().await.expect("stats");
    assert_eq!(dropped, 0, "nothing dropped");
    let window: Vec<_> = ir_measurements(&app.pool, SERIAL)
        .await
        .into_iter()
        .filter(|&(ts, _)| ts >= down - margin && ts <= up + margin)
        .collect();
    let gaps: Vec<_> = window
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 != chrono::Duration::seconds(1))
        .map(|w| (w[0].0, w[1].0))
        .collect();
    assert!(gaps.is_empty(), "gaps in the pushes: {gaps:?}");
    let backlog = window
        .iter()
        .filter(|&&(ts, received)| ts > down && ts < up && received > up)
        .count();
    assert!(
        backlog as i64 >= OFFLINE_SECS - 2,
        "the readings made offline were delivered after reconnecting: {backlog} ({window:?})"
    );
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);
    app.stop().await;
}

/// The rejects of gateway `serial`'s topics: (received_at, reason, payload), oldest first.
async fn rejects(pool: &PgPool, serial: &str) -> Vec<(DateTime<Utc>, String, Vec<u8>)> {
    sqlx::query_as(
        "SELECT received_at, reason, payload FROM ingest_rejects WHERE topic LIKE $1 ORDER BY id",
    )
    .bind(format!("sg/{serial}/%"))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits for the `n`th reject of `serial` and a good IR measurement received after it;
/// returns when the reject was received.
async fn wait_reject_then_good_message(pool: &PgPool, serial: &str, n: usize) -> DateTime<Utc> {
    let (received, reason, payload) = eventually(WAIT, || async {
        rejects(pool, serial).await.into_iter().nth(n - 1)
    })
    .await
    .unwrap_or_else(|| panic!("garbled message {n} in ingest_rejects"));
    assert!(!reason.is_empty(), "a reject carries its reason");
    assert!(
        serde_json::from_slice::<Value>(&payload).is_err(),
        "the payload is kept verbatim, cut off: {}",
        String::from_utf8_lossy(&payload)
    );
    eventually(WAIT, || async {
        let rows = ir_measurements(pool, serial).await;
        rows.iter().any(|&(_, r)| r > received).then_some(())
    })
    .await
    .expect("the next good message is stored");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_messages_are_rejected_with_a_reason_and_the_next_is_stored() {
    const SERIAL: &str = "SGG000001";
    let app = TestApp::spawn().await;
    let password = app.gateway(SERIAL, None, Some("UTC")).await;
    // One garbled message from the command line, two seconds after start…
    let gateway = SgGateway::simulated(
        SERIAL,
        &password,
        app.mqtt.unwrap(),
        &["--fault-after", "2:garble"],
    );
    wait_reject_then_good_message(&app.pool, SERIAL, 1).await;
    // …and one over the REST API.
    gateway.inject(json!("garble")).await;
    wait_reject_then_good_message(&app.pool, SERIAL, 2).await;
    assert_eq!(rejects(&app.pool, SERIAL).await.len(), 2, "one per fault");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_faults_hit_only_the_selected_gateway() {
    let app = TestApp::spawn().await;
    let passwords = tempfile::NamedTempFile::new().unwrap();
    let mut lines = String::new();
    for serial in ["SGQ000001", "SGQ000002"] {
        let password = app.gateway(serial, None, Some("UTC")).await;
        lines.push_str(&format!("{serial} {password}\n"));
    }
    std::fs::write(passwords.path(), lines).unwrap();
    let broker = app.mqtt.unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(sg_gateway_binary());
    command
        .args(["fleet", "--count", "2", "--serial-prefix", "SGQ"])
        .arg("--password-file")
        .arg(passwords.path())
        .args(["--broker", &broker, "--simulate"])
        .args(["--push-interval", "1", "--first-push-delay", "0"])
        .args(["--fault-after", "2:garble", "--fault-gateway", "2"]);
    let mut fleet = SgGateway::spawn(command, state);
    let garbled = wait_reject_then_good_message(&app.pool, "SGQ000002", 1).await;
    // Gateway 1 (started first) got no fault: a fault of its own would have landed before
    // this later message of its.
    let later = garbled + chrono::Duration::seconds(1);
    eventually(WAIT, || async {
        let rows = ir_measurements(&app.pool, "SGQ000001").await;
        rows.iter()
            .any(|&(_, received)| received > later)
            .then_some(())
    })
    .await
    .expect("gateway 1 keeps pushing");
    assert!(rejects(&app.pool, "SGQ000001").await.is_empty());
    assert_eq!(rejects(&app.pool, "SGQ000002").await.len(), 1);
    fleet.kill();
    app.stop().await;
}

// ---- MQTTS ------------------------------------------------------------------------------

/// A test CA with a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test gateways CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let issue = |names: &[&str], usage, name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        issue(
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        issue(
            &["gateway"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A settings file for an MQTTS link 1 to `addr`, trusting the test CA, with the client
/// certificate when `mutual`.
fn tls_settings(
    pki: &Pki,
    serial: &str,
    password: &str,
    addr: SocketAddr,
    mutual: bool,
) -> PathBuf {
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    let mut text = format!(
        "serial = \"{serial}\"\nreceipts = true\n\n[link1]\nhost = \"{}\"\nport = {}\n\
         tls = true\nca_file = {}\npassword = \"{password}\"\n",
        addr.ip(),
        addr.port(),
        quote(&pki.path("ca.pem")),
    );
    if mutual {
        text.push_str(&format!(
            "client_cert = {}\nclient_key = {}\n",
            quote(&pki.path("client.pem")),
            quote(&pki.path("client.key"))
        ));
    }
    let path = pki.path(&format!("{serial}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn readings_over_mqtts(mutual: bool) {
    let serial = if mutual { "SGM000001" } else { "SGT000001" };
    let pki = Pki::new();
    let app = TestApp::spawn_with(|c| {
        c.mqtt.tls_addr = ([127, 0, 0, 1], 0).into();
        c.mqtt.tls_cert = Some(pki.path("server.pem"));
        c.mqtt.tls_key = Some(pki.path("server.key"));
        if mutual {
            c.mqtt.tls_client_ca = Some(pki.path("ca.pem"));
        }
    })
    .await;
    let password = app.gateway(serial, None, Some("UTC")).await;
    let settings = tls_settings(&pki, serial, &password, app.mqtts.unwrap(), mutual);
    let gateway = SgGateway::start(&["--config", settings.to_str().unwrap()]);
    app.wait_count(
        "SELECT count(*) FROM gateways WHERE online AND firmware_version IS NOT NULL",
        1,
    )
    .await;
    wait_ir_measurements(&app.pool, serial, 2).await;
    // Receipts come back over the same TLS session: the queue empties.
    eventually(WAIT, || async {
        let (queued, dropped) = gateway.queue().await?;
        (queued == 0 && dropped == 0).then_some(())
    })
    .await
    .expect("receipts release the queue");
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_pushes_over_mqtts_trusting_a_ca_file() {
    readings_over_mqtts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_pushes_over_mutual_tls() {
    readings_over_mqtts(true).await;
}

// ---- relay commands -------------------------------------------------------------------------

struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    // Mosquitto cannot listen on port 0 and report it: take a free port and hand it over.
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nlog_dest stderr\nlog_type error\n"
        ),
    )
    .unwrap();
    let child = Command::new(
        headend_e2e::bench::mosquitto_binary().expect("mosquitto (tests/run.sh installs it)"),
    )
    .arg("-c")
    .arg(&conf)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start mosquitto");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await
    .expect("mosquitto listening");
    Mosquitto {
        child,
        addr,
        _dir: dir,
    }
}

/// Asks for the IR relay's state until Headend has stored a reading of `want` received after
/// `since` (the switch is carried out asynchronously, so an early answer may be the old state).
async fn wait_ir_relay(app: &TestApp, operator: &MqttClient, serial: &str, want: i16) {
    let since: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let command = format!("sg/{serial}/sub");
    let found = eventually(WAIT, || async {
        operator
            .publish(
                &command,
                r#"{"data":{"cmd":"bicom","index":0,"val":"state"}}"#,
            )
            .await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM relay_states r JOIN devices d ON d.id = r.device_id
             JOIN gateways g ON g.id = d.gateway_id
             WHERE g.serial = $1 AND d.kind = 'relay' AND d.port = 'ir'
               AND r.state = $2 AND r.received_at > $3",
        )
        .bind(serial)
        .bind(want)
        .bind(since)
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    if found.is_none() {
        let rows: Vec<(DateTime<Utc>, i16, DateTime<Utc>)> = sqlx::query_as(
            "SELECT r.ts, r.state, r.received_at FROM relay_states r
             JOIN devices d ON d.id = r.device_id
             WHERE d.kind = 'relay' AND d.port = 'ir' ORDER BY r.ts",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        panic!("the IR relay does not read {want} in Headend after {since}: {rows:?}");
    }
}

/// Headend's own command path (`CommandSender`) has no public handle (`App` does not expose
/// it), so the commands are published the way an operator's tool on a shared broker would:
/// Headend attached to Mosquitto, the firmware on the same broker. What is checked end to end
/// is the firmware carrying the command out and Headend storing what the firmware reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_commands_switch_the_simulated_relay_and_the_replies_are_stored() {
    const SERIAL: &str = "SGR000001";
    let broker = start_mosquitto().await;
    let url = format!("mqtt://{}?client_id=headend-relays", broker.addr);
    let app = TestApp::spawn_with(|c| {
        c.mqtt.external_url = Some(headend::config::Secret::new(url.clone()));
    })
    .await;
    app.gateway(SERIAL, None, Some("UTC")).await;
    let operator = MqttClient::connect(broker.addr, "operator", "operator", "unused")
        .await
        .unwrap();
    // Headend's subscription is in place once a probe lands in its rejects.
    eventually(WAIT, || async {
        operator.publish("sg/UNKNOWN/pub/status", "{}").await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_rejects")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n > 0).then_some(())
    })
    .await
    .expect("Headend subscribed on the broker");

    // Hourly pushes: every relay state stored below answers a command.
    let broker_addr = broker.addr.to_string();
    let _gateway = SgGateway::start(&[
        "--serial",
        SERIAL,
        "--password",
        "unused-by-mosquitto",
        "--broker",
        &broker_addr,
        "--push-interval",
        "3600",
    ]);
    // The hello follows the command subscription on the same connection.
    app.wait_count(
        "SELECT count(*) FROM gateway_events WHERE kind = 'hello'",
        1,
    )
    .await;

    let command = format!("sg/{SERIAL}/sub");
    operator
        .publish(
            &command,
            r#"{"data":{"cmd":"bicom","index":0,"val":"off"}}"#,
        )
        .await;
    wait_ir_relay(&app, &operator, SERIAL, 0).await;
    operator
        .publish(&command, r#"{"data":{"cmd":"bicom","index":0,"val":"on"}}"#)
        .await;
    wait_ir_relay(&app, &operator, SERIAL, 1).await;

    operator
        .publish(&command, r#"{"data":{"cmd":"get_bicoms"}}"#)
        .await;
    let body = eventually(WAIT, || async {
        sqlx::query_scalar::<_, String>(
            "SELECT body FROM gateway_events WHERE kind = 'status' AND body LIKE '%get_bicoms%'",
        )
        .fetch_optional(&app.pool)
        .await
        .ok()?
    })
    .await
    .expect("the get_bicoms reply is stored");
    let reply: Value = serde_json::from_str(&body).unwrap();
    let bicoms = reply["bicoms"].as_array().expect("bicoms");
    let ir = bicoms
        .iter()
        .find(|b| b["port"] == "Right IR")
        .unwrap_or_else(|| panic!("the IR relay in {body}"));
    assert_eq!(ir["state"], 1, "{body}");
    assert_eq!(
        bicoms.len(),
        2,
        "both relays of the example gateway: {body}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects WHERE topic LIKE 'sg/SGR000001/%'")
            .await,
        0
    );
    app.stop().await;
}

/// The same through Headend on its embedded defaults: Headend's own command path (the sender
/// the relay ledger will use) publishes to the gateway's command topic through the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_commands_from_headend_reach_the_firmware_through_the_embedded_broker() {
    const SERIAL: &str = "SGR000002";
    let app = TestApp::spawn().await;
    let password = app.gateway(SERIAL, None, Some("UTC")).await;
    let broker = app.mqtt.expect("embedded broker").to_string();
    let _gateway = SgGateway::start(&[
        "--serial",
        SERIAL,
        "--password",
        &password,
        "--broker",
        &broker,
        "--push-interval",
        "3600",
    ]);
    app.wait_count(
        "SELECT count(*) FROM gateway_events WHERE kind = 'hello'",
        1,
    )
    .await;
    let topic = format!("sg/{SERIAL}/sub");
    for (val, want) in [("off", 0_i16), ("on", 1)] {
        let since: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(app.commands.send(
            topic.clone(),
            format!(r#"{{"data":{{"cmd":"bicom","index":0,"val":"{val}"}}}}"#).into()
        ));
        // The SG acknowledges nothing: ask for the state until the reply shows the switch.
        let found = eventually(WAIT, || async {
            app.commands.send(
                topic.clone(),
                r#"{"data":{"cmd":"bicom","index":0,"val":"state"}}"#.into(),
            );
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM relay_states r JOIN devices d ON d.id = r.device_id
                 JOIN gateways g ON g.id = d.gateway_id
                 WHERE g.serial = $1 AND d.kind = 'relay' AND d.port = 'ir'
                   AND r.state = $2 AND r.received_at > $3",
            )
            .bind(SERIAL)
            .bind(want)
            .bind(since)
            .fetch_one(&app.pool)
            .await
            .ok()?;
            (n > 0).then_some(())
        })
        .await;
        assert!(found.is_some(), "the IR relay did not report {val}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects WHERE topic LIKE 'sg/SGR000002/%'")
            .await,
        0
    );
    app.stop().await;
}
