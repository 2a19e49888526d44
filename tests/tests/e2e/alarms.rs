//! Alarms end to end: rules evaluated as measurements arrive, e-mails through a real SMTP
//! server, signed webhooks to a real HTTP receiver, the outbox across a restart and a mail
//! outage, load shedding through the relay command ledger, timer rules, and the API's scope.

use std::time::Duration;

use chrono::{DateTime, Utc};
use headend_e2e::firmware::SgGateway;
use headend_e2e::http_receiver::HttpReceiver;
use headend_e2e::smtp_sink::SmtpSink;
use headend_e2e::{eventually, fixture, MqttClient, TestApp};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);
const WEBHOOK_SECRET: &str = "an-alarm-webhook-secret-of-32-chars-at-least";

async fn app(smtp_port: u16) -> TestApp {
    TestApp::spawn_with(|c| {
        c.alarms.smtp_host = Some("127.0.0.1".into());
        c.alarms.smtp_port = smtp_port;
        c.alarms.smtp_tls = "none".into();
        c.alarms.smtp_from = "headend@example.com".into();
        c.alarms.webhook_secret = Some(headend::config::Secret::new(WEBHOOK_SECRET));
        c.alarms.retry_base_secs = 1;
        c.alarms.retry_max_secs = 1;
        c.alarms.timer_period_secs = 1;
        c.commands.confirm_timeout_secs = 5;
        c.commands.state_poll_secs = 1;
    })
    .await
}

/// A measurements document of RS485 slot 1 with `u1` at `at` (UTC sites, so local = UTC).
fn measurements(serial: &str, at: DateTime<Utc>, u1: f64) -> Vec<u8> {
    let mut doc: Value =
        serde_json::from_slice(&fixture("measurements-rs485-manual.json")).unwrap();
    doc["header"]["serial_number"] = json!(format!("M-{serial}"));
    doc["header"]["local_time"] = json!(at.format("%d.%m.%Y %H:%M:%S").to_string());
    doc["measurements"]["U1"] = json!(format!("{u1} V"));
    serde_json::to_vec(&doc).unwrap()
}

/// Publishes and waits until the journal checkpoint passed it: committed and handed to the
/// evaluator (ingest feeds it before acknowledging), so samples are evaluated in order.
async fn publish(app: &TestApp, client: &mut MqttClient, serial: &str, at: DateTime<Utc>, u1: f64) {
    client
        .publish(
            &format!("sg/{serial}/pub/measurements/rs485/1"),
            measurements(serial, at, u1),
        )
        .await;
    client.wait_acks(1).await;
    let last = app.metric("headend_journal_last_seq").await.unwrap();
    app.wait_journal_committed(last as u64).await;
}

async fn meter_id(app: &TestApp, serial: &str) -> i64 {
    eventually(WAIT, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
             WHERE g.serial = $1 AND d.kind = 'meter' ORDER BY d.id LIMIT 1",
        )
        .bind(serial)
        .fetch_optional(&app.pool)
        .await
        .ok()?
    })
    .await
    .expect("the meter is known")
}

async fn create_rule(app: &TestApp, admin: &str, rule: Value) -> i64 {
    let r = app
        .request("POST", "/api/v1/alarm-rules", Some(admin), Some(rule))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_i64().unwrap()
}

