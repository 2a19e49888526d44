//! `sg-gateway`: runs one SG gateway (or a fleet of simulated ones) against an MQTT broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use sg_gateway::config::{default_config_text, Config, Link, Rs485};
use sg_gateway::fault::ScheduledFault;
use sg_gateway::rtu::Parity;
use sg_gateway::RunningGateway;
use sg_gateway_core::config::DeviceKind;
use sg_gateway_core::sim::{Energy, Profile, SimSource};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "sg-gateway",
    version,
    about = "An Iskra SG smart gateway for Linux hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    one: OneArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs N simulated gateways in one process, each with its own MQTT connection.
    Fleet(Box<FleetArgs>),
    /// An older gateway pushing MiSmart XML documents over TCP (simulated meters).
    XmlPush(XmlPushArgs),
    /// Prints the settings file with every setting.
    DefaultConfig {
        #[arg(long, default_value = "SG000017")]
        serial: String,
    },
}

/// Settings common to one gateway and a fleet; each overrides the file.
#[derive(Args, Clone)]
struct Common {
    /// Broker of link 1, `host:port`.
    #[arg(long)]
    broker: Option<String>,
    /// Push interval of every device, seconds.
    #[arg(long)]
    push_interval: Option<u32>,
    /// Nothing is pushed this long after start, seconds (the real SG waits 60).
    #[arg(long)]
    first_push_delay: Option<u32>,
    /// Headend's receipts: readings stay queued until acknowledged with `ack{seq}`.
    #[arg(long)]
    receipts: bool,
    /// Where the queues are saved (default `./sg-gateway-state/<serial>`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Settings file (TOML); see `sg-gateway default-config`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Simulated meters for every device (the default without a settings file).
    #[arg(long)]
    simulate: bool,
    /// Seed of the simulated meters.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Injects a fault SECS seconds after the gateway started; JSON is the fault as
    /// `POST /faults` takes it, e.g. `30:{"go_offline":{"secs":20}}`,
    /// `10:{"counter_reset":{"slot":"ir_meter"}}`, `5:garble`. Repeatable.
    #[arg(long = "fault-after", value_name = "SECS:JSON")]
    fault_after: Vec<ScheduledFault>,
}

#[derive(Args)]
struct OneArgs {
    /// The gateway's serial, e.g. SG000017.
    #[arg(long)]
    serial: Option<String>,
    /// MQTT password of link 1.
    #[arg(long, env = "SG_GATEWAY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Serve the local REST API here.
    #[arg(long)]
    rest_addr: Option<SocketAddr>,
    /// The REST API asks for this login (with --rest-password): the cookie
    /// `Authorization=Basic base64(user:password)`, as pyiskra and the SG's pages send it.
    #[arg(long, requires = "rest_password")]
    rest_user: Option<String>,
    /// Password of --rest-user (no default).
    #[arg(
        long,
        env = "SG_GATEWAY_REST_PASSWORD",
        hide_env_values = true,
        requires = "rest_user"
    )]
    rest_password: Option<String>,
    #[command(flatten)]
    rs485: Rs485Args,
    #[command(flatten)]
    common: Common,
}

/// The RS485 bus (Modbus RTU on a serial port); each flag overrides the settings file's
/// `[rs485]`.
#[derive(Args)]
struct Rs485Args {
    /// Serial port of the RS485 bus, e.g. /dev/ttyUSB0. Without a device list in the
    /// settings file, the example gateway's RS485 devices are read from it.
    #[arg(long, value_name = "PATH", conflicts_with = "simulate")]
    rs485: Option<PathBuf>,
    /// Bus speed (default 9600).
    #[arg(long)]
    baud: Option<u32>,
    /// Bus parity (default none).
    #[arg(long, value_enum)]
    parity: Option<Parity>,
    /// 1 or 2 (default 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    stop_bits: Option<u8>,
    /// Modbus RTU needs 8 (the default).
    #[arg(long)]
    data_bits: Option<u8>,
    /// How long a device on the bus has to answer one request, ms (default 500).
    #[arg(long, value_name = "MS")]
    rs485_timeout: Option<u64>,
    /// Idle time between frames on the bus, ms (default 5; never under 3.5 characters).
    #[arg(long, value_name = "MS")]
    rs485_gap: Option<u64>,
}

