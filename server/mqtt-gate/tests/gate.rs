//! End-to-end tests: real rumqttc clients through the gate to a real
//! in-process rumqttd broker.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use headend_mqtt_gate::{
    ConnectRequest, Credentials, Gate, GateConfig, GateStats, Policy, Principal, Refusal, Tap,
    TapError, TlsConfig, Violation,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const UPSTREAM_USER: &str = "headend-gate";
const UPSTREAM_PASS: &str = "upstream-secret";
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- broker

/// Starts rumqttd on a loopback port accepting only the gate's credentials.
async fn start_broker() -> SocketAddr {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

    // rumqttd binds by itself, so pick a free port and hand it over.
    let addr = StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: 4 * 1024 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(|_client_id, username, password| async move {
        username == UPSTREAM_USER && password == UPSTREAM_PASS
    });
    let server = ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    };
    std::thread::spawn(move || {
        if let Err(error) = rumqttd::Broker::new(config).start() {
            panic!("rumqttd failed: {error}");
        }
    });

    // Readiness probe: the port accepts once the server thread has bound it.
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("broker listening");
    addr
}

// ---------------------------------------------------------------- policy & tap

fn gateway(serial: &str) -> Principal {
    Principal {
        name: serial.to_owned(),
        publish_prefixes: vec![format!("sg/{serial}/pub")],
        subscribe_filters: vec![format!("sg/{serial}/sub")],
        client_ids: Some(vec![format!("{serial}-1"), format!("{serial}-2")]),
        session_key: Some(format!("k{serial}")),
    }
}

/// Headend's own view: sees everything, commands every gateway.
fn observer() -> Principal {
    Principal {
        name: "observer".into(),
        publish_prefixes: vec!["sg".into()],
        subscribe_filters: vec!["#".into()],
        client_ids: None,
        session_key: None,
    }
}

struct TestPolicy(HashMap<String, (String, Principal)>);

impl TestPolicy {
    fn standard() -> Arc<Self> {
        let mut users = HashMap::new();
        // "A" and "A-1": serials may contain '-', the case a prefix rule got wrong.
        for serial in ["SG1", "SG2", "A", "A-1"] {
            users.insert(serial.to_owned(), (format!("{serial}-pw"), gateway(serial)));
        }
        for i in 0..20 {
            let serial = format!("LOAD{i:02}");
            users.insert(serial.clone(), ("load-pw".into(), gateway(&serial)));
        }
        users.insert("observer".into(), ("observer-pw".into(), observer()));
        // Two principals that may use any client id (a policy without an id
        // rule): only their session keys keep their broker sessions apart.
        for name in ["X", "Y"] {
            let principal = Principal {
                client_ids: None,
                ..gateway(name)
            };
            users.insert(name.into(), (format!("{name}-pw"), principal));
        }
        Arc::new(Self(users))
    }
}

impl Policy for TestPolicy {
    fn authenticate(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Principal, Refusal>> {
        let verdict = match request.username.as_ref().and_then(|user| self.0.get(user)) {
            Some((password, principal))
                if request.password.as_deref() == Some(password.as_bytes()) =>
            {
                Ok(principal.clone())
            }
            _ => Err(Refusal::BadCredentials),
        };
        futures::future::ready(verdict).boxed()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tapped {
    principal: String,
    topic: String,
    payload: Bytes,
}

#[derive(Debug, Default)]
struct Record {
    published: Vec<Tapped>,
    violations: Vec<(Option<String>, Violation)>,
    /// Releases for publishes the tap holds while `holding` is set.
    held: Vec<oneshot::Sender<()>>,
}

/// Records what the gate hands over, observable through a watch channel so
/// tests wait on events rather than on time.
struct TestTap {
    record: watch::Sender<Record>,
    failing: AtomicBool,
    holding: AtomicBool,
}

impl TestTap {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            record: watch::Sender::new(Record::default()),
            failing: AtomicBool::new(false),
            holding: AtomicBool::new(false),
        })
    }

    async fn wait_for<T>(&self, mut found: impl FnMut(&Record) -> Option<T>) -> T {
        let mut rx = self.record.subscribe();
        let mut result = None;
        timeout(
            WAIT,
            rx.wait_for(|record| {
                result = found(record);
                result.is_some()
            }),
        )
        .await
        .expect("timed out waiting for the tap")
        .expect("tap alive");
        result.expect("predicate matched")
    }

    async fn wait_violation(&self, matches: impl Fn(&Violation) -> bool) -> Violation {
        self.wait_for(|record| {
            record
                .violations
                .iter()
                .map(|(_, v)| v)
                .find(|v| matches(v))
                .cloned()
        })
        .await
    }

