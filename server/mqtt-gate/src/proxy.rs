//! PROXY protocol (v1 and v2, as HAProxy's `send-proxy`/`send-proxy-v2` send it): the client's
//! own address when a TCP proxy stands between it and a listener.
//!
//! Off unless trusted networks are configured ([`ProxyProtocol`]). A peer in them must start
//! with a header, read before anything else (TLS included) within [`ProxyProtocol::timeout`] and
//! [`MAX_HEADER_BYTES`]; one without is refused, so a proxy that stopped sending headers is
//! noticed instead of making every client look like the proxy. Any other peer is a plain
//! connection: its bytes are never read as a header, so a header it sends is garbage to the
//! protocol that follows (a forged source address is never believed). A header without a client
//! address (LOCAL: the proxy's own health check; v1 `UNKNOWN`), or a connection the proxy
//! closes without a byte (a plain TCP check), is nothing to serve and is closed quietly.
//! Parsing is the `proxy-header` crate's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use ipnet::IpNet;
use proxy_header::{ParseConfig, Protocol, ProxyHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Longest header accepted: the size the specification tells receivers to read (a v2 header
/// with IPv6 addresses is 52 bytes, v1 at most 107; the rest leaves room for HAProxy's TLVs).
pub const MAX_HEADER_BYTES: usize = 536;

/// Time a trusted proxy has to send the whole header (it sends it as soon as it connects).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const PARSE: ParseConfig = ParseConfig {
    include_tlvs: false,
    allow_v1: true,
    allow_v2: true,
};

/// PROXY protocol on a listener: from which peers a header is required (and believed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    trusted: Vec<IpNet>,
    /// Bound on reading the header.
    pub timeout: Duration,
}

impl ProxyProtocol {
    /// `None` (PROXY protocol off) without a trusted network.
    pub fn from_trusted(trusted: Vec<IpNet>) -> Option<Self> {
        (!trusted.is_empty()).then_some(Self {
            trusted,
            timeout: DEFAULT_HEADER_TIMEOUT,
        })
    }

    /// Whether `peer` is a trusted proxy (an IPv4 peer of a dual-stack socket counts as IPv4).
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// What an accepted connection turned out to be.
#[derive(Debug)]
pub enum Admission<S> {
    /// A client, at this address (the header's source, or the peer itself when not proxied),
    /// with the stream positioned after the header.
    Client(Prefixed<S>, SocketAddr),
    /// A trusted proxy's header without a client address (LOCAL), or its connection closed
    /// before a byte: nothing to serve.
    Local,
}

/// Why a connection from a trusted proxy is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the end of the PROXY header")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    #[error("no valid PROXY header from a trusted proxy")]
    Invalid,
    #[error("PROXY header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error("PROXY header for a datagram connection")]
    Datagram,
}

/// Reads the PROXY header of a connection from `peer` when `proxy` trusts it; any other
/// connection is a client at `peer`, untouched.
pub async fn admit<S: AsyncRead + Unpin>(
    stream: S,
    peer: SocketAddr,
    proxy: Option<&ProxyProtocol>,
) -> Result<Admission<S>, ProxyError> {
    let Some(proxy) = proxy.filter(|p| p.trusts(peer.ip())) else {
        return Ok(Admission::Client(Prefixed::new(stream, Vec::new()), peer));
    };
    let admission = tokio::time::timeout(proxy.timeout, read_header(stream))
        .await
        .map_err(|_| ProxyError::Timeout(proxy.timeout))??;
    if let Admission::Client(_, client) = &admission {
        tracing::debug!(%client, proxy = %peer, "PROXY header");
    }
    Ok(admission)
}

async fn read_header<S: AsyncRead + Unpin>(mut stream: S) -> Result<Admission<S>, ProxyError> {
    let mut buf = vec![0; MAX_HEADER_BYTES];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(Admission::Local)
            } else {
                Err(ProxyError::Closed)
            };
        }
        filled += n;
        let (address, consumed) = match ProxyHeader::parse(&buf[..filled], PARSE) {
            Ok((header, consumed)) => (header.proxied_address().cloned(), consumed),
            Err(proxy_header::Error::BufferTooShort) if filled < buf.len() => continue,
            Err(proxy_header::Error::BufferTooShort) => return Err(ProxyError::TooLong),
            Err(_) => return Err(ProxyError::Invalid),
        };
        let Some(address) = address else {
            return Ok(Admission::Local);
        };
        if address.protocol != Protocol::Stream {
            return Err(ProxyError::Datagram);
        }
        // What came with the header is the client's first bytes.
        buf.truncate(filled);
        buf.drain(..consumed);
        return Ok(Admission::Client(
            Prefixed::new(stream, buf),
            address.source,
        ));
    }
}

