//! The parts of the stack bench (`tests/benches/stack.rs`): the load, the gateways' MQTT
//! clients, Mosquitto, Node-RED (installed with `npm ci`, started with one of the flows of this
//! directory) and the CPU of each system's processes.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use headend_e2e::bench::{cpus, mosquitto_binary, CpuSample, MeterDocuments};
use headend_e2e::{MqttClient, TestApp};
use headend_pgembed::RunningCluster;
use rumqttc::{AsyncClient, Packet, QoS};
use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Params;

pub use headend_e2e::bench::CLIENT_THREAD;
/// How long a wait may go without progress before the run is declared stuck.
pub const STALL: Duration = Duration::from_secs(30);
/// Gateways registered or connected at the same time.
const CONCURRENT_SETUP: usize = 8;
/// The Node-RED flows' MQTT client id.
const NODE_RED_CLIENT: &str = "node-red-stack-bench";

/// A file of `tests/stack`.
pub fn stack_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stack")
        .join(name)
}

/// The messages every system gets: per gateway, measurements and counters alternately, each
/// at its own `local_time` one second after the previous one, serialised before any clock
/// starts.
pub struct Load {
    pub serials: Vec<String>,
    /// Per gateway: the measurements and counters topics.
    topics: Vec<[String; 2]>,
    /// Per gateway: (index into its topics, payload).
    messages: Vec<Vec<(usize, Bytes)>>,
    pub counters_per_message: u64,
    /// A measurements document of a meter no gateway has, for warming Node-RED up.
    warm_up: Bytes,
}

impl Load {
    pub fn new(params: &Params) -> anyhow::Result<Self> {
        let documents = MeterDocuments::load()?;
        let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .context("base time")?;
        let serials: Vec<String> = (0..params.gateways)
            .map(|n| format!("BENCH{n:05}"))
            .collect();
        let topics = serials
            .iter()
            .map(|s| ["measurements", "counters"].map(|kind| format!("sg/{s}/pub/{kind}/rs485/1")))
            .collect();
        let mut messages = Vec::with_capacity(serials.len());
        for n in 0..params.gateways {
            let docs = documents.for_meter(n);
            let mut mine = Vec::with_capacity(params.messages_per_gateway as usize);
            for k in 0..params.messages_per_gateway {
                let kind = (k % 2) as usize;
                let mut doc = docs[kind].clone();
                let at = base + chrono::Duration::seconds(i64::from(k));
                doc["header"]["local_time"] = at.format("%d.%m.%Y %H:%M:%S").to_string().into();
                mine.push((kind, serde_json::to_vec(&doc)?.into()));
            }
            messages.push(mine);
        }
        let mut warm_up = documents.measurements.clone();
        warm_up["header"]["serial_number"] = Value::from("WARMUP");
        warm_up["header"]["local_time"] = Value::from("01.01.2020 00:00:00");
        Ok(Self {
            serials,
            topics,
            messages,
            counters_per_message: documents.counters_per_message,
            warm_up: serde_json::to_vec(&warm_up)?.into(),
        })
    }

    pub fn messages(&self) -> u64 {
        self.messages.iter().map(|m| m.len() as u64).sum()
    }

    pub fn measurements(&self) -> u64 {
        self.messages().div_ceil(2)
    }

    pub fn readings(&self) -> u64 {
        self.messages() / 2 * self.counters_per_message
    }

