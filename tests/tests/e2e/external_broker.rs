//! Headend attached to an external broker (Debian's Mosquitto) instead of its embedded one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use headend_e2e::{eventually, fixture, MqttClient, TestApp};

struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    // Mosquitto cannot listen on port 0 and report it: take a free port and hand it over.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nlog_dest stderr\nlog_type error\n"
        ),
    )
    .unwrap();
    let child = Command::new(
        headend_e2e::bench::mosquitto_binary().expect("mosquitto (tests/run.sh installs it)"),
    )
    .arg("-c")
    .arg(&conf)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start mosquitto");
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await
    .expect("mosquitto listening");
    Mosquitto {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_from_an_external_mosquitto() {
    let broker = start_mosquitto().await;
    let url = format!("mqtt://127.0.0.1:{}?client_id=headend-test", broker.port);
    let app = TestApp::spawn_with(|c| {
        c.mqtt.external_url = Some(headend::config::Secret::new(url.clone()));
    })
    .await;
    assert!(
        app.mqtt.is_none(),
        "no embedded broker when attached to an external one"
    );
    app.gateway("SG000017", None, Some("Europe/Ljubljana"))
        .await;
    // Wait until Headend's subscription is in place: a probe message arrives as a reject.
    let gateway = MqttClient::connect(
        ([127, 0, 0, 1], broker.port).into(),
        "SG000017-1",
        "SG000017",
        "unused-by-mosquitto",
    )
    .await
    .unwrap();
    let ready = eventually(Duration::from_secs(30), || async {
        gateway
            .client
            .publish(
                "sg/UNKNOWN/pub/status",
                rumqttc::QoS::AtLeastOnce,
                false,
                b"{}".to_vec(),
            )
            .await
            .ok()?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ingest_rejects WHERE topic = 'sg/UNKNOWN/pub/status'",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    assert!(ready.is_some(), "Headend subscribed on the external broker");
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM ingest_rejects WHERE topic = 'sg/UNKNOWN/pub/status' LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(reason.contains("unknown gateway"), "{reason}");

    for (topic, file) in [
        ("measurements/ir", "measurements-ir.json"),
        ("counters/rs485/2", "counters-rs485-2-wm3m4c.json"),
        ("status", "status-hello.json"),
    ] {
        gateway
            .publish(&format!("sg/SG000017/pub/{topic}"), fixture(file))
            .await;
    }
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    app.wait_count("SELECT count(*) FROM counter_readings", 2)
        .await;
    app.wait_count(
        "SELECT count(*) FROM gateway_events WHERE kind = 'hello'",
        1,
    )
    .await;
    let p: f32 = sqlx::query_scalar("SELECT p FROM measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(p, 2815.0);
    app.stop().await;
}
