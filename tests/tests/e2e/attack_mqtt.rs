//! Attacks on the MQTT front door (and the XML push's Basic auth, which shares the gateway
//! credentials), each against the real server: session takeover by client id, persistent
//! sessions of another gateway, oversized pre-authentication packets, password brute force,
//! floods of password checks, serial enumeration by timing, and what the ACL already refused.
//!
//! Every test holds [`FLOOD`]: the hashing pool is one per process, so the flood test runs
//! alone (it would shed the other tests' password checks), and so does the timing test (the
//! others' checks would queue in its measurements); the rest run in parallel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use headend_e2e::{eventually, raw_request, MqttClient, TestApp};
use rumqttc::{Packet, QoS, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

/// Read by every test, written by the flood test.
static FLOOD: RwLock<()> = RwLock::const_new(());

const WAIT: Duration = Duration::from_secs(30);

fn refusal(result: anyhow::Result<MqttClient>) -> String {
    match result {
        Ok(_) => panic!("connection accepted"),
        Err(e) => e.to_string(),
    }
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 30) written by hand.
fn raw_connect(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0xC2, 0, 30]);
    string(&mut body, client_id);
    string(&mut body, username);
    string(&mut body, password);
    let mut packet = fixed_header(0x10, body.len());
    packet.extend(body);
    packet
}

fn fixed_header(first: u8, len: usize) -> Vec<u8> {
    let mut header = vec![first];
    let mut rest = len;
    loop {
        let mut byte = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            byte |= 0x80;
        }
        header.push(byte);
        if rest == 0 {
            return header;
        }
    }
}

/// Sends a raw CONNECT and returns the CONNACK's return code.
async fn connack_code(mqtt: SocketAddr, client_id: &str, user: &str, password: &str) -> u8 {
    let mut stream = TcpStream::connect(mqtt).await.expect("connect");
    stream
        .write_all(&raw_connect(client_id, user, password))
        .await
        .expect("write CONNECT");
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(connack[..3], [0x20, 2, 0], "{connack:?}");
    connack[3]
}

/// Reads until the peer closes; `None` if it does not within [`WAIT`].
async fn read_to_close(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(received),
        Err(_) => None,
    }
}

async fn subscribed(client: &mut MqttClient, filter: &str) -> Vec<SubscribeReasonCode> {
    client
        .client
        .subscribe(filter, QoS::AtMostOnce)
        .await
        .unwrap();
    match client.wait_for(|p| matches!(p, Packet::SubAck(_))).await {
        Some(Packet::SubAck(ack)) => ack.return_codes,
        other => panic!("no SUBACK: {other:?}"),
    }
}

async fn next_command(client: &mut MqttClient) -> rumqttc::Publish {
    match client.wait_for(|p| matches!(p, Packet::Publish(_))).await {
        Some(Packet::Publish(p)) => p,
        other => panic!("no command: {other:?}"),
    }
}

