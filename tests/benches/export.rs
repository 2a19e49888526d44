//! CSV export benchmark (issue "The web dashboard and CSV export"): a site in
//! Europe/Ljubljana with 300 meters and a year of 15-minute intervals of one register
//! (10.5 M rows), exported as `GET /api/v1/export.csv?kind=intervals&site=…` and read by an
//! HTTP client that discards the bytes. In one run it reports
//!
//! 1. the download: time to the first byte and to the first data row, rows/s and MB/s over
//!    the whole file, the peak RSS growth of the process (Headend, client and harness) during
//!    it, and CPU by party;
//! 2. the reference, in the same run and on the same rows: PostgreSQL's own
//!    `COPY (SELECT … the same columns …) TO STDOUT (FORMAT csv)` read through sqlx's
//!    `copy_out_raw`, once in the export's order (meter by meter, per-counter index scans, as
//!    the export reads) and once in the planner's order of choice; its output is checked to be
//!    the export's byte for byte but for the line ends (LF, the export writes CRLF). For
//!    scale, also `COPY` of the four stored columns alone (not equivalent: no formatting);
//! 3. the ratio; the target is at least half the `COPY` rate.
//!
//! Devices and counters are created as in production (one counters document per meter over
//! MQTT, names set through the API, the example contract); the intervals themselves are
//! written with a binary `COPY`, which is what a year of worker output looks like.
//!
//! Figures are reported, never asserted. `cargo bench -p headend-e2e --bench export`,
//! parameters in `HEADEND_BENCH_EXPORT_*` (see [`Params`]).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;
use futures::StreamExt;
use headend::config::Secret;
use headend::Config;
use headend_e2e::bench::{cpus, env_or, run_with_clients, CpuSample, Machine, CLIENT_THREAD};
use headend_e2e::{http_request, start_cluster, MqttClient, TestApp};
use rumqttc::QoS;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::time::Instant;

