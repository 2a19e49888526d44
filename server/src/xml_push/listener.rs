//! The TCP (optionally TLS) listener of the XML push: one task per connection, documents
//! handled in order, acks written by a separate task so that a peer that never reads them
//! cannot stall its own uploads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use headend_mqtt_gate::{Admission, Prefixed, ProxyProtocol};
use sg_wire::mismart::DocumentSplitter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Ack, RejectCode, Sender, XmlPush, XmlPushError, MAX_KEPT_BYTES, TCP_SOURCE};

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub addr: SocketAddr,
    pub tls: Option<headend_mqtt_gate::TlsConfig>,
    pub max_connections: usize,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// An ack the peer does not take within this is the last one written to it; its documents
    /// are still read and stored.
    pub write_timeout: Duration,
    /// PROXY protocol from trusted proxies; `None`: off.
    pub proxy_protocol: Option<ProxyProtocol>,
}

impl ListenerSettings {
    pub fn from_config(addr: SocketAddr, config: &crate::config::XmlPushConfig) -> Self {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(headend_mqtt_gate::TlsConfig {
                cert_pem: cert.clone(),
                key_pem: key.clone(),
                client_ca_pem: config.tls_client_ca.clone(),
            }),
            _ => None,
        };
        Self {
            addr,
            tls,
            max_connections: config.max_connections,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(config.write_timeout_secs.max(1)),
            proxy_protocol: ProxyProtocol::from_trusted(config.proxy_protocol_from.clone()),
        }
    }
}

/// Acks queued for a connection's writer; beyond this they are dropped (the peer is not reading).
const ACK_QUEUE: usize = 1024;
const READ_CHUNK: usize = 16 * 1024;
/// How long a connection from an unregistered source may stay silent: it holds a connection
/// slot only until its first document (refused) or this.
const UNKNOWN_SOURCE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct XmlPushListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    settings: ListenerSettings,
}

impl XmlPushListener {
    /// Binds the socket and loads the TLS configuration, so mistakes surface at start.
    pub async fn bind(settings: ListenerSettings) -> Result<Self, XmlPushError> {
        let tls = settings
            .tls
            .as_ref()
            .map(headend_mqtt_gate::tls_acceptor)
            .transpose()?;
        let bind_error = |source| XmlPushError::Bind {
            addr: settings.addr,
            source,
        };
        let listener = TcpListener::bind(settings.addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
            tls,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts connections until `shutdown`, then waits for open connections to end (they
    /// stop reading at once; a document being appended finishes and is acked).
    pub async fn serve(self, push: Arc<XmlPush>, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections.max(1)));
        let tracker = TaskTracker::new();
        tracing::info!(
            addr = %self.local_addr,
            tls = self.tls.is_some(),
            proxy_protocol = self.settings.proxy_protocol.is_some(),
            "XML push listening"
        );
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "XML push accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max = self.settings.max_connections, "XML push connection refused: too many connections");
                continue;
            };
            let (push, settings, tls, shutdown) = (
                push.clone(),
                self.settings.clone(),
                self.tls.clone(),
                shutdown.clone(),
            );
            tracker.spawn(async move {
                let _ = stream.set_nodelay(true);
                // The PROXY header comes before anything else, TLS included.
                let admitted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    admitted = headend_mqtt_gate::admit_proxied(
                        stream,
                        peer,
                        settings.proxy_protocol.as_ref(),
                    ) => admitted,
                };
                match admitted {
                    Ok(Admission::Client(stream, client)) => {
                        let span = tracing::info_span!("xml_push", peer = %client);
                        connection(stream, client, tls, push, &settings, shutdown)
                            .instrument(span)
                            .await;
                    }
                    Ok(Admission::Local) => {
                        tracing::debug!(%peer, "XML push: PROXY LOCAL connection closed");
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "XML push connection from a trusted proxy refused");
                    }
                }
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// `peer` is the client's address: the PROXY header's when it came through a trusted proxy.
async fn connection(
    stream: Prefixed<TcpStream>,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    push: Arc<XmlPush>,
    settings: &ListenerSettings,
    shutdown: CancellationToken,
) {
    let gateways = match push.gateways_for_source(peer.ip()).await {
        Ok(gateways) => gateways,
        Err(e) => {
            // Without the registry the sender cannot be identified; it pushes again later.
            tracing::error!(error = %e, "XML push connection closed: source lookup failed");
            return;
        }
    };
    if gateways.is_empty() {
        // Kept open until its first document, which is refused and kept with this reason.
        tracing::info!("XML push connection from an unregistered source");
    }
    let sender = Sender::new(TCP_SOURCE, peer.to_string(), gateways);
    match tls {
        None => handle(stream, sender, push, settings, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(settings.idle_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => handle(stream, sender, push, settings, shutdown).await,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "XML push connection closed: TLS handshake failed");
                }
                Err(_) => tracing::warn!("XML push connection closed: TLS handshake timed out"),
            }
        }
    }
}

