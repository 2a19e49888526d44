//! MQTTS: gateways on untrusted networks connect with TLS ("MQTT over SSL" on the SG), and with
//! a client CA configured, only with a certificate (mutual TLS).

use std::sync::Arc;

use headend_e2e::{fixture, MqttClient, TestApp};
use rumqttc::{TlsConfiguration, Transport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, RootCertStore};

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test gateways CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let pki = Self { dir, ca, ca_key };
        let (cert, key) = pki.issue(
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(pki.path("server.pem"), cert).unwrap();
        std::fs::write(pki.path("server.key"), key).unwrap();
        pki
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn issue(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn transport(&self, with_cert: bool) -> Transport {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = if with_cert {
            let (cert, key) = self.issue(&["SGT"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
            let cert = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(cert, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_publish_over_mutual_tls() {
    let pki = Pki::new();
    let app = TestApp::spawn_with(|c| {
        c.mqtt.tls_addr = ([127, 0, 0, 1], 0).into();
        c.mqtt.tls_cert = Some(pki.path("server.pem"));
        c.mqtt.tls_key = Some(pki.path("server.key"));
        c.mqtt.tls_client_ca = Some(pki.path("ca.pem"));
    })
    .await;
    let tls_addr = app.mqtts.expect("MQTTS listener");
    let password = app.gateway("SGT", None, None).await;

    let mut options = MqttClient::options(tls_addr, "SGT-1", "SGT", &password);
    options.set_transport(pki.transport(false));
    assert!(
        MqttClient::connect_with(options).await.is_err(),
        "no client certificate: refused"
    );

    let mut options = MqttClient::options(tls_addr, "SGT-1", "SGT", &password);
    options.set_transport(pki.transport(true));
    let mut client = MqttClient::connect_with(options)
        .await
        .expect("mutual TLS session");
    client
        .publish(
            "sg/SGT/pub/measurements/ir",
            fixture("measurements-ir.json"),
        )
        .await;
    client.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;

    // The certificate does not replace the password: a wrong one is still refused.
    let mut options = MqttClient::options(tls_addr, "SGT-2", "SGT", "wrong password");
    options.set_transport(pki.transport(true));
    assert!(MqttClient::connect_with(options).await.is_err());
    app.stop().await;
}
