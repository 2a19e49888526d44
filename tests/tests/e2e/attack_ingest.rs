//! Hostile ingest: one input must not stall or flood the energy accounting, and nothing is
//! dropped silently. Meter serials outside the documented character set, readings dated 1900,
//! gaps of months, a counter whose recomputation fails, conflicting replays, duplicate JSON
//! keys, text cut to fit and counters finer than a milli-unit.

use chrono::{DateTime, Duration, DurationRound, Utc};
use headend_e2e::{eventually, MqttClient, TestApp};
use serde_json::{json, Value};

const GW: &str = "SGATK1";

async fn app_with_gateway() -> (TestApp, MqttClient) {
    let app = TestApp::spawn().await;
    let password = app.gateway(GW, None, Some("UTC")).await;
    let client = app.gateway_client(GW, &password).await;
    (app, client)
}

/// `local_time` of an SG in UTC.
fn local(ts: DateTime<Utc>) -> String {
    ts.format("%d.%m.%Y %H:%M:%S").to_string()
}

/// A quarter-hour boundary a few hours ago.
fn recent() -> DateTime<Utc> {
    (Utc::now() - Duration::hours(6))
        .duration_trunc(Duration::minutes(15))
        .unwrap()
}

fn measurements(serial: &str, at: DateTime<Utc>, values: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "header": { "serial_number": serial, "local_time": local(at) },
        "measurements": values,
    }))
    .unwrap()
}

fn counters(serial: &str, at: DateTime<Utc>, values: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "header": { "serial_number": serial, "local_time": local(at) },
        "counters": values,
    }))
    .unwrap()
}

async fn publish(client: &mut MqttClient, topic: &str, payload: Vec<u8>) {
    client
        .publish(&format!("sg/{GW}/pub/{topic}"), payload)
        .await;
    client.wait_acks(1).await;
}

