//! MQTT front door of the embedded broker.
//!
//! rumqttd authenticates at CONNECT but has no per-topic authorisation, while
//! Headend's rule is that a gateway may publish only under its own base
//! (`sg/<serial>/pub/...`) and subscribe only to its own command topic
//! (`sg/<serial>/sub`). The [`Gate`] enforces that as an MQTT-aware TCP proxy
//! on the public port(s), in front of rumqttd on a loopback port:
//!
//! * behind a TCP proxy, it takes the client's address from the PROXY protocol
//!   header (v1 or v2) when the peer is a trusted proxy ([`ProxyProtocol`]), before
//!   TLS; that address is the one the policy, the tap and the logs see;
//! * it terminates TLS when configured, optionally requiring a client
//!   certificate from a given CA (mutual TLS);
//! * it authenticates the CONNECT through a [`Policy`], which yields the
//!   client's [`Principal`] (its ACL), and re-issues the CONNECT upstream with
//!   the gate's own broker credentials, so a client cannot reach the broker
//!   without passing the gate;
//! * it admits only the client ids the principal may use, and replays the
//!   CONNECT upstream under a client id namespaced by the principal's
//!   [`session_key`](Principal::session_key), so a persistent session in the
//!   broker belongs to the principal that created it;
//! * it checks every PUBLISH and SUBSCRIBE against the principal's ACL;
//! * it hands every allowed PUBLISH to a [`Tap`] (Headend journals it) and
//!   forwards it only once the tap reports it durable, so the broker's
//!   PUBACK, which the gateway takes as proof of delivery, never precedes
//!   durability; with [`GateConfig::answer_durable_publishes`] it answers the
//!   durable PUBLISH itself (PUBACK, or PUBREC then PUBCOMP) and the broker
//!   never sees it;
//! * everything else is relayed byte for byte, in both directions.
//!
//! # Denied publishes are acknowledged
//!
//! A PUBLISH outside the principal's prefixes is dropped and reported as a
//! [`Violation::PublishDenied`], but — like Mosquitto — the gate still
//! completes the QoS handshake towards the client (PUBACK for QoS 1; PUBREC,
//! then PUBCOMP for its PUBREL, for QoS 2). A denial is permanent, so a
//! client left without an acknowledgement would only retransmit the same
//! packet forever and clog its in-flight window. These local acknowledgements
//! keep their place in the connection's packet order relative to the tap
//! pipeline, but may overtake the broker's acknowledgements of earlier
//! publishes.
//!
//! # Ordering and backpressure
//!
//! Tap futures of one connection run concurrently, and packets are forwarded
//! in the order they arrived. At most
//! [`max_in_flight`](GateConfig::max_in_flight) packets wait on the tap per
//! connection; beyond that the gate stops reading the client's socket.
//!
//! Only MQTT 3.1.1 and 3.1 are accepted (3.1 is re-issued upstream as 3.1.1);
//! an MQTT 5 CONNECT is answered with CONNACK 0x01. Keep-alive is enforced by
//! the broker, which sees the client's PINGREQs and keep-alive value (note
//! that rumqttd refuses a keep-alive of 0; the client then gets CONNACK 3).
#![forbid(unsafe_code)]

mod codec;
mod policy;
mod proxy;
mod session;
mod stats;
mod tap;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use policy::{ConnectRequest, Policy, Principal, Refusal};
pub use proxy::{
    admit as admit_proxied, Admission, IpNet, Prefixed, ProxyError, ProxyProtocol,
    MAX_HEADER_BYTES as MAX_PROXY_HEADER_BYTES,
};
pub use stats::{GateStats, StatsSnapshot};
pub use tap::{Tap, TapError, Violation};
pub use tls::{acceptor as tls_acceptor, TlsConfig};

use session::Shared;

/// Largest first packet (the CONNECT) a client may send before it has
/// authenticated, fixed header included; a larger one is refused from its
/// fixed header, before its body is read.
///
/// Anyone can open a connection, so until the policy has said who it is the
/// gate must not buffer [`max_packet_bytes`](GateConfig::max_packet_bytes)
/// (512 KiB by default) for it: a thousand idle sockets announcing large
/// CONNECTs would pin half a gigabyte. A real CONNECT is small: a 23-byte
/// client id, a 32-byte user name, a 1 KiB password and a will of a few
/// hundred bytes come to under 2 KiB; 4 KiB leaves room for a generous will.
/// The full `max_packet_bytes` applies from the first packet after CONNECT.
pub const MAX_CONNECT_BYTES: usize = 4 * 1024;

