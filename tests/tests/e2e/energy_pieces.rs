//! The profile worker recomputes a queued span in bounded pieces (`energy.worker_piece_readings`,
//! `energy.worker_piece_days`, issue 17: a year of 300 meters loaded whole took gigabytes). The
//! pieces must not change a single result: the same readings give the same intervals, days and
//! events whatever the piece size, across gaps, a counter reset and a long span.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use headend_e2e::{eventually, TestApp};
use serde_json::json;

const GW: &str = "SG000031";

/// One counters document of the IR meter: import grows with a daily shape, the second register
/// is reset to zero once (an event the engine must place exactly).
fn docs() -> Vec<String> {
    let start = NaiveDateTime::parse_from_str("2026-10-01 00:00:07", "%Y-%m-%d %H:%M:%S").unwrap();
    let mut import_wh: i64 = 1_000_000;
    let mut other_wh: i64 = 50_000;
    let mut out = Vec::new();
    for q in 0..(12 * 96) {
        // Two gaps: a missing afternoon on day 2, and three whole days (6..9) without readings.
        let day = q / 96;
        let quarter = q % 96;
        if (day == 2 && (50..70).contains(&quarter)) || (6..9).contains(&day) {
            continue;
        }
        import_wh += 40 + (quarter as i64 * 7) % 90;
        other_wh += 11;
        if q == 5 * 96 + 30 {
            other_wh = 3; // reset
        }
        let wall = start + chrono::Duration::minutes(15 * q as i64);
        out.push(
            json!({
                "header": {
                    "cmd": "get_energy_counters", "model": "IE38MD", "serial_number": "PIECE001",
                    "local_time": wall.format("%d.%m.%Y %H:%M:%S").to_string(),
                    "resetable_counters": 0, "non_resetable_counters": 2
                },
                "counters": {
                    "counter1nr": format!("{}.{:03} kWh", import_wh / 1000, import_wh % 1000),
                    "counter2nr": format!("{}.{:03} kWh", other_wh / 1000, other_wh % 1000),
                },
            })
            .to_string(),
        );
    }
    out
}

async fn idle(app: &TestApp) {
    let idle = eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "profile worker did not finish its queue");
}

type Snapshot = (
    Vec<(String, DateTime<Utc>, i64, i16)>,
    Vec<(String, chrono::NaiveDate, i64, i32, i32, i64)>,
    Vec<(String, DateTime<Utc>, String, i64, i64)>,
);

/// Publishes every document, waits for the worker to finish, and reads what it computed, by
/// register name (ids differ between databases).
async fn account(adjust: impl FnOnce(&mut headend::config::Config)) -> Snapshot {
    let app = TestApp::spawn_with(adjust).await;
    let site = app.site("Pieces", "Europe/Ljubljana").await;
    let password = app.gateway(GW, Some(site), None).await;
    let mut client = app.gateway_client(GW, &password).await;
    let docs = docs();
    for doc in &docs {
        client
            .publish(&format!("sg/{GW}/pub/counters/ir"), doc.clone())
            .await;
    }
    client.wait_acks(docs.len()).await;
    app.wait_count(
        "SELECT count(*) FROM counter_readings",
        2 * docs.len() as i64,
    )
    .await;
    idle(&app).await;
    // Then every counter's whole span at once, as after a restart or a backfill: the case the
    // pieces are for.
    sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT counter_id, min(ts), max(ts), true FROM counter_readings GROUP BY counter_id",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    idle(&app).await;
    let intervals = sqlx::query_as(
        "SELECT c.name, i.start, i.energy_milli, i.quality FROM energy_intervals i
         JOIN counters c ON c.id = i.counter_id ORDER BY 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let days = sqlx::query_as(
        "SELECT c.name, d.day, d.energy_milli, d.measured, d.estimated, d.peak_milli
         FROM energy_days d JOIN counters c ON c.id = d.counter_id ORDER BY 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let events = sqlx::query_as(
        "SELECT c.name, e.ts, e.kind, e.previous, e.value FROM counter_events e
         JOIN counters c ON c.id = e.counter_id ORDER BY 1, 2, 3",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    drop(client);
    app.stop().await;
    (intervals, days, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_pieces_compute_what_one_piece_computes() {
    let whole = account(|c| {
        c.energy.worker_piece_readings = 1_000_000;
        c.energy.worker_piece_days = 10_000;
    })
    .await;
    let tiny = account(|c| {
        c.energy.worker_piece_readings = 3;
        c.energy.worker_piece_days = 1;
    })
    .await;
    assert!(whole.0.len() > 1000, "{} intervals", whole.0.len());
    assert!(!whole.2.is_empty(), "the reset is an event");
    assert_eq!(tiny.0, whole.0, "intervals differ");
    assert_eq!(tiny.1, whole.1, "days differ");
    assert_eq!(tiny.2, whole.2, "events differ");
}
