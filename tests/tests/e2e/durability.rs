//! Nothing acknowledged is lost: not when PostgreSQL stops mid-stream, not when Headend is
//! killed mid-stream.

use std::process::Stdio;
use std::time::Duration;

use headend_e2e::{eventually, fixture, headend_binary, start_cluster, MqttClient, TestApp};

/// The IR fixture at a distinct time per message, so every message is its own row.
fn message(i: usize) -> Vec<u8> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("measurements-ir.json")).unwrap();
    let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(i as i64);
    doc["header"]["local_time"] =
        serde_json::Value::from(t.format("%d.%m.%Y %H:%M:%S").to_string());
    serde_json::to_vec(&doc).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_stream_loses_nothing() {
    const N: usize = 3000;
    let pg_dir = tempfile::Builder::new().prefix("hepg").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pg_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster_dir = pg_dir.path().join("c");
    let cluster = start_cluster(&cluster_dir, false).await.unwrap();
    cluster.create_database("headend").await.unwrap();
    let url = cluster.url("headend");
    let app =
        TestApp::spawn_with(|c| c.database.url = Some(headend::config::Secret::new(url.clone())))
            .await;
    let password = app.gateway("SG1", None, None).await;
    let mut client = app.gateway_client("SG1", &password).await;

    for i in 0..N / 3 {
        client
            .publish("sg/SG1/pub/measurements/ir", message(i))
            .await;
    }
    client.wait_acks(N / 3).await;
    // PostgreSQL goes away while the gateway keeps publishing: every publish is still
    // acknowledged, because the journal has it.
    cluster.stop().await.unwrap();
    for i in N / 3..N {
        client
            .publish("sg/SG1/pub/measurements/ir", message(i))
            .await;
    }
    client.wait_acks(N - N / 3).await;
    let cluster = start_cluster(&cluster_dir, false).await.unwrap();
    app.wait_count("SELECT count(*) FROM measurements", N as i64)
        .await;
    app.wait_journal_committed(N as u64).await;
    assert_eq!(
        app.count("SELECT count(*) FROM measurements").await,
        N as i64,
        "exactly once"
    );
    let errors = app.metric("headend_db_errors_total").await.unwrap_or(0.0);
    assert!(errors >= 1.0, "the outage was seen and retried ({errors})");
    app.stop().await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headend_killed_mid_stream_commits_everything_it_acknowledged() {
    const N: usize = 4000;
    let data = tempfile::Builder::new().prefix("hek").tempdir().unwrap();
    let db = headend_e2e::fresh_database().await;
    let spawn = || {
        std::process::Command::new(headend_binary())
            .arg("serve")
            .env("HEADEND_DATA_DIR", data.path())
            .env("HEADEND_DATABASE_URL", &db)
            .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
            .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
            .env("HEADEND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn headend")
    };
    let runtime_file = data.path().join("runtime.json");
    let wait_runtime = || async {
        eventually(Duration::from_secs(60), || async {
            let text = std::fs::read_to_string(&runtime_file).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["mqtt_addr"]
                .as_str()?
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .await
        .expect("headend published its runtime file")
    };

    let mut child = spawn();
    let mqtt = wait_runtime().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let created = headend::fleet::gateways::create(
        &pool,
        headend::fleet::gateways::NewGateway {
            serial: "SG2".into(),
            ..Default::default()
        },
        headend::zone::TimeZone::UTC,
    )
    .await
    .unwrap();
    let mut client = MqttClient::connect(mqtt, "SG2-1", "SG2", &created.password)
        .await
        .unwrap();
    for i in 0..N {
        client
            .publish("sg/SG2/pub/measurements/ir", message(i))
            .await;
    }
    // Kill -9 once part of the stream is acknowledged, with more in flight.
    let mut acked = 0usize;
    while acked < N / 2 {
        match tokio::time::timeout(Duration::from_secs(30), client.events.recv()).await {
            Ok(Some(rumqttc::Packet::PubAck(_))) => acked += 1,
            Ok(Some(_)) => {}
            _ => panic!("stream stalled after {acked} acks"),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Acks already on the wire before the kill count too.
    while let Ok(packet) = client.events.try_recv() {
        if matches!(packet, rumqttc::Packet::PubAck(_)) {
            acked += 1;
        }
    }
    drop(client);

    let _ = std::fs::remove_file(&runtime_file);
    let mut child = spawn();
    wait_runtime().await;
    let committed = eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n >= acked as i64).then_some(n)
    })
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    let committed = committed
        .unwrap_or_else(|| panic!("fewer than the {acked} acknowledged messages were committed"));
    assert!(committed as usize <= N);
    assert!(
        status.success(),
        "SIGTERM stops Headend cleanly: {status:?}"
    );
}
