//! Gateway sessions across instances (issue 16): two apps on one database. A relay command
//! requested on one instance is sent by the instance holding the gateway's session and
//! confirmed there; a gateway that moves stays online on its new instance; the sessions of an
//! instance that dies are closed by the reaper of the other.

use std::time::Duration;

use chrono::Utc;
use headend::config::Secret;
use headend_e2e::{eventually, fixture, MqttClient, TestApp};
use rumqttc::{Packet, QoS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Two instances on one database sharing tokens (lease time to live 2 s), a UTC site with
/// gateway `serial`, and an operator of that site. Returns (a, b, password, operator).
async fn cluster(serial: &str) -> (TestApp, TestApp, String, String) {
    let a = TestApp::spawn_with(|c| {
        c.cluster.lease_secs = 2;
        c.auth.jwt_secret = Some(Secret::new("a-cluster-jwt-secret-of-at-least-32-chars"));
        c.commands.confirm_timeout_secs = 5;
        c.commands.state_poll_secs = 1;
    })
    .await;
    let site = a.site("Cluster site", "UTC").await;
    let password = a.gateway(serial, Some(site), None).await;
    let operator = a.user_token("op@example.com", "operator", &[site]).await;
    let b = a.spawn_peer(|_| {}).await;
    (a, b, password, operator)
}

/// This app's instance name (kept in its data directory).
fn instance(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.path().join("instance"))
        .expect("instance file")
        .trim()
        .to_owned()
}

