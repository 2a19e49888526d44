//! Remote relay control end to end: Headend's command ledger against the companion firmware
//! (`sg-gateway --simulate`), through the embedded broker.

use std::time::Duration;

use headend_e2e::firmware::SgGateway;
use headend_e2e::{eventually, TestApp};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.commands.confirm_timeout_secs = 3;
        c.commands.state_poll_secs = 1;
    })
    .await
}

struct Rig {
    app: TestApp,
    serial: String,
    password: String,
    site: i64,
    relay: i64,
    operator: String,
    gateway: Option<SgGateway>,
}

impl Rig {
    /// A site, a gateway running the firmware, its IR relay known to Headend, and an operator.
    async fn new(serial: &str) -> Self {
        let app = app().await;
        let site = app.site("Plant", "UTC").await;
        let password = app.gateway(serial, Some(site), None).await;
        let operator = app.user_token("op@example.com", "operator", &[site]).await;
        let mut rig = Self {
            app,
            serial: serial.to_owned(),
            password,
            site,
            relay: 0,
            operator,
            gateway: None,
        };
        rig.start_gateway();
        rig.relay = eventually(WAIT, || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
                 JOIN relay_states r ON r.device_id = d.id
                 WHERE g.serial = $1 AND d.kind = 'relay' AND d.port = 'ir' LIMIT 1",
            )
            .bind(serial)
            .fetch_optional(&rig.app.pool)
            .await
            .ok()?
        })
        .await
        .expect("the IR relay reports its state");
        // Most tests switch more often than the default anti-chatter interval allows.
        rig.set(json!({ "min_switch_interval_s": 0 })).await;
        rig
    }

    fn start_gateway(&mut self) {
        let broker = self.app.mqtt.expect("embedded broker");
        self.gateway = Some(SgGateway::simulated(
            &self.serial,
            &self.password,
            broker,
            &[],
        ));
    }

    async fn stop_gateway(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.kill();
        }
        let pool = self.app.pool.clone();
        let serial = self.serial.clone();
        eventually(WAIT, || async {
            let online: bool = sqlx::query_scalar("SELECT online FROM gateways WHERE serial = $1")
                .bind(&serial)
                .fetch_one(&pool)
                .await
                .ok()?;
            (!online).then_some(())
        })
        .await
        .expect("Headend sees the gateway offline");
    }

    async fn set(&self, settings: Value) {
        let admin = self
            .app
            .user_token(&format!("admin{}@example.com", rand_suffix()), "admin", &[])
            .await;
        let r = self
            .app
            .request(
                "PATCH",
                &format!("/api/v1/relays/{}", self.relay),
                Some(&admin),
                Some(settings),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }

    async fn command(&self, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .app
            .request(
                "POST",
                &format!("/api/v1/relays/{}/commands", self.relay),
                Some(token),
                Some(body),
            )
            .await;
        let status = r.status;
        (
            status,
            if r.body.is_empty() {
                Value::Null
            } else {
                r.json()
            },
        )
    }

    /// Waits until command `id` reaches one of the final states; returns it.
    async fn settled(&self, id: i64) -> Value {
        let path = format!("/api/v1/commands/{id}");
        eventually(WAIT, || async {
            let c = self.app.get(&path, &self.operator).await.json();
            matches!(
                c["status"].as_str(),
                Some("confirmed" | "failed" | "expired" | "cancelled")
            )
            .then_some(c)
        })
        .await
        .unwrap_or_else(|| panic!("command {id} did not settle"))
    }

    async fn finish(mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.kill();
        }
        self.app.stop().await;
    }

    async fn relay_view(&self) -> Value {
        self.app
            .get(&format!("/api/v1/relays/{}", self.relay), &self.operator)
            .await
            .json()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_off_and_toggle_are_confirmed_by_the_relays_state() {
    let rig = Rig::new("SGRLY0001").await;
    let mut operations = 0;
    for (action, want) in [("off", 0), ("on", 1), ("toggle", 0), ("toggle", 1)] {
        let before = rig.relay_view().await["state"].as_i64();
        let (status, c) = rig
            .command(&rig.operator, json!({ "action": action, "reason": "test" }))
            .await;
        assert_eq!(status, 201, "{c}");
        assert!(
            matches!(c["status"].as_str(), Some("queued" | "sent")),
            "{c}"
        );
        let done = rig.settled(c["id"].as_i64().unwrap()).await;
        assert_eq!(done["status"], "confirmed", "{done}");
        assert_eq!(done["target"], want, "{done}");
        assert_eq!(done["requested_email"], "op@example.com");
        assert_eq!(done["reason"], "test");
        assert!(
            done["requested_from"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1"),
            "{done}"
        );
        let states: Vec<&str> = done["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["queued", "sent", "confirmed"]);
        let relay = rig.relay_view().await;
        assert_eq!(relay["state"], want);
        assert!(relay["command_in_flight"].is_null());
        if before != Some(want) {
            operations += 1;
        }
        assert_eq!(relay["operations"], operations, "{relay}");
    }
    let history = rig
        .app
        .get(
            &format!("/api/v1/relays/{}/commands", rig.relay),
            &rig.operator,
        )
        .await
        .json();
    assert_eq!(history.as_array().unwrap().len(), 4);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_idempotency_and_anti_chatter() {
    let rig = Rig::new("SGRLY0002").await;
    let viewer = rig
        .app
        .user_token("viewer@example.com", "viewer", &[rig.site])
        .await;
    let (status, _) = rig.command(&viewer, json!({ "action": "off" })).await;
    assert_eq!(status, 403);
    let other_site = rig.app.site("Elsewhere", "UTC").await;
    let stranger = rig
        .app
        .user_token("other@example.com", "operator", &[other_site])
        .await;
    let (status, _) = rig.command(&stranger, json!({ "action": "off" })).await;
    assert_eq!(status, 404);
    assert_eq!(
        rig.app
            .get(&format!("/api/v1/relays/{}", rig.relay), &stranger)
            .await
            .status,
        404
    );

    // One key, one command.
    let (s1, c1) = rig
        .command(
            &rig.operator,
            json!({ "action": "off", "idempotency_key": "k-1" }),
        )
        .await;
    let (s2, c2) = rig
        .command(
            &rig.operator,
            json!({ "action": "off", "idempotency_key": "k-1" }),
        )
        .await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(c1["id"], c2["id"]);
    assert_eq!(
        rig.settled(c1["id"].as_i64().unwrap()).await["status"],
        "confirmed"
    );
    assert_eq!(
        rig.app.count("SELECT count(*) FROM relay_commands").await,
        1
    );

    // Anti-chatter: the relay was just switched.
    rig.set(json!({ "min_switch_interval_s": 3600 })).await;
    let (status, body) = rig.command(&rig.operator, json!({ "action": "on" })).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("anti-chatter"),
        "{body}"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_relay_off_needs_a_second_operator() {
    let rig = Rig::new("SGRLY0003").await;
    rig.set(json!({ "critical": true })).await;
    let (status, c) = rig.command(&rig.operator, json!({ "action": "off" })).await;
    assert_eq!(status, 201);
    assert_eq!(c["status"], "awaiting_approval");
    let id = c["id"].as_i64().unwrap();
    let path = format!("/api/v1/commands/{id}/approve");
    let own = rig
        .app
        .request("POST", &path, Some(&rig.operator), None)
        .await;
    assert_eq!(own.status, 409, "{}", own.body);
    assert!(own.body.contains("four-eyes"));
    // Nothing is sent while waiting.
    assert!(rig
        .app
        .get(&format!("/api/v1/commands/{id}"), &rig.operator)
        .await
        .json()["sent_at"]
        .is_null());
    let second = rig
        .app
        .user_token("op2@example.com", "operator", &[rig.site])
        .await;
    let approved = rig.app.request("POST", &path, Some(&second), None).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let done = rig.settled(id).await;
    assert_eq!(done["status"], "confirmed");
    assert_eq!(done["approved_email"], "op2@example.com");
    // Switching on needs no approval.
    let (_, on) = rig.command(&rig.operator, json!({ "action": "on" })).await;
    assert_eq!(on["status"], "queued");
    assert_eq!(
        rig.settled(on["id"].as_i64().unwrap()).await["status"],
        "confirmed"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_gateway_gets_its_command_after_reconnect_and_expired_ones_never() {
    let mut rig = Rig::new("SGRLY0004").await;
    rig.stop_gateway().await;
    // One that will expire while the gateway is away, one that waits for it.
    let (_, short) = rig
        .command(&rig.operator, json!({ "action": "off", "expires_in_s": 1 }))
        .await;
    let short_id = short["id"].as_i64().unwrap();
    let expired = rig.settled(short_id).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(expired["sent_at"].is_null());
    let (_, long) = rig.command(&rig.operator, json!({ "action": "off" })).await;
    let long_id = long["id"].as_i64().unwrap();
    assert_eq!(long["status"], "queued");
    // A newer command supersedes the queued one.
    let (_, newer) = rig
        .command(&rig.operator, json!({ "action": "off", "reason": "newer" }))
        .await;
    let superseded = rig.settled(long_id).await;
    assert_eq!(superseded["status"], "cancelled");
    assert!(superseded["detail"]
        .as_str()
        .unwrap()
        .contains("superseded"));

    // Headend restarts meanwhile: the ledger carries on.
    let mut rig = Rig {
        app: rig.app.restart().await,
        ..rig
    };
    rig.start_gateway();
    let done = rig.settled(newer["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_eq!(rig.relay_view().await["state"], 0);
    // The expired command stayed expired and unsent.
    let again = rig
        .app
        .get(&format!("/api/v1/commands/{short_id}"), &rig.operator)
        .await
        .json();
    assert_eq!(again["status"], "expired");
    assert!(again["sent_at"].is_null());
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_does_not_switch_ends_failed() {
    let rig = Rig::new("SGRLY0005").await;
    let gateway = rig.gateway.as_ref().unwrap();
    gateway
        .inject(json!({ "relay_stuck": { "slot": "ir_relay", "stuck": true } }))
        .await;
    let state = rig.relay_view().await["state"].as_i64().unwrap();
    let action = if state == 1 { "off" } else { "on" };
    let (_, c) = rig
        .command(&rig.operator, json!({ "action": action }))
        .await;
    let done = rig.settled(c["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["detail"]
        .as_str()
        .unwrap()
        .contains("after the confirmation deadline"));
    assert_eq!(rig.relay_view().await["operations"], 0);
    // Cancelling a finished command is refused with the reason.
    let r = rig
        .app
        .request(
            "POST",
            &format!("/api/v1/commands/{}/cancel", c["id"]),
            Some(&rig.operator),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    rig.finish().await;
}
