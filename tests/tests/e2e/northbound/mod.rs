//! Home Assistant MQTT discovery against a real Mosquitto (password file, anonymous off): the
//! discovery configs follow Home Assistant's documented schema (tests/fixtures/ha-discovery),
//! energy is `total_increasing` in kWh, a switch commands through the relay ledger (four-eyes
//! leaves it pending and the state unflipped; the confirmed state appears once the gateway
//! reports it; anti-chatter refuses), wrong credentials are reported while Headend runs on,
//! and a hostile device serial never reaches a topic. The switches' tests are in `switch`.

mod switch;

use std::time::Duration;

use headend::config::northbound::BrokerConfig;
use headend::config::Secret;
use headend_e2e::mosquitto::{Mosquitto, Watcher};
use headend_e2e::{eventually, fixture, raw_request, TestApp};
use rumqttc::{Packet, QoS};
use serde_json::{json, Value};

const GW: &str = "SGHA00001";
const WAIT: Duration = Duration::from_secs(30);
const BASE: &str = "headend/plant";
const USERS: [(&str, &str); 2] = [("headend", "headend-pass"), ("ha", "ha-pass")];

fn broker_entry(name: &str, addr: std::net::SocketAddr, password: &str) -> BrokerConfig {
    BrokerConfig {
        name: name.into(),
        url: format!("mqtt://{addr}"),
        username: Some("headend".into()),
        password: Some(Secret::new(password)),
        ca_file: None,
        client_id_prefix: format!("he-{name}"),
    }
}

