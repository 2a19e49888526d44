//! The runner's settings file (TOML): the SG's own settings pages — two push links and the
//! devices — plus where each device's readings come from and where the runner keeps state.
//!
//! Everything has a default derived from the serial number, so the common case (one
//! simulated gateway talking to Headend) needs no file at all; `sg-gateway default-config`
//! prints the file with every setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use sg_gateway_core::config::{
    DeviceConfig, DeviceKind, GatewayConfig, LinkConfig, MeterInfo, RelayInfo, Slot,
};
use sg_wire::message::TextOrNumber;
use sg_wire::topic::TopicLayout;

use crate::rest::Login;
use crate::rtu::{Line, Parity};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// E.g. `SG000017`.
    pub serial: String,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default = "default_sw_ver")]
    pub sw_ver: String,
    #[serde(default = "default_hw_ver")]
    pub hw_ver: u32,
    /// Nothing is pushed this long after start (the real SG waits 60 s).
    #[serde(default = "default_first_push_delay")]
    pub first_push_delay_s: u32,
    /// Headend's receipt extension: readings carry `seq` and stay queued until `ack`.
    #[serde(default)]
    pub receipts: bool,
    /// Where the store-and-forward queues are kept; default `./sg-gateway-state/<serial>`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The local REST API; off when absent.
    #[serde(default)]
    pub rest_addr: Option<SocketAddr>,
    /// The REST API's login (both or neither): requests must carry the cookie
    /// `Authorization=Basic base64(user:password)`, as the SG's pages and pyiskra send it.
    #[serde(default)]
    pub rest_user: Option<String>,
    #[serde(default)]
    pub rest_password: Option<String>,
    /// Push link 1 and push link 2.
    #[serde(default)]
    pub link1: Option<Link>,
    #[serde(default)]
    pub link2: Option<Link>,
    /// The gateway's RS485 bus: Modbus RTU on a serial port, for the devices whose source
    /// is `modbus_rtu`. Absent: no bus.
    #[serde(default)]
    pub rs485: Option<Rs485>,
    /// The IR meter, the IR relay and RS485 slots. Absent: the example gateway (every
    /// device simulated).
    #[serde(default)]
    pub devices: Option<Vec<Device>>,
}

/// The RS485 bus (the `[rs485]` table): one serial port, one request at a time, each device
/// addressed by its unit id (its `modbus_addr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rs485 {
    /// The serial port, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `"none"`, `"even"` or `"odd"`.
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Modbus RTU needs 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// How long a device has to answer one request (after the request is on the wire; the
    /// reply's own time on the wire is added); a device's source may set its own.
    #[serde(default = "default_rtu_timeout")]
    pub timeout_ms: u64,
    /// Idle time between the end of one frame and the next request; never less than the
    /// line's 3.5-character inter-frame gap.
    #[serde(default = "default_gap")]
    pub gap_ms: u64,
}

impl Rs485 {
    /// The bus at `path` with every other setting at its default.
    #[must_use]
    pub fn at(path: PathBuf) -> Self {
        Self {
            path,
            baud: default_baud(),
            parity: Parity::default(),
            stop_bits: default_stop_bits(),
            data_bits: default_data_bits(),
            timeout_ms: default_rtu_timeout(),
            gap_ms: default_gap(),
        }
    }

