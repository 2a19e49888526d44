//! Home Assistant switches: every command goes through the relay ledger (four-eyes,
//! anti-chatter) as the dedicated account, reaches only its own site's relays, and the switch
//! shows the state the relay reported.

use rumqttc::QoS;
use serde_json::json;

use super::{Rig, BASE, GW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_goes_through_the_ledger_and_shows_the_confirmed_state() {
    let rig = Rig::new("home").await;
    let set = rig
        .app
        .request(
            "PATCH",
            &format!("/api/v1/relays/{}", rig.relay),
            Some(&rig.admin),
            Some(json!({ "critical": true, "min_switch_interval_s": 600 })),
        )
        .await;
    assert_eq!(set.status, 204, "{}", set.body);
    let w = &rig.watcher;
    let state = rig.relay_state_topic();
    assert!(w.wait_for(&state, "ON").await);
    let command_topic = format!("{BASE}/relay/{GW}_ir0/set");

    // Four-eyes: Home Assistant's OFF waits for a second operator; the switch stays ON (the
    // state is published again once the command is handled).
    let published = w.count(&state);
    w.client
        .publish(&command_topic, QoS::AtLeastOnce, false, "OFF")
        .await
        .unwrap();
    rig.app
        .wait_count(
            "SELECT count(*) FROM relay_commands WHERE status = 'awaiting_approval'
               AND requested_email LIKE 'Home Assistant%'",
            1,
        )
        .await;
    assert!(w.wait_more(&state, published).await);
    assert_eq!(w.get(&state).as_deref(), Some("ON"));
    assert_eq!(
        rig.app.count("SELECT count(*) FROM relay_commands").await,
        1
    );
    let id: i64 = sqlx::query_scalar("SELECT id FROM relay_commands")
        .fetch_one(&rig.app.pool)
        .await
        .unwrap();

    // A human operator approves: the gateway switches and reports; the switch shows it.
    let operator = rig
        .app
        .user_token("op@example.com", "operator", &[rig.site])
        .await;
    let approved = rig
        .app
        .request(
            "POST",
            &format!("/api/v1/commands/{id}/approve"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(w.wait_for(&state, "OFF").await, "confirmed state published");
    rig.app
        .wait_count(
            "SELECT count(*) FROM relay_commands WHERE status = 'confirmed'",
            1,
        )
        .await;

    // Anti-chatter: switching again at once is refused; nothing queued, the state stays.
    let published = w.count(&state);
    w.client
        .publish(&command_topic, QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    assert!(w.wait_more(&state, published).await);
    assert_eq!(
        rig.app.count("SELECT count(*) FROM relay_commands").await,
        1
    );
    assert_eq!(w.get(&state).as_deref(), Some("OFF"));
    rig.finish().await;
}

/// A command topic names a relay of the site by its key; a key of another site's relay (same
/// broker, its own base topic) is no relay of this site: nothing reaches the ledger. Commands
/// from one connection are handled in order, so the site's own command confirms the other
/// was handled (and ignored) before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_reaches_only_its_own_sites_relays() {
    let rig = Rig::new("home").await;
    let other_site = rig.app.site("Elsewhere", "UTC").await;
    rig.app.gateway("SGHA00002", Some(other_site), None).await;
    let foreign: i64 = sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial)
         SELECT id, 'relay', 'ir', 0, '' FROM gateways WHERE serial = 'SGHA00002'
         RETURNING id",
    )
    .fetch_one(&rig.app.pool)
    .await
    .unwrap();
    let w = &rig.watcher;
    assert!(w.wait_for(&rig.relay_state_topic(), "ON").await);
    for topic in [
        format!("{BASE}/relay/SGHA00002_ir0/set"),
        format!("{BASE}/relay/{GW}_ir0/x/set"),
        format!("{BASE}/relay/{GW}_ir9/set"),
    ] {
        w.client
            .publish(&topic, QoS::AtLeastOnce, false, "ON")
            .await
            .unwrap();
    }
    w.client
        .publish(
            format!("{BASE}/relay/{GW}_ir0/set"),
            QoS::AtLeastOnce,
            false,
            "OFF",
        )
        .await
        .unwrap();
    rig.app
        .wait_count("SELECT count(*) FROM relay_commands", 1)
        .await;
    let (device, action, by): (i64, String, String) = sqlx::query_as(
        "SELECT c.device_id, c.action, u.email FROM relay_commands c
         JOIN users u ON u.id = c.requested_by",
    )
    .fetch_one(&rig.app.pool)
    .await
    .unwrap();
    assert_eq!((device, action.as_str()), (rig.relay, "off"));
    assert_ne!(device, foreign);
    // The dedicated account asked, and it cannot log in.
    assert_eq!(by, "northbound@headend.invalid");
    let disabled: bool =
        sqlx::query_scalar("SELECT disabled FROM users WHERE email = 'northbound@headend.invalid'")
            .fetch_one(&rig.app.pool)
            .await
            .unwrap();
    assert!(disabled);
    assert!(w.wait_for(&rig.relay_state_topic(), "OFF").await);
    rig.finish().await;
}