/// The last bytes of the stream, to keep with the reason when a stream is refused.
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * MAX_KEPT_BYTES {
            self.0.drain(..self.0.len() - MAX_KEPT_BYTES);
        }
    }

    /// The last `n` bytes read (at most [`MAX_KEPT_BYTES`]).
    fn last(&self, n: usize) -> Bytes {
        let n = n.min(MAX_KEPT_BYTES).min(self.0.len());
        Bytes::copy_from_slice(&self.0[self.0.len() - n..])
    }
}

async fn handle<S>(
    stream: S,
    mut sender: Sender,
    push: Arc<XmlPush>,
    settings: &ListenerSettings,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (acks, queue) = mpsc::channel(ACK_QUEUE);
    let writer = tokio::spawn(
        write_acks(wr, queue, settings.write_timeout).instrument(tracing::Span::current()),
    );
    let mut splitter = DocumentSplitter::new();
    let mut tail = Tail(Vec::new());
    let mut buf = vec![0u8; READ_CHUNK];
    let mut documents = 0u64;
    let idle = if sender.gateways.is_empty() {
        settings.idle_timeout.min(UNKNOWN_SOURCE_TIMEOUT)
    } else {
        settings.idle_timeout
    };
    let closed = 'conn: loop {
        let read = tokio::select! {
            () = shutdown.cancelled() => break "shutdown".to_owned(),
            read = tokio::time::timeout(idle, rd.read(&mut buf)) => read,
        };
        let n = match read {
            Err(_) => break format!("idle for {} s", idle.as_secs()),
            Ok(Err(e)) => break format!("read error: {e}"),
            Ok(Ok(0)) => {
                let pending = splitter.buffered();
                if let Err(e) = splitter.finish() {
                    let reason = format!("stream refused: {e}");
                    if push
                        .refuse(&sender, tail.last(pending), &reason)
                        .await
                        .is_err()
                    {
                        tracing::error!("XML push: journal refused a reject record");
                    }
                    break reason;
                }
                break "closed by peer".to_owned();
            }
            Ok(Ok(n)) => n,
        };
        splitter.push(&buf[..n]);
        tail.push(&buf[..n]);
        loop {
            let pending = splitter.buffered();
            match splitter.next_document() {
                None => break,
                Some(Ok(document)) => match push.document(&mut sender, document).await {
                    Ok(outcome) => {
                        documents += 1;
                        send(&acks, outcome.ack);
                        if let Some(reason) = outcome.close {
                            break 'conn reason;
                        }
                    }
                    Err(e) => {
                        // Not durable, so not acknowledged: closing tells the sender.
                        break 'conn format!("journal refused the document: {e}");
                    }
                },
                Some(Err(e)) => {
                    let reason = format!("stream refused: {e}");
                    match push.refuse(&sender, tail.last(pending), &reason).await {
                        Ok(()) => send(
                            &acks,
                            Ack::Rejected {
                                log_id: None,
                                reason: RejectCode::Invalid,
                            },
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "XML push: journal refused a reject record")
                        }
                    }
                    break 'conn reason;
                }
            }
        }
    };
    tracing::info!(documents, reason = %closed, "XML push connection closed");
    drop(acks);
    // The writer ends by itself within a write timeout per queued ack; bound the whole.
    let _ = tokio::time::timeout(settings.write_timeout * 2, writer).await;
}

fn send(acks: &mpsc::Sender<Ack>, ack: Ack) {
    if acks.try_send(ack).is_err() {
        tracing::debug!("XML push ack dropped: the peer is not reading acks");
    }
}

async fn write_acks<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut queue: mpsc::Receiver<Ack>,
    timeout: Duration,
) {
    while let Some(ack) = queue.recv().await {
        match tokio::time::timeout(timeout, wr.write_all(ack.to_string().as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "XML push: acks no longer written");
                return;
            }
            Err(_) => {
                tracing::info!(
                    "XML push: peer does not read acks; no more are written, its documents still are stored"
                );
                // Documents keep coming; dropping the queue makes further acks no-ops.
                return;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, wr.shutdown()).await;
}
