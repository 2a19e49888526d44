//! One client connection: TLS, CONNECT, then the policed relay.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Either, Ready};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, field, info, info_span, warn, Instrument, Span};

use crate::codec::{self, kind, Connect, ConnectVersion, Frame, FrameReader, ReadError};
use crate::stats::{self, ActiveGuard, Counters, GateStats};
use crate::{
    ConnectRequest, Credentials, GateConfig, Policy, Principal, Refusal, Tap, TapError, Violation,
};

/// Packets queued for the client's socket before relaying stalls.
const CLIENT_QUEUE: usize = 256;
/// Bytes gathered into one socket write towards the client.
const WRITE_BATCH: usize = 64 * 1024;
/// SUBSCRIBEs with refused filters that may await their SUBACK at once.
/// Gateways subscribe once per session; this only caps a hostile client.
const MAX_PENDING_SPLICES: usize = 16;
/// The broker is trusted to frame sanely; accept any legal MQTT packet.
const UPSTREAM_PACKET_LIMIT: usize = codec::MAX_REMAINING_LEN + 5;

/// What every connection of a gate shares.
pub(crate) struct Shared {
    upstream: SocketAddr,
    upstream_credentials: Option<Credentials>,
    max_packet_bytes: usize,
    connect_timeout: Duration,
    max_in_flight: usize,
    answer_durable_publishes: bool,
    pub(crate) tls: Option<TlsAcceptor>,
    policy: Arc<dyn Policy>,
    tap: Arc<dyn Tap>,
    stats: GateStats,
}

impl Shared {
    pub(crate) fn new(
        config: GateConfig,
        tls: Option<TlsAcceptor>,
        policy: Arc<dyn Policy>,
        tap: Arc<dyn Tap>,
        stats: GateStats,
    ) -> Self {
        Self {
            upstream: config.upstream,
            upstream_credentials: config.upstream_credentials,
            max_packet_bytes: config.max_packet_bytes,
            connect_timeout: config.connect_timeout,
            max_in_flight: config.max_in_flight,
            answer_durable_publishes: config.answer_durable_publishes,
            tls,
            policy,
            tap,
            stats,
        }
    }

    fn counters(&self) -> &Counters {
        self.stats.counters()
    }
}

/// Why a connection ended; decides how loudly that is logged.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client disconnected")]
    Disconnected,
    #[error("client closed the connection")]
    ClientClosed,
    #[error("gate shutting down")]
    Shutdown,
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("client I/O error: {0}")]
    ClientIo(io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("CONNECT refused: {0}")]
    Refused(Refusal),
    #[error("client id not allowed for this principal")]
    ClientIdDenied,
    #[error("will topic {0:?} not allowed")]
    WillDenied(String),
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocol(u8),
    #[error("upstream broker unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream broker refused the session with CONNACK {0}")]
    UpstreamRefused(u8),
    #[error("upstream broker closed the connection")]
    UpstreamClosed,
    #[error("upstream I/O error: {0}")]
    UpstreamIo(io::Error),
    #[error("tap failed for a publish to {topic:?}: {error}")]
    TapFailed { topic: String, error: TapError },
}

impl End {
    fn log(&self) {
        match self {
            End::Disconnected | End::ClientClosed | End::Shutdown => debug!("closed: {self}"),
            End::ConnectTimeout | End::Tls(_) | End::ClientIo(_) | End::UpstreamClosed => {
                info!("closed: {self}");
            }
            End::Protocol(_)
            | End::Refused(_)
            | End::ClientIdDenied
            | End::WillDenied(_)
            | End::UnsupportedProtocol(_) => warn!("closed: {self}"),
            End::UpstreamUnavailable(_)
            | End::UpstreamRefused(_)
            | End::UpstreamIo(_)
            | End::TapFailed { .. } => error!("closed: {self}"),
        }
    }
}

/// Serves one accepted TCP connection (past its PROXY header, if any: `peer` is
/// the client's address) until either side closes, a rule is broken or
/// `shutdown` is cancelled.
pub(crate) async fn handle<S>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let _active = ActiveGuard::new(shared.stats.clone());
    let span = info_span!("mqtt", %peer, client_id = field::Empty, principal = field::Empty);
    async {
        let end = tokio::select! {
            end = serve(shared, stream, peer) => end,
            () = shutdown.cancelled() => End::Shutdown,
        };
        end.log();
    }
    .instrument(span)
    .await;
}

