//! Counter resets asked on any instance (issue 16): a converter's bus runs on the one instance
//! holding its lease, yet a reset asked through another instance's API is carried out by the
//! owner, written to the meter once, and answered synchronously (201 done / 409 failed with the
//! reason) and recorded. A request nobody carried out by its deadline fails, and is never
//! written later by an owner that comes late.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use headend::config::{Config, Secret};
use headend::modbus::ModbusError;
use headend_e2e::converter::{SimConverter, SimOptions, SPEC_046_77_UNIT};
use headend_e2e::{eventually, TestApp};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
/// The 0 046 77's reset register (bit-per-counter, written with function 16).
const RESET_REGISTER: u16 = 0x00C8;

fn clustered(c: &mut Config) {
    c.cluster.lease_secs = 2;
    c.auth.jwt_secret = Some(Secret::new("a-cluster-jwt-secret-of-at-least-32-chars"));
    c.modbus.timeout_ms = 200;
    c.modbus.gap_ms = 2;
    c.modbus.retries = 1;
    c.modbus.backoff_min_ms = 500;
    c.modbus.backoff_max_ms = 2_000;
}

/// A Modbus TCP relay in front of the simulated converter that counts what Headend sends to
/// the 0 046 77 unit: every frame, and the writes to its reset register.
struct Tap {
    frames: Arc<AtomicU64>,
    resets: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Tap {
    async fn up(target: SocketAddr) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tap");
        let addr = listener.local_addr().expect("tap addr");
        let tap = Self {
            frames: Arc::default(),
            resets: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (frames, resets, stop) = (tap.frames.clone(), tap.resets.clone(), tap.stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (frames, resets, stop) = (frames.clone(), resets.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let upstream = async {
                        while let Some(frame) = read_frame(&mut from_client).await {
                            count(&frame, &frames, &resets);
                            if to_server.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = upstream => {}
                        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                    }
                });
            }
        });
        (tap, addr)
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::SeqCst)
    }

    fn resets(&self) -> u64 {
        self.resets.load(Ordering::SeqCst)
    }

    /// Takes the converter off the network (open links closed, new ones refused).
    fn down(&self) {
        self.stop.cancel();
    }
}

/// One Modbus TCP request: the MBAP header (7 bytes, its length counts the unit and the PDU)
/// and the PDU.
async fn read_frame(from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut frame = vec![0_u8; 7];
    from.read_exact(&mut frame).await.ok()?;
    let length = usize::from(u16::from_be_bytes([frame[4], frame[5]]));
    let mut pdu = vec![0_u8; length.checked_sub(1)?];
    from.read_exact(&mut pdu).await.ok()?;
    frame.extend_from_slice(&pdu);
    Some(frame)
}

fn count(frame: &[u8], frames: &AtomicU64, resets: &AtomicU64) {
    if frame[6] != SPEC_046_77_UNIT {
        return;
    }
    frames.fetch_add(1, Ordering::SeqCst);
    let write = matches!(frame.get(7), Some(6 | 16));
    let register = frame.get(8..10).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if write && register == Some(RESET_REGISTER) {
        resets.fetch_add(1, Ordering::SeqCst);
    }
}

/// Creates converter `name` (the 0 046 77 behind `addr`) on `app`; its id and its meter's.
async fn converter(app: &TestApp, token: &str, name: &str, addr: SocketAddr) -> (i64, i64) {
    let created = app
        .request(
            "POST",
            "/api/v1/converters",
            Some(token),
            Some(json!({
                "name": name, "host": addr.ip().to_string(), "port": addr.port(),
                "devices": [{ "unit": SPEC_046_77_UNIT, "model": "legrand-046-77",
                              "poll_interval_ms": 200 }],
            })),
        )
        .await;
    assert_eq!(created.status, 201, "create converter: {}", created.body);
    let id = created.json()["id"].as_i64().expect("converter id");
    let meter: i64 = sqlx::query_scalar(
        "SELECT id FROM devices WHERE gateway_id = $1 AND kind = 'meter' AND slot = $2",
    )
    .bind(id)
    .bind(i16::from(SPEC_046_77_UNIT))
    .fetch_one(&app.pool)
    .await
    .expect("the polled meter");
    (id, meter)
}

/// The instance holding `converter`'s lease, once someone does.
async fn owner(app: &TestApp, converter: i64) -> String {
    let name = headend::modbus::converter_lease(converter);
    let owner = eventually(WAIT, || async {
        sqlx::query_scalar::<_, String>(
            "SELECT owner FROM leases WHERE name = $1 AND expires_at > now()",
        )
        .bind(&name)
        .fetch_optional(&app.pool)
        .await
        .expect("lease query")
    })
    .await;
    owner.expect("the converter's lease is taken")
}