    /// The serial line's settings.
    #[must_use]
    pub fn line(&self) -> Line {
        Line {
            path: self.path.clone(),
            baud: self.baud,
            parity: self.parity,
            stop_bits: self.stop_bits,
            data_bits: self.data_bits,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.baud == 0 {
            bail!("rs485: baud must be above 0");
        }
        if !matches!(self.stop_bits, 1 | 2) {
            bail!("rs485: stop_bits is 1 or 2, not {}", self.stop_bits);
        }
        if self.data_bits != 8 {
            bail!(
                "rs485: Modbus RTU needs data_bits = 8, not {}",
                self.data_bits
            );
        }
        if self.timeout_ms == 0 {
            bail!("rs485: timeout_ms must be above 0");
        }
        Ok(())
    }
}

/// One push link. Missing fields take Headend's defaults for the serial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Broker host name or address.
    #[serde(default)]
    pub host: Option<String>,
    /// Default 1883, or 8883 with TLS.
    #[serde(default)]
    pub port: Option<u16>,
    /// MQTTS ("MQTT over SSL" on the SG).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA that signed the broker's certificate (required with TLS: the
    /// gateway trusts nothing else).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Default: the serial.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Default `sg/<serial>`, `pub`, `sub`.
    #[serde(default)]
    pub root: Option<String>,
    #[serde(default)]
    pub publish: Option<String>,
    #[serde(default)]
    pub subscribe: Option<String>,
    #[serde(default)]
    pub qos: Option<u8>,
    /// Store-and-forward capacity in messages; above it the oldest are dropped.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Publishes awaiting PUBACK, at most.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub keep_alive_s: Option<u16>,
}

/// A device in one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// `"ir_meter"`, `"ir_relay"` or `{ rs485 = N }` (the settings slot, not the address).
    pub slot: Slot,
    /// `"meter"` or `"relay"`.
    #[serde(rename = "type")]
    pub kind: DeviceType,
    pub model: String,
    #[serde(default)]
    pub serial: String,
    /// Meters: 1 or 3.
    #[serde(default = "default_phases")]
    pub phases: u8,
    /// The Modbus address (absent for the IR relay).
    #[serde(default)]
    pub modbus_addr: Option<u8>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub sg_description: String,
    #[serde(default = "default_push_interval")]
    pub push_interval_s: u32,
    /// Push on link 1, link 2.
    #[serde(default = "default_push")]
    pub push: [bool; 2],
    #[serde(default)]
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    Meter,
    Relay,
}