async fn serve<S>(shared: &Shared, stream: S, peer: SocketAddr) -> End
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    // One budget for the TLS handshake and the CONNECT, so a slow-loris
    // client cannot stretch the two.
    let deadline = Instant::now() + shared.connect_timeout;
    let result = match &shared.tls {
        None => session(shared, stream, peer, false, deadline).await,
        Some(acceptor) => match timeout_at(deadline, acceptor.accept(stream)).await {
            Err(_) => {
                stats::bump(&shared.counters().protocol_errors);
                Err(End::ConnectTimeout)
            }
            Ok(Err(error)) => Err(End::Tls(error)),
            Ok(Ok(stream)) => {
                let client_cert_present = stream.get_ref().1.peer_certificates().is_some();
                session(shared, stream, peer, client_cert_present, deadline).await
            }
        },
    };
    let Err(end) = result;
    end
}

/// A connection, and its principal once authenticated.
struct Conn<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    principal: Option<&'a Principal>,
}

impl Conn<'_> {
    fn report(&self, violation: Violation) {
        self.shared
            .tap
            .violation(self.peer, self.principal, violation);
    }

    /// Reports a protocol violation and returns the matching [`End`].
    fn malformed(&self, reason: &str) -> End {
        stats::bump(&self.shared.counters().protocol_errors);
        self.report(Violation::Malformed {
            reason: reason.to_owned(),
        });
        End::Protocol(reason.to_owned())
    }

    /// Turns a failed client read into an [`End`], reporting what deserves it.
    fn read_failed(&self, error: ReadError) -> End {
        match error {
            ReadError::Oversized { declared, limit } => {
                stats::bump(&self.shared.counters().protocol_errors);
                self.report(Violation::Oversized {
                    declared_len: declared,
                });
                End::Protocol(format!("packet of {declared} bytes exceeds {limit}"))
            }
            ReadError::BadLength => self.malformed("invalid remaining length"),
            ReadError::Truncated => End::ClientClosed,
            ReadError::Io(error) => End::ClientIo(error),
        }
    }
}

/// Runs a connection from its first byte; only ever ends with an [`End`].
async fn session<S>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
    client_cert_present: bool,
    deadline: Instant,
) -> Result<Infallible, End>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (client_read, mut client_write) = tokio::io::split(stream);
    // Until the policy has said who this is, only a CONNECT-sized packet is
    // accepted (see `MAX_CONNECT_BYTES`); the full limit comes with the principal.
    let mut client = FrameReader::new(
        client_read,
        crate::MAX_CONNECT_BYTES.min(shared.max_packet_bytes),
    );
    let anonymous = Conn {
        shared,
        peer,
        principal: None,
    };

    let first = match timeout_at(deadline, client.next()).await {
        Err(_) => {
            stats::bump(&shared.counters().protocol_errors);
            return Err(End::ConnectTimeout);
        }
        Ok(Err(error)) => return Err(anonymous.read_failed(error)),
        Ok(Ok(None)) => return Err(End::ClientClosed),
        Ok(Ok(Some(frame))) => frame,
    };
    if first.kind() != kind::CONNECT || codec::check_client_frame(&first).is_err() {
        return Err(anonymous.malformed("first packet is not a valid CONNECT"));
    }
    let connect = codec::parse_connect(first.body()).map_err(|m| anonymous.malformed(m.0))?;
    if let ConnectVersion::Unsupported(level) = connect.version {
        stats::bump(&shared.counters().connects_refused);
        anonymous.report(Violation::UnsupportedProtocol { level });
        refuse(&mut client_write, 1).await;
        return Err(End::UnsupportedProtocol(level));
    }
    Span::current().record("client_id", connect.client_id.as_str());

    let principal = match authorize(&anonymous, &connect, client_cert_present).await {
        Ok(principal) => principal,
        Err((code, end)) => {
            stats::bump(&shared.counters().connects_refused);
            refuse(&mut client_write, code).await;
            return Err(end);
        }
    };
    Span::current().record("principal", principal.name.as_str());
    client.set_limit(shared.max_packet_bytes);

    let (upstream_read, upstream_write, connack) =
        match open_upstream(shared, &connect, &principal).await {
            Ok(opened) => opened,
            Err(end) => {
                refuse(&mut client_write, Refusal::ServerUnavailable.return_code()).await;
                return Err(end);
            }
        };
    let (session_present, code) = connack;
    // MQTT 3.1 has no session-present flag: its CONNACK byte is reserved.
    let session_present = session_present && connect.version == ConnectVersion::V311;
    let connack = codec::encode_connack(session_present, code);
    let relayed = async {
        client_write.write_all(&connack).await?;
        client_write.flush().await
    };
    relayed.await.map_err(End::ClientIo)?;
    if code != 0 {
        return Err(End::UpstreamRefused(code));
    }
    stats::bump(&shared.counters().sessions_established);
    debug!(keep_alive = connect.keep_alive, "session established");
    shared.tap.session_started(peer, &principal);

    let conn = Conn {
        shared,
        peer,
        principal: Some(&principal),
    };
    let splices = SubackSplices::default();
    let (to_client, client_queue) = mpsc::channel(CLIENT_QUEUE);
    let inbound = Inbound {
        conn: &conn,
        principal: &principal,
        upstream: upstream_write,
        to_client: to_client.clone(),
        splices: &splices,
        pending: FuturesOrdered::new(),
        local_qos2: HashSet::new(),
        out: BytesMut::new(),
        reading: true,
    };
    // Biased towards the writer: when the client's socket fails, the relays
    // notice it as a closed queue, but the writer holds the real cause.
    let end = tokio::select! {
        biased;
        end = write_to_client(client_queue, client_write) => end,
        end = inbound.run(&mut client) => end,
        end = relay_to_client(upstream_read, to_client, &splices) => end,
    };
    shared.tap.session_ended(peer, &principal, &end.to_string());
    Err(end)
}

