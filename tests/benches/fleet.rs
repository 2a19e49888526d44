//! Simulator fleet benchmark: how many gateways one `sg-gateway fleet` process simulates, and
//! with how much CPU and memory, at the push intervals of the runs asked for.
//!
//! Each run starts its own Mosquitto (so the fleet is measured without Headend's ingest cost)
//! and one `sg-gateway fleet --simulate` process of N gateways, each its own MQTT connection. A
//! subscriber on `sg/+/pub/#` sees every gateway's hello (the fleet is up once all have said
//! hello) and then counts, over a window of whole push intervals, the readings the broker
//! delivered. The in-run reference is the rate the fleet should deliver: N × messages per push
//! cycle / interval; the report gives the ratio delivered / expected, and how late readings
//! arrive after the instant they were pushed for (their `local_time`). Figures are reported,
//! never asserted.
//!
//! `cargo bench -p headend-e2e --bench fleet` (release) after
//! `cargo build --release -p sg-gateway`; parameters in `HEADEND_BENCH_FLEET_*` (see
//! [`Params`]).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use chrono::NaiveDateTime;
use headend_e2e::bench::{cpus, env_or, mosquitto_binary, CpuSample, Machine};
use headend_e2e::eventually;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `local_time` format of the documents.
const LOCAL_TIME: &str = "%d.%m.%Y %H:%M:%S";
/// Serials are this prefix and six digits.
const SERIAL_PREFIX: &str = "SGF";
/// Time after the last hello before the window may start: the backlog of gateways that
/// connected late drains.
const WARM_UP: Duration = Duration::from_secs(3);
/// How long connecting may go without a new hello before the run is declared stuck.
const STALL: Duration = Duration::from_secs(60);

/// Run parameters, from the environment.
struct Params {
    /// `HEADEND_BENCH_FLEET_RUNS`: `interval:gateways` pairs, comma-separated; interval in
    /// seconds.
    runs: Vec<RunSpec>,
    /// `HEADEND_BENCH_FLEET_WINDOW`: shortest measurement window, seconds; a window is a
    /// whole number of push intervals, at least one.
    window: u32,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let runs: String = env_or(
            "HEADEND_BENCH_FLEET_RUNS",
            "1:100,1:500,1:1000,60:1000,60:5000".into(),
        )?;
        let runs = runs
            .split(',')
            .map(|run| run.trim().parse())
            .collect::<anyhow::Result<Vec<RunSpec>>>()
            .context("HEADEND_BENCH_FLEET_RUNS")?;
        let window = env_or("HEADEND_BENCH_FLEET_WINDOW", 15)?;
        ensure!(!runs.is_empty(), "HEADEND_BENCH_FLEET_RUNS is empty");
        Ok(Self { runs, window })
    }
}

/// One configuration: this many gateways pushing every `interval` seconds.
#[derive(Clone, Copy)]
struct RunSpec {
    interval: u32,
    gateways: u32,
}

impl RunSpec {
    /// Push intervals in a window of at least `window` seconds.
    fn cycles(self, window: u32) -> u32 {
        window.div_ceil(self.interval).max(1)
    }

    /// Open files for a process with one connection per gateway, with room to spare.
    fn open_files(self) -> u64 {
        u64::from(self.gateways) * 2 + 1024
    }
}

impl FromStr for RunSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (interval, gateways) = s
            .split_once(':')
            .with_context(|| format!("{s:?}: expected interval:gateways"))?;
        let spec = Self {
            interval: interval.parse()?,
            gateways: gateways.parse()?,
        };
        ensure!(
            spec.interval > 0 && spec.gateways > 0,
            "{s:?}: must be positive"
        );
        Ok(spec)
    }
}

fn main() -> anyhow::Result<()> {
    let params = Params::from_env()?;
    let binary = sg_gateway_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut figures = Vec::with_capacity(params.runs.len());
    for spec in &params.runs {
        eprintln!(
            "fleet of {} gateways, push interval {} s",
            spec.gateways, spec.interval
        );
        figures.push(runtime.block_on(run(*spec, params.window, &binary))?);
    }
    print!("{}", report(&params, &figures)?);
    Ok(())
}