/// Where a device's readings come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// The core's simulated meters and relays (seeded from the gateway's seed).
    #[default]
    Sim,
    /// A meter behind a Modbus TCP server (a meter with Ethernet, or an RS485/IP converter).
    ModbusTcp {
        host: String,
        #[serde(default = "default_modbus_port")]
        port: u16,
        /// The Modbus unit id; default: the device's `modbus_addr`.
        #[serde(default)]
        unit: Option<u8>,
        #[serde(default = "default_modbus_timeout")]
        timeout_ms: u64,
    },
    /// A meter or Bicom relay on the gateway's RS485 bus (the `[rs485]` table), Modbus RTU.
    ModbusRtu {
        /// The Modbus unit id, 1..=247; default: the device's `modbus_addr`.
        #[serde(default)]
        unit: Option<u8>,
        /// Default: the bus's `timeout_ms`.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

fn default_model() -> String {
    "SG-W1".into()
}
fn default_sw_ver() -> String {
    "0.51".into()
}
fn default_hw_ver() -> u32 {
    2
}
fn default_first_push_delay() -> u32 {
    60
}
fn default_phases() -> u8 {
    3
}
fn default_push_interval() -> u32 {
    900
}
fn default_push() -> [bool; 2] {
    [true, false]
}
fn default_modbus_port() -> u16 {
    502
}
fn default_modbus_timeout() -> u64 {
    1_000
}
fn default_baud() -> u32 {
    9_600
}
fn default_stop_bits() -> u8 {
    1
}
fn default_data_bits() -> u8 {
    8
}
fn default_rtu_timeout() -> u64 {
    500
}
fn default_gap() -> u64 {
    5
}

/// A link with every default applied.
#[derive(Clone, PartialEq)]
pub struct ResolvedLink {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsFiles>,
    pub username: String,
    pub password: String,
    pub keep_alive_s: u16,
    pub core: LinkConfig,
}

impl std::fmt::Debug for ResolvedLink {
    /// The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedLink")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("core", &self.core)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    /// Certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Everything the runner needs, defaults applied and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub gateway: GatewayConfig,
    pub links: [ResolvedLink; 2],
    /// The source of each device, in `gateway.devices` order.
    pub sources: Vec<(Slot, Source)>,
    pub state_dir: PathBuf,
    pub rest_addr: Option<SocketAddr>,
    /// The REST API's login; open without.
    pub rest_login: Option<Login>,
    /// The RS485 bus, if a device is on it.
    pub rs485: Option<Rs485>,
}

impl Config {
    /// The configuration with no file: the example gateway, link 1 to `127.0.0.1:1883`.
    #[must_use]
    pub fn for_serial(serial: &str) -> Self {
        Self {
            serial: serial.into(),
            model: default_model(),
            sw_ver: default_sw_ver(),
            hw_ver: default_hw_ver(),
            first_push_delay_s: default_first_push_delay(),
            receipts: false,
            state_dir: None,
            rest_addr: None,
            rest_user: None,
            rest_password: None,
            link1: None,
            link2: None,
            rs485: None,
            devices: None,
        }
    }

    /// Parses a file's text.
    ///
    /// # Errors
    /// TOML syntax, unknown keys or wrong types, with toml's position.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// As [`parse`](Self::parse), or the file cannot be read.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Sets every device's push interval (the `--push-interval` flag).
    pub fn set_push_interval(&mut self, secs: u32) {
        let mut devices = self
            .devices
            .take()
            .unwrap_or_else(|| example_devices(&self.serial));
        for device in &mut devices {
            device.push_interval_s = secs;
        }
        self.devices = Some(devices);
    }

    /// Puts the gateway on the RS485 bus `bus` (the `--rs485` flag). Without a device list,
    /// the example gateway's devices in RS485 slots are read from the bus (the IR ones stay
    /// simulated); a device list keeps the sources it gives.
    pub fn use_rs485(&mut self, bus: Rs485) {
        self.rs485 = Some(bus);
        if self.devices.is_none() {
            let mut devices = example_devices(&self.serial);
            for device in &mut devices {
                if matches!(device.slot, Slot::Rs485(_)) {
                    device.source = Source::ModbusRtu {
                        unit: None,
                        timeout_ms: None,
                    };
                }
            }
            self.devices = Some(devices);
        }
    }

    /// Applies the defaults and checks the result.
    ///
    /// # Errors
    /// An invalid serial, topic setting or device list, TLS without a CA file, a device on
    /// the RS485 bus without a bus or without a usable unit id, or bad bus settings.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let serial = &self.serial;
        let link1 = resolve_link(serial, self.link1.as_ref(), 1)?;
        let link2 = resolve_link(serial, self.link2.as_ref(), 2)?;
        let devices = self
            .devices
            .clone()
            .unwrap_or_else(|| example_devices(serial));
        let sources = devices.iter().map(|d| (d.slot, d.source.clone())).collect();
        let mut on_bus = false;
        for device in &devices {
            if let Source::ModbusRtu { unit, .. } = &device.source {
                on_bus = true;
                if self.rs485.is_none() {
                    bail!(
                        "device {}: source modbus_rtu needs the RS485 bus ([rs485] with \
                         path, or --rs485 PATH)",
                        device.slot
                    );
                }
                let unit = unit.or(device.modbus_addr).unwrap_or(0);
                if !(1..=247).contains(&unit) {
                    bail!(
                        "device {}: Modbus RTU unit id {unit} is not in 1..=247 (set \
                         modbus_addr or the source's unit)",
                        device.slot
                    );
                }
            }
        }
        if let Some(bus) = &self.rs485 {
            bus.check()?;
        }
        let rest_login = match (&self.rest_user, &self.rest_password) {
            (Some(user), Some(password)) => Some(Login::new(user, password)?),
            (None, None) => None,
            _ => bail!("rest_user and rest_password go together (a login needs both)"),
        };
        let gateway = GatewayConfig {
            serial: serial.clone(),
            model: self.model.clone(),
            sw_ver: TextOrNumber::Text(self.sw_ver.clone()),
            hw_ver: TextOrNumber::Number(self.hw_ver.into()),
            links: [link1.core.clone(), link2.core.clone()],
            devices: devices.iter().map(Device::to_core).collect(),
            first_push_delay_s: self.first_push_delay_s,
            receipts: self.receipts,
        };
        gateway
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        Ok(Resolved {
            gateway,
            links: [link1, link2],
            sources,
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("sg-gateway-state").join(serial)),
            rest_addr: self.rest_addr,
            rest_login,
            rs485: self.rs485.clone().filter(|_| on_bus),
        })
    }
}