/// A gateway played by an MQTT client: pushes an IR meter's measurements and counters and its
/// IR relay's state, and obeys `bicom` commands by reporting the new state (as an SG does).
struct FakeGateway {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Local time (the gateway's zone is UTC) strictly after `last`.
fn next_time(last: &mut chrono::DateTime<chrono::Utc>) -> String {
    let now = chrono::Utc::now().max(*last + chrono::Duration::seconds(1));
    *last = now;
    now.format("%d.%m.%Y %H:%M:%S").to_string()
}

impl FakeGateway {
    async fn start(app: &TestApp, password: &str) -> Self {
        let mut client = app.gateway_client(GW, password).await;
        client
            .client
            .subscribe(format!("sg/{GW}/sub"), QoS::AtMostOnce)
            .await
            .unwrap();
        client
            .wait_for(|p| matches!(p, Packet::SubAck(_)))
            .await
            .expect("suback");
        let mut clock = chrono::Utc::now() - chrono::Duration::seconds(60);
        let with_time = |file: &str, key: &str, clock: &mut chrono::DateTime<chrono::Utc>| {
            let mut doc: Value = serde_json::from_slice(&fixture(file)).unwrap();
            doc[key]["local_time"] = json!(next_time(clock));
            doc
        };
        let base = format!("sg/{GW}/pub");
        for (topic, doc) in [
            (
                "measurements/ir",
                with_time("measurements-ir.json", "header", &mut clock),
            ),
            (
                "counters/ir",
                with_time("counters-ir-manual.json", "header", &mut clock),
            ),
            ("bicom/ir", with_time("bicom-ir.json", "bicom", &mut clock)),
        ] {
            client
                .publish(
                    &format!("{base}/{topic}"),
                    serde_json::to_vec(&doc).unwrap(),
                )
                .await;
        }
        let task = tokio::spawn(async move {
            let mut state = 1;
            loop {
                let Some(Packet::Publish(p)) =
                    client.wait_for(|p| matches!(p, Packet::Publish(_))).await
                else {
                    continue;
                };
                let Ok(command) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                if command["data"]["cmd"] != "bicom" {
                    continue;
                }
                match command["data"]["val"].as_str() {
                    Some("on") => state = 1,
                    Some("off") => state = 0,
                    _ => {}
                }
                let mut doc: Value = serde_json::from_slice(&fixture("bicom-ir.json")).unwrap();
                doc["bicom"]["local_time"] = json!(next_time(&mut clock));
                doc["bicom"]["state"] = json!(state);
                client
                    .publish(
                        &format!("{base}/bicom/ir"),
                        serde_json::to_vec(&doc).unwrap(),
                    )
                    .await;
            }
        });
        Self { task }
    }
}

struct Rig {
    app: TestApp,
    broker: Mosquitto,
    watcher: Watcher,
    _gateway: FakeGateway,
    site: i64,
    admin: String,
    relay: i64,
}

impl Rig {
    /// Headend publishing site "Plant" to `which` ("home": right credentials, "wrong": not).
    async fn new(which: &str) -> Self {
        let broker = Mosquitto::start(&USERS).await.expect("mosquitto");
        let addr = broker.addr;
        let app = TestApp::spawn_with(|c| {
            c.northbound.interval_secs = 1;
            c.northbound.brokers = vec![
                broker_entry("home", addr, USERS[0].1),
                broker_entry("wrong", addr, "not-the-password"),
            ];
            c.commands.state_poll_secs = 1;
            c.commands.confirm_timeout_secs = 5;
        })
        .await;
        let site = app.site("Plant", "UTC").await;
        let password = app.gateway(GW, Some(site), None).await;
        let gateway = FakeGateway::start(&app, &password).await;
        let relay = eventually(WAIT, || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT d.id FROM devices d JOIN relay_states r ON r.device_id = d.id
                 WHERE d.kind = 'relay' LIMIT 1",
            )
            .fetch_optional(&app.pool)
            .await
            .ok()?
        })
        .await
        .expect("the relay reported its state");
        app.wait_count(
            "SELECT count(*) FROM counter_readings r JOIN counters c ON c.id = r.counter_id
             WHERE c.name = 'counter1nr'",
            1,
        )
        .await;
        let admin = app.user_token("admin@example.com", "admin", &[]).await;
        let watcher = Watcher::connect(
            addr,
            USERS[1].0,
            USERS[1].1,
            &["homeassistant/#", "headend/#"],
        )
        .await
        .expect("watcher");
        let rig = Self {
            app,
            broker,
            watcher,
            _gateway: gateway,
            site,
            admin,
            relay,
        };
        let r = rig
            .app
            .request(
                "PUT",
                &format!("/api/v1/sites/{site}/northbound"),
                Some(&rig.admin),
                Some(json!({ "broker": which, "base_topic": BASE })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        rig
    }

    fn relay_state_topic(&self) -> String {
        format!("{BASE}/relay/{GW}_ir0/state")
    }

    async fn finish(self) {
        self.app.stop().await;
    }
}

/// The component schema with the shared definitions merged in.
fn schema(component: &str) -> jsonschema::Validator {
    let dir = headend_e2e::spec_dir().join("ha-discovery");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let mut schema = read(&format!("{component}.json"));
    schema["$defs"] = read("common.json")["$defs"].clone();
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{component}.json: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_home_assistants_schema_and_hostile_serials_stay_out_of_topics() {
    let rig = Rig::new("home").await;
    // A meter whose serial is hostile (stored by hand: ingest refuses such serials).
    let hostile = "x/+#\u{1}../ \"quoted\"";
    let gateway_id: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE serial = $1")
        .bind(GW)
        .fetch_one(&rig.app.pool)
        .await
        .unwrap();
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial, model)
         VALUES ($1, 'meter', 'rs485', 3, $2, 'MC/+#') RETURNING id",
    )
    .bind(gateway_id)
    .bind(hostile)
    .fetch_one(&rig.app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO measurements (device_id, ts, received_at, p) VALUES ($1, now(), now(), 42.5)",
    )
    .bind(device)
    .execute(&rig.app.pool)
    .await
    .unwrap();

    // A gateway that pushes XML holds no MQTT session: online by its recent pushes, as on
    // Headend's own pages.
    rig.app.gateway("SGXML0001", Some(rig.site), None).await;
    sqlx::query("UPDATE gateways SET last_seen_at = now() WHERE serial = 'SGXML0001'")
        .execute(&rig.app.pool)
        .await
        .unwrap();

    let w = &rig.watcher;
    assert!(w.wait_for(&format!("{BASE}/status"), "online").await);
    assert!(
        w.wait_for(&format!("{BASE}/gateway/SGXML0001/online"), "ON")
            .await
    );
    assert!(
        w.wait_for(&format!("{BASE}/meter/{GW}_ir0/power"), "2815")
            .await
    );
    assert!(
        w.wait_for(&format!("{BASE}/meter/{GW}_ir0/energy_import"), "0.200000")
            .await
    );
    assert!(
        w.wait_for(&format!("{BASE}/meter/{GW}_rs4853/power"), "42.5")
            .await
    );
    assert!(w.wait_for(&rig.relay_state_topic(), "ON").await);
    assert!(
        w.wait_for(&format!("{BASE}/gateway/{GW}/online"), "ON")
            .await
    );

    // A subscriber that comes later (Home Assistant after a restart) gets everything retained.
    let late = Watcher::connect(
        rig.broker.addr,
        USERS[1].0,
        USERS[1].1,
        &["homeassistant/#", "headend/#"],
    )
    .await
    .expect("late watcher");
    let seen = w.all();
    let complete = eventually(WAIT, || async {
        let now = late.all();
        seen.keys()
            .all(|t| now.contains_key(t) || seen[t].0.is_empty())
            .then_some(now)
    })
    .await
    .expect("every topic is retained");
    let (sensor, binary, switch) = (schema("sensor"), schema("binary_sensor"), schema("switch"));
    let mut checked = 0;
    let mut energy = 0;
    for (topic, (payload, retained)) in complete {
        assert!(
            !topic.contains(['+', '#', '\u{0}', '\u{1}', ' ']),
            "{topic:?}"
        );
        let levels: Vec<&str> = topic.split('/').collect();
        assert!(
            levels.iter().all(|l| !l.is_empty() && *l != ".."),
            "{topic:?}"
        );
        assert!(
            retained,
            "{topic}: configs, states and availability are retained"
        );
        if levels[0] != "homeassistant" || payload.is_empty() {
            continue;
        }
        assert!(retained, "{topic}: discovery configs are retained");
        assert_eq!(payload, seen[&topic].0, "{topic}");
        assert_eq!(levels.len(), 5, "{topic}");
        assert_eq!(levels[4], "config");
        let config: Value = serde_json::from_str(&payload).unwrap();
        let validator = match levels[1] {
            "sensor" => &sensor,
            "binary_sensor" => &binary,
            "switch" => &switch,
            other => panic!("unexpected component {other} in {topic}"),
        };
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{topic}: {errors:?}\n{config:#}");
        if config["device_class"] == "energy" {
            energy += 1;
            assert_eq!(config["state_class"], "total_increasing", "{topic}");
            assert_eq!(config["unit_of_measurement"], "kWh", "{topic}");
            // The schema is not vacuous: a wrong unit, state class or option fails it.
            for (key, value) in [
                ("unit_of_measurement", json!("W")),
                ("state_class", json!("measurement")),
                ("stat_class", json!("total")),
            ] {
                let mut wrong = config.clone();
                wrong[key] = value;
                assert!(!validator.is_valid(&wrong), "{key} accepted");
            }
        }
        if config["device_class"] == "power" && levels[1] == "sensor" {
            assert_eq!(config["unit_of_measurement"], "W");
            assert_eq!(config["state_class"], "measurement");
        }
        if config["device"]["serial_number"] == "x/+#../ \"quoted\"" {
            // Control characters dropped, the rest kept as data in JSON.
            assert_eq!(config["device"]["via_device"], format!("headend_gw_{GW}"));
        }
        checked += 1;
    }
    // Gateway connectivity, IR meter (power, 3 × voltage, 3 × current, frequency, import,
    // export), the hostile meter's power, the relay.
    assert!(checked >= 13, "{checked} configs");
    assert_eq!(energy, 2);
    assert!(
        w.all()
            .values()
            .any(|(p, _)| p.contains(r#""serial_number":"x/+#../ \"quoted\"""#)),
        "the hostile serial is kept as data"
    );
    // The admin sees the link up.
    let view = rig
        .app
        .get(
            &format!("/api/v1/sites/{}/northbound", rig.site),
            &rig.admin,
        )
        .await
        .json();
    assert_eq!(view["settings"]["connected"], true, "{view}");
    assert_eq!(view["brokers"], json!(["home", "wrong"]));
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_and_headend_keeps_running() {
    let rig = Rig::new("wrong").await;
    let path = format!("/api/v1/sites/{}/northbound", rig.site);
    let error = eventually(WAIT, || async {
        let view = rig.app.get(&path, &rig.admin).await.json();
        view["settings"]["last_error"].as_str().map(str::to_owned)
    })
    .await
    .expect("the link's error is reported");
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(rig
        .watcher
        .all()
        .keys()
        .all(|t| !t.starts_with("homeassistant/")));
    let health = rig.app.request("GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(!rig.app.task.is_finished());

    // A broker that is not configured is refused; switching to the right one connects.
    let bad = rig
        .app
        .request(
            "PUT",
            &path,
            Some(&rig.admin),
            Some(json!({ "broker": "elsewhere" })),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let bad = rig
        .app
        .request(
            "PUT",
            &path,
            Some(&rig.admin),
            Some(json!({ "broker": "home", "base_topic": "a/+/b" })),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    // The admin page shows the error, offers the configured brokers, and saves the fix.
    let csrf = "0123456789abcdef0123456789abcdef";
    let cookie = format!("headend_session={}; headend_csrf={csrf}", rig.admin);
    let page_path = format!("/admin/sites/{}/home-assistant", rig.site);
    let page = raw_request(rig.app.http, "GET", &page_path, &[("Cookie", &cookie)], "")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("refused the credentials"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<option value="home">"#),
        "{}",
        page.body
    );
    // A refused form comes back with what was typed (422), as every admin form.
    let refused = raw_request(
        rig.app.http,
        "POST",
        &page_path,
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}&broker=home&discovery_prefix=homeassistant&base_topic=a%2F%23"),
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.contains("northbound-error"),
        "{}",
        refused.body
    );
    let form = format!(
        "csrf={csrf}&broker=home&discovery_prefix=homeassistant&base_topic={}&enabled=on&commands=on",
        BASE.replace('/', "%2F")
    );
    let saved = raw_request(
        rig.app.http,
        "POST",
        &page_path,
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form,
    )
    .await
    .unwrap();
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert!(
        rig.watcher
            .wait_for(&format!("{BASE}/status"), "online")
            .await
    );
    let view = rig.app.get(&path, &rig.admin).await.json();
    assert_eq!(
        view["settings"]["updated_by"], "admin@example.com",
        "{view}"
    );

    // Disabled: the link removes what it published (an empty retained config deletes the
    // entity in Home Assistant), says goodbye (`offline`, retained) and stops.
    let configs: Vec<String> = eventually(WAIT, || async {
        let configs: Vec<String> = rig
            .watcher
            .all()
            .into_iter()
            .filter(|(topic, (payload, _))| topic.ends_with("/config") && !payload.is_empty())
            .map(|(topic, _)| topic)
            .collect();
        (!configs.is_empty()).then_some(configs)
    })
    .await
    .unwrap_or_else(|| panic!("no discovery config seen: {:?}", rig.watcher.all()));
    let off = rig
        .app
        .request(
            "PUT",
            &path,
            Some(&rig.admin),
            Some(json!({ "broker": "home", "base_topic": BASE, "enabled": false })),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert!(
        rig.watcher
            .wait_for(&format!("{BASE}/status"), "offline")
            .await
    );
    for topic in &configs {
        assert_eq!(rig.watcher.get(topic).as_deref(), Some(""), "{topic}");
    }
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtts_broker_with_a_private_ca() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let broker = Mosquitto::start_tls(&USERS, &cert.pem(), &key.serialize_pem())
        .await
        .expect("mosquitto with TLS");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = broker.addr.port();
    let app = TestApp::spawn_with(|c| {
        c.northbound.interval_secs = 1;
        let mut entry = broker_entry("tls", broker.addr, USERS[0].1);
        entry.url = format!("mqtts://localhost:{port}");
        entry.ca_file = Some(ca_file.clone());
        c.northbound.brokers = vec![entry];
    })
    .await;
    let site = app.site("Plant", "UTC").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let path = format!("/api/v1/sites/{site}/northbound");
    let put = app
        .request("PUT", &path, Some(&admin), Some(json!({ "broker": "tls" })))
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.json()["base_topic"], "headend/Plant");
    let connected = eventually(WAIT, || async {
        let view = app.get(&path, &admin).await.json();
        (view["settings"]["connected"] == true).then_some(())
    })
    .await;
    assert!(connected.is_some(), "{}", app.get(&path, &admin).await.body);
    app.stop().await;
}
