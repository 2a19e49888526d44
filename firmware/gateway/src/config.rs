//! What the SG's settings pages hold: identity, two push links, and the devices on the IR
//! port and the RS485 slots. Serde models, so a host runner can load them from a file.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use sg_wire::message::{validate_serial, HeaderError, TextOrNumber};
use sg_wire::topic::{Port, TopicError, TopicLayout, MAX_RS485_SLOT};

/// Where a device sits. The IR port has two positions: the meter on the left, the relay
/// ("IR Bicom") on the right; both publish under `…/ir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    IrMeter,
    IrRelay,
    /// An RS485 settings slot, `1..=16` (not the Modbus address).
    Rs485(u8),
}

impl Slot {
    /// The topic port: `ir` or `rs485/<n>`.
    ///
    /// # Errors
    /// For an RS485 slot outside `1..=16` (a validated [`GatewayConfig`] has none).
    pub fn port(self) -> Result<Port, TopicError> {
        match self {
            Self::IrMeter | Self::IrRelay => Ok(Port::Ir),
            Self::Rs485(slot) => Port::rs485(slot),
        }
    }

    /// The command `index`: 0 for IR, `n` for RS485 slot `n`.
    #[must_use]
    pub fn index(self) -> u8 {
        match self {
            Self::IrMeter | Self::IrRelay => 0,
            Self::Rs485(slot) => slot,
        }
    }
}

impl fmt::Display for Slot {
    /// The way the SG names it in error lines: `IR device`, `RS485 device:2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IrMeter => f.write_str("Left IR device"),
            Self::IrRelay => f.write_str("Right IR device"),
            Self::Rs485(slot) => write!(f, "RS485 device:{slot}"),
        }
    }
}

/// One of the two push/publish links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkConfig {
    pub enabled: bool,
    pub layout: TopicLayout,
    /// QoS of everything published on this link. Store-and-forward relies on PUBACKs, so 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Store-and-forward capacity in messages; above it the oldest are dropped.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Messages published but not yet acknowledged by the broker, at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl LinkConfig {
    /// An enabled link with Headend's default layout (`sg/<serial>`, `pub`, `sub`).
    ///
    /// # Errors
    /// For a serial that makes an invalid root topic.
    pub fn headend(serial: &str) -> Result<Self, TopicError> {
        Ok(Self {
            enabled: true,
            layout: TopicLayout::default_for(serial)?,
            qos: default_qos(),
            queue_capacity: default_queue_capacity(),
            max_in_flight: default_max_in_flight(),
        })
    }
}

fn default_qos() -> u8 {
    1
}

fn default_queue_capacity() -> usize {
    1024
}

fn default_max_in_flight() -> usize {
    16
}

/// Labels of a meter, as they appear in its document headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterInfo {
    pub model: String,
    pub serial: String,
    /// 1 or 3.
    pub phases: u8,
    pub modbus_addr: u8,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub sg_description: String,
}

/// Labels of a relay (Bicom), as they appear in its state documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    pub model: String,
    /// Empty for the IR relay, which has none.
    #[serde(default)]
    pub serial: String,
    /// `None` for the IR relay (published as `"N/A"`).
    #[serde(default)]
    pub modbus_addr: Option<u8>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub sg_description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Meter(MeterInfo),
    Relay(RelayInfo),
}

/// A device and its push settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    pub slot: Slot,
    pub kind: DeviceKind,
    /// Pushes happen at wall-clock multiples of this (900 → :00, :15, :30, :45).
    pub push_interval_s: u32,
    /// Push on link 1, link 2.
    pub push: [bool; 2],
}

impl DeviceConfig {
    #[must_use]
    pub fn meter(&self) -> Option<&MeterInfo> {
        match &self.kind {
            DeviceKind::Meter(meter) => Some(meter),
            DeviceKind::Relay(_) => None,
        }
    }

    #[must_use]
    pub fn relay(&self) -> Option<&RelayInfo> {
        match &self.kind {
            DeviceKind::Relay(relay) => Some(relay),
            DeviceKind::Meter(_) => None,
        }
    }

    /// The Modbus address; 0 for the IR relay (as `bicom` commands address it).
    #[must_use]
    pub fn modbus_addr(&self) -> u8 {
        match &self.kind {
            DeviceKind::Meter(meter) => meter.modbus_addr,
            DeviceKind::Relay(relay) => relay.modbus_addr.unwrap_or(0),
        }
    }
}

/// The whole gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// E.g. `SG000017`.
    pub serial: String,
    /// `SG-W1`, `SG-E1`.
    pub model: String,
    pub sw_ver: TextOrNumber,
    pub hw_ver: TextOrNumber,
    pub links: [LinkConfig; 2],
    pub devices: Vec<DeviceConfig>,
    /// Nothing is pushed this long after start (the real SG waits 60 s).
    #[serde(default = "default_first_push_delay")]
    pub first_push_delay_s: u32,
    /// Headend's receipt extension: readings carry `seq` and stay queued until `ack`.
    #[serde(default)]
    pub receipts: bool,
}