/// `target/release/sg-gateway`: beside the directory of this bench's executable
/// (`target/release/deps`).
fn sg_gateway_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory")?
        .join("sg-gateway");
    ensure!(
        bin.exists(),
        "{} missing: build it with `cargo build --release -p sg-gateway`",
        bin.display()
    );
    Ok(bin)
}

/// What one run measured.
struct Figures {
    spec: RunSpec,
    /// From starting the fleet process to the last gateway's hello.
    connected_after: Duration,
    cycles: u32,
    window: Duration,
    /// Messages of one gateway's push cycle.
    per_cycle: u64,
    delivered: u64,
    /// Hellos during the window: reconnections.
    hellos: u64,
    /// Sorted delivery lags, ms: receipt minus the pushed `local_time`.
    lags: Vec<i64>,
    /// Readings whose `local_time` could not be read.
    unparsed: u64,
    cpu: CpuUse,
    fleet_memory: Memory,
    broker_memory: Memory,
    /// Warnings and errors the fleet logged, over the whole run.
    fleet_warnings: usize,
}

impl Figures {
    fn expected(&self) -> u64 {
        u64::from(self.spec.gateways) * self.per_cycle * u64::from(self.cycles)
    }

    fn expected_rate(&self) -> f64 {
        (u64::from(self.spec.gateways) * self.per_cycle) as f64 / f64::from(self.spec.interval)
    }

    fn delivered_rate(&self) -> f64 {
        self.delivered as f64 / self.window.as_secs_f64()
    }

    fn ratio(&self) -> f64 {
        self.delivered as f64 / self.expected().max(1) as f64
    }

    fn lag(&self, q: f64) -> Option<i64> {
        let last = self.lags.len().checked_sub(1)?;
        Some(self.lags[(last as f64 * q).round() as usize])
    }

    /// Whether every push of the window arrived within its interval.
    fn keeps_up(&self) -> bool {
        self.ratio() >= 0.99
            && self
                .lag(1.0)
                .is_some_and(|max| max < i64::from(self.spec.interval) * 1000)
    }
}

async fn run(spec: RunSpec, window: u32, binary: &Path) -> anyhow::Result<Figures> {
    let dir = tempfile::Builder::new().prefix("hebench-fleet").tempdir()?;
    let broker = Mosquitto::start(dir.path(), spec.open_files()).await?;
    let subscriber = Subscriber::start(broker.port).await?;
    let started = Instant::now();
    let mut fleet = Fleet::start(binary, spec, broker.port, dir.path())?;
    subscriber.wait_connected(spec.gateways, &mut fleet).await?;
    let connected_after = started.elapsed();
    eprintln!(
        "  all connected after {:.1} s",
        connected_after.as_secs_f64()
    );

    tokio::time::sleep(WARM_UP).await;
    align(spec.interval).await;
    let cycles = spec.cycles(window);
    eprintln!(
        "  measuring {} push cycles ({} s)",
        cycles,
        cycles * spec.interval
    );
    let (fleet_pid, broker_pid) = (fleet.process.pid(), broker.process.pid());
    let before = CpuSample::now()?;
    let start = Instant::now();
    subscriber.tally().window = Some(Window::default());
    tokio::time::sleep(Duration::from_secs(u64::from(cycles * spec.interval))).await;
    let counted = subscriber.tally().window.take().context("window open")?;
    let took = start.elapsed();
    let cpu = cpu_use(&before, &CpuSample::now()?, fleet_pid, broker_pid);
    ensure!(
        fleet.process.running()?,
        "the fleet exited during the window:\n{}",
        fleet.log_tail()
    );
    let fleet_memory = Memory::of(fleet_pid)?;
    let broker_memory = Memory::of(broker_pid)?;
    let per_cycle = subscriber
        .tally()
        .first
        .as_ref()
        .map_or(0, |(_, topics)| topics.len() as u64);
    ensure!(per_cycle > 0, "no gateway pushed a reading");
    let mut lags = counted.lags;
    lags.sort_unstable();
    let fleet_warnings = fleet.warnings();
    subscriber.stop();
    Ok(Figures {
        spec,
        connected_after,
        cycles,
        window: took,
        per_cycle,
        delivered: counted.readings,
        hellos: counted.hellos,
        lags,
        unparsed: counted.unparsed,
        cpu,
        fleet_memory,
        broker_memory,
        fleet_warnings,
    })
}

