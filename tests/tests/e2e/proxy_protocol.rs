//! PROXY protocol behind HAProxy (`send-proxy-v2`): the MQTT gate and the XML push listener take
//! the client's address from the header of a trusted proxy (connect events, the per-source
//! CONNECT throttle, XML source identity), require it from that proxy, never read it from
//! anyone else, and close the proxy's LOCAL health checks cleanly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use headend_e2e::{spec_dir, TestApp};
use proxy_header::{ProxiedAddress, ProxyHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(30);

/// An app whose MQTT (and XML push) listeners trust PROXY headers from `trusted` only.
async fn spawn(trusted: &str) -> TestApp {
    let trusted = trusted.to_owned();
    TestApp::spawn_with(move |c| {
        c.mqtt.proxy_protocol_from = vec![trusted.parse().unwrap()];
        c.xml_push.addr = Some(([127, 0, 0, 1], 0).into());
        c.xml_push.proxy_protocol_from = vec![trusted.parse().unwrap()];
    })
    .await
}

/// A v2 header (as HAProxy's `send-proxy-v2`) for a client at `client`.
fn v2(client: &str) -> Vec<u8> {
    let address =
        ProxiedAddress::stream(client.parse().unwrap(), "127.0.0.1:1883".parse().unwrap());
    let mut header = Vec::new();
    ProxyHeader::with_address(address)
        .encode_v2(&mut header)
        .unwrap();
    header
}

/// An MQTT 3.1.1 CONNECT (clean session, user name and password), short enough for a
/// one-byte remaining length.
fn connect_packet(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x04\xc2\x00\x1e".to_vec();
    for field in [client_id, user, password] {
        body.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap()];
    packet.extend(body);
    packet
}

/// A connection to `to` from a chosen loopback address (127.0.0.0/8 is all local on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(from)), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `bytes` from `from` and returns the CONNACK code, or `None` when the gate closes the
/// connection without one.
async fn connack(from: [u8; 4], to: SocketAddr, bytes: &[u8]) -> Option<u8> {
    connack_on(connect_from(from, to).await, bytes).await
}

async fn connack_on(mut stream: TcpStream, bytes: &[u8]) -> Option<u8> {
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4];
        while answer.len() < 4 {
            match stream.read(&mut buf[..4 - answer.len()]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("an answer or a close in time");
    match answer[..] {
        [0x20, 2, _, code] => Some(code),
        [] => None,
        _ => panic!("not a CONNACK: {answer:?}"),
    }
}

/// The gate accepted the CONNECT sent on `stream`, and the session's connect event names `client`.
async fn connected_from<S: AsyncRead + Unpin>(app: &TestApp, stream: &mut S, client: &str) {
    let mut ack = [0u8; 4];
    let read = tokio::time::timeout(WAIT, stream.read_exact(&mut ack)).await;
    read.expect("CONNACK in time").expect("CONNACK");
    assert_eq!(ack, [0x20, 2, 0, 0]);
    let sql = format!(
        "SELECT count(*) FROM gateway_events WHERE kind = 'connect' AND body LIKE '%from {client}'"
    );
    app.wait_count(&sql, 1).await;
}

fn with_header(client: &str, packet: Vec<u8>) -> Vec<u8> {
    let mut bytes = v2(client);
    bytes.extend(packet);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_gateway_connects_and_its_connect_event_names_the_header_address() {
    let app = spawn("127.0.0.1/32").await;
    let mqtt = app.mqtt.unwrap();
    let pw = app.gateway("SGPP1", None, None).await;
    let mut stream = connect_from([127, 0, 0, 1], mqtt).await;
    // The CONNECT in the same write as the header: what came with the header is not lost.
    let bytes = with_header(
        "198.51.100.7:40001",
        connect_packet("SGPP1-1", "SGPP1", &pw),
    );
    stream.write_all(&bytes).await.unwrap();
    connected_from(&app, &mut stream, "198.51.100.7:40001").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_header_address_throttles_it_and_not_another() {
    let app = spawn("127.0.0.1/32").await;
    let mqtt = app.mqtt.unwrap();
    app.gateway("SGPF", None, None).await;
    let mut fresh = Vec::new();
    for i in 0..5 {
        let serial = format!("SGPA{i}");
        let pw = app.gateway(&serial, None, None).await;
        fresh.push((serial, pw));
    }
    let pw_b = app.gateway("SGPB", None, None).await;
    // Wrong passwords for one serial from A, faster than A's allowance refills: after the
    // serial's own few tries, each is refused by the throttle without a password check.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..16)
        .map(|w| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let packet = with_header(
                    &format!("198.51.100.1:{}", 10_000 + w),
                    connect_packet("SGPF-1", "SGPF", "guess"),
                );
                while !stop.load(Ordering::Relaxed) {
                    // Not bound to a chosen address: the kernel picks ports free of TIME_WAIT.
                    connack_on(TcpStream::connect(mqtt).await.unwrap(), &packet).await;
                }
            })
        })
        .collect();
    // Address A is throttled: a gateway never seen before, with its right password, is refused
    // from A (the flood keeps A's allowance spent; one try may still slip through).
    let mut refused = false;
    for (serial, pw) in &fresh {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let code = connack(
            [127, 0, 0, 1],
            mqtt,
            &with_header(
                "198.51.100.1:9",
                connect_packet(&format!("{serial}-1"), serial, pw),
            ),
        )
        .await;
        if code == Some(3) {
            refused = true;
            break;
        }
    }
    assert!(refused, "address A was never throttled");
    // Address B, through the same proxy during the same flood, is not.
    let from_b = with_header("198.51.100.2:9", connect_packet("SGPB-1", "SGPB", &pw_b));
    assert_eq!(connack([127, 0, 0, 1], mqtt, &from_b).await, Some(0));
    stop.store(true, Ordering::Relaxed);
    for worker in flood {
        worker.await.unwrap();
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_required_from_the_trusted_proxy_and_refused_from_anyone_else() {
    // Only 127.0.0.2 is a proxy; 127.0.0.1 is a gateway on the same network.
    let app = spawn("127.0.0.2/32").await;
    let mqtt = app.mqtt.unwrap();
    let pw = app.gateway("SGPU", None, None).await;
    let connect = || connect_packet("SGPU-1", "SGPU", &pw);

    // Not the proxy: a plain connection, and a header is garbage before the CONNECT.
    assert_eq!(connack([127, 0, 0, 1], mqtt, &connect()).await, Some(0));
    let forged = with_header("198.51.100.9:1", connect());
    assert_eq!(connack([127, 0, 0, 1], mqtt, &forged).await, None);
    // The proxy: a header is required.
    assert_eq!(connack([127, 0, 0, 2], mqtt, &connect()).await, None);
    assert_eq!(connack([127, 0, 0, 2], mqtt, &forged).await, Some(0));
    app.wait_count(
        "SELECT count(*) FROM gateway_events
         WHERE kind = 'connect' AND body LIKE '%from 198.51.100.9:1'",
        1,
    )
    .await;

    // HAProxy's health check (LOCAL): closed cleanly, without a byte, on both listeners.
    let mut local = Vec::new();
    ProxyHeader::with_local().encode_v2(&mut local).unwrap();
    for listener in [mqtt, app.xml_push.unwrap()] {
        let mut check = connect_from([127, 0, 0, 2], listener).await;
        check.write_all(&local).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, check.read_to_end(&mut rest)).await;
        assert_eq!(closed.expect("closed in time").expect("a clean close"), 0);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xml_source_behind_the_proxy_is_identified_by_the_v1_header_address() {
    let app = spawn("127.0.0.1/32").await;
    let push = app.xml_push.unwrap();
    app.gateway("SGXP", None, None).await;
    let token = app.user_token("admin-pp@example.com", "admin", &[]).await;
    let body = serde_json::json!({ "sources": ["192.0.2.44"], "meters": ["X0000124"] });
    let response = app
        .request(
            "PUT",
            "/api/v1/gateways/SGXP/xml-push",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let document = std::fs::read(spec_dir().join("mismart-xml/push-ie38-15min.xml")).unwrap();

    let ack = |client: &'static str| {
        let document = document.clone();
        async move {
            let mut stream = connect_from([127, 0, 0, 1], push).await;
            let mut bytes = format!("PROXY TCP4 {client} 127.0.0.1 5555 4059\r\n").into_bytes();
            bytes.extend_from_slice(&document);
            stream.write_all(&bytes).await.unwrap();
            let mut text = String::new();
            let mut buf = [0u8; 512];
            while !text.contains("\r\n") {
                match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                    _ => break,
                }
            }
            text.trim().to_owned()
        }
    };
    // The registered source, though the connection comes from 127.0.0.1 (the proxy).
    assert_eq!(
        ack("192.0.2.44").await,
        "<ack logId=\"117\" status=\"ok\"/>"
    );
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    // Another client behind the same proxy is not that source.
    assert_eq!(
        ack("192.0.2.45").await,
        "<ack logId=\"117\" status=\"rejected\" reason=\"unknown-source\"/>"
    );
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'unknown sender: 192.0.2.45%'",
        1,
    )
    .await;
    app.stop().await;
}

/// MQTTS and XML push over TLS behind the proxy: the header comes before the TLS handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_comes_before_the_tls_handshake() {
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};

    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let app = TestApp::spawn_with(|c| {
        c.mqtt.proxy_protocol_from = vec!["127.0.0.1/32".parse().unwrap()];
        c.mqtt.tls_addr = ([127, 0, 0, 1], 0).into();
        c.mqtt.tls_cert = Some(cert.clone());
        c.mqtt.tls_key = Some(key.clone());
        c.xml_push.addr = Some(([127, 0, 0, 1], 0).into());
        c.xml_push.tls_cert = Some(cert.clone());
        c.xml_push.tls_key = Some(key.clone());
        c.xml_push.proxy_protocol_from = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = |to: SocketAddr, client: &'static str| {
        let tls = tls.clone();
        async move {
            let mut stream = TcpStream::connect(to).await.unwrap();
            stream.write_all(&v2(client)).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            tls.connect(name, stream)
                .await
                .expect("TLS after the header")
        }
    };

    let pw = app.gateway("SGPT", None, None).await;
    let mut mqtts = handshake(app.mqtts.unwrap(), "198.51.100.30:3000").await;
    mqtts
        .write_all(&connect_packet("SGPT-1", "SGPT", &pw))
        .await
        .unwrap();
    connected_from(&app, &mut mqtts, "198.51.100.30:3000").await;

    // An unregistered XML source, named by the header: refused as that address.
    let mut xml = handshake(app.xml_push.unwrap(), "198.51.100.31:3001").await;
    let document = std::fs::read(spec_dir().join("mismart-xml/push-ie38-15min.xml")).unwrap();
    xml.write_all(&document).await.unwrap();
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'unknown sender: 198.51.100.31:3001%'",
        1,
    )
    .await;
    app.stop().await;
}
