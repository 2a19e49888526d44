//! The companion firmware (`sg-gateway --simulate`) against a running Headend: readings arrive,
//! the hello registers the gateway, and what the gateway queued while Headend was down arrives
//! after it is back; receipts release the gateway's queue only once Headend has committed.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use headend_e2e::{eventually, headend_binary, http_request, TestApp};

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sg_gateway(
    serial: &str,
    password: &str,
    broker: SocketAddr,
    rest: SocketAddr,
    state: &std::path::Path,
) -> Gateway {
    let binary = headend_binary().with_file_name("sg-gateway");
    assert!(
        binary.exists(),
        "{} missing: cargo test --workspace builds it",
        binary.display()
    );
    Gateway(
        Command::new(binary)
            .args([
                "--serial",
                serial,
                "--password",
                password,
                "--simulate",
                "--receipts",
            ])
            .args([
                "--broker",
                &broker.to_string(),
                "--rest-addr",
                &rest.to_string(),
            ])
            .args(["--push-interval", "1", "--first-push-delay", "0"])
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", "warn")
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sg-gateway"),
    )
}

/// The gateway's queue counters from its REST API: (queued on link 1, dropped on link 1).
async fn queue(rest: SocketAddr) -> Option<(u64, u64)> {
    let stats = http_request(rest, "GET", "/stats", None, None).await.ok()?;
    let v = stats.json();
    Some((v["queued"][0].as_u64()?, v["dropped"][0].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_gateway_feeds_headend_and_catches_up_after_an_outage() {
    // A fixed MQTT port, so the gateway finds Headend again after its restart.
    let mqtt: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let rest: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let app = TestApp::spawn_with(|c| c.mqtt.addr = mqtt).await;
    let password = app.gateway("SGE000001", None, Some("UTC")).await;
    let state = tempfile::tempdir().unwrap();
    let _gateway = sg_gateway("SGE000001", &password, mqtt, rest, state.path());

    // The hello registers the gateway; measurements, counters and relay states flow.
    app.wait_count(
        "SELECT count(*) FROM gateways WHERE firmware_version IS NOT NULL AND online",
        1,
    )
    .await;
    // A pool of our own: the app's closes with it.
    let pool = sqlx::PgPool::connect(&app.database_url()).await.unwrap();
    eventually(Duration::from_secs(30), || async {
        let m: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
            .fetch_one(&pool)
            .await
            .ok()?;
        let c: i64 = sqlx::query_scalar("SELECT count(*) FROM counter_readings")
            .fetch_one(&pool)
            .await
            .ok()?;
        let r: i64 = sqlx::query_scalar("SELECT count(*) FROM relay_states")
            .fetch_one(&pool)
            .await
            .ok()?;
        (m >= 2 && c >= 2 && r >= 1).then_some(())
    })
    .await
    .expect("readings from the simulated gateway");
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects").await,
        0,
        "the firmware speaks the contract"
    );
    let skew: f64 = sqlx::query_scalar("SELECT clock_skew_s FROM gateways")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        skew.abs() < 5.0,
        "the gateway clock is read in its zone: skew {skew} s"
    );

    // Headend goes away; the gateway keeps measuring into its queue.
    let paused = app.pause().await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
        .fetch_one(&pool)
        .await
        .unwrap();
    let queued = eventually(Duration::from_secs(30), || async {
        let (queued, _) = queue(rest).await?;
        (queued >= 6).then_some(queued)
    })
    .await
    .expect("readings queue while Headend is down");

    // Back: the queue drains, and empties only as Headend confirms commits (receipts).
    let app = paused.resume().await;
    let drained = eventually(Duration::from_secs(60), || async {
        let (queued, dropped) = queue(rest).await?;
        (queued == 0).then_some(dropped)
    })
    .await
    .expect("the queue drains after reconnecting");
    assert_eq!(drained, 0, "nothing dropped");
    let after: i64 = app.count("SELECT count(*) FROM measurements").await;
    assert!(
        after > before,
        "the {queued} queued messages were committed ({before} -> {after} measurement rows)"
    );
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);
    app.stop().await;
}