fn resolve_link(serial: &str, link: Option<&Link>, number: u8) -> anyhow::Result<ResolvedLink> {
    let default = Link::default();
    let link = link.unwrap_or(&default);
    let layout = TopicLayout::new(
        link.root.clone().unwrap_or_else(|| format!("sg/{serial}")),
        link.publish.clone().unwrap_or_else(|| "pub".into()),
        link.subscribe.clone().unwrap_or_else(|| "sub".into()),
    )
    .map_err(|e| anyhow::anyhow!("link{number}: {e}"))?;
    let mut core = LinkConfig::headend(serial).map_err(|e| anyhow::anyhow!("serial: {e}"))?;
    core.layout = layout;
    core.enabled = link.enabled.unwrap_or(number == 1);
    if let Some(qos) = link.qos {
        core.qos = qos;
    }
    if let Some(capacity) = link.queue_capacity {
        core.queue_capacity = capacity;
    }
    if let Some(window) = link.max_in_flight {
        core.max_in_flight = window;
    }
    let tls = if link.tls {
        let Some(ca_file) = link.ca_file.clone() else {
            bail!("link{number}: tls needs ca_file (the CA of the broker's certificate)");
        };
        let client = match (&link.client_cert, &link.client_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => bail!("link{number}: mutual TLS needs both client_cert and client_key"),
        };
        Some(TlsFiles { ca_file, client })
    } else {
        None
    };
    Ok(ResolvedLink {
        enabled: core.enabled,
        host: link.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
        port: link.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 }),
        tls,
        username: link.username.clone().unwrap_or_else(|| serial.into()),
        password: link.password.clone().unwrap_or_default(),
        keep_alive_s: link.keep_alive_s.unwrap_or(30),
        core,
    })
}

impl Device {
    fn to_core(&self) -> DeviceConfig {
        let kind = match self.kind {
            DeviceType::Meter => DeviceKind::Meter(MeterInfo {
                model: self.model.clone(),
                serial: self.serial.clone(),
                phases: self.phases,
                modbus_addr: self.modbus_addr.unwrap_or(0),
                description: self.description.clone(),
                location: self.location.clone(),
                sg_description: self.sg_description.clone(),
            }),
            DeviceType::Relay => DeviceKind::Relay(RelayInfo {
                model: self.model.clone(),
                serial: self.serial.clone(),
                modbus_addr: self.modbus_addr,
                description: self.description.clone(),
                location: self.location.clone(),
                sg_description: self.sg_description.clone(),
            }),
        };
        DeviceConfig {
            slot: self.slot,
            kind,
            push_interval_s: self.push_interval_s,
            push: self.push,
        }
    }

    fn from_core(device: &DeviceConfig) -> Self {
        let (kind, model, serial, phases, addr, description, location, sg_description) =
            match &device.kind {
                DeviceKind::Meter(m) => (
                    DeviceType::Meter,
                    &m.model,
                    &m.serial,
                    m.phases,
                    Some(m.modbus_addr),
                    &m.description,
                    &m.location,
                    &m.sg_description,
                ),
                DeviceKind::Relay(r) => (
                    DeviceType::Relay,
                    &r.model,
                    &r.serial,
                    default_phases(),
                    r.modbus_addr,
                    &r.description,
                    &r.location,
                    &r.sg_description,
                ),
            };
        Self {
            slot: device.slot,
            kind,
            model: model.clone(),
            serial: serial.clone(),
            phases,
            modbus_addr: addr,
            description: description.clone(),
            location: location.clone(),
            sg_description: sg_description.clone(),
            push_interval_s: device.push_interval_s,
            push: device.push,
            source: Source::Sim,
        }
    }
}

