//! `/metrics` is what Prometheus reads: `promtool check metrics` finds nothing to say about it,
//! and HTTP requests are counted by route pattern (never the raw path) and status.

use std::io::Write as _;
use std::process::{Command, Stdio};

use headend_e2e::{fixture, TestApp, METRICS_TOKEN};

/// Runs `promtool check metrics` on `exposition`: its exit code and everything it printed.
/// promtool comes from Debian's `prometheus` package (`deploy/install-deps.sh`); without it
/// the test fails, it does not skip.
fn promtool_check(exposition: &str) -> (Option<i32>, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's `prometheus` package \
                 (deploy/install-deps.sh does)"
            )
        });
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

/// The value of the one series whose line starts with `name{` and has every label in `labels`.
fn series(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let rest = key.strip_prefix(name)?.strip_prefix('{')?;
        labels
            .iter()
            .all(|label| rest.contains(label))
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_with_http_by_route_and_status() {
    let app = TestApp::spawn().await;
    let site = app.site("Metrics", "Europe/Ljubljana").await;
    let password = app.gateway("SGM", Some(site), None).await;

    // A reading over MQTT, so the ingest metrics have counted something.
    let mut client = app.gateway_client("SGM", &password).await;
    client
        .publish(
            "sg/SGM/pub/measurements/rs485/1",
            fixture("measurements-rs485-manual.json"),
        )
        .await;
    client.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;

    // API traffic: a login, two reads of one pattern with different ids, a 404 from a
    // matched route, and a path no route matches.
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    assert_eq!(app.get("/api/v1/sites", &admin).await.status, 200);
    let one = format!("/api/v1/sites/{site}");
    assert_eq!(app.get(&one, &admin).await.status, 200);
    assert_eq!(app.get("/api/v1/sites/999999", &admin).await.status, 404);
    let unknown = "/no/such/page-4711";
    assert_eq!(app.request("GET", unknown, None, None).await.status, 404);

    let scrape = app
        .request("GET", "/metrics", Some(METRICS_TOKEN), None)
        .await;
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = &scrape.body;

    let (code, printed) = promtool_check(body);
    assert_eq!(
        (code, printed.trim()),
        (Some(0), ""),
        "promtool check metrics refused the exposition:\n{printed}\n---\n{body}"
    );

    // Route labels are patterns, never raw paths; unmatched requests share one label.
    let requests = "headend_http_requests_total";
    let by = |labels: &[&str]| series(body, requests, labels);
    assert_eq!(
        by(&[
            r#"method="GET""#,
            r#"route="/api/v1/sites/{id}""#,
            r#"status="200""#
        ]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        by(&[r#"route="/api/v1/sites/{id}""#, r#"status="404""#]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        by(&[r#"route="/api/v1/sites""#, r#"status="200""#]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        by(&[
            r#"method="POST""#,
            r#"route="/api/v1/auth/login""#,
            r#"status="200""#
        ]),
        Some(1.0),
        "{body}"
    );
    assert!(
        by(&[r#"route="unmatched""#, r#"status="404""#]) >= Some(1.0),
        "{body}"
    );
    assert!(!body.contains(unknown) && !body.contains(&format!("\"{one}\"")));
    let duration = "headend_http_request_duration_seconds_count";
    assert_eq!(
        series(body, duration, &[r#"route="/api/v1/sites/{id}""#]),
        Some(2.0),
        "{body}"
    );

    // Every type is what it says: counters end in _total, the rest are gauges or histograms.
    for (name, kind) in [
        ("headend_ingest_measurement_rows_total", "counter"),
        ("headend_http_requests_total", "counter"),
        ("headend_journal_checkpoint", "gauge"),
        ("headend_mqtt_publishes_denied_total", "counter"),
        ("headend_db_batch_seconds", "histogram"),
        ("headend_http_request_duration_seconds", "histogram"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{body}"
        );
        assert!(body.contains(&format!("# HELP {name} ")), "{name}");
    }
    assert!(app.metric("headend_ingest_measurement_rows_total").await >= Some(1.0));
    assert!(app.metric("headend_journal_checkpoint").await >= Some(1.0));
    app.stop().await;
}
