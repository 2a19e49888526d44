//! MQTT adapters: the embedded broker behind its front door, or a client of an external broker.
//! Either way every gateway message becomes a journal record before it is acknowledged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use headend_mqtt_gate::{
    ConnectRequest, Credentials, Gate, GateConfig, GateStats, Policy, Principal, Refusal, Tap,
    TapError, TlsConfig, Violation,
};
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::fleet::gateways::{GatewayAuthError, GatewayAuthenticator, MqttGrant};
use crate::infra::metrics::Metrics;
use crate::ingest::record::{IngestRecord, RecordKind};
use crate::ingest::IngestSink;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT listener on {addr}: {source}")]
    Gate {
        addr: SocketAddr,
        source: headend_mqtt_gate::GateError,
    },
    #[error("embedded broker did not start on {0}: {1}")]
    Broker(SocketAddr, String),
    #[error("external broker URL is not valid: {0} (expected mqtt://user:password@host:1883)")]
    Url(String),
}

/// Publishes to gateways' command topics (QoS 0, as the SG subscribes), through the embedded
/// broker's in-process link or the external broker's client. Never blocks the caller: when the
/// queue is full the message is dropped and counted.
#[derive(Clone)]
pub struct CommandSender {
    tx: tokio::sync::mpsc::Sender<(String, Bytes)>,
    dropped: Arc<AtomicU64>,
}

/// What the publishing side of a [`CommandSender`] drains.
pub type CommandQueue = tokio::sync::mpsc::Receiver<(String, Bytes)>;

