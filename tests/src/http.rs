//! The tests' HTTP client: reqwest, one request per connection (no pool, as a browser's first
//! visit or a script), redirects not followed (tests look at the `Location`), no cookie jar
//! (tests carry their cookies). Tests that put malformed bytes on the socket on purpose keep
//! their own socket code.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use tokio_rustls::rustls::{self, crypto::ring, RootCertStore};

/// An answer: status, the header block as HTTP/1.1 sends it, and the body as text.
pub struct HttpResponse {
    pub status: u16,
    /// The status line and one `name: value` line per header (lower-case names, as HTTP/1.1
    /// servers send them), joined by CRLF: tests search it with `contains`.
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    /// The value of the first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .lines()
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim())
            })
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One client for the process. Without a pool no connection outlives its request, so the
/// client serves every test's runtime alike.
fn client() -> anyhow::Result<&'static reqwest::Client> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    // Plain HTTP only, but reqwest's rustls (enabled by the server's features) wants a
    // configuration and no process default is installed: ring, trusting nothing.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("HTTP client")?;
    Ok(CLIENT.get_or_init(|| client))
}

/// A JSON API request, with a bearer token when given.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> anyhow::Result<HttpResponse> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    raw_request(addr, method, path, &headers, &body).await
}

/// A request with any headers (cookies, form bodies), its answer read to the end.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpResponse> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut request = client()?
        .request(method, format!("http://{addr}{path}"))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    for (name, value) in response.headers() {
        head.push_str("\r\n");
        head.push_str(name.as_str());
        head.push_str(": ");
        head.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    let body = response.bytes().await?;
    Ok(HttpResponse {
        status: status.as_u16(),
        headers: head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