/// A stream that first yields bytes already read from it (those that came with the header).
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(inner: S, prefix: Vec<u8>) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_header::ProxiedAddress;
    use tokio::io::AsyncWriteExt;

    const PROXY: &str = "10.0.0.5:40000";
    const CLIENT: &str = "203.0.113.7:51234";

    fn trusting(net: &str) -> ProxyProtocol {
        ProxyProtocol::from_trusted(vec![net.parse().unwrap()]).unwrap()
    }

    fn v2(client: &str) -> Vec<u8> {
        let address =
            ProxiedAddress::stream(client.parse().unwrap(), "10.0.0.1:1883".parse().unwrap());
        let mut out = Vec::new();
        ProxyHeader::with_address(address)
            .encode_v2(&mut out)
            .unwrap();
        out
    }

    /// Admits what `sent` makes of a connection from `peer`, and the bytes left after it.
    async fn run(
        sent: Vec<u8>,
        peer: &str,
        proxy: Option<&ProxyProtocol>,
    ) -> Result<Option<(SocketAddr, Vec<u8>)>, ProxyError> {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(&sent).await.unwrap();
        drop(client);
        match admit(server, peer.parse().unwrap(), proxy).await? {
            Admission::Local => Ok(None),
            Admission::Client(mut stream, source) => {
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await.unwrap();
                Ok(Some((source, rest)))
            }
        }
    }

    #[tokio::test]
    async fn a_trusted_proxy_s_v2_header_gives_the_client_and_keeps_what_follows() {
        let mut sent = v2(CLIENT);
        sent.extend_from_slice(b"\x10\x0cMQTT");
        let admitted = run(sent, PROXY, Some(&trusting("10.0.0.0/24")))
            .await
            .unwrap();
        assert_eq!(
            admitted,
            Some((CLIENT.parse().unwrap(), b"\x10\x0cMQTT".to_vec()))
        );
    }

    /// Bytes captured from HAProxy 2.6 (`send-proxy-v2 check-send-proxy`): a health check, then
    /// a client's connection with its first bytes (`hello`) in the same segment.
    #[tokio::test]
    async fn haproxy_s_own_bytes() {
        let proxy = trusting("127.0.0.1/32");
        let check = b"\r\n\r\n\0\r\nQUIT\n\x20\0\0\0".to_vec();
        let admitted = run(check, "127.0.0.1:41228", Some(&proxy)).await.unwrap();
        assert_eq!(admitted, None);
        let mut sent = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c".to_vec();
        sent.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1, 0xe0, 0xfc, 0xb8, 0xcf]);
        sent.extend_from_slice(b"hello");
        let admitted = run(sent, "127.0.0.1:41262", Some(&proxy)).await.unwrap();
        assert_eq!(
            admitted,
            Some(("127.0.0.1:57596".parse().unwrap(), b"hello".to_vec()))
        );
    }

    #[tokio::test]
    async fn v1_and_ipv6_headers_are_read_too() {
        let sent = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 4059\r\n<x/>".to_vec();
        let admitted = run(sent, PROXY, Some(&trusting("10.0.0.5/32")))
            .await
            .unwrap();
        assert_eq!(
            admitted,
            Some(("[2001:db8::7]:4000".parse().unwrap(), b"<x/>".to_vec()))
        );
        // A trusted peer on a dual-stack socket (IPv4-mapped) is trusted as IPv4.
        let sent = b"PROXY TCP4 192.0.2.9 10.0.0.1 5000 1883\r\n".to_vec();
        let admitted = run(sent, "[::ffff:10.0.0.5]:1", Some(&trusting("10.0.0.5/32")))
            .await
            .unwrap();
        assert_eq!(admitted, Some(("192.0.2.9:5000".parse().unwrap(), vec![])));
    }

    #[tokio::test]
    async fn local_is_nothing_to_serve() {
        let mut sent = Vec::new();
        ProxyHeader::with_local().encode_v2(&mut sent).unwrap();
        let admitted = run(sent, PROXY, Some(&trusting("10.0.0.0/8")))
            .await
            .unwrap();
        assert_eq!(admitted, None);
        // Nor is a plain TCP check that connects and closes.
        let admitted = run(vec![], PROXY, Some(&trusting("10.0.0.0/8")))
            .await
            .unwrap();
        assert_eq!(admitted, None);
    }

    #[tokio::test]
    async fn an_untrusted_peer_is_plain_and_its_header_is_left_as_data() {
        let sent = v2(CLIENT);
        let admitted = run(sent.clone(), "192.0.2.1:9", Some(&trusting("10.0.0.0/8")))
            .await
            .unwrap();
        assert_eq!(
            admitted,
            Some(("192.0.2.1:9".parse().unwrap(), sent.clone()))
        );
        // Off: everyone is plain.
        let admitted = run(sent.clone(), PROXY, None).await.unwrap();
        assert_eq!(admitted, Some((PROXY.parse().unwrap(), sent)));
        assert_eq!(ProxyProtocol::from_trusted(vec![]), None);
    }

    #[tokio::test]
    async fn a_trusted_peer_must_send_a_valid_bounded_complete_header() {
        let proxy = trusting("10.0.0.0/8");
        let no_header = run(b"\x10\x0c\x00\x04MQTT".to_vec(), PROXY, Some(&proxy)).await;
        assert!(
            matches!(no_header, Err(ProxyError::Invalid)),
            "{no_header:?}"
        );
        let cut = run(v2(CLIENT)[..20].to_vec(), PROXY, Some(&proxy)).await;
        assert!(matches!(cut, Err(ProxyError::Closed)), "{cut:?}");
        // A v2 header announcing more than the cap is refused once the cap is read.
        let mut long = v2(CLIENT);
        long[14..16].copy_from_slice(&1000u16.to_be_bytes());
        long.resize(1100, 0);
        let refused = run(long, PROXY, Some(&proxy)).await;
        assert!(matches!(refused, Err(ProxyError::TooLong)), "{refused:?}");
        let udp = ProxiedAddress::datagram(CLIENT.parse().unwrap(), PROXY.parse().unwrap());
        let mut sent = Vec::new();
        ProxyHeader::with_address(udp).encode_v2(&mut sent).unwrap();
        let refused = run(sent, PROXY, Some(&proxy)).await;
        assert!(matches!(refused, Err(ProxyError::Datagram)), "{refused:?}");
    }

    #[tokio::test]
    async fn a_silent_proxy_times_out() {
        let mut proxy = trusting("10.0.0.0/8");
        proxy.timeout = Duration::from_millis(50);
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        let admitted = admit(server, PROXY.parse().unwrap(), Some(&proxy)).await;
        assert!(
            matches!(admitted, Err(ProxyError::Timeout(_))),
            "{admitted:?}"
        );
    }
}