    fn has_published(&self, topic: &str, payload: &[u8]) -> bool {
        self.record
            .borrow()
            .published
            .iter()
            .any(|t| t.topic == topic && t.payload == payload)
    }
}

impl Tap for TestTap {
    fn publish(
        &self,
        principal: &Principal,
        topic: &str,
        payload: Bytes,
        _qos: u8,
        _retain: bool,
    ) -> BoxFuture<'static, Result<(), TapError>> {
        if self.failing.load(Ordering::SeqCst) {
            return futures::future::ready(Err(TapError::new("journal full"))).boxed();
        }
        let record = self.record.clone();
        let tapped = Tapped {
            principal: principal.name.clone(),
            topic: topic.to_owned(),
            payload,
        };
        let release = self.holding.load(Ordering::SeqCst).then(|| {
            let (tx, rx) = oneshot::channel();
            record.send_modify(|r| r.held.push(tx));
            rx
        });
        async move {
            // Durable "later": the gate must not forward before this resolves.
            match release {
                Some(release) => release.await.map_err(TapError::new)?,
                None => tokio::task::yield_now().await,
            }
            record.send_modify(|r| r.published.push(tapped));
            Ok(())
        }
        .boxed()
    }

    fn violation(&self, _peer: SocketAddr, principal: Option<&Principal>, violation: Violation) {
        let name = principal.map(|p| p.name.clone());
        self.record
            .send_modify(|r| r.violations.push((name, violation)));
    }
}

// ---------------------------------------------------------------- gate harness

