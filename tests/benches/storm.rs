//! Reconnect storm benchmark (issue 17): Headend's memory and time when a fleet connects at once.
//!
//! Headend runs as its own `headend serve` process (release binary) on a PostgreSQL cluster of
//! its own; the fleet is one `sg-gateway fleet` process (real MQTT clients, simulated meters).
//! 1. **Fresh CONNECTs**: a fresh Headend (nothing verified yet) and `FRESH` gateways connecting
//!    at once, each CONNECT paying one argon2 verification: time until all are online and have
//!    published, Headend's peak RSS (`VmHWM`).
//! 2. **Reconnect storm**: `GATEWAYS` gateways online and publishing, then Headend is stopped
//!    (SIGTERM) and started again; the clock runs from the SIGTERM until every gateway is online
//!    again and has published after the restart (both read from the database). Peak RSS of the
//!    restarted process; readings lost, counted in the database: for every meter, the push
//!    slots between its first and last stored measurement that hold no row.
//!
//! Registration is one `INSERT ... SELECT FROM unnest(...)` per phase with one argon2 hash
//! shared by the phase's gateways (hashing 10 000 passwords would take the harness minutes). The
//! storm's gateways are registered as already verified once: the harness writes the data
//! directory's credential key before Headend's first start and stores each gateway's
//! verified-credential record (`fleet::credentials`) beside the hash, exactly what Headend
//! writes after its own first argon2 check of that gateway; phase 1 measures that first check.
//!
//! All connections come from 127.0.0.1: rumqttc cannot bind a source address, so the fleet
//! cannot spread over 127.x.y.z. A remembered credential skips the per-source CONNECT throttle
//! (it is checked before it), so the storm does not meet it; phase 1's fresh CONNECTs do.
//! Headend holds three descriptors per gateway (the client's socket and both ends of its
//! loopback link to the embedded broker): the run refuses a fleet the open-file limit cannot hold.
//!
//! `cargo build --release -p headend -p sg-gateway && cargo bench -p headend-e2e --bench storm`;
//! parameters in `HEADEND_BENCH_STORM_*` (see [`Params`]). Figures are reported, never asserted.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use headend::auth::password;
use headend::fleet::credentials::{CredentialKey, KEY_FILE};
use headend_e2e::bench::process::{release_binary, Resident};
use headend_e2e::bench::{env_or, CpuSample, Machine};
use headend_e2e::{eventually, http_request, start_cluster};
use serde_json::Value;
use sg_wire::topic::TopicLayout;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const PASSWORD: &str = "storm-bench-password-0123456789";
const FRESH_PREFIX: &str = "SGN";
const STORM_PREFIX: &str = "SGS";

struct Params {
    /// `HEADEND_BENCH_STORM_FRESH`: gateways of phase 1 (fresh CONNECTs, argon2 each).
    fresh: u32,
    /// `HEADEND_BENCH_STORM_GATEWAYS`: gateways of the reconnect storm.
    gateways: u32,
    /// `HEADEND_BENCH_STORM_PUSH`: push interval of every gateway, seconds.
    push: u32,
    /// `HEADEND_BENCH_STORM_DEADLINE`: longest wait for a phase, seconds.
    deadline: u64,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            fresh: env_or("HEADEND_BENCH_STORM_FRESH", 200)?,
            gateways: env_or("HEADEND_BENCH_STORM_GATEWAYS", 10_000)?,
            push: env_or("HEADEND_BENCH_STORM_PUSH", 15)?,
            deadline: env_or("HEADEND_BENCH_STORM_DEADLINE", 300)?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&params))?;
    print!("{report}");
    Ok(())
}

/// Peak and current resident memory of a process, MiB (`VmHWM`, `VmRSS`).
fn memory_mib(pid: u32) -> (f64, f64) {
    let r = Resident::of(pid);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    (mib(r.peak), mib(r.rss))
}

/// The hard limit on open files (`/proc/self/limits`), which children may raise their own to.
fn open_files_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open files limit")?;
    let hard = line.split_whitespace().nth(4).context("limit format")?;
    Ok(hard.parse().unwrap_or(u64::MAX))
}

/// One `headend serve` process on a fixed MQTT port (the fleet reconnects to the same one).
struct Headend {
    child: Child,
    pid: u32,
    started: Instant,
    serving_after: Duration,
}

