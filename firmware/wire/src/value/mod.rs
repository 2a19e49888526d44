//! SG value strings: `"220.5 V"`, `"230.1V"`, `"2.815 k W"`, `"12.500  Wh"`, `"50.01 "`,
//! `"0.9874 Ind"`, `"N/A"`.
//!
//! Everything is parsed exactly into a [`Decimal`] first; an SI prefix is applied to the
//! value, so a [`Quantity`] is always in base SI units (`"2.815 kW"` is 2815 W).

mod decimal;
mod format;
mod power_factor;

use alloc::string::String;
use core::fmt;

pub use decimal::Decimal;
pub use format::{format_counter, format_power_factor, format_quantity};
pub use power_factor::{parse_power_factor, PowerFactor, PowerFactorKind};

/// Largest magnitude, in base SI units, that any SG value may have. Nothing a gateway
/// measures comes near it (1 PW, 1 PWh); anything larger is a glitch or an attack, and the
/// bound keeps milli-unit counters well inside `i64`.
pub const MAX_MAGNITUDE: f64 = 1e15;

/// Why a value string could not be read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ValueError {
    /// Nothing but whitespace.
    Empty,
    /// The gateway's explicit "not available" (`"N/A"`): treat it as an absent value, not
    /// as a fault.
    NotAvailable,
    /// The text does not start with a number (e.g. `" -- "`).
    NoNumber,
    /// `NaN` or infinity.
    NotFinite,
    /// A magnitude above [`MAX_MAGNITUDE`] base units (e.g. `"1e308 W"`).
    Implausible,
    /// More significant digits than an exact 128-bit mantissa holds.
    TooManyDigits,
    /// The text after the number is not a known unit (e.g. `"12 parsec"`).
    UnknownUnit(String),
    /// An SI prefix with no unit after it (e.g. `"0.00 k"`, an unconfigured counter).
    PrefixWithoutUnit(char),
    /// Text after a number where only a bare number is allowed.
    TrailingText(String),
    /// A power factor outside `0..=1`.
    PowerFactorOutOfRange(f64),
    /// A power factor suffix other than `Ind` or `Cap`.
    UnknownPowerFactorKind(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("value is empty"),
            Self::NotAvailable => f.write_str("value is not available (N/A)"),
            Self::NoNumber => f.write_str("value does not start with a number"),
            Self::NotFinite => f.write_str("value is not a finite number"),
            Self::Implausible => write!(
                f,
                "value is implausibly large (magnitude above {MAX_MAGNITUDE:e} base units)"
            ),
            Self::TooManyDigits => f.write_str("number has too many significant digits"),
            Self::UnknownUnit(unit) => write!(f, "unknown unit `{unit}`"),
            Self::PrefixWithoutUnit(prefix) => {
                write!(f, "SI prefix `{prefix}` is not followed by a unit")
            }
            Self::TrailingText(text) => write!(f, "unexpected text `{text}` after the number"),
            Self::PowerFactorOutOfRange(value) => {
                write!(f, "power factor {value} is outside 0..=1")
            }
            Self::UnknownPowerFactorKind(kind) => {
                write!(
                    f,
                    "unknown power factor kind `{kind}` (expected Ind or Cap)"
                )
            }
        }
    }
}

impl core::error::Error for ValueError {}

/// The unit of an SG value, always without prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// No unit given (`"50.01 "`); the quantity is implied by the field name.
    None,
    Volt,
    Ampere,
    Watt,
    Var,
    VoltAmpere,
    Hertz,
    WattHour,
    VarHour,
    VoltAmpereHour,
    Percent,
    Celsius,
    Degree,
}

impl Unit {
    /// The symbol as the SG writes it (`""` for [`Unit::None`]).
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Volt => "V",
            Self::Ampere => "A",
            Self::Watt => "W",
            Self::Var => "var",
            Self::VoltAmpere => "VA",
            Self::Hertz => "Hz",
            Self::WattHour => "Wh",
            Self::VarHour => "varh",
            Self::VoltAmpereHour => "VAh",
            Self::Percent => "%",
            Self::Celsius => "°C",
            Self::Degree => "°",
        }
    }

    /// Whether the SG writes this unit with a `k` prefix above 1000 (powers and energies).
    #[must_use]
    pub fn takes_kilo(self) -> bool {
        matches!(
            self,
            Self::Watt
                | Self::Var
                | Self::VoltAmpere
                | Self::WattHour
                | Self::VarHour
                | Self::VoltAmpereHour
        )
    }

    /// Parses a unit symbol (without prefix). Accepts the SG's spelling and the common
    /// alternatives meters use (`VAr`, `C`, `degC`, `deg`).
    #[must_use]
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        Some(match symbol {
            "V" => Self::Volt,
            "A" => Self::Ampere,
            "W" => Self::Watt,
            "var" | "VAr" | "VAR" | "Var" => Self::Var,
            "VA" => Self::VoltAmpere,
            "Hz" => Self::Hertz,
            "Wh" => Self::WattHour,
            "varh" | "VArh" | "VARh" | "Varh" => Self::VarHour,
            "VAh" => Self::VoltAmpereHour,
            "%" => Self::Percent,
            "C" | "°C" | "degC" => Self::Celsius,
            "deg" | "°" => Self::Degree,
            _ => return None,
        })
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A parsed value in base SI units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    /// The exact value, prefix already applied.
    pub value: Decimal,
    pub unit: Unit,
}