struct Harness {
    gate: SocketAddr,
    broker: SocketAddr,
    tap: Arc<TestTap>,
    stats: GateStats,
    shutdown: CancellationToken,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

async fn harness_with(adjust: impl FnOnce(&mut GateConfig)) -> Harness {
    init_tracing();
    let broker = start_broker().await;
    let mut config = GateConfig::new(([127, 0, 0, 1], 0).into(), broker);
    config.upstream_credentials = Some(Credentials {
        username: UPSTREAM_USER.into(),
        password: UPSTREAM_PASS.into(),
    });
    adjust(&mut config);
    let gate = Gate::bind(config).await.expect("gate binds");
    let addr = gate.local_addr();
    let stats = gate.stats();
    let tap = TestTap::new();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(gate.serve(TestPolicy::standard(), tap.clone(), shutdown.clone()));
    Harness {
        gate: addr,
        broker,
        tap,
        stats,
        shutdown,
        serving: Some(serving),
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------- clients

struct Client {
    client: AsyncClient,
    events: EventLoop,
}

fn options(addr: SocketAddr, client_id: &str, username: &str, password: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(username, password);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

impl Client {
    /// Connects and waits for the CONNACK; `Err` carries the refusal.
    async fn connect(options: MqttOptions) -> Result<Client, ConnectionError> {
        let (client, mut events) = AsyncClient::new(options, 64);
        loop {
            match timeout(WAIT, events.poll())
                .await
                .expect("CONNACK in time")?
            {
                Event::Incoming(Packet::ConnAck(_)) => return Ok(Client { client, events }),
                _ => continue,
            }
        }
    }

    async fn gateway(addr: SocketAddr, serial: &str) -> Client {
        let options = options(
            addr,
            &format!("{serial}-1"),
            serial,
            &format!("{serial}-pw"),
        );
        Client::connect(options).await.expect("gateway connects")
    }

    async fn observer(addr: SocketAddr) -> Client {
        let mut observer = Client::connect(options(addr, "observer", "observer", "observer-pw"))
            .await
            .expect("observer connects");
        observer.subscribe(&["#"]).await;
        observer
    }

    /// Next incoming packet, or the error that closed the connection.
    async fn incoming(&mut self) -> Result<Packet, ConnectionError> {
        loop {
            if let Event::Incoming(packet) = timeout(WAIT, self.events.poll())
                .await
                .expect("event in time")?
            {
                return Ok(packet);
            }
        }
    }

    async fn incoming_matching<T>(&mut self, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
        loop {
            let packet = self.incoming().await.expect("connection stays up");
            if let Some(found) = pick(packet) {
                return found;
            }
        }
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
        self.client
            .subscribe_many(filters)
            .await
            .expect("request queued");
        self.incoming_matching(|packet| match packet {
            Packet::SubAck(ack) => Some(ack.return_codes),
            _ => None,
        })
        .await
    }

    async fn publish(&mut self, topic: &str, payload: &'static [u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("request queued");
    }

    async fn publish_acked(&mut self, topic: &str, payload: &'static [u8]) {
        self.publish(topic, payload).await;
        self.incoming_matching(|packet| matches!(packet, Packet::PubAck(_)).then_some(()))
            .await;
    }

    /// Publishes at QoS 2 and completes the handshake: PUBREC, then PUBCOMP for rumqttc's
    /// PUBREL.
    async fn publish_exactly_once(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::ExactlyOnce, false, payload)
            .await
            .expect("queued");
        self.incoming_matching(|p| matches!(p, Packet::PubRec(_)).then_some(()))
            .await;
        self.incoming_matching(|p| matches!(p, Packet::PubComp(_)).then_some(()))
            .await;
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        self.incoming_matching(|packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    /// Polls until the connection fails, returning what was received first.
    async fn until_closed(&mut self) -> Vec<Packet> {
        let mut received = Vec::new();
        while let Ok(packet) = self.incoming().await {
            received.push(packet);
        }
        received
    }
}

fn refusal(result: Result<Client, ConnectionError>) -> ConnectReturnCode {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(other) => panic!("expected a refusing CONNACK, got {other:?}"),
        Ok(_) => panic!("expected a refusing CONNACK, got a session"),
    }
}

/// Reads a raw socket until the peer closes it.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("gate closes the socket")
        .ok();
    received
}

fn raw_connect(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0xC2, 0, 30]);
    string(&mut body, client_id);
    string(&mut body, username);
    string(&mut body, password);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn allowed_publish_is_tapped_before_it_reaches_subscribers() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;

    gw.publish_acked("sg/SG1/pub/meter", b"42 kWh").await;
    let delivered = observer.next_publish().await;

    assert_eq!(delivered.topic, "sg/SG1/pub/meter");
    assert_eq!(&delivered.payload[..], b"42 kWh");
    assert!(
        h.tap.has_published("sg/SG1/pub/meter", b"42 kWh"),
        "the tap resolved before the broker delivered"
    );
    let tapped = h.tap.record.borrow().published[0].clone();
    assert_eq!(tapped.principal, "SG1");
    assert_eq!(h.stats.snapshot().publishes_forwarded, 1);
}

#[tokio::test]
async fn durable_publishes_can_be_answered_by_the_gate_and_never_reach_the_broker() {
    let h = harness_with(|c| c.answer_durable_publishes = true).await;
    let mut observer = Client::observer(h.gate).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;

    gw.publish_acked("sg/SG1/pub/meter", b"QoS 1").await;
    // PUBREC and PUBCOMP both from the gate.
    gw.publish_exactly_once("sg/SG1/pub/meter", b"QoS 2".to_vec())
        .await;
    assert!(h.tap.has_published("sg/SG1/pub/meter", b"QoS 1"));
    assert!(h.tap.has_published("sg/SG1/pub/meter", b"QoS 2"));
    assert_eq!(h.stats.snapshot().publishes_forwarded, 2);

    // Everything else still goes through the broker: the SUBACK comes from it, after the
    // broker has taken every packet before it on this connection.
    assert_eq!(
        gw.subscribe(&["sg/SG1/sub"]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // A marker on the same topic, straight to the broker: a topic's messages reach a
    // subscriber in order, so the observer's first message would be a forwarded reading if the
    // gate had sent any.
    let mut direct = Client::connect(options(h.broker, "direct", UPSTREAM_USER, UPSTREAM_PASS))
        .await
        .expect("direct client connects");
    direct.publish_acked("sg/SG1/pub/meter", b"marker").await;
    assert_eq!(&observer.next_publish().await.payload[..], b"marker");
}

#[tokio::test]
async fn publish_under_another_gateway_is_dropped_but_acknowledged() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut a = Client::gateway(h.gate, "SG1").await;

    // PUBACK arrives although nothing was forwarded.
    a.publish_acked("sg/SG2/pub/meter", b"forged").await;
    let violation = h
        .tap
        .wait_violation(|v| matches!(v, Violation::PublishDenied { .. }))
        .await;
    assert_eq!(
        violation,
        Violation::PublishDenied {
            topic: "sg/SG2/pub/meter".into(),
            payload: Bytes::from_static(b"forged"),
        }
    );

    // The connection is still usable, and the observer's first message is
    // the legitimate one: the forged one never reached the broker.
    a.publish_acked("sg/SG1/pub/meter", b"genuine").await;
    let first = observer.next_publish().await;
    assert_eq!(&first.payload[..], b"genuine");
    assert!(!h.tap.has_published("sg/SG2/pub/meter", b"forged"));
    assert_eq!(h.stats.snapshot().publishes_denied, 1);
}

#[tokio::test]
async fn wildcard_publish_topic_is_denied() {
    let h = harness().await;
    // Written by hand: rumqttc refuses to send wildcard topics itself.
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    raw.write_all(&raw_connect("SG2-2", "SG2", "SG2-pw"))
        .await
        .unwrap();
    let mut connack = [0; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // QoS 1 PUBLISH to "sg/SG2/pub/#", packet id 7.
    let topic = b"sg/SG2/pub/#";
    let mut publish = vec![0x32, (2 + topic.len() + 2) as u8, 0, topic.len() as u8];
    publish.extend_from_slice(topic);
    publish.extend_from_slice(&[0, 7]);
    raw.write_all(&publish).await.unwrap();
    let mut puback = [0; 4];
    raw.read_exact(&mut puback).await.unwrap();
    assert_eq!(puback, [0x40, 2, 0, 7]);
    h.tap
        .wait_violation(
            |v| matches!(v, Violation::PublishDenied { topic, .. } if topic == "sg/SG2/pub/#"),
        )
        .await;
}

#[tokio::test]
async fn tap_futures_run_concurrently_and_forwarding_keeps_order() {
    const N: usize = 5;
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;

    h.tap.holding.store(true, Ordering::SeqCst);
    const PAYLOADS: [&[u8]; N] = [b"0", b"1", b"2", b"3", b"4"];
    for payload in PAYLOADS {
        gw.publish("sg/SG1/pub/seq", payload).await;
    }
    // All N are with the tap at once: the gate did not wait for each.
    let poll_gateway = async {
        loop {
            gw.events.poll().await.expect("connection stays up");
        }
    };
    tokio::select! {
        () = h.tap.wait_for(|r| (r.held.len() == N).then_some(())) => {}
        () = poll_gateway => unreachable!("polls forever"),
    }
    let mut releases = Vec::new();
    h.tap
        .record
        .send_modify(|r| releases = std::mem::take(&mut r.held));
    // Make them durable in reverse order...
    for release in releases.into_iter().rev() {
        release.send(()).expect("tap future waiting");
    }
    // ...yet the broker gets them in the order the gateway sent them.
    for expected in PAYLOADS {
        assert_eq!(&observer.next_publish().await.payload[..], expected);
    }
    let mut acks = 0;
    while acks < N {
        if let Packet::PubAck(_) = gw.incoming().await.expect("connection stays up") {
            acks += 1;
        }
    }
}

#[tokio::test]
async fn qos2_handshakes_complete_for_allowed_and_denied_publishes() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;

    for topic in ["sg/SG2/pub/meter", "sg/SG1/pub/meter"] {
        // The handshake completes locally for the denied publish, through the
        // broker for the allowed one.
        gw.publish_exactly_once(topic, topic.as_bytes().to_vec())
            .await;
    }
    let delivered = observer.next_publish().await;
    assert_eq!(delivered.topic, "sg/SG1/pub/meter");
    assert_eq!(h.stats.snapshot().publishes_denied, 1);
}

#[tokio::test]
async fn mqtt31_client_is_served() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    let mut connect = raw_connect("SG1-2", "SG1", "SG1-pw");
    // Swap the protocol name "MQTT"/4 for "MQIsdp"/3.
    connect.splice(2..9, [0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]);
    connect[1] += 2;
    raw.write_all(&connect).await.unwrap();
    let mut connack = [0; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);

    let topic = b"sg/SG1/pub/v31";
    let mut publish = vec![0x30, (2 + topic.len() + 2) as u8, 0, topic.len() as u8];
    publish.extend_from_slice(topic);
    publish.extend_from_slice(b"hi");
    raw.write_all(&publish).await.unwrap();
    let delivered = observer.next_publish().await;
    assert_eq!(delivered.topic, "sg/SG1/pub/v31");
    assert_eq!(&delivered.payload[..], b"hi");
}

#[tokio::test]
async fn foreign_command_topic_subscription_is_refused() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut a = Client::gateway(h.gate, "SG1").await;
    let mut b = Client::gateway(h.gate, "SG2").await;

