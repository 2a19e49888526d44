//! No reading without its device or counter, now that the readings tables check their parents
//! once per statement (migration `20261207000012_readings_parent_checks.sql`) instead of through
//! foreign keys: an insert naming a missing parent fails, a delete removes the readings, a
//! delete racing a batch in either order leaves no orphan, and ingest goes on after its device
//! was deleted under it.

use std::time::Duration;

use headend_e2e::{eventually, fixture, MqttClient, TestApp};
use sqlx::{Connection, PgConnection, PgPool};

const ORPHANS: &str = "SELECT (SELECT count(*) FROM measurements m
                        WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = m.device_id))
                     + (SELECT count(*) FROM counter_readings r
                        WHERE NOT EXISTS (SELECT 1 FROM counters c WHERE c.id = r.counter_id))
                     + (SELECT count(*) FROM energy_intervals e
                        WHERE NOT EXISTS (SELECT 1 FROM counters c WHERE c.id = e.counter_id))";

/// A meter with one counter on gateway `serial`, made by SQL: (device id, counter id).
async fn meter(app: &TestApp, serial: &str, slot: i16) -> (i64, i64) {
    let gateway: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE serial = $1")
        .bind(serial)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot) VALUES ($1, 'meter', 'rs485', $2)
         RETURNING id",
    )
    .bind(gateway)
    .bind(slot)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let counter: i64 = sqlx::query_scalar(
        "INSERT INTO counters (device_id, name, idx, resettable, unit)
         VALUES ($1, 'counter1', 1, false, 'Wh') RETURNING id",
    )
    .bind(device)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (device, counter)
}

/// `n` measurements of `device` (seconds `from..from + n` of 2026), as the writer inserts them.
const INSERT_MEASUREMENTS: &str = "INSERT INTO measurements (device_id, ts, received_at, u1)
     SELECT $1, '2026-01-01T00:00:00Z'::timestamptz + make_interval(secs => s), now(), 230
     FROM generate_series($2::int, $2::int + $3::int - 1) s
     ON CONFLICT (device_id, ts) DO NOTHING";

async fn insert_measurements(
    conn: &mut PgConnection,
    device: i64,
    from: i32,
    n: i32,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(INSERT_MEASUREMENTS)
        .bind(device)
        .bind(from)
        .bind(n)
        .execute(conn)
        .await?
        .rows_affected())
}

fn is_parent_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "23503")
}

async fn connect(app: &TestApp) -> PgConnection {
    PgConnection::connect(&app.database_url()).await.unwrap()
}