impl Rs485Args {
    /// Puts the flags into `config`.
    fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        if let Some(path) = &self.rs485 {
            let bus = match config.rs485.take() {
                Some(bus) => Rs485 {
                    path: path.clone(),
                    ..bus
                },
                None => Rs485::at(path.clone()),
            };
            config.use_rs485(bus);
        }
        let tuned = self.baud.is_some()
            || self.parity.is_some()
            || self.stop_bits.is_some()
            || self.data_bits.is_some()
            || self.rs485_timeout.is_some()
            || self.rs485_gap.is_some();
        let Some(bus) = &mut config.rs485 else {
            if tuned {
                bail!("the RS485 settings need a bus: give --rs485 PATH or [rs485] in the settings file");
            }
            return Ok(());
        };
        bus.baud = self.baud.unwrap_or(bus.baud);
        bus.parity = self.parity.unwrap_or(bus.parity);
        bus.stop_bits = self.stop_bits.unwrap_or(bus.stop_bits);
        bus.data_bits = self.data_bits.unwrap_or(bus.data_bits);
        bus.timeout_ms = self.rs485_timeout.unwrap_or(bus.timeout_ms);
        bus.gap_ms = self.rs485_gap.unwrap_or(bus.gap_ms);
        Ok(())
    }
}

#[derive(Args)]
struct FleetArgs {
    /// How many gateways.
    #[arg(long)]
    count: u32,
    /// Serials are the prefix and six digits: SGF000001, SGF000002, …
    #[arg(long, default_value = "SGF")]
    serial_prefix: String,
    /// One password for every gateway.
    #[arg(
        long,
        env = "SG_GATEWAY_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    password: Option<String>,
    /// A file of `serial password` lines.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Number of the first gateway: serials run from <prefix><first> (two fleets with
    /// different zones can share a prefix without sharing meter serials).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    first: u32,
    /// Simulated meters start from these register values instead of seeded ones: lines of
    /// `meter-serial register value` (value in milli-units, e.g. `00000101 counter1nr
    /// 123456789` is 123 456.789 kWh), for the non-resettable registers `counter1nr` (active
    /// import) to `counter4nr` (reactive export); a line `meter-serial profile office 4000`
    /// sets the meter's load shape and rating per phase (W). `headend demo` writes one so
    /// that the live fleet continues its backfilled history.
    #[arg(long, value_name = "PATH")]
    start_counters: Option<PathBuf>,
    /// Only gateway N of the fleet (1-based: the one with serial <prefix>N) gets the
    /// `--fault-after` faults; repeatable. Without it every gateway gets them.
    #[arg(long, value_name = "N", requires = "fault_after")]
    fault_gateway: Vec<u32>,
    #[command(flatten)]
    common: Common,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::DefaultConfig { serial }) = &cli.command {
        print!("{}", default_config_text(serial));
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttc=warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Fleet(fleet)) => run_fleet(*fleet).await,
            Some(Command::XmlPush(args)) => run_xml_push(args).await,
            Some(Command::DefaultConfig { .. }) => Ok(()),
            None => run_one(cli.one).await,
        }
    });
    if let Err(error) = &result {
        error!("{error:#}");
    }
    result
}

/// `sg-gateway xml-push`.
#[derive(Args)]
struct XmlPushArgs {
    /// The push server (Headend's XML push listener), `host:port`.
    #[arg(long)]
    to: String,
    /// A simulated meter: `SERIAL:WATTS` (mean power while open, 09-21 local time),
    /// optionally `:E1nr:E2nr:E3nr` start registers in milli-units. Repeatable.
    #[arg(long = "meter", value_name = "SERIAL:W[:E1:E2:E3]", required = true)]
    meters: Vec<String>,
    /// `deviceType` of the documents.
    #[arg(long, default_value = "IE38MD")]
    device_type: String,
    /// Reactive per active energy.
    #[arg(long, default_value_t = 0.4)]
    tan_phi: f64,
    /// Seconds between documents.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Seconds before the first documents.
    #[arg(long, default_value_t = 2)]
    first_push_delay: u64,
}

fn xml_meter(text: &str, args: &XmlPushArgs) -> anyhow::Result<sg_gateway::xml_push::XmlMeter> {
    let parts: Vec<&str> = text.split(':').collect();
    let (serial, watts, start) = match parts.as_slice() {
        [serial, watts] => (*serial, *watts, [0, 0, 0]),
        [serial, watts, e1, e2, e3] => (*serial, *watts, [e1.parse()?, e2.parse()?, e3.parse()?]),
        _ => bail!("--meter {text:?}: expected SERIAL:W or SERIAL:W:E1:E2:E3"),
    };
    Ok(sg_gateway::xml_push::XmlMeter {
        serial: serial.to_owned(),
        device_type: args.device_type.clone(),
        power_w: watts
            .parse()
            .with_context(|| format!("--meter {text:?}: watts"))?,
        tan_phi: args.tan_phi,
        start,
    })
}

