//! Webhooks: a JSON POST through reqwest (rustls for `https://`), signed with HMAC-SHA256.
//!
//! The receiver checks `X-Headend-Signature: sha256=<hex of HMAC(secret, "<timestamp>.<body>")>`
//! with `X-Headend-Timestamp` (Unix seconds, to refuse replays) and may drop a repeated
//! `Idempotency-Key`. 2xx is delivered; 408, 429, 5xx and connection failures are retried; other
//! answers (4xx, and 3xx: redirects are never followed) fail for good.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::infra::http as net;

/// A webhook URL: `http://` or `https://`, a host, no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(reqwest::Url);

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("the URL must start with http:// or https://".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("credentials in the URL are not supported".into());
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("bad host".into());
        }
        Ok(Self(parsed))
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.0
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

/// How much of a refusal's body is read (for the error text); the rest is never read.
const MAX_ERROR_BODY: usize = 4096;

/// Posts `body`; the client (`net::http_client`) bounds the time and follows no redirect.
pub async fn post(
    client: &reqwest::Client,
    target: &Target,
    secret: &[u8],
    body: Vec<u8>,
    idempotency_key: &str,
) -> Result<(), WebhookError> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature(secret, timestamp, &body);
    let response = client
        .post(target.url().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Headend-Timestamp", timestamp)
        .header("X-Headend-Signature", signature)
        .header("Idempotency-Key", idempotency_key)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            let text = format!("webhook: {}", net::error_chain(&e));
            if e.is_builder() {
                WebhookError::Permanent(text)
            } else {
                WebhookError::Transient(text)
            }
        })?;
    let code = response.status().as_u16();
    if response.status().is_success() {
        return Ok(());
    }
    let detail = error_body(response).await;
    let text = if detail.is_empty() {
        format!("webhook answered {code}")
    } else {
        format!("webhook answered {code}: {detail}")
    };
    match code {
        408 | 429 | 500..=599 => Err(WebhookError::Transient(text)),
        _ => Err(WebhookError::Permanent(text)),
    }
}

/// The start of a refusal's body as one line of text, read at most `MAX_ERROR_BODY` bytes.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let t = Target::parse("https://hooks.example.com/a/b?x=1").unwrap();
        let u = t.url();
        assert_eq!(
            (
                u.scheme(),
                u.host_str(),
                u.port_or_known_default(),
                u.path(),
                u.query()
            ),
            (
                "https",
                Some("hooks.example.com"),
                Some(443),
                "/a/b",
                Some("x=1")
            )
        );
        let t = Target::parse("http://127.0.0.1:8088").unwrap();
        assert_eq!((t.url().port(), t.url().path()), (Some(8088), "/"));
        let t = Target::parse("http://[::1]:9000/hook").unwrap();
        assert_eq!(
            (t.url().host_str(), t.url().port()),
            (Some("[::1]"), Some(9000))
        );
        for bad in [
            "ftp://x/",
            "http://user:pw@x/",
            "http://x:port/",
            "http:///",
            "http://a b/",
            "file:///etc/passwd",
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
