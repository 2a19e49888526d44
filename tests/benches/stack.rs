//! The stack a user would otherwise wire up, against Headend, with the same load in the same
//! run: 200 simulated gateways (real MQTT clients, QoS 1) publish measurements and counters
//! documents as fast as PUBACKs allow to
//!
//! 1. Mosquitto + Node-RED + PostgreSQL, in two flows (`tests/stack/flow-*.json`): one INSERT
//!    per message, and batched (a join node of 500 messages or 100 ms, then one
//!    `INSERT ... SELECT FROM unnest(...)`);
//! 2. Headend in process, on the same PostgreSQL cluster.
//!
//! Each is timed from the first publish until every row is committed (counted in the
//! database), with the CPU of its processes per 100 000 messages. Node-RED is installed with
//! `npm ci` from `tests/stack/node-red` into `target/stack-node-red` when missing.
//!
//! `cargo bench -p headend-e2e --bench stack`, parameters in `HEADEND_BENCH_*` (see [`Params`]).

#[path = "../stack/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use headend::config::Secret;
use headend::Config;
use headend_e2e::bench::{env_or, mosquitto_binary, run_with_clients, CpuSample, Machine};
use headend_e2e::{start_cluster, TestApp};
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio::time::Instant;

use harness::{connect, Cpu, Load, Mosquitto, NodeRed, Part};

/// Run parameters, from the environment.
pub struct Params {
    /// `HEADEND_BENCH_GATEWAYS`: simulated gateways, one MQTT connection each.
    pub gateways: u32,
    /// `HEADEND_BENCH_MESSAGES`: messages sent to each system (rounded down to a multiple of
    /// twice the gateways, so every gateway sends as many measurements as counters).
    pub messages_per_gateway: u32,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let gateways: u32 = env_or("HEADEND_BENCH_GATEWAYS", 200)?;
        let messages: u32 = env_or("HEADEND_BENCH_MESSAGES", 100_000)?;
        ensure!(gateways > 0, "HEADEND_BENCH_GATEWAYS must be positive");
        let messages_per_gateway = messages / gateways / 2 * 2;
        ensure!(
            messages_per_gateway > 0,
            "HEADEND_BENCH_MESSAGES must be at least twice HEADEND_BENCH_GATEWAYS"
        );
        Ok(Self {
            gateways,
            messages_per_gateway,
        })
    }

    pub fn messages(&self) -> u64 {
        u64::from(self.gateways) * u64::from(self.messages_per_gateway)
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    run_with_clients(None, |clients| async move { run(&params, &clients).await })
}

/// What one system did with the load.
struct Outcome {
    name: &'static str,
    acked: Duration,
    committed: Duration,
    measurements: u64,
    readings: u64,
    cpu: Cpu,
}

impl Outcome {
    fn rate(&self, messages: u64) -> f64 {
        messages as f64 / self.committed.as_secs_f64()
    }
}