impl CommandSender {
    pub fn channel() -> (Self, CommandQueue) {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        (
            Self {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    pub fn send(&self, topic: String, payload: Bytes) -> bool {
        match self.tx.try_send((topic, payload)) {
            Ok(()) => true,
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "command to a gateway dropped");
                false
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The gate's view of the gateway registry.
pub struct GatewayPolicy {
    pub auth: Arc<GatewayAuthenticator>,
    pub metrics: Arc<Metrics>,
}

/// `auth_throttled` channel of MQTT CONNECTs ([`crate::infra::metrics::THROTTLE_CHANNELS`]).
const MQTT_CHANNEL: usize = 1;

impl Policy for GatewayPolicy {
    fn authenticate(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Principal, Refusal>> {
        let auth = self.auth.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let (Some(username), Some(password)) = (request.username, request.password) else {
                metrics.mqtt_auth_failures.inc();
                return Err(Refusal::NotAuthorized);
            };
            let verdict = auth
                .authenticate(&username, &password, request.peer.ip())
                .await;
            decide(verdict, &username, request.peer, &metrics)
        })
    }
}

/// The CONNECT's fate from the authenticator's verdict, counted in `metrics`.
fn decide(
    verdict: Result<Option<MqttGrant>, GatewayAuthError>,
    username: &str,
    peer: SocketAddr,
    metrics: &Metrics,
) -> Result<Principal, Refusal> {
    match verdict {
        Ok(Some(grant)) => Ok(principal(grant)),
        Ok(None) => {
            metrics.mqtt_auth_failures.inc();
            Err(Refusal::BadCredentials)
        }
        // Nothing was checked: "come back later" (CONNACK 3), never "wrong password", which
        // would tell a guesser nothing and a real gateway something false.
        Err(GatewayAuthError::Throttled(throttled)) => {
            metrics.auth_throttled[MQTT_CHANNEL].inc();
            tracing::warn!(
                %peer,
                user = %truncate(username),
                retry_after_s = throttled.retry_after_secs(),
                "MQTT CONNECT throttled: too many attempts for this serial or from this address"
            );
            Err(Refusal::ServerUnavailable)
        }
        Err(GatewayAuthError::Busy(_)) => {
            metrics.password_checks_shed.inc();
            Err(Refusal::ServerUnavailable)
        }
        Err(GatewayAuthError::Db(e)) => {
            tracing::warn!(error = %e, "gateway authentication could not reach the database");
            Err(Refusal::ServerUnavailable)
        }
    }
}

/// What an authenticated gateway may do: publish under its base, subscribe to its command
/// topic, connect as `<serial>-1` or `<serial>-2` only, its broker sessions kept under its
/// immutable database id (`g<id>:<client id>`), so no other principal can reach them.
fn principal(grant: MqttGrant) -> Principal {
    Principal {
        client_ids: Some(crate::fleet::gateways::mqtt_client_ids(&grant.serial)),
        session_key: Some(format!("g{}", grant.id)),
        name: grant.serial,
        publish_prefixes: vec![grant.publish_base],
        subscribe_filters: vec![grant.command_topic],
    }
}

/// Journals what passes the gate.
pub struct JournalTap {
    sink: IngestSink,
    source: &'static str,
    /// Violations are journaled at most `VIOLATIONS_PER_SECOND` per client (by principal, or
    /// "" before authentication): a denied publish is acknowledged, so it costs a hostile
    /// client nothing to repeat. The excess is logged and counted, not stored.
    violation_windows: std::sync::Mutex<HashMap<String, (Instant, u32)>>,
    violations_dropped: AtomicU64,
    /// Open sessions per gateway: an SG has two push links, so one link closing does not
    /// make the gateway offline while the other is connected.
    sessions: std::sync::Mutex<HashMap<String, usize>>,
}

/// Violations journaled per client and second at most; the rest are only logged and counted.
const VIOLATIONS_PER_SECOND: u32 = 20;

impl JournalTap {
    pub fn new(sink: IngestSink, source: &'static str) -> Arc<Self> {
        Arc::new(Self {
            sink,
            source,
            violation_windows: std::sync::Mutex::default(),
            violations_dropped: AtomicU64::new(0),
            sessions: std::sync::Mutex::default(),
        })
    }

    fn journal(&self, record: IngestRecord) {
        let sink = self.sink.clone();
        tokio::spawn(async move {
            if let Err(e) = sink.append(&record).await {
                tracing::warn!(error = %e, kind = ?record.kind, "could not journal a gateway event");
            }
        });
    }

    fn session_record(
        &self,
        kind: RecordKind,
        principal: &Principal,
        body: String,
        still_open: usize,
    ) -> IngestRecord {
        IngestRecord {
            kind,
            received_at: Utc::now(),
            source: self.source.into(),
            client: principal.name.clone(),
            topic: String::new(),
            payload: Bytes::from(body),
            reason: still_open.to_string(),
        }
    }

    fn admit_violation(&self, client: &str) -> bool {
        let mut windows = self
            .violation_windows
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if windows.len() > 10_000 {
            // Bounded memory under a flood of distinct clients: start over.
            windows.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(1));
        }
        let window = windows
            .entry(client.to_owned())
            .or_insert((Instant::now(), 0));
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= VIOLATIONS_PER_SECOND
    }

    /// Violations not journaled because of the rate limit, since start.
    pub fn violations_dropped(&self) -> u64 {
        self.violations_dropped.load(Ordering::Relaxed)
    }
}

impl Tap for JournalTap {
    fn publish(
        &self,
        principal: &Principal,
        topic: &str,
        payload: Bytes,
        _qos: u8,
        _retain: bool,
    ) -> BoxFuture<'static, Result<(), TapError>> {
        let record = IngestRecord {
            kind: RecordKind::Publish,
            received_at: Utc::now(),
            source: self.source.into(),
            client: principal.name.clone(),
            topic: topic.to_owned(),
            payload,
            reason: String::new(),
        };
        let sink = self.sink.clone();
        Box::pin(async move { sink.append(&record).await.map_err(TapError::new) })
    }

    fn violation(&self, peer: SocketAddr, principal: Option<&Principal>, violation: Violation) {
        let (topic, payload, reason) = describe(&violation);
        tracing::warn!(%peer, client = principal.map(|p| p.name.as_str()), %reason, "MQTT violation");
        if !self.admit_violation(principal.map_or("", |p| p.name.as_str())) {
            self.violations_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let record = IngestRecord {
            kind: RecordKind::Violation,
            received_at: Utc::now(),
            source: self.source.into(),
            client: principal.map(|p| p.name.clone()).unwrap_or_default(),
            topic,
            payload,
            reason: format!("{reason} (from {peer})"),
        };
        self.journal(record);
    }

    fn session_started(&self, peer: SocketAddr, principal: &Principal) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let open = sessions.entry(principal.name.clone()).or_default();
        *open += 1;
        let open = *open;
        drop(sessions);
        self.journal(self.session_record(
            RecordKind::Connect,
            principal,
            format!("MQTT session opened from {peer}"),
            open,
        ));
    }

    fn session_ended(&self, peer: SocketAddr, principal: &Principal, reason: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let open = sessions.get_mut(&principal.name).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        if open == 0 {
            sessions.remove(&principal.name);
        }
        drop(sessions);
        self.journal(self.session_record(
            RecordKind::Disconnect,
            principal,
            format!("MQTT session from {peer} closed: {reason}"),
            open,
        ));
    }
}

fn describe(v: &Violation) -> (String, Bytes, String) {
    match v {
        Violation::PublishDenied { topic, payload } => (
            topic.clone(),
            payload.clone(),
            format!("publish to {topic:?} refused: outside this gateway's publish topics"),
        ),
        Violation::SubscribeDenied { filter } => (
            filter.clone(),
            Bytes::new(),
            format!("subscribe to {filter:?} refused: not this gateway's command topic"),
        ),
        Violation::ConnectRefused {
            client_id,
            username,
            refusal,
        } => (
            String::new(),
            Bytes::new(),
            match username {
                Some(user) => format!(
                    "connect refused ({refusal}) for client id {:?}, user {:?}",
                    truncate(client_id),
                    truncate(user)
                ),
                None => format!(
                    "connect refused ({refusal}) for client id {:?}, without user name",
                    truncate(client_id)
                ),
            },
        ),
        Violation::ClientIdDenied { client_id } => (
            String::new(),
            Bytes::new(),
            format!(
                "client id {:?} belongs to another gateway",
                truncate(client_id)
            ),
        ),
        Violation::WillDenied { topic } => (
            topic.clone(),
            Bytes::new(),
            format!("will topic {topic:?} is outside this gateway's publish topics"),
        ),
        Violation::Oversized { declared_len } => (
            String::new(),
            Bytes::new(),
            format!("packet of {declared_len} bytes exceeds the size limit; connection closed"),
        ),
        Violation::UnsupportedProtocol { level } => (
            String::new(),
            Bytes::new(),
            format!("MQTT protocol level {level} is not supported (use MQTT 3.1.1)"),
        ),
        Violation::Malformed { reason } => (
            String::new(),
            Bytes::new(),
            format!("malformed MQTT: {reason}; connection closed"),
        ),
        other => (String::new(), Bytes::new(), format!("{other:?}")),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The running embedded broker and its public listeners.
pub struct EmbeddedMqtt {
    pub plain: Gate,
    pub tls: Option<Gate>,
    pub internal_addr: SocketAddr,
}

impl EmbeddedMqtt {
    /// Starts rumqttd on a loopback port that only the gate can log into, and binds the gate's
    /// public listeners (port 0 allowed).
    pub async fn start(config: &MqttConfig, commands: CommandQueue) -> Result<Self, MqttError> {
        let internal_addr = free_loopback_port()
            .map_err(|e| MqttError::Broker(([127, 0, 0, 1], 0).into(), e.to_string()))?;
        let credentials = Credentials {
            username: "headend-gate".into(),
            password: crate::auth::password::generate(),
        };
        start_broker(internal_addr, &credentials, config, commands)?;
        wait_reachable(internal_addr, &credentials).await?;

        let gate_config = |listen, tls| {
            let mut c = GateConfig::new(listen, internal_addr);
            c.tls = tls;
            c.upstream_credentials = Some(credentials.clone());
            // The MQTT fixed header and topic come on top of the payload limit.
            c.max_packet_bytes = config.max_payload_bytes + 64 * 1024;
            c.max_connections = config.max_connections;
            c
        };
        let plain = Gate::bind(gate_config(config.addr, None))
            .await
            .map_err(|source| MqttError::Gate {
                addr: config.addr,
                source,
            })?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                Gate::bind(gate_config(
                    config.tls_addr,
                    Some(TlsConfig {
                        cert_pem: cert.clone(),
                        key_pem: key.clone(),
                        client_ca_pem: config.tls_client_ca.clone(),
                    }),
                ))
                .await
                .map_err(|source| MqttError::Gate {
                    addr: config.tls_addr,
                    source,
                })?,
            ),
            _ => None,
        };
        Ok(Self {
            plain,
            tls,
            internal_addr,
        })
    }

    pub fn stats(&self) -> Vec<GateStats> {
        std::iter::once(self.plain.stats())
            .chain(self.tls.as_ref().map(Gate::stats))
            .collect()
    }
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    listener.local_addr()
}

fn start_broker(
    addr: SocketAddr,
    credentials: &Credentials,
    config: &MqttConfig,
    commands: CommandQueue,
) -> Result<(), MqttError> {
    use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings};
    let mut server = ServerSettings {
        name: "headend-internal".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: config.max_payload_bytes + 64 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let (user, pass) = (credentials.username.clone(), credentials.password.clone());
    server.set_auth_handler(move |_client_id, username, password| {
        let ok = username == user && password == pass;
        async move { ok }
    });
    let broker_config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections + 16,
            max_outgoing_packet_count: 200,
            // rumqttd keeps a log per topic in memory; small segments bound it (a segment
            // must still hold the largest allowed payload).
            max_segment_size: (config.max_payload_bytes + 64 * 1024).max(512 * 1024),
            max_segment_count: 2,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(broker_config);
    let (link_tx, link_rx) = broker
        .link("headend")
        .map_err(|e| MqttError::Broker(addr, format!("in-process link: {e}")))?;
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|_| ())
            .map_err(|e| MqttError::Broker(addr, e.to_string()))
    };
    spawn(
        "rumqttd",
        Box::new(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        }),
    )?;
    spawn(
        "mqtt-commands",
        Box::new(move || publish_commands(link_tx, commands)),
    )?;
    spawn("mqtt-link", Box::new(move || drain_link(link_rx)))?;
    Ok(())
}

