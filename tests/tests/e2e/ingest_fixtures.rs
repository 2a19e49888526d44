//! Every SG fixture published by a real MQTT client through the embedded broker ends up in
//! PostgreSQL with the right values, and reads back through the API.

use headend_e2e::{fixture, TestApp};

const GW: &str = "SG000017";

async fn publish_all(app: &TestApp, password: &str) -> headend_e2e::MqttClient {
    let mut client = app.gateway_client(GW, password).await;
    let base = format!("sg/{GW}/pub");
    let messages = [
        ("status", "status-hello.json"),
        ("measurements/ir", "measurements-ir.json"),
        ("counters/ir", "counters-ir-manual.json"),
        (
            "measurements/rs485/1",
            "measurements-rs485-1-single-phase.json",
        ),
        ("measurements/rs485/2", "measurements-rs485-manual.json"),
        ("counters/rs485/2", "counters-rs485-2-wm3m4c.json"),
        ("bicom/ir", "bicom-ir.json"),
        ("bicom/rs485/2", "bicom-rs485-2.json"),
    ];
    for (topic, file) in messages {
        client
            .publish(&format!("{base}/{topic}"), fixture(file))
            .await;
    }
    client
        .publish(
            &format!("{base}/error"),
            "Error: RS485 device:2 Energy meter not responding. Addr:12",
        )
        .await;
    client
        .publish(&format!("{base}/log"), "Push link 1 connected")
        .await;
    client.wait_acks(10).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_stored_in_si_units_and_readable() {
    let app = TestApp::spawn().await;
    let site = app.site("Ljubljana plant", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let client = publish_all(&app, &password).await;
    app.wait_count("SELECT count(*) FROM measurements", 3).await;
    app.wait_count("SELECT count(*) FROM relay_states", 2).await;
    app.wait_count("SELECT count(*) FROM gateway_events", 4)
        .await;

    // Devices created from the headers, by slot.
    let devices: Vec<(String, String, i16, String, Option<String>)> = sqlx::query_as(
        "SELECT kind, port, slot, serial, model FROM devices ORDER BY kind, port, slot",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected = [
        ("meter", "ir", 0, "X0000124", "IE38MD"),
        ("meter", "rs485", 1, "21450077", "WM1-6"),
        ("meter", "rs485", 2, "18230001", "WM3M4C"),
        ("relay", "ir", 0, "", "IR Bicom"),
        ("relay", "rs485", 2, "19870012", "Bicom"),
    ];
    assert_eq!(devices.len(), expected.len(), "{devices:?}");
    for (got, want) in devices.iter().zip(expected) {
        assert_eq!(
            (
                got.0.as_str(),
                got.1.as_str(),
                got.2,
                got.3.as_str(),
                got.4.as_deref()
            ),
            (want.0, want.1, want.2, want.3, Some(want.4))
        );
    }
    // The IR meter's counters document names no location: the one from its measurements stays.
    let (location, description): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT location, description FROM devices WHERE serial = 'X0000124'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(location.as_deref(), Some("Panel B, floor 2"));
    assert_eq!(description.as_deref(), Some("Main incomer"));

    // Measurements, SI units: U1 = 220.5 V, P0 "6.5 W"; IR P0 "2.815 kW" = 2815 W.
    let (u1, p, freq, pf, thd): (f32, f32, f32, f32, f32) = sqlx::query_as(
        "SELECT m.u1, m.p, m.frequency, m.pf, m.thd_i3 FROM measurements m
         JOIN devices d ON d.id = m.device_id WHERE d.serial = '18230001'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((u1, p, freq, thd), (220.5, 6.5, 50.01, 74.02));
    assert_eq!(pf, -0.2124, "capacitive power factor is negative");
    let (p_ir, pf2, q, ts): (f32, f32, f32, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT m.p, m.pf2, m.q, m.ts FROM measurements m
         JOIN devices d ON d.id = m.device_id WHERE d.serial = 'X0000124'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((p_ir, pf2, q), (2815.0, -0.8984, -312.4));
    // 14.04.2020 17:45:30 in Ljubljana (CEST) is 15:45:30 UTC: old timestamps keep their time.
    assert_eq!(ts.to_rfc3339(), "2020-04-14T15:45:30+00:00");

    // Single-phase meter: phase 1 only, the rest absent (NULL), not zero.
    let (u1, u2, i3): (Option<f32>, Option<f32>, Option<f32>) = sqlx::query_as(
        "SELECT m.u1, m.u2, m.i3 FROM measurements m JOIN devices d ON d.id = m.device_id
         WHERE d.serial = '21450077'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((u1, u2, i3), (Some(231.0), None, None));

    // Counters, exact: 184233.125 kWh = 184 233 125 Wh; "12.500  Wh".
    let counters: Vec<(String, bool, String, Option<String>, Vec<i16>, i64)> = sqlx::query_as(
        "SELECT c.name, c.resettable, c.unit, c.phase, c.tariffs, r.value_milli
         FROM counters c JOIN counter_readings r ON r.counter_id = c.id
         JOIN devices d ON d.id = c.device_id WHERE d.serial = '18230001' ORDER BY c.name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        counters,
        vec![
            (
                "counter1nr".into(),
                false,
                "Wh".into(),
                Some("Total".into()),
                vec![1, 2, 3, 4],
                184_233_125_000
            ),
            (
                "counter2nr".into(),
                false,
                "Wh".into(),
                Some("Total".into()),
                vec![1, 2, 3, 4],
                12_500
            ),
        ]
    );
    // The IE38MD's unconfigured counters ("0.00 k") are refused; the other 16 are kept.
    let ir_counters = app
        .count(
            "SELECT count(*) FROM counters c JOIN devices d ON d.id = c.device_id
             WHERE d.serial = 'X0000124'",
        )
        .await;
    assert_eq!(ir_counters, 16);
    let partial = app
        .count("SELECT count(*) FROM ingest_rejects WHERE partial AND topic LIKE '%counters/ir'")
        .await;
    assert_eq!(partial, 1, "the refused counters are logged with a reason");

    // Relay states and the hello.
    let states: Vec<(String, i16)> = sqlx::query_as(
        "SELECT d.port, r.state FROM relay_states r JOIN devices d ON d.id = r.device_id ORDER BY d.port",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(states, vec![("ir".into(), 1), ("rs485".into(), 0)]);
    let (online, model, fw, hw): (bool, Option<String>, Option<String>, Option<String>) =
        sqlx::query_as("SELECT online, model, firmware_version, hardware_version FROM gateways")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (online, model.as_deref(), fw.as_deref(), hw.as_deref()),
        (true, Some("SG-W1"), Some("0.51"), Some("2"))
    );
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM gateway_events ORDER BY kind")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(kinds, vec!["connect", "error", "hello", "log"]);

    // Closing the session makes the gateway offline.
    drop(client);
    app.wait_count("SELECT count(*) FROM gateways WHERE NOT online", 1)
        .await;
    app.wait_count(
        "SELECT count(*) FROM gateway_events WHERE kind = 'disconnect'",
        1,
    )
    .await;

    // The API reads the same values back.
    let token = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;
    let latest = app.get("/api/v1/devices/18230001/latest", &token).await;
    assert_eq!(latest.status, 200, "{}", latest.body);
    let latest = latest.json();
    assert_eq!(latest["values"]["u1"], 220.5);
    assert_eq!(latest["units"]["u1"], "V");
    assert_eq!(latest["values"]["p"], 6.5);
    let counters = app
        .get("/api/v1/devices/18230001/counters", &token)
        .await
        .json();
    assert_eq!(counters["counters"][0]["name"], "counter1nr");
    assert_eq!(counters["counters"][0]["value"], "184233125");
    assert_eq!(counters["counters"][0]["unit"], "Wh");
    let gateways = app.get("/api/v1/gateways", &token).await.json();
    assert_eq!(gateways[0]["serial"], GW);
    assert_eq!(gateways[0]["firmware_version"], "0.51");
    let devices = app.get("/api/v1/devices", &token).await.json();
    assert_eq!(devices.as_array().unwrap().len(), 5);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_messages_are_stored_once() {
    let app = TestApp::spawn().await;
    let password = app.gateway(GW, None, Some("Europe/Ljubljana")).await;
    let mut client = app.gateway_client(GW, &password).await;
    let topic = format!("sg/{GW}/pub/measurements/ir");
    let counters = format!("sg/{GW}/pub/counters/rs485/2");
    for _ in 0..3 {
        client
            .publish(&topic, fixture("measurements-ir.json"))
            .await;
        client
            .publish(&counters, fixture("counters-rs485-2-wm3m4c.json"))
            .await;
    }
    client.wait_acks(6).await;
    app.wait_count("SELECT count(*) FROM counters", 2).await;
    // All six (and the session's connect event) were journaled and committed; the natural
    // keys keep one of each.
    app.wait_journal_committed(7).await;
    assert_eq!(app.count("SELECT count(*) FROM measurements").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM counter_readings").await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_readings_are_confirmed_once_committed() {
    let app = TestApp::spawn().await;
    let password = app.gateway(GW, None, None).await;
    let mut client = app.gateway_client(GW, &password).await;
    client
        .client
        .subscribe(format!("sg/{GW}/sub"), rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    client
        .wait_for(|p| matches!(p, rumqttc::Packet::SubAck(_)))
        .await
        .expect("suback");
    for seq in [41u64, 42] {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fixture("measurements-ir.json")).unwrap();
        doc["header"]["seq"] = serde_json::Value::from(seq);
        doc["header"]["local_time"] = serde_json::Value::from(format!("14.04.2020 17:45:{seq}"));
        client
            .publish(
                &format!("sg/{GW}/pub/measurements/ir"),
                serde_json::to_vec(&doc).unwrap(),
            )
            .await;
    }
    // A real SG's reading (no seq) is stored and confirms nothing.
    client
        .publish(
            &format!("sg/{GW}/pub/counters/ir"),
            fixture("counters-ir-manual.json"),
        )
        .await;
    let mut confirmed = 0;
    while confirmed < 42 {
        let Some(rumqttc::Packet::Publish(p)) = client
            .wait_for(|p| matches!(p, rumqttc::Packet::Publish(_)))
            .await
        else {
            panic!("no receipt (confirmed so far: {confirmed})");
        };
        assert_eq!(p.topic, format!("sg/{GW}/sub"));
        let command = sg_wire::command::Command::parse(&p.payload).unwrap();
        let sg_wire::command::Command::Ack { seq } = command else {
            panic!("unexpected command {command:?}");
        };
        assert!(seq >= confirmed, "receipts never go backwards");
        confirmed = seq;
        // Confirmed means committed.
        let stored = app.count("SELECT count(*) FROM measurements").await;
        assert!(
            stored >= if seq >= 42 { 2 } else { 1 },
            "ack {seq} before commit ({stored} rows)"
        );
    }
    app.stop().await;
}