/// The reason and partial flag of the newest reject whose reason contains `needle`.
async fn reject(app: &TestApp, needle: &str) -> (String, bool, Vec<u8>) {
    let like = format!("%{needle}%");
    app.wait_count(
        &format!(
            "SELECT least(count(*), 1) FROM ingest_rejects WHERE reason LIKE '{}'",
            like.replace('\'', "''")
        ),
        1,
    )
    .await;
    sqlx::query_as(
        "SELECT reason, partial, payload FROM ingest_rejects WHERE reason LIKE $1
         ORDER BY id DESC LIMIT 1",
    )
    .bind(&like)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

// --- 1. Meter serials ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_serials_outside_the_character_set_are_refused_on_mqtt_and_xml() {
    let app = TestApp::spawn_with(|c| c.xml_push.addr = Some(([127, 0, 0, 1], 0).into())).await;
    let password = app.gateway(GW, None, Some("UTC")).await;
    let mut client = app.gateway_client(GW, &password).await;
    let at = recent();
    let hostile = [
        "X1<script>",
        "../../admin",
        "X1 2",
        ".hidden",
        "-rf",
        "a%2Fb",
        "A&B",
    ];
    for (n, serial) in hostile.iter().enumerate() {
        publish(
            &mut client,
            &format!("measurements/rs485/{}", n + 1),
            measurements(serial, at, json!({ "U1": "230 V" })),
        )
        .await;
    }
    publish(
        &mut client,
        "bicom/rs485/9",
        serde_json::to_vec(&json!({ "bicom": { "serial_number": "R1/..", "state": 1 } })).unwrap(),
    )
    .await;
    // A real serial is stored.
    publish(
        &mut client,
        "measurements/ir",
        measurements("18230001", at, json!({ "U1": "230 V" })),
    )
    .await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    app.wait_count(
        "SELECT count(*) FROM ingest_rejects WHERE NOT partial AND reason LIKE '%`serial_number`%'",
        hostile.len() as i64 + 1,
    )
    .await;
    let devices: Vec<String> = sqlx::query_scalar("SELECT serial FROM devices")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(devices, ["18230001"]);
    let (reason, _, _) = reject(&app, "X1<script>").await;
    assert!(
        reason.contains("A-Z, a-z, 0-9, '-', '_' or '.'"),
        "{reason}"
    );

    // XML push: the controlUnit follows the same rule; the document is refused and kept.
    let token = app.user_token("admin@example.com", "admin", &[]).await;
    let refused = app
        .request(
            "PUT",
            &format!("/api/v1/gateways/{GW}/xml-push"),
            Some(&token),
            Some(json!({ "sources": ["127.0.0.1"], "meters": ["X1<b>"] })),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let registered = app
        .request(
            "PUT",
            &format!("/api/v1/gateways/{GW}/xml-push"),
            Some(&token),
            Some(json!({ "sources": ["127.0.0.1"], "meters": ["X0000124"] })),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let document = format!(
        "<data logId=\"9\" controlUnit=\"X1&lt;b&gt;\" deviceType=\"IE38\" part=\"1\">\
         <measurement dateTime=\"{}\" tInterval=\"PT15M\">\
         <value ident=\"E1nr\" unit=\"Wh\">5e+0</value></measurement></data>\n\r",
        at.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let mut stream = tokio::net::TcpStream::connect(app.xml_push.expect("XML push"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(document.as_bytes()).await.unwrap();
    let mut ack = Vec::new();
    let mut buf = [0u8; 256];
    while !ack.ends_with(b"\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("ack in time")
            .unwrap();
        assert!(n > 0, "closed without an ack");
        ack.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&ack).contains("status=\"rejected\""),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    let (reason, partial, payload) = reject(&app, "controlUnit").await;
    assert!(reason.contains("A-Z, a-z, 0-9"), "{reason}");
    assert!(!partial);
    assert!(
        String::from_utf8_lossy(&payload).contains("controlUnit=\"X1&lt;b&gt;\""),
        "the document is kept verbatim"
    );
    assert_eq!(app.count("SELECT count(*) FROM counter_readings").await, 0);
}

// --- 2. What one reading can cause ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_dated_1900_is_kept_out_of_the_accounting_and_said_so() {
    let (app, mut client) = app_with_gateway().await;
    let at = recent();
    publish(
        &mut client,
        "counters/ir",
        counters("M1", at, json!({ "counter1nr": "100.000 kWh" })),
    )
    .await;
    publish(
        &mut client,
        "counters/ir",
        counters(
            "M1",
            at + Duration::minutes(30),
            json!({ "counter1nr": "101.000 kWh" }),
        ),
    )
    .await;
    let old: DateTime<Utc> = "1900-01-01T00:00:00Z".parse().unwrap();
    publish(
        &mut client,
        "counters/ir",
        counters("M1", old, json!({ "counter1nr": "1.000 kWh" })),
    )
    .await;
    app.wait_count("SELECT count(*) FROM counter_readings", 3)
        .await;
    // Kept (it is what the meter said), flagged, and the message has a partial reject.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM counter_readings WHERE flags & 8 <> 0 AND ts < '1901-01-01'"
        )
        .await,
        1
    );
    let (reason, partial, _) = reject(&app, "backlog_horizon_days").await;
    assert!(partial, "the reading itself is stored");
    assert!(reason.contains("1900-01-01T00:00:00Z"), "{reason}");
    // The accounting is the two real readings' two quarter-hours, nothing from 1900.
    app.wait_count("SELECT count(*) FROM energy_intervals", 2)
        .await;
    let done = eventually(std::time::Duration::from_secs(30), || async {
        (app.count("SELECT count(*) FROM energy_dirty").await == 0).then_some(())
    })
    .await;
    assert!(done.is_some(), "the worker drained its queue");
    assert_eq!(
        app.count("SELECT count(*) FROM energy_intervals WHERE start < now() - interval '30 days'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM energy_days WHERE day < '2000-01-01'")
            .await,
        0
    );
    let total: i64 = sqlx::query_scalar("SELECT sum(energy_milli)::int8 FROM energy_intervals")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, 1_000_000);
    assert_eq!(app.count("SELECT count(*) FROM energy_quarantine").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interval_is_made_up_across_a_gap_longer_than_the_maximum() {
    let (app, mut client) = app_with_gateway().await;
    let late = recent();
    let early = late - Duration::days(40);
    for (at, value) in [
        (early, "10.000 kWh"),
        (early + Duration::minutes(15), "10.500 kWh"),
        (late, "90.000 kWh"),
        (late + Duration::minutes(15), "90.250 kWh"),
    ] {
        publish(
            &mut client,
            "counters/ir",
            counters("GAP1", at, json!({ "counter1nr": value })),
        )
        .await;
    }
    app.wait_count("SELECT count(*) FROM counter_readings", 4)
        .await;
    // One quarter-hour each side of the gap; the 40 days (3 840 quarter-hours) are missing.
    app.wait_count("SELECT count(*) FROM energy_intervals", 2)
        .await;
    let done = eventually(std::time::Duration::from_secs(30), || async {
        (app.count("SELECT count(*) FROM energy_dirty").await == 0).then_some(())
    })
    .await;
    assert!(done.is_some());
    let rows: Vec<(DateTime<Utc>, i64)> =
        sqlx::query_as("SELECT start, energy_milli FROM energy_intervals ORDER BY start")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, [(early, 500_000), (late, 250_000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_fails_alone_is_quarantined_and_the_others_go_on() {
    let (app, mut client) = app_with_gateway().await;
    // Fault injection: any interval of meter BAD1 makes the insert fail.
    sqlx::query(
        "CREATE FUNCTION fail_bad1() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM counters c JOIN devices d ON d.id = c.device_id
                        WHERE c.id = NEW.counter_id AND d.serial = 'BAD1') THEN
                 RAISE EXCEPTION 'injected failure for BAD1';
             END IF;
             RETURN NEW;
         END $$",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_bad1 BEFORE INSERT ON energy_intervals
         FOR EACH ROW EXECUTE FUNCTION fail_bad1()",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let at = recent();
    for (serial, topic) in [("BAD1", "counters/rs485/1"), ("GOOD1", "counters/rs485/2")] {
        for (k, value) in ["1.000 kWh", "2.000 kWh"].iter().enumerate() {
            publish(
                &mut client,
                topic,
                counters(
                    serial,
                    at + Duration::minutes(15 * k as i64),
                    json!({ "counter1nr": value }),
                ),
            )
            .await;
        }
    }
    app.wait_count("SELECT count(*) FROM energy_quarantine WHERE active", 1)
        .await;
    // The other meter's accounting went on.
    app.wait_count(
        "SELECT count(*) FROM energy_intervals e JOIN counters c ON c.id = e.counter_id
         JOIN devices d ON d.id = c.device_id WHERE d.serial = 'GOOD1'",
        1,
    )
    .await;
    let (serial, reason, attempts): (String, String, i32) = sqlx::query_as(
        "SELECT d.serial, q.reason, q.attempts FROM energy_quarantine q
         JOIN counters c ON c.id = q.counter_id JOIN devices d ON d.id = c.device_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(serial, "BAD1");
    assert!(reason.contains("injected failure"), "{reason}");
    assert_eq!(attempts, 1);
    assert_eq!(
        app.metric("headend_profile_counters_quarantined_total")
            .await,
        Some(1.0)
    );
    // Its queued work is kept, merged, and does not block anything.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM energy_dirty e JOIN energy_quarantine q USING (counter_id)"
        )
        .await,
        1
    );
    // New readings of the quarantined counter are stored and queued, not retried.
    publish(
        &mut client,
        "counters/rs485/1",
        counters(
            "BAD1",
            at + Duration::minutes(30),
            json!({ "counter1nr": "3.000 kWh" }),
        ),
    )
    .await;
    publish(
        &mut client,
        "counters/rs485/2",
        counters(
            "GOOD1",
            at + Duration::minutes(30),
            json!({ "counter1nr": "3.000 kWh" }),
        ),
    )
    .await;
    app.wait_count(
        "SELECT count(*) FROM energy_intervals e JOIN counters c ON c.id = e.counter_id
         JOIN devices d ON d.id = c.device_id WHERE d.serial = 'GOOD1'",
        2,
    )
    .await;
    assert_eq!(
        app.metric("headend_profile_counters_quarantined_total")
            .await,
        Some(1.0),
        "quarantined once, logged once"
    );

    // Visible to admins, not to others.
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let viewer = app.user_token("viewer@example.com", "viewer", &[]).await;
    assert_eq!(
        app.get("/api/v1/energy/quarantine", &viewer).await.status,
        403
    );
    let list = app.get("/api/v1/energy/quarantine", &admin).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    assert_eq!(list[0]["device_serial"], "BAD1");
    assert_eq!(list[0]["active"], true);
    let counter_id = list[0]["counter_id"].as_i64().unwrap();

    // Fixed, then retried by an admin: recomputed from everything queued.
    sqlx::query("DROP TRIGGER fail_bad1 ON energy_intervals")
        .execute(&app.pool)
        .await
        .unwrap();
    let retry = format!("/api/v1/energy/quarantine/{counter_id}/retry");
    assert_eq!(
        app.request("POST", &retry, Some(&viewer), None)
            .await
            .status,
        403
    );
    assert_eq!(
        app.request("POST", &retry, Some(&admin), None).await.status,
        204
    );
    app.wait_count(
        &format!("SELECT count(*) FROM energy_intervals WHERE counter_id = {counter_id}"),
        2,
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM energy_quarantine WHERE active")
            .await,
        0
    );
    assert_eq!(
        app.request("POST", &retry, Some(&admin), None).await.status,
        404,
        "not in quarantine any more"
    );
}

// --- 3. Conflicting replays ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_replay_is_a_reject_and_an_identical_one_is_silent() {
    let (app, mut client) = app_with_gateway().await;
    let at = recent();
    let first = measurements("M1", at, json!({ "U1": "111 V", "I1": "1 A" }));
    let second = measurements("M1", at, json!({ "U1": "222 V", "I1": "1 A" }));
    publish(&mut client, "measurements/ir", first.clone()).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    publish(&mut client, "measurements/ir", first.clone()).await;
    publish(&mut client, "measurements/ir", second.clone()).await;
    let (reason, partial, payload) = reject(&app, "conflicting replay").await;
    assert!(reason.contains("u1 stored 111, here 222"), "{reason}");
    assert!(!reason.contains("i1"), "only what differs: {reason}");
    assert!(!partial);
    assert_eq!(payload, second);
    let u1: f32 = sqlx::query_scalar("SELECT u1 FROM measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(u1, 111.0, "the first value stays");

    // Counters: a different value at the same time; the identical one is silent.
    let c1 = counters(
        "M1",
        at,
        json!({ "counter1nr": "5.000 kWh", "counter2nr": "1 Wh" }),
    );
    let c2 = counters(
        "M1",
        at,
        json!({ "counter1nr": "6.000 kWh", "counter2nr": "1 Wh" }),
    );
    publish(&mut client, "counters/ir", c1.clone()).await;
    publish(&mut client, "counters/ir", c1.clone()).await;
    publish(&mut client, "counters/ir", c2.clone()).await;
    let (reason, partial, payload) = reject(&app, "counter counter1nr").await;
    assert!(
        reason.contains("stored as 5000000 milli-units, here 6000000"),
        "{reason}"
    );
    assert!(partial, "counter2nr was the same");
    assert_eq!(payload, c2);

    // Relay states: the SG's time has whole seconds, so another state for the same second
    // reported right after is a switch within that second: the relay's state is the last one
    // reported (a conflicting relay replay, received long after, is in the next test).
    let bicom = |state: i8| {
        serde_json::to_vec(&json!({ "bicom": {
            "serial_number": "R1", "local_time": local(at), "state": state } }))
        .unwrap()
    };
    publish(&mut client, "bicom/ir", bicom(1)).await;
    app.wait_count("SELECT count(*) FROM relay_states WHERE state = 1", 1)
        .await;
    publish(&mut client, "bicom/ir", bicom(1)).await;
    publish(&mut client, "bicom/ir", bicom(0)).await;
    app.wait_count("SELECT count(*) FROM relay_states WHERE state = 0", 1)
        .await;
    assert_eq!(app.count("SELECT count(*) FROM relay_states").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects").await,
        2,
        "identical replays and a switch within the second made no reject"
    );
}

/// The journal replays a batch after a crash: writing the same rows again changes nothing and
/// creates no reject; rows that differ do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_replay_creates_no_reject() {
    use headend::ingest::normalize::{Directory, GatewayInfo, Normalizer, Rows};
    use headend::ingest::record::{IngestRecord, RecordKind};
    use headend::ingest::writer;
    let app = TestApp::spawn().await;
    app.gateway(GW, None, Some("UTC")).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE serial = $1")
        .bind(GW)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let directory = Directory::new([GatewayInfo {
        id,
        serial: GW.into(),
        layout: sg_wire::topic::TopicLayout::default_for(GW).unwrap(),
        zone: chrono_tz::UTC,
    }]);
    let normalizer = Normalizer {
        directory: &directory,
        clock_tolerance: Duration::seconds(300),
        backlog_horizon: Duration::days(400),
    };
    let at = recent();
    let record = |topic: &str, payload: Vec<u8>, received_at: DateTime<Utc>| IngestRecord {
        kind: RecordKind::Publish,
        received_at,
        source: "mqtt".into(),
        client: GW.into(),
        topic: format!("sg/{GW}/pub/{topic}"),
        payload: payload.into(),
        reason: String::new(),
    };
    let batch_at = |at: DateTime<Utc>, u1: &str, kwh: &str, state: i8, received_at| {
        let mut rows = Rows::default();
        for (seq, r) in [
            record(
                "measurements/ir",
                measurements("M1", at, json!({ "U1": u1 })),
                received_at,
            ),
            record(
                "counters/ir",
                counters("M1", at, json!({ "counter1nr": kwh })),
                received_at,
            ),
            record(
                "bicom/ir",
                serde_json::to_vec(&json!({ "bicom": {
                    "serial_number": "R1", "local_time": local(at), "state": state } }))
                .unwrap(),
                received_at,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            normalizer.push(&mut rows, seq as i64 + 1, r);
        }
        rows
    };
    let batch = |u1: &str, kwh: &str, state: i8, received_at: DateTime<Utc>| {
        batch_at(at, u1, kwh, state, received_at)
    };
    let first = at + Duration::seconds(5);
    // A gateway replaying other values for the same instants an hour later.
    let later = first + Duration::hours(1);
    let cache = writer::IdCache::default();
    let rows = batch("230 V", "1.000 kWh", 1, first);
    assert!(rows.rejects.is_empty(), "{:?}", rows.rejects);
    let written = writer::write(&app.pool, &cache, 77, &rows, async {})
        .await
        .unwrap()
        .expect("no turn to wait for");
    assert_eq!(
        (
            written.measurements,
            written.counter_readings,
            written.relay_states
        ),
        (1, 1, 1)
    );
    // Replayed twice (a fresh cache too, as after a restart): nothing new, no reject.
    for cache in [cache, writer::IdCache::default()] {
        let again = writer::write(
            &app.pool,
            &cache,
            77,
            &batch("230 V", "1.000 kWh", 1, first),
            async {},
        )
        .await
        .unwrap()
        .expect("no turn to wait for");
        assert_eq!(
            (
                again.measurements,
                again.counter_readings,
                again.relay_states,
                again.rejects
            ),
            (0, 0, 0, 0)
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);
    // The same journal positions with other values (another epoch): three rejects.
    let cache = writer::IdCache::default();
    let other = writer::write(
        &app.pool,
        &cache,
        78,
        &batch("231 V", "2.000 kWh", 0, later),
        async {},
    )
    .await
    .unwrap()
    .expect("no turn to wait for");
    assert_eq!(other.rejects, 3);
    // ... and replaying that batch again adds none.
    let replay = writer::write(
        &app.pool,
        &cache,
        78,
        &batch("231 V", "2.000 kWh", 0, later),
        async {},
    )
    .await
    .unwrap()
    .expect("no turn to wait for");
    assert_eq!(replay.rejects, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'conflicting replay%'")
            .await,
        3
    );

    // Batches commit in journal order, so a later batch holds its finished transaction open
    // until its turn. An earlier batch that needs one of its rows (the same message redelivered
    // into both) would wait on it for ever: the later one gives way instead, writing nothing,
    // the earlier commits, and the later is written again in turn.
    let next = at + Duration::minutes(1);
    let rows = || batch_at(next, "232 V", "3.000 kWh", 1, later);
    let (_never, not_yet) = tokio::sync::oneshot::channel::<()>();
    // Its devices and counters are known (a batch that registers some takes its turn before it
    // writes anything), so it writes first and then waits.
    let known = cache;
    let waiting = tokio::spawn({
        let (pool, rows) = (app.pool.clone(), rows());
        async move {
            let cache = known;
            let turn = async move {
                let _ = not_yet.await;
            };
            writer::write(&pool, &cache, 79, &rows, turn).await.unwrap()
        }
    });
    let idle_in_transaction = eventually(std::time::Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'idle in transaction'
               AND backend_xid IS NOT NULL",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    assert!(
        idle_in_transaction.is_some(),
        "the later batch never finished its inserts"
    );
    let earlier = writer::write(&app.pool, &writer::IdCache::default(), 79, &rows(), async {
    })
    .await
    .unwrap()
    .expect("the earlier batch's turn had come");
    assert_eq!(
        (
            earlier.measurements,
            earlier.counter_readings,
            earlier.relay_states
        ),
        (1, 1, 1)
    );
    assert!(waiting.await.unwrap().is_none(), "the later batch gave way");
    let again = writer::write(&app.pool, &writer::IdCache::default(), 79, &rows(), async {
    })
    .await
    .unwrap()
    .expect("in turn");
    assert_eq!(
        (again.measurements, again.counter_readings, again.rejects),
        (0, 0, 0)
    );
}

// --- 4. Duplicate JSON keys ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_key_given_twice_with_different_values_is_refused() {
    let (app, mut client) = app_with_gateway().await;
    let at = local(recent());
    let twice = format!(
        r#"{{"header":{{"serial_number":"M1","local_time":"{at}"}},"measurements":{{"U1":"111 V","U1":"222 V"}}}}"#
    );
    publish(&mut client, "measurements/ir", twice.clone().into_bytes()).await;
    let (reason, partial, payload) = reject(&app, "duplicate key").await;
    assert!(
        reason.contains("\"U1\" with different values (\"111 V\" and \"222 V\")"),
        "{reason}"
    );
    assert!(!partial);
    assert_eq!(payload, twice.as_bytes());
    // The same value twice says one thing.
    let same = format!(
        r#"{{"header":{{"serial_number":"M1","local_time":"{at}"}},"measurements":{{"U1":"111 V","U1":"111 V"}}}}"#
    );
    publish(&mut client, "measurements/ir", same.into_bytes()).await;
    app.wait_count("SELECT count(*) FROM measurements", 1).await;
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 1);
}

// --- 5. Text cut to fit --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_cut_to_fit_is_stored_cut_and_recorded_with_the_original() {
    let (app, mut client) = app_with_gateway().await;
    let line = "é".repeat(6_000);
    publish(&mut client, "log", line.clone().into_bytes()).await;
    let (reason, partial, payload) = reject(&app, "log line: cut from 12000 to 8192 bytes").await;
    assert!(partial, "{reason}");
    assert_eq!(payload, line.as_bytes(), "the original is kept");
    let body: String = sqlx::query_scalar("SELECT body FROM gateway_events WHERE kind = 'log'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(body.len(), 8192);
    assert!(line.starts_with(&body));

    let hello = serde_json::to_vec(&json!({
        "hello": "hello world", "serial number": GW, "model_type": "M".repeat(100), "sw_ver": "1.0"
    }))
    .unwrap();
    publish(&mut client, "status", hello.clone()).await;
    let (reason, partial, payload) = reject(&app, "hello model_type: cut from 100 to 64").await;
    assert!(partial, "{reason}");
    assert_eq!(payload, hello);
    let model: Option<String> = sqlx::query_scalar("SELECT model FROM gateways")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(model, Some("M".repeat(64)));
}

// --- 6. Counters finer than a milli-unit ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_finer_than_a_milli_unit_is_refused_and_kept() {
    let (app, mut client) = app_with_gateway().await;
    let doc = counters(
        "M1",
        recent(),
        json!({ "counter1nr": "12.5001 Wh", "counter2nr": "12.500 Wh" }),
    );
    publish(&mut client, "counters/ir", doc.clone()).await;
    let (reason, partial, payload) = reject(&app, "not representable exactly").await;
    assert!(reason.contains("counter1nr = \"12.5001 Wh\""), "{reason}");
    assert!(partial);
    assert_eq!(payload, doc);
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.name, r.value_milli FROM counter_readings r JOIN counters c ON c.id = r.counter_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, [("counter2nr".to_owned(), 12_500)]);
}