async fn run_xml_push(args: XmlPushArgs) -> anyhow::Result<()> {
    let meters = args
        .meters
        .iter()
        .map(|m| xml_meter(m, &args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    info!(to = %args.to, meters = meters.len(), "XML push gateway started");
    sg_gateway::xml_push::run(
        sg_gateway::xml_push::XmlPushSettings {
            to: args.to.clone(),
            interval: std::time::Duration::from_secs(args.interval.max(1)),
            first_push_delay: std::time::Duration::from_secs(args.first_push_delay),
            meters,
        },
        stop,
    )
    .await
}

/// A settings file, or the defaults for `serial`, with the command line applied on top.
fn settings(
    serial: Option<&str>,
    password: Option<String>,
    common: &Common,
    rs485: Option<&Rs485Args>,
) -> anyhow::Result<Config> {
    let mut config = match (&common.config, serial) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(serial)) => Config::for_serial(serial),
        (None, None) => bail!("give --serial or --config"),
    };
    if let Some(serial) = serial {
        config.serial = serial.to_owned();
    }
    // Before anything that fills in the example device list (`--push-interval`).
    if let Some(rs485) = rs485 {
        rs485.apply(&mut config)?;
    }
    if common.simulate {
        if let Some(devices) = &mut config.devices {
            for device in devices {
                device.source = sg_gateway::config::Source::Sim;
            }
        }
    }
    if common.broker.is_some() || password.is_some() {
        let link = config.link1.get_or_insert_with(Link::default);
        if let Some(broker) = &common.broker {
            let (host, port) = split_host_port(broker)?;
            link.host = Some(host);
            link.port = Some(port);
        }
        if password.is_some() {
            link.password = password;
        }
    }
    if let Some(secs) = common.push_interval {
        config.set_push_interval(secs);
    }
    if let Some(secs) = common.first_push_delay {
        config.first_push_delay_s = secs;
    }
    if common.receipts {
        config.receipts = true;
    }
    Ok(config)
}