    assert_eq!(
        a.subscribe(&["sg/SG2/sub"]).await,
        [SubscribeReasonCode::Failure]
    );
    assert_eq!(
        a.subscribe(&["sg/SG1/sub", "sg/SG2/sub/#"]).await,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        ]
    );
    assert_eq!(
        b.subscribe(&["sg/SG2/sub"]).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    h.tap
        .wait_for(|r| (r.violations.len() == 2).then_some(()))
        .await;
    let denied: Vec<_> = h.tap.record.borrow().violations.clone();
    assert_eq!(
        denied,
        [
            (
                Some("SG1".into()),
                Violation::SubscribeDenied {
                    filter: "sg/SG2/sub".into()
                }
            ),
            (
                Some("SG1".into()),
                Violation::SubscribeDenied {
                    filter: "sg/SG2/sub/#".into()
                }
            ),
        ]
    );

    observer.publish_acked("sg/SG2/sub", b"command for B").await;
    assert_eq!(&b.next_publish().await.payload[..], b"command for B");
    // A sees its own command next, not B's.
    observer.publish_acked("sg/SG1/sub", b"command for A").await;
    let first = a.next_publish().await;
    assert_eq!(first.topic, "sg/SG1/sub");
    assert_eq!(&first.payload[..], b"command for A");
    assert_eq!(h.stats.snapshot().subscriptions_denied, 2);
}