/// Checks the CONNECT against the policy and the principal's ACL. On refusal
/// yields the CONNACK code to send and the reason to log.
async fn authorize(
    conn: &Conn<'_>,
    connect: &Connect,
    client_cert_present: bool,
) -> Result<Principal, (u8, End)> {
    let shared = conn.shared;
    let request = ConnectRequest {
        client_id: connect.client_id.clone(),
        username: connect.username.clone(),
        password: connect.password.as_ref().map(|p| p.to_vec()),
        peer: conn.peer,
        client_cert_present,
    };
    let verdict = timeout(shared.connect_timeout, shared.policy.authenticate(request))
        .await
        .unwrap_or_else(|_| {
            warn!("policy did not answer within the connect timeout");
            Err(Refusal::ServerUnavailable)
        });
    let principal = match verdict {
        Ok(principal) => principal,
        Err(refusal) => {
            warn!(username = ?connect.username, %refusal, "CONNECT refused");
            conn.report(Violation::ConnectRefused {
                client_id: connect.client_id.clone(),
                username: connect.username.clone(),
                refusal,
            });
            return Err((refusal.return_code(), End::Refused(refusal)));
        }
    };
    if !principal.may_use_client_id(&connect.client_id) {
        shared.tap.violation(
            conn.peer,
            Some(&principal),
            Violation::ClientIdDenied {
                client_id: connect.client_id.clone(),
            },
        );
        // CONNACK 2: identifier rejected.
        return Err((2, End::ClientIdDenied));
    }
    if let Some(will) = &connect.will {
        if !principal.may_publish(&will.topic) {
            shared.tap.violation(
                conn.peer,
                Some(&principal),
                Violation::WillDenied {
                    topic: will.topic.clone(),
                },
            );
            return Err((
                Refusal::NotAuthorized.return_code(),
                End::WillDenied(will.topic.clone()),
            ));
        }
    }
    Ok(principal)
}

/// Best-effort CONNACK carrying a refusal; the connection closes right after.
async fn refuse<W: AsyncWrite + Unpin>(client: &mut W, code: u8) {
    let send = async {
        client
            .write_all(&codec::encode_connack(false, code))
            .await?;
        client.shutdown().await
    };
    // A client that does not read must not hold the connection open.
    if let Ok(Err(error)) = timeout(Duration::from_secs(1), send).await {
        debug!(%error, "could not deliver the refusing CONNACK");
    }
}

type UpstreamRead = tokio::net::tcp::OwnedReadHalf;
type UpstreamWrite = tokio::net::tcp::OwnedWriteHalf;

