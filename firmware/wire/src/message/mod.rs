//! The JSON documents the SG publishes, as serde models, and their normalisation into typed
//! SI values.
//!
//! The models are lenient where devices are sloppy (numbers as strings, `"N/A"`, unknown
//! fields are ignored) and serialise back with the SG's exact field spelling, so the
//! firmware can publish them. Values stay strings here; [`normalize_measurements`] and
//! [`normalize_counters`] turn them into numbers and report every field they had to drop.

mod counters;
mod header;
mod issue;
pub(crate) mod lenient;
mod measurements;

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

pub use counters::{normalize_counters, Counter, EnergyUnit, MAX_COUNTER_INDEX};
pub use header::{
    validate_serial, CleanHeader, HeaderError, Labels, TextIssue, TextIssueKind, MAX_MODEL_CHARS,
    MAX_SERIAL_LEN, MAX_TEXT_CHARS, SERIAL_RULE,
};
pub use issue::{FieldError, FieldIssue};
pub use measurements::{normalize_measurements, Measurements, MEASUREMENT_COLUMNS};

/// The `header` object of measurements and counters documents. Every field is optional
/// because the SG omits different ones depending on port and firmware version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `get_measurements` or `get_energy_counters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// `DD.MM.YYYY hh:mm:ss`, see [`crate::time::parse_local_time`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// `"Left IR"` or `"RS485"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// A number, a numeric string, or `"N/A"` (→ `None`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub modbus_addr: Option<u16>,
    /// The RS485 settings slot (`"RS485 index"`).
    #[serde(
        rename = "RS485 index",
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub rs485_index: Option<u8>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub number: Option<u8>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub phases: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        rename = "SG description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sg_description: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub resetable_counters: Option<u8>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub non_resetable_counters: Option<u8>,
    /// End-to-end receipt sequence added by Headend's own firmware (real SGs omit it); the
    /// head-end confirms it with [`Command::Ack`](crate::command::Command::Ack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A measurements document (`P/measurements/<port>`, REST `get_measurements`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementsDoc {
    pub header: Header,
    /// Raw values by SG key (`"U1": "229.5 V"`, `"tariff": 1`). A key given twice with
    /// different values refuses the document.
    #[serde(deserialize_with = "lenient::unique_map")]
    pub measurements: BTreeMap<String, Value>,
}

/// An energy counters document (`P/counters/<port>`, REST `get_counters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersDoc {
    pub header: Header,
    /// Raw register values by name (`"counter1nr": "184233.125 kWh"`). A register given
    /// twice with different values refuses the document.
    #[serde(deserialize_with = "lenient::unique_map")]
    pub counters: BTreeMap<String, Value>,
    /// `phaseN`/`tariffN` (and `…nr`) settings, strings (unique keys, as `counters`).
    #[serde(
        default,
        deserialize_with = "lenient::unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub settings: BTreeMap<String, Value>,
}

/// A relay state document (`P/bicom/<port>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BicomDoc {
    pub bicom: BicomBody,
}

/// The body of a [`BicomDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BicomBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(
        rename = "RS485 index",
        default,
        deserialize_with = "lenient::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub rs485_index: Option<u8>,
    /// `None` is written as `"N/A"`, as the SG does for the IR relay.
    #[serde(
        default,
        deserialize_with = "lenient::opt_uint",
        serialize_with = "lenient::addr_or_na"
    )]
    pub modbus_addr: Option<u16>,
    /// `"Right IR"` or `"RS485"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Empty for the IR relay, which has no serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(
        rename = "SG description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sg_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_time: Option<String>,
    /// 1 on, 0 off, -1 unknown; see [`parse_bicom_state`].
    pub state: i8,
    /// As [`Header::seq`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A relay's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayState {
    On,
    Off,
    /// The gateway could not read the relay.
    Unknown,
}

impl RelayState {
    /// The wire value: 1, 0 or -1.
    #[must_use]
    pub fn to_wire(self) -> i8 {
        match self {
            Self::On => 1,
            Self::Off => 0,
            Self::Unknown => -1,
        }
    }
}

/// Reads a bicom `state`: 1 on, 0 off, anything else (the SG sends -1) unknown — a value
/// the gateway did not mean as on or off must not be shown as either.
#[must_use]
pub fn parse_bicom_state(state: i8) -> RelayState {
    match state {
        1 => RelayState::On,
        0 => RelayState::Off,
        _ => RelayState::Unknown,
    }
}

impl BicomBody {
    /// The relay's state.
    #[must_use]
    pub fn relay_state(&self) -> RelayState {
        parse_bicom_state(self.state)
    }
}

/// The hello a gateway publishes on `P/status` on every connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `"hello world"`.
    pub hello: String,
    /// The gateway's serial, e.g. `SG000017`; check it with [`validate_serial`].
    #[serde(rename = "serial number")]
    pub serial_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_ver: Option<TextOrNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_ver: Option<TextOrNumber>,
}

/// A version field the SG sends as a string (`"0.51"`) or a number (`2`); kept as sent so
/// that it serialises back identically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextOrNumber {
    Text(String),
    Number(serde_json::Number),
}

impl fmt::Display for TextOrNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Number(number) => fmt::Display::fmt(number, f),
        }
    }
}

impl Serialize for TextOrNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Number(number) => number.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for TextOrNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Number(number) => Ok(Self::Number(number)),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a string or a number",
            )),
        }
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// What arrives on `P/status`: a [`Hello`] (recognised by its `hello` field), or a reply to
/// a `status` / `get_bicoms` command, whose shape varies by firmware and is kept as raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusDoc {
    Hello(Hello),
    Other(Value),
}

impl Serialize for StatusDoc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Hello(hello) => hello.serialize(serializer),
            Self::Other(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StatusDoc {
    /// A document with a `hello` field must be a complete hello: a hello that does not
    /// identify the gateway is an error, not an "other" status.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.get("hello").is_some() {
            Hello::deserialize(value)
                .map(Self::Hello)
                .map_err(de::Error::custom)
        } else {
            Ok(Self::Other(value))
        }
    }
}