/// Waits for the next push instant (the fleet's first after start, which also writes every
/// gateway's first state file, stays out of the window), then half an interval more. A window
/// of whole intervals starting then holds as many push instants as intervals, with half an
/// interval between the last of them and the window's end.
async fn align(interval: u32) {
    let period = i64::from(interval) * 1000;
    let now = unix_ms(SystemTime::now());
    let start = (now.div_euclid(period) + 1) * period + period / 2;
    tokio::time::sleep(Duration::from_millis((start - now) as u64)).await;
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A child process, killed when dropped.
struct Process(Child);

impl Process {
    /// `program` with the open-file limit raised to `files` (or the hard limit, when that is
    /// lower and may not be raised): one descriptor per connection.
    fn command(program: &Path, files: u64) -> Command {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -n {files} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
            ))
            .arg(program);
        command
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn running(&mut self) -> anyhow::Result<bool> {
        Ok(self.0.try_wait()?.is_none())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Mosquitto {
    process: Process,
    port: u16,
}

impl Mosquitto {
    /// A broker on loopback: anonymous, no persistence, no connection limit, and no limit on
    /// the subscriber's queue, so the broker drops nothing.
    async fn start(dir: &Path, files: u64) -> anyhow::Result<Self> {
        // Mosquitto cannot listen on port 0 and report it: take a free port and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nmax_connections -1\nallow_anonymous true\n\
                 persistence false\nmax_inflight_messages 1000\nmax_queued_messages 0\n\
                 user root\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )?;
        let child = Process::command(&mosquitto_binary()?, files)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start mosquitto")?;
        let process = Process(child);
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await
        .context("mosquitto listening")?;
        Ok(Self { process, port })
    }
}

fn mosquitto_version() -> String {
    mosquitto_binary()
        .and_then(|bin| Ok(Command::new(bin).arg("-h").output()?))
        .map(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

/// The `sg-gateway fleet` process; its log goes to a file.
struct Fleet {
    process: Process,
    log: PathBuf,
}

impl Fleet {
    fn start(binary: &Path, spec: RunSpec, port: u16, dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join("fleet.log");
        let child = Process::command(binary, spec.open_files())
            .arg("fleet")
            .args(["--count", &spec.gateways.to_string()])
            .args(["--serial-prefix", SERIAL_PREFIX, "--password", "bench"])
            .args(["--broker", &format!("127.0.0.1:{port}")])
            .args(["--push-interval", &spec.interval.to_string()])
            .args(["--first-push-delay", "0", "--simulate"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            // Push instants are whole multiples of the interval in the gateway's local time,
            // and `local_time` is read back as UTC.
            .env("TZ", "UTC")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("start sg-gateway fleet")?;
        Ok(Self {
            process: Process(child),
            log,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn warnings(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count()
    }
}

/// What the subscriber saw.
#[derive(Default)]
struct Tally {
    /// Gateways whose hello arrived.
    connected: HashSet<String>,
    /// The first gateway whose reading arrived, and the topics it pushed readings on: one push
    /// cycle's messages.
    first: Option<(String, HashSet<String>)>,
    /// Open while measuring.
    window: Option<Window>,
}

#[derive(Default)]
struct Window {
    readings: u64,
    hellos: u64,
    lags: Vec<i64>,
    unparsed: u64,
}

impl Tally {
    fn record(&mut self, topic: &str, payload: &[u8], received_ms: i64) {
        let Some((serial, subtopic)) = topic
            .strip_prefix("sg/")
            .and_then(|t| t.split_once("/pub/"))
        else {
            return;
        };
        if subtopic == "status" {
            self.connected.insert(serial.to_owned());
            if let Some(window) = &mut self.window {
                window.hellos += 1;
            }
            return;
        }
        let (first, topics) = self
            .first
            .get_or_insert_with(|| (serial.to_owned(), HashSet::new()));
        if first == serial && !topics.contains(subtopic) {
            topics.insert(subtopic.to_owned());
        }
        if let Some(window) = &mut self.window {
            window.readings += 1;
            match local_time_ms(payload) {
                Some(pushed) => window.lags.push(received_ms - pushed),
                None => window.unparsed += 1,
            }
        }
    }
}

/// `local_time` of a measurements, counters or relay document, as UTC milliseconds.
fn local_time_ms(payload: &[u8]) -> Option<i64> {
    const KEY: &[u8] = br#""local_time":""#;
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let text = std::str::from_utf8(payload.get(at..at + 19)?).ok()?;
    let time = NaiveDateTime::parse_from_str(text, LOCAL_TIME).ok()?;
    Some(time.and_utc().timestamp_millis())
}

/// A client subscribed to every gateway's pushes, tallying them in the background.
struct Subscriber {
    client: AsyncClient,
    tally: Arc<Mutex<Tally>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Subscriber {
    async fn start(port: u16) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new("fleet-bench", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 16);
        // QoS 1, so the broker queues for the subscriber rather than dropping.
        client.subscribe("sg/+/pub/#", QoS::AtLeastOnce).await?;
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
                    return anyhow::Ok(());
                }
            }
        })
        .await
        .context("SUBACK")??;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn(receive(events, tally.clone()));
        Ok(Self {
            client,
            tally,
            task,
        })
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for every gateway's hello; fails when no new one comes for [`STALL`], or the
    /// fleet exits.
    async fn wait_connected(&self, gateways: u32, fleet: &mut Fleet) -> anyhow::Result<()> {
        let target = gateways as usize;
        let (mut last, mut moved, mut said) = (0, Instant::now(), Instant::now());
        while last < target {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ensure!(
                !self.task.is_finished(),
                "the subscriber lost its connection"
            );
            if !fleet.process.running()? {
                bail!("the fleet exited:\n{}", fleet.log_tail());
            }
            let now = self.tally().connected.len();
            if now != last {
                (last, moved) = (now, Instant::now());
            } else if moved.elapsed() > STALL {
                bail!(
                    "connecting stuck at {last} of {target} gateways:\n{}",
                    fleet.log_tail()
                );
            }
            if said.elapsed() > Duration::from_secs(5) {
                eprintln!("  {last} of {target} connected");
                said = Instant::now();
            }
        }
        Ok(())
    }

    fn stop(self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

async fn receive(mut events: EventLoop, tally: Arc<Mutex<Tally>>) -> anyhow::Result<()> {
    loop {
        if let Event::Incoming(Packet::Publish(publish)) = events.poll().await? {
            let received = unix_ms(SystemTime::now());
            tally.lock().unwrap_or_else(PoisonError::into_inner).record(
                &publish.topic,
                &publish.payload,
                received,
            );
        }
    }
}

/// Cores kept busy between two samples by the fleet, the broker and this process (the
/// subscriber), and by the whole machine.
fn cpu_use(before: &CpuSample, after: &CpuSample, fleet: u32, broker: u32) -> CpuUse {
    let span = after.since(before);
    CpuUse {
        machine: span.cores(span.machine()),
        fleet: span.cores(span.process(fleet)),
        broker: span.cores(span.process(broker)),
        bench: span.cores(span.this_process()),
    }
}

/// Cores kept busy, on average.
struct CpuUse {
    machine: f64,
    fleet: f64,
    broker: f64,
    bench: f64,
}

/// Resident memory of a process, KiB.
struct Memory {
    rss: u64,
    peak: u64,
}

impl Memory {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("{name} of {pid}"))?;
            Ok(line.trim().trim_end_matches("kB").trim().parse()?)
        };
        Ok(Self {
            rss: kib("VmRSS:")?,
            peak: kib("VmHWM:")?,
        })
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn lag(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms.abs() < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

fn report(params: &Params, runs: &[Figures]) -> anyhow::Result<String> {
    let mut out = format!(
        "## Simulator fleet benchmark\n\n{}\n\n{}; each run its own broker and one \
         `sg-gateway fleet --simulate` process (release), push instants aligned on whole \
         multiples of the interval. Window: at least {} s of whole push intervals, starting half \
         an interval after the first push instant that is {} s or more after the last hello.\n\n",
        Machine::probe().describe("The fleet, Mosquitto and the subscriber share it."),
        mosquitto_version(),
        params.window,
        WARM_UP.as_secs()
    );
    let mut row = |name: &str, f: &dyn Fn(&Figures) -> String| {
        let cells: String = runs.iter().map(|r| format!(" {} |", f(r))).collect();
        writeln!(out, "| {name} |{cells}")
    };
    row("push interval × gateways", &|r| {
        format!("{} s × {}", r.spec.interval, r.spec.gateways)
    })?;
    row("---", &|_| "---".into())?;
    row("all connected (hellos) after", &|r| {
        format!("{:.1} s", r.connected_after.as_secs_f64())
    })?;
    row("window", &|r| {
        format!("{:.1} s ({} push cycles)", r.window.as_secs_f64(), r.cycles)
    })?;
    row("messages per push cycle (first gateway to push)", &|r| {
        r.per_cycle.to_string()
    })?;
    row("expected msg/s (reference)", &|r| {
        format!("{:.0}", r.expected_rate())
    })?;
    row("delivered msg/s", &|r| format!("{:.0}", r.delivered_rate()))?;
    row("**delivered / expected**", &|r| {
        format!("**{:.3}** ({} of {})", r.ratio(), r.delivered, r.expected())
    })?;
    row(
        "delivery lag after the push instant p50 / p99 / max",
        &|r| {
            format!(
                "{} / {} / {}",
                lag(r.lag(0.5)),
                lag(r.lag(0.99)),
                lag(r.lag(1.0))
            )
        },
    )?;
    row("every push delivered within its interval", &|r| {
        if r.keeps_up() { "yes" } else { "**no**" }.into()
    })?;
    row("fleet CPU (cores)", &|r| format!("{:.3}", r.cpu.fleet))?;
    row("**fleet CPU per 1000 gateways** (cores)", &|r| {
        format!(
            "**{:.3}**",
            r.cpu.fleet * 1000.0 / f64::from(r.spec.gateways)
        )
    })?;
    row("fleet RSS / peak (VmRSS / VmHWM)", &|r| {
        format!("{} / {}", mib(r.fleet_memory.rss), mib(r.fleet_memory.peak))
    })?;
    row("**RSS per gateway**", &|r| {
        format!(
            "**{:.0} KiB** (peak {:.0})",
            r.fleet_memory.rss as f64 / f64::from(r.spec.gateways),
            r.fleet_memory.peak as f64 / f64::from(r.spec.gateways)
        )
    })?;
    row(
        "RSS per added gateway (vs the previous run at this interval)",
        &|r| match runs
            .iter()
            .rfind(|p| p.spec.interval == r.spec.interval && p.spec.gateways < r.spec.gateways)
        {
            Some(p) => format!(
                "{:.0} KiB",
                (r.fleet_memory.rss as f64 - p.fleet_memory.rss as f64)
                    / f64::from(r.spec.gateways - p.spec.gateways)
            ),
            None => "-".into(),
        },
    )?;
    row("Mosquitto CPU (cores) / RSS", &|r| {
        format!("{:.3} / {}", r.cpu.broker, mib(r.broker_memory.rss))
    })?;
    row("subscriber (bench) CPU (cores)", &|r| {
        format!("{:.3}", r.cpu.bench)
    })?;
    row("machine busy (cores)", &|r| {
        format!("{:.2} of {}", r.cpu.machine, cpus())
    })?;
    row("reconnections in the window (hellos)", &|r| {
        r.hellos.to_string()
    })?;
    row("readings without a readable local_time", &|r| {
        r.unparsed.to_string()
    })?;
    row("warnings logged by the fleet", &|r| {
        r.fleet_warnings.to_string()
    })?;
    out.push('\n');
    Ok(out)
}