    /// Every gateway publishes all its messages as fast as its connection takes them.
    pub async fn flood(&self, gateways: &[AsyncClient], clients: &Handle) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        for ((client, topics), messages) in gateways.iter().zip(&self.topics).zip(&self.messages) {
            let (client, topics, messages) = (client.clone(), topics.clone(), messages.clone());
            tasks.spawn_on(
                async move {
                    for (kind, payload) in messages {
                        client
                            .publish_bytes(topics[kind].as_str(), QoS::AtLeastOnce, false, payload)
                            .await?;
                    }
                    anyhow::Ok(())
                },
                clients,
            );
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

/// Registers the gateways in Headend (time zone UTC); returns (serial, password) of each.
pub async fn register(app: &TestApp, serials: &[String]) -> Vec<(String, String)> {
    // A few at a time: registering hashes a password (Argon2).
    let passwords: Vec<String> = futures::stream::iter(serials)
        .map(|s| app.gateway(s, None, Some("UTC")))
        .buffered(CONCURRENT_SETUP)
        .collect()
        .await;
    serials.iter().cloned().zip(passwords).collect()
}

/// Connects one client per gateway (client id `<serial>-1`) on the client runtime; PUBACKs
/// are counted in `acks`. Returns the clients in the order of `creds`.
pub async fn connect(
    addr: SocketAddr,
    creds: Vec<(String, String)>,
    clients: &Handle,
    acks: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<AsyncClient>> {
    let limit = Arc::new(Semaphore::new(CONCURRENT_SETUP));
    let mut connecting = JoinSet::new();
    for (n, (serial, password)) in creds.into_iter().enumerate() {
        let limit = limit.clone();
        connecting.spawn_on(
            async move {
                let _permit = limit.acquire_owned().await;
                let client = MqttClient::connect(addr, &format!("{serial}-1"), &serial, &password)
                    .await
                    .with_context(|| format!("connecting {serial}"));
                (n, client)
            },
            clients,
        );
    }
    let mut gateways = Vec::new();
    while let Some(joined) = connecting.join_next().await {
        let (n, mqtt) = joined?;
        let mut mqtt = mqtt?;
        gateways.push((n, mqtt.client.clone()));
        let acks = acks.clone();
        clients.spawn(async move {
            while let Some(packet) = mqtt.events.recv().await {
                if matches!(packet, Packet::PubAck(_)) {
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    gateways.sort_by_key(|(n, _)| *n);
    Ok(gateways.into_iter().map(|(_, c)| c).collect())
}

/// Waits until `probe` says yes, polling every few milliseconds; fails after [`STALL`].
pub async fn wait_until<F, Fut>(what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while !probe().await? {
        if start.elapsed() > STALL {
            bail!("{what}: nothing after {STALL:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A child process, killed when dropped.
fn spawned(command: &mut Command, what: &str) -> anyhow::Result<Child> {
    command
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {what}"))
}

/// Mosquitto on loopback as a user would set it up for this: anonymous on loopback, no
/// persistence, and no limit on a subscriber's queue so the broker drops nothing while
/// Node-RED is behind (the default of 1 000 queued messages would lose messages).
pub struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        // Mosquitto cannot listen on port 0 and report it: take a free port and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 100\nmax_queued_messages 0\nuser root\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )?;
        let child = spawned(
            Command::new(mosquitto_binary()?)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null()),
            "mosquitto",
        )?;
        wait_until("mosquitto listening", || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok())
        })
        .await?;
        Ok(Self { child, port })
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Node-RED's user directory, installed from `tests/stack/node-red`.
pub struct Install {
    dir: PathBuf,
    /// How it got there, for the report.
    pub how: String,
    pub node_red_version: String,
    pub pg_version: String,
}

/// Installs Node-RED and `pg` (pinned by `tests/stack/node-red/package-lock.json`) with
/// `npm ci` into `target/stack-node-red`, unless that lock file is already installed there.
pub async fn install_node_red() -> anyhow::Result<Install> {
    let source = stack_file("node-red");
    let dir = target_dir()?.join("stack-node-red");
    let lock = std::fs::read(source.join("package-lock.json"))?;
    // Written after a successful install only.
    let marker = dir.join("installed-package-lock.json");
    let how = if std::fs::read(&marker).ok().as_deref() == Some(&lock[..]) {
        "already installed in target/stack-node-red".to_owned()
    } else {
        eprintln!("installing Node-RED with npm ci into {}", dir.display());
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_file(&marker);
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file))?;
        }
        let start = Instant::now();
        let status = Command::new("npm")
            .args([
                "ci",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .await
            .context("run npm (Node.js and npm are needed for this bench)")?;
        anyhow::ensure!(status.success(), "npm ci failed: {status}");
        std::fs::write(&marker, &lock)?;
        format!(
            "`npm ci` into target/stack-node-red took {:.1} s",
            start.elapsed().as_secs_f64()
        )
    };
    let version = |package: &str| -> anyhow::Result<String> {
        let path = dir.join("node_modules").join(package).join("package.json");
        let json: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        Ok(json["version"].as_str().unwrap_or("?").to_owned())
    };
    Ok(Install {
        node_red_version: version("node-red")?,
        pg_version: version("pg")?,
        dir,
        how,
    })
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or three levels above this bench
/// (`target/release/deps/stack-…`).
fn target_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(dir.into());
    }
    let exe = std::env::current_exe()?;
    Ok(exe
        .ancestors()
        .nth(3)
        .context("target directory")?
        .to_path_buf())
}

/// Node-RED running one flow of `tests/stack`, its console log in a file.
pub struct NodeRed {
    child: Child,
    log: PathBuf,
}

impl NodeRed {
    pub async fn start(
        install: &Install,
        flow: &str,
        mosquitto: &Mosquitto,
        cluster: &RunningCluster,
        work: &Path,
    ) -> anyhow::Result<Self> {
        // A copy, so that nothing Node-RED writes lands in the sources.
        let flow_file = work.join(flow);
        std::fs::copy(stack_file(flow), &flow_file)?;
        let log = work.join(format!("{flow}.log"));
        let out = File::create(&log)?;
        let child = spawned(
            Command::new("node")
                .arg(install.dir.join("node_modules/node-red/red.js"))
                .arg("--userDir")
                .arg(&install.dir)
                .arg("--settings")
                .arg(stack_file("settings.js"))
                .env("STACK_FLOW_FILE", &flow_file)
                .env("STACK_MQTT_PORT", mosquitto.port.to_string())
                .env("STACK_MQTT_CLIENT_ID", NODE_RED_CLIENT)
                .env("PGHOST", cluster.socket_dir())
                .env("PGPORT", cluster.port().to_string())
                .env("PGUSER", cluster.superuser())
                .env("PGDATABASE", "stack")
                .stdout(out.try_clone()?)
                .stderr(out),
            "node-red",
        )?;
        Ok(Self { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Publishes a measurements document of another meter until its row is committed (the
    /// flow is subscribed, its connections open and its code compiled), then empties the
    /// tables.
    pub async fn warm_up(
        &mut self,
        mosquitto: &Mosquitto,
        db: &PgPool,
        load: &Load,
    ) -> anyhow::Result<()> {
        let probe = MqttClient::connect(mosquitto.addr(), "warm-up", "warm-up", "unused").await?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Node-RED ended ({status}):\n{}", self.log_tail());
            }
            if start.elapsed() > STALL {
                bail!("Node-RED stored nothing in {STALL:?}:\n{}", self.log_tail());
            }
            probe
                .client
                .publish_bytes(
                    "sg/WARMUP/pub/measurements/rs485/1",
                    QoS::AtLeastOnce,
                    false,
                    load.warm_up.clone(),
                )
                .await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
                .fetch_one(db)
                .await?;
            if rows > 0 {
                break;
            }
        }
        let _ = probe.client.disconnect().await;
        // Let the last warm-up messages through before emptying the tables.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::raw_sql("TRUNCATE measurements, counter_readings")
            .execute(db)
            .await?;
        Ok(())
    }

    /// SIGTERM, as a service manager would stop it; killed if it lingers.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        if std::fs::read_to_string(&self.log)?.contains("[error]") {
            eprintln!("Node-RED logged errors:\n{}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

pub fn mosquitto_version(binary: PathBuf) -> String {
    let out = std::process::Command::new(binary).arg("-h").output();
    out.map(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines().next().unwrap_or_default().trim().to_owned()
    })
    .unwrap_or_default()
}

pub fn node_version() -> String {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What a system's CPU is made of.
pub enum Part {
    /// One process, all its threads.
    Process(u32),
    /// A process and its children (PostgreSQL's postmaster and backends).
    Tree(u32),
    /// This process less the client threads: Headend in process (and the harness's polling).
    Headend,
}

/// CPU-seconds of a system's parts over one run, with the clients' and other work's.
pub struct Cpu {
    pub parts: Vec<(&'static str, f64)>,
    clients: f64,
    other: f64,
    machine: f64,
    /// Cores per CPU-second over the span.
    cores: f64,
}

impl Cpu {
    pub fn measure(before: &CpuSample, after: &CpuSample, parts: &[(&'static str, Part)]) -> Self {
        let span = after.since(before);
        let process = span.this_process();
        let clients = span.threads(CLIENT_THREAD);
        let mut accounted = process;
        let parts = parts
            .iter()
            .map(|(name, part)| {
                let seconds = match part {
                    Part::Process(pid) => span.process(*pid),
                    Part::Tree(pid) => span.tree(*pid),
                    Part::Headend => (process - clients).max(0.0),
                };
                if !matches!(part, Part::Headend) {
                    accounted += seconds;
                }
                (*name, seconds)
            })
            .collect();
        Self {
            parts,
            clients,
            other: span.other(accounted),
            machine: span.machine(),
            cores: span.cores(1.0),
        }
    }

    /// CPU-seconds of the system's own processes (not the clients').
    pub fn system(&self) -> f64 {
        self.parts.iter().map(|(_, s)| s).sum()
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} of {}:", self.machine * self.cores, cpus())?;
        for (name, seconds) in &self.parts {
            write!(f, " {name} {:.2},", seconds * self.cores)?;
        }
        write!(
            f,
            " MQTT clients {:.2}, other {:.2}",
            self.clients * self.cores,
            self.other * self.cores
        )
    }
}