async fn orphans(pool: &PgPool) -> i64 {
    sqlx::query_scalar(ORPHANS).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_needs_its_device_or_counter() {
    let app = TestApp::spawn().await;
    app.gateway("SGI1", None, None).await;
    let (device, counter) = meter(&app, "SGI1", 1).await;
    let mut conn = connect(&app).await;
    let missing = device.max(counter) + 1000;
    let refused = insert_measurements(&mut conn, missing, 0, 1)
        .await
        .expect_err("a measurement of a missing device");
    assert!(is_parent_violation(&refused), "{refused}");
    for sql in [
        "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
         VALUES ($1, now(), 1, now())",
        "INSERT INTO energy_intervals (counter_id, start, energy_milli, quality)
         VALUES ($1, '2026-01-01T00:00:00Z', 1, 0)",
    ] {
        let e = sqlx::query(sql)
            .bind(missing)
            .execute(&mut conn)
            .await
            .expect_err(sql);
        assert!(is_parent_violation(&e), "{sql}: {e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
    // A statement with one missing parent among good ones stores nothing.
    let mixed = sqlx::query(
        "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
         VALUES ($1, now(), 1, now()), ($2, now(), 1, now())",
    )
    .bind(counter)
    .bind(missing)
    .execute(&mut conn)
    .await;
    assert!(is_parent_violation(&mixed.expect_err("mixed")));
    assert_eq!(
        insert_measurements(&mut conn, device, 0, 10).await.unwrap(),
        10
    );
    assert_eq!(
        app.count("SELECT count(*) FROM counter_readings").await,
        0,
        "nothing of the failed statements"
    );
    // The foreign keys are gone: the checks above are the triggers'.
    let fkeys = app
        .count(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'
             AND conrelid IN ('measurements'::regclass, 'counter_readings'::regclass,
                              'energy_intervals'::regclass)",
        )
        .await;
    assert_eq!(fkeys, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_device_counter_or_gateway_deletes_its_readings() {
    let app = TestApp::spawn().await;
    app.gateway("SGI2", None, None).await;
    let (device, counter) = meter(&app, "SGI2", 1).await;
    let (other, other_counter) = meter(&app, "SGI2", 2).await;
    let mut conn = connect(&app).await;
    for d in [device, other] {
        insert_measurements(&mut conn, d, 0, 5).await.unwrap();
    }
    for c in [counter, other_counter] {
        sqlx::query(
            "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
             SELECT $1, '2026-01-01T00:00:00Z'::timestamptz + make_interval(mins => s), s, now()
             FROM generate_series(0, 4) s;
             ",
        )
        .bind(c)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO energy_intervals (counter_id, start, energy_milli, quality)
             VALUES ($1, '2026-01-01T00:00:00Z', 5, 0)",
        )
        .bind(c)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // The counter alone: its readings and intervals go, the device's measurements stay.
    sqlx::query("DELETE FROM counters WHERE id = $1")
        .bind(counter)
        .execute(&mut conn)
        .await
        .unwrap();
    let left = |sql: &'static str, id: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    const READINGS: &str = "SELECT count(*) FROM counter_readings WHERE counter_id = $1";
    const INTERVALS: &str = "SELECT count(*) FROM energy_intervals WHERE counter_id = $1";
    const MEASUREMENTS: &str = "SELECT count(*) FROM measurements WHERE device_id = $1";
    assert_eq!(left(READINGS, counter).await, 0);
    assert_eq!(left(INTERVALS, counter).await, 0);
    assert_eq!(left(MEASUREMENTS, device).await, 5);
    // The device: its measurements go.
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(device)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(left(MEASUREMENTS, device).await, 0);
    // The gateway: through devices and counters (foreign-key cascades), down to the readings.
    assert_eq!(left(READINGS, other_counter).await, 5);
    sqlx::query("DELETE FROM gateways WHERE serial = 'SGI2'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(left(MEASUREMENTS, other).await, 0);
    assert_eq!(left(READINGS, other_counter).await, 0);
    assert_eq!(left(INTERVALS, other_counter).await, 0);
    assert_eq!(orphans(&app.pool).await, 0);
    // Outside READ COMMITTED the cascade could miss rows committed meanwhile: refused.
    app.gateway("SGI3", None, None).await;
    let (device, _) = meter(&app, "SGI3", 1).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let refused = sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(device)
        .execute(&mut *tx)
        .await
        .expect_err("a delete under REPEATABLE READ");
    assert!(refused.to_string().contains("READ COMMITTED"), "{refused}");
    tx.rollback().await.unwrap();
    app.stop().await;
}

/// How long a statement that should be waiting on a lock is given to (wrongly) finish.
/// Waits until a session of this test's database waits on a row lock (the other side of a race
/// is held where the test wants it), instead of sleeping and hoping.
async fn wait_for_lock_wait(app: &TestApp) {
    let waiting = eventually(Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "no session ever waited on the other's lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_batch_leaves_no_orphan_in_either_order() {
    let app = TestApp::spawn().await;
    app.gateway("SGI4", None, None).await;

    // The batch first: the delete waits for its commit, then deletes its rows too.
    let (device, _) = meter(&app, "SGI4", 1).await;
    let mut writer = connect(&app).await;
    let mut batch = writer.begin().await.unwrap();
    assert_eq!(
        insert_measurements(&mut batch, device, 0, 100)
            .await
            .unwrap(),
        100
    );
    let url = app.database_url();
    let delete = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(device)
            .execute(&mut conn)
            .await
            .map(|r| r.rows_affected())
    });
    wait_for_lock_wait(&app).await;
    assert!(!delete.is_finished(), "the delete waits for the batch");
    batch.commit().await.unwrap();
    assert_eq!(delete.await.unwrap().unwrap(), 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM measurements WHERE device_id = {device}"
        ))
        .await,
        0,
        "the batch's rows went with their device"
    );

    // The delete first: the batch waits for it, then fails; nothing of it is stored.
    let (device, _) = meter(&app, "SGI4", 2).await;
    let mut deleter = connect(&app).await;
    let mut delete = deleter.begin().await.unwrap();
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(device)
        .execute(&mut *delete)
        .await
        .unwrap();
    let url = app.database_url();
    let batch = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        insert_measurements(&mut conn, device, 0, 100).await
    });
    wait_for_lock_wait(&app).await;
    assert!(!batch.is_finished(), "the batch waits for the delete");
    delete.commit().await.unwrap();
    let refused = batch.await.unwrap().expect_err("the device is gone");
    assert!(is_parent_violation(&refused), "{refused}");

    // Many races at random instants.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..20 {
        let (device, _) = meter(&app, "SGI4", 3 + (round % 14) as i16).await;
        let url = app.database_url();
        tasks.spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            for k in 0..10 {
                if let Err(e) = insert_measurements(&mut conn, device, k * 50, 50).await {
                    assert!(is_parent_violation(&e), "{e}");
                    break;
                }
            }
        });
        let url = app.database_url();
        tasks.spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3 * (round % 5) as u64)).await;
            sqlx::query("DELETE FROM devices WHERE id = $1")
                .bind(device)
                .execute(&mut conn)
                .await
                .unwrap();
        });
        while tasks.len() >= 4 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(orphans(&app.pool).await, 0);
    app.stop().await;
}