fn split_host_port(broker: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = broker
        .rsplit_once(':')
        .with_context(|| format!("--broker {broker}: expected host:port"))?;
    let port = port
        .parse()
        .with_context(|| format!("--broker {broker}: bad port"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

async fn run_one(args: OneArgs) -> anyhow::Result<()> {
    let mut config = settings(
        args.serial.as_deref(),
        args.password,
        &args.common,
        Some(&args.rs485),
    )?;
    if args.rest_addr.is_some() {
        config.rest_addr = args.rest_addr;
    }
    if args.rest_user.is_some() {
        config.rest_user = args.rest_user;
        config.rest_password = args.rest_password;
    }
    if let Some(dir) = args.common.state_dir {
        config.state_dir = Some(dir);
    }
    let mut gateway = RunningGateway::start(config.resolve()?, args.common.seed).await?;
    for scheduled in &args.common.fault_after {
        info!(fault = %scheduled, "fault scheduled");
        gateway.inject_after(scheduled.after, scheduled.fault);
    }
    shutdown_signal().await;
    info!("stopping");
    gateway.stop().await
}

async fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    let passwords = match &args.password_file {
        Some(path) => Some(read_passwords(path)?),
        None => None,
    };
    let start_counters = match &args.start_counters {
        Some(path) => read_start_counters(path)?,
        None => std::collections::HashMap::new(),
    };
    let last = args
        .first
        .checked_add(args.count.saturating_sub(1))
        .context("--first + --count is too large")?;
    if let Some(n) = args
        .fault_gateway
        .iter()
        .find(|&&n| n < args.first || n > last)
    {
        bail!(
            "--fault-gateway {n}: the fleet has gateways {} to {last}",
            args.first
        );
    }
    let base_dir = args
        .common
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("sg-gateway-state"));
    let mut gateways = Vec::new();
    for n in args.first..=last {
        let serial = format!("{}{n:06}", args.serial_prefix);
        let password = match &passwords {
            Some(map) => Some(
                map.get(&serial)
                    .with_context(|| format!("no password for {serial} in the password file"))?
                    .clone(),
            ),
            None => args.password.clone(),
        };
        let mut config = settings(Some(&serial), password, &args.common, None)?;
        config.state_dir = Some(base_dir.join(&serial));
        let seed = args.common.seed.wrapping_add(u64::from(n));
        let resolved = config.resolve()?;
        let mut sim = SimSource::for_config(&resolved.gateway, seed);
        for device in &resolved.gateway.devices {
            let DeviceKind::Meter(info) = &device.kind else {
                continue;
            };
            let (Some(registers), Some(meter)) =
                (start_counters.get(&info.serial), sim.meter_mut(device.slot))
            else {
                continue;
            };
            for &(energy, value) in &registers.registers {
                meter.set_initial_mwh(energy, value);
            }
            if let Some((profile, rated_w)) = registers.load {
                meter.set_load(profile, rated_w);
            }
        }
        let mut gateway = RunningGateway::start_with_sim(resolved, sim).await?;
        if args.fault_gateway.is_empty() || args.fault_gateway.contains(&n) {
            for scheduled in &args.common.fault_after {
                info!(%serial, fault = %scheduled, "fault scheduled");
                gateway.inject_after(scheduled.after, scheduled.fault);
            }
        }
        gateways.push(gateway);
    }
    info!(count = gateways.len(), "fleet running");
    shutdown_signal().await;
    info!("stopping the fleet");
    // All at once: one after the other, thousands of gateways each saving its state (with
    // fsyncs) would keep the rest running, and reconnecting, for minutes.
    let mut stopping = tokio::task::JoinSet::new();
    for gateway in gateways {
        stopping.spawn(gateway.stop());
    }
    let mut result = Ok(());
    while let Some(stopped) = stopping.join_next().await {
        if let Err(error) = stopped.map_err(anyhow::Error::from).and_then(|r| r) {
            error!("{error:#}");
            result = Err(error);
        }
    }
    result
}

/// `serial password` per line; blank lines and `#` comments are skipped.
fn read_passwords(path: &Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut map = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (serial, password) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("{}:{}: expected `serial password`", path.display(), n + 1))?;
        map.insert(serial.to_owned(), password.trim().to_owned());
    }
    Ok(map)
}

/// A simulated meter's start: register values and, optionally, its load.
#[derive(Default)]
struct StartMeter {
    registers: Vec<(Energy, i64)>,
    load: Option<(Profile, f64)>,
}

/// `meter-serial register value` or `meter-serial profile household|office|industrial|solar
/// rated-watts-per-phase` per line (see `--start-counters`); blank lines and `#` comments
/// are skipped.
fn read_start_counters(
    path: &Path,
) -> anyhow::Result<std::collections::HashMap<String, StartMeter>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut map: std::collections::HashMap<String, StartMeter> = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let &[serial, key, ref rest @ ..] = words.as_slice() else {
            bail!("{}: expected `meter-serial register value`", at());
        };
        let entry = map.entry(serial.to_owned()).or_default();
        if key == "profile" {
            let &[profile, rated] = rest else {
                bail!("{}: expected `meter-serial profile NAME WATTS`", at());
            };
            let profile = match profile {
                "household" => Profile::Household,
                "office" => Profile::Office,
                "industrial" => Profile::Industrial,
                "solar" => Profile::Solar,
                other => bail!(
                    "{}: profile {other:?} is not household, office, industrial or solar",
                    at()
                ),
            };
            let rated: f64 = rated
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w >= 0.0)
                .with_context(|| format!("{}: {rated:?} is not a rating in watts", at()))?;
            entry.load = Some((profile, rated));
            continue;
        }
        let &[value] = rest else {
            bail!("{}: expected `meter-serial register value`", at());
        };
        let energy = match key {
            "counter1nr" => Energy::ActiveImport,
            "counter2nr" => Energy::ActiveExport,
            "counter3nr" => Energy::ReactiveImport,
            "counter4nr" => Energy::ReactiveExport,
            other => bail!("{}: {other:?} is not one of counter1nr..counter4nr", at()),
        };
        let value: i64 = value
            .parse()
            .ok()
            .filter(|v: &i64| *v >= 0)
            .with_context(|| format!("{}: {value:?} is not a register value", at()))?;
        entry.registers.push((energy, value));
    }
    Ok(map)
}

/// SIGTERM (systemd, docker stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
