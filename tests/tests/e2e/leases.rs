//! One owner per converter and per singleton task (issue 16): leases in PostgreSQL with expiry
//! and fencing, on the real database; two instances on one database poll a converter from one
//! of them only, and the other takes over when the owner stops (at once) or dies (at expiry).

use std::time::Duration;

use headend::config::Config;
use headend::infra::cluster::{InstanceId, Leases};
use headend_e2e::converter::{SimConverter, SimOptions, SPEC_ISKRA_UNIT};
use headend_e2e::{eventually, TestApp};
use serde_json::json;

/// `cluster.lease_secs` of these tests.
const LEASE: Duration = Duration::from_secs(2);
/// The converter's poll interval.
const POLL: Duration = Duration::from_millis(200);

fn clustered(config: &mut Config) {
    config.cluster.lease_secs = LEASE.as_secs();
    config.modbus.timeout_ms = 200;
    config.modbus.gap_ms = 2;
    config.modbus.retries = 1;
}

/// The owner and token of a live lease.
async fn lease(app: &TestApp, name: &str) -> Option<(String, i64)> {
    sqlx::query_as("SELECT owner, token FROM leases WHERE name = $1 AND expires_at > now()")
        .bind(name)
        .fetch_optional(&app.pool)
        .await
        .expect("lease query")
}

/// An app's instance name, from its heartbeat row.
async fn instance(app: &TestApp) -> String {
    let addr = app.http.to_string();
    eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar("SELECT id FROM instances WHERE http_addr = $1")
            .bind(&addr)
            .fetch_optional(&app.pool)
            .await
            .expect("instances query")
    })
    .await
    .expect("instance heartbeat")
}

