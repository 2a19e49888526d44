//! Memory benchmark (issue 17): the resident memory of Headend itself, a `headend serve`
//! process of the release build (PostgreSQL, the clients and this harness are other
//! processes), sampled from `/proc/<pid>/status` (`VmRSS` every few milliseconds, and the
//! kernel's own peak `VmHWM`, restarted at each phase), in two phases:
//!
//! 1. **burst**: gateways (real MQTT clients, QoS 1, inflight 100) publish the ingest
//!    benchmark's documents as fast as their PUBACKs allow, until every row is committed:
//!    RSS at rest before and after, the peak, and what a connected gateway and a message in
//!    flight (published, not yet committed) cost;
//! 2. **recompute**: a year of quarter-hour readings of two registers per meter written
//!    straight into `counter_readings` with binary `COPY` while Headend is stopped, one
//!    `energy_dirty` row per counter over the whole year (as a restore or backfill leaves
//!    them), then Headend restarted and its profile worker's recompute until the queue is
//!    empty: peak RSS; then the same for one meter with long gaps (a reading every
//!    `GAP_DAYS` days, one gap twice as long) alone.
//!
//! Every `HEADEND_*` variable of the environment reaches the Headend process, so a bound
//! can be A/B-tested in the same command line (e.g. `HEADEND_MQTT__BROKER_TOPIC_LOG_BYTES`).
//! Figures are reported, never asserted. `cargo build --release -p headend`, then
//! `cargo bench -p headend-e2e --bench memory`; parameters in `HEADEND_BENCH_*` (see
//! [`Params`]).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use headend::fleet::gateways::{create, NewGateway};
use headend::zone::TimeZone;
use headend_e2e::bench::copy::{copy_in, BinaryCopy};
use headend_e2e::bench::process::{mib, release_binary, reset_peak, Resident};
use headend_e2e::bench::{
    env_or, run_with_clients, CpuSample, CpuSpan, Machine, MeterDocuments, CLIENT_THREAD,
};
use headend_e2e::{eventually, http_request, start_cluster, MqttClient, METRICS_TOKEN};
use rumqttc::{AsyncClient, Packet, QoS};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Name of the client runtime's threads, so their CPU time can be told apart.
/// `VmRSS` sampling period.
const SAMPLE: Duration = Duration::from_millis(5);
/// `/metrics` scraping period (journal backlog) during the burst.
const SCRAPE: Duration = Duration::from_millis(100);
/// How long a wait may go without progress before the run is declared stuck.
const STALL: Duration = Duration::from_secs(300);
/// Time for the process to settle before a figure "at rest".
const SETTLE: Duration = Duration::from_secs(2);
const QUARTER_MS: i64 = 900_000;
const DAY_MS: i64 = 86_400_000;
/// The recompute's year starts here (UTC), before the burst's readings (2026-01-01).
const YEAR_START_MS: i64 = 1_735_689_600_000; // 2025-01-01

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_GATEWAYS`: simulated gateways, one MQTT connection each.
    gateways: u32,
    /// `HEADEND_BENCH_MESSAGES`: messages of the burst (rounded down to a multiple of twice
    /// the gateways: measurements and counters alternately).
    per_gateway: u32,
    /// `HEADEND_BENCH_MEMORY_METERS`: meters of the recompute (two registers each), the
    /// burst's meters first; the last one is the meter with long gaps.
    meters: u32,
    /// `HEADEND_BENCH_MEMORY_DAYS`: days of quarter-hour readings per meter.
    days: u32,
    /// `HEADEND_BENCH_MEMORY_GAP_DAYS`: the long-gap meter's reading period, days.
    gap_days: u32,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let gateways: u32 = env_or("HEADEND_BENCH_GATEWAYS", 200)?;
        let messages: u32 = env_or("HEADEND_BENCH_MESSAGES", 100_000)?;
        let meters = env_or("HEADEND_BENCH_MEMORY_METERS", 300)?;
        let days = env_or("HEADEND_BENCH_MEMORY_DAYS", 365)?;
        let gap_days = env_or("HEADEND_BENCH_MEMORY_GAP_DAYS", 20)?;
        ensure!(gateways > 0, "HEADEND_BENCH_GATEWAYS must be positive");
        let per_gateway = messages / gateways / 2 * 2;
        ensure!(
            per_gateway > 0,
            "HEADEND_BENCH_MESSAGES must be at least twice HEADEND_BENCH_GATEWAYS"
        );
        ensure!(
            meters >= 2 && days >= 1 && gap_days >= 1,
            "meters ≥ 2, days and gap ≥ 1"
        );
        Ok(Self {
            gateways,
            per_gateway,
            meters,
            days,
            gap_days,
        })
    }

    fn messages(&self) -> u64 {
        u64::from(self.gateways) * u64::from(self.per_gateway)
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(
        Some(2),
        |clients| async move { run(&params, &clients).await },
    )
}

/// One `headend serve` process on `data_dir` (kept across restarts).
struct Serve {
    child: Child,
    pid: u32,
    http: std::net::SocketAddr,
    mqtt: std::net::SocketAddr,
}

impl Serve {
    async fn start(
        binary: &Path,
        url: &str,
        data_dir: &Path,
        gateways: u32,
    ) -> anyhow::Result<Self> {
        let runtime = data_dir.join("runtime.json");
        let _ = std::fs::remove_file(&runtime);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("serve.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .env_remove("HEADEND_CONFIG")
            .env("HEADEND_DATA_DIR", data_dir)
            .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
            .env("HEADEND_MQTT_ADDR", "127.0.0.1:0")
            .env("HEADEND_DATABASE_URL", url)
            .env("HEADEND_LOG", "warn")
            .env("HEADEND_HTTP__METRICS_TOKEN", METRICS_TOKEN)
            .env("HEADEND_DATABASE__MAX_CONNECTIONS", "8")
            .env("HEADEND_MQTT__MAX_CONNECTIONS", (gateways + 16).to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("serve pid")?;
        let addrs = eventually(Duration::from_secs(120), || async {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
            let http: std::net::SocketAddr = v["http_addr"].as_str()?.parse().ok()?;
            Some((http, v["mqtt_addr"].as_str()?.parse().ok()?))
        })
        .await;
        let log = || std::fs::read_to_string(data_dir.join("serve.log")).unwrap_or_default();
        let Some((http, mqtt)) = addrs else {
            bail!("headend serve did not start: {}", log());
        };
        let serving = eventually(Duration::from_secs(60), || async {
            http_request(http, "GET", "/healthz", None, None).await.ok()
        })
        .await;
        ensure!(
            serving.is_some(),
            "headend serve does not answer: {}",
            log()
        );
        Ok(Self {
            child,
            pid,
            http,
            mqtt,
        })
    }

    /// SIGTERM, then waits for it to end.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        Ok(())
    }

    /// RSS after [`SETTLE`].
    async fn at_rest(&self) -> u64 {
        tokio::time::sleep(SETTLE).await;
        Resident::of(self.pid).rss
    }
}

/// A gauge or counter of Headend's `/metrics` (0 when absent).
async fn metric(http: std::net::SocketAddr, name: &str) -> anyhow::Result<f64> {
    let response = http_request(http, "GET", "/metrics", Some(METRICS_TOKEN), None).await?;
    ensure!(response.status == 200, "/metrics: {}", response.status);
    Ok(response
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// The highest RSS seen while a phase runs, polled every [`SAMPLE`], with the most messages
/// in flight seen at the same time (client side: published not acknowledged; Headend side: the
/// journal's records not yet committed).
#[derive(Default)]
struct Watch {
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

#[derive(Default, Clone, Copy)]
struct Watched {
    peak_rss: u64,
    /// Messages in Headend's hands at most (journal backlog + awaiting PUBACK).
    in_flight: u64,
}

impl Watch {
    fn spawn(&self, serve: &Serve, scrape: bool) -> tokio::task::JoinHandle<Watched> {
        let (stop, published, acked) = (
            self.stop.clone(),
            self.published.clone(),
            self.acked.clone(),
        );
        let (pid, http) = (serve.pid, serve.http);
        tokio::spawn(async move {
            let mut out = Watched::default();
            let mut pending = 0.0;
            let mut scraped = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                out.peak_rss = out.peak_rss.max(Resident::of(pid).rss);
                if scrape && scraped.elapsed() >= SCRAPE {
                    scraped = Instant::now();
                    pending = metric(http, "headend_journal_pending_records")
                        .await
                        .unwrap_or(pending);
                }
                let unacked = published
                    .load(Ordering::Relaxed)
                    .saturating_sub(acked.load(Ordering::Relaxed));
                out.in_flight = out.in_flight.max(unacked + pending as u64);
                tokio::time::sleep(SAMPLE).await;
            }
            out
        })
    }

    async fn finish(
        &self,
        task: tokio::task::JoinHandle<Watched>,
        pid: u32,
    ) -> anyhow::Result<Watched> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = task.await?;
        // The kernel's peak catches what a poll may miss between two samples.
        out.peak_rss = out.peak_rss.max(Resident::of(pid).peak);
        Ok(out)
    }
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
    cluster.create_database("memory").await?;
    let url = cluster.url("memory");
    let data_dir = tempfile::Builder::new().prefix("hebench-mem").tempdir()?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    let mut report = format!(
        "## Memory benchmark: Headend's resident memory in a burst and in a recompute\n\n{}\n\n\
         `headend serve` (release build) on its own PostgreSQL cluster (fsync on), default \
         settings, `HEADEND_*` overrides of the run: {}. RSS of the Headend process only \
         (`/proc/<pid>/status`: `VmRSS` every {} ms and the kernel's peak `VmHWM`, restarted \
         per phase).\n\n",
        Machine::probe().describe("Clients, Headend and PostgreSQL share it."),
        overrides(),
        SAMPLE.as_millis()
    );
    let serve = Serve::start(&binary, &url, data_dir.path(), params.gateways).await?;
    let (burst, gateways) = burst(params, clients, &serve, &pool).await?;
    burst.write(params, &mut report)?;
    let meters = add_meters(params, &gateways, &pool).await?;
    serve.stop().await?;
    let recompute = recompute(params, &binary, &url, data_dir.path(), &pool, &meters).await?;
    recompute.write(params, &mut report)?;
    bounds(&mut report)?;
    pool.close().await;
    cluster.stop().await?;
    Ok(report)
}

/// The `HEADEND_*` variables given to the run (not the benchmark's own).
fn overrides() -> String {
    let set: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HEADEND_") && !k.starts_with("HEADEND_BENCH_"))
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    if set.is_empty() {
        "none".into()
    } else {
        set.join(", ")
    }
}

// ---------------------------------------------------------------------------------------
// Phase 1: the burst.

struct Burst {
    empty: u64,
    connected: u64,
    watched: Watched,
    after: u64,
    acked: Duration,
    committed: Duration,
    cpu: String,
}

impl Burst {
    fn write(&self, params: &Params, out: &mut String) -> anyhow::Result<()> {
        let per_gateway = self.connected.saturating_sub(self.empty) / u64::from(params.gateways);
        let per_message =
            self.watched.peak_rss.saturating_sub(self.connected) / self.watched.in_flight.max(1);
        writeln!(
            out,
            "### 1. Burst: {} gateways, {} messages\n\n| figure | value |\n| --- | --- |",
            params.gateways,
            params.messages()
        )?;
        let rows = [
            ("RSS at rest, no gateway".to_owned(), mib(self.empty)),
            (
                format!("RSS at rest, {} gateways connected", params.gateways),
                mib(self.connected),
            ),
            (
                "**peak RSS during the burst** (target < 300 MB)".into(),
                format!(
                    "**{}** ({})",
                    mib(self.watched.peak_rss),
                    met(self.watched.peak_rss < 300_000_000)
                ),
            ),
            ("RSS at rest after the burst".into(), mib(self.after)),
            (
                "all PUBACKed after / all committed after".into(),
                format!(
                    "{:.2} s / {:.2} s ({:.0} msg/s)",
                    self.acked.as_secs_f64(),
                    self.committed.as_secs_f64(),
                    params.messages() as f64 / self.committed.as_secs_f64()
                ),
            ),
            (
                "per connected gateway (at rest)".into(),
                format!("{:.1} KiB", per_gateway as f64 / 1024.0),
            ),
            (
                "messages in flight at most (journal backlog + awaiting PUBACK)".into(),
                self.watched.in_flight.to_string(),
            ),
            (
                "per message in flight ((peak − connected) / in flight)".into(),
                format!("{:.1} KiB", per_message as f64 / 1024.0),
            ),
            ("CPU during the burst (cores)".into(), self.cpu.clone()),
        ];
        for (name, value) in rows {
            writeln!(out, "| {name} | {value} |")?;
        }
        writeln!(out)?;
        Ok(())
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// Gateway `n`'s serial.
fn serial(n: u32) -> String {
    format!("MEMB{n:05}")
}

/// Registers and connects the gateways (PUBACKs counted in `acked`).
async fn connect(
    params: &Params,
    clients: &Handle,
    serve: &Serve,
    pool: &PgPool,
    acked: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<AsyncClient>> {
    let mut connecting = JoinSet::new();
    let mut gateways: Vec<(u32, AsyncClient)> = Vec::new();
    for n in 0..params.gateways {
        let new = NewGateway {
            serial: serial(n),
            time_zone: Some(TimeZone::UTC),
            ..Default::default()
        };
        let password = create(pool, new, TimeZone::UTC).await?.password;
        let (acked, addr) = (acked.clone(), serve.mqtt);
        connecting.spawn_on(
            async move {
                let s = serial(n);
                let mut mqtt = MqttClient::connect(addr, &format!("{s}-1"), &s, &password).await?;
                let client = mqtt.client.clone();
                tokio::spawn(async move {
                    while let Some(packet) = mqtt.events.recv().await {
                        if matches!(packet, Packet::PubAck(_)) {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                anyhow::Ok((n, client))
            },
            clients,
        );
        // A few CONNECTs at a time: argon2 on both sides.
        if connecting.len() >= 8 {
            if let Some(done) = connecting.join_next().await {
                gateways.push(done??);
            }
        }
    }
    while let Some(done) = connecting.join_next().await {
        gateways.push(done??);
    }
    gateways.sort_by_key(|(n, _)| *n);
    Ok(gateways.into_iter().map(|(_, c)| c).collect())
}

/// Messages of gateway `n`: measurements at even seconds from 2026-01-01, counters at odd ones.
fn messages(
    documents: &MeterDocuments,
    n: u32,
    count: u32,
) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut docs = documents.for_meter(n);
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .context("base time")?;
    (0..count)
        .map(|k| {
            let kind = ["measurements", "counters"][(k % 2) as usize];
            let doc = &mut docs[(k % 2) as usize];
            let at = base + chrono::Duration::seconds(i64::from(k));
            doc["header"]["local_time"] = at.format("%d.%m.%Y %H:%M:%S").to_string().into();
            let topic = format!("sg/{}/pub/{kind}/rs485/1", serial(n));
            Ok((topic, serde_json::to_vec(doc)?.into()))
        })
        .collect()
}

/// The connected gateways and their PUBACKs so far.
struct Gateways {
    clients: Vec<AsyncClient>,
    acked: Arc<AtomicU64>,
}

async fn burst(
    params: &Params,
    clients: &Handle,
    serve: &Serve,
    pool: &PgPool,
) -> anyhow::Result<(Burst, Gateways)> {
    let empty = serve.at_rest().await;
    eprintln!(
        "burst: registering and connecting {} gateways",
        params.gateways
    );
    let watch = Watch::default();
    let gateways = connect(params, clients, serve, pool, &watch.acked).await?;
    ensure!(
        gateways.len() == params.gateways as usize,
        "every gateway connected"
    );
    let documents = MeterDocuments::load()?;
    let rendered = (0..params.gateways)
        .map(|n| messages(&documents, n, params.per_gateway))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let total = params.messages();
    let rows = (total / 2) * (1 + documents.counters_per_message);
    let connected = serve.at_rest().await;

    eprintln!("burst: {total} messages");
    reset_peak(serve.pid)?;
    let watching = watch.spawn(serve, true);
    let cpu = CpuSample::now()?;
    let start = Instant::now();
    let mut publishing = JoinSet::new();
    for (client, messages) in gateways.iter().zip(rendered) {
        let (client, published) = (client.clone(), watch.published.clone());
        publishing.spawn_on(
            async move {
                for (topic, payload) in messages {
                    client
                        .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
                        .await?;
                    published.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            },
            clients,
        );
    }
    while let Some(done) = publishing.join_next().await {
        done??;
    }
    until("PUBACKs", || async {
        Ok(watch.acked.load(Ordering::Relaxed) >= total)
    })
    .await?;
    let acked = start.elapsed();
    until("rows committed", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM measurements) + (SELECT count(*) FROM counter_readings)",
        )
        .fetch_one(pool)
        .await?;
        Ok(u64::try_from(n)? >= rows)
    })
    .await?;
    let committed = start.elapsed();
    let cpu = cpu_line(&CpuSample::now()?.since(&cpu), serve.pid);
    let watched = watch.finish(watching, serve.pid).await?;
    let after = serve.at_rest().await;
    let burst = Burst {
        empty,
        connected,
        watched,
        after,
        acked,
        committed,
        cpu,
    };
    let acked = watch.acked.clone();
    Ok((
        burst,
        Gateways {
            clients: gateways,
            acked,
        },
    ))
}

/// Cores of Headend, PostgreSQL, the clients and other work over a span.
fn cpu_line(span: &CpuSpan<'_>, pid: u32) -> String {
    let headend = span.process(pid);
    let postgres = span.named("postgres");
    let me = span.this_process();
    let clients = span.threads(CLIENT_THREAD);
    format!(
        "{:.2} of {}: Headend {:.2}, PostgreSQL {:.2}, MQTT clients {:.2}, harness {:.2}, other {:.2}",
        span.cores(span.machine()),
        headend_e2e::bench::cpus(),
        span.cores(headend),
        span.cores(postgres),
        span.cores(clients),
        span.cores((me - clients).max(0.0)),
        span.cores(span.other(headend + postgres + me))
    )
}

/// Polls `done` every 50 ms; fails after [`STALL`].
async fn until<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    while !done().await? {
        ensure!(started.elapsed() < STALL, "{what}: no end after {STALL:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Phase 2: the recompute.

/// One counters document per meter beyond the burst's (gateway `m mod gateways`, RS485 slot
/// `1 + m / gateways`), so that every meter of the recompute exists with its registers;
/// returns the two first registers of each meter, by meter.
async fn add_meters(
    params: &Params,
    gateways: &Gateways,
    pool: &PgPool,
) -> anyhow::Result<Vec<[i64; 2]>> {
    let documents = MeterDocuments::load()?;
    let acked = &gateways.acked;
    let extra: Vec<u32> = (params.gateways..params.meters).collect();
    if !extra.is_empty() {
        eprintln!("recompute: {} more meters", extra.len());
        let base = acked.load(Ordering::Relaxed);
        for &m in &extra {
            let slot = 1 + m / params.gateways;
            let mut doc = documents.for_meter(m)[1].clone();
            doc["header"]["RS485 index"] = slot.into();
            doc["header"]["local_time"] = "01.01.2026 00:00:00".into();
            let topic = format!(
                "sg/{}/pub/counters/rs485/{slot}",
                serial(m % params.gateways)
            );
            gateways.clients[(m % params.gateways) as usize]
                .publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&doc)?)
                .await?;
        }
        until("PUBACKs", || async {
            Ok(acked.load(Ordering::Relaxed) >= base + extra.len() as u64)
        })
        .await?;
    }
    for client in &gateways.clients {
        let _ = client.try_disconnect();
    }
    until("every meter registered", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE kind = 'meter'")
            .fetch_one(pool)
            .await?;
        Ok(n >= i64::from(params.meters))
    })
    .await?;
    let rows: Vec<(i64, Vec<i64>)> = sqlx::query_as(
        "SELECT d.id, array_agg(c.id ORDER BY c.name) FROM devices d JOIN counters c ON c.device_id = d.id
         WHERE d.kind = 'meter' GROUP BY d.id ORDER BY d.id LIMIT $1",
    )
    .bind(i64::from(params.meters))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(device, c)| match c[..] {
            [a, b, ..] => Ok([a, b]),
            _ => bail!("meter {device} has fewer than two registers"),
        })
        .collect()
}

struct Recompute {
    readings: u64,
    copy: Duration,
    year: Phase,
    gaps: Phase,
    gap_readings: u64,
}

/// What one recompute took.
struct Phase {
    peak: u64,
    rest: u64,
    took: Duration,
    intervals: i64,
    cpu: String,
}

impl Recompute {
    fn write(&self, params: &Params, out: &mut String) -> anyhow::Result<()> {
        writeln!(
            out,
            "### 2. Profile worker recompute after a restart\n\n{} meters × 2 registers, {} days \
             of quarter-hour readings ({} readings, written by binary COPY in {:.1} s while \
             Headend was stopped), one `energy_dirty` row per register over all of it; the last \
             meter instead has a reading every {} days and one gap of {} days ({} readings), \
             recomputed again alone afterwards.\n\n| recompute | peak RSS | RSS at rest after | \
             took | intervals | CPU (cores) |\n| --- | --- | --- | --- | --- | --- |",
            params.meters,
            params.days,
            self.readings,
            self.copy.as_secs_f64(),
            params.gap_days,
            2 * params.gap_days,
            self.gap_readings
        )?;
        for (name, p) in [
            (
                "all meters, after the restart (target < 500 MB)",
                &self.year,
            ),
            ("the long-gap meter alone", &self.gaps),
        ] {
            writeln!(
                out,
                "| {name} | **{}** ({}) | {} | {:.1} s | {} | {} |",
                mib(p.peak),
                met(p.peak < 500_000_000),
                mib(p.rest),
                p.took.as_secs_f64(),
                p.intervals,
                p.cpu
            )?;
        }
        writeln!(out)?;
        Ok(())
    }
}

/// Counter value of meter `m` at quarter `q`, milli-units: steady, meter-dependent.
fn value(m: usize, k: usize, q: i64) -> i64 {
    let rate = 50 + ((m * 7 + k * 3) % 40) as i64 * 25;
    1_000_000 * (1 + m as i64) + q * rate
}

async fn recompute(
    params: &Params,
    binary: &Path,
    url: &str,
    data_dir: &Path,
    pool: &PgPool,
    meters: &[[i64; 2]],
) -> anyhow::Result<Recompute> {
    let quarters = i64::from(params.days) * DAY_MS / QUARTER_MS;
    let gap = i64::from(params.gap_days) * DAY_MS / QUARTER_MS;
    let (gappy, regular) = meters.split_last().context("meters")?;
    eprintln!(
        "recompute: COPY of {} days of {} meters",
        params.days,
        meters.len()
    );
    let mut copy = BinaryCopy::new();
    let mut gap_readings = 0;
    let mut add = |counter: i64, m: usize, k: usize, q: i64| {
        copy.row(5);
        copy.int8(counter);
        copy.timestamptz(YEAR_START_MS + q * QUARTER_MS);
        copy.int8(value(m, k, q));
        copy.timestamptz(YEAR_START_MS + q * QUARTER_MS + 3_000);
        copy.int2(0);
    };
    for (m, counters) in regular.iter().enumerate() {
        for (k, counter) in counters.iter().enumerate() {
            for q in 0..quarters {
                add(*counter, m, k, q);
            }
        }
    }
    // Every `gap` quarters, the second reading left out (a gap twice as long).
    let gap_quarters: Vec<i64> = (0..quarters)
        .step_by(gap as usize)
        .filter(|q| *q != gap)
        .collect();
    for (k, counter) in gappy.iter().enumerate() {
        for &q in &gap_quarters {
            add(*counter, regular.len(), k, q);
            gap_readings += 1;
        }
    }
    let (chunks, readings) = copy.finish();
    let copying = Instant::now();
    let statement = "COPY counter_readings (counter_id, ts, value_milli, received_at, flags) FROM STDIN (FORMAT binary)";
    let copied = copy_in(pool, statement, chunks).await?;
    ensure!(copied == readings, "COPY wrote {copied} of {readings}");
    let copy = copying.elapsed();
    let all: Vec<i64> = meters.iter().flatten().copied().collect();
    queue(pool, &all, quarters).await?;

    eprintln!("recompute: restart, {} counters queued", all.len());
    let serve = Serve::start(binary, url, data_dir, params.gateways).await?;
    let year = drain(&serve, pool).await?;
    reset_peak(serve.pid)?;
    queue(pool, gappy, quarters).await?;
    eprintln!("recompute: the long-gap meter");
    let gaps = drain(&serve, pool).await?;
    serve.stop().await?;
    Ok(Recompute {
        readings,
        copy,
        year,
        gaps,
        gap_readings,
    })
}

/// One `energy_dirty` row per counter over the whole loaded span.
async fn queue(pool: &PgPool, counters: &[i64], quarters: i64) -> anyhow::Result<()> {
    let ts = |q: i64| {
        chrono::DateTime::from_timestamp_millis(YEAR_START_MS + q * QUARTER_MS).unwrap_or_default()
    };
    sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT c, $2, $3, true FROM UNNEST($1::int8[]) AS c",
    )
    .bind(counters)
    .bind(ts(0))
    .bind(ts(quarters - 1))
    .execute(pool)
    .await?;
    Ok(())
}

/// Watches the RSS until the worker has emptied `energy_dirty`.
async fn drain(serve: &Serve, pool: &PgPool) -> anyhow::Result<Phase> {
    let watch = Watch::default();
    let watching = watch.spawn(serve, false);
    let intervals = || async {
        anyhow::Ok(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM energy_intervals")
                .fetch_one(pool)
                .await?,
        )
    };
    let before = intervals().await?;
    let cpu = CpuSample::now()?;
    let start = Instant::now();
    until("energy_dirty drained", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
            .fetch_one(pool)
            .await?;
        Ok(n == 0)
    })
    .await?;
    let took = start.elapsed();
    let cpu = cpu_line(&CpuSample::now()?.since(&cpu), serve.pid);
    let watched = watch.finish(watching, serve.pid).await?;
    Ok(Phase {
        peak: watched.peak_rss,
        rest: serve.at_rest().await,
        took,
        intervals: intervals().await? - before,
        cpu,
    })
}

// ---------------------------------------------------------------------------------------
// The bounds.

/// Where the memory of a burst can go, each part bounded by a configuration key.
fn bounds(out: &mut String) -> anyhow::Result<()> {
    writeln!(
        out,
        "### Bounds by configuration (defaults)\n\n| what | bound | key(s) |\n| --- | --- | --- |\n\
         | the gate, per connection | read buffer 16 KiB (grows to the largest packet), write batch 64 KiB, up to `max_in_flight` PUBLISH packets (64) awaiting the journal: 64 × the payload | `mqtt.max_in_flight`, `mqtt.max_payload_bytes` |\n\
         | rumqttd, per topic | an in-memory log of 2 segments of 2 KiB (each may overflow by one message): about 2 readings per data topic | `mqtt.broker_topic_log_bytes` |\n\
         | rumqttd, per connection | its queues (200 packets out, 100 in flight) | fixed by rumqttd |\n\
         | journal appends | what the connections have in flight (above), grouped per fsync | (the gate's) |\n\
         | ingest batches | `ingest.writers` (2) × a batch of `ingest.batch_max_messages` (2 000) or 16 MiB, with its rows | `ingest.writers`, `ingest.batch_max_messages` |\n\
         | profile worker, per round | 200 counters × `energy.worker_piece_readings` (2 000) readings, ≤ `energy.worker_piece_days` (21) days of intervals each | `energy.worker_piece_readings`, `energy.worker_piece_days` |\n"
    )?;
    Ok(())
}
