//! TLS termination: a rustls server configuration built from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::GateError;

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server certificate chain, leaf first.
    pub cert_pem: PathBuf,
    /// The server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
    /// When set, every client must present a certificate issued by one of
    /// these CAs (mutual TLS); the handshake fails otherwise.
    pub client_ca_pem: Option<PathBuf>,
}

/// Builds the acceptor once at bind time, so configuration mistakes surface
/// there and not on the first connection.
///
/// The ring provider is named explicitly rather than relying on a
/// process-wide default, which is ambiguous (and panics) when another crate
/// in the binary enables aws-lc-rs.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, GateError> {
    let provider = Arc::new(ring::default_provider());
    let certs = load_certs(&config.cert_pem)?;
    let key = load_key(&config.key_pem)?;

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&config.cert_pem, e))?;
    let builder = match &config.client_ca_pem {
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca_path)? {
                roots.add(cert).map_err(|e| tls_error(ca_path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_error(ca_path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server_config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&config.key_pem, e))?;
    Ok(TlsAcceptor::from(Arc::new(server_config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GateError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate found"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GateError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => tls_error(path, "no private key found"),
        e => tls_error(path, e),
    })
}

fn tls_error(path: &Path, cause: impl std::fmt::Display) -> GateError {
    GateError::Tls {
        path: path.to_owned(),
        reason: cause.to_string(),
    }
}