/// Publishes queued commands through the broker's in-process link (its API blocks).
fn publish_commands(mut link: rumqttd::local::LinkTx, mut commands: CommandQueue) {
    while let Some((topic, payload)) = commands.blocking_recv() {
        if let Err(e) = link.publish(topic.clone(), payload) {
            tracing::error!(%topic, error = %e, "command not handed to the embedded broker");
        }
    }
}

/// The link subscribes to nothing, but the router still schedules it: answer `Unschedule`
/// with `ready()` as every in-process client must, or the router stops serving the link.
fn drain_link(mut link: rumqttd::local::LinkRx) {
    loop {
        match link.recv() {
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                if link.ready().is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Waits until the broker accepts an MQTT session with the gate's credentials (a bare TCP probe
/// would be logged by rumqttd as a failed connect).
async fn wait_reachable(addr: SocketAddr, credentials: &Credentials) -> Result<(), MqttError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(5);
    loop {
        match mqtt_probe(addr, credentials).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(MqttError::Broker(addr, e.to_string()))
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// CONNECT (MQTT 3.1.1, clean session), expect CONNACK 0, DISCONNECT.
async fn mqtt_probe(addr: SocketAddr, credentials: &Credentials) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn field(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(s);
    }
    let mut body = Vec::new();
    field(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0b1100_0010, 0, 10]);
    field(&mut body, b"headend-probe");
    field(&mut body, credentials.username.as_bytes());
    field(&mut body, credentials.password.as_bytes());
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&packet).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut connack))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no CONNACK"))??;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(std::io::Error::other(format!("CONNACK {connack:02x?}")));
    }
    stream.write_all(&[0xe0, 0x00]).await
}

