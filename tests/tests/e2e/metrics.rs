//! `/metrics` is what Prometheus reads: `promtool check metrics` finds nothing to say about it,
//! HTTP requests are counted by route pattern (never the raw path) and status, and the levels
//! an operator watches (ingest lag, gateways by state, the profile worker's backlog, the alarm
//! outbox, pending relay commands, Modbus polls per converter) follow what happens, and a
//! locked table never holds a scrape.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use headend::config::Config;
use headend_e2e::converter::{Fault, SimConverter, SimOptions, SPEC_046_77_UNIT, SPEC_EMDX3_UNIT};
use headend_e2e::{eventually, fixture, TestApp, METRICS_TOKEN};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

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
    let sim = SimConverter::spec(SimOptions::default());
    let app = TestApp::spawn_with(fast_modbus).await;
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

    // A polled converter, so the per-converter series exist.
    add_converter(&app, &admin, "cv-metrics", sim.addr(), SPEC_046_77_UNIT).await;
    let polled = r#"converter="cv-metrics""#;
    wait_series(
        &app,
        "headend_modbus_converter_polls_total",
        &[polled],
        |n| n >= 1.0,
    )
    .await;

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
        ("headend_ingest_lag_seconds", "histogram"),
        ("headend_profile_backlog_counters", "gauge"),
        ("headend_profile_backlog_age_seconds", "gauge"),
        ("headend_gateways", "gauge"),
        ("headend_alarm_outbox_pending", "gauge"),
        ("headend_relay_commands_pending", "gauge"),
        ("headend_modbus_converter_polls_total", "counter"),
        ("headend_modbus_converter_poll_failures_total", "counter"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{body}"
        );
        assert!(body.contains(&format!("# HELP {name} ")), "{name}");
    }
    // Every series of the operator's metrics is there with a value.
    for (name, labels) in [
        ("headend_ingest_lag_seconds_count", None),
        ("headend_profile_backlog_counters", None),
        ("headend_profile_backlog_age_seconds", None),
        ("headend_gateways", Some(r#"state="online""#)),
        ("headend_gateways", Some(r#"state="offline""#)),
        ("headend_gateways", Some(r#"state="never_seen""#)),
        ("headend_alarm_outbox_pending", None),
        ("headend_relay_commands_pending", None),
        ("headend_modbus_converter_polls_total", Some(polled)),
        ("headend_modbus_converter_poll_failures_total", Some(polled)),
    ] {
        let value = match labels {
            None => plain(body, name),
            Some(label) => series(body, name, &[label]),
        };
        assert!(value.is_some(), "{name} {labels:?} has no value:\n{body}");
    }
    assert!(
        plain(body, "headend_ingest_lag_seconds_count") >= Some(1.0),
        "{body}"
    );
    assert!(app.metric("headend_ingest_measurement_rows_total").await >= Some(1.0));
    assert!(app.metric("headend_journal_checkpoint").await >= Some(1.0));
    app.stop().await;
}

/// Fast Modbus timing, as the Modbus tests use: a dead unit fails within 200 ms.
fn fast_modbus(config: &mut Config) {
    config.modbus.timeout_ms = 200;
    config.modbus.gap_ms = 2;
    config.modbus.retries = 1;
    config.modbus.backoff_min_ms = 500;
    config.modbus.backoff_max_ms = 2_000;
}

/// A converter named `name` polling the simulated meter `unit` every 200 ms.
async fn add_converter(app: &TestApp, token: &str, name: &str, addr: SocketAddr, unit: u8) {
    let body = json!({
        "name": name, "host": addr.ip().to_string(), "port": addr.port(),
        "devices": [{ "unit": unit, "model": "legrand-046-77", "poll_interval_ms": 200 }],
    });
    let response = app
        .request("POST", "/api/v1/converters", Some(token), Some(body))
        .await;
    assert_eq!(response.status, 201, "create converter: {}", response.body);
}

/// The value of the unlabelled series `name`.
fn plain(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .request("GET", "/metrics", Some(METRICS_TOKEN), None)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Scrapes until the series `name` (with `labels`, or unlabelled when empty) satisfies `want`.
async fn wait_series(
    app: &TestApp,
    name: &str,
    labels: &[&str],
    want: impl Fn(f64) -> bool,
) -> f64 {
    let read = |body: &str| {
        if labels.is_empty() {
            plain(body, name)
        } else {
            series(body, name, labels)
        }
    };
    let found = eventually(WAIT, || async {
        read(&scrape(app).await).filter(|v| want(*v))
    })
    .await;
    match found {
        Some(value) => value,
        None => {
            let last = read(&scrape(app).await);
            panic!("{name} {labels:?} never as wanted (last {last:?})")
        }
    }
}

async fn gateways(app: &TestApp) -> [Option<f64>; 3] {
    let body = scrape(app).await;
    ["online", "offline", "never_seen"]
        .map(|state| series(&body, "headend_gateways", &[&format!("state=\"{state}\"")]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_lag_and_gateways_by_state_follow_the_fleet() {
    let app = TestApp::spawn().await;
    let site = app.site("Fleet", "Europe/Ljubljana").await;
    let on = app.gateway("SGON", Some(site), None).await;
    let off = app.gateway("SGOFF", Some(site), None).await;
    app.gateway("SGNEW", Some(site), None).await;
    assert_eq!(gateways(&app).await, [Some(0.0), Some(0.0), Some(3.0)]);

    let mut staying = app.gateway_client("SGON", &on).await;
    let mut leaving = app.gateway_client("SGOFF", &off).await;
    for (client, serial) in [(&mut staying, "SGON"), (&mut leaving, "SGOFF")] {
        client
            .publish(
                &format!("sg/{serial}/pub/measurements/rs485/1"),
                fixture("measurements-rs485-manual.json"),
            )
            .await;
        client.wait_acks(1).await;
    }
    app.wait_count("SELECT count(*) FROM measurements", 2).await;
    let both = eventually(WAIT, || async {
        let now = gateways(&app).await;
        (now == [Some(2.0), Some(0.0), Some(1.0)]).then_some(())
    })
    .await;
    assert!(both.is_some(), "{:?}", gateways(&app).await);

    // The gateway that goes away is offline, no longer online; the one never seen stays so.
    drop(leaving);
    let split = eventually(WAIT, || async {
        let now = gateways(&app).await;
        (now == [Some(1.0), Some(1.0), Some(1.0)]).then_some(())
    })
    .await;
    assert!(split.is_some(), "{:?}", gateways(&app).await);

    // Each committed message was observed once, from its receipt to its commit: here, quickly.
    let body = scrape(&app).await;
    let count = plain(&body, "headend_ingest_lag_seconds_count").expect("lag count");
    let sum = plain(&body, "headend_ingest_lag_seconds_sum").expect("lag sum");
    assert!(count >= 2.0, "{body}");
    assert!(sum / count < 10.0, "mean lag {} s:\n{body}", sum / count);
    let all = series(
        &body,
        "headend_ingest_lag_seconds_bucket",
        &[r#"le="+Inf""#],
    );
    assert_eq!(all, Some(count), "{body}");
    drop(staying);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_outbox_and_relay_command_gauges_follow_their_tables() {
    let app = TestApp::spawn().await;
    let site = app.site("Queues", "Europe/Ljubljana").await;
    let password = app.gateway("SGQ", Some(site), None).await;
    let mut client = app.gateway_client("SGQ", &password).await;
    client
        .publish(
            "sg/SGQ/pub/counters/rs485/2",
            fixture("counters-rs485-2-wm3m4c.json"),
        )
        .await;
    client
        .publish("sg/SGQ/pub/bicom/ir", fixture("bicom-ir.json"))
        .await;
    client.wait_acks(2).await;
    app.wait_count("SELECT least(count(*), 1) FROM counters", 1)
        .await;
    app.wait_count("SELECT count(*) FROM devices WHERE kind = 'relay'", 1)
        .await;
    drop(client);
    let empty = |v: f64| v == 0.0;
    wait_series(&app, "headend_profile_backlog_counters", &[], empty).await;
    wait_series(&app, "headend_profile_backlog_age_seconds", &[], empty).await;
    let counter: i64 = sqlx::query_scalar("SELECT min(id) FROM counters")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // A span queued for a quarantined counter is not the worker's backlog...
    sqlx::query("INSERT INTO energy_quarantine (counter_id, reason) VALUES ($1, 'test')")
        .bind(counter)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         VALUES ($1, now() - interval '2 hours', now() - interval '1 hour', true)",
    )
    .bind(counter)
    .execute(&app.pool)
    .await
    .unwrap();
    let body = scrape(&app).await;
    assert_eq!(plain(&body, "headend_profile_backlog_counters"), Some(0.0));
    assert_eq!(
        plain(&body, "headend_profile_backlog_age_seconds"),
        Some(0.0)
    );

    // ...until it is released. The test holds the row so the worker cannot take it yet.
    let mut hold = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM energy_dirty WHERE counter_id = $1 FOR UPDATE")
        .bind(counter)
        .fetch_all(&mut *hold)
        .await
        .unwrap();
    sqlx::query("UPDATE energy_quarantine SET active = false, released_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let body = scrape(&app).await;
    assert_eq!(plain(&body, "headend_profile_backlog_counters"), Some(1.0));
    let age = plain(&body, "headend_profile_backlog_age_seconds").expect("age");
    assert!((3600.0..3700.0).contains(&age), "{age}");
    hold.rollback().await.unwrap();
    wait_series(&app, "headend_profile_backlog_counters", &[], empty).await;
    wait_series(&app, "headend_profile_backlog_age_seconds", &[], empty).await;

    // Two notifications wait for delivery (not due for an hour), one was delivered.
    sqlx::query(
        "INSERT INTO alarm_outbox (channel, target, payload, idempotency_key, status,
                                   next_attempt_at, sent_at)
         SELECT 'webhook', 'https://hooks.example.invalid/', '{}', 'metrics-' || n,
                CASE WHEN n = 3 THEN 'sent' ELSE 'pending' END,
                now() + interval '1 hour', CASE WHEN n = 3 THEN now() END
         FROM generate_series(1, 3) n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        plain(&scrape(&app).await, "headend_alarm_outbox_pending"),
        Some(2.0)
    );

    // A scrape never waits on a slow database: with the outbox locked, `/metrics` still answers
    // (its query is cancelled within the scrape's bound) with the last values read; the next
    // scrapes read again.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE alarm_outbox IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(15), scrape(&app))
        .await
        .expect("the scrape waited for the locked table");
    assert_eq!(plain(&body, "headend_alarm_outbox_pending"), Some(2.0));
    lock.rollback().await.unwrap();

    // Commands waiting for approval or to be sent are pending; finished ones are not.
    sqlx::query(
        "INSERT INTO relay_commands (device_id, action, target, status, requested_email,
                                     expires_at, approval_deadline)
         SELECT d.id, 'off', 0, s, 'ops@example.com', now() + interval '1 hour',
                now() + interval '1 hour'
         FROM devices d,
              unnest(ARRAY['awaiting_approval', 'queued', 'confirmed', 'failed', 'expired',
                           'cancelled']) s
         WHERE d.kind = 'relay'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        plain(&scrape(&app).await, "headend_relay_commands_pending"),
        Some(2.0)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_polls_and_failures_are_counted_per_converter() {
    let (good, bad) = (
        SimConverter::spec(SimOptions::default()),
        SimConverter::spec(SimOptions::default()),
    );
    bad.set_fault(SPEC_EMDX3_UNIT, Fault::Dead);
    let app = TestApp::spawn_with(fast_modbus).await;
    let token = app.user_token("admin@example.com", "admin", &[]).await;
    add_converter(&app, &token, "cv-good", good.addr(), SPEC_046_77_UNIT).await;
    let body = json!({
        "name": "cv-bad", "host": bad.addr().ip().to_string(), "port": bad.addr().port(),
        "devices": [{ "unit": SPEC_EMDX3_UNIT, "model": "legrand-emdx3", "poll_interval_ms": 200 }],
    });
    let created = app
        .request("POST", "/api/v1/converters", Some(&token), Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);

    let polls = "headend_modbus_converter_polls_total";
    let failures = "headend_modbus_converter_poll_failures_total";
    let (is_good, is_bad) = (r#"converter="cv-good""#, r#"converter="cv-bad""#);
    wait_series(&app, polls, &[is_good], |n| n >= 3.0).await;
    wait_series(&app, failures, &[is_bad], |n| n >= 1.0).await;
    let body = scrape(&app).await;
    assert_eq!(series(&body, failures, &[is_good]), Some(0.0), "{body}");
    assert_eq!(series(&body, polls, &[is_bad]), Some(0.0), "{body}");
    // The totals are the sums over converters, in the same scrape.
    let sum = |name: &str| {
        [is_good, is_bad]
            .iter()
            .map(|c| series(&body, name, &[c]).unwrap_or(0.0))
            .sum::<f64>()
    };
    assert_eq!(plain(&body, "headend_modbus_polls_total"), Some(sum(polls)));
    assert_eq!(
        plain(&body, "headend_modbus_poll_failures_total"),
        Some(sum(failures))
    );
    let (code, printed) = promtool_check(&body);
    assert_eq!((code, printed.trim()), (Some(0), ""), "{printed}");
    app.stop().await;
}
