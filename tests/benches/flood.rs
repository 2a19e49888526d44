//! Unauthenticated flood benchmark: Headend's memory, `/healthz` latency and the rate of valid
//! readings committed while anonymous clients flood the password checks, beside the same
//! figures at rest in the same run.
//!
//! One Headend (in this process, its own database) and one valid gateway publishing a
//! measurements document every `1 / rate` seconds, each at its own instant, while a prober asks
//! `/healthz` back to back. Phase "rest" runs that alone; phase "flood" adds `LOGINS` bad
//! logins (unknown e-mails and wrong passwords of a real account, half on the API, half on the
//! page) and `CONNECTS` bad MQTT CONNECTs (unknown serials and a real serial with wrong
//! passwords), `CONCURRENCY` of each at once. At the end every reading the gateway published
//! must be in PostgreSQL (checked, not timed). Figures are reported, never asserted; the
//! targets (peak RSS < 1 GiB, `/healthz` p99 < 100 ms, no valid reading lost) are in
//! `docs/benchmarks/flood.md`.
//!
//! `cargo bench -p headend-e2e --bench flood`; parameters `HEADEND_BENCH_FLOOD_LOGINS` (1000),
//! `..._CONNECTS` (1000), `..._CONCURRENCY` (200), `..._REST_SECS` (5), `..._RATE` (readings
//! per second, 20).
//!
//! RSS is this process's: Headend plus the flooding clients (a few MiB of sockets and tasks);
//! PostgreSQL runs in its own processes and is not counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{ensure, Context};
use headend_e2e::bench::{env_or, CpuSample, CpuUse, Machine};
use headend_e2e::{eventually, raw_request, MqttClient, TestApp};
use rumqttc::{ConnectReturnCode, Event, MqttOptions, Packet};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

const SERIAL: &str = "SGFLOOD1";
const USER: &str = "operator@flood.example";
const USER_PASSWORD: &str = "correct horse battery staple";

struct Params {
    logins: usize,
    connects: usize,
    concurrency: usize,
    rest: Duration,
    rate: f64,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let params = Self {
            logins: env_or("HEADEND_BENCH_FLOOD_LOGINS", 1000)?,
            connects: env_or("HEADEND_BENCH_FLOOD_CONNECTS", 1000)?,
            concurrency: env_or("HEADEND_BENCH_FLOOD_CONCURRENCY", 200)?,
            rest: Duration::from_secs_f64(env_or("HEADEND_BENCH_FLOOD_REST_SECS", 5.0)?),
            rate: env_or("HEADEND_BENCH_FLOOD_RATE", 20.0)?,
        };
        ensure!(params.concurrency > 0, "concurrency must be positive");
        ensure!(params.rate > 0.0, "rate must be positive");
        Ok(params)
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(params))
}

/// What one phase measured.
#[derive(Default)]
struct Phase {
    seconds: f64,
    healthz: Vec<Duration>,
    healthz_failed: u64,
    peak_rss_kib: u64,
    published: u64,
    http: Vec<(u16, u64)>,
    connacks: Vec<(String, u64)>,
    cpu: String,
    other_cores: f64,
}

