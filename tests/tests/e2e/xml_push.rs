//! MiSmart XML push over real TCP (and TLS, and HTTP POST): fixtures to exact rows, one ack per
//! durable document, identification by source and meter serial, hostile streams closed alone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use headend_e2e::{eventually, fixture, raw_request, spec_dir, MqttClient, TestApp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const GW: &str = "SGXML1";

async fn spawn() -> TestApp {
    TestApp::spawn_with(|c| {
        c.xml_push.addr = Some(([127, 0, 0, 1], 0).into());
        c.xml_push.write_timeout_secs = 1;
    })
    .await
}

/// Registers `GW` with XML push sources and meters through the admin API.
async fn register(app: &TestApp, sources: &[&str], meters: &[&str]) -> serde_json::Value {
    let token = app
        .user_token(&format!("admin{}@example.com", rand_id()), "admin", &[])
        .await;
    let response = app
        .request(
            "PUT",
            &format!("/api/v1/gateways/{GW}/xml-push"),
            Some(&token),
            Some(serde_json::json!({ "sources": sources, "meters": meters })),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A connection from a chosen loopback address (127.0.0.0/8 is all local on Linux).
async fn connect_from(app: &TestApp, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(from)), 0))
        .unwrap();
    socket
        .connect(app.xml_push.expect("XML push listener"))
        .await
        .unwrap()
}

/// Reads until `n` ack lines arrived (or the peer closed), within 30 s.
async fn read_acks<S: AsyncRead + Unpin>(stream: &mut S, n: usize) -> Vec<String> {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while text.matches("\r\n").count() < n {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("acks in time");
        match read {
            Ok(0) | Err(_) => break,
            Ok(k) => text.push_str(&String::from_utf8_lossy(&buf[..k])),
        }
    }
    text.lines().map(str::to_owned).collect()
}

/// Whether the server closed the connection (EOF or reset) within 30 s, draining acks.
async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A document of meter `unit` at `date_time` with one power value and `E1nr` in mWh.
fn document(log_id: u64, unit: &str, date_time: &str, p_w: u32, e1nr_mwh: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\r\
         <data logId=\"{log_id}\" controlUnit=\"{unit}\" deviceType=\"IE38MD\" part=\"1\">\n\r\
         <measurement dateTime=\"{date_time}\" tInterval=\"PT15M\">\n\r\
         <value ident=\"P\" unit=\"W\">{p_w}</value>\n\r\
         <value ident=\"P_max\" unit=\"W\">{}</value>\n\r\
         <value ident=\"E1nr\" unit=\"Wh\">{e1nr_mwh}e-3</value>\n\r\
         </measurement>\n\r\
         </data>\n\r",
        p_w + 100
    )
}