#[tokio::test]
async fn bad_credentials_are_refused() {
    let h = harness().await;

    let wrong_password = Client::connect(options(h.gate, "SG1-1", "SG1", "nope")).await;
    assert_eq!(
        refusal(wrong_password),
        ConnectReturnCode::BadUserNamePassword
    );

    let unknown_user = Client::connect(options(h.gate, "SG9-1", "SG9", "SG9-pw")).await;
    assert_eq!(
        refusal(unknown_user),
        ConnectReturnCode::BadUserNamePassword
    );

    let foreign_id = Client::connect(options(h.gate, "SG2-1", "SG1", "SG1-pw")).await;
    assert_eq!(refusal(foreign_id), ConnectReturnCode::BadClientId);

    let violations = h
        .tap
        .wait_for(|r| (r.violations.len() == 3).then(|| r.violations.clone()))
        .await;
    assert!(matches!(
        &violations[0].1,
        Violation::ConnectRefused { username: Some(user), refusal: Refusal::BadCredentials, .. } if user == "SG1"
    ));
    assert_eq!(
        violations[2],
        (
            Some("SG1".into()),
            Violation::ClientIdDenied {
                client_id: "SG2-1".into()
            }
        )
    );
    assert_eq!(h.stats.snapshot().connects_refused, 3);
}

#[tokio::test]
async fn refused_connection_is_closed_after_the_connack() {
    let h = harness().await;
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    raw.write_all(&raw_connect("SG1-1", "SG1", "wrong"))
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut raw).await, [0x20, 2, 0, 4]);
}

#[tokio::test]
async fn broker_refuses_direct_connections_without_gate_credentials() {
    let h = harness().await;
    // A gateway's own credentials are worthless at the broker's port...
    let direct = Client::connect(options(h.broker, "SG1-1", "SG1", "SG1-pw")).await;
    assert!(
        direct.is_err(),
        "rumqttd must refuse the gateway's credentials"
    );
    // ...while the gate's are accepted, so the refusal above is meaningful.
    Client::connect(options(h.broker, "probe", UPSTREAM_USER, UPSTREAM_PASS))
        .await
        .expect("gate credentials accepted");
}