impl Headend {
    async fn start(
        binary: &Path,
        dir: &Path,
        url: &str,
        mqtt_port: u16,
        gateways: u32,
    ) -> anyhow::Result<Self> {
        let runtime = dir.join("runtime.json");
        let _ = std::fs::remove_file(&runtime);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("../serve.log"))?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("serve")
            .env_remove("HEADEND_CONFIG")
            .env("HEADEND_DATA_DIR", dir)
            .env("HEADEND_HTTP_ADDR", "127.0.0.1:0")
            .env("HEADEND_MQTT_ADDR", format!("127.0.0.1:{mqtt_port}"))
            .env("HEADEND_DATABASE_URL", url)
            .env("HEADEND_LOG", "warn")
            .env(
                "HEADEND_MQTT__MAX_CONNECTIONS",
                (gateways + 300).to_string(),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("serve pid")?;
        let http = eventually(Duration::from_secs(120), || async {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&runtime).ok()?).ok()?;
            v["http_addr"]
                .as_str()?
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .await
        .context("headend serve did not start (see serve.log)")?;
        eventually(Duration::from_secs(60), || async {
            http_request(http, "GET", "/healthz", None, None).await.ok()
        })
        .await
        .context("headend serve does not answer")?;
        Ok(Self {
            child,
            pid,
            started,
            serving_after: started.elapsed(),
        })
    }

    /// SIGTERM, then waits for it to end.
    async fn stop(mut self) -> anyhow::Result<Duration> {
        let at = Instant::now();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        Ok(at.elapsed())
    }
}

/// The `sg-gateway fleet` process; killed when dropped.
struct Fleet {
    child: Child,
    pid: u32,
}

impl Fleet {
    fn start(
        binary: &Path,
        dir: &Path,
        prefix: &str,
        count: u32,
        port: u16,
        push: u32,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join(format!("fleet-{prefix}.log")))?;
        let child = Command::new("bash")
            .arg("-c")
            .arg("ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\"")
            .arg(binary)
            .args(["fleet", "--simulate", "--first-push-delay", "0"])
            .args(["--count", &count.to_string(), "--serial-prefix", prefix])
            .args(["--broker", &format!("127.0.0.1:{port}")])
            .args(["--push-interval", &push.to_string()])
            .arg("--state-dir")
            .arg(dir.join(format!("state-{prefix}")))
            .env("SG_GATEWAY_PASSWORD", PASSWORD)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("fleet pid")?;
        Ok(Self { child, pid })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// Registers `count` gateways `<prefix>000001...` in one statement, sharing one argon2 hash;
/// with `key`, each with its verified-credential record under that key.
async fn register(
    db: &PgPool,
    prefix: &str,
    count: u32,
    hash: &str,
    key: Option<&CredentialKey>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (mut serials, mut roots, mut pubs, mut subs, mut macs) =
        (vec![], vec![], vec![], vec![], vec![]);
    for n in 1..=count {
        let serial = format!("{prefix}{n:06}");
        let layout = TopicLayout::default_for(&serial)?;
        roots.push(layout.root().to_owned());
        pubs.push(layout.publish().to_owned());
        subs.push(layout.subscribe().to_owned());
        macs.push(key.map(|k| k.mac(&serial, hash, PASSWORD.as_bytes()).to_vec()));
        serials.push(serial);
    }
    sqlx::query(
        "INSERT INTO gateways (serial, time_zone, password_hash, topic_root, topic_pub, topic_sub, credential_mac)
         SELECT s, 'Europe/Ljubljana', $2, r, p, u, m
         FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::bytea[]) AS t(s, r, p, u, m)",
    )
    .bind(&serials)
    .bind(hash)
    .bind(&roots)
    .bind(&pubs)
    .bind(&subs)
    .bind(&macs)
    .execute(db)
    .await?;
    Ok(started.elapsed())
}

/// Gateways of `prefix` online, and those seen (a message stored) since `since`.
async fn progress(
    db: &PgPool,
    prefix: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE online), count(*) FILTER (WHERE last_seen_at >= $2)
         FROM gateways WHERE starts_with(serial, $1)",
    )
    .bind(prefix)
    .bind(since)
    .fetch_one(db)
    .await?)
}

