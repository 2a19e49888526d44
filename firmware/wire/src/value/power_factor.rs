//! Power factor strings: `"0.9874 Ind"`, `"0.8984 Cap"`.

use super::{abs, excerpt, parse_leading_number, ValueError};

/// How far above 1 a power factor may read before it is rejected: meters round, and a
/// displayed `1.0005` is a unity power factor, not an error.
const PF_TOLERANCE: f64 = 0.001;

/// Whether the load is inductive (current lags) or capacitive (current leads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerFactorKind {
    /// `Ind`: current lags voltage.
    Inductive,
    /// `Cap`: current leads voltage.
    Capacitive,
    /// No suffix (e.g. unity power factor).
    None,
}

/// A power factor as the SG reports it: a magnitude and a kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerFactor {
    /// Magnitude in `0.0..=1.0` (readings up to 1.001 are clamped to 1).
    pub value: f64,
    pub kind: PowerFactorKind,
}

impl PowerFactor {
    /// The signed convention used throughout Headend: **inductive positive, capacitive
    /// negative**; a power factor without kind is positive.
    #[must_use]
    pub fn signed(self) -> f64 {
        match self.kind {
            PowerFactorKind::Capacitive => -self.value,
            PowerFactorKind::Inductive | PowerFactorKind::None => self.value,
        }
    }

    /// The inverse of [`signed`](Self::signed): negative is capacitive, positive inductive,
    /// and exactly 1 (or 0) carries no kind. The magnitude is clamped to `0..=1`; a NaN
    /// gives 0.
    #[must_use]
    pub fn from_signed(signed: f64) -> Self {
        let value = abs(signed).min(1.0);
        let value = if value.is_nan() { 0.0 } else { value };
        let kind = if value == 1.0 || value == 0.0 {
            PowerFactorKind::None
        } else if signed < 0.0 {
            PowerFactorKind::Capacitive
        } else {
            PowerFactorKind::Inductive
        };
        Self { value, kind }
    }
}

/// Parses `"<magnitude> [Ind|Cap]"` (suffix case-insensitive, also `L`/`C`).
///
/// # Errors
/// [`ValueError::NotAvailable`] for `"N/A"`, [`ValueError::PowerFactorOutOfRange`] for a
/// negative magnitude or one above 1 (beyond rounding tolerance),
/// [`ValueError::UnknownPowerFactorKind`] for another suffix, and the number errors of
/// [`parse_quantity`](super::parse_quantity).
pub fn parse_power_factor(text: &str) -> Result<PowerFactor, ValueError> {
    let (value, rest) = parse_leading_number(text)?;
    let rest = rest.trim();
    let kind = if rest.is_empty() {
        PowerFactorKind::None
    } else if rest.eq_ignore_ascii_case("ind") || rest.eq_ignore_ascii_case("l") {
        PowerFactorKind::Inductive
    } else if rest.eq_ignore_ascii_case("cap") || rest.eq_ignore_ascii_case("c") {
        PowerFactorKind::Capacitive
    } else {
        return Err(ValueError::UnknownPowerFactorKind(excerpt(rest)));
    };
    let value = value.to_f64();
    if !(0.0..=1.0 + PF_TOLERANCE).contains(&value) {
        return Err(ValueError::PowerFactorOutOfRange(value));
    }
    Ok(PowerFactor {
        value: value.min(1.0),
        kind,
    })
}