fn default_first_push_delay() -> u32 {
    60
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    Serial(HeaderError),
    /// Two devices in one slot.
    DuplicateSlot(Slot),
    /// An RS485 slot outside `1..=16`.
    NoSuchSlot(u8),
    /// A relay in the IR meter position or a meter in the IR relay position.
    WrongKind(Slot),
    /// A meter with other than 1 or 3 phases.
    Phases {
        slot: Slot,
        phases: u8,
    },
    /// A push interval of 0 s.
    ZeroInterval(Slot),
    /// Two relays with one Modbus address: `bicom` by address would be ambiguous.
    DuplicateRelayAddr(u8),
    /// A link with a queue capacity or in-flight window of 0, or a QoS above 2.
    Link {
        link: u8,
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serial(error) => write!(f, "gateway serial: {error}"),
            Self::DuplicateSlot(slot) => write!(f, "two devices in {slot:?}"),
            Self::NoSuchSlot(slot) => {
                write!(f, "RS485 slot {slot} does not exist (1..={MAX_RS485_SLOT})")
            }
            Self::WrongKind(slot) => write!(f, "{slot:?} cannot hold this kind of device"),
            Self::Phases { slot, phases } => {
                write!(f, "meter in {slot:?} has {phases} phases (1 or 3)")
            }
            Self::ZeroInterval(slot) => write!(f, "device in {slot:?} has a push interval of 0"),
            Self::DuplicateRelayAddr(addr) => write!(f, "two relays with Modbus address {addr}"),
            Self::Link { link, reason } => write!(f, "link {link}: {reason}"),
        }
    }
}

impl core::error::Error for ConfigError {}

impl GatewayConfig {
    /// Checks what the gateway relies on.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_serial(&self.serial).map_err(ConfigError::Serial)?;
        for (number, link) in (1..).zip(&self.links) {
            let reason = if link.queue_capacity == 0 {
                Some("queue capacity is 0")
            } else if link.max_in_flight == 0 {
                Some("in-flight window is 0")
            } else if link.qos > 2 {
                Some("QoS above 2")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ConfigError::Link {
                    link: number,
                    reason,
                });
            }
        }
        let mut slots = Vec::new();
        let mut relay_addrs = Vec::new();
        for device in &self.devices {
            let slot = device.slot;
            if slots.contains(&slot) {
                return Err(ConfigError::DuplicateSlot(slot));
            }
            slots.push(slot);
            if let Slot::Rs485(n) = slot {
                if !(1..=MAX_RS485_SLOT).contains(&n) {
                    return Err(ConfigError::NoSuchSlot(n));
                }
            }
            if device.push_interval_s == 0 {
                return Err(ConfigError::ZeroInterval(slot));
            }
            match (&device.kind, slot) {
                (DeviceKind::Meter(_), Slot::IrRelay) | (DeviceKind::Relay(_), Slot::IrMeter) => {
                    return Err(ConfigError::WrongKind(slot));
                }
                (DeviceKind::Meter(meter), _) if !matches!(meter.phases, 1 | 3) => {
                    return Err(ConfigError::Phases {
                        slot,
                        phases: meter.phases,
                    });
                }
                (DeviceKind::Relay(_), _) => {
                    let addr = device.modbus_addr();
                    if relay_addrs.contains(&addr) {
                        return Err(ConfigError::DuplicateRelayAddr(addr));
                    }
                    relay_addrs.push(addr);
                }
                (DeviceKind::Meter(_), _) => {}
            }
        }
        Ok(())
    }

    /// The device in `slot`.
    #[must_use]
    pub fn device(&self, slot: Slot) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.slot == slot)
    }

    /// A demonstration gateway shaped like the fixtures in `tests/fixtures/sg-mqtt`: a
    /// 3-phase IR meter and the IR relay, a 1-phase meter in RS485 slot 1 (Modbus 11), a
    /// relay in slot 2 (Modbus 40, as in `commands.txt`), a 3-phase meter in slot 3
    /// (Modbus 12); 900 s pushes on link 1 (Headend's default topics), link 2 disabled.
    ///
    /// # Panics
    /// For a serial that is not a valid topic part (e.g. holding `/` or `#`).
    #[must_use]
    pub fn example(serial: &str) -> Self {
        let link = LinkConfig::headend(serial).expect("a serial usable in a topic");
        let second = LinkConfig {
            enabled: false,
            ..link.clone()
        };
        let meter =
            |slot, model: &str, serial: &str, phases, addr, description: &str| DeviceConfig {
                slot,
                kind: DeviceKind::Meter(MeterInfo {
                    model: model.into(),
                    serial: serial.into(),
                    phases,
                    modbus_addr: addr,
                    description: description.into(),
                    location: "Basement".into(),
                    sg_description: description.into(),
                }),
                push_interval_s: 900,
                push: [true, true],
            };
        let relay = |slot, model: &str, serial: &str, addr, description: &str| DeviceConfig {
            slot,
            kind: DeviceKind::Relay(RelayInfo {
                model: model.into(),
                serial: serial.into(),
                modbus_addr: addr,
                description: description.into(),
                location: "Hall".into(),
                sg_description: description.into(),
            }),
            push_interval_s: 900,
            push: [true, true],
        };
        Self {
            serial: serial.into(),
            model: "SG-W1".into(),
            sw_ver: TextOrNumber::Text("0.51".into()),
            hw_ver: TextOrNumber::Number(2.into()),
            links: [link, second],
            devices: vec![
                meter(Slot::IrMeter, "IE38MD", "X0000124", 3, 33, "Main incomer"),
                relay(Slot::IrRelay, "IR Bicom", "", None, "Water heater"),
                meter(Slot::Rs485(1), "WM1-6", "21450077", 1, 11, "Heat pump"),
                relay(
                    Slot::Rs485(2),
                    "Bicom",
                    "19870012",
                    Some(40),
                    "Lighting group 2",
                ),
                meter(Slot::Rs485(3), "WM3M4C", "18230001", 3, 12, "Chiller"),
            ],
            first_push_delay_s: default_first_push_delay(),
            receipts: false,
        }
    }
}
