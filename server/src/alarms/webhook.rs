//! Webhooks: a JSON POST over HTTP/1.1 (TLS for `https://`), signed with HMAC-SHA256.
//!
//! The receiver checks `X-Headend-Signature: sha256=<hex of HMAC(secret, "<timestamp>.<body>")>`
//! with `X-Headend-Timestamp` (Unix seconds, to refuse replays) and may drop a repeated
//! `Idempotency-Key`. 2xx is delivered; 408, 429 and 5xx are retried; other 4xx fail for good.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::net::{self, Io};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("the URL must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("bad IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "bad port")?,
                None if after.is_empty() => default_port,
                None => return Err("bad authority".into()),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "bad port")?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err("bad host".into());
        }
        if path.chars().any(|c| !c.is_ascii_graphic()) {
            return Err("bad path".into());
        }
        Ok(Self {
            https,
            host,
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub async fn post(
    target: &Target,
    connector: &TlsConnector,
    secret: &[u8],
    body: &[u8],
    idempotency_key: &str,
    timeout: Duration,
) -> Result<(), WebhookError> {
    match tokio::time::timeout(
        timeout,
        post_inner(target, connector, secret, body, idempotency_key),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(WebhookError::Transient(format!(
            "webhook {}:{} timed out",
            target.host, target.port
        ))),
    }
}

async fn post_inner(
    target: &Target,
    connector: &TlsConnector,
    secret: &[u8],
    body: &[u8],
    key: &str,
) -> Result<(), WebhookError> {
    let io_err = |what: &str, e: std::io::Error| WebhookError::Transient(format!("{what}: {e}"));
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| io_err(&format!("connecting to {}:{}", target.host, target.port), e))?;
    let timestamp = chrono::Utc::now().timestamp();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: headend/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Headend-Timestamp: {timestamp}\r\nX-Headend-Signature: {}\r\n\
         Idempotency-Key: {key}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len(),
        signature(secret, timestamp, body),
    );
    if target.https {
        let name = net::server_name(&target.host).map_err(WebhookError::Permanent)?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| io_err("TLS with the webhook receiver", e))?;
        exchange(tls, head.as_bytes(), body).await
    } else {
        exchange(tcp, head.as_bytes(), body).await
    }
}

async fn exchange<S: Io>(mut io: S, head: &[u8], body: &[u8]) -> Result<(), WebhookError> {
    let io_err = |e: std::io::Error| WebhookError::Transient(format!("webhook: {e}"));
    io.write_all(head).await.map_err(io_err)?;
    io.write_all(body).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    let mut reader = BufReader::new(io.take(64 * 1024));
    let mut status = String::new();
    reader.read_line(&mut status).await.map_err(io_err)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| WebhookError::Transient(format!("bad HTTP status line {status:?}")))?;
    match code {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(WebhookError::Transient(format!("webhook answered {code}"))),
        _ => Err(WebhookError::Permanent(format!("webhook answered {code}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let t = Target::parse("https://hooks.example.com/a/b?x=1").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/a/b?x=1")
        );
        let t = Target::parse("http://127.0.0.1:8088").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8088, "/"));
        assert_eq!(t.host_header(), "127.0.0.1:8088");
        let t = Target::parse("http://[::1]:9000/hook").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert_eq!(t.host_header(), "[::1]:9000");
        for bad in [
            "ftp://x/",
            "http://user:pw@x/",
            "http://x:port/",
            "http:///",
            "http://a b/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // RFC 4231 test case 2 key/data shape, with our "<ts>." prefix computed independently.
        let s = signature(b"key", 1, b"{}");
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), 7 + 64);
        assert_ne!(s, signature(b"key", 2, b"{}"));
        assert_ne!(s, signature(b"other", 1, b"{}"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1.{}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s, format!("sha256={hex}"));
    }
}