#[tokio::test]
async fn will_outside_the_acl_is_refused() {
    let h = harness().await;
    let mut opts = options(h.gate, "SG1-1", "SG1", "SG1-pw");
    opts.set_last_will(rumqttc::LastWill::new(
        "sg/SG2/pub/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    assert_eq!(
        refusal(Client::connect(opts).await),
        ConnectReturnCode::NotAuthorized
    );

    let mut opts = options(h.gate, "SG1-1", "SG1", "SG1-pw");
    opts.set_last_will(rumqttc::LastWill::new(
        "sg/SG1/pub/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    Client::connect(opts).await.expect("own will accepted");
}

#[tokio::test]
async fn tap_failure_closes_without_acknowledging() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;

    h.tap.failing.store(true, Ordering::SeqCst);
    gw.publish("sg/SG1/pub/meter", b"lost?").await;
    let received = gw.until_closed().await;
    assert!(
        !received.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "no PUBACK without durability, got {received:?}"
    );
    assert_eq!(h.stats.snapshot().tap_failures, 1);

    // The failed publish never reached the broker: the next one on the same
    // topic is the first the observer sees.
    h.tap.failing.store(false, Ordering::SeqCst);
    let mut again = Client::gateway(h.gate, "SG1").await;
    again.publish_acked("sg/SG1/pub/meter", b"retried").await;
    assert_eq!(&observer.next_publish().await.payload[..], b"retried");
}

#[tokio::test]
async fn oversized_packet_closes_with_violation() {
    let h = harness_with(|config| config.max_packet_bytes = 1024).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;
    gw.publish("sg/SG1/pub/blob", &[0u8; 4096]).await;
    gw.until_closed().await;
    let violation = h
        .tap
        .wait_violation(|v| matches!(v, Violation::Oversized { .. }))
        .await;
    let Violation::Oversized { declared_len } = violation else {
        unreachable!()
    };
    assert!(declared_len > 4096);
    assert!(!h.tap.has_published("sg/SG1/pub/blob", &[0u8; 4096]));
}

#[tokio::test]
async fn garbage_is_dropped_and_the_gate_keeps_serving() {
    let h = harness().await;
    for garbage in [
        // 'G' (0x47) frames as a PUBACK, 'E' as a 69-byte remaining length.
        &b"GET /index.html HTTP/1.1\r\nHost: example.invalid\r\nAccept: */*\r\nUser-Agent: probe\r\n\r\n"[..],
        &[0x30, 0x00][..],
        &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F][..],
        &[0x10, 0x04, 0, 2, b'X', b'Y'][..],
        &[0x10, 0x02, 0, 9][..],
    ] {
        let mut raw = TcpStream::connect(h.gate).await.unwrap();
        raw.write_all(garbage).await.unwrap();
        assert_eq!(read_to_close(&mut raw).await, b"", "no answer to {garbage:?}");
    }
    h.tap
        .wait_for(|r| (r.violations.len() == 5).then_some(()))
        .await;
    let mut gw = Client::gateway(h.gate, "SG1").await;
    gw.publish_acked("sg/SG1/pub/meter", b"still here").await;
}

#[tokio::test]
async fn mqtt5_connect_is_refused_with_protocol_version() {
    let h = harness().await;
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    // MQTT 5 CONNECT: level 5, clean start, keep-alive 30, no properties, id "c".
    raw.write_all(&[
        0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 0, 0, 1, b'c',
    ])
    .await
    .unwrap();
    assert_eq!(read_to_close(&mut raw).await, [0x20, 2, 0, 1]);
    h.tap
        .wait_violation(|v| *v == Violation::UnsupportedProtocol { level: 5 })
        .await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_connect_timeout() {
    let h = harness_with(|config| config.connect_timeout = Duration::from_millis(200)).await;
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    assert_eq!(read_to_close(&mut raw).await, b"");
    assert_eq!(h.stats.snapshot().protocol_errors, 1);
}

#[tokio::test]
async fn second_connect_closes_the_connection() {
    let h = harness().await;
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    let connect = raw_connect("SG1-1", "SG1", "SG1-pw");
    raw.write_all(&connect).await.unwrap();
    let mut connack = [0; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    raw.write_all(&connect).await.unwrap();
    read_to_close(&mut raw).await;
    h.tap
        .wait_violation(
            |v| matches!(v, Violation::Malformed { reason } if reason.contains("second CONNECT")),
        )
        .await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_accepting() {
    let mut h = harness().await;
    let mut gw = Client::gateway(h.gate, "SG1").await;
    h.shutdown.cancel();
    gw.until_closed().await;
    let serving = h.serving.take().expect("serving");
    timeout(WAIT, serving)
        .await
        .expect("serve returns")
        .expect("serve task");
    assert_eq!(h.stats.snapshot().connections_active, 0);
    let refused = timeout(WAIT, TcpStream::connect(h.gate))
        .await
        .expect("answer in time");
    assert!(refused.is_err(), "listener closed");
}

#[tokio::test]
async fn connection_limit_closes_excess_connections() {
    let h = harness_with(|config| config.max_connections = 1).await;
    let mut gw = Client::gateway(h.gate, "SG1").await;
    let mut excess = TcpStream::connect(h.gate).await.unwrap();
    assert_eq!(read_to_close(&mut excess).await, b"");
    assert_eq!(h.stats.snapshot().connections_rejected, 1);
    gw.publish_acked("sg/SG1/pub/meter", b"unaffected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_publishes_arrive_exactly_once() {
    const CONNECTIONS: usize = 20;
    const PUBLISHES: usize = 2_000;
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;

    let mut gateways = Vec::new();
    for i in 0..CONNECTIONS {
        let serial = format!("LOAD{i:02}");
        let mut options = options(h.gate, &format!("{serial}-1"), &serial, "load-pw");
        options.set_inflight(100);
        let Client { client, mut events } = Client::connect(options).await.expect("connects");
        gateways.push(tokio::spawn(async move {
            let topic = format!("sg/{serial}/pub/load");
            let publisher = tokio::spawn(async move {
                for seq in 0..PUBLISHES {
                    client
                        .publish(&topic, QoS::AtLeastOnce, false, seq.to_string())
                        .await
                        .expect("queued");
                }
                client
            });
            let mut acked = 0;
            while acked < PUBLISHES {
                if let Event::Incoming(Packet::PubAck(_)) =
                    events.poll().await.expect("connection up")
                {
                    acked += 1;
                }
            }
            publisher.await.expect("publisher")
        }));
    }

    let mut delivered: HashMap<(String, String), usize> = HashMap::new();
    let all = timeout(Duration::from_secs(120), async {
        while delivered.len() < CONNECTIONS * PUBLISHES {
            let publish = observer.next_publish().await;
            let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
            *delivered.entry((publish.topic, payload)).or_default() += 1;
        }
    });
    all.await.expect("every publish delivered");
    for gateway in gateways {
        timeout(WAIT, gateway)
            .await
            .expect("all acked")
            .expect("gateway task");
    }

    assert!(delivered.values().all(|&n| n == 1), "duplicates delivered");
    let record = h.tap.record.borrow();
    assert_eq!(record.published.len(), CONNECTIONS * PUBLISHES);
    let mut tapped: HashMap<(&str, &[u8]), usize> = HashMap::new();
    for t in &record.published {
        *tapped.entry((&t.topic, &t.payload)).or_default() += 1;
    }
    assert_eq!(
        tapped.len(),
        CONNECTIONS * PUBLISHES,
        "each tapped exactly once"
    );
    assert_eq!(
        h.stats.snapshot().publishes_forwarded,
        (CONNECTIONS * PUBLISHES) as u64
    );
}

// ---------------------------------------------------------------- TLS

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Headend test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// Issues a leaf certificate; returns `(cert PEM, key PEM)`.
    fn issue(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server_config(&self, mutual: bool) -> TlsConfig {
        let (cert, key) = self.issue(
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let path = |name: &str| self.dir.path().join(name);
        std::fs::write(path("server.pem"), cert).unwrap();
        std::fs::write(path("server.key"), key).unwrap();
        TlsConfig {
            cert_pem: path("server.pem"),
            key_pem: path("server.key"),
            client_ca_pem: mutual.then(|| path("ca.pem")),
        }
    }

    fn client_transport(&self, with_cert: bool) -> Transport {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{self, RootCertStore};
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = if with_cert {
            let (cert, key) = self.issue(&["SG1"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
            let cert = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(cert, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
    }
}

fn tls_options(h: &Harness, pki: &Pki, with_cert: bool) -> MqttOptions {
    let mut options = options(h.gate, "SG1-1", "SG1", "SG1-pw");
    options.set_transport(pki.client_transport(with_cert));
    options
}

#[tokio::test]
async fn tls_client_publishes_through_the_gate() {
    let pki = Pki::new();
    let tls = pki.server_config(false);
    let h = harness_with(|config| config.tls = Some(tls)).await;

    let mut gw = Client::connect(tls_options(&h, &pki, false))
        .await
        .expect("TLS session");
    gw.publish_acked("sg/SG1/pub/meter", b"over TLS").await;
    assert!(h.tap.has_published("sg/SG1/pub/meter", b"over TLS"));

    // Plain MQTT on the TLS port gets nowhere.
    let plain = Client::connect(options(h.gate, "SG1-2", "SG1", "SG1-pw")).await;
    assert!(plain.is_err());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = Pki::new();
    let tls = pki.server_config(true);
    let h = harness_with(|config| config.tls = Some(tls)).await;

    let anonymous = Client::connect(tls_options(&h, &pki, false)).await;
    assert!(
        anonymous.is_err(),
        "client without certificate must be rejected"
    );

    let mut gw = Client::connect(tls_options(&h, &pki, true))
        .await
        .expect("mutual TLS session");
    gw.publish_acked("sg/SG1/pub/meter", b"mutual").await;
    assert!(h.tap.has_published("sg/SG1/pub/meter", b"mutual"));
}

#[tokio::test]
async fn bind_reports_bad_tls_material() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let mut config = GateConfig::new(([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 1).into());
    config.tls = Some(TlsConfig {
        cert_pem: missing.clone(),
        key_pem: missing,
        client_ca_pem: None,
    });
    let error = Gate::bind(config).await.expect_err("bind fails");
    assert!(error.to_string().contains("missing.pem"), "{error}");
}

// ---------------------------------------------------------------- identity and pre-auth bounds

/// Connects and returns the CONNACK's session-present flag.
async fn connect_session(options: MqttOptions) -> (Client, bool) {
    let (client, mut events) = AsyncClient::new(options, 64);
    loop {
        match timeout(WAIT, events.poll())
            .await
            .expect("CONNACK in time")
            .expect("session accepted")
        {
            Event::Incoming(Packet::ConnAck(ack)) => {
                return (Client { client, events }, ack.session_present)
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_gateway_cannot_use_the_client_id_of_a_gateway_whose_serial_extends_its_own() {
    let h = harness().await;
    let mut observer = Client::observer(h.gate).await;
    let mut victim = Client::gateway(h.gate, "A-1").await; // client id "A-1-1"
    assert_eq!(
        victim.subscribe(&["sg/A-1/sub"]).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // Gateway "A" presenting the victim's ids ("A-<anything>" to a prefix
    // rule), its bare serial or a link other than 1 and 2: all refused.
    for id in ["A-1-1", "A-1-2", "A", "A-3", "A-10"] {
        let attempt = Client::connect(options(h.gate, id, "A", "A-pw")).await;
        assert_eq!(refusal(attempt), ConnectReturnCode::BadClientId, "{id}");
    }
    let denied = h
        .tap
        .wait_for(|r| (r.violations.len() == 5).then(|| r.violations.clone()))
        .await;
    assert!(denied.iter().all(
        |(who, v)| who.as_deref() == Some("A") && matches!(v, Violation::ClientIdDenied { .. })
    ));

    // The victim was never taken over: it still gets its own commands.
    observer.publish_acked("sg/A-1/sub", b"relay on").await;
    assert_eq!(&victim.next_publish().await.payload[..], b"relay on");
    // And "A" itself connects on its own links ("A-1" is its link 1).
    Client::gateway(h.gate, "A").await;
    Client::connect(options(h.gate, "A-2", "A", "A-pw"))
        .await
        .expect("second link");
}

#[tokio::test]
async fn a_persistent_session_belongs_to_the_principal_that_created_it() {
    let h = harness().await;
    let persistent = |user: &str| {
        let mut o = options(h.gate, "shared-id", user, &format!("{user}-pw"));
        o.set_clean_session(false);
        o
    };
    // X creates a persistent session under a client id Y may also present.
    let (mut x, present) = connect_session(persistent("X")).await;
    assert!(!present);
    assert_eq!(
        x.subscribe(&["sg/X/sub"]).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // Y, with the same client id, neither takes X's session over (X stays
    // connected and served) nor finds it (session present is false).
    let (mut y, present) = connect_session(persistent("Y")).await;
    assert!(!present, "Y was handed X's session");
    let mut observer = Client::observer(h.gate).await;
    observer.publish_acked("sg/X/sub", b"for X").await;
    assert_eq!(&x.next_publish().await.payload[..], b"for X");
    x.publish_acked("sg/X/pub/still", b"connected").await;
    y.publish_acked("sg/Y/pub/meter", b"y").await;

    // X's own reconnect finds its session.
    drop(x);
    let (_x, present) = connect_session(persistent("X")).await;
    assert!(present, "X lost its own session");
}

/// A CONNECT fixed header announcing `len` bytes of body.
fn connect_header(len: usize) -> Vec<u8> {
    let mut header = vec![0x10];
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

#[tokio::test]
async fn a_large_connect_is_refused_from_its_header_before_authentication() {
    // Connect timeout far beyond the wait: a gate waiting for the body would
    // leave the socket open and fail `read_to_close`.
    let h = harness_with(|config| config.connect_timeout = Duration::from_secs(300)).await;
    const { assert!(headend_mqtt_gate::MAX_CONNECT_BYTES < GateConfig::DEFAULT_MAX_PACKET_BYTES) };
    let mut raw = TcpStream::connect(h.gate).await.unwrap();
    // 500 KiB announced (within max_packet_bytes), 10 bytes sent.
    let mut packet = connect_header(500 * 1024);
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 30]);
    raw.write_all(&packet).await.unwrap();
    assert_eq!(
        read_to_close(&mut raw).await,
        b"",
        "closed without an answer"
    );
    let violation = h
        .tap
        .wait_violation(|v| matches!(v, Violation::Oversized { .. }))
        .await;
    assert_eq!(
        violation,
        Violation::Oversized {
            declared_len: 500 * 1024 + 4
        }
    );
    assert_eq!(h.stats.snapshot().protocol_errors, 1);

    // The gate serves on: a CONNECT with a 3 KiB will fits the bound, and
    // once authenticated a 100 KiB publish is within max_packet_bytes.
    let mut opts = options(h.gate, "SG1-1", "SG1", "SG1-pw");
    opts.set_last_will(rumqttc::LastWill::new(
        "sg/SG1/pub/status",
        vec![b'w'; 3 * 1024],
        QoS::AtLeastOnce,
        false,
    ));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let mut gw = Client::connect(opts).await.expect("will within the bound");
    static BIG: [u8; 100 * 1024] = [7; 100 * 1024];
    gw.publish_acked("sg/SG1/pub/big", &BIG).await;
    assert!(h.tap.has_published("sg/SG1/pub/big", &BIG));
}