/// The core's example gateway, every device simulated. The example's meter serials are those of
/// the SG fixtures; other gateways (a fleet) get serials of their own, derived from the gateway
/// serial and the slot, so that every meter is told apart.
fn example_devices(serial: &str) -> Vec<Device> {
    const FIXTURE_GATEWAY: &str = "SG000017";
    let digits: String = serial.chars().filter(char::is_ascii_digit).collect();
    GatewayConfig::example(serial)
        .devices
        .iter()
        .enumerate()
        .map(|(n, device)| {
            let mut device = Device::from_core(device);
            if serial != FIXTURE_GATEWAY && !device.serial.is_empty() {
                device.serial = format!("{digits}{:02}", n + 1);
            }
            device
        })
        .collect()
}

/// The settings file with every setting, for `sg-gateway default-config`.
#[must_use]
pub fn default_config_text(serial: &str) -> String {
    let mut config = Config::for_serial(serial);
    config.devices = Some(example_devices(serial));
    let body = toml::to_string_pretty(&DefaultFile::from(&config)).unwrap_or_default();
    format!(
        "# sg-gateway settings: the SG's settings pages (two push links, devices) and where\n\
         # each device's readings come from. Every key is optional except `serial`.\n\
         #\n\
         # rest_user + rest_password (both, top level): the REST API asks for this login \
         (no default).\n\
         # link: tls = true (MQTTS) needs ca_file; client_cert + client_key for mutual TLS.\n\
         # device source: {{ type = \"sim\" }}, {{ type = \"modbus_tcp\", host = \"10.0.0.5\", \
         port = 502, unit = 12, timeout_ms = 1000 }},\n\
         # or {{ type = \"modbus_rtu\" }} (unit = modbus_addr on the [rs485] bus; optional unit \
         and timeout_ms).\n\
         # [rs485]: the serial port of the RS485 bus (Modbus RTU), used only by modbus_rtu \
         devices; parity is\n\
         # \"none\", \"even\" or \"odd\"; gap_ms is the idle time between frames (at least \
         3.5 characters).\n\n{body}"
    )
}

/// The file as `default-config` prints it: links spelled out rather than left to defaults.
#[derive(Serialize)]
struct DefaultFile<'a> {
    serial: &'a str,
    model: &'a str,
    sw_ver: &'a str,
    hw_ver: u32,
    first_push_delay_s: u32,
    receipts: bool,
    state_dir: PathBuf,
    rest_addr: &'a str,
    link1: Link,
    link2: Link,
    rs485: Rs485,
    devices: &'a [Device],
}

