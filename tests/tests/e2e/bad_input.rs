//! Gateways may only use their own topics, and every bad input in tests/fixtures/bad-input that
//! applies to MQTT gets a clear reason in the reject log, leaves the server running and loses
//! nothing valid.

use headend_e2e::{fixture, MqttClient, TestApp};
use rumqttc::{Packet, QoS, SubscribeReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_topics_are_enforced() {
    let app = TestApp::spawn().await;
    let pw_a = app.gateway("SGA", None, None).await;
    let pw_b = app.gateway("SGB", None, None).await;
    let mqtt = app.mqtt.unwrap();

    let refused = |r: anyhow::Result<MqttClient>| match r {
        Ok(_) => panic!("connection accepted"),
        Err(e) => e.to_string(),
    };
    let wrong = refused(MqttClient::connect(mqtt, "SGA-1", "SGA", "wrong password").await);
    assert!(wrong.contains("BadUserNamePassword"), "{wrong}");
    let unknown = refused(MqttClient::connect(mqtt, "NOPE-1", "NOPE", &pw_a).await);
    assert!(unknown.contains("BadUserNamePassword"), "{unknown}");
    // A gateway may not take over another's session by using its client id.
    let stolen = refused(MqttClient::connect(mqtt, "SGB-1", "SGA", &pw_a).await);
    assert!(stolen.contains("BadClientId"), "{stolen}");

    let mut a = app.gateway_client("SGA", &pw_a).await;
    let mut b = app.gateway_client("SGB", &pw_b).await;
    // B listens on its command topic; A may not.
    b.client
        .subscribe("sg/SGB/sub", QoS::AtLeastOnce)
        .await
        .unwrap();
    let granted = b
        .wait_for(|p| matches!(p, Packet::SubAck(_)))
        .await
        .unwrap();
    assert!(
        matches!(&granted, Packet::SubAck(s) if s.return_codes == vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])
    );
    a.client
        .subscribe("sg/SGB/sub", QoS::AtLeastOnce)
        .await
        .unwrap();
    let denied = a
        .wait_for(|p| matches!(p, Packet::SubAck(_)))
        .await
        .unwrap();
    assert!(
        matches!(&denied, Packet::SubAck(s) if s.return_codes == vec![SubscribeReasonCode::Failure])
    );

    // A publishing under B's topics: acknowledged (so it does not retry forever) but dropped.
    a.publish(
        "sg/SGB/pub/measurements/ir",
        fixture("measurements-ir.json"),
    )
    .await;
    a.publish("sg/SGB/sub", r#"{"data":{"cmd":"reboot"}}"#)
        .await;
    // ...while its own publish still works on the same connection.
    a.publish(
        "sg/SGA/pub/measurements/ir",
        fixture("measurements-ir.json"),
    )
    .await;
    a.wait_acks(3).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%outside this gateway''s publish topics%' AND client = 'SGA'",
        2,
    )
    .await;
    let owner: String = sqlx::query_scalar(
        "SELECT g.serial FROM measurements m JOIN devices d ON d.id = m.device_id JOIN gateways g ON g.id = d.gateway_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(owner, "SGA");
    // B never saw the forged command: had it been forwarded, the broker would have routed it to
    // B before acknowledging A's later publish, whose row is committed by now.
    while let Ok(packet) = b.events.try_recv() {
        assert!(
            !matches!(packet, Packet::Publish(_)),
            "forged command delivered: {packet:?}"
        );
    }
    let refused_connects = app
        .count("SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'connect refused%'")
        .await;
    assert!(refused_connects >= 1, "refused connects are logged");
    app.stop().await;
}

/// Publishes `payload` on `topic` for gateway GW and returns the reject reason recorded for it.
async fn reject_reason(
    app: &TestApp,
    client: &mut MqttClient,
    topic: &str,
    payload: Vec<u8>,
    n: i64,
) -> (String, bool) {
    client.publish(&format!("sg/GW/pub/{topic}"), payload).await;
    client.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM ingest_rejects", n)
        .await;
    sqlx::query_as("SELECT reason, partial FROM ingest_rejects ORDER BY id DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn measurements_with(field: &str, value: &str) -> Vec<u8> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("measurements-ir.json")).unwrap();
    doc["measurements"][field] = serde_json::Value::from(value);
    serde_json::to_vec(&doc).unwrap()
}

fn with_time(file: &str, local_time: &str) -> Vec<u8> {
    let mut doc: serde_json::Value = serde_json::from_slice(&fixture(file)).unwrap();
    doc["header"]["local_time"] = serde_json::Value::from(local_time);
    serde_json::to_vec(&doc).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_rejected_with_reasons_and_nothing_valid_is_lost() {
    let app = TestApp::spawn().await;
    let password = app.gateway("GW", None, Some("Europe/Ljubljana")).await;
    let mut c = app.gateway_client("GW", &password).await;
    let mut n = 0;
    let expect = |reason_has: &'static str, partial: bool, got: (String, bool)| {
        assert!(
            got.0.to_lowercase().contains(&reason_has.to_lowercase()),
            "expected a reason containing {reason_has:?}, got {:?}",
            got.0
        );
        assert_eq!(got.1, partial, "partial flag for {:?}", got.0);
    };

    // Not JSON; JSON cut off mid-message.
    n += 1;
    expect(
        "json",
        false,
        reject_reason(&app, &mut c, "measurements/ir", b"hello".to_vec(), n).await,
    );
    let full = fixture("measurements-ir.json");
    n += 1;
    expect(
        "json",
        false,
        reject_reason(
            &app,
            &mut c,
            "measurements/ir",
            full[..full.len() / 2].to_vec(),
            n,
        )
        .await,
    );

    // Values with no number, an unknown unit, a prefix and no unit, not finite, not plausible.
    // Each: the field is refused, the rest of the message is stored.
    for (field, value, reason) in [
        ("U1", "", "U1"),
        ("U2", " -- ", "U2"),
        ("P1", "12 parsec", "P1"),
        ("Q1", "0.00 k", "Q1"),
        ("U3", "NaN V", "U3"),
        ("P0", "1e308 W", "P0"),
        ("frequency", "0 Hz", "frequency"),
    ] {
        n += 1;
        let got = reject_reason(
            &app,
            &mut c,
            "measurements/rs485/3",
            with_time_value(field, value, n),
            n,
        )
        .await;
        expect(reason, true, got);
    }
    // "N/A" is absent, not zero, and not an error.
    let before = app.count("SELECT count(*) FROM ingest_rejects").await;
    c.publish(
        "sg/GW/pub/measurements/rs485/4",
        with_time_value("U1", "N/A", 99),
    )
    .await;
    c.wait_acks(1).await;
    app.wait_count(
        "SELECT count(*) FROM measurements m JOIN devices d ON d.id = m.device_id WHERE d.slot = 4",
        1,
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects").await,
        before
    );
    let u1: Option<f32> = sqlx::query_scalar(
        "SELECT m.u1 FROM measurements m JOIN devices d ON d.id = m.device_id WHERE d.slot = 4",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(u1, None);
    // The refused fields' messages were stored all the same.
    assert_eq!(
        app.count("SELECT count(*) FROM measurements m JOIN devices d ON d.id = m.device_id WHERE d.slot = 3").await,
        7
    );

    // Local times: not a date, years in the future (receive time used, flagged, skew recorded).
    n += 1;
    expect(
        "clock fault",
        true,
        reject_reason(
            &app,
            &mut c,
            "counters/rs485/2",
            with_time("counters-rs485-2-wm3m4c.json", "99.99.2020 25:61:00"),
            n,
        )
        .await,
    );
    n += 1;
    expect(
        "ahead of the receive time",
        true,
        reject_reason(
            &app,
            &mut c,
            "measurements/rs485/5",
            with_time("measurements-ir.json", "01.01.2031 00:00:00"),
            n,
        )
        .await,
    );
    let (faults, skew): (i64, Option<f64>) =
        sqlx::query_as("SELECT clock_faults, clock_skew_s FROM gateways WHERE serial = 'GW'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(faults >= 2);
    assert!(
        skew.unwrap() > 100_000_000.0,
        "skew of a clock years ahead: {skew:?}"
    );
    let flagged = app
        .count("SELECT count(*) FROM measurements WHERE flags & 1 = 1")
        .await;
    assert_eq!(flagged, 1);

    // DST: the skipped hour and the repeated hour are stored, flagged, in a documented way.
    c.publish(
        "sg/GW/pub/measurements/rs485/6",
        with_time("measurements-ir.json", "29.03.2026 02:30:00"),
    )
    .await;
    c.publish(
        "sg/GW/pub/measurements/rs485/7",
        with_time("measurements-ir.json", "25.10.2026 02:30:00"),
    )
    .await;
    c.wait_acks(2).await;
    app.wait_count("SELECT count(*) FROM measurements WHERE flags & 6 <> 0", 2)
        .await;
    let gap: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT ts FROM measurements WHERE flags & 4 = 4")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(gap.to_rfc3339(), "2026-03-29T01:30:00+00:00");
    let repeated: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT ts FROM measurements WHERE flags & 2 = 2")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        repeated.to_rfc3339(),
        "2026-10-25T00:30:00+00:00",
        "a backlog reading takes the first 02:30"
    );

    // A slot the gateway cannot have, and a topic that is no SG message.
    n += 1;
    expect(
        "slot",
        false,
        reject_reason(
            &app,
            &mut c,
            "measurements/rs485/17",
            fixture("measurements-ir.json"),
            n,
        )
        .await,
    );
    n += 1;
    expect(
        "topic",
        false,
        reject_reason(&app, &mut c, "firmware/upload", b"{}".to_vec(), n).await,
    );

    // Hostile header text: stored bounded and escaped by the database layer, the message kept.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("measurements-ir.json")).unwrap();
    doc["header"]["description"] = serde_json::Value::from(format!(
        "<script>alert(1)</script>'; DROP TABLE devices; --{}",
        "x".repeat(10_000)
    ));
    doc["header"]["location"] = serde_json::Value::from("\"quoted\" <b>");
    doc["header"]["local_time"] = serde_json::Value::from("01.02.2021 10:00:00");
    n += 1;
    expect(
        "description",
        true,
        reject_reason(
            &app,
            &mut c,
            "measurements/rs485/8",
            serde_json::to_vec(&doc).unwrap(),
            n,
        )
        .await,
    );
    let (description, location): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT description, location FROM devices WHERE slot = 8")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let description = description.unwrap();
    assert!(description.starts_with("<script>alert(1)</script>'; DROP TABLE devices; --"));
    assert!(description.chars().count() <= 256);
    assert_eq!(location.as_deref(), Some("\"quoted\" <b>"));
    // A serial number that cannot identify a device refuses the message.
    doc["header"]["serial_number"] = serde_json::Value::from("x".repeat(10_000));
    n += 1;
    expect(
        "serial",
        false,
        reject_reason(
            &app,
            &mut c,
            "measurements/rs485/9",
            serde_json::to_vec(&doc).unwrap(),
            n,
        )
        .await,
    );

    // Counters going down, messages out of order and days late: all stored (energy
    // accounting interprets them); none rejected.
    let before = app.count("SELECT count(*) FROM ingest_rejects").await;
    for (time, value) in [
        ("10.01.2026 12:15:00", "100.000 kWh"),
        ("10.01.2026 12:00:00", "99.000 kWh"),
        ("10.01.2026 12:30:00", "0.000 kWh"),
        ("01.01.2026 00:00:00", "50.000 kWh"),
    ] {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fixture("counters-rs485-2-wm3m4c.json")).unwrap();
        doc["header"]["local_time"] = serde_json::Value::from(time);
        doc["counters"]["counter1nr"] = serde_json::Value::from(value);
        c.publish(
            "sg/GW/pub/counters/rs485/10",
            serde_json::to_vec(&doc).unwrap(),
        )
        .await;
    }
    c.wait_acks(4).await;
    app.wait_count("SELECT count(*) FROM counter_readings r JOIN counters k ON k.id = r.counter_id JOIN devices d ON d.id = k.device_id WHERE d.slot = 10 AND k.name = 'counter1nr'", 4).await;
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects").await,
        before
    );

    // A payload of several megabytes: the connection is closed, the reason logged, the server
    // keeps serving this gateway after it reconnects.
    c.client
        .publish(
            "sg/GW/pub/measurements/ir",
            QoS::AtLeastOnce,
            false,
            vec![b'{'; 3 * 1024 * 1024],
        )
        .await
        .unwrap();
    assert!(c.closed().await, "oversized publish closes the connection");
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%exceeds the size limit%'",
        1,
    )
    .await;
    let mut again = app.gateway_client("GW", &password).await;
    again
        .publish(
            "sg/GW/pub/measurements/rs485/11",
            with_time("measurements-ir.json", "01.02.2021 10:00:00"),
        )
        .await;
    again.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM measurements m JOIN devices d ON d.id = m.device_id WHERE d.slot = 11", 1).await;

    // Every reject keeps its payload verbatim and is visible through the API.
    let token = app.user_token("admin@example.com", "admin", &[]).await;
    let rejects = app.get("/api/v1/ingest/rejects?limit=1000", &token).await;
    assert_eq!(rejects.status, 200);
    let rejects = rejects.json();
    let hello = rejects
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["payload"] == "hello")
        .expect("verbatim payload");
    assert!(hello["reason"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("json"));
    let metric = app.metric("headend_ingest_rejects_total").await.unwrap();
    assert!(metric >= n as f64, "rejects counted in /metrics: {metric}");
    app.stop().await;
}

/// The IR fixture with one field replaced and a distinct time per message (so each is a row).
fn with_time_value(field: &str, value: &str, minute: i64) -> Vec<u8> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&measurements_with(field, value)).unwrap();
    doc["header"]["local_time"] =
        serde_json::Value::from(format!("01.02.2021 10:{:02}:00", minute % 60));
    serde_json::to_vec(&doc).unwrap()
}