/// Name of the client runtime's threads (MQTT and HTTP clients), so their CPU time can be
/// told apart from Headend's.
const ZONE: Tz = chrono_tz::Europe::Ljubljana;
const SITE_NAME: &str = "Bench plant";
const METERS_PER_GATEWAY: usize = 17;
const QUARTER_MS: i64 = 900_000;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// The HTTP client's read buffer.
const READ_BUFFER: usize = 256 * 1024;

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_EXPORT_METERS`: meters of the site, one register each.
    meters: usize,
    /// `HEADEND_BENCH_EXPORT_DAYS`: days of intervals, ending 2026-11-01 local.
    days: u32,
    /// `HEADEND_BENCH_EXPORT_ROUNDS`: rounds of (COPY in order, COPY any order, export).
    rounds: usize,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let params = Self {
            meters: env_or("HEADEND_BENCH_EXPORT_METERS", 300)?,
            days: env_or("HEADEND_BENCH_EXPORT_DAYS", 365)?,
            rounds: env_or("HEADEND_BENCH_EXPORT_ROUNDS", 2)?,
        };
        ensure!(
            params.meters >= 1 && params.rounds >= 1,
            "HEADEND_BENCH_EXPORT_*: at least 1 meter and 1 round"
        );
        ensure!(
            (1..=366).contains(&params.days),
            "HEADEND_BENCH_EXPORT_DAYS: 1 to 366 (the export's limit for a site)"
        );
        Ok(params)
    }

    fn gateways(&self) -> usize {
        self.meters.div_ceil(METERS_PER_GATEWAY)
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(None, |clients| async move { run(&params, &clients).await })
}

// ---------------------------------------------------------------------------------------
// Synthetic data.

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The energy of meter `m` in the quarter-hour starting at `start_ms`, mWh, and its quality:
/// a daily shape (more by day on workdays), a per-meter rating, noise, and about one
/// estimated quarter-hour in 200.
fn interval(m: usize, start_ms: i64) -> (i64, i16) {
    let t = DateTime::from_timestamp_millis(start_ms)
        .unwrap_or_default()
        .with_timezone(&ZONE);
    let workday = t.weekday().num_days_from_monday() < 5;
    let hour = t.hour();
    let shape = match (workday, hour) {
        (true, 7..=17) => 1.0,
        (true, 6 | 18..=21) => 0.6,
        (false, 9..=20) => 0.45,
        _ => 0.25,
    };
    let h = mix((m as u64) << 40 ^ (start_ms / QUARTER_MS) as u64);
    let rating_w = 2_000.0 + (mix(m as u64) % 28_000) as f64;
    let noise = 0.8 + 0.4 * (h % 10_000) as f64 / 10_000.0;
    // W over a quarter-hour = W / 4 Wh = 250 × W mWh.
    let energy = (rating_w * shape * noise * 250.0).round() as i64 + (h >> 50) as i64 % 1000;
    (energy, i16::from(h % 200 == 0))
}

/// `COPY energy_intervals FROM STDIN (FORMAT binary)` data for one counter.
fn copy_rows(buf: &mut BytesMut, meter: usize, counter: i64, from_ms: i64, quarters: i64) {
    for q in 0..quarters {
        let start = from_ms + q * QUARTER_MS;
        let (energy, quality) = interval(meter, start);
        buf.put_i16(4);
        buf.put_i32(8);
        buf.put_i64(counter);
        buf.put_i32(8);
        buf.put_i64(start * 1000 - PG_EPOCH_US);
        buf.put_i32(8);
        buf.put_i64(energy);
        buf.put_i32(2);
        buf.put_i16(quality);
    }
}

// ---------------------------------------------------------------------------------------
// CPU and memory.

/// CPU seconds between two samples: Headend (this process less the client threads), the
/// clients, PostgreSQL (the postmaster and its backends) and everything else.
fn cpu_use(before: &CpuSample, after: &CpuSample, postmaster: u32) -> CpuUse {
    let span = after.since(before);
    let process = span.this_process();
    let clients = span.threads(CLIENT_THREAD);
    let postgres = span.tree(postmaster);
    CpuUse {
        wall: span.wall(),
        headend: (process - clients).max(0.0),
        clients,
        postgres,
        other: span.other(process + postgres),
    }
}

/// CPU seconds used over a wall-clock span.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    wall: f64,
    /// This process less the client threads: Headend (and, for COPY, the sqlx reader).
    headend: f64,
    clients: f64,
    postgres: f64,
    /// Everything else on the machine.
    other: f64,
}

impl CpuUse {
    fn cores(&self) -> String {
        let c = |s: f64| s / self.wall.max(1e-9);
        format!(
            "bench process {:.2}, HTTP client {:.2}, PostgreSQL {:.2}, other {:.2}",
            c(self.headend),
            c(self.clients),
            c(self.postgres),
            c(self.other),
        )
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the process's RSS every 2 ms until dropped; `peak` is the largest seen.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed).max(rss_kib())
    }
}

// ---------------------------------------------------------------------------------------
// Reading a download.

/// The readers of the same rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// `COPY` of the export's columns, meter by meter (per-counter index range scans).
    CopyInOrder,
    /// `COPY` of the export's columns, in the planner's order of choice.
    CopyAnyOrder,
    /// `COPY` of `energy_intervals` itself: the four stored columns, no formatting.
    CopyStored,
    /// `GET /api/v1/export.csv`.
    Export,
}

impl Reader {
    const ALL: [Reader; 4] = [
        Reader::CopyInOrder,
        Reader::CopyAnyOrder,
        Reader::CopyStored,
        Reader::Export,
    ];

    fn label(self) -> &'static str {
        match self {
            Reader::CopyInOrder => "COPY, same columns, export's order",
            Reader::CopyAnyOrder => "COPY, same columns, any order",
            Reader::CopyStored => "COPY, stored columns only",
            Reader::Export => "**export.csv**",
        }
    }
}

/// Bytes of the start of each output kept to compare the contents.
const PREFIX: usize = 1 << 20;

/// One measured read of the same rows.
struct Measure {
    reader: Reader,
    /// First byte of the response (HTTP) or of the COPY data.
    first_byte: Duration,
    /// First data row (after the header row).
    first_row: Duration,
    total: Duration,
    bytes: u64,
    /// Data rows (line ends less the header).
    rows: u64,
    cpu: CpuUse,
    /// Peak RSS growth during the read, KiB (HTTP only).
    rss_growth_kib: Option<u64>,
    /// The first [`PREFIX`] bytes of the output without CRs, and the last ones with them.
    prefix: Vec<u8>,
    tail: Vec<u8>,
}

impl Measure {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.total.as_secs_f64()
    }
}

/// Counts line ends, notes when the second one (the end of the first data row) arrived, and
/// keeps the start of the output.
struct Lines {
    started: Instant,
    count: u64,
    first_row: Option<Duration>,
    prefix: Vec<u8>,
    tail: Vec<u8>,
}

impl Lines {
    /// With its buffers allocated and touched, so that they are in the RSS from now on.
    fn new(started: Instant) -> Self {
        let touched = |n: usize| {
            let mut v = vec![1u8; n];
            v.clear();
            v
        };
        Self {
            started,
            count: 0,
            first_row: None,
            prefix: touched(PREFIX),
            tail: touched(2 * PREFIX + READ_BUFFER),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.count += data.iter().filter(|&&b| b == b'\n').count() as u64;
        if self.first_row.is_none() && self.count >= 2 {
            self.first_row = Some(self.started.elapsed());
        }
        if self.prefix.len() < PREFIX {
            let room = PREFIX - self.prefix.len();
            self.prefix
                .extend(data.iter().filter(|&&b| b != b'\r').take(room));
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * PREFIX {
            // Keeps the capacity: no allocation while reading.
            self.tail.drain(..self.tail.len() - PREFIX);
        }
    }
}

/// A streaming decoder of a chunked HTTP/1.1 body.
#[derive(Default)]
struct Chunked {
    /// The current size line, until its CRLF.
    line: Vec<u8>,
    /// Data bytes left in the current chunk, then its CRLF.
    left: usize,
    crlf: usize,
    done: bool,
}

impl Chunked {
    /// Feeds received bytes; `data` gets the body's bytes.
    fn feed(&mut self, mut input: &[u8], mut data: impl FnMut(&[u8])) -> anyhow::Result<()> {
        while !input.is_empty() && !self.done {
            if self.left > 0 {
                let n = self.left.min(input.len());
                data(&input[..n]);
                self.left -= n;
                input = &input[n..];
                if self.left == 0 {
                    self.crlf = 2;
                }
            } else if self.crlf > 0 {
                let n = self.crlf.min(input.len());
                self.crlf -= n;
                input = &input[n..];
            } else {
                match input.iter().position(|&b| b == b'\n') {
                    None => {
                        self.line.extend_from_slice(input);
                        input = &[];
                    }
                    Some(end) => {
                        self.line.extend_from_slice(&input[..end]);
                        input = &input[end + 1..];
                        let text = std::str::from_utf8(&self.line)?.trim();
                        let size = usize::from_str_radix(text, 16)
                            .with_context(|| format!("chunk size {text:?}"))?;
                        self.line.clear();
                        if size == 0 {
                            self.done = true;
                        } else {
                            self.left = size;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// `GET path` over HTTP/1.1, reading and discarding the body.
async fn download(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    mut lines: Lines,
    mut buf: Vec<u8>,
) -> anyhow::Result<(Duration, Lines, u64)> {
    let started = Instant::now();
    lines.started = started;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut head = Vec::new();
    let mut first_byte = None;
    let mut chunked = Chunked::default();
    let mut body_bytes = 0u64;
    let mut in_head = true;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        let mut input = &buf[..n];
        if in_head {
            let mut end = None;
            for (i, b) in input.iter().enumerate() {
                head.push(*b);
                if head.ends_with(b"\r\n\r\n") {
                    end = Some(i + 1);
                    break;
                }
            }
            let Some(end) = end else {
                continue;
            };
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            ensure!(text.starts_with("http/1.1 200"), "export: {text}");
            ensure!(
                text.contains("transfer-encoding: chunked"),
                "export not chunked: {text}"
            );
            input = &input[end..];
            in_head = false;
        }
        chunked.feed(input, |data| {
            body_bytes += data.len() as u64;
            lines.feed(data);
        })?;
    }
    ensure!(
        chunked.done,
        "the export ended without its final chunk (truncated)"
    );
    Ok((first_byte.context("no response")?, lines, body_bytes))
}

// ---------------------------------------------------------------------------------------
// The run.

fn utc_ms(date: NaiveDate) -> anyhow::Result<i64> {
    let local = date.and_hms_opt(0, 0, 0).context("midnight")?;
    Ok(ZONE
        .from_local_datetime(&local)
        .single()
        .context("local midnight is unambiguous")?
        .timestamp_millis())
}

fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Bench<'a> {
    params: &'a Params,
    clients: &'a Handle,
    app: TestApp,
    /// The bench's own connections (loading, COPY), apart from the app's pool.
    pool: PgPool,
    postmaster: u32,
    site: i64,
    admin: String,
    viewer: String,
    /// Local dates `[first, end)` of the data and of the export.
    first: NaiveDate,
    end: NaiveDate,
    counters: Vec<i64>,
}

async fn run(params: &Params, clients: &Handle) -> anyhow::Result<String> {
    headend::infra::telemetry::init("warn", false);
    // A dedicated cluster with production settings. PostgreSQL runs as `postgres` when we are
    // root, so the directory above its data directory must be traversable.
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
    config.log.filter = "warn".into();
    let app = TestApp::start(config, data_dir).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    let admin = app.user_token("admin@bench.example", "admin", &[]).await;
    let end = NaiveDate::from_ymd_opt(2026, 11, 1).context("date")?;
    let first = end - chrono::Duration::days(i64::from(params.days));
    let mut bench = Bench {
        params,
        clients,
        app,
        pool,
        postmaster,
        site: 0,
        admin,
        viewer: String::new(),
        first,
        end,
        counters: Vec::new(),
    };
    bench.structure().await?;
    let loaded = bench.load().await?;

    let mut report = format!(
        "## CSV export benchmark\n\n{}\n\nPostgreSQL {pg_version} (own cluster, production \
         settings); Headend in process with its default settings; the HTTP client on its own \
         runtime in the same process.\n\nParameters: {} meters × 1 register × {} days ({} to \
         {} local, Europe/Ljubljana) = {} interval rows, the example contract (band and cost \
         per row); {} rounds.\n\n{loaded}\n",
        Machine::probe().describe("Client, Headend and PostgreSQL share it."),
        params.meters,
        params.days,
        first,
        end,
        thousands(bench.rows() as f64),
        params.rounds,
    );

    let mut measures = Vec::new();
    for round in 1..=params.rounds {
        for reader in Reader::ALL {
            eprintln!("round {round}: {}", reader.label());
            let measure = match reader {
                Reader::Export => bench.export().await?,
                copy => bench.copy(copy).await?,
            };
            measures.push((round, measure));
        }
    }
    bench.section(&mut report, &measures)?;
    bench.pool.close().await;
    bench.app.stop().await;
    cluster.stop().await?;
    Ok(report)
}

impl Bench<'_> {
    fn rows(&self) -> u64 {
        self.params.meters as u64 * self.quarters() as u64
    }

    fn quarters(&self) -> i64 {
        let (a, b) = (
            utc_ms(self.first).unwrap_or(0),
            utc_ms(self.end).unwrap_or(0),
        );
        (b - a) / QUARTER_MS
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let response = http_request(self.app.http, method, path, Some(&self.admin), body).await?;
        ensure!(
            (200..300).contains(&response.status),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        Ok(if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&response.body)?
        })
    }

    async fn until_drained(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
                .fetch_one(&self.pool)
                .await?;
            if n == 0 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("energy_dirty not drained ({n} rows)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Site, example contract, gateways, one counters document per meter over MQTT (which
    /// creates the devices and counters), names through the API.
    async fn structure(&mut self) -> anyhow::Result<()> {
        eprintln!(
            "set-up: site, contract, {} meters on {} gateways",
            self.params.meters,
            self.params.gateways()
        );
        let site = self
            .api(
                "POST",
                "/api/v1/sites",
                Some(json!({ "name": SITE_NAME, "timezone": ZONE.name() })),
            )
            .await?;
        self.site = site["id"].as_i64().context("site id")?;
        self.viewer = self
            .app
            .user_token("viewer@bench.example", "viewer", &[self.site])
            .await;
        let example = self.api("GET", "/api/v1/contracts/example", None).await?;
        self.api(
            "POST",
            &format!("/api/v1/sites/{}/contracts", self.site),
            Some(json!({ "contract": example })),
        )
        .await?;

        let addr = self.app.mqtt.context("embedded MQTT")?;
        let mut registered = Vec::new();
        for g in 0..self.params.gateways() {
            let serial = format!("BENCHX{g:03}");
            let password = self.app.gateway(&serial, Some(self.site), None).await;
            registered.push((serial, password));
        }
        let local = DateTime::from_timestamp_millis(utc_ms(self.first)?)
            .unwrap_or_default()
            .with_timezone(&ZONE)
            .format("%d.%m.%Y %H:%M:%S")
            .to_string();
        let meters = self.params.meters;
        let published = self
            .clients
            .spawn(async move {
                for (g, (serial, password)) in registered.into_iter().enumerate() {
                    let mut mqtt =
                        MqttClient::connect(addr, &format!("{serial}-1"), &serial, &password)
                            .await?;
                    let mut sent = 0;
                    for slot in 0..METERS_PER_GATEWAY {
                        let m = g * METERS_PER_GATEWAY + slot;
                        if m >= meters {
                            break;
                        }
                        let port = if slot == 0 {
                            "ir".to_owned()
                        } else {
                            format!("rs485/{slot}")
                        };
                        let doc = json!({
                            "header": {
                                "cmd": "get_energy_counters", "model": "WM3M4C",
                                "serial_number": format!("{:08}", 42_000_000 + m),
                                "local_time": local,
                                "resetable_counters": 0, "non_resetable_counters": 1
                            },
                            "counters": { "counter1nr": format!("{}.000 kWh", 1_000 + m) }
                        });
                        mqtt.client
                            .publish(
                                format!("sg/{serial}/pub/counters/{port}"),
                                QoS::AtLeastOnce,
                                false,
                                doc.to_string(),
                            )
                            .await?;
                        sent += 1;
                    }
                    mqtt.wait_acks(sent).await;
                }
                anyhow::Ok(())
            })
            .await;
        published??;
        self.app
            .wait_count("SELECT count(*) FROM counters", meters as i64)
            .await;
        self.until_drained().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT d.serial, c.id FROM devices d JOIN counters c ON c.device_id = d.id
             WHERE d.kind = 'meter' ORDER BY d.serial",
        )
        .fetch_all(&self.pool)
        .await?;
        ensure!(rows.len() == meters, "{} counters", rows.len());
        for (i, (serial, _)) in rows.iter().enumerate() {
            let hall = (b'A' + (i % 6) as u8) as char;
            self.api(
                "PATCH",
                &format!("/api/v1/devices/{serial}"),
                Some(json!({ "name": format!("Hall {hall}, feeder {:03}", i + 1) })),
            )
            .await?;
        }
        self.until_drained().await?;
        self.counters = rows.into_iter().map(|(_, c)| c).collect();
        Ok(())
    }

    /// The intervals, by binary COPY, then VACUUM ANALYZE so both readers see the same
    /// clean pages (hint bits set, visibility map).
    async fn load(&self) -> anyhow::Result<String> {
        let from_ms = utc_ms(self.first)?;
        let quarters = self.quarters();
        eprintln!(
            "loading {} intervals",
            thousands((quarters * self.counters.len() as i64) as f64)
        );
        let started = Instant::now();
        let mut conn = self.pool.acquire().await?;
        // Skip the foreign-key trigger per row when we may (superuser): loading only.
        let _ = conn.execute("SET session_replication_role = replica").await;
        let mut copy = conn
            .copy_in_raw("COPY energy_intervals (counter_id, start, energy_milli, quality) FROM STDIN (FORMAT binary)")
            .await?;
        let mut buf = BytesMut::with_capacity(2 << 20);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        for (m, counter) in self.counters.iter().enumerate() {
            copy_rows(&mut buf, m, *counter, from_ms, quarters);
            copy.send(buf.split().freeze()).await?;
            if (m + 1) % 50 == 0 {
                eprintln!("  {} meters", m + 1);
            }
        }
        buf.put_i16(-1);
        copy.send(buf.split().freeze()).await?;
        let rows = copy.finish().await?;
        let _ = conn.execute("SET session_replication_role = origin").await;
        let copy_in = started.elapsed();
        ensure!(rows == self.rows(), "loaded {rows} rows");
        eprintln!("VACUUM ANALYZE");
        let vacuum = Instant::now();
        conn.execute("VACUUM (ANALYZE) energy_intervals").await?;
        conn.execute("CHECKPOINT").await?;
        let (table, index): (i64, i64) = sqlx::query_as(
            "SELECT pg_table_size('energy_intervals'), pg_indexes_size('energy_intervals')",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(format!(
            "Loading: {} rows by binary COPY in {:.1} s, VACUUM ANALYZE + CHECKPOINT {:.1} s; \
             `energy_intervals` {:.0} MiB + {:.0} MiB index.\n",
            thousands(rows as f64),
            copy_in.as_secs_f64(),
            vacuum.elapsed().as_secs_f64(),
            table as f64 / 1048576.0,
            index as f64 / 1048576.0,
        ))
    }

    /// `COPY (SELECT the export's columns) TO STDOUT (FORMAT csv, HEADER)`: in the export's
    /// order (per-counter index range scans, meter by meter) or in any order.
    fn copy_sql(&self, reader: Reader) -> anyhow::Result<String> {
        let ids = self
            .counters
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let (from, to) = (
            DateTime::from_timestamp_millis(utc_ms(self.first)?).context("from")?,
            DateTime::from_timestamp_millis(utc_ms(self.end)?).context("to")?,
        );
        // The example contract: `day` 06:00-22:00 on workdays that are not holidays at
        // 0.142, `night` otherwise at 0.095 EUR/kWh (prices in micro-EUR).
        let contract = headend_energy::tariff::Contract::example_eur();
        let holidays = contract
            .holidays
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (day, night) = (
            contract.bands[0].import_price.micro(),
            contract.bands[1].import_price.micro(),
        );
        let columns = format!(
            "to_char(e.start, 'YYYY-MM-DD\"T\"HH24:MI:SSTZH:TZM') AS start_local,
             to_char(e.start + interval '15 minutes', 'YYYY-MM-DD\"T\"HH24:MI:SSTZH:TZM') AS end_local,
             to_char(e.start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS start_utc,
             m.site, m.meter, m.meter_name, m.register,
             trim_scale(e.energy_milli::numeric / 1000) AS value, m.unit,
             CASE e.quality WHEN 0 THEN 'measured' ELSE 'estimated' END AS quality,
             CASE WHEN b.day THEN 'day' ELSE 'night' END AS band,
             trim_scale(e.energy_milli::numeric * CASE WHEN b.day THEN {day} ELSE {night} END
                        / 1000000000000) AS cost,
             'EUR' AS currency"
        );
        let band = format!(
            "CROSS JOIN LATERAL (SELECT extract(isodow FROM e.start) < 6
                 AND e.start::time >= '06:00' AND e.start::time < '22:00'
                 AND e.start::date <> ALL ('{{{holidays}}}'::date[]) AS day) b"
        );
        let meters = format!(
            "SELECT c.id, s.name AS site, d.serial AS meter, d.name AS meter_name,
                    c.name AS register, c.unit
             FROM counters c JOIN devices d ON d.id = c.device_id
             JOIN gateways g ON g.id = d.gateway_id JOIN sites s ON s.id = g.site_id
             WHERE c.id IN ({ids})"
        );
        let range = |e: &str| {
            format!(
                "{e}start >= '{}' AND {e}start < '{}'",
                from.to_rfc3339(),
                to.to_rfc3339()
            )
        };
        Ok(match reader {
            Reader::CopyInOrder => format!(
                "COPY (SELECT {columns} FROM ({meters} ORDER BY d.serial, c.idx OFFSET 0) m
                 CROSS JOIN LATERAL (SELECT start, energy_milli, quality FROM energy_intervals
                                     WHERE counter_id = m.id AND {} ORDER BY start) e
                 {band}) TO STDOUT (FORMAT csv, HEADER)",
                range("")
            ),
            Reader::CopyAnyOrder => format!(
                "COPY (SELECT {columns} FROM energy_intervals e JOIN ({meters}) m ON m.id = e.counter_id
                 {band} WHERE {}) TO STDOUT (FORMAT csv, HEADER)",
                range("e.")
            ),
            Reader::CopyStored | Reader::Export => format!(
                "COPY (SELECT counter_id, start, energy_milli, quality FROM energy_intervals
                 WHERE counter_id IN ({ids}) AND {}) TO STDOUT (FORMAT csv, HEADER)",
                range("")
            ),
        })
    }

    async fn copy(&self, reader: Reader) -> anyhow::Result<Measure> {
        let sql = self.copy_sql(reader)?;
        let mut conn = self.pool.acquire().await?;
        conn.execute(format!("SET TIME ZONE '{}'", ZONE.name()).as_str())
            .await?;
        let cpu = CpuSample::now()?;
        let started = Instant::now();
        let mut stream = conn.copy_out_raw(&sql).await?;
        let mut lines = Lines::new(started);
        let (mut first_byte, mut bytes) = (None, 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            first_byte.get_or_insert_with(|| started.elapsed());
            bytes += chunk.len() as u64;
            lines.feed(&chunk);
        }
        let total = started.elapsed();
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        drop(stream);
        conn.execute("RESET TIME ZONE").await?;
        let rows = lines.count.saturating_sub(1);
        ensure!(rows == self.rows(), "COPY wrote {rows} rows");
        Ok(Measure {
            reader,
            first_byte: first_byte.context("no COPY data")?,
            first_row: lines.first_row.context("no row")?,
            total,
            bytes,
            rows,
            cpu,
            rss_growth_kib: None,
            prefix: lines.prefix,
            tail: lines.tail,
        })
    }

    async fn export(&self) -> anyhow::Result<Measure> {
        let path = format!(
            "/api/v1/export.csv?kind=intervals&site={}&from={}&to={}",
            self.site, self.first, self.end
        );
        let (addr, token) = (self.app.http, self.viewer.clone());
        // The client's own buffers are counted before the baseline.
        let (lines, buf) = (Lines::new(Instant::now()), vec![1u8; READ_BUFFER]);
        let baseline = rss_kib();
        let watch = RssWatch::start();
        let cpu = CpuSample::now()?;
        let started = Instant::now();
        let (first_byte, lines, bytes) = self
            .clients
            .spawn(async move { download(addr, &path, &token, lines, buf).await })
            .await??;
        let total = started.elapsed();
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        let peak = watch.finish();
        let rows = lines.count.saturating_sub(1);
        ensure!(rows == self.rows(), "the export wrote {rows} rows");
        Ok(Measure {
            reader: Reader::Export,
            first_byte,
            first_row: lines.first_row.context("no row")?,
            total,
            bytes,
            rows,
            cpu,
            rss_growth_kib: Some(peak.saturating_sub(baseline)),
            prefix: lines.prefix,
            tail: lines.tail,
        })
    }

    fn section(&self, report: &mut String, measures: &[(usize, Measure)]) -> anyhow::Result<()> {
        writeln!(
            report,
            "### Results\n\n| round | reader | first byte | first row | total | rows/s | MB/s | \
             peak RSS growth | CPU (cores) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        )?;
        for (round, m) in measures {
            writeln!(
                report,
                "| {round} | {} | {} | {} | {:.2} s | {} | {:.1} | {} | {} |",
                m.reader.label(),
                ms(m.first_byte),
                ms(m.first_row),
                m.total.as_secs_f64(),
                thousands(m.rows_per_s()),
                m.bytes as f64 / 1e6 / m.total.as_secs_f64(),
                m.rss_growth_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                m.cpu.cores(),
            )?;
        }
        let of = |reader: Reader| {
            measures
                .iter()
                .map(|(_, m)| m)
                .filter(move |m| m.reader == reader)
        };
        let best = |reader: Reader| of(reader).map(Measure::rows_per_s).fold(0.0, f64::max);
        let first = |reader: Reader| of(reader).next().context("a measure");
        let (export, in_order) = (first(Reader::Export)?, first(Reader::CopyInOrder)?);
        // The same content: byte for byte but for CRLF, so one more byte per line.
        let common = export.prefix.len().min(in_order.prefix.len());
        let without_cr = |t: &[u8]| {
            t.iter()
                .copied()
                .filter(|&b| b != b'\r')
                .collect::<Vec<_>>()
        };
        let (tail_a, tail_b) = (without_cr(&export.tail), without_cr(&in_order.tail));
        let end = tail_a.len().min(tail_b.len());
        let same = export.prefix[..common] == in_order.prefix[..common]
            && tail_a[tail_a.len() - end..] == tail_b[tail_b.len() - end..]
            && export.bytes == in_order.bytes + export.rows + 1;
        if !same {
            let at = export.prefix[..common]
                .iter()
                .zip(&in_order.prefix[..common])
                .position(|(a, b)| a != b)
                .unwrap_or(common);
            let line = |p: &[u8]| {
                let start = p[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = p[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(p.len(), |i| at + i);
                String::from_utf8_lossy(&p[start..end]).into_owned()
            };
            writeln!(
                report,
                "\nFirst difference: export `{}`, COPY `{}`; sizes {} and {}.",
                line(&export.prefix),
                line(&in_order.prefix),
                export.bytes,
                in_order.bytes
            )?;
        }
        writeln!(
            report,
            "\nFile: {:.0} MB. The export's content is COPY's (export's order) byte for byte but \
             for its CRLF line ends (first {} KiB and last {} KiB compared, sizes differ by exactly \
             one byte a line): **{}**. CPU: \"bench process\" is Headend for the export, the sqlx COPY \
             reader for COPY; \"other\" is everything else on the machine.\n",
            export.bytes as f64 / 1e6,
            common / 1024,
            end / 1024,
            if same { "yes" } else { "NO" },
        )?;
        let rss = of(Reader::Export)
            .filter_map(|m| m.rss_growth_kib)
            .max()
            .unwrap_or(0);
        let ttfb = of(Reader::Export)
            .map(|m| m.first_byte)
            .max()
            .unwrap_or_default();
        let (rate, in_order, any, stored) = (
            best(Reader::Export),
            best(Reader::CopyInOrder),
            best(Reader::CopyAnyOrder),
            best(Reader::CopyStored),
        );
        writeln!(report, "### Targets\n")?;
        writeln!(report, "| target | figure | met |\n| --- | --- | --- |")?;
        let met = |ok: bool| if ok { "yes" } else { "**no**" };
        writeln!(
            report,
            "| export ≥ ½ COPY rate (same rows and columns, same order) | {:.2} of COPY ({} vs {} \
             rows/s, best rounds) | {} |",
            rate / in_order,
            thousands(rate),
            thousands(in_order),
            met(rate / in_order >= 0.5)
        )?;
        writeln!(
            report,
            "| export ≥ ½ COPY rate (same columns, any order) | {:.2} of COPY ({} rows/s) | {} |",
            rate / any,
            thousands(any),
            met(rate / any >= 0.5)
        )?;
        writeln!(
            report,
            "| (for scale, not the target) COPY of the stored columns only | {:.2} of it ({} \
             rows/s) | - |",
            rate / stored,
            thousands(stored),
        )?;
        writeln!(
            report,
            "| the download starts at once | first byte ≤ {} | - |",
            ms(ttfb)
        )?;
        writeln!(
            report,
            "| bounded memory | peak RSS growth ≤ {:.1} MiB for a {:.0} MB file | - |",
            rss as f64 / 1024.0,
            export.bytes as f64 / 1e6
        )?;
        writeln!(report, "\n{} CPUs.", cpus())?;
        Ok(())
    }
}
