//! Commands on the gateway's subscribe topic `<root>/<sub>`, always wrapped as
//! `{"data":{...}}`.
//!
//! The SG acknowledges nothing; a command's effect is read back (see
//! [`Command::reply_topic`]). [`Command::Ack`] is Headend's own extension, which real SGs
//! ignore like any unknown command.

use alloc::format;
use alloc::string::String;
use core::fmt;

use serde::Deserialize;

use crate::json::{self, JsonError};
use crate::topic::{Port, SgTopic, MAX_RS485_SLOT};
use crate::MAX_PAYLOAD_BYTES;

/// Highest Modbus address (0 means the IR relay).
pub const MAX_MODBUS_ADDR: u8 = 247;

/// Which relay a bicom command addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayTarget {
    /// `index`: 0 the IR relay, `n` RS485 settings slot `n`.
    Index(u8),
    /// `addr`: the relay's Modbus address, 0 the IR relay.
    Addr(u8),
}

/// What to do with a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayAction {
    On,
    Off,
    /// Ask for the state; the gateway answers on `P/bicom/<port>`. There is no toggle on
    /// the wire: a toggle is `State`, then `On` or `Off`.
    State,
}

impl RelayAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::State => "state",
        }
    }
}

/// A command to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Switch or query a relay.
    Bicom {
        target: RelayTarget,
        action: RelayAction,
    },
    /// Publish measurements of `index` (0 IR, `n` RS485 slot `n`) now.
    Measurements {
        index: u8,
    },
    /// Publish counters of `index` now.
    Counters {
        index: u8,
    },
    /// Publish the status on `P/status`.
    Status,
    /// Publish all relay states on `P/status`.
    GetBicoms,
    Reboot,
    /// Headend extension: everything up to and including `seq` is committed, the firmware
    /// may drop it from its outbox.
    Ack {
        seq: u64,
    },
}

/// Why a command payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge { len: usize },
    /// Not JSON, or not `{"data":{"cmd":…}}`.
    Json(JsonError),
    /// A `cmd` this crate does not know (quoted, bounded).
    Unknown(String),
    /// A field the command needs is missing.
    MissingField {
        cmd: &'static str,
        field: &'static str,
    },
    /// A field has a value the command does not accept.
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => write!(
                f,
                "command of {len} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
            ),
            Self::Json(error) => write!(f, "expected {{\"data\":{{\"cmd\":…}}}}: {error}"),
            Self::Unknown(cmd) => write!(f, "unknown command `{cmd}`"),
            Self::MissingField { cmd, field } => {
                write!(f, "command `{cmd}` needs the field `{field}`")
            }
            Self::InvalidField { field, reason } => write!(f, "field `{field}`: {reason}"),
        }
    }
}

impl core::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Json(error) => Some(error),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: RawCommand,
}

#[derive(Deserialize)]
struct RawCommand {
    cmd: String,
    #[serde(default, deserialize_with = "crate::message::lenient::opt_uint")]
    index: Option<u64>,
    #[serde(default, deserialize_with = "crate::message::lenient::opt_uint")]
    addr: Option<u64>,
    #[serde(default)]
    val: Option<String>,
    #[serde(default, deserialize_with = "crate::message::lenient::opt_uint")]
    seq: Option<u64>,
}