impl<'a> From<&'a Config> for DefaultFile<'a> {
    fn from(config: &'a Config) -> Self {
        let link = |enabled: bool| Link {
            enabled: Some(enabled),
            host: Some("127.0.0.1".into()),
            port: Some(1883),
            tls: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            username: Some(config.serial.clone()),
            password: Some(String::new()),
            root: Some(format!("sg/{}", config.serial)),
            publish: Some("pub".into()),
            subscribe: Some("sub".into()),
            qos: Some(1),
            queue_capacity: Some(1024),
            max_in_flight: Some(16),
            keep_alive_s: Some(30),
        };
        Self {
            serial: &config.serial,
            model: &config.model,
            sw_ver: &config.sw_ver,
            hw_ver: config.hw_ver,
            first_push_delay_s: config.first_push_delay_s,
            receipts: config.receipts,
            state_dir: PathBuf::from("sg-gateway-state").join(&config.serial),
            rest_addr: "127.0.0.1:8081",
            link1: link(true),
            link2: link(false),
            rs485: Rs485::at(PathBuf::from("/dev/ttyUSB0")),
            devices: config.devices.as_deref().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_takes_headend_defaults() {
        let config = Config::parse(r#"serial = "SG000017""#).unwrap();
        let resolved = config.resolve().unwrap();
        let [one, two] = &resolved.links;
        assert!(one.enabled && !two.enabled);
        assert_eq!((one.host.as_str(), one.port), ("127.0.0.1", 1883));
        assert_eq!(one.username, "SG000017");
        assert_eq!(one.core.layout.command_topic(), "sg/SG000017/sub");
        assert_eq!(one.core.layout.publish_base(), "sg/SG000017/pub");
        assert_eq!(one.core.qos, 1);
        assert_eq!(resolved.gateway.first_push_delay_s, 60);
        assert_eq!(resolved.gateway.devices.len(), 5, "the example gateway");
        assert!(resolved.sources.iter().all(|(_, s)| *s == Source::Sim));
        assert_eq!(
            resolved.state_dir,
            PathBuf::from("sg-gateway-state/SG000017")
        );
        assert_eq!(resolved.rest_addr, None);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
            serial = "SG000042"
            first_push_delay_s = 0
            receipts = true
            rest_addr = "127.0.0.1:8081"

            [link1]
            host = "broker.example"
            tls = true
            ca_file = "ca.pem"
            client_cert = "c.pem"
            client_key = "c.key"
            password = "pw"
            root = "site/a"
            publish = "up"
            subscribe = "down"

            [link2]
            enabled = true
            port = 1884

            [[devices]]
            slot = "ir_meter"
            type = "meter"
            model = "IE38MD"
            serial = "X1"
            modbus_addr = 33
            push_interval_s = 60

            [[devices]]
            slot = { rs485 = 2 }
            type = "meter"
            model = "WM3M4C"
            serial = "18230001"
            phases = 3
            modbus_addr = 12
            push = [true, true]
            source = { type = "modbus_tcp", host = "10.0.0.5" }

            [[devices]]
            slot = "ir_relay"
            type = "relay"
            model = "IR Bicom"
        "#;
        let resolved = Config::parse(text).unwrap().resolve().unwrap();
        let [one, two] = &resolved.links;
        assert_eq!(one.port, 8883, "TLS default port");
        let tls = one.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, PathBuf::from("ca.pem"));
        assert!(tls.client.is_some());
        assert_eq!(one.core.layout.command_topic(), "site/a/down");
        assert!(two.enabled);
        assert_eq!((two.port, two.password.as_str()), (1884, ""));
        assert!(resolved.gateway.receipts);
        assert_eq!(resolved.gateway.devices.len(), 3);
        assert_eq!(
            resolved.sources[1],
            (
                Slot::Rs485(2),
                Source::ModbusTcp {
                    host: "10.0.0.5".into(),
                    port: 502,
                    unit: None,
                    timeout_ms: 1000
                }
            )
        );
        assert!(!format!("{one:?}").contains("\"pw\""), "password redacted");
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(Config::parse(
            r#"serial = "SG1"
            colour = "blue""#
        )
        .is_err());
        let no_ca = Config::parse("serial = \"SG1\"\n[link1]\ntls = true").unwrap();
        assert!(no_ca.resolve().unwrap_err().to_string().contains("ca_file"));
        let bad_topic = Config::parse("serial = \"SG1\"\n[link1]\npublish = \"a/b\"").unwrap();
        assert!(bad_topic.resolve().is_err());
        let twice = r#"serial = "SG1"
            [[devices]]
            slot = { rs485 = 1 }
            type = "meter"
            model = "WM1"
            [[devices]]
            slot = { rs485 = 1 }
            type = "meter"
            model = "WM1"
        "#;
        assert!(Config::parse(twice).unwrap().resolve().is_err());
    }

    #[test]
    fn default_config_round_trips() {
        let text = default_config_text("SG000017");
        let parsed = Config::parse(&text).unwrap();
        let resolved = parsed.resolve().unwrap();
        let defaults = Config::for_serial("SG000017").resolve().unwrap();
        assert_eq!(resolved.gateway, defaults.gateway);
        assert_eq!(resolved.links, defaults.links);
        assert_eq!(resolved.sources, defaults.sources);
        assert_eq!(resolved.state_dir, defaults.state_dir);
        assert_eq!(parsed.rest_addr, Some("127.0.0.1:8081".parse().unwrap()));
    }

    #[test]
    fn rs485_bus_and_rtu_devices() {
        let text = r#"
            serial = "SG1"
            [rs485]
            path = "/dev/ttyUSB0"
            baud = 19200
            parity = "even"
            stop_bits = 2

            [[devices]]
            slot = { rs485 = 1 }
            type = "meter"
            model = "WM3M4C"
            modbus_addr = 12
            source = { type = "modbus_rtu" }

            [[devices]]
            slot = { rs485 = 2 }
            type = "relay"
            model = "Bicom"
            source = { type = "modbus_rtu", unit = 40, timeout_ms = 300 }
        "#;
        let resolved = Config::parse(text).unwrap().resolve().unwrap();
        let bus = resolved.rs485.unwrap();
        assert_eq!(
            (bus.baud, bus.parity, bus.stop_bits),
            (19_200, Parity::Even, 2)
        );
        assert_eq!((bus.data_bits, bus.timeout_ms, bus.gap_ms), (8, 500, 5));
        assert_eq!(
            resolved.sources[1].1,
            Source::ModbusRtu {
                unit: Some(40),
                timeout_ms: Some(300)
            }
        );

        // A device on the bus needs the bus, and a unit id that can answer.
        let mut no_bus = Config::parse(text).unwrap();
        no_bus.rs485 = None;
        let error = no_bus.resolve().unwrap_err();
        assert!(error.to_string().contains("needs the RS485 bus"), "{error}");
        let no_unit = text.replace("unit = 40, ", "");
        let error = Config::parse(&no_unit).unwrap().resolve().unwrap_err();
        assert!(error.to_string().contains("unit id 0"), "{error}");
        let bad_stop = text.replace("stop_bits = 2", "stop_bits = 3");
        assert!(Config::parse(&bad_stop).unwrap().resolve().is_err());
        let bad_bits = text.replace("stop_bits = 2", "data_bits = 7");
        assert!(Config::parse(&bad_bits).unwrap().resolve().is_err());
        assert!(Config::parse(&text.replace("\"even\"", "\"mark\"")).is_err());
    }

    #[test]
    fn rs485_flag_puts_the_example_rs485_devices_on_the_bus() {
        let mut config = Config::for_serial("SG000017");
        config.use_rs485(Rs485::at("/dev/ttyUSB1".into()));
        let resolved = config.resolve().unwrap();
        for (slot, source) in &resolved.sources {
            let on_bus = matches!(source, Source::ModbusRtu { .. });
            assert_eq!(on_bus, matches!(slot, Slot::Rs485(_)), "{slot:?}");
        }
        assert_eq!(resolved.rs485.unwrap().path, PathBuf::from("/dev/ttyUSB1"));
        // Without a device on it, the bus is not used.
        let mut sim = Config::for_serial("SG000017");
        sim.rs485 = Some(Rs485::at("/dev/ttyUSB1".into()));
        assert!(sim.resolve().unwrap().rs485.is_none());
    }

    #[test]
    fn push_interval_applies_to_every_device() {
        let mut config = Config::for_serial("SG1");
        config.set_push_interval(1);
        let resolved = config.resolve().unwrap();
        assert!(resolved
            .gateway
            .devices
            .iter()
            .all(|d| d.push_interval_s == 1));
    }

    #[test]
    fn the_rest_login_needs_both_parts_and_no_default() {
        let login = |text: &str| Config::parse(text).unwrap().resolve().map(|r| r.rest_login);
        assert!(login(r#"serial = "SG1""#).unwrap().is_none());
        let set = login("serial = \"SG1\"\nrest_user = \"admin\"\nrest_password = \"pw\"");
        assert_eq!(set.unwrap(), Some(Login::new("admin", "pw").unwrap()));
        let half = login("serial = \"SG1\"\nrest_user = \"admin\"");
        assert!(half.unwrap_err().to_string().contains("go together"));
        let empty = login("serial = \"SG1\"\nrest_user = \"admin\"\nrest_password = \"\"");
        assert!(empty.unwrap_err().to_string().contains("empty"));
    }
}
