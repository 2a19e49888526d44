//! Cluster benchmark (issue 16): aggregate ingest with 1, 2 and 3 `headend serve` instances on
//! one PostgreSQL. For each instance count N it starts a fresh database on one dedicated cluster
//! (fsync and `synchronous_commit` on, as in production), N `headend serve` processes on it,
//! and a fixed fleet of simulated gateways (real MQTT clients, QoS 1) split evenly across the
//! instances' brokers. Every gateway publishes its share of a fixed number of messages
//! (measurements and counters alternately) as fast as its PUBACKs allow; the run is timed from
//! the first publish until the database holds every row. In the same run and database it times
//! the reference, a raw `COPY` of the same rows into copies of the same tables, and reports
//! the ratio of each N to N = 1.
//!
//! The instances are separate processes, not `TestApp`s in this process: each embedded broker
//! runs threads and a runtime of its own that cannot be told apart in one process, and the
//! question is how the CPU splits between the instances, PostgreSQL (its backends, WAL writer,
//! checkpointer) and the clients: every figure comes from `/proc/<pid>/stat`. WAL volume and
//! flushes come from `pg_current_wal_lsn()` and `pg_stat_wal`.
//!
//! Figures are reported, never asserted. `cargo bench -p headend-e2e --bench cluster` after
//! `cargo build --release -p headend`; parameters in `HEADEND_BENCH_*` (see [`Params`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use headend::fleet::gateways::{create, NewGateway};
use headend::zone::TimeZone;
use headend_e2e::bench::process::release_binary;
use headend_e2e::bench::{
    cpus, env_or, run_with_clients, CpuSample, CpuSpan, Machine, MeterDocuments, CLIENT_THREAD,
};
use headend_e2e::{eventually, http_request, start_cluster, MqttClient};
use headend_pgembed::RunningCluster;
use rumqttc::{AsyncClient, Packet, QoS};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Name of the client runtime's threads, so their CPU time can be told apart.
/// `header.local_time` format.
const LOCAL_TIME: &str = "%d.%m.%Y %H:%M:%S";
/// Gateways registered or connected at the same time (Argon2 on both sides).
const CONCURRENT_SETUP: usize = 8;
/// How long a wait may go without progress before the run is declared stuck.
const STALL: Duration = Duration::from_secs(60);
/// Period of the commit probe (a few hundred primary-key lookups).
const PROBE: Duration = Duration::from_millis(25);

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_GATEWAYS`: simulated gateways, one MQTT connection each, split evenly.
    gateways: u32,
    /// `HEADEND_BENCH_MESSAGES`: messages per instance count (rounded down to a multiple of
    /// twice the gateways: every gateway sends as many measurements as counters).
    per_gateway: u32,
    /// `HEADEND_BENCH_INSTANCES`: instance counts, comma-separated (`1,2,3`).
    instances: Vec<usize>,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let gateways: u32 = env_or("HEADEND_BENCH_GATEWAYS", 200)?;
        let messages: u32 = env_or("HEADEND_BENCH_MESSAGES", 100_000)?;
        let instances: String = env_or("HEADEND_BENCH_INSTANCES", "1,2,3".into())?;
        let instances = instances
            .split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("HEADEND_BENCH_INSTANCES")?;
        ensure!(gateways > 0, "HEADEND_BENCH_GATEWAYS must be positive");
        ensure!(
            !instances.is_empty() && instances.iter().all(|&n| n > 0),
            "HEADEND_BENCH_INSTANCES: positive counts"
        );
        let per_gateway = messages / gateways / 2 * 2;
        ensure!(
            per_gateway > 0,
            "HEADEND_BENCH_MESSAGES must be at least twice HEADEND_BENCH_GATEWAYS"
        );
        Ok(Self {
            gateways,
            per_gateway,
            instances,
        })
    }

    fn messages(&self) -> u64 {
        u64::from(self.gateways) * u64::from(self.per_gateway)
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(None, |clients| async move { run(&params, &clients).await })
}

/// Messages of the meters.
struct Documents(MeterDocuments);

impl Documents {
    /// Messages of gateway `n` (its own meter serial): measurements at even seconds, counters
    /// at odd ones, so every message is a row of its own; rendered before the clock starts.
    fn messages(&self, n: u32, count: u32) -> anyhow::Result<Vec<(bool, Bytes)>> {
        let mut docs = self.0.for_meter(n);
        (0..count)
            .map(|k| {
                let doc = &mut docs[(k % 2) as usize];
                doc["header"]["local_time"] = local_time(k).format(LOCAL_TIME).to_string().into();
                Ok((k % 2 == 0, serde_json::to_vec(doc)?.into()))
            })
            .collect()
    }
}

/// `local_time` of message `k` of every gateway (UTC).
fn local_time(k: u32) -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid base time")
        + chrono::Duration::seconds(i64::from(k))
}

/// What every run shares.
struct Setup<'a> {
    params: &'a Params,
    clients: &'a Handle,
    cluster: &'a RunningCluster,
    postmaster: u32,
    binary: PathBuf,
    documents: Documents,
}

async fn run(params: &Params, clients: &Handle) -> anyhow::Result<String> {
    let binary = release_binary("headend", "headend")?;
    let pg_dir = tempfile::Builder::new().prefix("hebench-pg").tempdir()?;
    // PostgreSQL runs as `postgres` when we are root: the parent must be traversable.
    std::fs::set_permissions(
        pg_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let cluster = start_cluster(&pg_dir.path().join("cluster"), false).await?;
    let postmaster = std::fs::read_to_string(pg_dir.path().join("cluster/postmaster.pid"))?
        .lines()
        .next()
        .context("postmaster.pid")?
        .parse()?;
    let setup = Setup {
        params,
        clients,
        cluster: &cluster,
        postmaster,
        binary,
        documents: Documents(MeterDocuments::load()?),
    };
    let mut report = format!(
        "## Cluster benchmark: aggregate ingest with {} instances\n\n{}\n\nOne PostgreSQL \
         cluster (fsync and synchronous_commit on), a fresh database per instance count; \
         `headend serve` processes with default ingest settings, 8 database connections each. \
         {} gateways (QoS 1, inflight 100), gateway i on instance i mod N; {} messages per \
         instance count (measurements and counters alternately, {} counter readings per \
         counter message).\n\n",
        params
            .instances
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        Machine::probe().describe("Clients, the instances and PostgreSQL share it."),
        params.gateways,
        params.messages(),
        setup.documents.0.counters_per_message
    );
    let mut runs = Vec::new();
    for (k, &n) in params.instances.iter().enumerate() {
        eprintln!("run {}: {n} instance(s)", k + 1);
        runs.push(setup.measure(n, k).await?);
    }
    summary(&mut report, &runs)?;
    for run in &runs {
        run.details(&mut report)?;
    }
    if let Some(storage) = runs.first().map(|r| &r.storage) {
        report.push_str(storage);
    }
    cluster.stop().await?;
    Ok(report)
}

/// One `headend serve` process.
struct Instance {
    child: Child,
    pid: u32,
    mqtt: std::net::SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Instance {
    async fn start(binary: &Path, url: &str, name: &str, gateways: u32) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new().prefix("hebench-inst").tempdir()?;
        let log = std::fs::File::create(data_dir.path().join("serve.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .env_remove("HEADEND_CONFIG")
            .env("HEADEND_DATA_DIR", data_dir.path())
            .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
            .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
            .env("HEADEND_DATABASE_URL", url)
            .env("HEADEND_INSTANCE", name)
            .env("HEADEND_LOG", "warn")
            .env("HEADEND_DATABASE__MAX_CONNECTIONS", "8")
            .env("HEADEND_MQTT__MAX_CONNECTIONS", (gateways + 16).to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("serve pid")?;
        let runtime = data_dir.path().join("runtime.json");
        let addrs = eventually(Duration::from_secs(120), || async {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
            let http: std::net::SocketAddr = v["http_addr"].as_str()?.parse().ok()?;
            Some((http, v["mqtt_addr"].as_str()?.parse().ok()?))
        })
        .await;
        let log = || std::fs::read_to_string(data_dir.path().join("serve.log")).unwrap_or_default();
        let Some((http, mqtt)) = addrs else {
            bail!("instance {name} did not start: {}", log());
        };
        // Serving once it answers HTTP at all.
        let serving = eventually(Duration::from_secs(60), || async {
            http_request(http, "GET", "/healthz", None, None).await.ok()
        })
        .await;
        ensure!(
            serving.is_some(),
            "instance {name} does not answer: {}",
            log()
        );
        Ok(Self {
            child,
            pid,
            mqtt,
            _data_dir: data_dir,
        })
    }

    /// SIGTERM, then waits for it to end.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        Ok(())
    }
}

/// Figures of one instance count.
struct Run {
    instances: usize,
    messages: u64,
    rows: u64,
    acked: Duration,
    committed: Duration,
    cpu: Cpu,
    wal: Wal,
    copy_rows: u64,
    copy_took: Duration,
    copy_cpu: Cpu,
    storage: String,
}

impl Run {
    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.committed.as_secs_f64()
    }

    fn copy_rows_per_second(&self) -> f64 {
        self.copy_rows as f64 / self.copy_took.as_secs_f64()
    }

    fn details(&self, out: &mut String) -> anyhow::Result<()> {
        let secs = self.committed.as_secs_f64();
        writeln!(out, "### {} instance(s)\n", self.instances)?;
        writeln!(out, "| figure | value |\n| --- | --- |")?;
        let rows = [
            (
                "messages, all PUBACKed after".to_owned(),
                format!(
                    "{} in {:.2} s ({:.0} msg/s)",
                    self.messages,
                    self.acked.as_secs_f64(),
                    self.messages as f64 / self.acked.as_secs_f64()
                ),
            ),
            (
                "rows committed (counted in the database)".into(),
                format!(
                    "{} in {secs:.2} s: **{:.0} rows/s** ({:.0} msg/s)",
                    self.rows,
                    self.rows_per_second(),
                    self.messages as f64 / secs
                ),
            ),
            ("CPU during ingest (cores)".into(), self.cpu.to_string()),
            (
                "WAL".into(),
                format!(
                    "{:.1} MB ({:.2} MB/s, {:.0} bytes/row); {} flushes ({:.0}/s), {} writes, \
                     {} full-page images (pg_stat_wal, ±1 s)",
                    self.wal.bytes / 1e6,
                    self.wal.bytes / 1e6 / secs,
                    self.wal.bytes / self.rows as f64,
                    self.wal.syncs,
                    self.wal.syncs as f64 / secs,
                    self.wal.writes,
                    self.wal.fpi
                ),
            ),
            (
                "COPY of the same rows".into(),
                format!(
                    "{} rows in {:.2} s: {:.0} rows/s; CPU {}",
                    self.copy_rows,
                    self.copy_took.as_secs_f64(),
                    self.copy_rows_per_second(),
                    self.copy_cpu
                ),
            ),
        ];
        for (name, value) in rows {
            writeln!(out, "| {name} | {value} |")?;
        }
        writeln!(out)?;
        Ok(())
    }
}

fn summary(out: &mut String, runs: &[Run]) -> anyhow::Result<()> {
    let base = runs.first().map_or(1.0, Run::rows_per_second);
    writeln!(out, "### Summary\n")?;
    writeln!(
        out,
        "| instances | rows/s committed | **ratio to the first** | COPY rows/s (same run) | \
         ingest / COPY | instances' CPU | PostgreSQL CPU | clients | other | WAL MB/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )?;
    for run in runs {
        let cpu = &run.cpu;
        writeln!(
            out,
            "| {} | {:.0} | **{:.2}** | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            run.instances,
            run.rows_per_second(),
            run.rows_per_second() / base,
            run.copy_rows_per_second(),
            run.rows_per_second() / run.copy_rows_per_second(),
            cpu.instances.iter().sum::<f64>(),
            cpu.postgres,
            cpu.clients,
            cpu.other,
            run.wal.bytes / 1e6 / run.committed.as_secs_f64()
        )?;
    }
    writeln!(out)?;
    Ok(())
}

impl Setup<'_> {
    /// One instance count: fresh database, N instances, the fleet, the flood, the reference.
    async fn measure(&self, n: usize, k: usize) -> anyhow::Result<Run> {
        let params = self.params;
        let database = format!("cluster_{k}_{n}");
        self.cluster.create_database(&database).await?;
        let url = self.cluster.url(&database);
        let mut instances = Vec::with_capacity(n);
        // The first one migrates the database; the others start on it.
        for i in 0..n {
            let name = format!("bench-{k}-{i}");
            instances.push(Instance::start(&self.binary, &url, &name, params.gateways).await?);
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        eprintln!("  registering and connecting {} gateways", params.gateways);
        let mqtt: Vec<_> = instances.iter().map(|i| i.mqtt).collect();
        let acks = Arc::new(AtomicU64::new(0));
        let gateways = self.connect(&pool, &mqtt, &acks).await?;
        let messages = (0..params.gateways)
            .map(|g| self.documents.messages(g, params.per_gateway))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let total = params.messages();
        let expected = (total / 2, total / 2 * self.documents.0.counters_per_message);

        // pg_stat_wal is flushed by the backends about once a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let wal = Wal::read(&pool).await?;
        let cpu = CpuSample::now()?;
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for ((client, topics), messages) in gateways.iter().zip(messages) {
            let (client, topics) = (client.clone(), topics.clone());
            tasks.spawn_on(publish(client, topics, messages), self.clients);
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        progress("PUBACKs", total, || {
            std::future::ready(Ok(acks.load(Ordering::Relaxed)))
        })
        .await?;
        let acked = start.elapsed();
        let committed = wait_committed(&pool, params, expected).await? - start;
        let cpu = Cpu::of(&CpuSample::now()?.since(&cpu), &instances, self.postmaster);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let wal = Wal::read(&pool).await?.since(&wal);
        let rows = expected.0 + expected.1;
        eprintln!(
            "  {rows} rows in {:.2} s; COPY reference",
            committed.as_secs_f64()
        );

        for (client, _) in &gateways {
            let _ = client.try_disconnect();
        }
        for instance in instances {
            instance.stop().await?;
        }
        let copy_cpu = CpuSample::now()?;
        let (copy_rows, copy_took) = copy_reference(&url).await?;
        let copy_cpu = Cpu::of(&CpuSample::now()?.since(&copy_cpu), &[], self.postmaster);
        let storage = storage(&pool).await?;
        pool.close().await;
        Ok(Run {
            instances: n,
            messages: total,
            rows,
            acked,
            committed,
            cpu,
            wal,
            copy_rows,
            copy_took,
            copy_cpu,
            storage,
        })
    }

    /// Registers the gateways (UTC) and connects gateway i to broker i mod N, on the client
    /// runtime; PUBACKs are counted in `acks`. Returns each client and its two topics.
    async fn connect(
        &self,
        pool: &PgPool,
        brokers: &[std::net::SocketAddr],
        acks: &Arc<AtomicU64>,
    ) -> anyhow::Result<Vec<(AsyncClient, [String; 2])>> {
        let serials: Vec<String> = (0..self.params.gateways)
            .map(|n| format!("BENCH{n:05}"))
            .collect();
        let passwords: Vec<String> = futures::stream::iter(&serials)
            .map(|serial| async move {
                let new = NewGateway {
                    serial: serial.clone(),
                    time_zone: Some(TimeZone::UTC),
                    ..Default::default()
                };
                create(pool, new, TimeZone::UTC)
                    .await
                    .map(|c| c.password)
                    .with_context(|| format!("registering {serial}"))
            })
            .buffered(CONCURRENT_SETUP)
            .try_collect()
            .await?;
        let limit = Arc::new(Semaphore::new(CONCURRENT_SETUP));
        let mut connecting = JoinSet::new();
        for (n, (serial, password)) in serials.into_iter().zip(passwords).enumerate() {
            let (limit, acks) = (limit.clone(), acks.clone());
            let broker = brokers[n % brokers.len()];
            connecting.spawn_on(
                async move {
                    let _permit = limit.acquire_owned().await;
                    let mut mqtt =
                        MqttClient::connect(broker, &format!("{serial}-1"), &serial, &password)
                            .await
                            .with_context(|| format!("connecting {serial}"))?;
                    let client = mqtt.client.clone();
                    tokio::spawn(async move {
                        while let Some(packet) = mqtt.events.recv().await {
                            if matches!(packet, Packet::PubAck(_)) {
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                    let topic = |kind: &str| format!("sg/{serial}/pub/{kind}/rs485/1");
                    anyhow::Ok((n, client, [topic("measurements"), topic("counters")]))
                },
                self.clients,
            );
        }
        let mut gateways = Vec::new();
        while let Some(joined) = connecting.join_next().await {
            gateways.push(joined??);
        }
        gateways.sort_by_key(|(n, _, _)| *n);
        Ok(gateways.into_iter().map(|(_, c, t)| (c, t)).collect())
    }
}

/// Publishes every message as fast as the connection takes them (QoS 1, inflight 100).
async fn publish(
    client: AsyncClient,
    topics: [String; 2],
    messages: Vec<(bool, Bytes)>,
) -> anyhow::Result<()> {
    for (measurement, payload) in messages {
        let topic = &topics[usize::from(!measurement)];
        client
            .publish_bytes(topic.as_str(), QoS::AtLeastOnce, false, payload)
            .await?;
    }
    Ok(())
}

/// Waits until the database holds every row; returns the instant of the snapshot that saw them.
/// A cheap probe first (the last message of every gateway, by primary key), then full counts.
async fn wait_committed(
    pool: &PgPool,
    params: &Params,
    (measurements, readings): (u64, u64),
) -> anyhow::Result<Instant> {
    let last = params.per_gateway;
    let (last_m, last_c) = (
        local_time(last - 2).and_utc(),
        local_time(last - 1).and_utc(),
    );
    let last_rows = u64::from(params.gateways) * (1 + readings / measurements.max(1));
    progress("last rows of every gateway", last_rows, || async {
        let (m, c): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM devices d, LATERAL (SELECT 1 FROM measurements m
                     WHERE m.device_id = d.id AND m.ts = $1) x),
                    (SELECT count(*) FROM counters c, LATERAL (SELECT 1 FROM counter_readings r
                     WHERE r.counter_id = c.id AND r.ts = $2) x)",
        )
        .bind(last_m)
        .bind(last_c)
        .fetch_one(pool)
        .await?;
        Ok(u64::try_from(m + c)?)
    })
    .await?;
    loop {
        let at = Instant::now();
        let (m, c): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM measurements), (SELECT count(*) FROM counter_readings)",
        )
        .fetch_one(pool)
        .await?;
        let (m, c) = (u64::try_from(m)?, u64::try_from(c)?);
        ensure!(
            m <= measurements && c <= readings,
            "rows duplicated: {m} measurements, {c} counter readings"
        );
        if (m, c) == (measurements, readings) {
            return Ok(at);
        }
        ensure!(
            at.elapsed() < STALL,
            "rows lost: {m} of {measurements} measurements, {c} of {readings} readings"
        );
        tokio::time::sleep(PROBE).await;
    }
}

/// Waits until `probe` reaches `target`, every [`PROBE`]; fails after [`STALL`] without progress.
async fn progress<F, Fut>(what: &str, target: u64, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let (mut last, mut moved) = (probe().await?, Instant::now());
    while last < target {
        tokio::time::sleep(PROBE).await;
        let now = probe().await?;
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > STALL {
            bail!("{what} stuck at {last} of {target}");
        }
    }
    Ok(())
}

/// WAL written and flushed (`pg_current_wal_lsn()`, `pg_stat_wal`).
#[derive(Default)]
struct Wal {
    bytes: f64,
    syncs: i64,
    writes: i64,
    fpi: i64,
    lsn: String,
}

impl Wal {
    async fn read(pool: &PgPool) -> anyhow::Result<Self> {
        let (lsn, syncs, writes, fpi): (String, i64, i64, i64) = sqlx::query_as(
            "SELECT pg_current_wal_lsn()::text, wal_sync, wal_write, wal_fpi FROM pg_stat_wal",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            bytes: 0.0,
            syncs,
            writes,
            fpi,
            lsn,
        })
    }

    fn since(self, before: &Self) -> Self {
        Self {
            bytes: lsn(&self.lsn) - lsn(&before.lsn),
            syncs: self.syncs - before.syncs,
            writes: self.writes - before.writes,
            fpi: self.fpi - before.fpi,
            lsn: self.lsn,
        }
    }
}

/// A `pg_lsn` (`hi/lo` in hex) as a byte position.
fn lsn(text: &str) -> f64 {
    let (hi, lo) = text.split_once('/').unwrap_or(("0", "0"));
    let part = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0) as f64;
    part(hi) * 4_294_967_296.0 + part(lo)
}

/// Cores kept busy over a span, per part.
struct Cpu {
    machine: f64,
    /// Each `headend serve` process.
    instances: Vec<f64>,
    clients: f64,
    /// This process less the clients: the harness (probes, registration).
    harness: f64,
    postgres: f64,
    /// PostgreSQL by process role (live at the end of the span).
    roles: Vec<(String, f64)>,
    other: f64,
}

impl Cpu {
    fn of(span: &CpuSpan<'_>, instances: &[Instance], postmaster: u32) -> Self {
        let me = span.this_process();
        let clients = span.threads(CLIENT_THREAD);
        let serve: Vec<f64> = instances.iter().map(|i| span.process(i.pid)).collect();
        let postgres = span.tree(postmaster);
        let mut roles: HashMap<String, f64> = HashMap::new();
        for (pid, role) in postgres_roles(postmaster) {
            *roles.entry(role).or_default() += span.process(pid);
        }
        let mut roles: Vec<(String, f64)> = roles
            .into_iter()
            .map(|(role, s)| (role, span.cores(s)))
            .filter(|(_, c)| *c >= 0.005)
            .collect();
        roles.sort_by(|a, b| b.1.total_cmp(&a.1));
        let accounted = me + postgres + serve.iter().sum::<f64>();
        Self {
            machine: span.cores(span.machine()),
            instances: serve.into_iter().map(|s| span.cores(s)).collect(),
            clients: span.cores(clients),
            harness: span.cores((me - clients).max(0.0)),
            postgres: span.cores(postgres),
            roles,
            other: span.cores(span.other(accounted)),
        }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |parts: Vec<String>| parts.join(" + ");
        write!(f, "{:.2} of {}: ", self.machine, cpus())?;
        if !self.instances.is_empty() {
            write!(
                f,
                "instances {:.2} ({}), ",
                self.instances.iter().sum::<f64>(),
                list(self.instances.iter().map(|c| format!("{c:.2}")).collect())
            )?;
        }
        let roles = self.roles.iter().map(|(r, c)| format!("{r} {c:.2}"));
        write!(
            f,
            "PostgreSQL {:.2} ({}), MQTT clients {:.2}, harness {:.2}, other {:.2}",
            self.postgres,
            list(roles.collect()),
            self.clients,
            self.harness,
            self.other
        )
    }
}

/// The postmaster's children by role: `backend` for client connections, else the name in their
/// command line (`walwriter`, `checkpointer`, `autovacuum worker`, ...).
fn postgres_roles(postmaster: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let path = entry.ok()?.path();
        let pid: u32 = path.file_name()?.to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let parent: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if parent != postmaster {
            return None;
        }
        let cmdline = std::fs::read_to_string(path.join("cmdline")).ok()?;
        let title = cmdline.trim_end_matches('\0').trim();
        let title = title.strip_prefix("postgres: ").unwrap_or(title);
        // A backend's title is `user database host(port) state`; one ending has none left.
        let role = if title.is_empty() || title.contains('(') || title.contains("[local]") {
            "backends".to_owned()
        } else {
            title.split("  ").next().unwrap_or(title).trim().to_owned()
        };
        Some((pid, role))
    })
    .collect()
}

/// Reads the committed rows out (untimed), then times `COPY ... FROM STDIN` of them into
/// `LIKE ... INCLUDING ALL` copies of the tables (same columns and primary keys, no foreign
/// keys), each COPY committed. Returns rows and time.
async fn copy_reference(url: &str) -> anyhow::Result<(u64, Duration)> {
    let mut conn = PgConnection::connect(url).await?;
    let mut rows = 0;
    let mut took = Duration::ZERO;
    for table in ["measurements", "counter_readings"] {
        sqlx::raw_sql(&format!(
            "CREATE TABLE {table}_copy (LIKE {table} INCLUDING ALL)"
        ))
        .execute(&mut conn)
        .await?;
        let data: Vec<Bytes> = conn
            .copy_out_raw(&format!("COPY (SELECT * FROM {table}) TO STDOUT"))
            .await?
            .try_collect()
            .await?;
        let start = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table}_copy FROM STDIN"))
            .await?;
        for chunk in data {
            copy.send(chunk).await?;
        }
        rows += copy.finish().await?;
        took += start.elapsed();
    }
    conn.close().await?;
    Ok((rows, took))
}

/// Bytes per row of the reading tables (all partitions: heap, TOAST and indexes; and the tuple
/// alone), and of a 15-minute downsample of the measurements shaped like `measurements_15min`
/// (per device and quarter hour: samples, then count/min/mean/max of every `real` quantity),
/// built here from the same rows.
async fn storage(pool: &PgPool) -> anyhow::Result<String> {
    let quantities: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_name = 'measurements' AND data_type = 'real' ORDER BY ordinal_position",
    )
    .fetch_all(pool)
    .await?;
    let aggregates: Vec<String> = quantities
        .iter()
        .map(|q| {
            format!(
                "count({q})::int AS {q}_n, min({q}) AS {q}_min, avg({q})::real AS {q}_mean, \
                 max({q}) AS {q}_max"
            )
        })
        .collect();
    sqlx::raw_sql(&format!(
        "CREATE TABLE measurements_15min_probe AS
         SELECT device_id, date_bin('15 minutes', ts, TIMESTAMPTZ 'epoch') AS bucket,
                count(*)::int AS samples, {}
         FROM measurements GROUP BY 1, 2;
         ALTER TABLE measurements_15min_probe ADD PRIMARY KEY (device_id, bucket);",
        aggregates.join(", ")
    ))
    .execute(pool)
    .await?;
    // Alone: VACUUM cannot run in the implicit transaction of a multi-statement string.
    sqlx::raw_sql(
        "VACUUM ANALYZE measurements, counter_readings, energy_intervals, measurements_15min_probe",
    )
    .execute(pool)
    .await?;
    let mut out = String::from(
        "### Storage per row (first run's database)\n\n| table | rows | total bytes/row \
         (heap, TOAST, indexes) | heap bytes/row | tuple bytes (avg pg_column_size) |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for table in [
        "measurements",
        "counter_readings",
        "energy_intervals",
        "measurements_15min_probe",
    ] {
        let (rows, total, heap, tuple): (i64, f64, f64, f64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {table}),
                    coalesce(sum(pg_total_relation_size(relid)),
                             pg_total_relation_size('{table}'))::float8,
                    coalesce(sum(pg_relation_size(relid)), pg_relation_size('{table}'))::float8,
                    (SELECT coalesce(avg(pg_column_size(t.*)), 0)::float8 FROM {table} t)
             FROM pg_partition_tree('{table}')"
        ))
        .fetch_one(pool)
        .await?;
        let per = |bytes: f64| bytes / (rows.max(1) as f64);
        writeln!(
            out,
            "| {table} | {rows} | {:.0} | {:.0} | {tuple:.0} |",
            per(total),
            per(heap)
        )?;
    }
    out.push('\n');
    Ok(out)
}