async fn run(params: Params) -> anyhow::Result<()> {
    // Each refused attempt is logged as a warning: thousands of lines would hide the report.
    headend::infra::telemetry::init("error", false);
    let app = TestApp::spawn_with(|config| config.log.filter = "error".into()).await;
    let site = app.site("Flood", "UTC").await;
    let password = app.gateway(SERIAL, Some(site), Some("UTC")).await;
    headend::auth::users::create(
        &app.pool,
        USER,
        headend::auth::Role::Operator,
        USER_PASSWORD,
    )
    .await?;
    let gateway = Arc::new(app.gateway_client(SERIAL, &password).await);
    let published = Arc::new(AtomicU64::new(0));

    let rest = phase(&app, &params, &gateway, &published, false).await?;
    let flood = phase(&app, &params, &gateway, &published, true).await?;

    // No valid reading lost: every published document is committed.
    let total = published.load(Ordering::Relaxed) as i64;
    let committed = eventually(Duration::from_secs(120), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n >= total).then_some(n)
    })
    .await;
    let committed = match committed {
        Some(n) => n,
        None => {
            sqlx::query_scalar("SELECT count(*) FROM measurements")
                .fetch_one(&app.pool)
                .await?
        }
    };
    let shed = app.metric("headend_password_checks_shed_total").await;
    let mut throttled = Vec::new();
    for channel in ["login", "mqtt"] {
        let name = format!("headend_auth_throttled_total{{channel=\"{channel}\"}}");
        throttled.push(format!(
            "{channel} {}",
            app.metric(&name)
                .await
                .map_or("?".into(), |n| n.to_string())
        ));
    }

    let machine = Machine::probe();
    println!("# Unauthenticated flood");
    println!();
    println!(
        "{}",
        machine.describe("Headend, the clients and PostgreSQL on the same machine.")
    );
    println!();
    println!(
        "Flood: {} bad logins and {} bad MQTT CONNECTs, {} of each at once; one valid gateway \
         publishing {} readings/s throughout.",
        params.logins, params.connects, params.concurrency, params.rate
    );
    println!();
    println!("| figure | at rest | under flood |\n| --- | --- | --- |");
    let row = |name: &str, a: String, b: String| println!("| {name} | {a} | {b} |");
    row("phase length", secs(rest.seconds), secs(flood.seconds));
    row(
        "`/healthz` p50",
        ms(percentile(&rest.healthz, 0.5)),
        ms(percentile(&flood.healthz, 0.5)),
    );
    row(
        "`/healthz` p99",
        ms(percentile(&rest.healthz, 0.99)),
        ms(percentile(&flood.healthz, 0.99)),
    );
    row(
        "`/healthz` max",
        ms(rest.healthz.iter().max().copied()),
        ms(flood.healthz.iter().max().copied()),
    );
    row(
        "`/healthz` answered / failed",
        format!("{} / {}", rest.healthz.len(), rest.healthz_failed),
        format!("{} / {}", flood.healthz.len(), flood.healthz_failed),
    );
    row(
        "peak RSS",
        mib(rest.peak_rss_kib),
        mib(flood.peak_rss_kib.max(rest.peak_rss_kib)),
    );
    row(
        "valid readings published per second",
        format!("{:.1}", rest.published as f64 / rest.seconds),
        format!("{:.1}", flood.published as f64 / flood.seconds),
    );
    row("HTTP answers to bad logins", "–".into(), tally(&flood.http));
    row(
        "CONNACKs to bad CONNECTs",
        "–".into(),
        tally(&flood.connacks),
    );
    row("CPU (cores busy)", rest.cpu.clone(), flood.cpu.clone());
    println!();
    println!(
        "Valid readings: {total} published, {committed} committed ({}). Password checks shed \
         by the hashing pool: {}; attempts refused by the throttle: {}.",
        if committed == total {
            "none lost"
        } else {
            "LOST READINGS"
        },
        shed.map_or("?".into(), |n| format!("{n}")),
        throttled.join(", ")
    );
    let busiest = rest.other_cores.max(flood.other_cores);
    if busiest > 0.2 {
        println!(
            "\nOther work took {busiest:.2} cores during a phase: repeat the run before quoting it."
        );
    }
    drop(gateway);
    app.stop().await;
    ensure!(
        committed == total,
        "{} valid readings lost",
        total - committed
    );
    Ok(())
}

/// One phase: readings and probes, plus the flood when `flood`. Ends when the flood is done
/// and at least `params.rest` has passed.
async fn phase(
    app: &TestApp,
    params: &Params,
    gateway: &Arc<MqttClient>,
    published: &Arc<AtomicU64>,
    flood: bool,
) -> anyhow::Result<Phase> {
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu_before = CpuSample::now()?;
    let before = published.load(Ordering::Relaxed);

    let publisher = tokio::spawn(publish(
        gateway.clone(),
        published.clone(),
        done.clone(),
        params.rate,
    ));
    let prober = tokio::spawn(probe(app.http, done.clone()));
    let sampler = tokio::spawn(sample_rss(done.clone()));

    let mut result = Phase::default();
    if flood {
        let (http, connacks) = tokio::join!(
            bad_logins(app.http, params.logins, params.concurrency),
            bad_connects(
                app.mqtt.context("embedded MQTT")?,
                params.connects,
                params.concurrency
            ),
        );
        result.http = http;
        result.connacks = connacks;
    }
    let rest_end = start + params.rest;
    tokio::time::sleep_until(rest_end).await;
    done.store(true, Ordering::Relaxed);
    publisher.await??;
    let (healthz, failed) = prober.await?;
    result.peak_rss_kib = sampler.await?;
    result.seconds = start.elapsed().as_secs_f64();
    let cpu_after = CpuSample::now()?;
    let cpu = CpuUse::of(&cpu_after.since(&cpu_before));
    result.other_cores = cpu.other;
    result.cpu = cpu.to_string();
    result.healthz = healthz;
    result.healthz_failed = failed;
    result.published = published.load(Ordering::Relaxed) - before;
    Ok(result)
}

