//! TLS trust and the HTTP client of outgoing requests (webhooks, the health check): rustls with
//! the ring provider, trusting the system's roots plus an optional extra CA file (a private
//! relay or receiver). E-mail goes through `lettre`, given the same extra CA ([`ca_pem`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The extra CA file's PEM, checked to hold at least one certificate. Read once at start so
/// that a bad CA file is reported then, not at the first alarm.
pub fn ca_pem(extra_ca: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    let Some(path) = extra_ca else {
        return Ok(None);
    };
    let pem =
        std::fs::read(path).map_err(|e| format!("alarms.tls_ca_file {}: {e}", path.display()))?;
    certificates(&pem).map_err(|e| format!("alarms.tls_ca_file {}: {e}", path.display()))?;
    Ok(Some(pem))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// rustls (ring) trusting the system's roots and the certificates of `ca_pem`.
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    // A system certificate rustls cannot use is skipped, like every TLS client does.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(pem) = ca_pem {
        for cert in certificates(pem).map_err(|e| format!("alarms.tls_ca_file: {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("alarms.tls_ca_file: {e}"))?;
        }
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An HTTP/1.1 client that never follows a redirect (a URL must not bounce the request, its
/// signature and its body to another address, e.g. an internal one), ignores proxy variables,
/// and gives up after `timeout` (connection, request and answer together).
pub fn http_client(tls: ClientConfig, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("headend/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// An error with its causes, for `last_error` and logs (reqwest's own text names no cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
