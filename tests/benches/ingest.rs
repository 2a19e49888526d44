//! Ingest benchmark: simulated SG gateways publish measurements and counters over MQTT to an
//! in-process Headend whose own PostgreSQL cluster fsyncs like production. In one run it reports
//!
//! 1. the sustained rate: every message published as fast as the clients can, timed from the
//!    first publish until the journal checkpoint says every row is committed, with row counts
//!    proving nothing was lost;
//! 2. the reference: a raw `COPY` of the same rows into copies of the same tables;
//! 3. publish-to-commit latency at a paced aggregate rate, measured with a trigger whose
//!    `NOTIFY` is delivered only when the writer's transaction commits;
//! 4. storage per message.
//!
//! Figures are reported, never asserted: compare the sustained rate with the `COPY` rate of the
//! same run. Client and server share the machine; the clients run on their own runtime so their
//! CPU time is reported apart.
//!
//! `cargo bench -p headend-e2e --bench ingest`, parameters in `HEADEND_BENCH_*` (see [`Params`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use chrono::NaiveDateTime;
use futures::{StreamExt, TryStreamExt};
use headend::config::Secret;
use headend::Config;
use headend_e2e::bench::{
    cpus, env_or, run_with_clients, CpuSample, Machine, MeterDocuments, CLIENT_THREAD,
};
use headend_e2e::{start_cluster, MqttClient, TestApp};
use rumqttc::{AsyncClient, Packet, QoS};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The foreign keys of the readings tables, instead of the statement-level parent checks.
const FOREIGN_KEYS: &str = "
    DROP TRIGGER measurements_devices_exist ON measurements;
    DROP TRIGGER counter_readings_counters_exist ON counter_readings;
    DROP TRIGGER energy_intervals_counters_exist ON energy_intervals;
    DROP TRIGGER devices_delete_readings ON devices;
    DROP TRIGGER counters_delete_readings ON counters;
    ALTER TABLE measurements ADD CONSTRAINT measurements_device_id_fkey
        FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE;
    ALTER TABLE counter_readings ADD CONSTRAINT counter_readings_counter_id_fkey
        FOREIGN KEY (counter_id) REFERENCES counters (id) ON DELETE CASCADE;
    ALTER TABLE energy_intervals ADD CONSTRAINT energy_intervals_counter_id_fkey
        FOREIGN KEY (counter_id) REFERENCES counters (id) ON DELETE CASCADE;";