/// `app`'s instance name (its heartbeat row names its HTTP address).
async fn instance_of(app: &TestApp) -> String {
    let addr = app.http.to_string();
    let name = eventually(WAIT, || async {
        sqlx::query_scalar::<_, String>("SELECT id FROM instances WHERE http_addr = $1")
            .bind(&addr)
            .fetch_optional(&app.pool)
            .await
            .expect("instances query")
    })
    .await;
    name.expect("the instance's heartbeat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_asked_on_the_other_instance_is_carried_out_once_by_the_owner() {
    let sim = SimConverter::spec(SimOptions::default());
    let (tap, addr) = Tap::up(sim.addr()).await;
    let a = TestApp::spawn_with(clustered).await;
    let token = a.user_token("admin@example.com", "admin", &[]).await;
    // `a` is told of the new converter and takes it before `b` exists.
    let (id, meter) = converter(&a, &token, "cv-remote", addr).await;
    let a_name = instance_of(&a).await;
    assert_eq!(owner(&a, id).await, a_name);
    eventually(WAIT, || async { (tap.frames() > 0).then_some(()) })
        .await
        .expect("a polls the meter");
    let b = a.spawn_peer(|_| {}).await;
    assert_ne!(instance_of(&b).await, a_name);

    let path = format!("/api/v1/devices/{meter}/counters/counter1/reset");
    let done = b
        .request(
            "POST",
            &path,
            Some(&token),
            Some(json!({ "reason": "asked on b" })),
        )
        .await;
    assert_eq!(done.status, 201, "{}", done.body);
    assert_eq!(done.json()["status"], "done", "{}", done.body);
    assert_eq!(tap.resets(), 1, "one reset write reached the meter");
    assert_eq!(sim.holding(SPEC_046_77_UNIT, 0x200C, 2), vec![0, 0]);
    assert_eq!(
        a.count("SELECT count(*) FROM counter_resets WHERE status = 'done'")
            .await,
        1
    );
    let claimed: (String, Option<String>) =
        sqlx::query_as("SELECT status, claimed_by FROM converter_requests WHERE converter_id = $1")
            .bind(id)
            .fetch_one(&a.pool)
            .await
            .expect("the request");
    assert_eq!(claimed, ("done".to_owned(), Some(a_name.clone())));
    // The lease did not move: b never polled the converter.
    assert_eq!(owner(&a, id).await, a_name);

    // The converter off the network: the owner's bus cannot write, b answers 409 with why.
    tap.down();
    let failed = b
        .request(
            "POST",
            &path,
            Some(&token),
            Some(json!({ "reason": "asked on b, converter down" })),
        )
        .await;
    assert_eq!(failed.status, 409, "{}", failed.body);
    assert!(
        failed.body.contains("unreachable") || failed.body.contains("counter reset write"),
        "{}",
        failed.body
    );
    assert_eq!(
        a.count(
            "SELECT count(*) FROM counter_resets
             WHERE status = 'failed' AND length(detail) > 0"
        )
        .await,
        1
    );
    assert_eq!(tap.resets(), 1, "nothing more was written");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_nobody_carried_out_fails_at_its_deadline_and_is_never_written_later() {
    let sim = SimConverter::spec(SimOptions::default());
    let (tap, addr) = Tap::up(sim.addr()).await;
    let app = TestApp::spawn_with(clustered).await;
    let token = app.user_token("admin@example.com", "admin", &[]).await;
    let (id, _) = converter(&app, &token, "cv-late", addr).await;
    let disabled = app
        .request(
            "PATCH",
            &format!("/api/v1/converters/{id}"),
            Some(&token),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert!(disabled.status < 300, "{}", disabled.body);
    // Nobody runs the bus any more (the lease is released).
    eventually(WAIT, || async {
        let held = app
            .count(&format!(
                "SELECT count(*) FROM leases WHERE name = 'modbus:converter:{id}'
                 AND expires_at > now()"
            ))
            .await;
        (held == 0).then_some(())
    })
    .await
    .expect("the converter's lease is released");

    let asked = headend::modbus::remote::ask_reset(
        &app.pool,
        id,
        i16::from(SPEC_046_77_UNIT),
        "counter1",
        Duration::from_secs(2),
    )
    .await;
    match asked {
        Err(ModbusError::Bus(why)) => assert!(why.contains("within 2 s"), "{why}"),
        other => panic!("expected a failure at the deadline, got {other:?}"),
    }
    let status: String =
        sqlx::query_scalar("SELECT status FROM converter_requests WHERE converter_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("the request");
    assert_eq!(status, "failed");

    // The converter back: its owner polls it for a while (several of its request ticks) and
    // never writes the failed reset.
    let from = tap.frames();
    let enabled = app
        .request(
            "PATCH",
            &format!("/api/v1/converters/{id}"),
            Some(&token),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert!(enabled.status < 300, "{}", enabled.body);
    eventually(WAIT, || async { (tap.frames() >= from + 15).then_some(()) })
        .await
        .expect("the owner polls again");
    assert_eq!(tap.resets(), 0, "a failed request is never carried out");
    assert_eq!(sim.holding(SPEC_046_77_UNIT, 0x200C, 2), vec![0, 2]);
    assert_eq!(
        app.count("SELECT count(*) FROM converter_requests WHERE status = 'failed'")
            .await,
        1
    );
    app.stop().await;
}
