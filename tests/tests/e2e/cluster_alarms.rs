//! Alarm evaluation across instances (issue 16): two apps on one database, the measurements of
//! one meter reaching one or the other; each (rule, subject) is raised and cleared exactly once
//! per crossing, with exactly one notification per raise, never two open alarms.

use std::time::Duration;

use chrono::{DateTime, Utc};
use headend::config::Secret;
use headend_e2e::{eventually, fixture, MqttClient, TestApp};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const SERIAL: &str = "SGCL";

/// Two instances on one database sharing tokens, a UTC site with gateway `SERIAL`, and an
/// "above 250 V (hysteresis 5)" rule on the site's meters, without delays, notified by e-mail
/// on raise only. The rule exists before the peer starts, so both evaluators load it.
async fn cluster() -> (TestApp, TestApp, String, i64, String) {
    let a = TestApp::spawn_with(|c| {
        c.cluster.lease_secs = 2;
        c.auth.jwt_secret = Some(Secret::new("a-cluster-jwt-secret-of-at-least-32-chars"));
    })
    .await;
    let site = a.site("Cluster site", "UTC").await;
    let password = a.gateway(SERIAL, Some(site), None).await;
    let admin = a.user_token("admin@example.com", "admin", &[]).await;
    let r = a
        .request(
            "POST",
            "/api/v1/alarm-rules",
            Some(&admin),
            Some(json!({
                "site_id": site, "name": "Overvoltage", "severity": "critical", "target": "site",
                "watch": {"kind": "measurement", "quantity": "u1"},
                "condition": {"op": "above", "threshold": 250.0, "hysteresis": 5.0},
                "actions": {"email": ["ops@example.com"], "notify_clear": false},
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rule = r.json()["id"].as_i64().unwrap();
    let b = a.spawn_peer(|_| {}).await;
    (a, b, password, rule, admin)
}

/// A measurements document of RS485 slot 1 with `u1` at `at` (UTC site: local = UTC).
fn measurements(at: DateTime<Utc>, u1: f64) -> Vec<u8> {
    let mut doc: Value =
        serde_json::from_slice(&fixture("measurements-rs485-manual.json")).unwrap();
    doc["header"]["serial_number"] = json!(format!("M-{SERIAL}"));
    doc["header"]["local_time"] = json!(at.format("%d.%m.%Y %H:%M:%S").to_string());
    doc["measurements"]["U1"] = json!(format!("{u1} V"));
    serde_json::to_vec(&doc).unwrap()
}

/// Publishes `samples` to `app` and waits until its journal committed them (and so handed them
/// to that instance's evaluator).
async fn publish(app: &TestApp, client: &mut MqttClient, samples: &[(DateTime<Utc>, f64)]) {
    for &(at, u1) in samples {
        let topic = format!("sg/{SERIAL}/pub/measurements/rs485/1");
        client.publish(&topic, measurements(at, u1)).await;
    }
    client.wait_acks(samples.len()).await;
    let last = app.metric("headend_journal_last_seq").await.unwrap();
    app.wait_journal_committed(last as u64).await;
}

/// How often the rule's state row was written (its version).
async fn version(app: &TestApp, rule: i64) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM alarm_rule_states WHERE rule_id = $1")
        .bind(rule)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Waits until the state row was written `n` times: the sample that caused the n-th phase
/// change was evaluated (and every sample that instance received before it).
async fn wait_version(app: &TestApp, rule: i64, n: i64) {
    let reached = eventually(WAIT, || async {
        (version(app, rule).await >= n).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "state version {} never reached {n}",
        version(app, rule).await
    );
    assert_eq!(version(app, rule).await, n, "one write per phase change");
}

async fn events(app: &TestApp, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM alarm_events WHERE kind = $1")
        .bind(kind)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Every notification row belongs to a `raised` event, one per raise.
async fn assert_one_notification_per_raise(app: &TestApp, raises: i64) {
    assert_eq!(
        app.count(
            "SELECT count(*) FROM alarm_outbox o JOIN alarm_events e ON e.id = o.event_id
             WHERE e.kind = 'raised'"
        )
        .await,
        raises
    );
    assert_eq!(app.count("SELECT count(*) FROM alarm_outbox").await, raises);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM (SELECT event_id FROM alarm_outbox GROUP BY event_id
             HAVING count(*) > 1) d"
        )
        .await,
        0
    );
}

fn t0() -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_instances_raise_and_clear_each_crossing_once() {
    let (a, b, password, rule, admin) = cluster().await;
    let mut on_a = a.gateway_client(SERIAL, &password).await;
    let mut on_b = b.gateway_client(SERIAL, &password).await;
    let t0 = t0();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);

    // Both instances see the meter normal first (each caches a normal state).
    publish(&a, &mut on_a, &[(at(0), 240.0)]).await;
    publish(&b, &mut on_b, &[(at(10), 240.0)]).await;
    // A raises.
    publish(&a, &mut on_a, &[(at(20), 260.0)]).await;
    wait_version(&a, rule, 1).await;
    a.wait_count("SELECT count(*) FROM alarms WHERE active", 1)
        .await;
    // B still caches "normal": a value above must not raise again; the next one below clears.
    publish(&b, &mut on_b, &[(at(30), 270.0), (at(40), 240.0)]).await;
    wait_version(&b, rule, 2).await;
    assert_eq!(events(&a, "raised").await, 1);
    assert_eq!(events(&a, "cleared").await, 1);
    let first: i64 = a.count("SELECT min(id) FROM alarms").await;
    let r = a
        .request(
            "POST",
            &format!("/api/v1/alarms/{first}/acknowledge"),
            Some(&admin),
            Some(json!({"comment": "checked"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // A still caches "active" (it raised): above again is a new raise, from the row.
    publish(&a, &mut on_a, &[(at(50), 265.0)]).await;
    wait_version(&a, rule, 3).await;
    publish(&b, &mut on_b, &[(at(60), 240.0)]).await;
    wait_version(&b, rule, 4).await;
    // Back before anyone acknowledged: the same alarm reopened, not a third one.
    publish(&a, &mut on_a, &[(at(70), 262.0)]).await;
    wait_version(&a, rule, 5).await;
    publish(&b, &mut on_b, &[(at(80), 241.0), (at(75), 300.0)]).await;
    wait_version(&b, rule, 6).await;

    assert_eq!(a.count("SELECT count(*) FROM alarms").await, 2);
    assert_eq!(a.count("SELECT count(*) FROM alarms WHERE active").await, 0);
    assert_eq!(events(&a, "raised").await, 2);
    assert_eq!(events(&a, "reraised").await, 1);
    assert_eq!(events(&a, "cleared").await, 3);
    assert_one_notification_per_raise(&a, 2).await;
    let phase: String =
        sqlx::query_scalar("SELECT state->>'phase' FROM alarm_rule_states WHERE rule_id = $1")
            .bind(rule)
            .fetch_one(&a.pool)
            .await
            .unwrap();
    assert_eq!(phase, "normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_of_one_meter_on_both_instances_at_once_open_one_alarm() {
    let (a, b, password, rule, _) = cluster().await;
    let mut on_a = a.gateway_client(SERIAL, &password).await;
    let mut on_b = b.gateway_client(SERIAL, &password).await;
    let t0 = t0();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    // Both know the meter (and its rule) before the burst, so the burst races on the state.
    publish(&a, &mut on_a, &[(at(0), 240.0)]).await;
    publish(&b, &mut on_b, &[(at(1), 240.0)]).await;

    for round in 0..3 {
        let base = 10 + round * 100;
        let even: Vec<_> = (0..20)
            .map(|i| (at(base + 2 * i), 260.0 + i as f64))
            .collect();
        let odd: Vec<_> = (0..20)
            .map(|i| (at(base + 2 * i + 1), 260.0 + i as f64))
            .collect();
        tokio::join!(publish(&a, &mut on_a, &even), publish(&b, &mut on_b, &odd));
        // Four writes a round: the burst's raise (once, whichever instance is first), A's
        // clear, B's raise, B's clear. An instance evaluates in arrival order, so its own later
        // write shows its burst was evaluated (a burst still queued then is older: ignored).
        let v = 4 * round;
        wait_version(&a, rule, v + 1).await;
        assert_eq!(
            a.count("SELECT count(*) FROM alarms WHERE active").await,
            1,
            "round {round}"
        );
        publish(&a, &mut on_a, &[(at(base + 50), 240.0)]).await;
        wait_version(&a, rule, v + 2).await;
        assert_eq!(
            a.count("SELECT count(*) FROM alarms WHERE active").await,
            0,
            "round {round}"
        );
        publish(&b, &mut on_b, &[(at(base + 60), 260.0)]).await;
        wait_version(&b, rule, v + 3).await;
        publish(&b, &mut on_b, &[(at(base + 70), 240.0)]).await;
        wait_version(&b, rule, v + 4).await;
    }
    // One alarm, raised once by the first burst and reopened by the later ones, never two open.
    assert_eq!(a.count("SELECT count(*) FROM alarms").await, 1);
    assert_eq!(events(&a, "raised").await, 1);
    assert_eq!(events(&a, "reraised").await, 5);
    assert_eq!(events(&a, "cleared").await, 6);
    assert_one_notification_per_raise(&a, 1).await;
}