/// A client of an external broker (e.g. Mosquitto, or a cluster shared by several Headends).
/// Messages are acknowledged to the broker only once journaled (manual acks), and the session
/// is persistent, so the broker keeps what arrives while Headend is down.
pub async fn run_external(
    url: &str,
    filter: &str,
    sink: IngestSink,
    mut commands: CommandQueue,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let target = ExternalUrl::parse(url)?;
    let mut options = MqttOptions::new(target.client_id.clone(), target.host.clone(), target.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(sg_wire::MAX_PAYLOAD_BYTES + 64 * 1024, 64 * 1024);
    if let Some((user, pass)) = &target.credentials {
        options.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 256);
    let mut pending: FuturesOrdered<BoxFuture<'static, (rumqttc::Publish, bool)>> =
        FuturesOrdered::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = client.disconnect().await;
                return Ok(());
            }
            Some((topic, payload)) = commands.recv() => {
                if let Err(e) = client.try_publish(topic.as_str(), QoS::AtMostOnce, false, payload) {
                    tracing::warn!(%topic, error = %e, "command to a gateway not sent");
                }
            }
            Some((publish, journaled)) = pending.next(), if !pending.is_empty() => {
                if journaled {
                    if let Err(e) = client.ack(&publish).await {
                        tracing::warn!(error = %e, "external broker ack failed");
                    }
                }
            }
            event = events.poll(), if pending.len() < 1024 => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(host = %target.host, port = target.port, "connected to external broker");
                    if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "subscribe on external broker failed");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let record = IngestRecord {
                        kind: RecordKind::Publish,
                        received_at: Utc::now(),
                        source: crate::ingest::normalize::EXTERNAL_SOURCE.into(),
                        client: String::new(),
                        topic: publish.topic.clone(),
                        payload: publish.payload.clone(),
                        reason: String::new(),
                    };
                    let sink = sink.clone();
                    pending.push_back(Box::pin(async move {
                        let ok = match sink.append(&record).await {
                            Ok(()) => true,
                            Err(e) => {
                                // Not acked: the broker redelivers after reconnect.
                                tracing::error!(error = %e, "journal refused a message from the external broker");
                                false
                            }
                        };
                        (publish, ok)
                    }));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "external broker connection lost");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ExternalUrl {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    client_id: String,
}

