//! Energy counters documents → exact milli-unit registers.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde_json::Value;

use super::issue::json_type;
use super::{CountersDoc, FieldError, FieldIssue};
use crate::text::is_unwanted;
use crate::value::{parse_quantity, Unit, ValueError};

/// Highest counter number accepted. The SG has 16 resettable and 4 non-resettable
/// registers; some meters number further, so there is headroom.
pub const MAX_COUNTER_INDEX: u8 = 32;

/// Longest phase label kept (e.g. `"Total"`, `"L1"`).
const MAX_PHASE_CHARS: usize = 32;

/// The unit an energy register counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnergyUnit {
    Wh,
    Varh,
    VAh,
}

impl EnergyUnit {
    /// `Wh`, `varh` or `VAh`.
    #[must_use]
    pub fn symbol(self) -> &'static str {
        self.unit().symbol()
    }

    /// The corresponding [`Unit`].
    #[must_use]
    pub fn unit(self) -> Unit {
        match self {
            Self::Wh => Unit::WattHour,
            Self::Varh => Unit::VarHour,
            Self::VAh => Unit::VoltAmpereHour,
        }
    }

    /// The energy unit for `unit`, if it is one.
    #[must_use]
    pub fn from_unit(unit: Unit) -> Option<Self> {
        match unit {
            Unit::WattHour => Some(Self::Wh),
            Unit::VarHour => Some(Self::Varh),
            Unit::VoltAmpereHour => Some(Self::VAh),
            _ => None,
        }
    }
}

impl fmt::Display for EnergyUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// One energy register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Counter {
    /// The SG name, e.g. `counter1nr`.
    pub name: String,
    /// N in `counterN` / `counterNnr`, `1..=32`.
    pub index: u8,
    /// `counterN` can be reset from the SG; `counterNnr` cannot.
    pub resettable: bool,
    pub unit: EnergyUnit,
    /// The register in milli-units (mWh, mvarh, mVAh), exact: `"184233.125 kWh"` is
    /// `184_233_125_000`. A value with digits below a milli-unit (`"12.5001 Wh"`) is not
    /// representable exactly and is refused ([`FieldError::CounterTooPrecise`]), never rounded.
    pub value_milli: i64,
    /// `settings.phaseN[nr]`, e.g. `"Total"`; `None` when empty or absent.
    pub phase: Option<String>,
    /// `settings.tariffN[nr]`: the tariffs the register accumulates in (`"1 2 3 4 "`).
    pub tariffs: Vec<u8>,
}

/// Turns a counters document into registers, ordered non-resettable first, then by index.
///
/// `"N/A"` registers are skipped silently. A register that cannot be used — bad name, a
/// prefix without unit (`"0.00 k"`, an unconfigured register), a unit other than Wh, varh
/// or VAh, a negative value, digits below the milli-unit — is skipped with a [`FieldIssue`];
/// the rest of the document is still used. Unreadable settings are reported and left empty.
#[must_use]
pub fn normalize_counters(doc: &CountersDoc) -> (Vec<Counter>, Vec<FieldIssue>) {
    let mut issues = Vec::new();
    let settings = Settings::read(&doc.settings, &mut issues);
    let mut counters = Vec::new();
    for (name, raw) in &doc.counters {
        let Some((index, resettable)) = parse_name(name) else {
            issues.push(FieldIssue::new(name, raw, FieldError::InvalidCounterName));
            continue;
        };
        match register(raw) {
            Ok(Some((unit, value_milli))) => {
                let key = (index, resettable);
                counters.push(Counter {
                    name: name.clone(),
                    index,
                    resettable,
                    unit,
                    value_milli,
                    phase: settings.phases.get(&key).cloned(),
                    tariffs: settings.tariffs.get(&key).cloned().unwrap_or_default(),
                });
            }
            Ok(None) => {}
            Err(error) => issues.push(FieldIssue::new(name, raw, error)),
        }
    }
    counters.sort_by_key(|c| (c.resettable, c.index));
    (counters, issues)
}

