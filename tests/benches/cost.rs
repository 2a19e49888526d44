//! Cost per meter benchmark (issue 17): CPU-seconds and bytes on disk per meter per day at the
//! realistic rate, so that the capacity model (`docs/capacity.md`) has a measured basis.
//!
//! N meters, 17 per simulated gateway (the IR port and RS485 slots 1..16), each pushing a
//! measurements document every minute and a counters document every 15 minutes, in real time,
//! at wall-clock multiples of the interval as an SG does (the meters of a gateway 100 ms apart,
//! as it reads its bus), to one in-process Headend whose own PostgreSQL cluster fsyncs like
//! production. Each gateway is on its own site with the example contract, its IR meter placed
//! as the site meter, so the profile worker computes intervals, days, months and site totals.
//!
//! The clients are the bench's own (rumqttc, QoS 1, one connection per gateway) rather than
//! `sg-gateway fleet`: the simulator pushes measurements and counters of a device together, at
//! one interval, so it cannot produce the one-minute / 15-minute mix.
//!
//! Over a window of whole push cycles, starting half a measurement interval after a push
//! instant (the previous push is committed), it reports the CPU of Headend (this process less
//! the client threads), PostgreSQL (the postmaster's tree) and the clients, and "other"; the
//! growth of every table with its indexes, TOAST and partitions; the WAL written
//! (`pg_current_wal_lsn`); the bytes Headend wrote to disk (its journal). Everything is also
//! given per meter per day: `figure / meters × 86 400 / window seconds`. The reference,
//! measured in the same run: `COPY` of the window's measurement and counter rows into copies of
//! the tables (PostgreSQL CPU, WAL, bytes).
//!
//! Figures are reported, never asserted. `cargo bench -p headend-e2e --bench cost`,
//! parameters in `HEADEND_BENCH_COST_*` (see [`Params`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use futures::{StreamExt, TryStreamExt};
use headend::config::Secret;
use headend::Config;
use headend_e2e::bench::{
    cpus, env_or, run_with_clients, CpuSample, Machine, MeterDocuments, CLIENT_THREAD,
};
use headend_e2e::{http_request, start_cluster, MqttClient, TestApp};
use rumqttc::{AsyncClient, Packet, QoS};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the client runtime's threads, so their CPU time is told apart from Headend's.
/// The IR port and RS485 slots 1..16.
const METERS_PER_GATEWAY: u32 = 17;
/// Between two meters of one gateway in a push (an SG reads its bus one meter at a time).
const SLOT_STEP_MS: i64 = 100;
const LOCAL_TIME: &str = "%d.%m.%Y %H:%M:%S";
/// Gateways registered or connected at the same time (Argon2 on both).
const CONCURRENT_SETUP: usize = 8;
/// How long a wait may go without progress before the run is declared stuck.
const STALL: Duration = Duration::from_secs(120);
const DAY: f64 = 86_400.0;

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_COST_METERS` (10 000).
    meters: u32,
    /// `HEADEND_BENCH_COST_WINDOW`: measured seconds (900), a whole number of both intervals.
    window: i64,
    /// `HEADEND_BENCH_COST_MEASUREMENTS_EVERY`: seconds between measurements pushes (60).
    measurements_every: i64,
    /// `HEADEND_BENCH_COST_COUNTERS_EVERY`: seconds between counters pushes (900), a multiple
    /// of the measurements interval.
    counters_every: i64,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let p = Self {
            meters: env_or("HEADEND_BENCH_COST_METERS", 10_000)?,
            window: env_or("HEADEND_BENCH_COST_WINDOW", 900)?,
            measurements_every: env_or("HEADEND_BENCH_COST_MEASUREMENTS_EVERY", 60)?,
            counters_every: env_or("HEADEND_BENCH_COST_COUNTERS_EVERY", 900)?,
        };
        let (w, m, c) = (p.window, p.measurements_every, p.counters_every);
        ensure!(p.meters > 0, "HEADEND_BENCH_COST_METERS must be positive");
        ensure!(
            m * 1000 >= 2 * SLOT_STEP_MS * i64::from(METERS_PER_GATEWAY) + 1000,
            "HEADEND_BENCH_COST_MEASUREMENTS_EVERY must be at least 5 s"
        );
        ensure!(
            c > 0 && c % m == 0 && w > 0 && w % c == 0,
            "the window must be a whole number of counters intervals, and those of \
             measurements intervals ({w} s, {c} s, {m} s)"
        );
        Ok(p)
    }

    fn gateways(&self) -> u32 {
        self.meters.div_ceil(METERS_PER_GATEWAY)
    }

    /// A window figure per meter per day.
    fn per_meter_day(&self, figure: f64) -> f64 {
        figure / f64::from(self.meters) * DAY / self.window as f64
    }

    fn realistic(&self) -> bool {
        self.measurements_every == 60 && self.counters_every == 900
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(None, |clients| async move { run(&params, &clients).await })
}

/// One simulated meter: its topics, document templates and load.
struct Meter {
    topics: [String; 2],
    measurements: Value,
    counters: Value,
    watts: i64,
    /// Import register at the Unix epoch, Wh.
    base_wh: i64,
}

impl Meter {
    fn new(documents: &MeterDocuments, m: u32, slot: u32) -> Self {
        let [mut measurements, mut counters] = documents.for_meter(10_000_000 + m);
        let port = if slot == 0 {
            for doc in [&mut measurements, &mut counters] {
                let header = doc["header"].as_object_mut();
                if let Some(header) = header {
                    header.remove("RS485 index");
                    header.insert("port".into(), "Left IR".into());
                }
            }
            "ir".to_owned()
        } else {
            for doc in [&mut measurements, &mut counters] {
                doc["header"]["RS485 index"] = slot.into();
            }
            format!("rs485/{slot}")
        };
        Self {
            topics: ["measurements", "counters"].map(|kind| format!("{kind}/{port}")),
            measurements,
            counters,
            watts: 200 + i64::from(m) * 7919 % 9800,
            base_wh: 1_000_000 + i64::from(m) * 1000,
        }
    }

    fn measurements_doc(&self, local: &str) -> Vec<u8> {
        let mut doc = self.measurements.clone();
        doc["header"]["local_time"] = local.into();
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Import grows with the meter's load, export at 1 % of it; exact to the Wh and mWh.
    fn counters_doc(&self, local: &str, unix: i64) -> Vec<u8> {
        let import_wh = self.base_wh + self.watts * unix / 3600;
        let export_mwh = self.watts * unix / 360;
        let mut doc = self.counters.clone();
        doc["header"]["local_time"] = local.into();
        doc["counters"] = json!({
            "counter1nr": format!("{}.{:03} kWh", import_wh / 1000, import_wh % 1000),
            "counter2nr": format!("{}.{:03}  Wh", export_mwh / 1000, export_mwh % 1000),
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}

/// Messages handed to the clients and PUBACKs received, over the whole run.
#[derive(Default)]
struct Counts {
    measurements: AtomicU64,
    counters: AtomicU64,
    acks: AtomicU64,
}

impl Counts {
    fn published(&self) -> u64 {
        self.measurements.load(Ordering::Relaxed) + self.counters.load(Ordering::Relaxed)
    }
}

/// A simulated gateway: one MQTT connection, its meters.
struct Gateway {
    serial: String,
    client: AsyncClient,
    meters: Vec<Meter>,
}

impl Gateway {
    async fn publish(&self, meter: &Meter, kind: usize, payload: Vec<u8>) -> anyhow::Result<()> {
        let topic = format!("sg/{}/pub/{}", self.serial, meter.topics[kind]);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        Ok(())
    }

    /// One push of every meter at `unix` (seconds), counters too when `counters`.
    async fn push(&self, unix: i64, counters: bool, counts: &Counts) -> anyhow::Result<()> {
        let local = local_time(unix);
        for (k, meter) in self.meters.iter().enumerate() {
            sleep_until_wall(unix * 1000 + k as i64 * SLOT_STEP_MS).await;
            self.publish(meter, 0, meter.measurements_doc(&local))
                .await?;
            counts.measurements.fetch_add(1, Ordering::Relaxed);
            if counters {
                self.publish(meter, 1, meter.counters_doc(&local, unix))
                    .await?;
                counts.counters.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Pushes at every multiple of the measurements interval after `after` until `stop`.
    async fn schedule(
        self: Arc<Self>,
        params: (i64, i64),
        after: i64,
        counts: Arc<Counts>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let (every, counters_every) = params;
        let mut next = (after / every + 1) * every;
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = sleep_until_wall(next * 1000) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                pushed = self.push(next, next % counters_every == 0, &counts) => pushed?,
            }
            next += every;
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn sleep_until_wall(ms: i64) {
    let wait = ms - wall_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// `local_time` of the documents: the gateways are in UTC.
fn local_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .naive_utc()
        .format(LOCAL_TIME)
        .to_string()
}

async fn run(params: &Params, clients: &Handle) -> anyhow::Result<String> {
    headend::infra::telemetry::init("warn", false);
    // A dedicated cluster with fsync on. PostgreSQL runs as `postgres` when we are root, so
    // the directory above its data directory must be traversable.
    let pg_dir = tempfile::Builder::new().prefix("hebench-pg").tempdir()?;
    std::fs::set_permissions(pg_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let cluster = start_cluster(&pg_dir.path().join("cluster"), false).await?;
    cluster.create_database("headend").await?;
    let url = cluster.url("headend");
    let postmaster: u32 = std::fs::read_to_string(pg_dir.path().join("cluster/postmaster.pid"))?
        .lines()
        .next()
        .context("postmaster.pid")?
        .parse()?;

    let data_dir = tempfile::Builder::new().prefix("hebench-data").tempdir()?;
    let mut config = Config {
        data_dir: data_dir.path().to_path_buf(),
        ..Config::default()
    };
    config.http.addr = ([127, 0, 0, 1], 0).into();
    config.mqtt.addr = ([127, 0, 0, 1], 0).into();
    config.database.url = Some(Secret::new(url.clone()));
    config.mqtt.max_connections = params.gateways() as usize + 16;
    config.log.filter = "warn".into();
    config.http.metrics_token = Some(Secret::new(headend_e2e::METRICS_TOKEN));
    let settings = format!(
        "{} ingest writers, batches of up to {} messages, {} database connections",
        config.ingest.writers, config.ingest.batch_max_messages, config.database.max_connections
    );
    let app = TestApp::start(config, data_dir).await;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&app.pool)
        .await?;

    let counts = Arc::new(Counts::default());
    let (gateways, admin) = set_up(&app, params, clients, &counts).await?;
    let bench = Bench {
        params,
        admin,
        app,
        url,
        postmaster,
        counts,
    };
    bench.warm_up(&gateways).await?;

    let stop = CancellationToken::new();
    let mut schedules = JoinSet::new();
    let now = wall_ms() / 1000;
    for gateway in &gateways {
        let schedule = gateway.clone().schedule(
            (params.measurements_every, params.counters_every),
            now,
            bench.counts.clone(),
            stop.clone(),
        );
        schedules.spawn_on(schedule, clients);
    }
    let m = params.measurements_every;
    let start = (now / m + 1) * m * 1000 + m * 500;
    eprintln!(
        "window: {} s from {} (push instants every {m} s)",
        params.window,
        local_time(start / 1000)
    );
    sleep_until_wall(start).await;
    let before = Snapshot::take(&bench.app.pool).await?;
    let cpu_before = CpuSample::now()?;
    let io_before = IoBytes::of_self()?;
    sleep_until_wall(start + params.window * 1000).await;
    let io_after = IoBytes::of_self()?;
    let cpu_after = CpuSample::now()?;
    let after = Snapshot::take(&bench.app.pool).await?;
    let backlog = bench.backlog().await?;
    stop.cancel();
    while let Some(done) = schedules.join_next().await {
        done??;
    }
    let rows = bench.settle().await?;
    let window = (start / 1000, start / 1000 + params.window);
    let copy = bench.reference(window).await?;

    let mut report = format!(
        "## Cost per meter benchmark\n\n{}\n\nPostgreSQL {pg_version} (own cluster, fsync and \
         synchronous_commit on, default checkpoints); Headend in process with its default \
         settings ({settings}).\n\nParameters: {} meters on {} gateways ({METERS_PER_GATEWAY} \
         per gateway: IR + RS485 1..16), each gateway on its own site (UTC, example contract, \
         IR meter = site meter); a measurements document every {} s and a counters document \
         (2 registers) every {} s per meter, at wall-clock multiples, meters of a gateway \
         {SLOT_STEP_MS} ms apart; window {} s from {} UTC.{}\n\n",
        Machine::probe().describe("Clients, Headend and PostgreSQL share it."),
        params.meters,
        params.gateways(),
        params.measurements_every,
        params.counters_every,
        params.window,
        local_time(window.0),
        if params.realistic() {
            ""
        } else {
            " **Not the realistic rate: per-day figures are at these intervals.**"
        }
    );
    let span = cpu_after.since(&cpu_before);
    let cpu = Cpu::of(&span, postmaster);
    bench.report(
        &mut report,
        &Measured {
            cpu,
            before,
            after,
            io: io_after.since(&io_before),
            backlog,
            rows,
            copy,
        },
    )?;
    for gateway in &gateways {
        let _ = gateway.client.try_disconnect();
    }
    bench.app.stop().await;
    cluster.stop().await?;
    Ok(report)
}

/// Sites (each with the example contract), gateways on them, one connection per gateway.
async fn set_up(
    app: &TestApp,
    params: &Params,
    clients: &Handle,
    counts: &Arc<Counts>,
) -> anyhow::Result<(Vec<Arc<Gateway>>, String)> {
    let n = params.gateways();
    eprintln!("set-up: {n} sites and gateways, {} meters", params.meters);
    let admin = app.user_token("admin@bench.example", "admin", &[]).await;
    let example = api(app, &admin, "GET", "/api/v1/contracts/example", None).await?;
    // All registered before any connects: ingest reloads its gateway directory on a record
    // from an unknown gateway at most every 500 ms.
    let registered: Vec<(u32, String, String)> = futures::stream::iter(0..n)
        .map(|g| {
            let (admin, example) = (&admin, &example);
            async move {
                let serial = format!("COST{g:05}");
                let site = app.site(&format!("Cost site {g}"), "UTC").await;
                let path = format!("/api/v1/sites/{site}/contracts");
                let contract = json!({ "contract": example });
                api(app, admin, "POST", &path, Some(contract)).await?;
                let password = app.gateway(&serial, Some(site), None).await;
                anyhow::Ok((g, serial, password))
            }
        })
        .buffered(CONCURRENT_SETUP)
        .try_collect()
        .await?;
    let addr = app.mqtt.context("embedded MQTT")?;
    let documents = Arc::new(MeterDocuments::load()?);
    let connecting = futures::stream::iter(registered).map(|(g, serial, password)| {
        let (counts, documents) = (counts.clone(), documents.clone());
        let meters = (0..METERS_PER_GATEWAY)
            .map(|slot| (g * METERS_PER_GATEWAY + slot, slot))
            .filter(|(m, _)| *m < params.meters)
            .map(|(m, slot)| Meter::new(&documents, m, slot))
            .collect();
        clients.spawn(async move {
            let client_id = format!("{serial}-1");
            let mut mqtt = MqttClient::connect(addr, &client_id, &serial, &password)
                .await
                .with_context(|| format!("connecting {serial}"))?;
            let client = mqtt.client.clone();
            tokio::spawn(async move {
                while let Some(packet) = mqtt.events.recv().await {
                    if matches!(packet, Packet::PubAck(_)) {
                        counts.acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            anyhow::Ok(Arc::new(Gateway {
                serial,
                client,
                meters,
            }))
        })
    });
    let gateways: Vec<anyhow::Result<Arc<Gateway>>> = connecting
        .buffered(CONCURRENT_SETUP)
        .map(|joined| joined.map_err(anyhow::Error::from).and_then(|r| r))
        .collect()
        .await;
    let gateways = gateways.into_iter().collect::<anyhow::Result<_>>()?;
    Ok((gateways, admin))
}

async fn api(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let response = http_request(app.http, method, path, Some(token), body).await?;
    ensure!(
        (200..300).contains(&response.status),
        "{method} {path}: {} {}",
        response.status,
        response.body
    );
    Ok(serde_json::from_str(&response.body).unwrap_or(Value::Null))
}

/// Headend, its database and what the clients sent.
struct Bench<'a> {
    params: &'a Params,
    /// An administrator's API token.
    admin: String,
    app: TestApp,
    url: String,
    postmaster: u32,
    counts: Arc<Counts>,
}

/// Rows in the two readings tables at the end, against what was published.
struct Rows {
    measurements: i64,
    readings: i64,
    rejects: i64,
}

impl Bench<'_> {
    /// Every meter's first counters and measurements (which create its device and counters),
    /// dated at the last multiple of each interval so the schedule continues them; then the
    /// IR meters placed as site meters.
    async fn warm_up(&self, gateways: &[Arc<Gateway>]) -> anyhow::Result<()> {
        eprintln!("warm-up: first documents of every meter");
        let now = wall_ms() / 1000;
        let (m, c) = (self.params.measurements_every, self.params.counters_every);
        let (measured_at, counted_at) = (now / m * m, now / c * c);
        for gateway in gateways {
            for meter in &gateway.meters {
                let measurements = meter.measurements_doc(&local_time(measured_at));
                gateway.publish(meter, 0, measurements).await?;
                let counters = meter.counters_doc(&local_time(counted_at), counted_at);
                gateway.publish(meter, 1, counters).await?;
                self.counts.counters.fetch_add(1, Ordering::Relaxed);
                self.counts.measurements.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.settle().await?;
        let placing = futures::stream::iter(gateways)
            .map(|g| {
                let path = format!(
                    "/api/v1/devices/{}",
                    g.meters[0].counters["header"]["serial_number"]
                        .as_str()
                        .unwrap_or_default()
                );
                let body = json!({ "measures": "site", "name": "Main supply" });
                let admin = &self.admin;
                async move { api(&self.app, admin, "PATCH", &path, Some(body)).await }
            })
            .buffered(CONCURRENT_SETUP);
        placing.try_collect::<Vec<_>>().await?;
        self.settle().await?;
        Ok(())
    }

    /// Waits until every published message is acknowledged and committed and the profile
    /// worker's queue is empty; checks that no row was lost.
    async fn settle(&self) -> anyhow::Result<Rows> {
        let counts = &self.counts;
        progress("PUBACKs", || async {
            Ok((counts.acks.load(Ordering::Relaxed), counts.published()))
        })
        .await?;
        let app = &self.app;
        let last = app.metric("headend_journal_last_seq").await.unwrap_or(0.0);
        progress("journal checkpoint", || async {
            let checkpoint = app.metric("headend_journal_checkpoint").await;
            Ok((checkpoint.unwrap_or(0.0) as u64, last as u64))
        })
        .await?;
        progress("energy_dirty drained", || async {
            let dirty = app.count("SELECT count(*) FROM energy_dirty").await;
            Ok((u64::from(dirty == 0), 1))
        })
        .await?;
        let rows = Rows {
            measurements: app.count("SELECT count(*) FROM measurements").await,
            readings: app.count("SELECT count(*) FROM counter_readings").await,
            rejects: app.count("SELECT count(*) FROM ingest_rejects").await,
        };
        let (measurements, counters) = (
            counts.measurements.load(Ordering::Relaxed) as i64,
            counts.counters.load(Ordering::Relaxed) as i64,
        );
        ensure!(
            rows.measurements == measurements && rows.readings == 2 * counters,
            "rows lost or duplicated: {} measurements of {measurements}, {} counter readings of \
             {} ({} rejects)",
            rows.measurements,
            rows.readings,
            2 * counters,
            rows.rejects
        );
        Ok(rows)
    }

    /// Work left at the window's end: journal records not yet committed, queued counters.
    async fn backlog(&self) -> anyhow::Result<(u64, i64)> {
        let pending = self.app.metric("headend_journal_pending_records").await;
        let dirty = self.app.count("SELECT count(*) FROM energy_dirty").await;
        Ok((pending.unwrap_or(0.0) as u64, dirty))
    }

    /// `COPY` of the window's measurement and counter rows into copies of the two tables.
    async fn reference(&self, (from, to): (i64, i64)) -> anyhow::Result<CopyReference> {
        eprintln!("reference: COPY of the window's rows");
        let mut conn = PgConnection::connect(&self.url).await?;
        let range = format!("ts >= to_timestamp({from}) AND ts < to_timestamp({to})",);
        let mut data = Vec::new();
        for table in ["measurements", "counter_readings"] {
            sqlx::raw_sql(&format!(
                "CREATE TABLE {table}_copy (LIKE {table} INCLUDING ALL)"
            ))
            .execute(&mut conn)
            .await?;
            let sql = format!("COPY (SELECT * FROM {table} WHERE {range}) TO STDOUT");
            let chunks: Vec<bytes::Bytes> = conn.copy_out_raw(&sql).await?.try_collect().await?;
            data.push((table, chunks));
        }
        let wal_before = wal_lsn(&mut conn).await?;
        let cpu_before = CpuSample::now()?;
        let mut rows = 0;
        for (table, chunks) in data {
            let mut copy = conn
                .copy_in_raw(&format!("COPY {table}_copy FROM STDIN"))
                .await?;
            for chunk in chunks {
                copy.send(chunk).await?;
            }
            rows += copy.finish().await?;
        }
        let cpu_after = CpuSample::now()?;
        let wal = wal_lsn(&mut conn).await? - wal_before;
        let bytes: f64 = sqlx::query_scalar(
            "SELECT (pg_total_relation_size('measurements_copy')
                     + pg_total_relation_size('counter_readings_copy'))::float8",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        let span = cpu_after.since(&cpu_before);
        Ok(CopyReference {
            rows,
            postgres: span.tree(self.postmaster),
            wall: span.wall(),
            wal,
            bytes,
        })
    }
}

async fn wal_lsn(conn: &mut PgConnection) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
            .fetch_one(conn)
            .await?,
    )
}

/// Polls `probe` (done, target) every 20 ms until done reaches target; fails when it makes
/// no progress for [`STALL`].
async fn progress<F, Fut>(what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(u64, u64)>>,
{
    let (mut last, mut moved) = (probe().await?.0, Instant::now());
    loop {
        let (done, target) = probe().await?;
        if done >= target {
            return Ok(());
        }
        if done != last {
            (last, moved) = (done, Instant::now());
        } else if moved.elapsed() > STALL {
            bail!("{what} stuck at {done} of {target}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct CopyReference {
    rows: u64,
    /// CPU-seconds of PostgreSQL during the two COPYs.
    postgres: f64,
    wall: f64,
    wal: f64,
    bytes: f64,
}

/// One table's size and row changes (summed over its partitions).
#[derive(Clone, Copy, Default)]
struct TableStat {
    bytes: f64,
    inserted: f64,
    updated: f64,
    deleted: f64,
}

/// The database at one instant: tables, WAL.
struct Snapshot {
    tables: BTreeMap<String, TableStat>,
    wal: f64,
    wal_fpi: f64,
    wal_records: f64,
}

impl Snapshot {
    async fn take(pool: &PgPool) -> anyhow::Result<Self> {
        let rows: Vec<(String, f64, f64, f64, f64)> = sqlx::query_as(
            "SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text,
                    sum(pg_total_relation_size(c.oid))::float8,
                    coalesce(sum(s.n_tup_ins), 0)::float8,
                    coalesce(sum(s.n_tup_upd), 0)::float8,
                    coalesce(sum(s.n_tup_del), 0)::float8
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
             GROUP BY 1",
        )
        .fetch_all(pool)
        .await?;
        let (wal, wal_fpi, wal_records): (f64, f64, f64) = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8,
                    wal_fpi::float8, wal_records::float8
             FROM pg_stat_wal",
        )
        .fetch_one(pool)
        .await?;
        let tables = rows
            .into_iter()
            .map(|(name, bytes, inserted, updated, deleted)| {
                let stat = TableStat {
                    bytes,
                    inserted,
                    updated,
                    deleted,
                };
                (name, stat)
            })
            .collect();
        Ok(Self {
            tables,
            wal,
            wal_fpi,
            wal_records,
        })
    }
}

/// Bytes this process caused to be written to storage (`/proc/self/io` `write_bytes`): in
/// this bench, Headend's journal.
struct IoBytes(f64);

impl IoBytes {
    fn of_self() -> anyhow::Result<Self> {
        let io = std::fs::read_to_string("/proc/self/io")?;
        let bytes = io
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .context("write_bytes in /proc/self/io")?;
        Ok(Self(bytes.trim().parse()?))
    }

    fn since(&self, before: &Self) -> f64 {
        self.0 - before.0
    }
}

/// CPU-seconds over the window.
struct Cpu {
    wall: f64,
    machine: f64,
    headend: f64,
    postgres: f64,
    clients: f64,
    other: f64,
}

impl Cpu {
    fn of(span: &headend_e2e::bench::CpuSpan<'_>, postmaster: u32) -> Self {
        let process = span.this_process();
        let clients = span.threads(CLIENT_THREAD);
        let postgres = span.tree(postmaster);
        Self {
            wall: span.wall(),
            machine: span.machine(),
            headend: (process - clients).max(0.0),
            postgres,
            clients,
            other: span.other(process + postgres),
        }
    }
}

struct Measured {
    cpu: Cpu,
    before: Snapshot,
    after: Snapshot,
    /// Bytes Headend wrote to disk in the window.
    io: f64,
    /// (journal records not committed, energy_dirty rows) at the window's end.
    backlog: (u64, i64),
    rows: Rows,
    copy: CopyReference,
}

impl Bench<'_> {
    fn report(&self, out: &mut String, m: &Measured) -> anyhow::Result<()> {
        let p = self.params;
        let day = |figure: f64| p.per_meter_day(figure);
        let (measurement_msgs, counter_msgs) = (
            i64::from(p.meters) * p.window / p.measurements_every,
            i64::from(p.meters) * p.window / p.counters_every,
        );
        writeln!(out, "### Load\n\n| figure | value |\n| --- | --- |")?;
        writeln!(
            out,
            "| messages in the window | {measurement_msgs} measurements + {counter_msgs} counters \
             ({:.1} msg/s) |",
            (measurement_msgs + counter_msgs) as f64 / p.window as f64
        )?;
        writeln!(
            out,
            "| whole run: rows committed = messages published | measurements {}, \
             counter_readings {} (2 per counters message), ingest_rejects {} |",
            m.rows.measurements, m.rows.readings, m.rows.rejects
        )?;
        writeln!(
            out,
            "| backlog at the window's end | {} journal records uncommitted, {} energy_dirty rows |\n",
            m.backlog.0, m.backlog.1
        )?;

        let c = &m.cpu;
        writeln!(
            out,
            "### CPU over the window ({:.0} s wall)\n\n| part | CPU-s | cores | **CPU-s per meter \
             per day** | µs per message |\n| --- | --- | --- | --- | --- |",
            c.wall
        )?;
        let messages = (measurement_msgs + counter_msgs) as f64;
        for (name, secs) in [
            ("Headend (this process less the client threads)", c.headend),
            ("PostgreSQL (postmaster and its children)", c.postgres),
            ("Headend + PostgreSQL", c.headend + c.postgres),
            ("simulated gateways (bench clients)", c.clients),
            ("other (not the bench's)", c.other),
            ("machine", c.machine),
        ] {
            writeln!(
                out,
                "| {name} | {secs:.2} | {:.3} of {} | **{:.4}** | {:.0} |",
                secs / c.wall,
                cpus(),
                day(secs),
                secs / messages * 1e6
            )?;
        }
        writeln!(
            out,
            "\nPer meter per day = CPU-s in the window / {} meters × 86 400 / {} s.\n",
            p.meters, p.window
        )?;

        writeln!(
            out,
            "### Disk over the window\n\nGrowth of each table with its indexes, TOAST and \
             partitions (`pg_total_relation_size`); rows from `pg_stat_user_tables` (they may \
             lag a second). Tables updated in place grow by dead rows until vacuumed.\n\n\
             | table | rows inserted / updated / deleted | growth, bytes | **bytes per meter per \
             day** | bytes per inserted row |\n| --- | --- | --- | --- | --- |"
        )?;
        let mut total = 0.0;
        for (name, after) in &m.after.tables {
            let before = m.before.tables.get(name).copied().unwrap_or_default();
            let grew = after.bytes - before.bytes;
            let (ins, upd, del) = (
                after.inserted - before.inserted,
                after.updated - before.updated,
                after.deleted - before.deleted,
            );
            if grew == 0.0 && ins + upd + del == 0.0 {
                continue;
            }
            total += grew;
            let per_row = if ins > 0.0 {
                format!("{:.0}", grew / ins)
            } else {
                "-".into()
            };
            writeln!(
                out,
                "| {name} | {ins:.0} / {upd:.0} / {del:.0} | {grew:.0} | **{:.0}** | {per_row} |",
                day(grew)
            )?;
        }
        let wal = m.after.wal - m.before.wal;
        writeln!(
            out,
            "| **all tables** | | {total:.0} | **{:.0}** | |",
            day(total)
        )?;
        writeln!(
            out,
            "| **WAL** (`pg_current_wal_lsn`) | {:.0} records, {:.0} full-page images \
             (`pg_stat_wal`) | {wal:.0} | **{:.0}** | |",
            m.after.wal_records - m.before.wal_records,
            m.after.wal_fpi - m.before.wal_fpi,
            day(wal)
        )?;
        writeln!(
            out,
            "| **Headend's journal** (bytes written by the process, `/proc/self/io`) | | {:.0} \
             | **{:.0}** | |\n",
            m.io,
            day(m.io)
        )?;

        let r = &m.copy;
        let ingest_rows = (measurement_msgs + 2 * counter_msgs) as f64;
        writeln!(
            out,
            "### Reference: `COPY` of the window's rows into copies of the two tables\n\n\
             | figure | ingest (whole window: Headend + PostgreSQL) | COPY (PostgreSQL) |\n\
             | --- | --- | --- |"
        )?;
        writeln!(
            out,
            "| rows | {ingest_rows:.0} measurement + counter rows | {} rows in {:.2} s |",
            r.rows, r.wall
        )?;
        let rows = r.rows.max(1) as f64;
        writeln!(
            out,
            "| CPU per row | {:.1} µs | {:.1} µs |",
            (c.headend + c.postgres) / ingest_rows * 1e6,
            r.postgres / rows * 1e6
        )?;
        writeln!(
            out,
            "| WAL per row | {:.0} bytes | {:.0} bytes |",
            wal / ingest_rows,
            r.wal / rows
        )?;
        let readings_growth: f64 = ["measurements", "counter_readings"]
            .iter()
            .map(|t| {
                let a = m.after.tables.get(*t).map_or(0.0, |s| s.bytes);
                a - m.before.tables.get(*t).map_or(0.0, |s| s.bytes)
            })
            .sum();
        writeln!(
            out,
            "| bytes per row of the two tables | {:.0} | {:.0} |\n",
            readings_growth / ingest_rows,
            r.bytes / rows
        )?;
        writeln!(
            out,
            "The ingest column carries everything that ran in the window (energy worker, \
             rollups, timers, autovacuum, checkpoints); COPY only writes the rows, into fresh \
             tables without foreign keys.\n"
        )?;
        Ok(())
    }
}