impl ExternalUrl {
    fn parse(url: &str) -> Result<Self, MqttError> {
        let err = || MqttError::Url("scheme, host or port is missing or wrong".into());
        let rest = url.strip_prefix("mqtt://").ok_or_else(err)?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), pass.to_owned())), hostport)
            }
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| err())?),
            None => (hostport, 1883),
        };
        if host.is_empty() {
            return Err(err());
        }
        let client_id = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("client_id="))
            .unwrap_or("headend")
            .to_owned();
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
            client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::Busy;
    use crate::auth::throttle::Throttled;

    fn grant() -> MqttGrant {
        MqttGrant {
            id: 42,
            serial: "A-1".into(),
            publish_base: "sg/A-1/pub".into(),
            command_topic: "sg/A-1/sub".into(),
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    #[test]
    fn a_gateway_principal_has_its_two_link_ids_and_a_session_key_by_id() {
        let p = decide(Ok(Some(grant())), "A-1", peer(), &Metrics::default()).unwrap();
        assert_eq!(p.name, "A-1");
        assert!(p.may_use_client_id("A-1-1") && p.may_use_client_id("A-1-2"));
        assert!(!p.may_use_client_id("A-1") && !p.may_use_client_id("A-1-1-1"));
        assert_eq!(p.upstream_client_id("A-1-1"), "g42:A-1-1");
        assert!(p.may_publish("sg/A-1/pub/x") && p.may_subscribe("sg/A-1/sub"));
    }

    #[test]
    fn throttled_and_shed_connects_are_server_unavailable_and_counted() {
        let metrics = Metrics::default();
        let throttled = GatewayAuthError::Throttled(Throttled {
            retry_after: Duration::from_secs(6),
        });
        assert_eq!(
            decide(Err(throttled), "A", peer(), &metrics),
            Err(Refusal::ServerUnavailable)
        );
        assert_eq!(metrics.auth_throttled[MQTT_CHANNEL].get(), 1);
        assert_eq!(
            decide(Err(GatewayAuthError::Busy(Busy)), "A", peer(), &metrics),
            Err(Refusal::ServerUnavailable)
        );
        assert_eq!(metrics.password_checks_shed.get(), 1);
        assert_eq!(
            decide(Ok(None), "A", peer(), &metrics),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(metrics.mqtt_auth_failures.get(), 1);
        assert_eq!(metrics.auth_throttled[MQTT_CHANNEL].get(), 1);
        assert_eq!(Refusal::ServerUnavailable.return_code(), 3);
    }

    #[test]
    fn external_urls() {
        assert_eq!(
            ExternalUrl::parse("mqtt://u:p@broker.example:1884?client_id=he-1").unwrap(),
            ExternalUrl {
                host: "broker.example".into(),
                port: 1884,
                credentials: Some(("u".into(), "p".into())),
                client_id: "he-1".into()
            }
        );
        assert_eq!(ExternalUrl::parse("mqtt://localhost").unwrap().port, 1883);
        assert!(ExternalUrl::parse("http://x").is_err());
        assert!(ExternalUrl::parse("mqtt://:12").is_err());
    }
}