impl Quantity {
    /// The value as the nearest `f64`.
    #[must_use]
    pub fn to_f64(self) -> f64 {
        self.value.to_f64()
    }
}

/// SI prefixes the SG (and the meters behind it) put in front of a unit, as powers of ten.
fn prefix_exp10(prefix: char) -> Option<i32> {
    match prefix {
        'm' => Some(-3),
        'k' => Some(3),
        'M' => Some(6),
        'G' => Some(9),
        _ => None,
    }
}

/// Parses an SG value string: a number, optional spaces, an optional SI prefix (`k`, `M`,
/// `G`, `m`; may be followed by spaces), then an optional unit.
///
/// `"N/A"` gives [`ValueError::NotAvailable`] so that callers can treat it as absent.
///
/// # Errors
/// A [`ValueError`] naming what is wrong; this function never panics, whatever the input.
pub fn parse_quantity(text: &str) -> Result<Quantity, ValueError> {
    let (value, rest) = parse_leading_number(text)?;
    let rest = rest.trim();
    let (value, unit) = if rest.is_empty() {
        (value, Unit::None)
    } else if let Some(unit) = Unit::from_symbol(rest) {
        (value, unit)
    } else {
        let mut chars = rest.chars();
        let prefix = chars.next().and_then(|c| Some((c, prefix_exp10(c)?)));
        let Some((prefix, shift)) = prefix else {
            return Err(ValueError::UnknownUnit(excerpt(rest)));
        };
        let after = chars.as_str().trim_start();
        if after.is_empty() {
            return Err(ValueError::PrefixWithoutUnit(prefix));
        }
        let unit =
            Unit::from_symbol(after).ok_or_else(|| ValueError::UnknownUnit(excerpt(rest)))?;
        let value = value.shifted(shift).ok_or(ValueError::Implausible)?;
        (value, unit)
    };
    check_magnitude(value)?;
    Ok(Quantity { value, unit })
}

/// Parses a bare number as the SG sends for `PA*` (degrees), `Tint` (°C) and `THD*` (%):
/// `"-26.07"`. Any text after the number is an error.
///
/// # Errors
/// [`ValueError`] as for [`parse_quantity`], plus [`ValueError::TrailingText`].
pub fn parse_plain(text: &str) -> Result<f64, ValueError> {
    let (value, rest) = parse_leading_number(text)?;
    let rest = rest.trim();
    if !rest.is_empty() {
        return Err(ValueError::TrailingText(excerpt(rest)));
    }
    check_magnitude(value)?;
    Ok(value.to_f64())
}

/// The number at the start of `text` after the checks every value string shares.
fn parse_leading_number(text: &str) -> Result<(Decimal, &str), ValueError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ValueError::Empty);
    }
    if text.eq_ignore_ascii_case("N/A") {
        return Err(ValueError::NotAvailable);
    }
    decimal::scan_number(text)
}

fn check_magnitude(value: Decimal) -> Result<(), ValueError> {
    if abs(value.to_f64()) > MAX_MAGNITUDE {
        Err(ValueError::Implausible)
    } else {
        Ok(())
    }
}

/// `f64::abs` is only in `core` on recent toolchains; this crate's MSRV predates that.
pub(crate) fn abs(x: f64) -> f64 {
    if x < 0.0 {
        -x
    } else {
        x
    }
}

/// Hostile input may be megabytes long; errors quote at most this many characters of it.
const EXCERPT_CHARS: usize = 32;

/// The first [`EXCERPT_CHARS`] characters of `text`, with `…` if there was more.
pub(crate) fn excerpt(text: &str) -> String {
    crate::text::truncate_chars(text, EXCERPT_CHARS)
}
