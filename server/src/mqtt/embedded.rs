//! The embedded broker: rumqttd on a loopback port only the gate can log into, the gate's
//! public listeners (plain and TLS) in front of it, and the in-process link that publishes
//! commands.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use headend_mqtt_gate::{Credentials, Gate, GateConfig, GateStats, ProxyProtocol, TlsConfig};

use super::{CommandQueue, MqttError};
use crate::config::MqttConfig;
use crate::infra::backoff::Backoff;

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
            c.max_in_flight = config.max_in_flight.max(1);
            c.proxy_protocol = ProxyProtocol::from_trusted(config.proxy_protocol_from.clone());
            // Gateways subscribe to their command topic only: no one could receive a reading
            // from rumqttd, so the gate acknowledges the journaled reading itself.
            c.answer_durable_publishes = true;
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
            // rumqttd keeps a log per topic in memory, of every topic published to: with
            // segments sized for the largest payload (512 KiB), a 100 000-message burst from
            // 200 gateways stayed in it whole. A segment may overflow by its last message, so
            // small segments still take any payload; only command topics are read from.
            max_segment_size: config.broker_topic_log_bytes.max(MIN_TOPIC_LOG_BYTES),
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
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
    loop {
        match mqtt_probe(addr, credentials).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(MqttError::Broker(addr, e)),
            Err(_) => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// CONNECT (MQTT 3.1.1, clean session) with the gate's credentials, expect CONNACK 0,
/// DISCONNECT: rumqttc speaks the protocol, as for every other client of ours.
async fn mqtt_probe(addr: SocketAddr, credentials: &Credentials) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
    let mut options = MqttOptions::new("headend-probe", addr.ip().to_string(), addr.port());
    options.set_credentials(credentials.username.clone(), credentials.password.clone());
    options.set_clean_session(true);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, 1);
    // The first poll connects; a CONNACK other than 0 comes back as `ConnectionRefused`.
    poll_until(&mut events, "CONNACK", |event| {
        matches!(event, Event::Incoming(Packet::ConnAck(_)))
    })
    .await?;
    client.try_disconnect().map_err(|e| e.to_string())?;
    poll_until(&mut events, "DISCONNECT sent", |event| {
        matches!(event, Event::Outgoing(Outgoing::Disconnect))
    })
    .await
}

/// Drives the probe's event loop until `done` accepts an event, for [`PROBE_TIMEOUT`] at most.
async fn poll_until(
    events: &mut rumqttc::EventLoop,
    what: &str,
    done: impl Fn(&rumqttc::Event) -> bool,
) -> Result<(), String> {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(event) if done(&event) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, wait)
        .await
        .map_err(|_| format!("no {what}"))?
}

/// rumqttd refuses (panics on) smaller segments.
const MIN_TOPIC_LOG_BYTES: usize = 1024;

/// How long the probe waits for each of the CONNACK and the sending of its DISCONNECT.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
