//! One push link: an MQTT(S) connection driven by rumqttc, carrying what the gateway core
//! hands out and reporting connects, commands and PUBACKs back to it.
//!
//! The core owns the store-and-forward queue, so rumqttc must not keep a second copy: the
//! session is clean, nothing is published while disconnected, and after every CONNACK the
//! core is told `connected` and hands out its queue again from the oldest unacknowledged
//! message. rumqttc drops its own pending publishes on a clean CONNACK, so nothing is sent
//! twice by both.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Outgoing as MqttOutgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, Notify};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use sg_gateway_core::Backoff;

use crate::config::{ResolvedLink, TlsFiles};

/// A message the core wants published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    /// The core's id, reported back by [`Session::published`].
    pub id: u64,
}

/// The gateway as one link sees it. Implemented by the runner over the core; every call is
/// short and synchronous (the core is sans-IO).
pub trait Session: Send + Sync + 'static {
    fn connected(&self, link: usize);
    fn disconnected(&self, link: usize);
    /// A message arrived on the command topic.
    fn command(&self, link: usize, payload: &[u8]);
    /// The next message to publish, if the core has one and its window allows.
    fn next_publish(&self, link: usize) -> Option<Publish>;
    /// The broker acknowledged `id` (QoS 1), or it was written out (QoS 0).
    fn published(&self, link: usize, id: u64);
}

/// Orders from the runner to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkControl {
    /// Drop the connection and stay away this long (a simulated outage or a reboot).
    Offline(Duration),
}

/// Connection settings of one link.
#[derive(Clone)]
pub struct LinkSettings {
    /// 0 or 1 (published as link 1 or 2).
    pub link: usize,
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub keep_alive: Duration,
    pub command_topic: String,
    pub max_in_flight: usize,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Reconnect delays: exponential with jitter, so a fleet that lost the broker together
    /// does not reconnect in lockstep.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub seed: u64,
}

impl LinkSettings {
    /// Settings for link `link` (0-based) of gateway `serial`.
    ///
    /// # Errors
    /// The TLS files cannot be read.
    pub fn new(serial: &str, link: usize, resolved: &ResolvedLink) -> anyhow::Result<Self> {
        let tls = resolved.tls.as_ref().map(client_tls).transpose()?;
        Ok(Self {
            link,
            client_id: format!("{serial}-{}", link + 1),
            host: resolved.host.clone(),
            port: resolved.port,
            username: resolved.username.clone(),
            password: resolved.password.clone(),
            keep_alive: Duration::from_secs(u64::from(resolved.keep_alive_s.max(5))),
            command_topic: resolved.core.layout.command_topic(),
            max_in_flight: resolved.core.max_in_flight,
            tls,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            seed: serial.bytes().fold(link as u64, |h, b| {
                h.wrapping_mul(31).wrapping_add(b.into())
            }),
        })
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_credentials(&self.username, &self.password)
            .set_clean_session(true)
            .set_keep_alive(self.keep_alive)
            .set_max_packet_size(
                sg_wire::MAX_PAYLOAD_BYTES + 1024,
                sg_wire::MAX_PAYLOAD_BYTES + 1024,
            )
            .set_inflight(u16::try_from(self.max_in_flight.clamp(1, 1000)).unwrap_or(100));
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        options
    }
}

/// A ring-backed rustls client configuration trusting only `files.ca_file`, with a client
/// certificate for mutual TLS. ring, not aws-lc-rs, keeps the build free of C toolchains.
///
/// # Errors
/// A file cannot be read or holds no usable certificate or key.
pub fn client_tls(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&files.ca_file)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in {}", files.ca_file.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match &files.client {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let pem =
                std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            let key = match PrivateKeyDer::from_pem_slice(&pem) {
                Err(pem::Error::NoItemsFound) => {
                    anyhow::bail!("no private key in {}", key.display())
                }
                other => other?,
            };
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// Runs the link until `cancel`: connects, reconnects with backoff, and moves messages
/// between the broker and `session`. `wake` is notified whenever the core may have
/// something new to publish.
pub async fn run_link(
    settings: LinkSettings,
    session: Arc<dyn Session>,
    wake: Arc<Notify>,
    mut control: mpsc::Receiver<LinkControl>,
    cancel: CancellationToken,
) {
    let link = settings.link;
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max, settings.seed);
    // Room for a full window plus commands' replies, subscriptions and the hello.
    let (client, mut eventloop) = AsyncClient::new(settings.options(), settings.max_in_flight + 64);
    let mut state = Delivery::default();
    let mut connected = false;

    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            () = wake.notified(), if connected => {
                state.drain(&client, &*session, link);
                continue;
            }
            Some(order) = control.recv() => {
                let LinkControl::Offline(for_how_long) = order;
                info!(client = %settings.client_id, ?for_how_long, "going offline");
                if connected {
                    connected = false;
                    session.disconnected(link);
                }
                eventloop.clean();
                eventloop.pending.clear();
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(for_how_long) => continue,
                }
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    continue;
                }
                info!(client = %settings.client_id, host = %settings.host, port = settings.port, "connected");
                connected = true;
                backoff.reset();
                state = Delivery::default();
                // QoS 0, as the real SG subscribes (`commands.txt`): a lost command is
                // re-sent by the operator, a lost `ack` is covered by the next one.
                if let Err(error) = client.try_subscribe(&settings.command_topic, QoS::AtMostOnce) {
                    warn!(link = link + 1, %error, "cannot subscribe to the command topic");
                }
                session.connected(link);
                state.drain(&client, &*session, link);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.topic == settings.command_topic {
                    debug!(link = link + 1, "command received");
                    session.command(link, &publish.payload);
                    state.drain(&client, &*session, link);
                }
            }
            Ok(Event::Outgoing(MqttOutgoing::Publish(pkid))) => {
                if let Some(id) = state.written.pop_front() {
                    if pkid == 0 {
                        session.published(link, id);
                    } else {
                        state.awaiting_ack.insert(pkid, id);
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(id) = state.awaiting_ack.remove(&ack.pkid) {
                    session.published(link, id);
                    state.drain(&client, &*session, link);
                }
            }
            Ok(_) => {}
            Err(error) => {
                if connected {
                    warn!(client = %settings.client_id, %error, "connection lost");
                    connected = false;
                    session.disconnected(link);
                } else {
                    debug!(client = %settings.client_id, %error, "cannot connect");
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    if connected {
        // A clean DISCONNECT, so the broker does not wait for the keep-alive to expire.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(MqttOutgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        session.disconnected(link);
    }
}

/// Which core ids are where on the current connection.
#[derive(Default)]
struct Delivery {
    /// Handed to rumqttc, packet id not yet known (rumqttc assigns them in request order).
    written: VecDeque<u64>,
    /// Written with this packet id, waiting for PUBACK.
    awaiting_ack: HashMap<u16, u64>,
}

impl Delivery {
    fn drain(&mut self, client: &AsyncClient, session: &dyn Session, link: usize) {
        while let Some(publish) = session.next_publish(link) {
            let qos = match publish.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            match client.try_publish(publish.topic, qos, false, publish.payload) {
                Ok(()) => self.written.push_back(publish.id),
                // The core keeps it as in flight; it is resent after the next reconnect.
                Err(error) => warn!(link = link + 1, %error, "request channel full"),
            }
        }
    }
}