async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually(WAIT, check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

async fn rule_phase(app: &TestApp, rule: i64) -> Option<String> {
    sqlx::query_scalar("SELECT state->>'phase' FROM alarm_rule_states WHERE rule_id = $1")
        .bind(rule)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

fn verify_signature(req: &headend_e2e::http_receiver::Request) {
    let ts = req.headers["x-headend-timestamp"].clone();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(req.headers["x-headend-signature"], format!("sha256={hex}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_delay_hysteresis_clear_and_acknowledge_notify_once_and_only_for_the_site() {
    let sink = SmtpSink::start().await;
    let hook = HttpReceiver::start().await;
    let app = app(sink.addr.port()).await;
    let site_a = app.site("Site A", "UTC").await;
    let site_b = app.site("Site B", "UTC").await;
    let pw_a = app.gateway("SGA", Some(site_a), None).await;
    let pw_b = app.gateway("SGB", Some(site_b), None).await;
    let mut a = app.gateway_client("SGA", &pw_a).await;
    let mut b = app.gateway_client("SGB", &pw_b).await;
    let t0: DateTime<Utc> = (Utc::now() - chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string()
        .parse()
        .unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    publish(&app, &mut a, "SGA", at(-10), 230.0).await;
    publish(&app, &mut b, "SGB", at(-10), 230.0).await;
    let meter_a = meter_id(&app, "SGA").await;
    meter_id(&app, "SGB").await;

    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let operator = app
        .user_token("op@example.com", "operator", &[site_a])
        .await;
    let viewer = app
        .user_token("viewer@example.com", "viewer", &[site_a])
        .await;
    let operator_b = app
        .user_token("op-b@example.com", "operator", &[site_b])
        .await;
    let rule = create_rule(
        &app,
        &admin,
        json!({
            "site_id": site_a, "name": "Overvoltage", "severity": "critical", "target": "site",
            "watch": {"kind": "measurement", "quantity": "u1"},
            "condition": {"op": "above", "threshold": 250.0, "hysteresis": 5.0, "on_delay_s": 60},
            "actions": {"email": ["ops@example.com"], "webhook_url": hook.url("/alarm")},
        }),
    )
    .await;

    // Site B's meter crosses too, for longer: a rule of site A never sees it.
    for (s, v) in [(0, 300.0), (100, 300.0), (200, 300.0)] {
        publish(&app, &mut b, "SGB", at(s), v).await;
    }
    // Above the threshold for 45 s of a 60 s on-delay, then back: nothing.
    publish(&app, &mut a, "SGA", at(0), 260.0).await;
    wait_for("the on-delay to start", || async {
        (rule_phase(&app, rule).await.as_deref() == Some("pending")).then_some(())
    })
    .await;
    publish(&app, &mut a, "SGA", at(30), 261.0).await;
    publish(&app, &mut a, "SGA", at(45), 240.0).await;
    wait_for("the pending delay to be dropped", || async {
        (rule_phase(&app, rule).await.as_deref() == Some("normal")).then_some(())
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM alarms").await, 0);

    // Above for 70 s: one alarm, one e-mail, one webhook.
    publish(&app, &mut a, "SGA", at(100), 260.0).await;
    publish(&app, &mut a, "SGA", at(140), 262.0).await;
    publish(&app, &mut a, "SGA", at(170), 263.0).await;
    publish(&app, &mut a, "SGA", at(180), 264.0).await;
    app.wait_count("SELECT count(*) FROM alarms", 1).await;
    wait_for("the e-mail", || async {
        (!sink.messages().is_empty()).then_some(())
    })
    .await;
    wait_for("the webhook", || async {
        (!hook.requests().is_empty()).then_some(())
    })
    .await;
    let alarms = app
        .get(&format!("/api/v1/alarms?site_id={site_a}"), &viewer)
        .await
        .json();
    let alarm = &alarms[0];
    assert_eq!(alarm["state"], "active");
    assert_eq!(alarm["severity"], "critical");
    assert_eq!(alarm["subject"], format!("meter:{meter_a}"));
    assert_eq!(alarm["raised_value"], 263.0);
    let raised_at: DateTime<Utc> = alarm["raised_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(raised_at, at(170), "raised when the on-delay had passed");
    let id = alarm["id"].as_i64().unwrap();

    let mail = &sink.messages()[0];
    assert_eq!(mail.to, ["ops@example.com"]);
    assert_eq!(mail.from, "headend@example.com");
    let subject = mail.header("Subject").unwrap();
    assert!(
        subject.contains("CRITICAL") && subject.contains("Overvoltage"),
        "{subject}"
    );
    assert!(mail.body().contains("Site A"), "{}", mail.body());
    let request = &hook.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/alarm")
    );
    verify_signature(request);
    assert!(request.headers.contains_key("idempotency-key"));
    let doc = request.json();
    assert_eq!(
        (doc["event"].as_str(), doc["alarm_id"].as_i64()),
        (Some("raised"), Some(id))
    );
    assert_eq!(doc["site_id"], site_a);

    // 247 V is inside the hysteresis band (245..250): still active. The clear below is
    // stamped with the time of the sample that cleared it, so the band sample did not.
    publish(&app, &mut a, "SGA", at(200), 247.0).await;
    publish(&app, &mut a, "SGA", at(260), 244.0).await;
    let cleared = wait_for("the clear", || async {
        let a = app
            .get(&format!("/api/v1/alarms/{id}"), &viewer)
            .await
            .json();
        (a["alarm"]["state"] == "cleared_unacknowledged").then_some(a)
    })
    .await;
    let cleared_at: DateTime<Utc> = cleared["alarm"]["cleared_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cleared_at, at(260));
    wait_for("the clear e-mail and webhook", || async {
        (sink.messages().len() == 2 && hook.requests().len() == 2).then_some(())
    })
    .await;
    assert!(sink.messages()[1]
        .header("Subject")
        .unwrap()
        .contains("cleared"));
    assert_eq!(hook.requests()[1].json()["event"], "cleared");

    // Acknowledging: a viewer may not, another site's operator sees nothing, the operator does.
    let ack = |token: String| {
        let app = &app;
        async move {
            app.request(
                "POST",
                &format!("/api/v1/alarms/{id}/acknowledge"),
                Some(&token),
                Some(json!({"comment": "tap changer checked"})),
            )
            .await
        }
    };
    assert_eq!(ack(viewer.clone()).await.status, 403);
    assert_eq!(ack(operator_b.clone()).await.status, 404);
    assert_eq!(ack(operator.clone()).await.status, 204);
    assert_eq!(ack(operator.clone()).await.status, 409);
    let closed = app
        .get(&format!("/api/v1/alarms/{id}"), &viewer)
        .await
        .json();
    assert_eq!(closed["alarm"]["state"], "closed");
    assert_eq!(closed["alarm"]["acked_email"], "op@example.com");
    assert_eq!(closed["alarm"]["ack_comment"], "tap changer checked");
    let kinds: Vec<&str> = closed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["raised", "cleared", "acknowledged"]);
    // The closed alarm leaves the default (open) list and stays in the history.
    assert_eq!(app.get("/api/v1/alarms", &viewer).await.json(), json!([]));
    let csv = app
        .get(
            &format!("/api/v1/alarms/history.csv?site_id={site_a}"),
            &viewer,
        )
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.body.lines().count(), 4, "{}", csv.body);
    assert!(csv.body.contains("tap changer checked"));

    // Nothing at all about site B, and nothing for site B's users.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM alarms WHERE site_id <> {site_a}"
        ))
        .await,
        0
    );
    assert_eq!(
        app.get("/api/v1/alarms?state=all", &operator_b)
            .await
            .json(),
        json!([])
    );
    assert!(sink
        .messages()
        .iter()
        .all(|m| !m.body().contains("SGB") && !m.header("Subject").unwrap().contains("SGB")));
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(hook.requests().len(), 2);
    assert_eq!(app.metric("headend_alarms_raised_total").await, Some(1.0));
    assert_eq!(app.metric("headend_alarms_cleared_total").await, Some(1.0));
    // Counted once the sender committed the row (a moment after the receiver has it).
    wait_for("the notification metric", || async {
        (app.metric("headend_alarm_notifications_sent_total").await == Some(4.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_a_restart_and_a_mail_outage_without_duplicates() {
    // The mail server refuses service from the start (it keeps its port meanwhile).
    let sink = SmtpSink::start().await;
    sink.set_available(false);
    let app = app(sink.addr.port()).await;
    let site = app.site("Plant", "UTC").await;
    let pw = app.gateway("SGR", Some(site), None).await;
    let mut client = app.gateway_client("SGR", &pw).await;
    let t0 = Utc::now() - chrono::Duration::hours(1);
    publish(&app, &mut client, "SGR", t0, 230.0).await;
    meter_id(&app, "SGR").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({
            "site_id": site, "name": "Overvoltage", "severity": "warning", "target": "site",
            "watch": {"kind": "measurement", "quantity": "u1"},
            "condition": {"op": "above", "threshold": 250.0},
            "actions": {"email": ["ops@example.com", "duty@example.com"]},
        }),
    )
    .await;
    publish(
        &app,
        &mut client,
        "SGR",
        t0 + chrono::Duration::seconds(10),
        260.0,
    )
    .await;
    app.wait_count("SELECT count(*) FROM alarms", 1).await;
    // Both e-mails are tried and kept for a retry.
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE status = 'pending' AND attempts >= 1 AND last_error IS NOT NULL",
        2,
    )
    .await;
    drop(client);

    // A restart during the outage: the alarm is neither forgotten nor raised again.
    let app = app.restart().await;
    let mut client = app.gateway_client("SGR", &pw).await;
    publish(
        &app,
        &mut client,
        "SGR",
        t0 + chrono::Duration::seconds(20),
        265.0,
    )
    .await;
    publish(
        &app,
        &mut client,
        "SGR",
        t0 + chrono::Duration::seconds(30),
        270.0,
    )
    .await;
    app.wait_count("SELECT count(*) FROM measurements", 4).await;
    assert_eq!(rule_phase(&app, rule).await.as_deref(), Some("active"));

    // The mail server comes back: each e-mail arrives once.
    sink.set_available(true);
    app.wait_count("SELECT count(*) FROM alarm_outbox WHERE status = 'sent'", 2)
        .await;
    // A later sample that stays above changes nothing either.
    publish(
        &app,
        &mut client,
        "SGR",
        t0 + chrono::Duration::seconds(40),
        275.0,
    )
    .await;
    app.wait_count("SELECT count(*) FROM measurements", 5).await;
    let messages = sink.messages();
    let mut to: Vec<_> = messages.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["duty@example.com", "ops@example.com"]);
    let mut ids: Vec<_> = messages
        .iter()
        .map(|m| m.header("Message-ID").unwrap().to_owned())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    assert_eq!(app.count("SELECT count(*) FROM alarms").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM alarm_outbox").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM alarm_events WHERE kind IN ('raised', 'reraised')")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_shedding_rule_switches_the_relay_off_through_the_ledger_and_restores_it() {
    let sink = SmtpSink::start().await;
    let app = app(sink.addr.port()).await;
    let site = app.site("Plant", "UTC").await;
    let password = app.gateway("SGL", Some(site), None).await;
    let _gateway = SgGateway::simulated("SGL", &password, app.mqtt.unwrap(), &[]);
    let relay: i64 = wait_for("the IR relay's state", || async {
        sqlx::query_scalar(
            "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
             JOIN relay_states r ON r.device_id = d.id
             WHERE g.serial = 'SGL' AND d.kind = 'relay' AND d.port = 'ir' LIMIT 1",
        )
        .fetch_optional(&app.pool)
        .await
        .ok()?
    })
    .await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let r = app
        .request(
            "PATCH",
            &format!("/api/v1/relays/{relay}"),
            Some(&admin),
            Some(json!({"min_switch_interval_s": 0})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let meter = meter_id(&app, "SGL").await;
    let rule_body = |threshold: f64| {
        json!({
            "site_id": site, "name": "Shed on any frequency", "severity": "warning",
            "target": "meter", "device_id": meter,
            "watch": {"kind": "measurement", "quantity": "frequency"},
            "condition": {"op": "above", "threshold": threshold},
            "actions": {"shed_relay": relay, "restore_on_clear": true},
        })
    };
    let rule = create_rule(&app, &admin, rule_body(1.0)).await;

    let command = |target: i16| {
        let app = &app;
        async move {
            wait_for("a confirmed relay command", || async {
                sqlx::query_as::<_, (String, Option<String>)>(
                    "SELECT requested_email, reason FROM relay_commands
                     WHERE device_id = $1 AND target = $2 AND status = 'confirmed'",
                )
                .bind(relay)
                .bind(target)
                .fetch_optional(&app.pool)
                .await
                .ok()?
            })
            .await
        }
    };
    let (by, reason) = command(0).await;
    assert_eq!(by, format!("alarm rule {rule}"));
    assert!(reason.unwrap().starts_with(&format!("alarm rule {rule}")));
    let state: i16 = sqlx::query_scalar(
        "SELECT state FROM relay_states WHERE device_id = $1 ORDER BY ts DESC LIMIT 1",
    )
    .bind(relay)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(state, 0, "the relay reports itself off");

    // A threshold no frequency reaches: the next sample clears the alarm, the relay is restored.
    let r = app
        .request(
            "PUT",
            &format!("/api/v1/alarm-rules/{rule}"),
            Some(&admin),
            Some(rule_body(1000.0)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    command(1).await;
    assert_eq!(
        app.count("SELECT count(*) FROM relay_commands WHERE status <> 'confirmed'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM alarms WHERE NOT active")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_gateway_raises_on_the_timer_and_clears_when_it_connects() {
    let hook = HttpReceiver::start().await;
    let app = app(1).await;
    let site = app.site("Plant", "UTC").await;
    let pw = app.gateway("SGO", Some(site), None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let body = json!({
        "site_id": site, "name": "Gateway offline", "severity": "critical", "target": "site",
        "watch": {"kind": "gateway_offline"},
        "condition": {"op": "above", "threshold": 0.5},
        "actions": {"webhook_url": hook.url("/hook"), "mqtt_topic": "headend/alarms"},
    });
    let rule = create_rule(&app, &admin, body.clone()).await;
    app.wait_count(
        "SELECT count(*) FROM alarms WHERE active AND subject LIKE 'gateway:%'",
        1,
    )
    .await;
    wait_for("the webhook", || async {
        (!hook.requests().is_empty()).then_some(())
    })
    .await;
    let doc = hook.requests()[0].json();
    assert_eq!(doc["event"], "raised");
    assert!(doc["message"].as_str().unwrap().contains("SGO"), "{doc}");
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE channel = 'mqtt' AND status = 'sent'",
        1,
    )
    .await;

    let _client = app.gateway_client("SGO", &pw).await;
    app.wait_count("SELECT count(*) FROM alarms WHERE NOT active", 1)
        .await;
    wait_for("the clear webhook", || async {
        (hook.requests().len() == 2).then_some(())
    })
    .await;

    // A gateway that never comes: its alarm is cleared when the rule is disabled (nothing
    // would clear it otherwise), with the reason in its history.
    app.gateway("SGO2", Some(site), None).await;
    app.wait_count("SELECT count(*) FROM alarms WHERE active", 1)
        .await;
    let mut disabled = body;
    disabled["enabled"] = json!(false);
    let r = app
        .request(
            "PUT",
            &format!("/api/v1/alarm-rules/{rule}"),
            Some(&admin),
            Some(disabled),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        app.count("SELECT count(*) FROM alarms WHERE active").await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM alarm_events WHERE comment = 'rule disabled'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_api_checks_role_site_and_input() {
    let app = app(1).await;
    let site_a = app.site("Site A", "UTC").await;
    let site_b = app.site("Site B", "UTC").await;
    let pw_b = app.gateway("SGB", Some(site_b), None).await;
    let mut b = app.gateway_client("SGB", &pw_b).await;
    publish(
        &app,
        &mut b,
        "SGB",
        Utc::now() - chrono::Duration::hours(1),
        230.0,
    )
    .await;
    let meter_b = meter_id(&app, "SGB").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let viewer_a = app
        .user_token("viewer@example.com", "viewer", &[site_a])
        .await;
    let operator_a = app
        .user_token("op@example.com", "operator", &[site_a])
        .await;
    let rule = |site: i64, extra: Value| {
        let mut r = json!({
            "site_id": site, "name": "Low PF", "severity": "info", "target": "site",
            "watch": {"kind": "measurement", "quantity": "pf"},
            "condition": {"op": "below", "threshold": 0.9, "hysteresis": 0.02},
        });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let post = |token: String, body: Value| {
        let app = &app;
        async move {
            app.request("POST", "/api/v1/alarm-rules", Some(&token), Some(body))
                .await
        }
    };
    assert_eq!(
        post(operator_a.clone(), rule(site_a, json!({})))
            .await
            .status,
        403
    );
    assert_eq!(
        post(viewer_a.clone(), rule(site_a, json!({}))).await.status,
        403
    );
    let id_a = create_rule(&app, &admin, rule(site_a, json!({}))).await;
    create_rule(&app, &admin, rule(site_b, json!({}))).await;
    for (bad, status) in [
        (
            json!({"watch": {"kind": "measurement", "quantity": "u9"}}),
            400,
        ),
        (
            json!({"condition": {"op": "above", "threshold": 1.0, "hysterisis": 1.0}}),
            422,
        ),
        (
            json!({"condition": {"op": "outside", "low": 2.0, "high": 1.0}}),
            400,
        ),
        (
            json!({"actions": {"email": ["x@example.com\r\nBcc: y@example.com"]}}),
            400,
        ),
        (
            json!({"actions": {"webhook_url": "file:///etc/passwd"}}),
            400,
        ),
        (json!({"target": "meter", "device_id": meter_b}), 404),
        (json!({"target": "meter"}), 400),
        (json!({"name": ""}), 400),
    ] {
        let r = post(admin.clone(), rule(site_a, bad.clone())).await;
        assert_eq!(r.status, status, "{bad}: {}", r.body);
    }
    let listed = app.get("/api/v1/alarm-rules", &viewer_a).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id_a);
    let all = app.get("/api/v1/alarm-rules", &admin).await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let other = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["site_id"] == site_b)
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/alarm-rules/{other}"), &viewer_a)
            .await
            .status,
        404
    );
    let r = app
        .request(
            "DELETE",
            &format!("/api/v1/alarm-rules/{id_a}"),
            Some(&operator_a),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .request(
            "DELETE",
            &format!("/api/v1/alarm-rules/{id_a}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        app.get("/api/v1/alarm-rules", &viewer_a).await.json(),
        json!([])
    );
    assert_eq!(
        app.get("/api/v1/alarms?severity=bogus", &viewer_a)
            .await
            .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_value_reopens_its_alarm_shelving_silences_and_escalation_tells_the_second_list()
{
    let sink = SmtpSink::start().await;
    let hook = HttpReceiver::start().await;
    // The receiver is down at first: the webhook is retried until it answers 2xx.
    hook.respond_with(503);
    let app = app(sink.addr.port()).await;
    let site = app.site("Plant", "UTC").await;
    let pw = app.gateway("SGF", Some(site), None).await;
    let mut c = app.gateway_client("SGF", &pw).await;
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    publish(&app, &mut c, "SGF", at(0), 230.0).await;
    meter_id(&app, "SGF").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let operator = app.user_token("op@example.com", "operator", &[site]).await;
    create_rule(
        &app,
        &admin,
        json!({
            "site_id": site, "name": "Flappy", "severity": "warning", "target": "site",
            "watch": {"kind": "measurement", "quantity": "u1"},
            "condition": {"op": "above", "threshold": 250.0},
            "actions": {"email": ["ops@example.com"], "webhook_url": hook.url("/h"),
                        "escalate_to": ["boss@example.com"], "escalate_after_min": 1},
        }),
    )
    .await;
    // Ten flaps: raised, cleared, raised again once; then silence.
    for i in 0..10 {
        publish(&app, &mut c, "SGF", at(10 + 20 * i), 260.0).await;
        publish(&app, &mut c, "SGF", at(20 + 20 * i), 240.0).await;
    }
    publish(&app, &mut c, "SGF", at(300), 260.0).await;
    app.wait_count("SELECT raise_count::int8 FROM alarms", 11)
        .await;
    assert_eq!(app.count("SELECT count(*) FROM alarms").await, 1);
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE channel = 'email' AND status = 'sent'",
        3,
    )
    .await;
    let subjects: Vec<String> = sink
        .messages()
        .iter()
        .map(|m| m.header("Subject").unwrap().to_owned())
        .collect();
    assert!(subjects[0].contains("WARNING"), "{subjects:?}");
    assert!(subjects[1].contains("cleared"), "{subjects:?}");
    assert!(subjects[2].contains("AGAIN"), "{subjects:?}");

    // The webhook receiver comes back: each of the three webhook notifications arrives.
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE channel = 'webhook' AND attempts >= 1 AND status = 'pending'",
        3,
    )
    .await;
    hook.respond_with(200);
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE channel = 'webhook' AND status = 'sent'",
        3,
    )
    .await;
    let delivered: Vec<Value> = hook
        .requests()
        .iter()
        .filter(|r| r.headers.contains_key("x-headend-signature"))
        .map(|r| r.json()["event"].clone())
        .collect();
    assert!(delivered.len() >= 3);

    // Escalation after a minute unacknowledged: one e-mail to the second list. Made due now
    // by moving the time Headend raised it back (the timer compares with the database clock).
    let id: i64 = sqlx::query_scalar("SELECT id FROM alarms")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE alarms SET created_at = now() - interval '2 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    wait_for("the escalation e-mail", || async {
        sink.messages()
            .iter()
            .any(|m| m.to == ["boss@example.com"])
            .then_some(())
    })
    .await;
    let boss = sink
        .messages()
        .into_iter()
        .find(|m| m.to == ["boss@example.com"])
        .unwrap();
    assert!(boss.header("Subject").unwrap().contains("ESCALATED"));

    // Shelved: the clear tells nobody. Acknowledged afterwards: closed.
    let r = app
        .request(
            "POST",
            &format!("/api/v1/alarms/{id}/shelve"),
            Some(&operator),
            Some(json!({"minutes": 60, "comment": "maintenance"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let shown = app
        .get(&format!("/api/v1/alarms/{id}"), &operator)
        .await
        .json();
    assert_eq!(shown["alarm"]["shelved"], true);
    let mails = sink.messages().len();
    publish(&app, &mut c, "SGF", at(400), 240.0).await;
    app.wait_count("SELECT count(*) FROM alarms WHERE NOT active", 1)
        .await;
    let r = app
        .request(
            "POST",
            "/api/v1/alarms",
            Some(&operator),
            Some(json!({"action": "acknowledge", "ids": [id, 999_999], "comment": "done"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].clone();
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["ok"], false);
    let closed = app
        .get(&format!("/api/v1/alarms/{id}"), &operator)
        .await
        .json();
    assert_eq!(closed["alarm"]["state"], "closed");
    // The sink holds a message a moment before the sender commits it as sent.
    wait_for("every outbox row settled", || async {
        (app.count("SELECT count(*) FROM alarm_outbox WHERE status <> 'sent'")
            .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(sink.messages().len(), mails, "nothing sent while shelved");
}

/// The pages: the alarm list with its acknowledge form (CSRF), the alarm's history, the rule
/// editor for admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alarm_pages_list_acknowledge_and_edit_rules() {
    use headend_e2e::raw_request;
    let app = app(1).await;
    let site = app.site("Plant <b>", "UTC").await;
    let pw = app.gateway("SGP", Some(site), None).await;
    let mut c = app.gateway_client("SGP", &pw).await;
    let t0 = Utc::now() - chrono::Duration::hours(1);
    publish(&app, &mut c, "SGP", t0, 230.0).await;
    meter_id(&app, "SGP").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    app.user_token("op@example.com", "operator", &[site]).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({
            "site_id": site, "name": "Over <script>", "severity": "critical", "target": "site",
            "watch": {"kind": "measurement", "quantity": "u1"},
            "condition": {"op": "above", "threshold": 250.0},
        }),
    )
    .await;
    publish(
        &app,
        &mut c,
        "SGP",
        t0 + chrono::Duration::seconds(5),
        260.0,
    )
    .await;
    app.wait_count("SELECT count(*) FROM alarms", 1).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM alarms")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // Log in through the form.
    let get = |path: &str, cookie: &str| {
        let (path, cookie) = (path.to_owned(), cookie.to_owned());
        let addr = app.http;
        async move {
            raw_request(addr, "GET", &path, &[("Cookie", &cookie)], "")
                .await
                .unwrap()
        }
    };
    let login = get("/login", "").await;
    let csrf_of = |body: &str| {
        let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        body[at..at + 32].to_owned()
    };
    let csrf = csrf_of(&login.body);
    let cookie_csrf = format!("headend_csrf={csrf}");
    let r = raw_request(
        app.http,
        "POST",
        "/login",
        &[
            ("Cookie", &cookie_csrf),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}&email=op%40example.com&password=correct+horse+battery+staple"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("headend_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cookie = format!("{session}; {cookie_csrf}");

    // The sites overview counts the site's active alarms and links to them.
    let overview = get("/", &cookie).await;
    assert_eq!(overview.status, 200);
    assert!(
        overview
            .body
            .contains(&format!("href=\"/alarms?site_id={site}")),
        "{}",
        overview.body
    );

    let list = get("/alarms", &cookie).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(&format!("data-alarm=\"{id}\"")));
    assert!(list.body.contains("Over &"), "escaped");
    assert!(!list.body.contains("<script>") && !list.body.contains("Plant <b>"));
    assert!(list
        .body
        .contains(&format!("action=\"/alarms/{id}/acknowledge\"")));
    let form = "application/x-www-form-urlencoded";
    let post = |path: String, body: String| {
        let cookie = cookie.clone();
        let addr = app.http;
        async move {
            raw_request(
                addr,
                "POST",
                &path,
                &[("Cookie", &cookie), ("Content-Type", form)],
                &body,
            )
            .await
            .unwrap()
        }
    };
    let bad = post(
        format!("/alarms/{id}/acknowledge"),
        "csrf=00000000000000000000000000000000".into(),
    )
    .await;
    assert_eq!(bad.status, 403, "a wrong CSRF token is refused");
    let ok = post(
        format!("/alarms/{id}/acknowledge"),
        format!("csrf={csrf}&comment=seen+it"),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let back = ok.header("location").unwrap().to_owned();
    assert_eq!(back, format!("/alarms/{id}?done=acknowledge"));
    let page = get(&back, &cookie).await;
    assert!(
        page.body.contains("The alarm is acknowledged."),
        "{}",
        page.body
    );
    assert!(page.body.contains("active_acknowledged"));
    // In words and in the rule's unit.
    assert!(page.body.contains("Active, acknowledged"), "{}", page.body);
    assert!(page.body.contains("at 260 V"), "{}", page.body);
    assert!(page.body.contains("seen it"));
    assert!(page.body.contains("acknowledged"));

    // The operator reads rules but the editor is for admins.
    let rules = get("/alarm-rules", &cookie).await;
    assert!(rules.body.contains(&format!("data-rule=\"{rule}\"")));
    assert!(!rules.body.contains("id=\"rule-form\""));
    let edit = post(
        format!("/alarm-rules/{rule}"),
        format!("csrf={csrf}&site_id={site}&name=x&severity=info&target=site&kind=measurement&quantity=u1&op=above&threshold=1"),
    )
    .await;
    assert_eq!(edit.status, 403);
    let history = get(
        &format!("/api/v1/alarms/history.csv?site_id={site}"),
        &cookie,
    )
    .await;
    assert_eq!(history.status, 200);
    assert!(history.body.contains("seen it"));

    // The admin's editor: the meter picked from the site's list by a readable label; a bad
    // threshold comes back (422) beside its field with the typed values kept; a good one is
    // saved in SI units (kW typed, W stored) and redirects with a notice.
    let r = raw_request(
        app.http,
        "POST",
        "/login",
        &[
            ("Cookie", &cookie_csrf),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}&email=admin%40example.com&password=correct+horse+battery+staple"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let admin_session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("headend_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let admin_cookie = format!("{admin_session}; {cookie_csrf}");
    let meter = meter_id(&app, "SGP").await;
    let editor = get(&format!("/alarm-rules?site_id={site}"), &admin_cookie).await;
    assert_eq!(editor.status, 200);
    assert!(
        editor
            .body
            .contains(&format!("<option value=\"meter:{meter}\""))
            && editor.body.contains("<optgroup label=\"Meters\">")
            && editor.body.contains("(gateway SGP)")
            && editor.body.contains(">Active power (kW)</option>"),
        "{}",
        editor.body
    );
    assert!(!editor.body.contains("name=\"target_id\""), "no typed ids");
    let post_admin = |path: String, body: String| {
        let cookie = admin_cookie.clone();
        let addr = app.http;
        async move {
            raw_request(
                addr,
                "POST",
                &path,
                &[("Cookie", &cookie), ("Content-Type", form)],
                &body,
            )
            .await
            .unwrap()
        }
    };
    let fields = |threshold: &str| {
        format!(
            "csrf={csrf}&site_id={site}&name=Meter+overload&severity=warning&target=meter%3A{meter}\
             &kind=measurement&quantity=p&op=above&threshold={threshold}&email=ops%40example.com&enabled=1"
        )
    };
    let refused = post_admin("/alarm-rules".into(), fields("lots")).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused
        .body
        .contains("<p class=\"field-error\" id=\"threshold-error\">"));
    assert!(refused
        .body
        .contains("aria-describedby=\"threshold-error\""));
    assert!(refused.body.contains("value=\"Meter overload\""));
    assert!(refused.body.contains("value=\"ops@example.com\""));
    assert!(refused.body.contains("value=\"lots\""));
    assert!(refused.body.contains(&format!(
        "<option value=\"meter:{meter}\" data-site=\"{site}\" selected>"
    )));
    assert_eq!(
        app.count("SELECT count(*) FROM alarm_rules WHERE name = 'Meter overload'")
            .await,
        0
    );
    let saved = post_admin("/alarm-rules".into(), fields("2.5")).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let location = saved.header("location").unwrap().to_owned();
    assert!(location.ends_with("?saved=1"), "{location}");
    let (threshold, device): (f64, Option<i64>) = sqlx::query_as(
        "SELECT (condition->>'threshold')::float8, device_id FROM alarm_rules
         WHERE name = 'Meter overload'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((threshold, device), (2500.0, Some(meter)));
    let shown = get(&location, &admin_cookie).await;
    assert!(shown.body.contains("class=\"notice\""), "{}", shown.body);
    assert!(shown.body.contains("value=\"2.5\""));
    // Another site's panel or meter is refused beside the field, not saved.
    let other = app.site("Elsewhere", "UTC").await;
    let wrong_site = fields("2.5").replace(&format!("site_id={site}"), &format!("site_id={other}"));
    let refused = post_admin("/alarm-rules".into(), wrong_site).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.contains("id=\"target-error\""),
        "{}",
        refused.body
    );
}

/// Quarter-hour rules read the profile worker's intervals: a meter's mean power and the site's
/// demand against a limit, each quarter-hour judged once at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarter_hour_mean_power_and_site_demand_rules() {
    let app = app(1).await;
    let site = app.site("Plant", "UTC").await;
    let pw = app.gateway("SGE", Some(site), None).await;
    let mut c = app.gateway_client("SGE", &pw).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    for (name, kind) in [
        ("Meter power", "mean_power_15min"),
        ("Demand", "peak_demand"),
    ] {
        create_rule(
            &app,
            &admin,
            json!({
                "site_id": site, "name": name, "severity": "warning", "target": "site",
                "watch": {"kind": kind},
                "condition": {"op": "above", "threshold": 3000.0},
            }),
        )
        .await;
    }
    let t0: DateTime<Utc> = (Utc::now() - chrono::Duration::hours(3))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string()
        .parse()
        .unwrap();
    // 1000 Wh in the first quarter-hour (4 kW), 500 Wh in the second (2 kW).
    for (minutes, wh) in [(0, 0), (15, 1000), (30, 1500)] {
        let at = t0 + chrono::Duration::minutes(minutes);
        let doc = json!({
            "header": { "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": "E1",
                "local_time": at.format("%d.%m.%Y %H:%M:%S").to_string(),
                "resetable_counters": 0, "non_resetable_counters": 1 },
            "counters": { "counter1nr": format!("{}.{:03} kWh", wh / 1000, wh % 1000) },
        });
        c.publish("sg/SGE/pub/counters/ir", doc.to_string()).await;
        c.wait_acks(1).await;
    }
    app.wait_count("SELECT count(*) FROM alarms WHERE NOT active", 2)
        .await;
    let rows: Vec<(String, String, f64, f64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT rule_name, subject, raised_value, cleared_value, raised_at, cleared_at
         FROM alarms ORDER BY rule_name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let q = |m: i64| t0 + chrono::Duration::minutes(m);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "Demand");
    assert_eq!(rows[0].1, format!("site:{site}"));
    assert_eq!(rows[1].0, "Meter power");
    assert!(rows[1].1.starts_with("meter:"));
    for r in &rows {
        assert_eq!((r.2, r.3), (4000.0, 2000.0), "{r:?}");
        assert_eq!((r.4, r.5), (q(15), q(30)), "{r:?}");
    }
}

/// A TLS mail server (STARTTLS, or TLS from the first byte when `implicit`) that offers
/// `mechanisms` (e.g. "PLAIN LOGIN") after the handshake and demands authentication as
/// alarms / s3cret-pass, with a certificate of a private CA (given to Headend as
/// `alarms.tls_ca_file`). Returns the accepted messages.
async fn tls_sink(dir: &std::path::Path, implicit: bool, mechanisms: &'static str) -> TlsSink {
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio_rustls::rustls;

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: TlsRecord = Arc::default();
    let record = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                if implicit {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut io = BufReader::new(tls);
                    io.get_mut().write_all(b"220 tls-sink\r\n").await.unwrap();
                    return authenticated_session(io, record, mechanisms).await;
                }
                let mut plain = BufReader::new(tcp);
                let mut line = String::new();
                plain
                    .get_mut()
                    .write_all(b"220 tls-sink\r\n")
                    .await
                    .unwrap();
                loop {
                    line.clear();
                    if plain.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_ascii_uppercase();
                    if cmd.starts_with("EHLO") {
                        plain
                            .get_mut()
                            .write_all(b"250-tls-sink\r\n250 STARTTLS\r\n")
                            .await
                            .unwrap();
                    } else if cmd == "STARTTLS" {
                        plain
                            .get_mut()
                            .write_all(b"220 go ahead\r\n")
                            .await
                            .unwrap();
                        break;
                    } else {
                        // Nothing but EHLO and STARTTLS in clear text.
                        plain
                            .get_mut()
                            .write_all(b"530 must issue STARTTLS first\r\n")
                            .await
                            .unwrap();
                    }
                }
                let Ok(tls) = acceptor.accept(plain.into_inner()).await else {
                    return;
                };
                authenticated_session(BufReader::new(tls), record, mechanisms).await;
            });
        }
    });
    (addr, got)
}

/// (mechanism used, recipient, message as sent).
type TlsRecord = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;
type TlsSink = (std::net::SocketAddr, TlsRecord);

/// The encrypted part of `tls_sink`'s session: AUTH (PLAIN with or without an initial
/// response, LOGIN), then one message at a time.
async fn authenticated_session<S>(
    mut io: tokio::io::BufReader<S>,
    record: TlsRecord,
    mechanisms: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    let b64 = base64::engine::general_purpose::STANDARD;
    let offered = |m: &str| mechanisms.split(' ').any(|o| o == m);
    let (mut authed, mut to, mut data) = (None::<String>, String::new(), String::new());
    while let Some(cmd) = next_line(&mut io).await {
        let upper = cmd.to_ascii_uppercase();
        let reply: Vec<u8> = if upper.starts_with("EHLO") {
            format!("250-tls-sink\r\n250 AUTH {mechanisms}\r\n").into_bytes()
        } else if upper.starts_with("AUTH PLAIN") && offered("PLAIN") {
            let token = match cmd.get("AUTH PLAIN ".len()..) {
                Some(token) => token.to_owned(),
                None => {
                    io.get_mut().write_all(b"334 \r\n").await.unwrap();
                    next_line(&mut io).await.unwrap_or_default()
                }
            };
            let ok = b64.decode(token).ok().as_deref() == Some(b"\0alarms\0s3cret-pass");
            authed = ok.then(|| "PLAIN".to_owned());
            if ok {
                b"235 ok\r\n".to_vec()
            } else {
                b"535 bad credentials\r\n".to_vec()
            }
        } else if upper == "AUTH LOGIN" && offered("LOGIN") {
            io.get_mut()
                .write_all(b"334 VXNlcm5hbWU6\r\n")
                .await
                .unwrap();
            let user = next_line(&mut io).await.unwrap_or_default();
            io.get_mut()
                .write_all(b"334 UGFzc3dvcmQ6\r\n")
                .await
                .unwrap();
            let pass = next_line(&mut io).await.unwrap_or_default();
            let ok = b64.decode(user).ok().as_deref() == Some(b"alarms")
                && b64.decode(pass).ok().as_deref() == Some(b"s3cret-pass");
            authed = ok.then(|| "LOGIN".to_owned());
            if ok {
                b"235 ok\r\n".to_vec()
            } else {
                b"535 bad credentials\r\n".to_vec()
            }
        } else if upper.starts_with("AUTH") {
            b"504 mechanism not offered\r\n".to_vec()
        } else if authed.is_none() {
            b"530 authentication required\r\n".to_vec()
        } else if upper.starts_with("MAIL FROM:") {
            b"250 ok\r\n".to_vec()
        } else if let Some(rcpt) = cmd.strip_prefix("RCPT TO:") {
            to = rcpt.trim_matches(['<', '>']).to_owned();
            b"250 ok\r\n".to_vec()
        } else if upper == "DATA" {
            io.get_mut().write_all(b"354 go\r\n").await.unwrap();
            while let Some(l) = next_line(&mut io).await {
                if l == "." {
                    break;
                }
                data.push_str(&l);
                data.push_str("\r\n");
            }
            record.lock().unwrap().push((
                authed.clone().unwrap_or_default(),
                to.clone(),
                std::mem::take(&mut data),
            ));
            b"250 queued\r\n".to_vec()
        } else if upper == "QUIT" {
            let _ = io.get_mut().write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 no\r\n".to_vec()
        };
        io.get_mut().write_all(&reply).await.unwrap();
    }
}

async fn next_line<S: tokio::io::AsyncRead + Unpin>(
    io: &mut tokio::io::BufReader<S>,
) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    (io.read_line(&mut line).await.unwrap_or(0) > 0).then(|| line.trim_end().to_owned())
}

/// An app that sends e-mail to `smtp` over `tls` ("starttls" or "tls"), authenticating, and
/// trusting the CA `tls_sink` wrote into `pki`.
async fn tls_app(smtp: std::net::SocketAddr, tls: &str, pki: &std::path::Path) -> TestApp {
    let ca = pki.join("ca.pem");
    TestApp::spawn_with(|c| {
        c.alarms.smtp_host = Some("127.0.0.1".into());
        c.alarms.smtp_port = smtp.port();
        c.alarms.smtp_tls = tls.into();
        c.alarms.smtp_user = Some("alarms".into());
        c.alarms.smtp_password = Some(headend::config::Secret::new("s3cret-pass"));
        c.alarms.tls_ca_file = Some(ca);
        c.alarms.retry_base_secs = 1;
        c.alarms.timer_period_secs = 1;
    })
    .await
}

/// A rule on an offline gateway (raised by the timer at once) that sends to `actions`.
async fn offline_rule(app: &TestApp, serial: &str, actions: Value) -> i64 {
    let site = app.site("Plant", "UTC").await;
    app.gateway(serial, Some(site), None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    create_rule(
        app,
        &admin,
        json!({
            "site_id": site, "name": "Offline", "severity": "critical", "target": "site",
            "watch": {"kind": "gateway_offline"}, "condition": {"op": "above", "threshold": 0.5},
            "actions": actions,
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_over_starttls_with_authentication() {
    let pki = tempfile::tempdir().unwrap();
    let (smtp, got) = tls_sink(pki.path(), false, "PLAIN LOGIN").await;
    let app = tls_app(smtp, "starttls", pki.path()).await;
    offline_rule(&app, "SGT", json!({"email": ["ops@example.com"]})).await;
    app.wait_count("SELECT count(*) FROM alarm_outbox WHERE status = 'sent'", 1)
        .await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("PLAIN", "ops@example.com")
    );
    assert!(got[0].2.contains("Offline"), "{}", got[0].2);
}

/// A server over implicit TLS (port 465 style) that offers only AUTH LOGIN: negotiated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_over_implicit_tls_with_auth_login() {
    let pki = tempfile::tempdir().unwrap();
    let (smtp, got) = tls_sink(pki.path(), true, "LOGIN").await;
    let app = tls_app(smtp, "tls", pki.path()).await;
    offline_rule(&app, "SGL", json!({"email": ["ops@example.com"]})).await;
    app.wait_count("SELECT count(*) FROM alarm_outbox WHERE status = 'sent'", 1)
        .await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("LOGIN", "ops@example.com")
    );
}

/// A server that offers no mechanism Headend knows: given up at once, never sent in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_without_a_common_auth_mechanism_fails_for_good() {
    let pki = tempfile::tempdir().unwrap();
    let (smtp, got) = tls_sink(pki.path(), false, "CRAM-MD5").await;
    let app = tls_app(smtp, "starttls", pki.path()).await;
    offline_rule(&app, "SGC", json!({"email": ["ops@example.com"]})).await;
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE status = 'failed' AND attempts = 1",
        1,
    )
    .await;
    assert!(got.lock().unwrap().is_empty());
}

/// A 451 after the data is retried and the message arrives once, with the Message-ID of the
/// refused attempt; a 550 for a recipient is given up at once and written in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_is_retried_after_451_with_the_same_message_id_and_given_up_after_550() {
    let sink = SmtpSink::start().await;
    sink.refuse_next_data("451 4.3.0 try again later");
    sink.refuse_recipient("nobody@example.com", "550 5.1.1 no such user");
    let app = app(sink.addr.port()).await;
    offline_rule(
        &app,
        "SGM",
        json!({"email": ["ops@example.com", "nobody@example.com"]}),
    )
    .await;
    app.wait_count("SELECT count(*) FROM alarm_outbox WHERE status = 'sent'", 1)
        .await;
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE status = 'failed'",
        1,
    )
    .await;
    let refused = sink.refused();
    let delivered = sink.messages();
    assert_eq!(refused.len(), 1);
    assert_eq!(delivered.len(), 1, "exactly one message delivered");
    assert_eq!(
        (&refused[0].to, &delivered[0].to),
        (
            &vec!["ops@example.com".to_owned()],
            &vec!["ops@example.com".to_owned()]
        )
    );
    let id = delivered[0].header("Message-ID").unwrap();
    assert!(id.starts_with('<') && id.ends_with("@headend>"), "{id}");
    assert_eq!(refused[0].header("Message-ID").unwrap(), id);
    let rows: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT target, status, attempts, last_error FROM alarm_outbox ORDER BY target",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2),
        ("nobody@example.com", "failed", 1)
    );
    assert!(rows[0].3.as_deref().unwrap().contains("550"), "{rows:?}");
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2),
        ("ops@example.com", "sent", 2)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM alarm_events WHERE kind = 'action_failed'")
            .await,
        1
    );
}

/// 5xx answers are retried until delivered, with the same Idempotency-Key; a 4xx fails for
/// good at once; a redirect is not followed (it would bounce the signed request elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_5xx_give_up_on_4xx_and_follow_no_redirect() {
    let flaky = HttpReceiver::start().await;
    flaky.respond_with(500);
    let refusing = HttpReceiver::start().await;
    refusing.answer_with(400, "bad signature", None);
    let inner = HttpReceiver::start().await;
    let bouncing = HttpReceiver::start().await;
    bouncing.answer_with(307, "", Some(&inner.url("/internal")));
    let app = app(1).await;
    let site = app.site("Plant", "UTC").await;
    app.gateway("SGW", Some(site), None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    for (name, url) in [
        ("flaky", flaky.url("/h")),
        ("refusing", refusing.url("/h")),
        ("bouncing", bouncing.url("/h")),
    ] {
        create_rule(
            &app,
            &admin,
            json!({
                "site_id": site, "name": name, "severity": "warning", "target": "site",
                "watch": {"kind": "gateway_offline"},
                "condition": {"op": "above", "threshold": 0.5},
                "actions": {"webhook_url": url},
            }),
        )
        .await;
    }
    let row = |url: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32, Option<String>)>(
                "SELECT status, attempts, last_error FROM alarm_outbox WHERE target = $1",
            )
            .bind(url)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    wait_for("the 500 retried", || async {
        row(flaky.url("/h"))
            .await
            .filter(|r| r.0 == "pending" && r.1 >= 2)
    })
    .await;
    flaky.respond_with(200);
    let sent = wait_for("the retried webhook delivered", || async {
        row(flaky.url("/h")).await.filter(|r| r.0 == "sent")
    })
    .await;
    let requests = flaky.requests();
    assert_eq!(requests.len(), sent.1 as usize, "one request per attempt");
    assert!(requests.len() >= 3);
    let keys: Vec<_> = requests
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    requests.iter().for_each(verify_signature);

    let refused = wait_for("the 400 given up", || async {
        row(refusing.url("/h")).await.filter(|r| r.0 == "failed")
    })
    .await;
    assert_eq!(refused.1, 1, "{refused:?}");
    let error = refused.2.unwrap();
    assert!(
        error.contains("400") && error.contains("bad signature"),
        "{error}"
    );
    assert_eq!(refusing.requests().len(), 1);

    let bounced = wait_for("the redirect given up", || async {
        row(bouncing.url("/h")).await.filter(|r| r.0 == "failed")
    })
    .await;
    assert_eq!(bounced.1, 1, "{bounced:?}");
    assert!(bounced.2.unwrap().contains("307"));
    assert_eq!(bouncing.requests().len(), 1);
    assert!(inner.requests().is_empty(), "the redirect was not followed");
}

/// Rules are often written before the gateways are commissioned: a meter that appears after its
/// site's rule is covered from its first sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_appears_after_its_rule_is_covered_from_its_first_sample() {
    let app = app(1).await;
    let site = app.site("New plant", "UTC").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    create_rule(
        &app,
        &admin,
        json!({
            "site_id": site, "name": "Overvoltage", "severity": "warning", "target": "site",
            "watch": {"kind": "measurement", "quantity": "u1"},
            "condition": {"op": "above", "threshold": 250.0},
        }),
    )
    .await;
    let pw = app.gateway("SGN", Some(site), None).await;
    let mut c = app.gateway_client("SGN", &pw).await;
    publish(&app, &mut c, "SGN", Utc::now(), 262.0).await;
    app.wait_count("SELECT count(*) FROM alarms WHERE active", 1)
        .await;
    app.stop().await;
}

/// `no_data` counts counter readings as data: a meter that pushes only its counters is silent
/// when its counters stop, and speaking again when they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_counts_counter_readings() {
    let app = app(1).await;
    let site = app.site("Counters only", "UTC").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let pw = app.gateway("SGC", Some(site), None).await;
    let mut c = app.gateway_client("SGC", &pw).await;
    let counters = |at: DateTime<Utc>| {
        let mut doc: Value = serde_json::from_slice(&fixture("counters-ir-manual.json")).unwrap();
        doc["header"]["local_time"] = json!(at.format("%d.%m.%Y %H:%M:%S").to_string());
        serde_json::to_vec(&doc).unwrap()
    };
    c.publish(
        "sg/SGC/pub/counters/ir",
        counters(Utc::now() - chrono::Duration::hours(1)),
    )
    .await;
    c.wait_acks(1).await;
    meter_id(&app, "SGC").await;
    create_rule(
        &app,
        &admin,
        json!({
            "site_id": site, "name": "Silent meter", "severity": "warning", "target": "site",
            "watch": {"kind": "no_data"},
            "condition": {"op": "above", "threshold": 600.0},
        }),
    )
    .await;
    // The newest reading is an hour old: silent.
    app.wait_count("SELECT count(*) FROM alarms WHERE active", 1)
        .await;
    // A fresh reading: speaking again.
    c.publish("sg/SGC/pub/counters/ir", counters(Utc::now()))
        .await;
    c.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM alarms WHERE NOT active", 1)
        .await;
    app.stop().await;
}

/// An alarm never publishes on a gateway's topics (its command topic belongs to the relay
/// ledger): such a notification fails for good, with the reason in its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_never_publishes_on_a_gateway_topic() {
    let app = app(1).await;
    let site = app.site("Plant", "UTC").await;
    app.gateway("SGT", Some(site), None).await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    create_rule(
        &app,
        &admin,
        json!({
            "site_id": site, "name": "Gateway offline", "severity": "warning", "target": "site",
            "watch": {"kind": "gateway_offline"},
            "condition": {"op": "above", "threshold": 0.5},
            "actions": {"mqtt_topic": "sg/SGT/sub"},
        }),
    )
    .await;
    app.wait_count(
        "SELECT count(*) FROM alarm_outbox WHERE channel = 'mqtt' AND status = 'failed'
           AND last_error LIKE '%gateway''s topic%'",
        1,
    )
    .await;
    app.stop().await;
}

/// Timer rules on a gateway's clock skew and on its rejected messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_and_rejected_messages_raise_their_alarms() {
    let app = app(1).await;
    let site = app.site("Plant", "UTC").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    for (name, watch, threshold) in [
        ("Clock drifts", json!({"kind": "clock_skew"}), 60.0),
        ("Garbage", json!({"kind": "rejects", "window_s": 600}), 0.5),
    ] {
        create_rule(
            &app,
            &admin,
            json!({
                "site_id": site, "name": name, "severity": "warning", "target": "site",
                "watch": watch, "condition": {"op": "above", "threshold": threshold},
            }),
        )
        .await;
    }
    let pw = app.gateway("SGK", Some(site), None).await;
    let mut c = app.gateway_client("SGK", &pw).await;
    // The gateway's clock runs 200 s ahead (inside the clock tolerance: kept, skew recorded).
    publish(
        &app,
        &mut c,
        "SGK",
        Utc::now() + chrono::Duration::seconds(200),
        230.0,
    )
    .await;
    app.wait_count(
        "SELECT count(*) FROM alarms WHERE active AND rule_name = 'Clock drifts'",
        1,
    )
    .await;
    c.publish("sg/SGK/pub/measurements/rs485/1", b"{not json".to_vec())
        .await;
    c.wait_acks(1).await;
    app.wait_count(
        "SELECT count(*) FROM alarms WHERE active AND rule_name = 'Garbage'",
        1,
    )
    .await;
    app.stop().await;
}
