//! Energy accounting benchmark (issue "Meter-grade energy accounting"): one site in
//! Europe/Ljubljana with 300 meters on 18 gateways and a year of 15-minute counter readings.
//! In one run it reports
//!
//! 1. the backfill: a year of readings written with `COPY`, month by month, each month queued
//!    in `energy_dirty` as ingest would have queued it; the profile worker's throughput
//!    (readings, counters and intervals per second of worker time) and the size of the tables;
//! 2. the steady state: live counters documents over MQTT at about the ingest benchmark's
//!    sustained rate, first with the worker held (ingest alone), then the held work drained
//!    (worker alone), then both together: CPU per 1000 readings, rates, and the backlog;
//! 3. API latency: a meter's 24-hour profile and the site's year by day and by month, against
//!    `/healthz` (a `SELECT 1` through the same HTTP stack) and the main SQL query of the
//!    same rows.
//!
//! Figures are reported, never asserted. `cargo bench -p headend-e2e --bench energy`,
//! parameters in `HEADEND_BENCH_ENERGY_*` (see [`Params`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use headend::config::Secret;
use headend::Config;
use headend_e2e::bench::copy::{copy_in, BinaryCopy};
use headend_e2e::bench::{cpus, env_or, run_with_clients, CpuSample, Machine, CLIENT_THREAD};
use headend_e2e::{http_request, start_cluster, MqttClient, TestApp};
use rumqttc::{AsyncClient, Packet, QoS};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Name of the client runtime's threads (MQTT clients, HTTP client), so their CPU time can
/// be told apart from Headend's.
const ZONE: Tz = chrono_tz::Europe::Ljubljana;
const SITE_NAME: &str = "Bench plant";
const QUARTER_MS: i64 = 900_000;
/// IR port plus RS485 slots 1..16.
const METERS_PER_GATEWAY: usize = 17;
/// Every this many meters one is a PV inverter's meter (exports by day).
const PV_EVERY: usize = 30;
const PANELS: usize = 6;
const CIRCUITS_PER_PANEL: usize = 10;
const USAGES: [&str; 8] = [
    "heating",
    "cooling",
    "hot_water",
    "lighting",
    "sockets",
    "ventilation",
    "process",
    "other",
];
/// How long a wait may go without progress before the run is declared stuck (one worker
/// step may hold a whole month of 600 counters).
const STALL: Duration = Duration::from_secs(900);

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_ENERGY_METERS`: meters (one site meter, the rest on circuits), 17 per
    /// gateway.
    meters: usize,
    /// `HEADEND_BENCH_ENERGY_MONTHS`: months of readings loaded, ending 2026-11-01 local.
    months: u32,
    /// `HEADEND_BENCH_ENERGY_RATE`: counter readings per second of the live phases (two per
    /// counters document).
    rate: u32,
    /// `HEADEND_BENCH_ENERGY_SECONDS`: duration of the live phase with the worker running; the
    /// phase with the worker held lasts half as long.
    seconds: u32,
    /// `HEADEND_BENCH_ENERGY_REQUESTS`: requests of each kind in the latency phase.
    requests: usize,
    /// `HEADEND_BENCH_ENERGY_LIVE`: 0 skips the steady state (the live phases), so that a run
    /// measuring the read side is only backfill and latency; default 1.
    live: bool,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let params = Self {
            meters: env_or("HEADEND_BENCH_ENERGY_METERS", 300)?,
            months: env_or("HEADEND_BENCH_ENERGY_MONTHS", 12)?,
            rate: env_or("HEADEND_BENCH_ENERGY_RATE", 34_000)?,
            seconds: env_or("HEADEND_BENCH_ENERGY_SECONDS", 20)?,
            requests: env_or("HEADEND_BENCH_ENERGY_REQUESTS", 200)?,
            live: env_or("HEADEND_BENCH_ENERGY_LIVE", 1u8)? != 0,
        };
        ensure!(
            params.meters >= 2 && params.months >= 1 && params.rate > 0 && params.seconds >= 1,
            "HEADEND_BENCH_ENERGY_*: at least 2 meters, 1 month, 1 second, a positive rate"
        );
        ensure!(params.requests > 0, "HEADEND_BENCH_ENERGY_REQUESTS > 0");
        Ok(params)
    }

    fn gateways(&self) -> usize {
        self.meters.div_ceil(METERS_PER_GATEWAY)
    }

    /// Pushes (one document per meter each) of a live phase lasting `seconds`.
    fn pushes(&self, seconds: u32) -> usize {
        ((u64::from(self.rate) * u64::from(seconds)) / (2 * self.meters as u64)).max(1) as usize
    }

    /// Time between two pushes in the live phases.
    fn push_period(&self) -> Duration {
        Duration::from_secs_f64(2.0 * self.meters as f64 / f64::from(self.rate))
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(None, |clients| async move { run(&params, &clients).await })
}

// ---------------------------------------------------------------------------------------
// The simulated site: deterministic load curves, exact counters.

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A number in [0, 1) drawn from `(a, b)`.
fn unit(a: u64, b: u64) -> f64 {
    (mix(mix(a) ^ b) >> 11) as f64 / (1u64 << 53) as f64
}

fn bump(hour: f64, mu: f64, sigma: f64) -> f64 {
    let d = (hour - mu) / sigma;
    (-0.5 * d * d).exp()
}

/// ~1 between `from` and `to` hours, with half-hour ramps.
fn window(hour: f64, from: f64, to: f64) -> f64 {
    1.0 / (1.0 + (-(hour - from) * 6.0).exp()) / (1.0 + ((hour - to) * 6.0).exp())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// The site's supply meter: everything behind it, plus unmetered loads.
    Site,
    Household,
    Office,
    Industrial,
    /// A PV inverter: exports by day, a little standby import at night.
    Pv,
}

struct Meter {
    serial: String,
    gateway: usize,
    /// `ir` or `rs485/<slot>`.
    port: String,
    load: Load,
    /// Rating (consumers) or peak (PV), W.
    rating_w: f64,
    /// Counter values, Wh.
    import_wh: i64,
    export_wh: i64,
    /// `counter1nr`, `counter2nr` ids.
    counters: [i64; 2],
    device_id: i64,
}

/// One reading of both registers of a meter.
#[derive(Clone, Copy)]
struct Reading {
    ts_ms: i64,
    import_wh: i64,
    export_wh: i64,
}

struct Fleet {
    meters: Vec<Meter>,
}

impl Fleet {
    fn new(n: usize) -> Self {
        let meters = (0..n)
            .map(|i| {
                let seed = i as u64;
                let load = match i {
                    0 => Load::Site,
                    i if i % PV_EVERY == PV_EVERY - 1 => Load::Pv,
                    i => [Load::Household, Load::Office, Load::Industrial][i % 3],
                };
                let draw = unit(seed, 1);
                let rating_w = match load {
                    Load::Site => 0.0,
                    Load::Household => 2_000.0 + 4_000.0 * draw,
                    Load::Office => 4_000.0 + 8_000.0 * draw,
                    Load::Industrial => 10_000.0 + 20_000.0 * draw,
                    Load::Pv => 30_000.0 + 40_000.0 * draw,
                };
                let slot = i % METERS_PER_GATEWAY;
                Meter {
                    serial: format!("{:08}", 41_000_000 + i),
                    gateway: i / METERS_PER_GATEWAY,
                    port: if slot == 0 {
                        "ir".into()
                    } else {
                        format!("rs485/{slot}")
                    },
                    load,
                    rating_w,
                    import_wh: 1_000_000 + (unit(seed, 2) * 90_000_000.0) as i64,
                    export_wh: if matches!(load, Load::Site | Load::Pv) {
                        (unit(seed, 3) * 1_000_000.0) as i64
                    } else {
                        0
                    },
                    counters: [0; 2],
                    device_id: 0,
                }
            })
            .collect();
        Self { meters }
    }

    /// Energy (import, export) in Wh of every meter over the quarter-hour starting at
    /// `start_ms`: a pure function of the time, so any quarter can be asked for again.
    fn energies(&self, start_ms: i64) -> Vec<(i64, i64)> {
        let t = DateTime::from_timestamp_millis(start_ms).unwrap_or_default();
        let local = t.with_timezone(&ZONE);
        let weekday = local.weekday().num_days_from_monday();
        let weekend = weekday >= 5;
        // Mid-quarter, local clock.
        let hour = f64::from(local.hour()) + (f64::from(local.minute()) + 7.5) / 60.0;
        let year = std::f64::consts::TAU * f64::from(local.ordinal0()) / 365.25;
        let winter = (year - std::f64::consts::TAU * 15.0 / 365.25).cos(); // 1 mid-January
        let summer = (year - std::f64::consts::TAU * 80.0 / 365.25).sin(); // 1 late June
                                                                           // Sun: solar time is about UTC + 1 h here.
        let solar_hour = f64::from(t.hour()) + (f64::from(t.minute()) + 7.5) / 60.0 + 1.0;
        let day_length = 12.0 + 3.8 * summer;
        let x = (solar_hour - (12.0 - day_length / 2.0)) / day_length;
        let sun = if (0.0..1.0).contains(&x) {
            (std::f64::consts::PI * x).sin().powf(1.3) * (0.55 + 0.45 * summer)
        } else {
            0.0
        };
        let quarter = (start_ms / QUARTER_MS) as u64;
        let day = (start_ms / 86_400_000) as u64;
        let mut out: Vec<(i64, i64)> = self
            .meters
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let noise = 0.85 + 0.3 * unit(i as u64 ^ 0xA5A5, quarter);
                let fraction = match m.load {
                    Load::Site => return (0, 0),
                    Load::Household => {
                        let home = if weekend {
                            0.35 * bump(hour, 12.5, 2.5)
                        } else {
                            0.1 * bump(hour, 13.0, 2.0)
                        };
                        (0.08 + 0.35 * bump(hour, 7.3, 0.8) + 0.85 * bump(hour, 19.5, 1.8) + home)
                            * (1.0 + 0.35 * winter)
                    }
                    Load::Office if weekend => 0.08,
                    Load::Office => {
                        (0.1 + 0.75 * window(hour, 7.5, 18.0) - 0.15 * bump(hour, 12.5, 0.5))
                            * (1.0 + 0.25 * winter.abs())
                    }
                    Load::Industrial if weekend => 0.3,
                    Load::Industrial => 0.35 + 0.55 * window(hour, 6.0, 22.0),
                    Load::Pv => {
                        if sun > 0.0 {
                            let cloud = 0.25 + 0.75 * unit(i as u64 ^ 0x5A5A, day);
                            let export = m.rating_w * sun * cloud * noise * 0.25;
                            return (0, export.round() as i64);
                        }
                        // Standby: 4-6 W.
                        return (1, 0);
                    }
                };
                ((m.rating_w * fraction * noise * 0.25).round() as i64, 0)
            })
            .collect();
        // The supply meter: what is behind it, 3 % losses and 800 W unmetered, minus PV.
        let behind: i64 = out.iter().map(|e| e.0).sum();
        let pv: i64 = out.iter().map(|e| e.1).sum();
        let net = behind + behind * 3 / 100 + 200 - pv;
        if let Some(site) = self.meters.iter().position(|m| m.load == Load::Site) {
            out[site] = (net.max(0), (-net).max(0));
        }
        out
    }

    /// The reading of every meter just after the quarter-hour boundary `start_ms` (a few
    /// seconds late, as a gateway reads), then the counters advanced over that quarter.
    fn step(&mut self, start_ms: i64) -> Vec<Reading> {
        let energies = self.energies(start_ms);
        let quarter = (start_ms / QUARTER_MS) as u64;
        self.meters
            .iter_mut()
            .enumerate()
            .zip(energies)
            .map(|((i, m), (import, export))| {
                let late_s = (mix(i as u64 ^ (quarter << 20)) % 20) as i64;
                let reading = Reading {
                    ts_ms: start_ms + late_s * 1000,
                    import_wh: m.import_wh + import * late_s / 900,
                    export_wh: m.export_wh + export * late_s / 900,
                };
                m.import_wh += import;
                m.export_wh += export;
                reading
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Encodings: the SG counters document, PostgreSQL's binary COPY.

fn local_time(ts_ms: i64) -> String {
    DateTime::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .with_timezone(&ZONE)
        .format("%d.%m.%Y %H:%M:%S")
        .to_string()
}

fn kwh(wh: i64) -> String {
    format!("{}.{:03} kWh", wh / 1000, wh % 1000)
}

/// A counters document as the SG publishes it (two non-resettable registers).
fn counters_doc(serial: &str, r: &Reading) -> String {
    format!(
        "{{\"header\":{{\"cmd\":\"get_energy_counters\",\"model\":\"IE38MD\",\
         \"serial_number\":\"{serial}\",\"local_time\":\"{}\",\"resetable_counters\":0,\
         \"non_resetable_counters\":2}},\"counters\":{{\"counter1nr\":\"{}\",\
         \"counter2nr\":\"{}\"}},\"settings\":{{\"tariff1nr\":\"1 2 3 4 \",\
         \"tariff2nr\":\"1 2 3 4 \"}}}}",
        local_time(r.ts_ms),
        kwh(r.import_wh),
        kwh(r.export_wh)
    )
}

// ---------------------------------------------------------------------------------------
// Metrics and CPU.

/// One scrape of `/metrics`.
#[derive(Default, Clone)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn take(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let response = http_request(
            addr,
            "GET",
            "/metrics",
            Some(headend_e2e::METRICS_TOKEN),
            None,
        )
        .await?;
        ensure!(response.status == 200, "/metrics: {}", response.status);
        Ok(Self(
            response
                .body
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        ))
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    fn since(&self, before: &Self, name: &str) -> f64 {
        self.get(name) - before.get(name)
    }

    /// Upper bound of the histogram bucket holding quantile `q` of the observations made
    /// between `before` and `self`.
    fn quantile_since(&self, before: &Self, name: &str, q: f64) -> Option<String> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, &str, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, le, v - before.get(k)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.2;
        if total <= 0.0 {
            return None;
        }
        let (_, le, _) = buckets.iter().find(|b| b.2 >= q * total)?;
        Some(if *le == "+Inf" {
            "> 5 s".to_owned()
        } else {
            format!("≤ {le} s")
        })
    }
}

const STEP_SECONDS: &str = "headend_profile_step_seconds";
const PROFILE_COUNTERS: &str = "headend_profile_counters_total";
const PROFILE_INTERVALS: &str = "headend_profile_intervals_total";
const INGESTED_READINGS: &str = "headend_ingest_register_readings_total";

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
    /// This process less the client threads: Headend (and the harness's polling).
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
            "Headend {:.2}, PostgreSQL {:.2}, clients {:.2}, other {:.2} (of {})",
            c(self.headend),
            c(self.postgres),
            c(self.clients),
            c(self.other),
            cpus()
        )
    }

    /// CPU seconds per 1000 readings: Headend, PostgreSQL.
    fn per_1000(&self, readings: u64) -> (f64, f64) {
        let k = readings as f64 / 1000.0;
        (self.headend / k.max(1e-9), self.postgres / k.max(1e-9))
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    match sorted.len().checked_sub(1) {
        Some(last) => sorted[(last as f64 * q).round() as usize],
        None => Duration::ZERO,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
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

fn mib(bytes: i64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
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

fn date(y: i32, m: u32, d: u32) -> anyhow::Result<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d).context("valid date")
}

/// What loading one stretch of readings cost.
struct Segment {
    label: String,
    readings: u64,
    generate: Duration,
    copy: Duration,
    /// From queueing the work to `energy_dirty` being empty (includes the worker's wake-up).
    drain: Duration,
    /// Sum of the worker's step times (`headend_profile_step_seconds_sum`).
    worker_busy: f64,
    steps: f64,
    counters: f64,
    intervals: f64,
    cpu: CpuUse,
}

struct Bench<'a> {
    params: &'a Params,
    clients: &'a Handle,
    app: TestApp,
    /// The bench's own connections (COPY, polling), apart from the app's pool.
    pool: PgPool,
    postmaster: u32,
    fleet: Fleet,
    gateways: Vec<(String, AsyncClient)>,
    acks: Arc<AtomicU64>,
    site: i64,
    admin: String,
    viewer: String,
    report: String,
}

async fn run(params: &Params, clients: &Handle) -> anyhow::Result<String> {
    headend::infra::telemetry::init("warn", false);
    // A dedicated cluster with fsync on, as in production and in the ingest benchmark.
    // PostgreSQL runs as `postgres` when we are root, so the directory above its data
    // directory must be traversable.
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
    config.log.filter = "warn".into();
    // The fleet's year starts on a fixed date (2025-11-01): keep all of it inside the backlog
    // horizon whatever day the bench runs on.
    config.energy.backlog_horizon_days = 3_650;
    config.http.metrics_token = Some(Secret::new(headend_e2e::METRICS_TOKEN));
    let app = TestApp::start(config, data_dir).await;
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&url)
        .await?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;

    let admin = app.user_token("admin@bench.example", "admin", &[]).await;
    let mut bench = Bench {
        params,
        clients,
        app,
        pool,
        postmaster,
        fleet: Fleet::new(params.meters),
        gateways: Vec::new(),
        acks: Arc::new(AtomicU64::new(0)),
        site: 0,
        admin,
        viewer: String::new(),
        report: String::new(),
    };
    let end = utc_ms(date(2026, 11, 1)?)?;
    let first_month = date(2026, 11, 1)? - Months::new(params.months);
    let start = utc_ms(first_month)?;
    // Live pushes, 15 minutes apart, end at the last quarter-hour before now; the stretch
    // between the loaded year and the first live push is loaded like the year ("catch-up").
    let (p1, p2) = if params.live {
        (
            params.pushes(params.seconds / 2),
            params.pushes(params.seconds),
        )
    } else {
        (0, 0)
    };
    let now_q = Utc::now().timestamp_millis() / QUARTER_MS * QUARTER_MS;
    let live_first = now_q - QUARTER_MS * (p1 + p2) as i64;
    ensure!(
        live_first > end,
        "{} live pushes 15 minutes apart do not fit between 2026-11-01 and now: lower \
         HEADEND_BENCH_ENERGY_RATE or HEADEND_BENCH_ENERGY_SECONDS",
        p1 + p2
    );

    eprintln!(
        "set-up: site, contract, {} panels, {} meters on {} gateways",
        PANELS,
        params.meters,
        params.gateways()
    );
    let circuits = bench.structure().await?;
    bench.connect_gateways().await?;
    bench.first_readings(start).await?;
    bench.place(&circuits).await?;

    let mut report = format!(
        "## Energy accounting benchmark\n\n{}\n\nPostgreSQL {pg_version} (own cluster, fsync \
         and synchronous_commit on); Headend in process with its default settings.\n\n\
         Parameters: {} meters on {} gateways, site in Europe/Ljubljana with the example \
         contract (two bands, demand and reactive charges); {} months of readings every 15 \
         minutes ending 2026-11-01 local; live phases at {} readings/s ({} and {} pushes); {} \
         requests of each kind.\n\n",
        Machine::probe().describe("Clients, Headend and PostgreSQL share it."),
        params.meters,
        params.gateways(),
        params.months,
        params.rate,
        p1,
        p2,
        params.requests
    );

    // 1. Backfill, month by month.
    let mut segments = Vec::new();
    let mut month = first_month;
    while utc_ms(month)? < end {
        let next = month + Months::new(1);
        let from = utc_ms(month)?.max(start + QUARTER_MS);
        let segment = bench
            .load(&month.format("%Y-%m").to_string(), from, utc_ms(next)?)
            .await?;
        segments.push(segment);
        month = next;
    }
    let catch_up = bench
        .load(
            &format!(
                "catch-up to {}",
                DateTime::from_timestamp_millis(live_first)
                    .unwrap_or_default()
                    .with_timezone(&ZONE)
                    .format("%Y-%m-%d %H:%M")
            ),
            end,
            live_first,
        )
        .await?;
    bench.backfill_section(&segments, &catch_up)?;
    bench.storage_section().await?;
    eprintln!("ANALYZE");
    sqlx::query("ANALYZE").execute(&bench.pool).await?;

    // 2. Steady state (skipped with HEADEND_BENCH_ENERGY_LIVE=0).
    if params.live {
        bench.live(live_first, p1, p2).await?;
    } else {
        eprintln!("steady state skipped (HEADEND_BENCH_ENERGY_LIVE=0)");
        bench
            .report
            .push_str("Steady state skipped (`HEADEND_BENCH_ENERGY_LIVE=0`).\n\n");
    }

    // 3. API latency.
    let latency = bench.latency().await?;
    let year_p99 = latency.year;

    report.push_str(&bench.report);
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    writeln!(report, "### Targets\n")?;
    writeln!(report, "| target | figure | met |\n| --- | --- | --- |")?;
    writeln!(
        report,
        "| 24 h profile p99 < 10 ms | {} with the light requests; {} round-robin with the \
         site-year requests and their SQL | {} |",
        ms(latency.profile_alone),
        ms(latency.profile_mixed),
        match (
            latency.profile_alone < Duration::from_millis(10),
            latency.profile_mixed < Duration::from_millis(10)
        ) {
            (true, true) => "yes",
            (true, false) => "alone: yes; behind a heavy request: **no**",
            _ => "**no**",
        }
    )?;
    writeln!(
        report,
        "| site year (by day, by month) p99 < 50 ms | {} (worst of the two) | {} |",
        ms(year_p99),
        met(year_p99 < Duration::from_millis(50))
    )?;
    writeln!(report)?;

    for (_, client) in &bench.gateways {
        let _ = client.try_disconnect();
    }
    bench.pool.close().await;
    bench.app.stop().await;
    cluster.stop().await?;
    Ok(report)
}

impl Bench<'_> {
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

    /// Site, contract, panels and circuits through the API; returns the circuit ids.
    async fn structure(&mut self) -> anyhow::Result<Vec<i64>> {
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
        let mut circuits = Vec::new();
        for p in 0..PANELS {
            let panel = self
                .api(
                    "POST",
                    &format!("/api/v1/sites/{}/panels", self.site),
                    Some(json!({ "name": format!("Panel {}", (b'A' + p as u8) as char) })),
                )
                .await?["id"]
                .as_i64()
                .context("panel id")?;
            for c in 0..CIRCUITS_PER_PANEL {
                let usage = USAGES[(p * CIRCUITS_PER_PANEL + c) % USAGES.len()];
                let circuit = self
                    .api(
                        "POST",
                        &format!("/api/v1/panels/{panel}/circuits"),
                        Some(json!({ "name": format!("C{:02} {usage}", c + 1), "usage": usage })),
                    )
                    .await?["id"]
                    .as_i64()
                    .context("circuit id")?;
                circuits.push(circuit);
            }
        }
        Ok(circuits)
    }

    /// Registers the gateways on the site and connects one MQTT client for each, on the
    /// client runtime.
    async fn connect_gateways(&mut self) -> anyhow::Result<()> {
        let addr = self.app.mqtt.context("embedded MQTT")?;
        // All registered before any connects: ingest reloads its gateway directory on a
        // record from an unknown gateway at most every 500 ms, and rejects records of a
        // gateway registered just after such a reload until the next one.
        let mut registered = Vec::new();
        for g in 0..self.params.gateways() {
            let serial = format!("BENCHE{g:03}");
            let password = self.app.gateway(&serial, Some(self.site), None).await;
            registered.push((g, serial, password));
        }
        let mut connecting = JoinSet::new();
        for (g, serial, password) in registered {
            let acks = self.acks.clone();
            connecting.spawn_on(
                async move {
                    let mut mqtt =
                        MqttClient::connect(addr, &format!("{serial}-1"), &serial, &password)
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
                    anyhow::Ok((g, serial, client))
                },
                self.clients,
            );
        }
        let mut gateways = Vec::new();
        while let Some(joined) = connecting.join_next().await {
            gateways.push(joined??);
        }
        gateways.sort_by_key(|(g, ..)| *g);
        self.gateways = gateways.into_iter().map(|(_, s, c)| (s, c)).collect();
        Ok(())
    }

    /// Publishes `docs` (meter index, document) and waits for every PUBACK.
    async fn publish(&self, docs: Vec<(usize, String)>) -> anyhow::Result<()> {
        let target = self.acks.load(Ordering::Relaxed) + docs.len() as u64;
        for (m, doc) in docs {
            let meter = &self.fleet.meters[m];
            let (serial, client) = &self.gateways[meter.gateway];
            client
                .publish(
                    format!("sg/{serial}/pub/counters/{}", meter.port),
                    QoS::AtLeastOnce,
                    false,
                    doc,
                )
                .await?;
        }
        self.until("PUBACKs", || async {
            Ok(self.acks.load(Ordering::Relaxed) >= target)
        })
        .await
    }

    /// Polls `done` every 50 ms until it says so; fails after [`STALL`].
    async fn until<F, Fut>(&self, what: &str, mut done: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let started = Instant::now();
        while !done().await? {
            if started.elapsed() > STALL {
                bail!("{what}: no end after {STALL:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn dirty(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn drained(&self) -> anyhow::Result<()> {
        self.until("energy_dirty drained", || async {
            Ok(self.dirty().await? == 0)
        })
        .await
    }

    /// Wakes the profile worker as ingest does after a batch: a PATCH of the site's name
    /// (unchanged, so nothing is queued) notifies it.
    async fn wake_worker(&self) -> anyhow::Result<()> {
        self.api(
            "PATCH",
            &format!("/api/v1/sites/{}", self.site),
            Some(json!({ "name": SITE_NAME })),
        )
        .await?;
        Ok(())
    }

    /// The first reading of every meter, over MQTT: it creates the devices and counters as a
    /// gateway's first push does.
    async fn first_readings(&mut self, start: i64) -> anyhow::Result<()> {
        let readings = self.fleet.step(start);
        let docs = readings
            .iter()
            .enumerate()
            .map(|(m, r)| (m, counters_doc(&self.fleet.meters[m].serial, r)))
            .collect();
        self.publish(docs).await?;
        let expected = 2 * self.params.meters as i64;
        self.app
            .wait_count("SELECT count(*) FROM counter_readings", expected)
            .await;
        let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT d.serial, d.id, c.name, c.id FROM devices d JOIN counters c ON c.device_id = d.id
             WHERE d.kind = 'meter'",
        )
        .fetch_all(&self.pool)
        .await?;
        let index: HashMap<String, usize> = self
            .fleet
            .meters
            .iter()
            .enumerate()
            .map(|(i, m)| (m.serial.clone(), i))
            .collect();
        for (serial, device, name, counter) in rows {
            let meter = &mut self.fleet.meters[*index.get(&serial).context("known meter")?];
            meter.device_id = device;
            match name.as_str() {
                "counter1nr" => meter.counters[0] = counter,
                "counter2nr" => meter.counters[1] = counter,
                other => bail!("unexpected register {other}"),
            }
        }
        ensure!(
            self.fleet
                .meters
                .iter()
                .all(|m| m.counters.iter().all(|c| *c > 0)),
            "every meter has both registers"
        );
        self.drained().await
    }

    /// One site meter; the others on circuits, through the API.
    async fn place(&self, circuits: &[i64]) -> anyhow::Result<()> {
        for (i, meter) in self.fleet.meters.iter().enumerate() {
            let body = match meter.load {
                Load::Site => json!({ "measures": "site", "name": "Main supply" }),
                load => json!({
                    "circuit_id": circuits[(i - 1) % circuits.len()],
                    "name": format!("{load:?} {i}"),
                }),
            };
            self.api(
                "PATCH",
                &format!("/api/v1/devices/{}", meter.serial),
                Some(body),
            )
            .await?;
        }
        self.drained().await
    }

    /// Loads the readings of the quarter-hour boundaries in `[from, to)` with COPY, queues
    /// one `energy_dirty` row per counter spanning them, and waits for the worker.
    async fn load(&mut self, label: &str, from: i64, to: i64) -> anyhow::Result<Segment> {
        let started = Instant::now();
        let n = self.fleet.meters.len();
        let mut series: Vec<Vec<Reading>> = vec![Vec::new(); n];
        let mut b = from;
        while b < to {
            for (m, r) in self.fleet.step(b).into_iter().enumerate() {
                series[m].push(r);
            }
            b += QUARTER_MS;
        }
        // Counter by counter, in time order: as the primary key is laid out.
        let mut copy = BinaryCopy::new();
        let (mut ids, mut froms, mut tos) = (Vec::new(), Vec::new(), Vec::new());
        for (meter, readings) in self.fleet.meters.iter().zip(&series) {
            let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
                continue;
            };
            for (k, counter) in meter.counters.iter().enumerate() {
                for r in readings {
                    copy.row(5);
                    copy.int8(*counter);
                    copy.timestamptz(r.ts_ms);
                    copy.int8(1000 * if k == 0 { r.import_wh } else { r.export_wh });
                    copy.timestamptz(r.ts_ms + 3_000);
                    copy.int2(0);
                }
                ids.push(*counter);
                froms.push(DateTime::from_timestamp_millis(first.ts_ms).unwrap_or_default());
                tos.push(DateTime::from_timestamp_millis(last.ts_ms).unwrap_or_default());
            }
        }
        let (chunks, rows) = copy.finish();
        let generate = started.elapsed();

        let copying = Instant::now();
        let copied = copy_in(
            &self.pool,
            "COPY counter_readings (counter_id, ts, value_milli, received_at, flags) \
             FROM STDIN (FORMAT binary)",
            chunks,
        )
        .await?;
        ensure!(copied == rows, "COPY wrote {copied} of {rows} rows");
        let copy = copying.elapsed();

        let metrics = Scrape::take(self.app.http).await?;
        let cpu = CpuSample::now()?;
        let queued = Instant::now();
        sqlx::query(
            "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
             SELECT *, true FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[])",
        )
        .bind(&ids)
        .bind(&froms)
        .bind(&tos)
        .execute(&self.pool)
        .await?;
        self.wake_worker().await?;
        self.drained().await?;
        let drain = queued.elapsed();
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        let after = Scrape::take(self.app.http).await?;
        let segment = Segment {
            label: label.to_owned(),
            readings: rows,
            generate,
            copy,
            drain,
            worker_busy: after.since(&metrics, &format!("{STEP_SECONDS}_sum")),
            steps: after.since(&metrics, &format!("{STEP_SECONDS}_count")),
            counters: after.since(&metrics, PROFILE_COUNTERS),
            intervals: after.since(&metrics, PROFILE_INTERVALS),
            cpu,
        };
        eprintln!(
            "{label}: {} readings, COPY {:.1} s, worker {:.1} s busy ({:.0} readings/s), \
             drained after {:.1} s",
            segment.readings,
            segment.copy.as_secs_f64(),
            segment.worker_busy,
            segment.readings as f64 / segment.worker_busy.max(1e-9),
            segment.drain.as_secs_f64()
        );
        Ok(segment)
    }

    fn backfill_section(&mut self, segments: &[Segment], catch_up: &Segment) -> anyhow::Result<()> {
        let out = &mut self.report;
        writeln!(
            out,
            "### Backfill: readings by COPY, then the profile worker\n\n\
             Each month is written with binary COPY (counter by counter), then one \
             `energy_dirty` row per counter spanning it is queued and the worker woken. Worker \
             time is the sum of its step times (`{STEP_SECONDS}_sum`); \"drained\" is wall \
             time from queueing to an empty queue.\n"
        )?;
        writeln!(
            out,
            "| stretch | readings | COPY | COPY rows/s | worker steps | worker busy | \
             **readings/s** | counters/s | intervals/s | drained after | CPU Headend / PostgreSQL |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        )?;
        let row = |out: &mut String, s: &Segment| {
            writeln!(
                out,
                "| {} | {} | {:.1} s | {} | {:.0} | {:.1} s | **{}** | {:.0} | {} | {:.1} s | {:.1} s / {:.1} s |",
                s.label,
                thousands(s.readings as f64),
                s.copy.as_secs_f64(),
                thousands(s.readings as f64 / s.copy.as_secs_f64().max(1e-9)),
                s.steps,
                s.worker_busy,
                thousands(s.readings as f64 / s.worker_busy.max(1e-9)),
                s.counters / s.worker_busy.max(1e-9),
                thousands(s.intervals / s.worker_busy.max(1e-9)),
                s.drain.as_secs_f64(),
                s.cpu.headend,
                s.cpu.postgres,
            )
        };
        for s in segments {
            row(out, s)?;
        }
        let sum = |f: &dyn Fn(&Segment) -> f64| segments.iter().map(f).sum::<f64>();
        let readings = sum(&|s| s.readings as f64);
        let busy = sum(&|s| s.worker_busy);
        let copy = sum(&|s| s.copy.as_secs_f64());
        let drain = sum(&|s| s.drain.as_secs_f64());
        writeln!(
            out,
            "| **all months** | {} | {:.1} s | {} | {:.0} | {:.1} s | **{}** | {:.0} | {} | {:.1} s | {:.1} s / {:.1} s |",
            thousands(readings),
            copy,
            thousands(readings / copy.max(1e-9)),
            sum(&|s| s.steps),
            busy,
            thousands(readings / busy.max(1e-9)),
            sum(&|s| s.counters) / busy.max(1e-9),
            thousands(sum(&|s| s.intervals) / busy.max(1e-9)),
            drain,
            sum(&|s| s.cpu.headend),
            sum(&|s| s.cpu.postgres),
        )?;
        row(out, catch_up)?;
        let gen = sum(&|s| s.generate.as_secs_f64());
        writeln!(
            out,
            "\nGenerating the readings (untimed above) took {gen:.1} s. CPU during the drains: \
             Headend {:.2} cores, PostgreSQL {:.2} cores on average.\n",
            sum(&|s| s.cpu.headend) / drain.max(1e-9),
            sum(&|s| s.cpu.postgres) / drain.max(1e-9),
        )?;
        Ok(())
    }

    async fn storage_section(&mut self) -> anyhow::Result<()> {
        eprintln!("table sizes");
        let mut rows = Vec::new();
        for table in [
            "counter_readings",
            "energy_intervals",
            "counter_events",
            "energy_days",
            "energy_months",
            "site_intervals",
            "site_days",
            "energy_dirty",
        ] {
            let (count, size): (i64, i64) = sqlx::query_as(&format!(
                "SELECT (SELECT count(*) FROM {table}),
                        COALESCE((SELECT sum(pg_total_relation_size(relid))::int8
                                  FROM pg_partition_tree('{table}')),
                                 pg_total_relation_size('{table}'))"
            ))
            .fetch_one(&self.pool)
            .await?;
            rows.push((table, count, size));
        }
        let bands: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE band_milli[1] > 0 AND band_milli[2] > 0),
                    count(*) FILTER (WHERE cost_nano IS NOT NULL)
             FROM energy_days",
        )
        .fetch_one(&self.pool)
        .await?;
        let out = &mut self.report;
        writeln!(
            out,
            "### Storage after the backfill\n\n`pg_total_relation_size` (table, TOAST, \
             indexes; summed over the partitions of a partitioned table).\n\n| table | rows | size | bytes/row |\n| --- | --- | --- | --- |"
        )?;
        for (table, count, size) in &rows {
            let per_row = if *count > 0 {
                format!("{:.0}", *size as f64 / *count as f64)
            } else {
                "-".to_owned()
            };
            writeln!(
                out,
                "| `{table}` | {} | {} | {per_row} |",
                thousands(*count as f64),
                mib(*size),
            )?;
        }
        let energy: i64 = rows.iter().skip(1).map(|r| r.2).sum();
        writeln!(
            out,
            "\nDerived energy tables together: {} ({:.2} × the readings). Days with energy in \
             both bands: {} of {}; priced days: {}.\n",
            mib(energy),
            energy as f64 / rows[0].2.max(1) as f64,
            thousands(bands.0 as f64),
            thousands(rows[3].1 as f64),
            thousands(bands.1 as f64),
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Steady state.

/// Live readings of one phase, by gateway: topics and serials of its meters, and per push
/// the reading of each.
struct LivePlan {
    gateways: Vec<(AsyncClient, Vec<(String, String)>, Vec<Vec<Reading>>)>,
    docs: u64,
}

/// Backlog samples: (seconds since the phase began, `energy_dirty` rows, readings
/// committed, counters recomputed).
type Samples = Vec<(f64, i64, f64, f64)>;

impl Bench<'_> {
    fn plan(&mut self, first: i64, pushes: usize) -> LivePlan {
        let readings: Vec<Vec<Reading>> = (0..pushes)
            .map(|k| self.fleet.step(first + QUARTER_MS * k as i64))
            .collect();
        let gateways = self
            .gateways
            .iter()
            .enumerate()
            .map(|(g, (serial, client))| {
                let mine: Vec<usize> = (0..self.fleet.meters.len())
                    .filter(|m| self.fleet.meters[*m].gateway == g)
                    .collect();
                let meters = mine
                    .iter()
                    .map(|m| {
                        let meter = &self.fleet.meters[*m];
                        (
                            format!("sg/{serial}/pub/counters/{}", meter.port),
                            meter.serial.clone(),
                        )
                    })
                    .collect();
                let pushes = readings
                    .iter()
                    .map(|push| mine.iter().map(|m| push[*m]).collect())
                    .collect();
                (client.clone(), meters, pushes)
            })
            .collect();
        LivePlan {
            gateways,
            docs: (pushes * self.fleet.meters.len()) as u64,
        }
    }

    /// Publishes a plan on the client runtime, push `k` of every gateway at `k` periods
    /// after the start; returns the worst lateness of a push.
    async fn publish_live(&self, plan: LivePlan) -> anyhow::Result<Duration> {
        let period = self.params.push_period();
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = JoinSet::new();
        for (client, meters, pushes) in plan.gateways {
            tasks.spawn_on(
                async move {
                    let mut worst = Duration::ZERO;
                    for (k, push) in pushes.iter().enumerate() {
                        let due = start + period.mul_f64(k as f64);
                        tokio::time::sleep_until(due).await;
                        worst = worst.max(due.elapsed());
                        for ((topic, serial), reading) in meters.iter().zip(push) {
                            client
                                .publish(
                                    topic.as_str(),
                                    QoS::AtLeastOnce,
                                    false,
                                    counters_doc(serial, reading),
                                )
                                .await?;
                        }
                    }
                    anyhow::Ok(worst)
                },
                self.clients,
            );
        }
        let mut worst = Duration::ZERO;
        while let Some(joined) = tasks.join_next().await {
            worst = worst.max(joined??);
        }
        Ok(worst)
    }

    async fn committed(&self, target: f64) -> anyhow::Result<()> {
        self.until("readings committed", || async {
            Ok(Scrape::take(self.app.http).await?.get(INGESTED_READINGS) >= target)
        })
        .await
    }

    /// Holds the profile worker while `paused`: a statement trigger on the DELETE that starts
    /// each of its steps waits until the flag is cleared. Ingest only inserts into
    /// `energy_dirty` and is not held.
    async fn hold_worker(&self, paused: bool) -> anyhow::Result<()> {
        if paused {
            sqlx::raw_sql(
                "CREATE TABLE bench_pause (paused boolean NOT NULL);
                 INSERT INTO bench_pause VALUES (true);
                 CREATE FUNCTION bench_hold() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     WHILE (SELECT paused FROM bench_pause) LOOP
                         PERFORM pg_sleep(0.02);
                     END LOOP;
                     RETURN NULL;
                 END $$;
                 CREATE TRIGGER bench_hold BEFORE DELETE ON energy_dirty
                     FOR EACH STATEMENT EXECUTE FUNCTION bench_hold();",
            )
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query("UPDATE bench_pause SET paused = false")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn release_hold(&self) -> anyhow::Result<()> {
        sqlx::raw_sql(
            "DROP TRIGGER bench_hold ON energy_dirty; DROP FUNCTION bench_hold();
             DROP TABLE bench_pause;",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Samples the backlog every second on the client runtime until `stop`.
    fn sample(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<Samples> {
        let (pool, http) = (self.pool.clone(), self.app.http);
        let start = Instant::now();
        self.clients.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let dirty: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM energy_dirty")
                    .fetch_one(&pool)
                    .await
                    .ok();
                if let (Some(dirty), Ok(m)) = (dirty, Scrape::take(http).await) {
                    samples.push((
                        start.elapsed().as_secs_f64(),
                        dirty,
                        m.get(INGESTED_READINGS),
                        m.get(PROFILE_COUNTERS),
                    ));
                }
                tokio::select! {
                    () = stop.cancelled() => return samples,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    }

    async fn live(&mut self, first: i64, p1: usize, p2: usize) -> anyhow::Result<()> {
        let meters = self.fleet.meters.len() as f64;
        // Phase 1: ingest with the worker held.
        eprintln!("live phase 1: {p1} pushes, worker held");
        self.hold_worker(true).await?;
        let plan = self.plan(first, p1);
        let readings1 = 2 * plan.docs;
        let m0 = Scrape::take(self.app.http).await?;
        let c0 = CpuSample::now()?;
        let late1 = self.publish_live(plan).await?;
        self.committed(m0.get(INGESTED_READINGS) + readings1 as f64)
            .await?;
        let c1 = CpuSample::now()?;
        let m1 = Scrape::take(self.app.http).await?;
        let ingest_only = cpu_use(&c0, &c1, self.postmaster);
        let backlog1 = self.dirty().await?;
        ensure!(
            m1.since(&m0, PROFILE_COUNTERS) == 0.0,
            "the worker was not held"
        );

        // The held work, drained by the worker alone.
        eprintln!("live phase 1: draining {backlog1} queued spans");
        self.hold_worker(false).await?;
        self.wake_worker().await?;
        self.drained().await?;
        let c2 = CpuSample::now()?;
        let m2 = Scrape::take(self.app.http).await?;
        let worker_only = cpu_use(&c1, &c2, self.postmaster);
        self.release_hold().await?;

        // Phase 2: both.
        eprintln!("live phase 2: {p2} pushes, worker running");
        let plan = self.plan(first + QUARTER_MS * p1 as i64, p2);
        let readings2 = 2 * plan.docs;
        let stop = tokio_util::sync::CancellationToken::new();
        let m3 = Scrape::take(self.app.http).await?;
        let c3 = CpuSample::now()?;
        let sampler = self.sample(stop.clone());
        let late2 = self.publish_live(plan).await?;
        let published = c3.at().elapsed();
        let backlog_at_end = self.dirty().await?;
        self.committed(m3.get(INGESTED_READINGS) + readings2 as f64)
            .await?;
        let c4 = CpuSample::now()?;
        let m4 = Scrape::take(self.app.http).await?;
        self.drained().await?;
        let c5 = CpuSample::now()?;
        let m5 = Scrape::take(self.app.http).await?;
        stop.cancel();
        let samples = sampler.await?;
        let both = cpu_use(&c3, &c5, self.postmaster);
        let ingest_window = cpu_use(&c3, &c4, self.postmaster);
        let lag = c5.at() - c4.at();

        let per_s = |n: f64, s: f64| thousands(n / s.max(1e-9));
        let (h1, p1k) = ingest_only.per_1000(readings1);
        let (h2, p2k) = worker_only.per_1000(readings1);
        let (h3, p3k) = both.per_1000(readings2);
        let busy2 = m2.since(&m1, &format!("{STEP_SECONDS}_sum"));
        let busy5 = m5.since(&m3, &format!("{STEP_SECONDS}_sum"));
        let ingest_rate2 = readings2 as f64 / ingest_window.wall;
        let counters_rate2 = m4.since(&m3, PROFILE_COUNTERS) / ingest_window.wall;
        let max_backlog = samples.iter().map(|s| s.1).max().unwrap_or(0);
        // Every fifth second or so, and the last.
        let mut next = 0.0;
        let backlog_series: Vec<String> = samples
            .iter()
            .enumerate()
            .filter(|(i, (t, ..))| {
                let keep = *t >= next || *i + 1 == samples.len();
                if keep {
                    next = t + 4.5;
                }
                keep
            })
            .map(|(_, (t, dirty, ..))| format!("{t:.0} s: {dirty}"))
            .collect();
        let out = &mut self.report;
        writeln!(
            out,
            "### Steady state: live counters over MQTT at {} readings/s\n\n\
             Every meter publishes one counters document per push (two readings), pushes 15 \
             minutes apart in data time, paced at {:.1} ms in wall time so that {} meters \
             give {} readings/s; the last push is the last quarter-hour before the run. Phase 1 \
             holds the worker (a statement trigger on its DELETE from `energy_dirty` waits; \
             ingest only inserts there), then lets it drain what was queued; phase 2 runs \
             both. CPU is utime + stime from `/proc` (Headend: the bench process less its \
             client threads).\n",
            self.params.rate,
            self.params.push_period().as_secs_f64() * 1000.0,
            meters,
            self.params.rate
        )?;
        writeln!(
            out,
            "| phase | readings | wall | rate | CPU s per 1000 readings: Headend / PostgreSQL | cores busy |\n\
             | --- | --- | --- | --- | --- | --- |"
        )?;
        writeln!(
            out,
            "| 1. ingest alone (worker held) | {} | {:.1} s | {} readings/s committed (worst push {:.0} ms late) | **{h1:.4} / {p1k:.4}** | {} |",
            thousands(readings1 as f64),
            ingest_only.wall,
            per_s(readings1 as f64, ingest_only.wall),
            late1.as_secs_f64() * 1000.0,
            ingest_only.cores()
        )?;
        writeln!(
            out,
            "| 1. worker alone, draining phase 1 ({} queued spans) | {} | {:.1} s ({} steps; their times sum to {:.1} s with the held one) | {} readings/s, {:.0} counters/s, {} intervals/s | **{h2:.4} / {p2k:.4}** | {} |",
            thousands(backlog1 as f64),
            thousands(readings1 as f64),
            worker_only.wall,
            m2.since(&m1, &format!("{STEP_SECONDS}_count")),
            busy2,
            per_s(readings1 as f64, worker_only.wall),
            m2.since(&m1, PROFILE_COUNTERS) / worker_only.wall.max(1e-9),
            per_s(m2.since(&m1, PROFILE_INTERVALS), worker_only.wall),
            worker_only.cores()
        )?;
        writeln!(
            out,
            "| 2. ingest and worker | {} | {:.1} s until committed, {:.1} s until drained | {} readings/s committed (worst push {:.0} ms late) | **{h3:.4} / {p3k:.4}** | {} |",
            thousands(readings2 as f64),
            ingest_window.wall,
            both.wall,
            per_s(readings2 as f64, ingest_window.wall),
            late2.as_secs_f64() * 1000.0,
            both.cores()
        )?;
        writeln!(
            out,
            "\nPhase 2 in detail:\n\n| figure | value |\n| --- | --- |\n\
             | ingest rate (committed) | {} readings/s |\n\
             | worker recompute rate while ingesting | {counters_rate2:.0} counters/s, {} intervals/s |\n\
             | **counters recomputed per reading ingested** | **{:.3}** |\n\
             | worker busy | {busy5:.1} s of {:.1} s ({:.0} %), {} steps |\n\
             | step time p50 / p99 (`{STEP_SECONDS}` buckets) | {} / {} |\n\
             | `energy_dirty` backlog: max / when publishing ended | {max_backlog} / {backlog_at_end} rows |\n\
             | lag: all committed → all intervals and rollups current | {:.2} s |\n\
             | backlog every 5 s | {} |\n",
            thousands(ingest_rate2),
            per_s(m4.since(&m3, PROFILE_INTERVALS), ingest_window.wall),
            counters_rate2 / ingest_rate2.max(1e-9),
            both.wall,
            100.0 * busy5 / both.wall.max(1e-9),
            m5.since(&m3, &format!("{STEP_SECONDS}_count")),
            m5.quantile_since(&m3, STEP_SECONDS, 0.5).unwrap_or_default(),
            m5.quantile_since(&m3, STEP_SECONDS, 0.99).unwrap_or_default(),
            lag.as_secs_f64(),
            backlog_series.join(", ")
        )?;
        writeln!(
            out,
            "CPU per 1000 readings, Headend + PostgreSQL: ingest alone {:.4} s, worker alone \
             {:.4} s (sum {:.4} s); both together {:.4} s. Published {:.1} s.\n",
            h1 + p1k,
            h2 + p2k,
            h1 + p1k + h2 + p2k,
            h3 + p3k,
            published.as_secs_f64()
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// API latency.

/// One kind of request of the latency phase.
/// What the latency phase reports to the targets.
struct Latency {
    /// Round-robin with `/healthz` and the profile's SQL only.
    profile_alone: Duration,
    /// Round-robin with every probe, the site-year requests among them.
    profile_mixed: Duration,
    year: Duration,
}

#[derive(Clone)]
enum Probe {
    Http {
        name: &'static str,
        /// Path per request number.
        paths: Vec<String>,
        token: Option<String>,
    },
    Sql {
        name: &'static str,
        sql: &'static str,
        /// (counter ids, from, to) per request number.
        binds: Vec<(Vec<i64>, DateTime<Utc>, DateTime<Utc>)>,
    },
}

impl Probe {
    fn name(&self) -> &'static str {
        match self {
            Self::Http { name, .. } | Self::Sql { name, .. } => name,
        }
    }
}

/// The profile's intervals query, as `accounting::query::profile` runs it.
const SQL_PROFILE: &str = "SELECT counter_id, start, energy_milli, quality FROM energy_intervals
     WHERE counter_id = ANY($1) AND start >= $2 AND start < $3 ORDER BY counter_id, start";
/// The consumption query for `by=day`, as `accounting::query::consumption` runs it: one row
/// per counter and day. With `group=meter` it reads every meter's import and export (the
/// reference binds all counters); a total reads only the top-level meters (the site meter).
const SQL_YEAR_BY_DAY: &str = "SELECT counter_id, day, energy_milli, measured::int8,
        estimated::int8, cost_nano, (cost_nano IS NOT NULL)::int4::int8, 1::int8, currency
     FROM energy_days
     WHERE counter_id = ANY($1) AND day >= ($2 AT TIME ZONE 'Europe/Ljubljana')::date
       AND day <= ($3 AT TIME ZONE 'Europe/Ljubljana')::date";
/// The consumption query for `by=month` over whole months: the monthly rollup.
const SQL_YEAR_BY_MONTH: &str = "SELECT counter_id, month, energy_milli, measured, estimated,
        cost_nano, priced_days::int8, days::int8, currency
     FROM energy_months
     WHERE counter_id = ANY($1) AND month >= ($2 AT TIME ZONE 'Europe/Ljubljana')::date
       AND month < ($3 AT TIME ZONE 'Europe/Ljubljana')::date";

impl Bench<'_> {
    /// One-minute measurements for the (meter, day) pairs the profile requests ask for, so
    /// that the profile's power statistics have data.
    async fn measurements(&self, pairs: &BTreeSet<(usize, NaiveDate)>) -> anyhow::Result<u64> {
        let mut copy = BinaryCopy::new();
        let mut by_day: HashMap<NaiveDate, Vec<usize>> = HashMap::new();
        for (m, d) in pairs {
            by_day.entry(*d).or_default().push(*m);
        }
        for (day, meters) in by_day {
            let from = utc_ms(day)?;
            let to = utc_ms(day + chrono::Days::new(1))?;
            let mut q = from;
            while q < to {
                let energies = self.fleet.energies(q);
                let local = DateTime::from_timestamp_millis(q)
                    .unwrap_or_default()
                    .with_timezone(&ZONE);
                let tariff = if local.weekday().num_days_from_monday() < 5
                    && (6..22).contains(&local.hour())
                {
                    1
                } else {
                    2
                };
                for m in &meters {
                    let (import, export) = energies[*m];
                    let device = self.fleet.meters[*m].device_id;
                    for minute in 0..15 {
                        let ts = q + minute * 60_000;
                        let wiggle = unit(*m as u64, ts as u64);
                        let p = ((import - export) * 4) as f64 * (0.96 + 0.08 * wiggle);
                        let reactive = p.abs() * 0.3;
                        let s = (p * p + reactive * reactive).sqrt();
                        let u = 229.0 + 4.0 * wiggle;
                        copy.row(14);
                        copy.int8(device);
                        copy.timestamptz(ts);
                        copy.timestamptz(ts + 2_000);
                        copy.int2(0);
                        copy.int2(tariff);
                        for phase in 0..3 {
                            copy.float4((u + f64::from(phase)) as f32);
                        }
                        for _ in 0..3 {
                            copy.float4((s / 3.0 / u) as f32);
                        }
                        copy.float4(p as f32);
                        copy.float4(reactive as f32);
                        copy.float4(s as f32);
                    }
                }
                q += QUARTER_MS;
            }
        }
        let (chunks, rows) = copy.finish();
        copy_in(
            &self.pool,
            "COPY measurements (device_id, ts, received_at, flags, tariff, u1, u2, u3, i1, i2, \
             i3, p, q, s) FROM STDIN (FORMAT binary)",
            chunks,
        )
        .await?;
        Ok(rows)
    }

    /// Runs every probe `requests` times, round-robin, one request at a time, on the client
    /// runtime. Returns the sorted latencies and the last response's size per probe.
    async fn probe(&self, probes: Vec<Probe>) -> anyhow::Result<Vec<(Vec<Duration>, usize)>> {
        let (pool, http, requests) = (self.pool.clone(), self.app.http, self.params.requests);
        self.clients
            .spawn(async move {
                let mut results = vec![(Vec::with_capacity(requests), 0); probes.len()];
                for i in 0..requests {
                    for (probe, result) in probes.iter().zip(&mut results) {
                        let started = Instant::now();
                        let size = match probe {
                            Probe::Http { name, paths, token } => {
                                let path = &paths[i % paths.len()];
                                let r =
                                    http_request(http, "GET", path, token.as_deref(), None).await?;
                                ensure!(r.status == 200, "{name} {path}: {} {}", r.status, r.body);
                                r.body.len()
                            }
                            Probe::Sql { sql, binds, .. } => {
                                let (ids, from, to) = &binds[i % binds.len()];
                                let rows = sqlx::query(sql)
                                    .bind(ids)
                                    .bind(from)
                                    .bind(to)
                                    .fetch_all(&pool)
                                    .await?;
                                rows.len()
                            }
                        };
                        result.0.push(started.elapsed());
                        result.1 = size;
                    }
                }
                for result in &mut results {
                    result.0.sort_unstable();
                }
                anyhow::Ok(results)
            })
            .await?
    }

    /// The profile's p99s and the worst p99 of the two site-year queries.
    async fn latency(&mut self) -> anyhow::Result<Latency> {
        let requests = self.params.requests;
        let meters = self.fleet.meters.len();
        // Weekdays of October 2026.
        let days: Vec<NaiveDate> = [12, 13, 14, 15, 16, 19, 20, 21, 22, 23]
            .into_iter()
            .map(|d| date(2026, 10, d))
            .collect::<anyhow::Result<_>>()?;
        let pairs: Vec<(usize, NaiveDate)> = (0..requests)
            .map(|i| ((i * 37 + 1) % meters, days[i % days.len()]))
            .collect();
        eprintln!("measurements for {} profile pairs", pairs.len());
        let rows = self.measurements(&pairs.iter().copied().collect()).await?;
        sqlx::query("ANALYZE measurements")
            .execute(&self.pool)
            .await?;

        let site = self.site;
        let year = format!("/api/v1/sites/{site}/consumption?from=2025-11-01&to=2026-11-01");
        let viewer = Some(self.viewer.clone());
        let profile_paths: Vec<String> = pairs
            .iter()
            .map(|(m, d)| {
                format!(
                    "/api/v1/devices/{}/profile?from={d}&to={}",
                    self.fleet.meters[*m].serial,
                    *d + chrono::Days::new(1)
                )
            })
            .collect();
        let profile_binds = pairs
            .iter()
            .map(|(m, d)| {
                let from = DateTime::from_timestamp_millis(utc_ms(*d)?).unwrap_or_default();
                let to = DateTime::from_timestamp_millis(utc_ms(*d + chrono::Days::new(1))?)
                    .unwrap_or_default();
                anyhow::Ok((self.fleet.meters[*m].counters.to_vec(), from, to))
            })
            .collect::<anyhow::Result<_>>()?;
        let all_counters: Vec<i64> = self.fleet.meters.iter().flat_map(|m| m.counters).collect();
        let site_meter_bind = vec![(
            self.fleet.meters[0].counters.to_vec(),
            DateTime::from_timestamp_millis(utc_ms(date(2025, 11, 1)?)?).unwrap_or_default(),
            DateTime::from_timestamp_millis(utc_ms(date(2026, 10, 31)?)?).unwrap_or_default(),
        )];
        let year_bind = vec![(
            all_counters,
            DateTime::from_timestamp_millis(utc_ms(date(2025, 11, 1)?)?).unwrap_or_default(),
            DateTime::from_timestamp_millis(utc_ms(date(2026, 10, 31)?)?).unwrap_or_default(),
        )];
        let http = |name, paths: Vec<String>, token: &Option<String>| Probe::Http {
            name,
            paths,
            token: token.clone(),
        };
        let probes = vec![
            http("`/healthz` (reference)", vec!["/healthz".into()], &None),
            http("24 h profile of a meter", profile_paths, &viewer),
            http("site year by day", vec![format!("{year}&by=day")], &viewer),
            http(
                "site year by month, group=circuit",
                vec![format!("{year}&by=month&group=circuit")],
                &viewer,
            ),
            http(
                "site year by day, group=meter",
                vec![format!("{year}&by=day&group=meter")],
                &viewer,
            ),
            Probe::Sql {
                name: "SQL: the profile's intervals (reference)",
                sql: SQL_PROFILE,
                binds: profile_binds,
            },
            Probe::Sql {
                name: "SQL: the year's days of every meter (reference)",
                sql: SQL_YEAR_BY_DAY,
                binds: year_bind.clone(),
            },
            Probe::Sql {
                name: "SQL: the year's month sums (reference)",
                sql: SQL_YEAR_BY_MONTH,
                binds: year_bind,
            },
            Probe::Sql {
                name: "SQL: the year's days of the site meter (reference)",
                sql: SQL_YEAR_BY_DAY,
                binds: site_meter_bind,
            },
        ];
        let names: Vec<&str> = probes.iter().map(Probe::name).collect();

        // What the answers say, once, before timing.
        let sanity = self.sanity(&year).await?;
        // First the light requests alone: round-robin with the heavy ones, a request also pays
        // what the one before left behind (a 27 MB answer freed, 219 000 rows' pages).
        eprintln!("latency: {requests} requests of 3 light kinds, alone");
        let light_names = [names[0], names[1], names[5]];
        let cpu = CpuSample::now()?;
        let light = self
            .probe(vec![
                probes[0].clone(),
                probes[1].clone(),
                probes[5].clone(),
            ])
            .await?;
        let light_cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        eprintln!("latency: {} requests of {} kinds", requests, probes.len());
        let cpu = CpuSample::now()?;
        let results = self.probe(probes).await?;
        let cpu = cpu_use(&cpu, &CpuSample::now()?, self.postmaster);
        let p = |i: usize, q: f64| percentile(&results[i].0, q);
        let health = (p(0, 0.5), p(0, 0.99));
        let sql_of = |i: usize| match i {
            1 => Some(5),
            2 => Some(8),
            3 => Some(7),
            4 => Some(6),
            _ => None,
        };
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let out = &mut self.report;
        writeln!(
            out,
            "### API latency\n\n{requests} requests of each kind, round-robin, one at a time, \
             each on a new connection (HTTP/1.1, `Connection: close`) from the client runtime, \
             as a viewer of the site. The profiles cycle over {} meter-days (weekdays of \
             October 2026; {} one-minute measurement rows were loaded for them so the power \
             statistics have data). The year is 2025-11-01 .. 2026-11-01 local. References: \
             `/healthz` (a `SELECT 1` through the same HTTP stack and client) and the main SQL \
             query of each request run directly on a pooled connection (prepared).\n",
            pairs.iter().collect::<BTreeSet<_>>().len(),
            thousands(rows as f64)
        )?;
        writeln!(
            out,
            "| request | p50 | p99 | max | p50 / p99 ÷ `/healthz` | p50 ÷ its SQL | response |\n\
             | --- | --- | --- | --- | --- | --- | --- |"
        )?;
        for (i, name) in names.iter().enumerate() {
            let vs_health = if i == 0 || i >= 5 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1} / {:.1}",
                    ratio(p(i, 0.5), health.0),
                    ratio(p(i, 0.99), health.1)
                )
            };
            let vs_sql = sql_of(i).map_or("-".to_owned(), |s| {
                format!("{:.1}", ratio(p(i, 0.5), p(s, 0.5)))
            });
            let size = if i >= 5 {
                format!("{} rows", results[i].1)
            } else {
                format!("{} bytes", thousands(results[i].1 as f64))
            };
            writeln!(
                out,
                "| {name} | {} | **{}** | {} | {vs_health} | {vs_sql} | {size} |",
                ms(p(i, 0.5)),
                ms(p(i, 0.99)),
                ms(p(i, 1.0)),
            )?;
        }
        writeln!(
            out,
            "\nCPU during the latency phase ({:.0} s): {}.\n\n{sanity}\n",
            cpu.wall,
            cpu.cores()
        )?;
        let lp = |i: usize, q: f64| percentile(&light[i].0, q);
        writeln!(
            out,
            "**The light requests alone** ({requests} each, round-robin, same client; before \
             the run above):\n\n\
             | request | p50 | p99 | max | p50 / p99 ÷ `/healthz` | p50 ÷ its SQL |\n\
             | --- | --- | --- | --- | --- | --- |"
        )?;
        for (i, name) in light_names.iter().enumerate() {
            let (vs_health, vs_sql) = if i == 1 {
                (
                    format!(
                        "{:.1} / {:.1}",
                        ratio(lp(1, 0.5), lp(0, 0.5)),
                        ratio(lp(1, 0.99), lp(0, 0.99))
                    ),
                    format!("{:.1}", ratio(lp(1, 0.5), lp(2, 0.5))),
                )
            } else {
                ("-".to_owned(), "-".to_owned())
            };
            writeln!(
                out,
                "| {name} | {} | **{}** | {} | {vs_health} | {vs_sql} |",
                ms(lp(i, 0.5)),
                ms(lp(i, 0.99)),
                ms(lp(i, 1.0)),
            )?;
        }
        writeln!(
            out,
            "\nCPU during the light requests ({:.0} s): {}.\n",
            light_cpu.wall,
            light_cpu.cores()
        )?;
        Ok(Latency {
            profile_alone: lp(1, 0.99),
            profile_mixed: p(1, 0.99),
            year: p(2, 0.99).max(p(3, 0.99)),
        })
    }

    /// A line on what the year's answers contain, and checks that they add up.
    async fn sanity(&self, year: &str) -> anyhow::Result<String> {
        let viewer = Some(self.viewer.as_str());
        let get = |path: String| async move {
            let r = http_request(self.app.http, "GET", &path, viewer, None).await?;
            ensure!(r.status == 200, "{path}: {} {}", r.status, r.body);
            anyhow::Ok(serde_json::from_str::<Value>(&r.body)?)
        };
        let by_day = get(format!("{year}&by=day")).await?;
        let by_month = get(format!("{year}&by=month&group=circuit")).await?;
        let days = by_day["periods"].as_array().context("periods")?;
        let months = by_month["periods"].as_array().context("periods")?;
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        let import_days: f64 = days.iter().map(|p| f(&p["total"]["import_wh"])).sum();
        let import_months: f64 = months.iter().map(|p| f(&p["total"]["import_wh"])).sum();
        let cost: f64 = months.iter().map(|p| f(&p["total"]["cost"])).sum();
        let demand: f64 = months.iter().map(|p| f(&p["total"]["demand_charge"])).sum();
        let peak = months
            .iter()
            .map(|p| f(&p["total"]["peak"]["power_w"]))
            .fold(0.0, f64::max);
        let groups_off = months
            .iter()
            .map(|p| {
                let groups: f64 = p["groups"]
                    .as_array()
                    .map_or(0.0, |g| g.iter().map(|g| f(&g["import_wh"])).sum());
                (groups - f(&p["total"]["import_wh"])).abs()
            })
            .fold(0.0, f64::max);
        let measured = months
            .iter()
            .map(|p| f(&p["total"]["completeness"]["measured_pct"]))
            .fold(f64::INFINITY, f64::min);
        Ok(format!(
            "The year's answers: {} days, {} months; site import {:.1} MWh by day and {:.1} MWh \
             by month; cost {:.0} EUR of which demand charge {:.0} EUR; highest quarter-hour \
             {:.0} kW; lowest monthly share measured {measured:.2} %; circuit groups add up to \
             the month's total within {groups_off:.3} Wh.",
            days.len(),
            months.len(),
            import_days / 1e6,
            import_months / 1e6,
            cost,
            demand,
            peak / 1000.0
        ))
    }
}
