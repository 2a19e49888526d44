//! Change notices between instances (issue 16): a rule created on one instance judges the next
//! sample another instance receives, without waiting for that instance's periodic reload.

use std::time::Duration;

use headend::config::Secret;
use headend_e2e::{eventually, fixture, TestApp};
use serde_json::{json, Value};

const SERIAL: &str = "SGCN";

/// Both instances listen on the change channel.
async fn both_listening(app: &TestApp) {
    let listening = eventually(Duration::from_secs(30), || async {
        let n = app
            .count(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%headend_changes%'",
            )
            .await;
        (n >= 2).then_some(())
    })
    .await;
    assert!(listening.is_some(), "two listeners on headend_changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_created_on_one_instance_is_applied_by_another_at_once() {
    let a = TestApp::spawn_with(|c| {
        c.cluster.lease_secs = 2;
        c.auth.jwt_secret = Some(Secret::new("a-cluster-jwt-secret-of-at-least-32-chars"));
    })
    .await;
    let site = a.site("Notices", "UTC").await;
    let password = a.gateway(SERIAL, Some(site), None).await;
    let admin = a.user_token("admin@example.com", "admin", &[]).await;
    let b = a.spawn_peer(|_| {}).await;
    both_listening(&a).await;

    let r = a
        .request(
            "POST",
            "/api/v1/alarm-rules",
            Some(&admin),
            Some(json!({
                "site_id": site, "name": "Overvoltage", "severity": "critical", "target": "site",
                "watch": {"kind": "measurement", "quantity": "u1"},
                "condition": {"op": "above", "threshold": 250.0, "hysteresis": 5.0},
                "actions": {"email": [], "notify_clear": false},
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rule = r.json()["id"].as_i64().unwrap();

    // B's evaluator reloads on the notice; its periodic reload (30 s) is not waited for. A new
    // sample every attempt: one sent before the reload is judged by no rule.
    let mut client = b.gateway_client(SERIAL, &password).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let mut raised = false;
    for attempt in 1..=20 {
        let at = start + chrono::Duration::seconds(attempt);
        let mut doc: Value =
            serde_json::from_slice(&fixture("measurements-rs485-manual.json")).unwrap();
        doc["header"]["serial_number"] = json!(format!("M-{SERIAL}"));
        doc["header"]["local_time"] = json!(at.format("%d.%m.%Y %H:%M:%S").to_string());
        doc["measurements"]["U1"] = json!("260 V");
        client
            .publish(
                &format!("sg/{SERIAL}/pub/measurements/rs485/1"),
                serde_json::to_vec(&doc).unwrap(),
            )
            .await;
        client.wait_acks(1).await;
        let active = format!("SELECT count(*) FROM alarms WHERE rule_id = {rule} AND active");
        raised = eventually(Duration::from_millis(500), || async {
            (b.count(&active).await == 1).then_some(())
        })
        .await
        .is_some();
        if raised || tokio::time::Instant::now() >= until {
            break;
        }
    }
    assert!(raised, "the rule judged B's samples within 10 s");
}