/// Waits until all `count` gateways of `prefix` are online and have published since `since`;
/// the time it took, or `None` at the deadline (with the last progress).
async fn all_back(
    db: &PgPool,
    prefix: &str,
    count: u32,
    since: chrono::DateTime<chrono::Utc>,
    deadline: u64,
) -> anyhow::Result<(Option<Duration>, (i64, i64))> {
    let started = Instant::now();
    let mut last = (0, 0);
    while started.elapsed() < Duration::from_secs(deadline) {
        last = progress(db, prefix, since).await?;
        if last.0 >= i64::from(count) && last.1 >= i64::from(count) {
            return Ok((Some(started.elapsed()), last));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((None, last))
}

/// Measurement rows stored for the gateways of `prefix`, and push slots with no row between
/// each meter's first and last stored one.
async fn readings(db: &PgPool, prefix: &str, push: u32) -> anyhow::Result<(i64, i64)> {
    let (rows, lost): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(n)::int8, sum(slots - n)::int8 FROM (
             SELECT count(*) AS n,
                    (extract(epoch FROM max(m.ts) - min(m.ts)) / $2)::int8 + 1 AS slots
             FROM measurements m JOIN devices d ON d.id = m.device_id
             JOIN gateways g ON g.id = d.gateway_id
             WHERE starts_with(g.serial, $1) GROUP BY m.device_id) per_meter",
    )
    .bind(prefix)
    .bind(f64::from(push))
    .fetch_one(db)
    .await?;
    Ok((rows.unwrap_or(0), lost.unwrap_or(0)))
}

/// CPU of one phase, cores: Headend, the fleet, PostgreSQL, other.
struct Cpu([f64; 5]);

impl Cpu {
    fn of(
        before: &CpuSample,
        after: &CpuSample,
        headend: &[u32],
        fleet: u32,
        postmaster: u32,
    ) -> Self {
        let span = after.since(before);
        let h: f64 = headend.iter().map(|&pid| span.process(pid)).sum();
        let f = span.process(fleet);
        let pg = span.tree(postmaster);
        let other = span.other(h + f + pg + span.this_process());
        Self([
            span.cores(h),
            span.cores(f),
            span.cores(pg),
            span.cores(other),
            span.cores(span.machine()),
        ])
    }

    fn row(&self) -> String {
        let [h, f, pg, o, m] = self.0;
        format!("{h:.2} | {f:.2} | {pg:.2} | {o:.2} | {m:.2}")
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "**not reached**".into(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

async fn run(params: &Params) -> anyhow::Result<String> {
    let headend_bin = release_binary("headend", "headend")?;
    let fleet_bin = release_binary("sg-gateway", "sg-gateway")?;
    let files = open_files_limit()?;
    let needed = u64::from(params.gateways.max(params.fresh)) * 3 + 512;
    ensure!(
        needed <= files,
        "{} gateways need about {needed} open files in Headend (3 per gateway); the hard limit is {files}: \
         lower HEADEND_BENCH_STORM_GATEWAYS to {} or raise the limit",
        params.gateways,
        (files.saturating_sub(512)) / 3
    );
    let work = tempfile::Builder::new().prefix("hebench-storm").tempdir()?;
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let cluster = start_cluster(&work.path().join("cluster"), false).await?;
    let postmaster: u32 = std::fs::read_to_string(work.path().join("cluster/postmaster.pid"))?
        .lines()
        .next()
        .context("postmaster.pid")?
        .parse()?;
    cluster.create_database("storm").await?;
    let url = cluster.url("storm");
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    // The credential key Headend will find in its data directory (0600, as it makes it).
    let data = work.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let key = CredentialKey::load_or_generate(&data.join(KEY_FILE))?;
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hash = password::hash_blocking(PASSWORD)?;

    let mut report = format!(
        "## Reconnect storm benchmark\n\n{}\n\n`headend serve` (release, default settings, database on \
         its own PostgreSQL cluster with fsync on) and one `sg-gateway fleet` process (simulated \
         meters, push every {} s, QoS 1), all on loopback from 127.0.0.1.\n\n",
        Machine::probe().describe("Headend, the fleet and PostgreSQL share it."),
        params.push
    );

    // Phase 1: fresh Headend, fresh credentials.
    eprintln!("phase 1: {} fresh gateways", params.fresh);
    let mut headend = Headend::start(&headend_bin, &data, &url, mqtt_port, params.gateways).await?;
    let fresh_registered = register(&db, FRESH_PREFIX, params.fresh, &hash, None).await?;
    let storm_registered = register(&db, STORM_PREFIX, params.gateways, &hash, Some(&key)).await?;
    let since = chrono::Utc::now();
    let cpu0 = CpuSample::now()?;
    let fleet = Fleet::start(
        &fleet_bin,
        work.path(),
        FRESH_PREFIX,
        params.fresh,
        mqtt_port,
        params.push,
    )?;
    let (fresh_time, fresh_progress) =
        all_back(&db, FRESH_PREFIX, params.fresh, since, params.deadline).await?;
    let fresh_cpu = Cpu::of(
        &cpu0,
        &CpuSample::now()?,
        &[headend.pid],
        fleet.pid,
        postmaster,
    );
    let (fresh_peak, _) = memory_mib(headend.pid);
    fleet.stop().await?;

    // Phase 2: the storm's fleet online (on a restarted Headend, which loaded their records).
    eprintln!("phase 2: {} gateways", params.gateways);
    headend.stop().await?;
    headend = Headend::start(&headend_bin, &data, &url, mqtt_port, params.gateways).await?;
    let since = chrono::Utc::now();
    let fleet = Fleet::start(
        &fleet_bin,
        work.path(),
        STORM_PREFIX,
        params.gateways,
        mqtt_port,
        params.push,
    )?;
    let (online_time, online_progress) =
        all_back(&db, STORM_PREFIX, params.gateways, since, params.deadline).await?;
    let (before_peak, before_rss) = memory_mib(headend.pid);
    // Let every gateway publish once more on this instance before it stops.
    tokio::time::sleep(Duration::from_secs(u64::from(params.push))).await;
    eprintln!("phase 2: restart");
    let cpu0 = CpuSample::now()?;
    let since = chrono::Utc::now();
    let old_pid = headend.pid;
    let stop_took = headend.stop().await?;
    headend = Headend::start(&headend_bin, &data, &url, mqtt_port, params.gateways).await?;
    let (back, back_progress) =
        all_back(&db, STORM_PREFIX, params.gateways, since, params.deadline).await?;
    let back = back.map(|d| d + stop_took + headend.serving_after);
    let storm_cpu = Cpu::of(
        &cpu0,
        &CpuSample::now()?,
        &[old_pid, headend.pid],
        fleet.pid,
        postmaster,
    );
    let (storm_peak, storm_rss) = memory_mib(headend.pid);
    // A few more pushes after the storm, so that a gap would lie between stored readings.
    tokio::time::sleep(Duration::from_secs(u64::from(params.push) * 2)).await;
    fleet.stop().await?;
    let (rows, lost) = readings(&db, STORM_PREFIX, params.push).await?;
    let (fresh_rows, fresh_lost) = readings(&db, FRESH_PREFIX, params.push).await?;
    let restarted_after = headend.started.elapsed();
    let serving_after = headend.serving_after;
    headend.stop().await?;
    db.close().await;
    cluster.stop().await?;

    writeln!(report, "Registration (one `INSERT ... SELECT FROM unnest`, one shared argon2 hash): {} gateways in {:.2} s, {} with verified-credential records in {:.2} s.\n",
        params.fresh, fresh_registered.as_secs_f64(), params.gateways, storm_registered.as_secs_f64())?;
    writeln!(report, "| phase | gateways | all online and published after | Headend peak RSS | target |\n| --- | --- | --- | --- | --- |")?;
    writeln!(report, "| 1. fresh CONNECTs (argon2 each) | {} | {} (online {}, published {}) | **{:.0} MiB** | < 300 MB |",
        params.fresh, secs(fresh_time), fresh_progress.0, fresh_progress.1, fresh_peak)?;
    writeln!(report, "| 2a. fleet online before the restart | {} | {} (online {}, published {}) | {:.0} MiB (now {:.0} MiB) | |",
        params.gateways, secs(online_time), online_progress.0, online_progress.1, before_peak, before_rss)?;
    writeln!(report, "| 2b. **reconnect storm**, from SIGTERM | {} | **{}** (stop {:.1} s, serving {:.1} s after start; online {}, published {}) | **{:.0} MiB** (now {:.0} MiB, {:.0} s after start) | < 60 s, < 500 MB |\n",
        params.gateways, secs(back), stop_took.as_secs_f64(), serving_after.as_secs_f64(), back_progress.0, back_progress.1, storm_peak, storm_rss, restarted_after.as_secs_f64())?;
    writeln!(report, "Readings (measurement rows, counted in the database; lost = push slots without a row between a meter's first and last row): storm {rows} stored, **{lost} lost**; phase 1 {fresh_rows} stored, {fresh_lost} lost.\n")?;
    writeln!(report, "CPU, cores (2 = the whole machine):\n\n| span | Headend | fleet | PostgreSQL | other | machine |\n| --- | --- | --- | --- | --- | --- |")?;
    writeln!(report, "| phase 1 | {} |", fresh_cpu.row())?;
    writeln!(
        report,
        "| storm, SIGTERM to all back | {} |",
        storm_cpu.row()
    )?;
    if back.is_none() || fresh_time.is_none() {
        bail!(
            "{report}\na phase did not complete within {} s",
            params.deadline
        );
    }
    Ok(report)
}