/// Name of the client runtime's threads, so their CPU time can be told apart.
/// `header.local_time` format.
const LOCAL_TIME: &str = "%d.%m.%Y %H:%M:%S";
/// Gateways registered or connected at the same time.
const CONCURRENT_SETUP: usize = 8;
/// How long a wait may go without progress before the run is declared stuck.
const STALL: Duration = Duration::from_secs(60);

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_GATEWAYS`: simulated gateways, one MQTT connection each.
    gateways: u32,
    /// `HEADEND_BENCH_MESSAGES`: messages of the sustained phase (rounded down to a multiple
    /// of twice the gateways, so every gateway sends as many measurements as counters).
    messages_per_gateway: u32,
    /// `HEADEND_BENCH_RATE`: aggregate msg/s of the latency phase.
    rate: u32,
    /// `HEADEND_BENCH_SECONDS`: duration of the latency phase.
    seconds: u32,
    /// `HEADEND_BENCH_WRITERS`: ingest writers (`ingest.writers`; default: Headend's default).
    writers: Option<usize>,
    /// `HEADEND_BENCH_BATCH`: messages per batch at most (`ingest.batch_max_messages`; default:
    /// Headend's default).
    batch: Option<usize>,
    /// `HEADEND_BENCH_LINGER`: ms a short batch waits for more (`ingest.batch_linger_ms`;
    /// default: Headend's default).
    linger: Option<usize>,
    /// `HEADEND_BENCH_FOREIGN_KEYS=1`: the readings tables get back the foreign keys that
    /// migration `20261207000012` replaced by per-statement parent checks, so both schemas can
    /// be compared with the same build.
    foreign_keys: bool,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let gateways: u32 = env_or("HEADEND_BENCH_GATEWAYS", 200)?;
        let messages: u32 = env_or("HEADEND_BENCH_MESSAGES", 200_000)?;
        let rate = env_or("HEADEND_BENCH_RATE", 10_000)?;
        let seconds = env_or("HEADEND_BENCH_SECONDS", 20)?;
        ensure!(
            gateways > 0 && rate > 0 && seconds > 0,
            "parameters must be positive"
        );
        let messages_per_gateway = messages / gateways / 2 * 2;
        ensure!(
            messages_per_gateway > 0,
            "HEADEND_BENCH_MESSAGES must be at least twice HEADEND_BENCH_GATEWAYS"
        );
        let optional = |name: &str| -> anyhow::Result<Option<usize>> {
            match std::env::var(name) {
                Ok(v) => Ok(Some(v.parse().with_context(|| format!("{name}={v}"))?)),
                Err(_) => Ok(None),
            }
        };
        Ok(Self {
            gateways,
            messages_per_gateway,
            rate,
            seconds,
            writers: optional("HEADEND_BENCH_WRITERS")?,
            batch: optional("HEADEND_BENCH_BATCH")?,
            linger: optional("HEADEND_BENCH_LINGER")?,
            foreign_keys: optional("HEADEND_BENCH_FOREIGN_KEYS")?.is_some_and(|v| v != 0),
        })
    }

    fn messages(&self) -> u64 {
        u64::from(self.gateways) * u64::from(self.messages_per_gateway)
    }

    /// Messages per gateway in the latency phase.
    fn paced_per_gateway(&self) -> u32 {
        (u64::from(self.rate) * u64::from(self.seconds) / u64::from(self.gateways)).max(1) as u32
    }

    /// Time between two messages of one gateway in the latency phase.
    fn paced_period(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.gateways) / f64::from(self.rate))
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(None, |clients| async move { run(&params, &clients).await })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Measurements,
    Counters,
}

/// One prepared PUBLISH.
struct Message {
    kind: Kind,
    /// `local_time` as seconds since the epoch (gateways are in UTC).
    epoch: i64,
    payload: Bytes,
}

/// A serialised document whose `header.local_time` is overwritten for each message.
struct Template {
    json: Vec<u8>,
    time_at: usize,
}

impl Template {
    const PLACEHOLDER: &'static str = "00.00.0000 00:00:00";

    fn new(mut doc: Value) -> Self {
        doc["header"]["local_time"] = Self::PLACEHOLDER.into();
        let json = serde_json::to_vec(&doc).expect("a JSON value serialises");
        let time_at = json
            .windows(Self::PLACEHOLDER.len())
            .position(|w| w == Self::PLACEHOLDER.as_bytes())
            .expect("the placeholder is in the document");
        Self { json, time_at }
    }

    fn render(&self, local_time: NaiveDateTime) -> Bytes {
        let mut json = self.json.clone();
        let time = local_time.format(LOCAL_TIME).to_string();
        json[self.time_at..self.time_at + Self::PLACEHOLDER.len()].copy_from_slice(time.as_bytes());
        json.into()
    }
}

/// Templates for the meter of gateway `n`, which has its own meter serial.
fn templates(documents: &MeterDocuments, n: u32) -> [Template; 2] {
    documents.for_meter(n).map(Template::new)
}

/// A simulated gateway: one MQTT connection, PUBACKs counted in the background.
struct Gateway {
    client: AsyncClient,
    /// Measurements and counters topics, indexed by [`Kind`].
    topics: [String; 2],
    templates: [Template; 2],
    device_id: i64,
}

impl Gateway {
    /// Messages `range` of this gateway: measurements and counters alternately, each at its
    /// own `local_time` one second after the previous one.
    fn messages(&self, range: std::ops::Range<u32>) -> Vec<Message> {
        range
            .map(|k| {
                let kind = if k % 2 == 0 {
                    Kind::Measurements
                } else {
                    Kind::Counters
                };
                let local_time = self.local_time(k);
                Message {
                    kind,
                    epoch: local_time.and_utc().timestamp(),
                    payload: self.templates[kind as usize].render(local_time),
                }
            })
            .collect()
    }

    /// `local_time` of message `k`.
    fn local_time(&self, k: u32) -> NaiveDateTime {
        let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("valid base time");
        base + chrono::Duration::seconds(i64::from(k))
    }

    fn publisher(&self) -> Publisher {
        Publisher {
            client: self.client.clone(),
            topics: self.topics.clone(),
        }
    }
}

/// What a publishing task needs of its gateway.
struct Publisher {
    client: AsyncClient,
    topics: [String; 2],
}

impl Publisher {
    async fn publish(&self, message: &Message) -> anyhow::Result<()> {
        self.client
            .publish_bytes(
                self.topics[message.kind as usize].as_str(),
                QoS::AtLeastOnce,
                false,
                message.payload.clone(),
            )
            .await?;
        Ok(())
    }

    /// Publishes every message as fast as the connection takes them.
    async fn flood(self, messages: Vec<Message>) -> anyhow::Result<()> {
        for message in &messages {
            self.publish(message).await?;
        }
        Ok(())
    }

    /// Publishes message `k` at `first + k * period`; returns each measurement's epoch and
    /// scheduled instant (the latency baseline, so a client falling behind is not hidden).
    async fn paced(
        self,
        messages: Vec<Message>,
        first: Instant,
        period: Duration,
    ) -> anyhow::Result<Paced> {
        let mut paced = Paced::default();
        for (k, message) in messages.iter().enumerate() {
            let due = first + period.mul_f64(k as f64);
            tokio::time::sleep_until(due).await;
            let lag = due.elapsed();
            paced.max_lag = paced.max_lag.max(lag);
            paced.late += u64::from(lag > Duration::from_millis(10));
            self.publish(message).await?;
            paced.last = Some(Instant::now());
            if message.kind == Kind::Measurements {
                paced.sends.push((message.epoch, due));
            }
        }
        Ok(paced)
    }
}

#[derive(Default)]
struct Paced {
    sends: Vec<(i64, Instant)>,
    max_lag: Duration,
    /// Messages sent more than 10 ms after their scheduled instant.
    late: u64,
    last: Option<Instant>,
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
    let postmaster = std::fs::read_to_string(pg_dir.path().join("cluster/postmaster.pid"))?
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
    config.database.max_connections = 8;
    config.mqtt.max_connections = params.gateways as usize + 16;
    config.log.filter = "warn".into();
    // `app.metric` scrapes /metrics, which answers 401 without the scraper token.
    config.http.metrics_token = Some(Secret::new(headend_e2e::METRICS_TOKEN));
    if let Some(writers) = params.writers {
        config.ingest.writers = writers;
    }
    if let Some(batch) = params.batch {
        config.ingest.batch_max_messages = batch;
    }
    if let Some(linger) = params.linger {
        config.ingest.batch_linger_ms = linger as u64;
    }
    let ingest = format!(
        "{} ingest writers, batches of up to {} messages, a short batch waits up to {} ms",
        config.ingest.writers, config.ingest.batch_max_messages, config.ingest.batch_linger_ms
    );
    let app = TestApp::start(config, data_dir).await;

    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&app.pool)
        .await?;
    let parents = if params.foreign_keys {
        sqlx::raw_sql(FOREIGN_KEYS).execute(&app.pool).await?;
        "foreign keys on the readings tables (the schema before migration 20261207000012)"
    } else {
        "readings' parents checked once per statement (migration 20261207000012)"
    };
    let mut report = format!(
        "## Ingest benchmark\n\n{}\n\nPostgreSQL {pg_version} (own cluster, fsync and \
         synchronous_commit on); Headend in process with {ingest}; {parents}.\n\nParameters: {} gateways; \
         sustained phase {} messages; latency phase {} msg/s for {} s.\n\n",
        Machine::probe().describe("Clients, Headend and PostgreSQL share it."),
        params.gateways,
        params.messages(),
        params.rate,
        params.seconds
    );

    eprintln!("registering and connecting {} gateways", params.gateways);
    let fixtures = MeterDocuments::load()?;
    let acks = Arc::new(AtomicU64::new(0));
    let gateways = connect_gateways(&app, params, &fixtures, clients, &acks).await?;
    let mut bench = Bench {
        params,
        clients,
        app,
        url,
        fixtures,
        gateways,
        acks,
        postmaster,
        report: String::new(),
    };
    let sustained = bench.sustained().await?;
    // Storage is measured on the rows of the sustained phase only.
    let storage = bench.storage().await?;
    let copy = bench.reference(sustained).await?;
    let p99 = bench.latency().await?;
    bench.storage_section(&storage)?;
    report.push_str(&bench.report);

    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    writeln!(report, "### Targets\n")?;
    writeln!(report, "| target | figure | met |\n| --- | --- | --- |")?;
    for (target, figure, ok) in [
        (
            "sustained ≥ ½ COPY rate",
            format!("{sustained:.0} vs {:.0} msg/s", copy / 2.0),
            sustained >= copy / 2.0,
        ),
        (
            "sustained ≥ 20 000 msg/s (floor)",
            format!("{sustained:.0} msg/s"),
            sustained >= 20_000.0,
        ),
        (
            "p99 ≤ 50 ms at 10 000 msg/s",
            format!("{} at {} msg/s", millis(p99), params.rate),
            p99 <= Duration::from_millis(50) && params.rate >= 10_000,
        ),
        (
            "≤ 400 bytes per measurement message",
            format!("{:.0} bytes", storage.per_measurement),
            storage.per_measurement <= 400.0,
        ),
    ] {
        writeln!(report, "| {target} | {figure} | {} |", met(ok))?;
    }
    writeln!(report)?;

    for gateway in &bench.gateways {
        let _ = gateway.client.try_disconnect();
    }
    bench.app.stop().await;
    cluster.stop().await?;
    Ok(report)
}

/// Headend with its connected gateways, and the report so far.
struct Bench<'a> {
    params: &'a Params,
    clients: &'a Handle,
    app: TestApp,
    url: String,
    fixtures: MeterDocuments,
    gateways: Vec<Gateway>,
    acks: Arc<AtomicU64>,
    /// The cluster's postmaster, whose process tree is PostgreSQL's CPU time.
    postmaster: u32,
    report: String,
}

struct Storage {
    /// Bytes of `measurements` (table and primary key) per row, i.e. per message.
    per_measurement: f64,
    /// Bytes of `counter_readings` (table and primary key) per row.
    per_reading: f64,
}

impl Bench<'_> {
    /// Waits until `n` PUBACKs arrived after `before` of them.
    async fn acks_after(&self, before: u64, n: u64) -> anyhow::Result<u64> {
        progress("PUBACKs", n, || {
            std::future::ready(self.acks.load(Ordering::Relaxed) - before)
        })
        .await
    }

    /// Waits until every record in the journal is committed to PostgreSQL (after all PUBACKs,
    /// every message is in the journal); returns the last journal sequence number.
    async fn wait_committed(&self) -> anyhow::Result<u64> {
        let app = &self.app;
        let last_seq = app
            .metric("headend_journal_last_seq")
            .await
            .context("journal metrics")? as u64;
        progress("journal checkpoint", last_seq, || async {
            app.metric("headend_journal_checkpoint")
                .await
                .unwrap_or(0.0) as u64
        })
        .await?;
        Ok(last_seq)
    }

    /// Phase 1: every message as fast as the clients can; returns msg/s, publish to commit.
    async fn sustained(&mut self) -> anyhow::Result<f64> {
        let (app, params) = (&self.app, self.params);
        let messages: Vec<Vec<Message>> = self
            .gateways
            .iter()
            .map(|g| g.messages(0..params.messages_per_gateway))
            .collect();
        let total = params.messages();
        let measurement_messages = total / 2;
        let counter_messages = total - measurement_messages;
        let journal_before = app.metric("headend_journal_last_seq").await.unwrap_or(0.0) as u64;
        eprintln!("phase 1: publishing {total} messages");
        let acks_before = self.acks.load(Ordering::Relaxed);
        let cpu = CpuSample::now()?;
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for (gateway, messages) in self.gateways.iter().zip(messages) {
            tasks.spawn_on(gateway.publisher().flood(messages), self.clients);
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let published = start.elapsed();
        let acked = self.acks_after(acks_before, total).await?;
        let all_acked = start.elapsed();
        let last_seq = self.wait_committed().await?;
        let committed = start.elapsed();
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);

        let measurements = app.count("SELECT count(*) FROM measurements").await as u64;
        let readings = app.count("SELECT count(*) FROM counter_readings").await as u64;
        let rejects = app.count("SELECT count(*) FROM ingest_rejects").await;
        let batches = app.metric("headend_db_batches_total").await.unwrap_or(0.0);
        let per_message = self.fixtures.counters_per_message;
        let expected_readings = counter_messages * per_message;
        let sustained = total as f64 / committed.as_secs_f64();
        writeln!(
            self.report,
            "### Sustained: publish as fast as the clients can\n"
        )?;
        table(
            &mut self.report,
            &[
                (
                    "messages published",
                    format!(
                        "{total} ({measurement_messages} measurements, {counter_messages} counters)"
                    ),
                ),
                ("PUBACKs received", acked.to_string()),
                (
                    "rows committed",
                    format!(
                        "measurements {measurements} of {measurement_messages}; counter_readings \
                         {readings} of {expected_readings} ({counter_messages} × {per_message})"
                    ),
                ),
                ("ingest_rejects", rejects.to_string()),
                (
                    "journal records appended",
                    (last_seq - journal_before).to_string(),
                ),
                (
                    "database batches",
                    format!(
                        "{batches} (≈ {:.0} messages each)",
                        total as f64 / batches.max(1.0)
                    ),
                ),
                ("all handed to the client library", secs(published)),
                (
                    "all PUBACKs (durable in the journal)",
                    format!("{} ({} msg/s)", secs(all_acked), rate(total, all_acked)),
                ),
                ("all rows committed", secs(committed)),
                (
                    "**sustained rate, publish → commit**",
                    format!("**{sustained:.0} msg/s**"),
                ),
                ("CPU (cores busy)", cpu.to_string()),
            ],
        )?;
        ensure!(
            measurements == measurement_messages && readings == expected_readings,
            "rows lost or duplicated: {measurements} measurements, {readings} counter readings"
        );
        Ok(sustained)
    }

    async fn storage(&self) -> anyhow::Result<Storage> {
        let (per_measurement, per_reading) = sqlx::query_as(
            // The tables are partitioned: their size is their partitions'.
            "SELECT (SELECT sum(pg_total_relation_size(relid))
                     FROM pg_partition_tree('measurements'))::float8
                        / (SELECT count(*) FROM measurements),
                    (SELECT sum(pg_total_relation_size(relid))
                     FROM pg_partition_tree('counter_readings'))::float8
                        / (SELECT count(*) FROM counter_readings)",
        )
        .fetch_one(&self.app.pool)
        .await?;
        Ok(Storage {
            per_measurement,
            per_reading,
        })
    }

    fn storage_section(&mut self, storage: &Storage) -> anyhow::Result<()> {
        let counters = self.fixtures.counters_per_message;
        writeln!(self.report, "### Storage (after the sustained phase)\n")?;
        table(
            &mut self.report,
            &[
                (
                    "measurements (table + primary key), per message",
                    format!("{:.0} bytes", storage.per_measurement),
                ),
                (
                    "counter_readings (table + primary key), per reading",
                    format!(
                        "{:.0} bytes ({:.0} per message of {counters} counters)",
                        storage.per_reading,
                        storage.per_reading * counters as f64
                    ),
                ),
            ],
        )?;
        Ok(())
    }

    /// The reference: COPY of the rows the sustained phase committed; returns msg/s equivalent.
    async fn reference(&mut self, sustained: f64) -> anyhow::Result<f64> {
        eprintln!("reference: COPY of the same rows");
        let cpu = CpuSample::now()?;
        let copy = copy_reference(&self.url).await?;
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        let rows = copy.measurements + copy.readings;
        let copy_rate = self.params.messages() as f64 / copy.took.as_secs_f64();
        writeln!(
            self.report,
            "### Reference: COPY of the same rows, same database\n"
        )?;
        table(
            &mut self.report,
            &[
                (
                    "rows",
                    format!(
                        "{rows} ({} measurements, {} counter readings)",
                        copy.measurements, copy.readings
                    ),
                ),
                ("time (both COPYs, committed)", secs(copy.took)),
                ("rows/s", rate(rows, copy.took)),
                ("messages/s equivalent", format!("{copy_rate:.0}")),
                (
                    "**sustained / COPY**",
                    format!("**{:.2}**", sustained / copy_rate),
                ),
                ("CPU (cores busy)", cpu.to_string()),
            ],
        )?;
        Ok(copy_rate)
    }

    /// Phase 2: paced publishing, later timestamps; returns the p99 publish-to-commit latency.
    async fn latency(&mut self) -> anyhow::Result<Duration> {
        let params = self.params;
        let device_ids = device_ids(&self.app).await?;
        for (n, gateway) in self.gateways.iter_mut().enumerate() {
            gateway.device_id = *device_ids
                .get(&gateway_serial(n as u32))
                .context("device of every gateway")?;
        }
        // A NOTIFY is delivered when the inserting transaction commits, and only then. One per
        // statement, naming the transaction (the 32 bits that are its rows' `xmin`), keeps the
        // probe cheap; the rows are matched to their commit afterwards.
        sqlx::raw_sql(
            "CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_notify('bench', (txid_current() % 4294967296)::text);
                 RETURN NULL;
             END $$;
             CREATE TRIGGER bench_notify AFTER INSERT ON measurements
                 FOR EACH STATEMENT EXECUTE FUNCTION bench_notify();",
        )
        .execute(&self.app.pool)
        .await?;
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen("bench").await?;

        let per_gateway = params.paced_per_gateway();
        let first_k = params.messages_per_gateway;
        let messages: Vec<Vec<Message>> = self
            .gateways
            .iter()
            .map(|g| g.messages(first_k..first_k + per_gateway))
            .collect();
        let total = u64::from(per_gateway) * u64::from(params.gateways);
        let timed = messages
            .iter()
            .flatten()
            .filter(|m| m.kind == Kind::Measurements)
            .count();
        eprintln!(
            "phase 2: {} msg/s for {} s ({total} messages)",
            params.rate, params.seconds
        );
        let stop = CancellationToken::new();
        let commits = self.clients.spawn(collect_commits(listener, stop.clone()));
        let acks_before = self.acks.load(Ordering::Relaxed);
        let batches_before = self
            .app
            .metric("headend_db_batches_total")
            .await
            .unwrap_or(0.0);
        let period = params.paced_period();
        let stagger = period / params.gateways;
        let first = Instant::now() + Duration::from_millis(200);
        let cpu = CpuSample::now()?;
        let mut tasks = JoinSet::new();
        for (n, (gateway, messages)) in self.gateways.iter().zip(messages).enumerate() {
            let device = gateway.device_id;
            let paced = gateway
                .publisher()
                .paced(messages, first + stagger * n as u32, period);
            tasks.spawn_on(
                async move { paced.await.map(|p| (device, p)) },
                self.clients,
            );
        }
        let mut sent: HashMap<(i64, i64), Instant> = HashMap::with_capacity(timed);
        let (mut max_lag, mut late, mut last) = (Duration::ZERO, 0, first);
        while let Some(done) = tasks.join_next().await {
            let (device, paced) = done??;
            sent.extend(
                paced
                    .sends
                    .into_iter()
                    .map(|(epoch, at)| ((device, epoch), at)),
            );
            max_lag = max_lag.max(paced.max_lag);
            late += paced.late;
            last = last.max(paced.last.unwrap_or(first));
        }
        let publishing = last - first;
        let acked = self.acks_after(acks_before, total).await?;
        self.wait_committed().await?;
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        let batches = self
            .app
            .metric("headend_db_batches_total")
            .await
            .unwrap_or(0.0)
            - batches_before;
        // The notifications of the last commits are on their way; give them a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        let commits = commits.await??;
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT device_id, extract(epoch FROM ts)::bigint, xmin::text::bigint
             FROM measurements WHERE ts >= $1",
        )
        .bind(self.gateways[0].local_time(first_k).and_utc())
        .fetch_all(&self.app.pool)
        .await?;
        let mut latencies: Vec<Duration> = rows
            .into_iter()
            .filter_map(|(device, epoch, xid)| {
                Some(*commits.get(&xid)? - *sent.get(&(device, epoch))?)
            })
            .collect();
        latencies.sort_unstable();
        let p = |q: f64| percentile(&latencies, q).map_or("-".into(), millis);
        writeln!(
            self.report,
            "### Latency: {} msg/s for {} s, publish → commit of the measurement row\n",
            params.rate, params.seconds
        )?;
        table(
            &mut self.report,
            &[
                (
                    "messages published",
                    format!(
                        "{total} in {} ({} msg/s achieved), PUBACKs {acked}",
                        secs(publishing),
                        rate(total, publishing)
                    ),
                ),
                (
                    "schedule",
                    format!(
                        "{late} sends more than 10 ms late; worst {}",
                        millis(max_lag)
                    ),
                ),
                (
                    "measurements timed",
                    format!(
                        "{} of {} (missing {})",
                        latencies.len(),
                        sent.len(),
                        sent.len() - latencies.len()
                    ),
                ),
                (
                    "database batches",
                    format!(
                        "{batches} (≈ {:.0} messages each)",
                        total as f64 / batches.max(1.0)
                    ),
                ),
                ("p50", p(0.50)),
                ("p90", p(0.90)),
                ("**p99**", format!("**{}**", p(0.99))),
                ("max", p(1.0)),
                ("CPU (cores busy)", cpu.to_string()),
            ],
        )?;
        Ok(percentile(&latencies, 0.99).unwrap_or(Duration::MAX))
    }
}

fn gateway_serial(n: u32) -> String {
    format!("BENCH{n:05}")
}

/// Registers the gateways (in UTC) and connects one client for each, on the client runtime.
async fn connect_gateways(
    app: &TestApp,
    params: &Params,
    fixtures: &MeterDocuments,
    clients: &Handle,
    acks: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<Gateway>> {
    let serials: Vec<String> = (0..params.gateways).map(gateway_serial).collect();
    // A few at a time: registering hashes a password and connecting verifies it (Argon2), and
    // a client gives up on a CONNACK after a few seconds.
    let passwords: Vec<String> = futures::stream::iter(&serials)
        .map(|s| app.gateway(s, None, Some("UTC")))
        .buffered(CONCURRENT_SETUP)
        .collect()
        .await;
    let addr = app.mqtt.context("embedded MQTT")?;
    let limit = Arc::new(Semaphore::new(CONCURRENT_SETUP));
    let mut connecting = JoinSet::new();
    for (n, (serial, password)) in serials.into_iter().zip(passwords).enumerate() {
        let limit = limit.clone();
        connecting.spawn_on(
            async move {
                let _permit = limit.acquire_owned().await;
                let client = MqttClient::connect(addr, &format!("{serial}-1"), &serial, &password)
                    .await
                    .with_context(|| format!("connecting {serial}"));
                (n, serial, client)
            },
            clients,
        );
    }
    let mut gateways = Vec::with_capacity(params.gateways as usize);
    while let Some(joined) = connecting.join_next().await {
        let (n, serial, mqtt) = joined?;
        let mut mqtt = mqtt?;
        let client = mqtt.client.clone();
        let acks = acks.clone();
        clients.spawn(async move {
            while let Some(packet) = mqtt.events.recv().await {
                if matches!(packet, Packet::PubAck(_)) {
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let topic = |kind: &str| format!("sg/{serial}/pub/{kind}/rs485/1");
        gateways.push((
            n,
            Gateway {
                client,
                topics: [topic("measurements"), topic("counters")],
                templates: templates(fixtures, n as u32),
                device_id: 0,
            },
        ));
    }
    gateways.sort_by_key(|(n, _)| *n);
    Ok(gateways.into_iter().map(|(_, g)| g).collect())
}

/// The meter device of every gateway, by gateway serial.
async fn device_ids(app: &TestApp) -> anyhow::Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT g.serial, d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
         WHERE d.kind = 'meter' AND d.port = 'rs485' AND d.slot = 1",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Waits until `probe` reaches `target`, polling every few milliseconds; fails when it makes no
/// progress for [`STALL`]. Returns the last value.
async fn progress<F, Fut>(what: &str, target: u64, mut probe: F) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    let (mut last, mut moved) = (probe().await, Instant::now());
    while last < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = probe().await;
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > STALL {
            bail!("{what} stuck at {last} of {target}");
        }
    }
    Ok(last)
}

/// When each transaction that inserted measurements committed, by transaction id.
async fn collect_commits(
    mut listener: PgListener,
    stop: CancellationToken,
) -> anyhow::Result<HashMap<i64, Instant>> {
    let mut commits = HashMap::new();
    loop {
        let notification = tokio::select! {
            () = stop.cancelled() => return Ok(commits),
            n = listener.recv() => n?,
        };
        commits.insert(notification.payload().parse()?, Instant::now());
    }
}

struct CopyReference {
    measurements: u64,
    readings: u64,
    took: Duration,
}

/// Reads the committed rows out (untimed; through a query, the tables being partitioned), then
/// times `COPY ... FROM STDIN` of them into `LIKE ... INCLUDING ALL` copies of the tables (same
/// columns and primary keys; no foreign keys or triggers), each COPY committed.
async fn copy_reference(url: &str) -> anyhow::Result<CopyReference> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql(
        "CREATE TABLE measurements_copy (LIKE measurements INCLUDING ALL);
         CREATE TABLE counter_readings_copy (LIKE counter_readings INCLUDING ALL);",
    )
    .execute(&mut conn)
    .await?;
    let measurements: Vec<Bytes> = conn
        .copy_out_raw("COPY (SELECT * FROM measurements) TO STDOUT")
        .await?
        .try_collect()
        .await?;
    let readings: Vec<Bytes> = conn
        .copy_out_raw("COPY (SELECT * FROM counter_readings) TO STDOUT")
        .await?
        .try_collect()
        .await?;
    let start = Instant::now();
    let measurements = copy_in(&mut conn, "measurements_copy", measurements).await?;
    let readings = copy_in(&mut conn, "counter_readings_copy", readings).await?;
    let took = start.elapsed();
    conn.close().await?;
    Ok(CopyReference {
        measurements,
        readings,
        took,
    })
}

async fn copy_in(conn: &mut PgConnection, table: &str, data: Vec<Bytes>) -> anyhow::Result<u64> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} FROM STDIN"))
        .await?;
    for chunk in data {
        copy.send(chunk).await?;
    }
    Ok(copy.finish().await?)
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q).round() as usize])
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.0}", n as f64 / d.as_secs_f64())
}

fn table(out: &mut String, rows: &[(&str, String)]) -> std::fmt::Result {
    writeln!(out, "| figure | value |\n| --- | --- |")?;
    for (name, value) in rows {
        writeln!(out, "| {name} | {value} |")?;
    }
    writeln!(out)
}

/// Cores kept busy between two samples: Headend (this process less the client threads), the
/// clients, PostgreSQL (the postmaster and its backends) and everything else.
fn cpu_use(before: &CpuSample, after: &CpuSample, postmaster: u32) -> CpuUse {
    let span = after.since(before);
    let process = span.this_process();
    let clients = span.threads(CLIENT_THREAD);
    let postgres = span.tree(postmaster);
    CpuUse {
        machine: span.cores(span.machine()),
        headend: span.cores((process - clients).max(0.0)),
        clients: span.cores(clients),
        postgres: span.cores(postgres),
        other: span.cores(span.other(process + postgres)),
    }
}

/// Cores kept busy, on average.
struct CpuUse {
    machine: f64,
    headend: f64,
    clients: f64,
    postgres: f64,
    /// Everything else on the machine (kernel threads, other users).
    other: f64,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} of {}: Headend and harness {:.2}, MQTT clients {:.2}, PostgreSQL {:.2}, \
             other {:.2}",
            self.machine,
            cpus(),
            self.headend,
            self.clients,
            self.postgres,
            self.other
        )
    }
}