impl Command {
    /// The exact wire text, e.g. `{"data":{"cmd":"bicom","index":2,"val":"off"}}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        let body = match self {
            Self::Bicom { target, action } => {
                let (key, value) = match target {
                    RelayTarget::Index(index) => ("index", index),
                    RelayTarget::Addr(addr) => ("addr", addr),
                };
                format!(
                    r#""cmd":"bicom","{key}":{value},"val":"{}""#,
                    action.as_str()
                )
            }
            Self::Measurements { index } => format!(r#""cmd":"measurements","index":{index}"#),
            Self::Counters { index } => format!(r#""cmd":"counters","index":{index}"#),
            Self::Status => String::from(r#""cmd":"status""#),
            Self::GetBicoms => String::from(r#""cmd":"get_bicoms""#),
            Self::Reboot => String::from(r#""cmd":"reboot""#),
            Self::Ack { seq } => format!(r#""cmd":"ack","seq":{seq}"#),
        };
        format!(r#"{{"data":{{{body}}}}}"#)
    }

    /// Reads a command payload. `cmd` and `val` are matched case-insensitively; numbers may
    /// be JSON numbers or numeric strings; unknown fields are ignored.
    ///
    /// # Errors
    /// [`CommandError::Unknown`] for an unknown `cmd`, [`CommandError::Json`] for anything
    /// that is not `{"data":{"cmd":…}}`, and missing or out-of-range fields.
    pub fn parse(payload: &[u8]) -> Result<Self, CommandError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(CommandError::TooLarge { len: payload.len() });
        }
        let raw = json::from_slice::<Envelope>(payload)
            .map_err(CommandError::Json)?
            .data;
        let cmd = raw.cmd.to_ascii_lowercase();
        match cmd.as_str() {
            "bicom" => {
                let target = match (raw.index, raw.addr) {
                    (Some(index), None) => RelayTarget::Index(port_index(index)?),
                    (None, Some(addr)) => RelayTarget::Addr(modbus_addr(addr)?),
                    (None, None) => {
                        return Err(CommandError::MissingField {
                            cmd: "bicom",
                            field: "index",
                        })
                    }
                    (Some(_), Some(_)) => {
                        return Err(CommandError::InvalidField {
                            field: "addr",
                            reason: "give either index or addr, not both",
                        })
                    }
                };
                let val = raw.val.ok_or(CommandError::MissingField {
                    cmd: "bicom",
                    field: "val",
                })?;
                let action = match val.to_ascii_lowercase().as_str() {
                    "on" => RelayAction::On,
                    "off" => RelayAction::Off,
                    "state" => RelayAction::State,
                    _ => {
                        return Err(CommandError::InvalidField {
                            field: "val",
                            reason: "expected \"on\", \"off\" or \"state\"",
                        })
                    }
                };
                Ok(Self::Bicom { target, action })
            }
            "measurements" | "counters" => {
                let index = raw.index.ok_or(CommandError::MissingField {
                    cmd: if cmd == "counters" {
                        "counters"
                    } else {
                        "measurements"
                    },
                    field: "index",
                })?;
                let index = port_index(index)?;
                Ok(if cmd == "counters" {
                    Self::Counters { index }
                } else {
                    Self::Measurements { index }
                })
            }
            "status" => Ok(Self::Status),
            "get_bicoms" => Ok(Self::GetBicoms),
            "reboot" => Ok(Self::Reboot),
            "ack" => raw
                .seq
                .map(|seq| Self::Ack { seq })
                .ok_or(CommandError::MissingField {
                    cmd: "ack",
                    field: "seq",
                }),
            _ => Err(CommandError::Unknown(crate::value::excerpt(&raw.cmd))),
        }
    }

    /// Where the gateway answers: `P/bicom/<port>`, `P/measurements/<port>`,
    /// `P/counters/<port>` or `P/status`. `None` for reboot and ack (no answer), and for a
    /// relay addressed by a non-zero Modbus address (its slot is not known from the command).
    #[must_use]
    pub fn reply_topic(&self) -> Option<SgTopic> {
        match *self {
            Self::Bicom { target, .. } => match target {
                RelayTarget::Index(index) | RelayTarget::Addr(index @ 0) => {
                    Port::from_index(index).ok().map(SgTopic::Bicom)
                }
                RelayTarget::Addr(_) => None,
            },
            Self::Measurements { index } => Port::from_index(index).ok().map(SgTopic::Measurements),
            Self::Counters { index } => Port::from_index(index).ok().map(SgTopic::Counters),
            Self::Status | Self::GetBicoms => Some(SgTopic::Status),
            Self::Reboot | Self::Ack { .. } => None,
        }
    }
}

fn port_index(index: u64) -> Result<u8, CommandError> {
    u8::try_from(index)
        .ok()
        .filter(|&i| i <= MAX_RS485_SLOT)
        .ok_or(CommandError::InvalidField {
            field: "index",
            reason: "expected 0 (IR) or an RS485 slot 1..=16",
        })
}

fn modbus_addr(addr: u64) -> Result<u8, CommandError> {
    u8::try_from(addr)
        .ok()
        .filter(|&a| a <= MAX_MODBUS_ADDR)
        .ok_or(CommandError::InvalidField {
            field: "addr",
            reason: "expected a Modbus address 0..=247",
        })
}