/// The gateway connected to `app` as `<serial>-1`, subscribed to its command topic.
async fn connect(app: &TestApp, serial: &str, password: &str) -> MqttClient {
    let addr = app.mqtt.expect("embedded MQTT");
    let mut client = MqttClient::connect(addr, &format!("{serial}-1"), serial, password)
        .await
        .expect("MQTT connect");
    client
        .client
        .subscribe(format!("sg/{serial}/sub"), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .wait_for(|p| matches!(p, Packet::SubAck(_)))
        .await
        .expect("SUBACK");
    client
}

/// Reports the IR relay's state (dated now) and waits for the PUBACK.
async fn report(client: &mut MqttClient, serial: &str, state: i64) {
    let mut doc: Value = serde_json::from_slice(&fixture("bicom-ir.json")).unwrap();
    doc["bicom"]["local_time"] = json!(Utc::now().format("%d.%m.%Y %H:%M:%S").to_string());
    doc["bicom"]["state"] = json!(state);
    client
        .publish(
            &format!("sg/{serial}/pub/bicom/ir"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .await;
    client.wait_acks(1).await;
}

/// The gateway's (online, session_instance).
async fn session(app: &TestApp, serial: &str) -> (bool, Option<String>) {
    sqlx::query_as("SELECT online, session_instance FROM gateways WHERE serial = $1")
        .bind(serial)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn wait_session(app: &TestApp, serial: &str, want: (bool, Option<&str>)) {
    let reached = eventually(WAIT, || async {
        let (online, owner) = session(app, serial).await;
        (online == want.0 && owner.as_deref() == want.1).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "gateway {serial}: wanted {want:?}, is {:?}",
        session(app, serial).await
    );
}

/// The gateway's IR relay, once its state is stored.
async fn relay(app: &TestApp, serial: &str) -> i64 {
    eventually(WAIT, || async {
        sqlx::query_scalar(
            "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
             JOIN relay_states r ON r.device_id = d.id
             WHERE g.serial = $1 AND d.kind = 'relay' AND d.port = 'ir' LIMIT 1",
        )
        .bind(serial)
        .fetch_optional(&app.pool)
        .await
        .ok()?
    })
    .await
    .expect("the IR relay reports its state")
}

/// Requests `action` on `relay` through `app`'s API; returns the command.
async fn command(app: &TestApp, token: &str, relay: i64, action: &str) -> Value {
    let r = app
        .request(
            "POST",
            &format!("/api/v1/relays/{relay}/commands"),
            Some(token),
            Some(json!({ "action": action, "reason": "cluster" })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// Waits for a `bicom` command with `val` on the gateway's command topic.
async fn received(client: &mut MqttClient, val: &str) {
    let want = format!(r#""val":"{val}""#);
    let got = client
        .wait_for(|p| match p {
            Packet::Publish(p) => String::from_utf8_lossy(&p.payload).contains(&want),
            _ => false,
        })
        .await;
    assert!(got.is_some(), "no bicom {val} reached the gateway");
}

/// Plays the relay until command `id` settles: every `bicom` the gateway receives (the switch,
/// then the questions) is answered with `state`, as the firmware does. Returns the command.
async fn settled(
    app: &TestApp,
    token: &str,
    gw: &mut MqttClient,
    serial: &str,
    id: i64,
    state: i64,
) -> Value {
    let until = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < until {
        let c = app
            .get(&format!("/api/v1/commands/{id}"), token)
            .await
            .json();
        if matches!(
            c["status"].as_str(),
            Some("confirmed" | "failed" | "expired" | "cancelled")
        ) {
            return c;
        }
        if let Ok(Some(Packet::Publish(p))) =
            tokio::time::timeout(Duration::from_millis(200), gw.events.recv()).await
        {
            if String::from_utf8_lossy(&p.payload).contains(r#""cmd":"bicom""#) {
                report(gw, serial, state).await;
            }
        }
    }
    panic!("command {id} did not settle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_requested_on_one_instance_is_sent_where_the_session_is() {
    const SERIAL: &str = "SGSESS1";
    let (a, b, password, operator) = cluster(SERIAL).await;
    let mut gw = connect(&b, SERIAL, &password).await;
    wait_session(&a, SERIAL, (true, Some(&instance(&b)))).await;
    report(&mut gw, SERIAL, 1).await;
    let relay = relay(&a, SERIAL).await;

    let c = command(&a, &operator, relay, "off").await;
    received(&mut gw, "off").await;
    let done = settled(&a, &operator, &mut gw, SERIAL, c["id"].as_i64().unwrap(), 0).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    // Sent once: one `sent` transition.
    let states: Vec<&str> = done["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "sent", "confirmed"]);
    drop(gw);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_moves_stays_online_on_its_new_instance() {
    const SERIAL: &str = "SGSESS2";
    let (a, b, password, _) = cluster(SERIAL).await;
    let on_a = connect(&a, SERIAL, &password).await;
    wait_session(&a, SERIAL, (true, Some(&instance(&a)))).await;
    // It reconnects through B while A has not yet noticed its old session is gone.
    let on_b = connect(&b, SERIAL, &password).await;
    wait_session(&a, SERIAL, (true, Some(&instance(&b)))).await;
    drop(on_a);
    a.wait_count(
        &format!(
            "SELECT count(*) FROM gateway_events e JOIN gateways g ON g.id = e.gateway_id
             WHERE g.serial = '{SERIAL}' AND e.kind = 'disconnect'"
        ),
        1,
    )
    .await;
    // A's late disconnect is committed: the gateway is still online, on B.
    assert_eq!(session(&a, SERIAL).await, (true, Some(instance(&b))));
    drop(on_b);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_of_a_dead_instance_are_closed_by_another() {
    const SERIAL: &str = "SGSESS3";
    let (a, mut b, password, _) = cluster(SERIAL).await;
    let gw = connect(&b, SERIAL, &password).await;
    let dead = instance(&b);
    wait_session(&a, SERIAL, (true, Some(&dead))).await;
    // No clean close: B's tasks are gone, its instances row expires.
    b.task.abort();
    let _ = (&mut b.task).await;
    // Leftovers of B outside its task tree (lease keepers) stop too; nothing of B writes.
    b.shutdown.cancel();
    let offline = eventually(Duration::from_secs(15), || async {
        let (online, _) = session(&a, SERIAL).await;
        (!online).then_some(())
    })
    .await;
    assert!(
        offline.is_some(),
        "the gateway of the dead instance stays online"
    );
    let body: String = sqlx::query_scalar(
        "SELECT e.body FROM gateway_events e JOIN gateways g ON g.id = e.gateway_id
         WHERE g.serial = $1 AND e.kind = 'disconnect' ORDER BY e.id DESC LIMIT 1",
    )
    .bind(SERIAL)
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert!(body.contains(&dead) && body.contains("died"), "{body}");
    drop(gw);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_while_offline_is_sent_by_the_instance_it_reconnects_to() {
    const SERIAL: &str = "SGSESS4";
    let (a, b, password, operator) = cluster(SERIAL).await;
    let mut first = connect(&a, SERIAL, &password).await;
    report(&mut first, SERIAL, 1).await;
    let relay = relay(&a, SERIAL).await;
    drop(first);
    wait_session(&a, SERIAL, (false, Some(&instance(&a)))).await;

    let c = command(&a, &operator, relay, "off").await;
    assert_eq!(c["status"], "queued", "{c}");
    let mut gw = connect(&b, SERIAL, &password).await;
    received(&mut gw, "off").await;
    let done = settled(&b, &operator, &mut gw, SERIAL, c["id"].as_i64().unwrap(), 0).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    drop(gw);
    b.stop().await;
    a.stop().await;
}