async fn online(app: &TestApp, serial: &str) -> bool {
    sqlx::query_scalar("SELECT online FROM gateways WHERE serial = $1")
        .bind(serial)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

// ---------------------------------------------------------------- 1, 2: client ids and sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cannot_take_over_a_gateway_whose_serial_extends_its_own() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    let pw_a = app.gateway("A", None, None).await;
    let pw_victim = app.gateway("A-1", None, None).await;
    let mqtt = app.mqtt.unwrap();

    let mut victim = app.gateway_client("A-1", &pw_victim).await; // client id "A-1-1"
    assert_eq!(
        subscribed(&mut victim, "sg/A-1/sub").await,
        [SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let is_online = || async { online(&app, "A-1").await.then_some(()) };
    assert!(eventually(WAIT, is_online).await.is_some());

    // "A" presenting the victim's ids (which "A-<anything>" admitted), the bare serial (which
    // the old rule admitted too) or a third link: identifier rejected.
    for id in ["A-1-1", "A-1-2", "A", "A-3"] {
        let refused = refusal(MqttClient::connect(mqtt, id, "A", &pw_a).await);
        assert!(refused.contains("BadClientId"), "{id}: {refused}");
    }
    let refused = refusal(MqttClient::connect(mqtt, "A-1", "A-1", &pw_victim).await);
    assert!(refused.contains("BadClientId"), "bare serial: {refused}");
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE client = 'A' AND reason LIKE '%belongs to another gateway%'",
        4,
    )
    .await;

    // The victim was never knocked off: still online, still gets its relay commands.
    assert!(online(&app, "A-1").await);
    assert!(app
        .commands
        .send("sg/A-1/sub".into(), r#"{"data":{"cmd":"relay"}}"#.into()));
    let command = next_command(&mut victim).await;
    assert_eq!(command.topic, "sg/A-1/sub");
    // "A" connects on its own links ("A-1" is its link 1).
    let _a1 = MqttClient::connect(mqtt, "A-1", "A", &pw_a).await.unwrap();
    let _a2 = MqttClient::connect(mqtt, "A-2", "A", &pw_a).await.unwrap();
    assert!(online(&app, "A-1").await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_resumes_its_own_persistent_session_and_commands_still_arrive() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    let pw = app.gateway("SGP", None, None).await;
    let mqtt = app.mqtt.unwrap();
    let persistent = |link: &str| {
        let mut o = MqttClient::options(mqtt, &format!("SGP-{link}"), "SGP", &pw);
        o.set_clean_session(false);
        o
    };

    let mut link1 = MqttClient::connect_with(persistent("1")).await.unwrap();
    assert_eq!(
        subscribed(&mut link1, "sg/SGP/sub").await,
        [SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let link2 = MqttClient::connect_with(persistent("2")).await.unwrap();
    let is_online = |want: bool| {
        let app = &app;
        move || async move { (online(app, "SGP").await == want).then_some(()) }
    };
    assert!(eventually(WAIT, is_online(true)).await.is_some());
    link1.client.disconnect().await.unwrap();
    assert!(link1.closed().await);

    // Link 1 comes back: its session (and subscription) is found under the gateway's key,
    // so commands arrive without subscribing again.
    let (client, mut eventloop) = rumqttc::AsyncClient::new(persistent("1"), 16);
    let present = loop {
        match tokio::time::timeout(WAIT, eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack)))) => break ack.session_present,
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    };
    assert!(
        present,
        "the gateway's own persistent session was not found"
    );
    assert!(app
        .commands
        .send("sg/SGP/sub".into(), r#"{"data":{"cmd":"x"}}"#.into()));
    let delivered = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(rumqttc::Event::Incoming(Packet::Publish(p))) = eventloop.poll().await {
                return p;
            }
        }
    })
    .await
    .expect("command through the resumed subscription");
    assert_eq!(delivered.topic, "sg/SGP/sub");
    drop(client);
    drop(eventloop);
    drop(link2);
    assert!(eventually(WAIT, is_online(false)).await.is_some());
    app.stop().await;
}

// ---------------------------------------------------------------- 4: pre-authentication bound

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_announcing_500_kib_is_closed_before_its_body_is_read() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    let pw = app.gateway("SGO", None, None).await;
    let mqtt = app.mqtt.unwrap();

    let mut stream = TcpStream::connect(mqtt).await.unwrap();
    // The header and the first bytes of a body that never comes (max_packet_bytes would
    // admit 500 KiB after authentication).
    let mut packet = fixed_header(0x10, 500 * 1024);
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 30]);
    stream.write_all(&packet).await.unwrap();
    assert_eq!(read_to_close(&mut stream).await.as_deref(), Some(&b""[..]));
    // Refused as oversized from its header, not dropped at the connect timeout.
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'packet of 512004 bytes exceeds the size limit%'",
        1,
    )
    .await;

    // The server is fine: a gateway connects and its publish is acknowledged.
    let mut gw = app.gateway_client("SGO", &pw).await;
    gw.publish("sg/SGO/pub/status", "{}").await;
    gw.wait_acks(1).await;
    app.stop().await;
}

// ---------------------------------------------------------------- 5: brute force

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_brute_force_is_throttled_but_the_gateway_keeps_connecting() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    let pw = app.gateway("SGBF", None, None).await;
    let mqtt = app.mqtt.unwrap();
    // The gateway connected once: its password is remembered.
    drop(app.gateway_client("SGBF", &pw).await);

    // Wrong passwords: CONNACK 4, until the serial's allowance is spent (ten attempts, a wrong
    // one costs two), then CONNACK 3 without a verdict.
    let mut wrong = 0;
    let throttled = loop {
        match connack_code(mqtt, "SGBF-1", "SGBF", "guess").await {
            4 => wrong += 1,
            3 => break true,
            other => panic!("CONNACK {other}"),
        }
        if wrong > 12 {
            break false;
        }
    };
    assert!(throttled, "{wrong} wrong passwords and never throttled");
    assert!(wrong >= 4, "throttled after only {wrong} wrong passwords");
    let metric = "headend_auth_throttled_total{channel=\"mqtt\"}";
    assert!(app.metric(metric).await.unwrap_or(0.0) >= 1.0);

    // The gateway itself, whose password was verified before, is not locked out.
    let mut gw = app.gateway_client("SGBF", &pw).await;
    gw.publish("sg/SGBF/pub/status", "{}").await;
    gw.wait_acks(1).await;

    // Another serial from the same address is unaffected.
    let pw2 = app.gateway("SGBF2", None, None).await;
    app.gateway_client("SGBF2", &pw2).await;
    app.stop().await;
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_push_basic_auth_brute_force_gets_429_with_retry_after() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    app.gateway("SGX", None, None).await;
    let wrong = basic("SGX", "guess");
    let headers = [
        ("Content-Type", "application/xml"),
        ("Authorization", wrong.as_str()),
    ];
    let mut unauthorized = 0;
    let response = loop {
        let r = raw_request(app.http, "POST", "/api/v1/xml-push", &headers, "<x/>")
            .await
            .unwrap();
        match r.status {
            401 => unauthorized += 1,
            429 => break r,
            other => panic!("status {other}: {}", r.body),
        }
        assert!(unauthorized <= 12, "never throttled");
    };
    assert!(unauthorized >= 4, "throttled after {unauthorized}");
    let retry: u64 = response
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry), "Retry-After {retry}");
    app.stop().await;
}