/// Configuration of one listener. Run one [`Gate`] per public port (plain
/// and TLS, say), all pointing at the same upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Public address to listen on.
    pub listen: SocketAddr,
    /// Terminate TLS on `listen` when set.
    pub tls: Option<TlsConfig>,
    /// The broker's (loopback) MQTT address.
    pub upstream: SocketAddr,
    /// Sent upstream instead of the client's own username and password. The
    /// broker should accept only these, so that nothing can bypass the gate
    /// by connecting to its port directly.
    pub upstream_credentials: Option<Credentials>,
    /// Largest packet accepted from an authenticated client, fixed header
    /// included (the CONNECT is bounded by [`MAX_CONNECT_BYTES`] as well).
    /// Larger ones are refused from their header, before the body is read.
    pub max_packet_bytes: usize,
    /// Time a new connection has to complete TLS and send CONNECT; also the
    /// bound on the policy's answer and on reaching the upstream broker.
    pub connect_timeout: Duration,
    /// Connections served at once; further ones are closed right away.
    pub max_connections: usize,
    /// Packets of one connection that may wait on the tap before the gate
    /// stops reading from that client. Together with `max_packet_bytes`
    /// this bounds the memory one connection can pin.
    pub max_in_flight: usize,
    /// PROXY protocol: required from (and only believed from) these proxies; `None`: off.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Completes the QoS handshake of a durable PUBLISH itself instead of forwarding it. Only
    /// for a broker where no principal may subscribe to what principals publish (Headend's:
    /// gateways subscribe to their command topic only, and the tap is the readings' one
    /// consumer): the broker would store and route every reading for nobody, and each would
    /// cost two more socket hops, the broker's router and its topic log.
    pub answer_durable_publishes: bool,
}

impl GateConfig {
    pub const DEFAULT_MAX_PACKET_BYTES: usize = 512 * 1024;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

    /// Plain TCP on `listen`, no upstream credentials, default limits.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            listen,
            tls: None,
            upstream,
            upstream_credentials: None,
            max_packet_bytes: Self::DEFAULT_MAX_PACKET_BYTES,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            proxy_protocol: None,
            answer_durable_publishes: false,
        }
    }
}

/// Username and password for the upstream broker.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a gate could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration {}: {reason}", path.display())]
    Tls { path: PathBuf, reason: String },
    #[error("invalid gate configuration: {0}")]
    Config(&'static str),
}

/// A bound, not yet serving, MQTT gate.
pub struct Gate {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: GateConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: GateStats,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Validates `config`, loads the TLS material and binds the listener.
    pub async fn bind(config: GateConfig) -> Result<Gate, GateError> {
        if config.max_connections == 0 {
            return Err(GateError::Config("max_connections must be at least 1"));
        }
        if config.max_in_flight == 0 {
            return Err(GateError::Config("max_in_flight must be at least 1"));
        }
        if config.max_packet_bytes < 2 {
            return Err(GateError::Config("max_packet_bytes must be at least 2"));
        }
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let bind_error = |source| GateError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Gate {
            listener,
            local_addr,
            config,
            tls,
            stats: GateStats::default(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle on the gate's counters, live while [`serve`](Self::serve) runs.
    pub fn stats(&self) -> GateStats {
        self.stats.clone()
    }

    /// Accepts and serves connections until `shutdown` is cancelled, then
    /// closes every connection and returns once their tasks have ended.
    ///
    /// Infallible by design: accept errors (such as running out of file
    /// descriptors) are logged and retried, as they must not take the front
    /// door down; each connection's errors close only that connection.
    pub async fn serve(
        self,
        policy: Arc<dyn Policy>,
        tap: Arc<dyn Tap>,
        shutdown: CancellationToken,
    ) {
        let Gate {
            listener,
            local_addr,
            config,
            tls,
            stats,
        } = self;
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let proxy = Arc::new(config.proxy_protocol.clone());
        let shared = Arc::new(Shared::new(config, tls, policy, tap, stats.clone()));
        let tasks = TaskTracker::new();
        info!(
            %local_addr,
            tls = shared.tls.is_some(),
            proxy_protocol = proxy.is_some(),
            "MQTT gate serving"
        );

        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%local_addr, %error, "accept failed");
                    // Errors such as EMFILE persist for a while; don't spin.
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            stats::bump(&stats.counters().connections_accepted);
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                stats::bump(&stats.counters().connections_rejected);
                warn!(%peer, "connection limit reached, closing new connection");
                continue;
            };
            let (shared, proxy, counters) =
                (Arc::clone(&shared), Arc::clone(&proxy), stats.clone());
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = stream.set_nodelay(true) {
                    info!(%peer, %error, "connection closed: cannot set TCP_NODELAY");
                    return;
                }
                // The PROXY header comes before anything else, TLS included.
                let admitted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    admitted = proxy::admit(stream, peer, proxy.as_ref().as_ref()) => admitted,
                };
                match admitted {
                    Ok(Admission::Client(stream, client)) => {
                        session::handle(&shared, stream, client, shutdown).await;
                    }
                    Ok(Admission::Local) => debug!(%peer, "PROXY LOCAL connection closed"),
                    Err(error) => {
                        stats::bump(&counters.counters().protocol_errors);
                        warn!(%peer, %error, "connection from a trusted proxy refused");
                    }
                }
                drop(slot);
            });
        }

        // Refuse new connections at once, not after the last one has ended.
        drop(listener);
        tasks.close();
        tasks.wait().await;
        info!(%local_addr, "MQTT gate stopped");
    }
}