async fn polls(app: &TestApp) -> f64 {
    app.metric("headend_modbus_polls_total")
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn leases_are_exclusive_expire_and_fence() {
    let app = TestApp::spawn().await;
    let ttl = Duration::from_secs(1);
    let a = Leases::new(app.pool.clone(), InstanceId::parse("a").unwrap(), ttl);
    let b = Leases::new(app.pool.clone(), InstanceId::parse("b").unwrap(), ttl);
    let name = "test:exclusive";

    let mut first = a.try_acquire(name).await.unwrap().expect("a free lease");
    assert!(b.try_acquire(name).await.unwrap().is_none(), "held by a");
    assert!(a.renew(&mut first).await.unwrap());
    let again = a.try_acquire(name).await.unwrap().expect("ours again");
    assert_eq!(again.token, first.token, "renewing is no change of owner");
    let mut tx = app.pool.begin().await.unwrap();
    assert!(a.check(&mut tx, &first).await.unwrap());
    tx.rollback().await.unwrap();

    // Not renewed: expired, then taken by b with the next token.
    let second = eventually(Duration::from_secs(5), || async {
        b.try_acquire(name).await.unwrap()
    })
    .await
    .expect("taken over after expiry");
    assert_eq!(second.token, first.token + 1);
    assert!(!a.renew(&mut first).await.unwrap(), "a's lease is gone");
    let mut tx = app.pool.begin().await.unwrap();
    assert!(!a.check(&mut tx, &first).await.unwrap(), "fenced");
    assert!(b.check(&mut tx, &second).await.unwrap());
    tx.commit().await.unwrap();

    // Released: a takes it at once.
    b.release(&second).await.unwrap();
    let third = a.try_acquire(name).await.unwrap().expect("released");
    assert_eq!(third.token, second.token + 1);

    // Held in the background: renewed past its time to live, lost when taken.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let held = b.hold("test:held", &shutdown).await.expect("held");
    let lost = held.lost().clone();
    // Renewed past its first expiry: the row's expiry moved at least a time to live further.
    let expiry = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT expires_at FROM leases WHERE name = 'test:held'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let first_expiry = expiry().await;
    let renewed = headend_e2e::eventually(ttl * 4, || async {
        (expiry().await >= first_expiry + ttl).then_some(())
    })
    .await;
    assert!(renewed.is_some(), "renewed past its first expiry");
    assert!(!lost.is_cancelled(), "kept renewed");
    assert!(a.try_acquire("test:held").await.unwrap().is_none());
    sqlx::query("UPDATE leases SET owner = 'x', token = token + 1 WHERE name = 'test:held'")
        .execute(&app.pool)
        .await
        .unwrap();
    tokio::time::timeout(ttl * 2, lost.cancelled())
        .await
        .expect("the holder sees the loss within its time to live");
    held.release().await;

    // A holder dropped without release (aborted) stops renewing: the lease expires.
    let held = a.hold("test:dropped", &shutdown).await.expect("held");
    drop(held);
    let taken = eventually(Duration::from_secs(5), || async {
        b.try_acquire("test:dropped").await.unwrap()
    })
    .await
    .expect("expired after the holder was dropped");
    assert_eq!(taken.token, 2);
    shutdown.cancel();
    app.stop().await;
}

/// Two instances, one converter: `a` polls it, `b` does not; returns them and the lease.
async fn two_instances_one_converter(
    sim: &SimConverter,
) -> (TestApp, TestApp, String, (String, i64)) {
    let a = TestApp::spawn_with(clustered).await;
    let token = a.user_token("admin@example.com", "admin", &[]).await;
    let body = json!({
        "name": "cv-lease", "host": sim.addr().ip().to_string(), "port": sim.addr().port(),
        "devices": [{ "unit": SPEC_ISKRA_UNIT, "model": "iskra-meter",
                      "poll_interval_ms": POLL.as_millis() as u64 }],
    });
    let created = a
        .request("POST", "/api/v1/converters", Some(&token), Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_i64().expect("converter id");
    let name = headend::modbus::converter_lease(id);
    // `a` was told of the new converter: it takes it before `b` exists.
    let owner = eventually(Duration::from_secs(10), || lease(&a, &name))
        .await
        .expect("converter lease taken");
    assert_eq!(owner.0, instance(&a).await);
    eventually(Duration::from_secs(10), || async {
        (polls(&a).await > 0.0).then_some(())
    })
    .await
    .expect("a polls");

    let b = a.spawn_peer(|_| {}).await;
    let b_name = instance(&b).await;
    assert_ne!(b_name, owner.0);
    // A few polls later, b still has not polled, and the lease has not moved.
    let from = polls(&a).await;
    eventually(Duration::from_secs(10), || async {
        (polls(&a).await >= from + 5.0).then_some(())
    })
    .await
    .expect("a goes on polling");
    assert_eq!(polls(&b).await, 0.0, "one instance polls the converter");
    assert_eq!(lease(&a, &name).await, Some(owner.clone()));
    (a, b, name, owner)
}

/// Waits for `b` to poll the converter and own its lease with the next token.
async fn taken_over(b: &TestApp, name: &str, before: &(String, i64), within: Duration) {
    let b_name = instance(b).await;
    eventually(within, || async { (polls(b).await > 0.0).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("b did not poll within {within:?}"));
    let now = lease(b, name).await.expect("lease held");
    assert_eq!(now, (b_name, before.1 + 1), "b owns it, token increased");
}

#[tokio::test]
async fn a_stopped_instance_hands_its_converter_over_at_once() {
    let sim = SimConverter::spec(SimOptions::default());
    let (a, b, name, owner) = two_instances_one_converter(&sim).await;
    a.stop().await;
    // Released at stop: no waiting for expiry (one supervisor pass, a connect and a poll).
    let (released, _) = sqlx::query_as::<_, (bool, i64)>(
        "SELECT expires_at <= now() OR owner <> $2, token FROM leases WHERE name = $1",
    )
    .bind(&name)
    .bind(&owner.0)
    .fetch_one(&b.pool)
    .await
    .unwrap();
    assert!(released, "released at a clean stop");
    taken_over(&b, &name, &owner, LEASE + POLL).await;
    b.stop().await;
}

#[tokio::test]
async fn a_dead_instance_loses_its_converter_at_expiry() {
    let sim = SimConverter::spec(SimOptions::default());
    let (a, b, name, owner) = two_instances_one_converter(&sim).await;
    // Killed: nothing is released, the lease runs out.
    a.task.abort();
    let _ = a.task.await;
    let live: bool = sqlx::query_scalar("SELECT expires_at > now() FROM leases WHERE name = $1")
        .bind(&name)
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert!(live, "a dead owner does not release");
    let polled_by_a = sim.requests(SPEC_ISKRA_UNIT);
    // The lease expires within its time to live; `b` looks every third of it, then polls.
    taken_over(
        &b,
        &name,
        &owner,
        LEASE + LEASE / 3 + POLL + Duration::from_secs(1),
    )
    .await;
    assert!(sim.requests(SPEC_ISKRA_UNIT) > polled_by_a);
    b.stop().await;
}

#[tokio::test]
async fn singleton_tasks_have_one_owner() {
    let a = TestApp::spawn_with(clustered).await;
    let b = a.spawn_peer(|_| {}).await;
    let names = [instance(&a).await, instance(&b).await];
    for task in ["alarms:timers", "profiles:worker"] {
        let first = eventually(Duration::from_secs(10), || lease(&a, task))
            .await
            .unwrap_or_else(|| panic!("{task} not taken"));
        assert!(names.contains(&first.0), "{task}: {first:?}");
        // Renewed by its owner over several times to live, never taken by the other one.
        let expiry = || async {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT expires_at FROM leases WHERE name = $1",
            )
            .bind(task)
            .fetch_one(&a.pool)
            .await
            .unwrap()
        };
        let mut seen = expiry().await;
        for _ in 0..3 {
            seen = eventually(LEASE * 2, || async {
                let now = expiry().await;
                (now > seen).then_some(now)
            })
            .await
            .unwrap_or_else(|| panic!("{task} not renewed"));
            assert_eq!(lease(&a, task).await, Some(first.clone()), "{task}");
        }
    }
    // The owner of the timers stops: the other instance takes them over at once.
    let timers = lease(&a, "alarms:timers").await.unwrap();
    let (stopped, survivor) = if timers.0 == names[0] { (a, b) } else { (b, a) };
    stopped.stop().await;
    let next = eventually(LEASE, || async {
        lease(&survivor, "alarms:timers")
            .await
            .filter(|l| l.0 != timers.0)
    })
    .await
    .expect("timers taken over");
    assert_eq!(next.1, timers.1 + 1);
    survivor.stop().await;
}