/// The HTTP push's throttled attempts are counted in `/metrics`, by channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_push_throttling_is_counted() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    app.gateway("SGXM", None, None).await;
    let wrong = basic("SGXM", "guess");
    let headers = [("Authorization", wrong.as_str())];
    for _ in 0..12 {
        let r = raw_request(app.http, "POST", "/api/v1/xml-push", &headers, "<x/>")
            .await
            .unwrap();
        if r.status == 429 {
            break;
        }
    }
    let metric = "headend_auth_throttled_total{channel=\"xml_push\"}";
    assert!(app.metric(metric).await.unwrap_or(0.0) >= 1.0);
    app.stop().await;
}

// ---------------------------------------------------------------- 6: shedding

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connects_is_shed_with_connack_3_and_counted() {
    // Alone: the flood fills the process's hashing pool.
    let _guard = FLOOD.write().await;
    let app = TestApp::spawn().await;
    let pw = app.gateway("SGF", None, None).await;
    let mqtt = app.mqtt.unwrap();
    let queue = headend::auth::password::pool_size() * 32;
    let flood = (0..queue * 2 + 20).map(|i| {
        let user = format!("FLOOD{i}");
        tokio::spawn(async move { connack_code(mqtt, &format!("{user}-1"), &user, "x").await })
    });
    let mut codes = Vec::new();
    for attempt in flood.collect::<Vec<_>>() {
        codes.push(attempt.await.unwrap());
    }
    assert!(codes.iter().all(|c| *c == 3 || *c == 4), "{codes:?}");
    assert!(codes.contains(&3), "nothing was shed");
    assert!(codes.contains(&4), "nothing was checked");
    assert!(app.metric("headend_password_checks_shed_total").await >= Some(1.0));
    // Once the flood has passed, a gateway connects.
    let mut gw = app.gateway_client("SGF", &pw).await;
    gw.publish("sg/SGF/pub/status", "{}").await;
    gw.wait_acks(1).await;
    app.stop().await;
}

// ---------------------------------------------------------------- 7: serial enumeration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_serial_costs_as_long_as_a_wrong_password() {
    // Alone too: the other tests' password checks would queue in the same hashing pool.
    let _guard = FLOOD.write().await;
    let app = TestApp::spawn().await;
    let mqtt = app.mqtt.unwrap();
    for serial in ["SGK0", "SGK1", "SGK2", "SGKW"] {
        app.gateway(serial, None, None).await;
    }
    let timed = |serial: String| async move {
        let started = Instant::now();
        let code = connack_code(mqtt, &format!("{serial}-1"), &serial, "wrong password").await;
        assert_eq!(code, 4, "{serial}");
        started.elapsed()
    };
    // Warm-up (first queries, the dummy hash made once), not measured.
    timed("SGKW".into()).await;
    timed("NOSUCHW".into()).await;
    // Interleaved, so both see the same load; two wrong passwords per known serial stay within
    // its throttle allowance.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..6 {
        known.push(timed(format!("SGK{}", i / 2)).await);
        unknown.push(timed(format!("NOSUCH{i}")).await);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        (v[2] + v[3]) / 2
    };
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown serial {unknown:?} vs wrong password {known:?} (ratio {ratio:.2})"
    );
    app.stop().await;
}

// ---------------------------------------------------------------- 8: defences that held

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscriptions_and_foreign_wills_are_refused() {
    let _guard = FLOOD.read().await;
    let app = TestApp::spawn().await;
    let pw = app.gateway("SGW", None, None).await;
    app.gateway("SGV", None, None).await;
    let mqtt = app.mqtt.unwrap();

    let mut gw = app.gateway_client("SGW", &pw).await;
    for filter in ["#", "sg/+/sub", "sg/SGV/sub", "sg/SGW/sub/#", "$SYS/#"] {
        assert_eq!(
            subscribed(&mut gw, filter).await,
            [SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE client = 'SGW' AND reason LIKE 'subscribe to%refused%'",
        5,
    )
    .await;

    // A will on another gateway's topics (its "offline" would be published as that gateway).
    let mut options = MqttClient::options(mqtt, "SGW-2", "SGW", &pw);
    options.set_last_will(rumqttc::LastWill::new(
        "sg/SGV/pub/status",
        "forged",
        QoS::AtLeastOnce,
        false,
    ));
    let refused = refusal(MqttClient::connect_with(options).await);
    assert!(refused.contains("NotAuthorized"), "{refused}");
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE client = 'SGW' AND reason LIKE 'will topic%'",
        1,
    )
    .await;
    app.stop().await;
}
