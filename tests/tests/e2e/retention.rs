//! Issue 16, "data that grows for years": `measurements`, `counter_readings` and
//! `energy_intervals` partitioned by month, partitions made ahead, raw measurements downsampled
//! into `measurements_15min` and their partitions dropped, and the migration from the
//! unpartitioned tables done on a copy of a large database while a writer keeps inserting.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use headend::retention::{self, RetentionConfig};
use headend_e2e::{fixture, fresh_database, TestApp};
use sqlx::PgPool;

const TABLES: [&str; 3] = ["measurements", "counter_readings", "energy_intervals"];

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .unwrap()
}

fn months_back(n: u32) -> DateTime<Utc> {
    month_start(Utc::now())
        .checked_sub_months(Months::new(n))
        .unwrap()
}

async fn partitions(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn days(n: u32) -> RetentionConfig {
    RetentionConfig {
        measurements_days: n,
        ..RetentionConfig::default()
    }
}

#[tokio::test]
async fn fresh_database_is_partitioned_with_months_ahead() {
    let app = TestApp::spawn().await;
    let partitioned: Vec<String> =
        sqlx::query_scalar("SELECT partrelid::regclass::text FROM pg_partitioned_table ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for table in TABLES {
        assert!(partitioned.contains(&table.to_owned()), "{partitioned:?}");
        let parts = partitions(&app.pool, table).await;
        for ahead in 0..=3 {
            let start = month_start(Utc::now())
                .checked_add_months(Months::new(ahead))
                .unwrap();
            let name = format!("{table}_p{}", start.format("%Y%m"));
            assert!(parts.contains(&name), "{name} missing from {parts:?}");
        }
        assert!(parts.contains(&format!("{table}_default")), "{parts:?}");
        // Partitioned while empty: the legacy partition gave way to months.
        assert!(!parts.contains(&format!("{table}_legacy")), "{parts:?}");
    }
    // Idempotent: the task's own pass at start changed what was due, a second changes nothing.
    let again = retention::ensure_partitions(&app.pool, &RetentionConfig::default())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

/// The quarter-hour aggregates computed here, independently of the retention code:
/// (device, start, samples, u1 n/min/mean/max, p n/min/mean/max).
type Agg = (
    i64,
    DateTime<Utc>,
    i64,
    i64,
    f32,
    f64,
    f32,
    i64,
    Option<f32>,
    Option<f64>,
    Option<f32>,
);

async fn expected_15min(pool: &PgPool, before: DateTime<Utc>) -> Vec<Agg> {
    sqlx::query_as(
        "SELECT device_id, to_timestamp(floor(extract(epoch FROM ts) / 900) * 900) AS q,
                count(*), count(u1), min(u1), avg(u1), max(u1), count(p), min(p), avg(p), max(p)
         FROM measurements WHERE ts < $1 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(before)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn stored_15min(pool: &PgPool) -> Vec<Agg> {
    sqlx::query_as(
        "SELECT device_id, start, samples::int8, u1_n::int8, u1_min, u1_mean::float8, u1_max,
                p_n::int8, p_min, p_mean::float8, p_max
         FROM measurements_15min ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn assert_same(expected: &[Agg], stored: &[Agg]) {
    assert_eq!(expected.len(), stored.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
    for (e, s) in expected.iter().zip(stored) {
        assert_eq!(
            (e.0, e.1, e.2, e.3, e.4, e.6, e.7, e.8, e.10),
            (s.0, s.1, s.2, s.3, s.4, s.6, s.7, s.8, s.10)
        );
        assert!(close(e.5, s.5), "{e:?} {s:?}");
        assert_eq!(e.9.is_some(), s.9.is_some());
        assert!(close(e.9.unwrap_or(0.0), s.9.unwrap_or(0.0)), "{e:?} {s:?}");
    }
}

/// Two meters, a sample every 5 minutes over four months five to eight months back (p absent
/// from one sample in five), counter readings and intervals over the same months.
async fn fill_old_months(pool: &PgPool) -> Vec<i64> {
    sqlx::query(
        "INSERT INTO gateways (serial, time_zone, password_hash, topic_root, topic_pub, topic_sub)
         VALUES ('SGOLD', 'UTC', 'x', 'sg/SGOLD', 'pub', 'sub')",
    )
    .execute(pool)
    .await
    .unwrap();
    let devices: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO devices (gateway_id, kind, port, slot, serial)
         SELECT (SELECT id FROM gateways WHERE serial = 'SGOLD'), 'meter', 'rs485', d, 'OLD' || d
         FROM generate_series(1, 2) d RETURNING id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let (from, to) = (months_back(8), months_back(4));
    sqlx::query(
        "INSERT INTO measurements (device_id, ts, received_at, u1, p)
         SELECT d, t, t, 220 + (s * 7 + d) % 23, CASE WHEN s % 5 = 0 THEN NULL ELSE (s * 13) % 101 END
         FROM unnest($1::int8[]) d,
              generate_series($2, $3 - interval '1 second', interval '5 minutes') WITH ORDINALITY g(t, s)",
    )
    .bind(&devices)
    .bind(from)
    .bind(to)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO counters (device_id, name, idx, resettable, unit)
         SELECT d, 'import', 1, false, 'Wh' FROM unnest($1::int8[]) d",
    )
    .bind(&devices)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
         SELECT c.id, t, s * 1000, t FROM counters c,
              generate_series($1, $2, interval '15 minutes') WITH ORDINALITY g(t, s)",
    )
    .bind(from)
    .bind(to)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO energy_intervals (counter_id, start, energy_milli, quality)
         SELECT c.id, t, 1000, 0 FROM counters c,
              generate_series($1, $2 - interval '15 minutes', interval '15 minutes') t",
    )
    .bind(from)
    .bind(to)
    .execute(pool)
    .await
    .unwrap();
    devices
}

async fn billing_counts(app: &TestApp) -> [i64; 2] {
    [
        app.count("SELECT count(*) FROM counter_readings").await,
        app.count("SELECT count(*) FROM energy_intervals").await,
    ]
}

#[tokio::test]
async fn old_months_are_downsampled_then_dropped_once() {
    let app = TestApp::spawn().await;
    let devices = fill_old_months(&app.pool).await;
    // Kept 400 days: nothing to drop yet, the old months have their own partitions.
    let first = retention::run_once(&app.pool, &days(400)).await.unwrap();
    assert!(first.dropped.is_empty(), "{first:?}");
    let held: Vec<String> = (4..=8)
        .map(|n| format!("measurements_p{}", months_back(n).format("%Y%m")))
        .collect();
    let parts = partitions(&app.pool, "measurements").await;
    for name in &held[1..] {
        assert!(parts.contains(name), "{name} missing from {parts:?}");
    }
    let billing = billing_counts(&app).await;

    // Kept 60 days: every month partition that ended before the cutoff goes.
    let config = days(60);
    let cutoff = config.cutoff(Utc::now());
    let expected = expected_15min(&app.pool, months_back(4)).await;
    assert!(expected.len() > 10_000, "{}", expected.len());
    let pass = retention::run_once(&app.pool, &config).await.unwrap();
    let parts = partitions(&app.pool, "measurements").await;
    for name in &held[1..] {
        assert!(!parts.contains(name), "{name} still in {parts:?}");
        assert!(pass.dropped.contains(name), "{pass:?}");
    }
    for name in &parts {
        if let Some(month) = name.strip_prefix("measurements_p") {
            let day = chrono::NaiveDate::parse_from_str(&format!("{month}01"), "%Y%m%d").unwrap();
            let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap());
            assert!(
                start.checked_add_months(Months::new(1)).unwrap() > cutoff,
                "{name}"
            );
        }
    }
    assert_eq!(
        app.count("SELECT count(*) FROM measurements WHERE ts < now() - interval '100 days'")
            .await,
        0
    );
    assert_same(&expected, &stored_15min(&app.pool).await);
    assert_eq!(
        billing_counts(&app).await,
        billing,
        "billing truth untouched"
    );

    // A meter's profile over a dropped day still shows its power, from the downsample.
    let day = months_back(6);
    let profile = headend::accounting::query::profile(
        &app.pool,
        None,
        devices[0],
        "OLD1",
        chrono_tz::UTC,
        day,
        day + chrono::Duration::days(1),
        None,
    )
    .await
    .unwrap();
    assert_eq!(profile.power.len(), 96, "every quarter-hour of the day");
    let stored = stored_15min(&app.pool).await;
    let first = stored
        .iter()
        .find(|a| a.0 == devices[0] && a.1 == day)
        .expect("the day's first quarter-hour downsampled");
    assert_eq!(profile.power[0].samples, first.2);

    // Again: nothing changes.
    let again = retention::run_once(&app.pool, &config).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_same(&expected, &stored_15min(&app.pool).await);

    // A late row for a dropped month lands in the DEFAULT partition (no batch fails) and the
    // next pass merges it into its quarter-hour.
    let late = months_back(6) + chrono::Duration::minutes(61);
    sqlx::query("INSERT INTO measurements (device_id, ts, received_at, u1, p) VALUES ($1, $2, now(), 1.0, 5000)")
        .bind(devices[0])
        .bind(late)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM measurements_default").await,
        1
    );
    let mut expected_late = expected.clone();
    let quarter = late - chrono::Duration::minutes(1);
    let row = expected_late
        .iter_mut()
        .find(|a| a.0 == devices[0] && a.1 == quarter)
        .expect("the late row's quarter-hour");
    row.5 = (row.5 * row.3 as f64 + 1.0) / (row.3 + 1) as f64;
    row.9 = row
        .9
        .map(|m| (m * row.7 as f64 + 5000.0) / (row.7 + 1) as f64);
    (row.2, row.3, row.4, row.7, row.10) = (row.2 + 1, row.3 + 1, 1.0, row.7 + 1, Some(5000.0));
    let merged = retention::run_once(&app.pool, &config).await.unwrap();
    assert_eq!(merged.moved_rows, 0, "{merged:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM measurements_default").await,
        0
    );
    assert_same(&expected_late, &stored_15min(&app.pool).await);

    // Through ingest: a gateway's backlog dated in a dropped month is stored, not a failed batch.
    let pw = app.gateway("SGLATE", None, Some("UTC")).await;
    let mut client = app.gateway_client("SGLATE", &pw).await;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("measurements-ir.json")).unwrap();
    doc["header"]["local_time"] = (months_back(7) + chrono::Duration::hours(5))
        .format("%d.%m.%Y %H:%M:%S")
        .to_string()
        .into();
    client
        .publish(
            "sg/SGLATE/pub/measurements/ir",
            serde_json::to_vec(&doc).unwrap(),
        )
        .await;
    client.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM measurements_default", 1)
        .await;
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);
    let pass = retention::run_once(&app.pool, &config).await.unwrap();
    assert_eq!(pass.quarter_hours, 1, "{pass:?}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM measurements_15min m JOIN devices d ON d.id = m.device_id
                   JOIN gateways g ON g.id = d.gateway_id WHERE g.serial = 'SGLATE'"
        )
        .await,
        1
    );
}