/// Connects to the broker and replays the client's CONNECT there, with the
/// gate's credentials when configured and the client id namespaced by the
/// principal's session key, so that the broker session (subscriptions, queued
/// messages, will) belongs to this principal alone. Returns the broker's
/// CONNACK as `(session present, return code)`.
async fn open_upstream(
    shared: &Shared,
    connect: &Connect,
    principal: &Principal,
) -> Result<(FrameReader<UpstreamRead>, UpstreamWrite, (bool, u8)), End> {
    let unavailable = End::UpstreamUnavailable;
    let handshake = async {
        let stream = TcpStream::connect(shared.upstream)
            .await
            .map_err(|e| unavailable(format!("connect to {}: {e}", shared.upstream)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable(e.to_string()))?;
        let (read, mut write) = stream.into_split();

        let mut upstream_connect = connect.clone();
        upstream_connect.client_id = principal.upstream_client_id(&connect.client_id);
        if let Some(credentials) = &shared.upstream_credentials {
            upstream_connect.username = Some(credentials.username.clone());
            upstream_connect.password =
                Some(Bytes::from(credentials.password.clone().into_bytes()));
        }
        write
            .write_all(&upstream_connect.encode())
            .await
            .map_err(|e| unavailable(e.to_string()))?;

        let mut read = FrameReader::new(read, UPSTREAM_PACKET_LIMIT);
        let frame = read
            .next()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(|| {
                unavailable("broker closed the connection instead of a CONNACK".into())
            })?;
        if frame.kind() != kind::CONNACK {
            return Err(unavailable(format!(
                "expected CONNACK, got packet type {}",
                frame.kind()
            )));
        }
        let connack = codec::parse_connack(frame.body()).map_err(|m| unavailable(m.0.into()))?;
        Ok((read, write, connack))
    };
    timeout(shared.connect_timeout, handshake)
        .await
        .unwrap_or_else(|_| Err(unavailable("no CONNACK within the connect timeout".into())))
}

/// What to do with one client packet once it is its turn.
enum Step {
    /// Relay to the broker as is.
    Forward(Bytes),
    /// A PUBLISH the tap made durable: relay to the broker (or answer it, see
    /// [`GateConfig::answer_durable_publishes`]), with its QoS and packet id.
    Publish(Bytes, u8, Option<u16>),
    /// Answer the client locally; nothing goes upstream.
    Reply(Bytes),
    /// Relay a DISCONNECT, then end the session.
    Disconnect(Bytes),
    /// The tap could not make a PUBLISH durable.
    TapFailed { topic: String, error: TapError },
}

/// A client packet waiting for its turn; only PUBLISHes actually wait.
type Pending = Either<Ready<Step>, Tapped>;

/// A PUBLISH waiting for the tap to make it durable.
struct Tapped {
    durable: BoxFuture<'static, Result<(), TapError>>,
    packet: Bytes,
    topic: String,
    qos: u8,
    packet_id: Option<u16>,
}

impl Future for Tapped {
    type Output = Step;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Step> {
        let outcome = ready!(self.durable.poll_unpin(cx));
        let this = &mut *self;
        Poll::Ready(match outcome {
            Ok(()) => Step::Publish(mem::take(&mut this.packet), this.qos, this.packet_id),
            Err(error) => Step::TapFailed {
                topic: mem::take(&mut this.topic),
                error,
            },
        })
    }
}

/// The client-to-broker direction.
struct Inbound<'a> {
    conn: &'a Conn<'a>,
    principal: &'a Principal,
    upstream: UpstreamWrite,
    to_client: mpsc::Sender<Bytes>,
    splices: &'a SubackSplices,
    /// Packets in arrival order, each resolving once it may go upstream.
    pending: FuturesOrdered<Pending>,
    /// QoS 2 packet ids of denied publishes, whose PUBREL the gate answers.
    local_qos2: HashSet<u16>,
    /// Bytes gathered for the next write upstream.
    out: BytesMut,
    /// False after the client's DISCONNECT or end of stream.
    reading: bool,
}