async fn run(params: &Params, clients: &Handle) -> anyhow::Result<String> {
    headend::infra::telemetry::init("warn", false);
    let load = Load::new(params)?;
    let install = harness::install_node_red().await?;

    // One cluster, fsync on, for both: the stack's database and Headend's. PostgreSQL runs as
    // `postgres` when we are root, so the directory above its data directory must be
    // traversable.
    let pg_dir = tempfile::Builder::new().prefix("hebench-pg").tempdir()?;
    std::fs::set_permissions(pg_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let cluster = start_cluster(&pg_dir.path().join("cluster"), false).await?;
    cluster.create_database("stack").await?;
    cluster.create_database("headend").await?;
    let postmaster: u32 = std::fs::read_to_string(pg_dir.path().join("cluster/postmaster.pid"))?
        .lines()
        .next()
        .context("postmaster.pid")?
        .parse()?;
    let stack_db = PgPool::connect(&cluster.url("stack")).await?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&stack_db)
        .await?;

    let work = tempfile::Builder::new().prefix("hebench-stack").tempdir()?;
    let mosquitto = Mosquitto::start(work.path()).await?;
    let creds = load
        .serials
        .iter()
        .map(|s| (s.clone(), "unused".to_owned()))
        .collect();
    let acks = Arc::new(AtomicU64::new(0));
    eprintln!("connecting {} gateways to Mosquitto", params.gateways);
    let gateways = connect(mosquitto.addr(), creds, clients, &acks).await?;
    let mut outcomes = Vec::new();
    for (name, flow) in [
        ("Node-RED, one INSERT per message", "flow-single.json"),
        (
            "Node-RED, batched (500 messages or 100 ms, unnest)",
            "flow-batched.json",
        ),
    ] {
        eprintln!("{name}");
        sqlx::raw_sql(&std::fs::read_to_string(harness::stack_file("schema.sql"))?)
            .execute(&stack_db)
            .await?;
        let mut node_red =
            NodeRed::start(&install, flow, &mosquitto, &cluster, work.path()).await?;
        node_red.warm_up(&mosquitto, &stack_db, &load).await?;
        let parts = [
            ("Mosquitto", Part::Process(mosquitto.pid())),
            ("Node-RED", Part::Tree(node_red.pid())),
            ("PostgreSQL", Part::Tree(postmaster)),
        ];
        let before = acks.load(Ordering::Relaxed);
        let outcome = send(
            name,
            &load,
            &gateways,
            clients,
            &acks,
            before,
            &parts,
            || count_rows(&stack_db),
        )
        .await;
        node_red.stop().await?;
        outcomes.push(outcome?);
    }
    for gateway in &gateways {
        let _ = gateway.try_disconnect();
    }
    drop(mosquitto);

    eprintln!("Headend");
    let data_dir = tempfile::Builder::new().prefix("hebench-data").tempdir()?;
    let mut config = Config {
        data_dir: data_dir.path().to_path_buf(),
        ..Config::default()
    };
    config.http.addr = ([127, 0, 0, 1], 0).into();
    config.mqtt.addr = ([127, 0, 0, 1], 0).into();
    config.database.url = Some(Secret::new(cluster.url("headend")));
    config.database.max_connections = 8;
    config.mqtt.max_connections = params.gateways as usize + 16;
    config.log.filter = "warn".into();
    config.http.metrics_token = Some(Secret::new(headend_e2e::METRICS_TOKEN));
    let ingest = format!(
        "{} ingest writers, batches of up to {} messages",
        config.ingest.writers, config.ingest.batch_max_messages
    );
    let app = TestApp::start(config, data_dir).await;
    let creds = harness::register(&app, &load.serials).await;
    let headend_gateways =
        connect(app.mqtt.context("embedded MQTT")?, creds, clients, &acks).await?;
    let parts = [
        ("Headend", Part::Headend),
        ("PostgreSQL", Part::Tree(postmaster)),
    ];
    let before = acks.load(Ordering::Relaxed);
    let headend = send(
        "Headend",
        &load,
        &headend_gateways,
        clients,
        &acks,
        before,
        &parts,
        || count_rows(&app.pool),
    )
    .await?;
    let rejects = app.count("SELECT count(*) FROM ingest_rejects").await;
    for gateway in &headend_gateways {
        let _ = gateway.try_disconnect();
    }
    app.stop().await;
    stack_db.close().await;
    cluster.stop().await?;
    outcomes.push(headend);

    let setup = format!(
        "PostgreSQL {pg_version} (one cluster, fsync and synchronous_commit on, a database \
         each); {}; Node-RED {} with pg {} (function nodes, functionExternalModules); Node.js \
         {}; Headend in process with {ingest}.",
        harness::mosquitto_version(mosquitto_binary()?),
        install.node_red_version,
        install.pg_version,
        harness::node_version(),
    );
    report(params, &load, &outcomes, &install, &setup, rejects)
}