/// `(index, resettable)` from `counterN` / `counterNnr`, N canonical decimal in 1..=32.
fn parse_name(name: &str) -> Option<(u8, bool)> {
    let rest = name.strip_prefix("counter")?;
    let (digits, resettable) = match rest.strip_suffix("nr") {
        Some(digits) => (digits, false),
        None => (rest, true),
    };
    let index = parse_index(digits)?;
    Some((index, resettable))
}

fn parse_index(digits: &str) -> Option<u8> {
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|n| (1..=MAX_COUNTER_INDEX).contains(n))
}

/// `Ok(None)` for N/A.
fn register(raw: &Value) -> Result<Option<(EnergyUnit, i64)>, FieldError> {
    let text = match raw {
        Value::Null => return Ok(None),
        Value::String(text) => text,
        other => {
            return Err(FieldError::UnexpectedType {
                found: json_type(other),
            })
        }
    };
    let quantity = match parse_quantity(text) {
        Err(ValueError::NotAvailable) => return Ok(None),
        other => other?,
    };
    let unit =
        EnergyUnit::from_unit(quantity.unit).ok_or(FieldError::NotAnEnergyUnit(quantity.unit))?;
    if quantity.value.is_negative() {
        return Err(FieldError::NegativeCounter);
    }
    // Digits below the stored milli-unit cannot be stored exactly: refused rather than
    // rounded, so that every stored register is the meter's own number (energy is exact).
    if !quantity.value.is_zero() && quantity.value.exp10() < -3 {
        return Err(FieldError::CounterTooPrecise);
    }
    let value_milli = quantity
        .value
        .to_scaled_i64(-3)
        .ok_or(FieldError::CounterOverflow)?;
    Ok(Some((unit, value_milli)))
}

/// The `phaseN[nr]` and `tariffN[nr]` settings, keyed by `(index, resettable)`.
#[derive(Default)]
struct Settings {
    phases: BTreeMap<(u8, bool), String>,
    tariffs: BTreeMap<(u8, bool), Vec<u8>>,
}

impl Settings {
    fn read(raw: &BTreeMap<String, Value>, issues: &mut Vec<FieldIssue>) -> Self {
        let mut settings = Self::default();
        for (key, value) in raw {
            let field = || alloc::format!("settings.{key}");
            let target = key
                .strip_prefix("phase")
                .map(|rest| (true, rest))
                .or_else(|| key.strip_prefix("tariff").map(|rest| (false, rest)));
            let Some((is_phase, rest)) = target else {
                issues.push(FieldIssue::new(&field(), value, FieldError::UnknownField));
                continue;
            };
            let (digits, resettable) = match rest.strip_suffix("nr") {
                Some(digits) => (digits, false),
                None => (rest, true),
            };
            let Some(index) = parse_index(digits) else {
                issues.push(FieldIssue::new(&field(), value, FieldError::UnknownField));
                continue;
            };
            let Value::String(text) = value else {
                let error = FieldError::UnexpectedType {
                    found: json_type(value),
                };
                issues.push(FieldIssue::new(&field(), value, error));
                continue;
            };
            let parsed = if is_phase {
                phase(text).map(|p| {
                    if let Some(p) = p {
                        settings.phases.insert((index, resettable), p);
                    }
                })
            } else {
                tariffs(text).map(|t| {
                    settings.tariffs.insert((index, resettable), t);
                })
            };
            if let Err(why) = parsed {
                issues.push(FieldIssue::new(
                    &field(),
                    value,
                    FieldError::InvalidSetting(why),
                ));
            }
        }
        settings
    }
}

fn phase(text: &str) -> Result<Option<String>, &'static str> {
    let text = text.trim();
    if text.chars().any(is_unwanted) {
        return Err("phase label holds control characters");
    }
    if text.chars().count() > MAX_PHASE_CHARS {
        return Err("phase label is longer than 32 characters");
    }
    Ok((!text.is_empty()).then(|| String::from(text)))
}

/// `"1 2 3 4 "` → `[1, 2, 3, 4]`; `""` → `[]`.
fn tariffs(text: &str) -> Result<Vec<u8>, &'static str> {
    text.split_whitespace()
        .map(|t| {
            t.parse::<u8>()
                .map_err(|_| "tariff list holds something other than tariff numbers")
        })
        .collect()
}