impl Inbound<'_> {
    async fn run<R: AsyncRead + Unpin>(mut self, client: &mut FrameReader<R>) -> End {
        let Err(end) = self.relay(client).await;
        end
    }

    async fn relay<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut FrameReader<R>,
    ) -> Result<Infallible, End> {
        let max_in_flight = self.conn.shared.max_in_flight;
        loop {
            tokio::select! {
                Some(step) = self.pending.next() => {
                    self.apply(step).await?;
                    // Batch whatever else is ready into the same write.
                    while let Some(Some(step)) = self.pending.next().now_or_never() {
                        self.apply(step).await?;
                    }
                    self.flush().await?;
                }
                read = client.next(), if self.reading && self.pending.len() < max_in_flight => {
                    match read {
                        Ok(Some(frame)) => self.ingest(frame)?,
                        // Client gone: still forward what the tap accepts.
                        Ok(None) => self.reading = false,
                        Err(error) => return Err(self.conn.read_failed(error)),
                    }
                }
                else => return Err(End::ClientClosed),
            }
        }
    }

    fn ingest(&mut self, frame: Frame) -> Result<(), End> {
        codec::check_client_frame(&frame).map_err(|m| self.conn.malformed(m.0))?;
        let step = match frame.kind() {
            kind::PUBLISH => return self.publish(frame),
            kind::SUBSCRIBE => self.subscribe(frame)?,
            kind::PUBREL => {
                let id = codec::parse_ack(frame.body()).map_err(|m| self.conn.malformed(m.0))?;
                if self.local_qos2.remove(&id) {
                    Step::Reply(codec::encode_ack(kind::PUBCOMP, id))
                } else {
                    Step::Forward(frame.into_bytes())
                }
            }
            kind::DISCONNECT => {
                self.reading = false;
                Step::Disconnect(frame.into_bytes())
            }
            kind::CONNECT => return Err(self.conn.malformed("second CONNECT")),
            // PUBACK, PUBREC, PUBCOMP, UNSUBSCRIBE, PINGREQ: the broker's business.
            _ => Step::Forward(frame.into_bytes()),
        };
        self.pending
            .push_back(Either::Left(futures::future::ready(step)));
        Ok(())
    }

    fn publish(&mut self, frame: Frame) -> Result<(), End> {
        let publish = codec::parse_publish(frame.flags(), frame.body())
            .map_err(|m| self.conn.malformed(m.0))?;
        let principal = self.principal;
        if principal.may_publish(&publish.topic) {
            let durable = self.conn.shared.tap.publish(
                principal,
                &publish.topic,
                publish.payload,
                publish.qos,
                publish.retain,
            );
            self.pending.push_back(Either::Right(Tapped {
                durable,
                packet: frame.into_bytes(),
                topic: publish.topic,
                qos: publish.qos,
                packet_id: publish.packet_id,
            }));
            return Ok(());
        }

        stats::bump(&self.conn.shared.counters().publishes_denied);
        warn!(topic = %publish.topic, qos = publish.qos, "PUBLISH denied");
        // Acknowledge anyway; see the crate docs for why.
        let reply = match (publish.qos, publish.packet_id) {
            (1, Some(id)) => Some(codec::encode_ack(kind::PUBACK, id)),
            (2, Some(id)) => {
                self.local_qos2.insert(id);
                Some(codec::encode_ack(kind::PUBREC, id))
            }
            _ => None,
        };
        self.conn.report(Violation::PublishDenied {
            topic: publish.topic,
            payload: publish.payload,
        });
        if let Some(reply) = reply {
            self.pending
                .push_back(Either::Left(futures::future::ready(Step::Reply(reply))));
        }
        Ok(())
    }

    fn subscribe(&mut self, frame: Frame) -> Result<Step, End> {
        let subscribe =
            codec::parse_subscribe(frame.body()).map_err(|m| self.conn.malformed(m.0))?;
        let principal = self.principal;
        let granted: Vec<bool> = subscribe
            .filters
            .iter()
            .map(|(filter, _)| principal.may_subscribe(filter))
            .collect();
        for ((filter, _), _) in subscribe
            .filters
            .iter()
            .zip(&granted)
            .filter(|(_, ok)| !**ok)
        {
            stats::bump(&self.conn.shared.counters().subscriptions_denied);
            warn!(%filter, "SUBSCRIBE filter denied");
            self.conn.report(Violation::SubscribeDenied {
                filter: filter.clone(),
            });
        }

        if granted.iter().all(|ok| *ok) {
            return Ok(Step::Forward(frame.into_bytes()));
        }
        if !granted.iter().any(|ok| *ok) {
            let codes = vec![codec::SUBACK_FAILURE; granted.len()];
            return Ok(Step::Reply(codec::encode_suback(
                subscribe.packet_id,
                &codes,
            )));
        }
        let allowed: Vec<(String, u8)> = subscribe
            .filters
            .into_iter()
            .zip(&granted)
            .filter_map(|(filter, ok)| ok.then_some(filter))
            .collect();
        if !self.splices.insert(subscribe.packet_id, granted) {
            return Err(self.conn.malformed("too many SUBSCRIBEs awaiting SUBACK"));
        }
        Ok(Step::Forward(codec::encode_subscribe(
            subscribe.packet_id,
            &allowed,
        )))
    }

    async fn apply(&mut self, step: Step) -> Result<(), End> {
        match step {
            Step::Forward(packet) => self.out.extend_from_slice(&packet),
            Step::Publish(packet, qos, packet_id) => {
                stats::bump(&self.conn.shared.counters().publishes_forwarded);
                if !self.conn.shared.answer_durable_publishes {
                    self.out.extend_from_slice(&packet);
                    return Ok(());
                }
                let reply = match (qos, packet_id) {
                    (1, Some(id)) => codec::encode_ack(kind::PUBACK, id),
                    (2, Some(id)) => {
                        self.local_qos2.insert(id);
                        codec::encode_ack(kind::PUBREC, id)
                    }
                    _ => return Ok(()),
                };
                // A closed queue means the writer failed; it reports why.
                let _ = self.to_client.send(reply).await;
            }
            Step::Reply(packet) => {
                // A closed queue means the writer failed; it reports why.
                let _ = self.to_client.send(packet).await;
            }
            Step::Disconnect(packet) => {
                self.out.extend_from_slice(&packet);
                self.flush().await?;
                return Err(End::Disconnected);
            }
            Step::TapFailed { topic, error } => {
                stats::bump(&self.conn.shared.counters().tap_failures);
                // Everything before the failed publish is durable: send it.
                self.flush().await?;
                return Err(End::TapFailed { topic, error });
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), End> {
        if !self.out.is_empty() {
            self.upstream
                .write_all(&self.out)
                .await
                .map_err(End::UpstreamIo)?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Refused positions of SUBSCRIBEs forwarded with only their granted
/// filters, keyed by packet id, so that the broker's SUBACK can be widened
/// back to one return code per filter the client asked for.
#[derive(Default)]
struct SubackSplices(Mutex<HashMap<u16, Vec<bool>>>);

impl SubackSplices {
    /// Records the granted mask of a SUBSCRIBE; false when too many await.
    fn insert(&self, packet_id: u16, granted: Vec<bool>) -> bool {
        let mut pending = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING_SPLICES && !pending.contains_key(&packet_id) {
            return false;
        }
        pending.insert(packet_id, granted);
        true
    }

    /// The SUBACK to relay for `frame`: spliced if its SUBSCRIBE was trimmed.
    fn splice(&self, frame: Frame) -> Bytes {
        let Ok((packet_id, codes)) = codec::parse_suback(frame.body()) else {
            return frame.into_bytes();
        };
        let granted = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&packet_id);
        let Some(granted) = granted else {
            return frame.into_bytes();
        };
        let mut upstream_codes = codes.iter().copied();
        let spliced: Vec<u8> = granted
            .iter()
            .map(|ok| match ok {
                true => upstream_codes.next().unwrap_or(codec::SUBACK_FAILURE),
                false => codec::SUBACK_FAILURE,
            })
            .collect();
        codec::encode_suback(packet_id, &spliced)
    }
}

/// The broker-to-client direction: relays frames, splicing SUBACKs.
async fn relay_to_client(
    mut upstream: FrameReader<UpstreamRead>,
    to_client: mpsc::Sender<Bytes>,
    splices: &SubackSplices,
) -> End {
    loop {
        let frame = match upstream.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return End::UpstreamClosed,
            Err(ReadError::Io(error)) => return End::UpstreamIo(error),
            Err(error) => {
                return End::UpstreamIo(io::Error::new(io::ErrorKind::InvalidData, error))
            }
        };
        let packet = if frame.kind() == kind::SUBACK {
            splices.splice(frame)
        } else {
            frame.into_bytes()
        };
        if to_client.send(packet).await.is_err() {
            return End::ClientClosed;
        }
    }
}

/// Owns the client's write half; gathers queued packets into few writes.
async fn write_to_client<W: AsyncWrite + Unpin>(
    mut queue: mpsc::Receiver<Bytes>,
    mut client: W,
) -> End {
    let mut batch = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(packet) = queue.recv().await {
        batch.extend_from_slice(&packet);
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(packet) => batch.extend_from_slice(&packet),
                Err(_) => break,
            }
        }
        let written = async {
            client.write_all(&batch).await?;
            client.flush().await
        };
        if let Err(error) = written.await {
            return End::ClientIo(error);
        }
        batch.clear();
    }
    End::ClientClosed
}