/// The last migration before partitioning.
const BEFORE_PARTITIONING: i64 = 20261207000004;

/// What the concurrent writer saw.
#[derive(Debug, Default)]
struct Writes {
    ok: u64,
    failed: Vec<String>,
    longest: Duration,
}

/// Inserts one measurement and one counter reading every 2 ms, as the previous release does
/// (`INSERT ... ON CONFLICT (key) DO NOTHING`, prepared once), until `stop`.
async fn writer(
    pool: PgPool,
    device: i64,
    counter: i64,
    stop: tokio_util::sync::CancellationToken,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Writes {
    let mut writes = Writes::default();
    let mut conn = pool.acquire().await.unwrap();
    let mut n: i64 = 0;
    while !stop.is_cancelled() {
        n += 1;
        let started = Instant::now();
        let result = async {
            sqlx::query(
                "INSERT INTO measurements (device_id, ts, received_at, u1)
                 VALUES ($1, now(), now(), $2) ON CONFLICT (device_id, ts) DO NOTHING",
            )
            .bind(device)
            .bind(n as f32)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
                 VALUES ($1, now(), $2, now()) ON CONFLICT (counter_id, ts) DO NOTHING",
            )
            .bind(counter)
            .bind(n)
            .execute(&mut *conn)
            .await
        }
        .await;
        writes.longest = writes.longest.max(started.elapsed());
        match result {
            Ok(_) => {
                writes.ok += 1;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => writes.failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writes
}

#[tokio::test]
async fn migration_of_a_large_database_while_writing() {
    let url = fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let all = &headend::infra::db::MIGRATOR;
    let early = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version <= BEFORE_PARTITIONING)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    early.run(&pool).await.unwrap();

    // The copy: 16 meters, one-minute measurements over 91 days (2.1 million rows) and
    // quarter-hour counter readings, made in the database.
    let filled = Instant::now();
    for sql in [
        "INSERT INTO gateways (serial, time_zone, password_hash, topic_root, topic_pub, topic_sub)
         VALUES ('BIG1', 'UTC', 'x', 'sg/BIG1', 'pub', 'sub')",
        "INSERT INTO devices (gateway_id, kind, port, slot, serial)
         SELECT (SELECT id FROM gateways WHERE serial = 'BIG1'), 'meter', 'rs485', d, 'M' || d
         FROM generate_series(0, 16) d",
        "INSERT INTO counters (device_id, name, idx, resettable, unit)
         SELECT id, 'import', 1, false, 'Wh' FROM devices",
        "INSERT INTO measurements (device_id, ts, received_at, u1, p)
         SELECT d.id, t, t, 230 + s % 7, s % 1000
         FROM devices d, generate_series(now() - interval '91 days', now() - interval '1 minute',
                                         interval '1 minute') WITH ORDINALITY g(t, s)
         WHERE d.slot > 0",
        "INSERT INTO counter_readings (counter_id, ts, value_milli, received_at)
         SELECT c.id, t, s * 1000, t FROM counters c JOIN devices d ON d.id = c.device_id,
              generate_series(now() - interval '91 days', now() - interval '1 minute',
                              interval '15 minutes') WITH ORDINALITY g(t, s)
         WHERE d.slot > 0",
        "ANALYZE",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let big: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(big >= 2_000_000, "{big}");
    let fill_time = filled.elapsed();

    // The writer: the device in slot 0, so its rows are told apart.
    let (device, counter): (i64, i64) = sqlx::query_as(
        "SELECT d.id, c.id FROM devices d JOIN counters c ON c.device_id = d.id WHERE d.slot = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writing = tokio::spawn(writer(
        pool.clone(),
        device,
        counter,
        stop.clone(),
        done.clone(),
    ));
    // Writes before, during and after the migration: each phase waits for 20 more.
    let written = |n: u64| {
        let done = done.clone();
        async move {
            let reached = headend_e2e::eventually(Duration::from_secs(60), || async {
                (done.load(std::sync::atomic::Ordering::SeqCst) >= n).then_some(())
            })
            .await;
            assert!(reached.is_some(), "the writer stalled below {n} writes");
        }
    };
    written(20).await;

    let migrating = Instant::now();
    all.run(&pool).await.unwrap();
    let migration_time = migrating.elapsed();
    written(done.load(std::sync::atomic::Ordering::SeqCst) + 20).await;
    stop.cancel();
    let writes = writing.await.unwrap();

    assert!(writes.failed.is_empty(), "{:?}", writes.failed);
    assert!(writes.ok >= 40, "{writes:?}");
    for table in ["measurements", "counter_readings"] {
        let key = if table == "measurements" {
            "device_id"
        } else {
            "counter_id"
        };
        let id = if table == "measurements" {
            device
        } else {
            counter
        };
        let stored: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {key} = $1"))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            stored as u64, writes.ok,
            "{table}: every acknowledged insert is there"
        );
    }
    let partitioned: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_partitioned_table")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(partitioned >= 3);
    let legacy: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements_legacy")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(legacy >= big, "the old rows are the legacy partition");
    // The parent's key is the old index, attached: a key lookup still uses it.
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT * FROM measurements WHERE device_id = 1 AND ts = now() - interval '3 days'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        plan.join("\n").contains("measurements_legacy_pkey"),
        "{plan:?}"
    );
    let steps: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, execution_time FROM _sqlx_migrations WHERE version > $1 ORDER BY 1",
    )
    .bind(BEFORE_PARTITIONING)
    .fetch_all(&pool)
    .await
    .unwrap();
    println!(
        "large copy: {big} measurements filled in {fill_time:?}; migration {migration_time:?} \
         (per migration, ms: {:?}); writer: {} inserts, longest stall {:?}",
        steps
            .iter()
            .map(|(v, ns)| (*v, *ns as f64 / 1e6))
            .collect::<Vec<_>>(),
        writes.ok,
        writes.longest
    );
    pool.close().await;
}