/// Publishes one measurements document every `1 / rate` s, each at its own instant, waiting
/// for nothing (PUBACKs are the durable handover; the final count checks them all).
async fn publish(
    gateway: Arc<MqttClient>,
    published: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    rate: f64,
) -> anyhow::Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let base = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
    let topic = format!("sg/{SERIAL}/pub/measurements/rs485/1");
    let mut next = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let k = published.load(Ordering::Relaxed);
        let local_time = base + chrono::Duration::seconds(k as i64);
        let document = serde_json::json!({
            "header": {
                "cmd": "get_measurements",
                "local_time": local_time.format("%d.%m.%Y %H:%M:%S").to_string(),
                "model": "WM3M4C",
                "serial_number": "18230001"
            },
            "measurements": {
                "U1": "230.1 V", "U2": "229.8 V", "U3": "231.0 V",
                "I1": "1.204 A", "P0": "812.5 W", "frequency": "50.01 "
            }
        });
        gateway.publish(&topic, document.to_string()).await;
        published.fetch_add(1, Ordering::Relaxed);
        next += period;
        tokio::time::sleep_until(next).await;
    }
    Ok(())
}

/// `/healthz` back to back; latencies of 200 answers, and the count of the others.
async fn probe(http: std::net::SocketAddr, done: Arc<AtomicBool>) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::new();
    let mut failed = 0;
    while !done.load(Ordering::Relaxed) {
        let asked = Instant::now();
        match raw_request(http, "GET", "/healthz", &[], "").await {
            Ok(r) if r.status == 200 => latencies.push(asked.elapsed()),
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (latencies, failed)
}

/// Peak resident set of this process over the phase, sampled every 20 ms (KiB).
async fn sample_rss(done: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while !done.load(Ordering::Relaxed) {
        peak = peak.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak.max(rss_kib())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// Bad logins: unknown e-mails and the real account with wrong passwords, alternately on the
/// API and the page. Returns the answers by status.
async fn bad_logins(
    http: std::net::SocketAddr,
    count: usize,
    concurrency: usize,
) -> Vec<(u16, u64)> {
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (statuses, permits) = (statuses.clone(), permits.clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let email = if i % 2 == 0 {
                format!("nobody{i}@flood.example")
            } else {
                USER.to_owned()
            };
            let answer = if i % 4 < 2 {
                let body = serde_json::json!({ "email": email, "password": format!("guess {i}") });
                raw_request(
                    http,
                    "POST",
                    "/api/v1/auth/login",
                    &[("Content-Type", "application/json")],
                    &body.to_string(),
                )
                .await
            } else {
                let body = format!("email={email}&password=guess+{i}&csrf=x");
                raw_request(
                    http,
                    "POST",
                    "/login",
                    &[
                        ("Content-Type", "application/x-www-form-urlencoded"),
                        ("Cookie", "headend_csrf=x"),
                    ],
                    &body,
                )
                .await
            };
            let status = answer.map_or(0, |r| r.status);
            *statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(status)
                .or_default() += 1;
        });
    }
    while tasks.join_next().await.is_some() {}
    let statuses = statuses.lock().unwrap_or_else(PoisonError::into_inner);
    statuses.iter().map(|(s, n)| (*s, *n)).collect()
}

/// Bad CONNECTs: unknown serials and the real one with wrong passwords. Returns the outcomes.
async fn bad_connects(
    mqtt: std::net::SocketAddr,
    count: usize,
    concurrency: usize,
) -> Vec<(String, u64)> {
    let outcomes = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (outcomes, permits) = (outcomes.clone(), permits.clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let serial = if i % 2 == 0 {
                format!("SGX{i:06}")
            } else {
                SERIAL.to_owned()
            };
            let mut options =
                MqttOptions::new(format!("{serial}-1"), mqtt.ip().to_string(), mqtt.port());
            options.set_credentials(serial, format!("guess {i}"));
            let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
            let outcome =
                match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => format!("{:?}", ack.code),
                    Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
                        format!("{code:?}")
                    }
                    Ok(Ok(other)) => format!("unexpected {other:?}"),
                    Ok(Err(e)) => format!("error: {}", short(&e.to_string())),
                    Err(_) => "no answer in 30 s".into(),
                };
            if outcome == format!("{:?}", ConnectReturnCode::Success) {
                eprintln!("a bad CONNECT was accepted");
            }
            *outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(outcome)
                .or_default() += 1;
        });
    }
    while tasks.join_next().await.is_some() {}
    let outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    outcomes.iter().map(|(s, n)| (s.clone(), *n)).collect()
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * q).round() as usize).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn tally<T: std::fmt::Display>(counts: &[(T, u64)]) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