/// Floods the load on `gateways` and waits until every PUBACK arrived and every row is counted;
/// CPU is sampled over that span for `parts`.
#[allow(clippy::too_many_arguments)]
async fn send<F, Fut>(
    name: &'static str,
    load: &Load,
    gateways: &[rumqttc::AsyncClient],
    clients: &Handle,
    acks: &AtomicU64,
    acks_before: u64,
    parts: &[(&'static str, Part)],
    count: F,
) -> anyhow::Result<Outcome>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(u64, u64)>>,
{
    let total = load.messages();
    let expected = (load.measurements(), load.readings());
    let cpu = CpuSample::now()?;
    let start = Instant::now();
    load.flood(gateways, clients).await?;
    harness::wait_until("PUBACKs", || async {
        Ok(acks.load(Ordering::Relaxed) - acks_before >= total)
    })
    .await?;
    let acked = start.elapsed();
    // Rows are counted with a poll whose period grows with the run (at most 1 % of it), so
    // that counting costs PostgreSQL little and the end is seen within 1 %.
    let (mut rows, mut moved, mut last) = ((0, 0), Instant::now(), (0, 0));
    while rows != expected {
        let period =
            (start.elapsed() / 100).clamp(Duration::from_millis(10), Duration::from_millis(200));
        tokio::time::sleep(period).await;
        rows = count().await?;
        if rows != last {
            (last, moved) = (rows, Instant::now());
        } else if moved.elapsed() > harness::STALL {
            eprintln!("{name}: rows stuck at {rows:?} of {expected:?}");
            break;
        }
    }
    let committed = start.elapsed();
    let cpu = Cpu::measure(&cpu, &CpuSample::now()?, parts);
    Ok(Outcome {
        name,
        acked,
        committed,
        measurements: rows.0,
        readings: rows.1,
        cpu,
    })
}

/// Committed rows: (measurements, counter readings).
async fn count_rows(pool: &PgPool) -> anyhow::Result<(u64, u64)> {
    let (m, r): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM measurements), (SELECT count(*) FROM counter_readings)",
    )
    .fetch_one(pool)
    .await?;
    Ok((m as u64, r as u64))
}

fn report(
    params: &Params,
    load: &Load,
    outcomes: &[Outcome],
    install: &harness::Install,
    setup: &str,
    rejects: i64,
) -> anyhow::Result<String> {
    let total = params.messages();
    let per_100k = |seconds: f64| seconds / total as f64 * 100_000.0;
    let headend = outcomes.last().context("Headend ran")?;
    let mut out = format!(
        "## The stack a user would otherwise wire up: Mosquitto + Node-RED + PostgreSQL vs \
         Headend\n\n{}\n\n{setup}\n\nLoad: {} gateways (rumqttc, QoS 1, inflight 100), {total} \
         messages to each system ({} measurements and {} counters documents of {} counters), \
         as fast as PUBACKs allow. Node-RED install: {}.\n\n",
        Machine::probe().describe("Clients, brokers, Node-RED, Headend and PostgreSQL share it."),
        params.gateways,
        load.measurements(),
        total - load.measurements(),
        load.counters_per_message,
        install.how,
    );
    write!(out, "| figure |")?;
    for o in outcomes {
        write!(out, " {} |", o.name)?;
    }
    write!(out, "\n| --- |")?;
    for _ in outcomes {
        write!(out, " --- |")?;
    }
    writeln!(out)?;
    let mut row = |name: &str, cell: &dyn Fn(&Outcome) -> String| -> std::fmt::Result {
        write!(out, "| {name} |")?;
        for o in outcomes {
            write!(out, " {} |", cell(o))?;
        }
        writeln!(out)
    };
    let (m, r) = (load.measurements(), load.readings());
    row("rows stored (measurements; counter readings)", &|o| {
        let lost = o.measurements != m || o.readings != r;
        format!(
            "{} of {m}; {} of {r}{}",
            o.measurements,
            o.readings,
            if lost { " **LOST**" } else { "" }
        )
    })?;
    row("all PUBACKs", &|o| {
        format!("{:.2} s", o.acked.as_secs_f64())
    })?;
    row("all rows committed", &|o| {
        format!("{:.2} s", o.committed.as_secs_f64())
    })?;
    row("**msg/s, first publish → all rows committed**", &|o| {
        format!("**{:.0}**", o.rate(total))
    })?;
    row("**Headend / this**", &|o| {
        format!("**{:.2}**", headend.rate(total) / o.rate(total))
    })?;
    row(
        "**CPU-s per 100 000 messages** (the system's processes)",
        &|o| format!("**{:.1}**", per_100k(o.cpu.system())),
    )?;
    row("of which", &|o| {
        o.cpu
            .parts
            .iter()
            .map(|(name, s)| format!("{name} {:.1}", per_100k(*s)))
            .collect::<Vec<_>>()
            .join(", ")
    })?;
    row("this CPU / Headend's", &|o| {
        format!("{:.2}", o.cpu.system() / headend.cpu.system())
    })?;
    row("cores busy", &|o| o.cpu.to_string())?;
    writeln!(out, "\nHeadend's ingest_rejects: {rejects}.\n")?;
    Ok(out)
}