fn xml_fixture(name: &str) -> Vec<u8> {
    let path = spec_dir().join("mismart-xml").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn fixtures() -> Vec<u8> {
    let mut both = xml_fixture("push-ie38-15min.xml");
    both.extend_from_slice(b"\n\r");
    both.extend_from_slice(&xml_fixture("push-no-clock.xml"));
    both.extend_from_slice(b"\n\r");
    both
}

async fn counter(app: &TestApp, unit: &str, name: &str) -> Vec<(i64, i16)> {
    sqlx::query_as(
        "SELECT r.value_milli, r.flags FROM counter_readings r
         JOIN counters c ON c.id = r.counter_id JOIN devices d ON d.id = c.device_id
         WHERE d.serial = $1 AND c.name = $2 ORDER BY r.ts",
    )
    .bind(unit)
    .bind(name)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Every journal record appended so far is in PostgreSQL.
async fn settle(app: &TestApp) {
    let last = app
        .metric("headend_journal_last_seq")
        .await
        .expect("last seq metric");
    app.wait_journal_committed(last as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_split_anywhere_land_exactly_with_one_ack_each() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    let settings = register(&app, &["127.0.0.1"], &["X0000124", "18230001"]).await;
    assert_eq!(settings["sources"][0], "127.0.0.1/32");
    assert_eq!(settings["meters"][0]["port"], "xml");

    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    let bytes = fixtures();
    // Writes of 1, 2, 3, ... bytes: boundaries fall inside tags, values and `</data>`.
    let (mut at, mut size) = (0, 1);
    while at < bytes.len() {
        let end = (at + size).min(bytes.len());
        stream.write_all(&bytes[at..end]).await.unwrap();
        stream.flush().await.unwrap();
        at = end;
        size = size % 97 + 1;
    }
    let acks = read_acks(&mut stream, 2).await;
    assert_eq!(
        acks,
        [
            "<ack logId=\"117\" status=\"ok\"/>",
            "<ack logId=\"0\" status=\"ok\"/>"
        ]
    );
    app.wait_count("SELECT count(*) FROM measurements", 2).await;
    app.wait_count("SELECT count(*) FROM counter_readings", 7)
        .await;

    let exact = [
        ("counter1nr", 18_423_312_500),
        ("counter2nr", 12_500),
        ("counter3nr", 441_002_000),
        ("counter4nr", 0),
        ("counter1", 20_010_000),
        ("counter2", 0),
    ];
    for (name, milli) in exact {
        assert_eq!(
            counter(&app, "X0000124", name).await,
            [(milli, 0)],
            "{name}"
        );
    }
    let (ts, p, s, u12, tint, thd): (chrono::DateTime<chrono::Utc>, f32, f32, f32, f32, f32) =
        sqlx::query_as(
            "SELECT m.ts, m.p, m.s, m.u12, m.temperature, m.thd_i3 FROM measurements m
             JOIN devices d ON d.id = m.device_id WHERE d.serial = 'X0000124'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(ts.to_rfc3339(), "2026-03-29T00:45:00+00:00");
    assert_eq!((p, s, u12, tint, thd), (2815.0, 2851.0, 398.6, 30.7, 14.02));
    let (model, port): (Option<String>, String) =
        sqlx::query_as("SELECT model, port FROM devices WHERE serial = 'X0000124'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((model.as_deref(), port.as_str()), (Some("IE38MD"), "xml"));

    // `now`: the receive time, flagged as a clock fault like MQTT, and noted as a partial reject.
    assert_eq!(
        counter(&app, "18230001", "counter1nr").await,
        [(184_233_125_000, 1)]
    );
    let (ts, received, flags): (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        i16,
    ) = sqlx::query_as(
        "SELECT m.ts, m.received_at, m.flags FROM measurements m
             JOIN devices d ON d.id = m.device_id WHERE d.serial = '18230001'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((ts, flags), (received, 1));
    assert!((chrono::Utc::now() - ts).num_seconds().abs() < 120);
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE partial AND source = 'xml-push'
           AND reason LIKE '%clock fault%'",
        1,
    )
    .await;
    assert_eq!(
        app.count("SELECT clock_faults FROM gateways WHERE serial = 'SGXML1'")
            .await,
        1
    );
    assert_eq!(
        app.metric("headend_xml_documents_accepted_total").await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_late_documents_are_idempotent() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    register(&app, &["127.0.0.0/8"], &["M1"]).await;
    let doc = document(5, "M1", "2026-11-20T10:15:00Z", 500, 1_000_500);
    for _ in 0..2 {
        // The same document twice on one connection, then again on another (a redelivery).
        let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
        stream
            .write_all(format!("{doc}{doc}").as_bytes())
            .await
            .unwrap();
        let acks = read_acks(&mut stream, 2).await;
        assert_eq!(acks, ["<ack logId=\"5\" status=\"ok\"/>"; 2]);
    }
    settle(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM measurements").await, 1);
    assert_eq!(counter(&app, "M1", "counter1nr").await, [(1_000_500, 0)]);
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);

    // A document from the day before arrives late (after a newer one): stored in its place.
    let mut stream = connect_from(&app, [127, 0, 0, 9]).await;
    stream
        .write_all(document(2, "M1", "2026-11-19T10:15:00Z", 400, 900_000).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_acks(&mut stream, 1).await,
        ["<ack logId=\"2\" status=\"ok\"/>"]
    );
    app.wait_count("SELECT count(*) FROM counter_readings", 2)
        .await;
    assert_eq!(
        counter(&app, "M1", "counter1nr").await,
        [(900_000, 0), (1_000_500, 0)]
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT id) FROM devices").await,
        1,
        "one meter, one device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_known_from_mqtt_keeps_its_device() {
    let app = spawn().await;
    let password = app.gateway(GW, None, Some("Europe/Ljubljana")).await;
    let mut mqtt: MqttClient = app.gateway_client(GW, &password).await;
    mqtt.publish(
        &format!("sg/{GW}/pub/measurements/ir"),
        fixture("measurements-ir.json"),
    )
    .await;
    mqtt.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;

    // Registered after MQTT saw it: pinned to the IR device, not a new `xml` one.
    let settings = register(&app, &["127.0.0.1"], &["X0000124"]).await;
    assert_eq!(settings["meters"][0]["port"], "ir");
    assert_eq!(settings["meters"][0]["slot"], 0);
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    stream
        .write_all(&xml_fixture("push-ie38-15min.xml"))
        .await
        .unwrap();
    assert_eq!(read_acks(&mut stream, 1).await.len(), 1);
    app.wait_count("SELECT count(*) FROM measurements", 2).await;
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 1);
    // The same quantities of one meter through both paths agree.
    let values: Vec<(f32, f32, f32)> =
        sqlx::query_as("SELECT p1, p2, thd_i3 FROM measurements ORDER BY ts")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(values[0], values[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sources_and_meters_are_refused_and_kept() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    register(&app, &["127.0.0.2"], &["X0000124"]).await;

    // An unregistered source: its document is refused, kept, and the connection closed.
    let mut stranger = connect_from(&app, [127, 0, 0, 3]).await;
    stranger
        .write_all(&xml_fixture("push-ie38-15min.xml"))
        .await
        .unwrap();
    assert_eq!(
        read_acks(&mut stranger, 1).await,
        ["<ack logId=\"117\" status=\"rejected\" reason=\"unknown-source\"/>"]
    );
    assert!(closed_by_server(&mut stranger).await);

    // A registered source naming an unknown meter: that document is refused, the next is not.
    let mut gateway = connect_from(&app, [127, 0, 0, 2]).await;
    let mut both = xml_fixture("push-no-clock.xml");
    both.extend_from_slice(&xml_fixture("push-ie38-15min.xml"));
    gateway.write_all(&both).await.unwrap();
    assert_eq!(
        read_acks(&mut gateway, 2).await,
        [
            "<ack logId=\"0\" status=\"rejected\" reason=\"unknown-meter\"/>",
            "<ack logId=\"117\" status=\"ok\"/>"
        ]
    );
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    app.wait_count("SELECT count(*) FROM ingest_rejects", 2)
        .await;
    let rejects: Vec<(String, String, Option<i64>, i32)> = sqlx::query_as(
        "SELECT reason, client, gateway_id, payload_size FROM ingest_rejects ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let unknown_source = rejects
        .iter()
        .find(|r| r.0.starts_with("unknown sender: 127.0.0.3"))
        .expect("unknown source kept");
    assert_eq!(unknown_source.2, None);
    assert!(unknown_source.3 > 1000, "payload kept verbatim");
    let unknown_meter = rejects
        .iter()
        .find(|r| r.0.contains("\"18230001\""))
        .expect("unknown meter kept");
    assert_eq!(unknown_meter.1, GW);
    assert!(unknown_meter.2.is_some());
    assert_eq!(
        app.metric("headend_xml_documents_refused_total").await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_streams_are_closed_alone_and_kept() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    register(&app, &["127.0.0.1"], &["M1"]).await;
    // A well-behaved connection stays open through all of it.
    let mut good = connect_from(&app, [127, 0, 0, 1]).await;
    good.write_all(document(1, "M1", "2026-11-20T10:00:00Z", 1, 1_000).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_acks(&mut good, 1).await.len(), 1);

    let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>\n<data logId=\"9\" controlUnit=\"M1\" deviceType=\"&lol3;\" part=\"1\"><measurement dateTime=\"now\" tInterval=\"PT060S\"><value ident=\"P\" unit=\"W\">&lol3;</value></measurement></data>";
    let reference = "<data logId=\"9\" controlUnit=\"M1\" deviceType=\"T\" part=\"1\"><measurement dateTime=\"now\" tInterval=\"PT060S\"><value ident=\"P\" unit=\"W\">&xxe;</value></measurement></data>";
    let mut big_document = b"<?xml version=\"1.0\"?><data logId=\"1\">".to_vec();
    big_document.resize(3 * 1024 * 1024, b'a');
    let mut garbage = b"GET / HTTP/1.1\r\n".to_vec();
    garbage.resize(3 * 1024 * 1024, 0xAB);
    let no_closing_tag = "<?xml version=\"1.0\"?>\n<data logId=\"3\" controlUnit=\"M1\" deviceType=\"T\" part=\"1\">\n<measurement dateTime=\"now\" tInterval=\"PT060S\">";
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("entity bomb", bomb.as_bytes().to_vec(), false),
        ("entity reference", reference.as_bytes().to_vec(), false),
        ("several MB in one document", big_document, false),
        ("several MB of garbage", garbage, false),
        ("no closing tag", no_closing_tag.as_bytes().to_vec(), true),
    ];
    let attacks = cases.into_iter().map(|(name, bytes, half_close)| {
        let addr = app.xml_push.unwrap();
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // The server may close mid-write: that is the point.
            let _ = stream.write_all(&bytes).await;
            if half_close {
                let _ = stream.shutdown().await;
            }
            assert!(closed_by_server(&mut stream).await, "{name}: not closed");
        }
    });
    futures::future::join_all(attacks).await;

    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE source = 'xml-push' AND NOT partial",
        5,
    )
    .await;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM ingest_rejects ORDER BY reason")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let all = reasons.join("\n");
    for expected in [
        "DOCTYPE",
        "&xxe;",
        "exceeds 262144 bytes",
        "expected a document",
        "no closing </data>",
    ] {
        assert!(all.contains(expected), "{expected} not in:\n{all}");
    }
    let largest: i32 = sqlx::query_scalar("SELECT max(payload_size) FROM ingest_rejects")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(largest <= 64 * 1024, "kept bytes are bounded: {largest}");

    // Nothing of the above touched the good connection or the server.
    good.write_all(document(2, "M1", "2026-11-20T10:15:00Z", 2, 2_000).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_acks(&mut good, 1).await,
        ["<ack logId=\"2\" status=\"ok\"/>"]
    );
    app.wait_count("SELECT count(*) FROM counter_readings", 2)
        .await;
    assert_eq!(app.get("/healthz", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_acks_gets_everything_stored() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    register(&app, &["127.0.0.1"], &["M1"]).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let stream = socket.connect(app.xml_push.unwrap()).await.unwrap();
    let (_unread, mut writer) = stream.into_split();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    const N: i64 = 3000;
    let mut all = String::new();
    for n in 0..N {
        let at = (start + chrono::Duration::minutes(n)).format("%Y-%m-%dT%H:%M:%SZ");
        all.push_str(&document(
            n as u64,
            "M1",
            &at.to_string(),
            100,
            1_000 * n as u64,
        ));
    }
    writer.write_all(all.as_bytes()).await.unwrap();
    app.wait_count("SELECT count(*) FROM counter_readings", N)
        .await;
    app.wait_count("SELECT count(*) FROM measurements", N).await;
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_takes_documents_with_the_gateway_credentials() {
    let app = spawn().await;
    let password = app.gateway(GW, None, None).await;
    register(&app, &[], &["X0000124"]).await;
    let body = String::from_utf8(xml_fixture("push-ie38-15min.xml")).unwrap();
    let basic = format!("Basic {}", base64(&format!("{GW}:{password}")));
    let post = |auth: Option<String>, body: String| {
        let http = app.http;
        async move {
            let mut headers = vec![("Content-Type", "application/xml")];
            if let Some(auth) = &auth {
                headers.push(("Authorization", auth.as_str()));
            }
            raw_request(http, "POST", "/api/v1/xml-push", &headers, &body)
                .await
                .unwrap()
        }
    };
    let response = post(Some(basic.clone()), body.clone()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, "<ack logId=\"117\" status=\"ok\"/>\r\n");
    app.wait_count("SELECT count(*) FROM counter_readings", 6)
        .await;
    assert_eq!(
        counter(&app, "X0000124", "counter1nr").await,
        [(18_423_312_500, 0)]
    );

    let wrong = format!("Basic {}", base64(&format!("{GW}:not-the-password")));
    for auth in [None, Some(wrong)] {
        let response = post(auth, body.clone()).await;
        assert_eq!(response.status, 401);
        assert!(response
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic")));
    }
    let response = post(Some(basic.clone()), "definitely not XML".into()).await;
    assert_eq!(response.status, 400);
    assert!(response.body.contains("status=\"rejected\""));
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE source = 'xml-http'",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_counters_become_quarter_hour_intervals() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    register(&app, &["127.0.0.1"], &["M1"]).await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    let readings = [
        ("2026-11-20T10:00:00Z", 1_000_000),
        ("2026-11-20T10:15:00Z", 1_250_500),
        ("2026-11-20T10:30:00Z", 1_400_500),
    ];
    for (n, (at, milli)) in readings.iter().enumerate() {
        stream
            .write_all(document(n as u64, "M1", at, 1000, *milli).as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(read_acks(&mut stream, 3).await.len(), 3);
    app.wait_count("SELECT count(*) FROM counter_readings", 3)
        .await;
    // Writers may commit the three readings in any order; the worker recomputes the span each
    // time, so the intervals converge on the exact differences.
    let expected = vec![("10:00".to_owned(), 250_500), ("10:15".to_owned(), 150_000)];
    let intervals = || async {
        let rows: Vec<(chrono::DateTime<chrono::Utc>, i64)> =
            sqlx::query_as("SELECT start, energy_milli FROM energy_intervals ORDER BY start")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        rows.iter()
            .map(|(start, e)| (start.format("%H:%M").to_string(), *e))
            .collect::<Vec<_>>()
    };
    let converged = eventually(Duration::from_secs(30), || async {
        (intervals().await == expected).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "intervals {:?}, expected {expected:?}",
        intervals().await
    );
}

/// TLS on the XML push listener, with a certificate from a throwaway CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_over_tls_are_acknowledged() {
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};

    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let app = TestApp::spawn_with(|c| {
        c.xml_push.addr = Some(([127, 0, 0, 1], 0).into());
        c.xml_push.tls_cert = Some(cert_path);
        c.xml_push.tls_key = Some(key_path);
    })
    .await;
    app.gateway(GW, None, None).await;
    register(&app, &["127.0.0.1"], &["X0000124"]).await;

    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(app.xml_push.unwrap()).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(&xml_fixture("push-ie38-15min.xml"))
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert_eq!(
        read_acks(&mut tls, 1).await,
        ["<ack logId=\"117\" status=\"ok\"/>"]
    );
    app.wait_count("SELECT count(*) FROM counter_readings", 6)
        .await;

    // Plain text on the TLS port is a failed handshake, not a document.
    let mut plain = TcpStream::connect(app.xml_push.unwrap()).await.unwrap();
    let _ = plain.write_all(&xml_fixture("push-ie38-15min.xml")).await;
    assert!(closed_by_server(&mut plain).await);
    assert_eq!(app.count("SELECT count(*) FROM measurements").await, 1);
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_push_settings_are_validated_and_admin_only() {
    let app = spawn().await;
    let site = app.site("Plant", "Europe/Ljubljana").await;
    app.gateway(GW, Some(site), None).await;
    let admin = app.user_token("root@example.com", "admin", &[]).await;
    let path = format!("/api/v1/gateways/{GW}/xml-push");
    let put = |token: String, body: serde_json::Value| {
        let path = path.clone();
        let app = &app;
        async move { app.request("PUT", &path, Some(&token), Some(body)).await }
    };
    for bad in [
        serde_json::json!({ "sources": ["10.1.0.1/24"], "meters": [] }),
        serde_json::json!({ "sources": ["not an address"], "meters": [] }),
        serde_json::json!({ "sources": [], "meters": ["x".repeat(10_000)] }),
        serde_json::json!({ "sources": [], "meters": [], "extra": 1 }),
    ] {
        let response = put(admin.clone(), bad.clone()).await;
        assert!(
            response.status == 400 || response.status == 422,
            "{bad}: {} {}",
            response.status,
            response.body
        );
    }
    // Meters get stable slots; keeping one keeps its slot, a new one takes the next free one.
    let first = put(
        admin.clone(),
        serde_json::json!({ "sources": ["10.1.0.0/24"], "meters": ["A", "B"] }),
    )
    .await
    .json();
    let slots = |v: &serde_json::Value| -> Vec<(String, i64)> {
        v["meters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["serial"].as_str().unwrap().to_owned(),
                    m["slot"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(slots(&first), [("A".into(), 0), ("B".into(), 1)]);
    let second = put(
        admin.clone(),
        serde_json::json!({ "sources": ["10.1.0.0/24"], "meters": ["B", "C"] }),
    )
    .await
    .json();
    assert_eq!(slots(&second), [("B".into(), 1), ("C".into(), 0)]);

    // A viewer of the site may read but not change; a user of another site sees nothing.
    let viewer = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;
    assert_eq!(app.get(&path, &viewer).await.status, 200);
    let response = put(viewer, serde_json::json!({ "sources": [], "meters": [] })).await;
    assert_eq!(response.status, 403);
    let other_site = app.site("Other", "UTC").await;
    let stranger = app
        .user_token("stranger@example.com", "viewer", &[other_site])
        .await;
    assert_eq!(app.get(&path, &stranger).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_serials_and_descriptions_are_data_not_code() {
    let app = spawn().await;
    app.gateway(GW, None, None).await;
    // A serial outside the documented character set cannot even be registered.
    let hostile_serial = "X'; DROP TABLE devices;--";
    let token = app
        .user_token("admin-hostile@example.com", "admin", &[])
        .await;
    let refused = app
        .request(
            "PUT",
            &format!("/api/v1/gateways/{GW}/xml-push"),
            Some(&token),
            Some(serde_json::json!({ "sources": ["127.0.0.1"], "meters": [hostile_serial] })),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let serial = "X0000777";
    register(&app, &["127.0.0.1"], &[serial]).await;
    let hostile = |control_unit: &str| {
        format!(
            "<data logId=\"7\" controlUnit=\"{control_unit}\" \
             deviceType=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\" part=\"1\">\
             <measurement dateTime=\"2026-11-20T10:00:00Z\" tInterval=\"PT15M\">\
             <value ident=\"E1nr\" unit=\"Wh\">5e+0</value></measurement></data>\n\r"
        )
    };
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    // 10 000 characters of serial: refused (attributes are bounded), the connection goes on.
    stream
        .write_all(hostile(&"A".repeat(10_000)).as_bytes())
        .await
        .unwrap();
    // A serial outside the character set: refused and kept, the connection goes on.
    stream
        .write_all(hostile(hostile_serial).as_bytes())
        .await
        .unwrap();
    // A valid serial with markup in its description: stored as data.
    stream.write_all(hostile(serial).as_bytes()).await.unwrap();
    let acks = read_acks(&mut stream, 3).await;
    assert!(acks[0].contains("status=\"rejected\""), "{acks:?}");
    assert!(acks[1].contains("status=\"rejected\""), "{acks:?}");
    assert_eq!(acks[2], "<ack logId=\"7\" status=\"ok\"/>");
    app.wait_count("SELECT count(*) FROM counter_readings", 1)
        .await;
    let (stored_serial, model): (String, Option<String>) =
        sqlx::query_as("SELECT serial, model FROM devices")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored_serial, serial);
    assert_eq!(model.as_deref(), Some("<script>alert(\"x\")</script>"));
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%longer than 256 bytes%'",
        1,
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM devices WHERE serial LIKE '%DROP%'")
            .await,
        0
    );
}

/// A gateway that never held an MQTT session (an XML push gateway) is online while it pushes:
/// within 15 minutes of its last document; one that has had a session goes by that session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xml_push_gateway_is_online_while_it_pushes() {
    let app = TestApp::spawn().await;
    app.gateway("SGXON1", None, None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let cases = [
        ("never seen", "NULL", "NULL", false),
        (
            "pushed 5 minutes ago",
            "now() - interval '5 minutes'",
            "NULL",
            true,
        ),
        (
            "pushed an hour ago",
            "now() - interval '1 hour'",
            "NULL",
            false,
        ),
        (
            "seen just now but its MQTT session ended",
            "now()",
            "now() - interval '1 minute'",
            false,
        ),
    ];
    for (what, seen, changed, expected) in cases {
        sqlx::query(&format!(
            "UPDATE gateways SET online = false, last_seen_at = {seen},
                    online_changed_at = {changed} WHERE serial = 'SGXON1'"
        ))
        .execute(&app.pool)
        .await
        .unwrap();
        let list = app.get("/api/v1/gateways", &admin).await.json();
        let gateway = list
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["serial"] == "SGXON1")
            .unwrap_or_else(|| panic!("{list}"));
        assert_eq!(gateway["online"], expected, "{what}: {gateway}");
    }
}
