//! Per-field problems found while normalising a document.

use alloc::string::String;
use core::fmt;

use serde_json::Value;

use crate::text::truncate_chars;
use crate::value::{Unit, ValueError};

/// Longest field name and raw value quoted in a [`FieldIssue`], in characters. The whole
/// document is kept verbatim elsewhere; the issue only has to point at the culprit.
const QUOTE_CHARS: usize = 128;

/// Why one field of a document was not used.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FieldError {
    /// The value string could not be read.
    Value(ValueError),
    /// The JSON value has a type the field cannot hold (e.g. an array).
    UnexpectedType { found: &'static str },
    /// The unit does not fit the quantity (e.g. a voltage in `A`).
    WrongUnit { expected: Unit, found: Unit },
    /// A counter whose unit is not an energy unit (or missing).
    NotAnEnergyUnit(Unit),
    /// Readable, but outside what the quantity can physically be.
    Implausible { value: f64, range: &'static str },
    /// A counter below zero (registers only count up).
    NegativeCounter,
    /// A counter beyond what `i64` milli-units hold.
    CounterOverflow,
    /// A counter with digits below the stored milli-unit (`12.5001 Wh`): it cannot be stored
    /// exactly, and energy is never rounded on the way in.
    CounterTooPrecise,
    /// A tariff that is not a small integer.
    InvalidTariff,
    /// A counter name other than `counter<N>` / `counter<N>nr` with N in 1..=32.
    InvalidCounterName,
    /// A setting (`phaseN`, `tariffN`) that cannot be read.
    InvalidSetting(&'static str),
    /// A key this crate does not know. Not fatal: newer firmware may add fields.
    UnknownField,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(error) => fmt::Display::fmt(error, f),
            Self::UnexpectedType { found } => {
                write!(f, "expected a value string, found {found}")
            }
            Self::WrongUnit { expected, found } => write!(
                f,
                "unit `{}` does not fit this quantity (expected `{}`)",
                found.symbol(),
                expected.symbol()
            ),
            Self::NotAnEnergyUnit(Unit::None) => {
                f.write_str("counter value has no unit (expected Wh, varh or VAh)")
            }
            Self::NotAnEnergyUnit(unit) => write!(
                f,
                "unit `{}` is not an energy unit (expected Wh, varh or VAh)",
                unit.symbol()
            ),
            Self::Implausible { value, range } => {
                write!(f, "value {value} is implausible (expected {range})")
            }
            Self::NegativeCounter => f.write_str("energy counter is negative"),
            Self::CounterOverflow => f.write_str("energy counter is too large"),
            Self::CounterTooPrecise => f.write_str(
                "energy counter has digits below the stored resolution of 0.001 Wh \
                 (varh, VAh): not representable exactly, refused rather than rounded",
            ),
            Self::InvalidTariff => f.write_str("tariff is not an integer in -32768..=32767"),
            Self::InvalidCounterName => {
                f.write_str("not a counter name (counter<N> or counter<N>nr, N in 1..=32)")
            }
            Self::InvalidSetting(why) => write!(f, "invalid setting: {why}"),
            Self::UnknownField => f.write_str("unknown field"),
        }
    }
}

impl core::error::Error for FieldError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Value(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ValueError> for FieldError {
    fn from(error: ValueError) -> Self {
        Self::Value(error)
    }
}

/// One field that was dropped (or, for [`FieldError::UnknownField`], ignored), with the
/// raw text for the ingest log.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldIssue {
    /// The key, e.g. `"U1"`, `"counter13"`, `"settings.tariff2"` (bounded length).
    pub field: String,
    /// The raw value: the string itself, or the JSON text of another value (bounded length).
    pub raw: String,
    pub error: FieldError,
}

impl FieldIssue {
    pub(crate) fn new(field: &str, raw: &Value, error: FieldError) -> Self {
        let raw = match raw {
            Value::String(text) => truncate_chars(text, QUOTE_CHARS),
            other => truncate_chars(&alloc::format!("{other}"), QUOTE_CHARS),
        };
        Self {
            field: truncate_chars(field, QUOTE_CHARS),
            raw,
            error,
        }
    }
}

impl fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}: {}", self.field, self.raw, self.error)
    }
}

/// A JSON type's name for error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
