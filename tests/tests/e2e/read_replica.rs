//! The read endpoint (`database.read_url`, issue 16): dashboards and CSV exports read from it;
//! logins, sessions and API writes go to the primary; migrations run on the primary only.
//! The "replica" here is a second database with the same schema and data of its own, so what a
//! page or an export shows proves which database it was read from.

use headend::config::Secret;
use headend_e2e::{fresh_database, raw_request, HttpResponse, TestApp};
use serde_json::json;
use sqlx::PgPool;

const GW: &str = "SG000042";

fn counters_doc(local: &str, import_mwh: i64) -> String {
    json!({
        "header": {
            "cmd": "get_energy_counters",
            "model": "IE38MD",
            "serial_number": "REPL0001",
            "local_time": local,
            "resetable_counters": 0,
            "non_resetable_counters": 2
        },
        "counters": {
            "counter1nr": format!("{}.{:06} kWh", import_mwh / 1_000_000, import_mwh % 1_000_000),
            "counter2nr": "0.000000 kWh"
        },
    })
    .to_string()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

async fn page(app: &TestApp, token: &str, path: &str) -> HttpResponse {
    let cookie = format!("headend_session={token}");
    raw_request(app.http, "GET", path, &[("Cookie", &cookie)], "")
        .await
        .expect(path)
}

/// A database filled by an ordinary instance (a site, a meter, four counter readings over
/// MQTT), that instance stopped: the "replica". Returns its URL and the site id.
async fn seeded_replica() -> (String, i64) {
    let seeder = TestApp::spawn().await;
    let site = seeder.site("Replica Plant", "Europe/Ljubljana").await;
    let password = seeder.gateway(GW, Some(site), None).await;
    let mut client = seeder.gateway_client(GW, &password).await;
    for (i, local) in ["17.11.2026 10:00:00", "17.11.2026 10:15:00"]
        .into_iter()
        .enumerate()
    {
        let doc = counters_doc(local, 1_000_000 + 250_000 * i as i64);
        client
            .publish(&format!("sg/{GW}/pub/counters/ir"), doc)
            .await;
    }
    client.wait_acks(2).await;
    seeder
        .wait_count("SELECT count(*) FROM counter_readings", 4)
        .await;
    let url = seeder.database_url();
    drop(client);
    seeder.stop().await;
    (url, site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_exports_read_the_replica_and_writes_go_to_the_primary() {
    let (replica_url, site) = seeded_replica().await;
    let read_url = replica_url.clone();
    let app = TestApp::spawn_with(move |c| c.database.read_url = Some(Secret::new(read_url))).await;
    let replica = PgPool::connect(&replica_url).await.expect("replica pool");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM sites").await, 0);

    // A login is a write: its session row is on the primary only.
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    assert_eq!(count(&app.pool, "SELECT count(*) FROM sessions").await, 1);
    assert_eq!(count(&replica, "SELECT count(*) FROM sessions").await, 0);

    // The overview and the site page show the replica's site, which the primary lacks.
    let overview = page(&app, &admin, "/").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains("Replica Plant"), "{}", overview.body);
    let site_page = page(&app, &admin, &format!("/sites/{site}")).await;
    assert_eq!(site_page.status, 200, "{}", site_page.body);
    assert!(site_page.body.contains("Replica Plant"));

    // The export reads the replica's readings.
    let csv = app
        .get(
            &format!("/api/v1/export.csv?kind=readings&site={site}&from=2026-11-17&to=2026-11-18"),
            &admin,
        )
        .await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    let rows: Vec<&str> = csv.body.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{}", csv.body);
    assert!(rows.iter().all(|r| r.contains("REPL0001")), "{}", csv.body);

    // An API write goes to the primary; the dashboards, reading the replica, do not show it
    // until replication would bring it there.
    let created = app
        .request(
            "POST",
            "/api/v1/sites",
            Some(&admin),
            Some(json!({ "name": "Primary Plant", "time_zone": "Europe/Ljubljana" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let primary_plant = "SELECT count(*) FROM sites WHERE name = 'Primary Plant'";
    assert_eq!(count(&app.pool, primary_plant).await, 1);
    assert_eq!(count(&replica, primary_plant).await, 0);
    let overview = page(&app, &admin, "/").await;
    assert!(!overview.body.contains("Primary Plant"));

    replica.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_on_the_primary_only() {
    let empty = fresh_database().await;
    let read_url = empty.clone();
    let app = TestApp::spawn_with(move |c| c.database.read_url = Some(Secret::new(read_url))).await;
    let replica = PgPool::connect(&empty).await.expect("replica pool");
    let migrated = "SELECT count(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'";
    assert_eq!(count(&app.pool, migrated).await, 1);
    assert_eq!(count(&replica, migrated).await, 0);
    replica.close().await;
    app.stop().await;
}