/// The fixture `name` dated second `i` of 2026.
fn document(name: &str, i: i64) -> Vec<u8> {
    let mut doc: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
    let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(i);
    doc["header"]["local_time"] = t.format("%d.%m.%Y %H:%M:%S").to_string().into();
    serde_json::to_vec(&doc).unwrap()
}

/// Ten measurements from second `from` on, and one counters document.
async fn publish(client: &MqttClient, from: i64) {
    for i in from..from + 10 {
        let measurements = document("measurements-ir.json", i);
        client
            .publish("sg/SGI5/pub/measurements/ir", measurements)
            .await;
    }
    let counters = document("counters-ir-manual.json", from);
    client.publish("sg/SGI5/pub/counters/ir", counters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_goes_on_after_its_device_is_deleted() {
    let app = TestApp::spawn().await;
    let password = app.gateway("SGI5", None, None).await;
    let mut client = app.gateway_client("SGI5", &password).await;
    let committed = || async {
        let last = app.metric("headend_journal_last_seq").await.unwrap_or(0.0);
        app.wait_journal_committed(last as u64).await;
    };
    publish(&client, 0).await;
    client.wait_acks(11).await;
    app.wait_count("SELECT count(*) FROM measurements", 10)
        .await;
    committed().await;
    assert!(app.count("SELECT count(*) FROM counter_readings").await > 0);

    // Deleted under the writers, whose id cache still names it.
    sqlx::query(
        "DELETE FROM devices d USING gateways g WHERE g.id = d.gateway_id AND g.serial = 'SGI5'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.count("SELECT count(*) FROM measurements").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM counter_readings").await, 0);
    publish(&client, 10).await;
    client.wait_acks(11).await;
    // The batch naming the deleted id fails once, the cache is dropped, and the retry finds
    // the meter again (a new device, as for any meter seen for the first time).
    app.wait_count("SELECT count(*) FROM measurements", 10)
        .await;
    committed().await;
    assert!(app.count("SELECT count(*) FROM counter_readings").await > 0);
    assert_eq!(app.count("SELECT count(*) FROM devices").await, 1);
    // The fixture's own partial rejects only: nothing refused for the deleted device.
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM ingest_rejects")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        reasons
            .iter()
            .all(|r| !r.contains("does not exist") && !r.contains("conflicting")),
        "{reasons:?}"
    );
    assert_eq!(orphans(&app.pool).await, 0);
    app.stop().await;
}
