//! The MiSmart XML push ("Standard TCP"): the gateway opens a plain TCP connection and
//! writes one XML document per device and interval, back to back, each ending in
//! `</data>`, lines ending in `"\n\r"` (see `tests/fixtures/mismart-xml/README.md`).
//!
//! ```text
//! <?xml version="1.0" encoding="utf-8"?>
//! <data logId="117" controlUnit="X0000124" deviceType="IE38MD" part="1">
//! <measurement dateTime="2026-03-29T00:45:00Z" tInterval="PT15M">
//! <value ident="U1" unit="V">230.12</value>
//! <value ident="E1nr" unit="Wh">1842331250e-2</value>
//! </measurement>
//! </data>
//! ```
//!
//! - [`DocumentSplitter`] cuts a TCP byte stream into documents (sans-IO, bounded).
//! - `parse_document` (feature `xml`, built on quick-xml) reads one into a [`Document`]:
//!   no DTD, no entity expansion, bounded depth, counts and lengths.
//! - [`write_document`] writes a [`Document`] in the gateway's exact format.
//! - [`Measurement::measurements`] and [`Measurement::counters`] map a measurement onto
//!   the same typed measurements and counter registers as the MQTT JSON documents.
//!
//! The protocol has no acknowledgement: the gateway writes and moves on. A receiver that
//! wants one defines its own and must keep working with a peer that ignores it.
//!
//! Everything but the parser is `no_std` + `alloc`, so that firmware without `std` can
//! write documents.

mod datetime;
mod ident;
mod number;
#[cfg(feature = "xml")]
mod parse;
mod split;
mod write;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::Value as JsonValue;

use crate::message::{
    normalize_measurements, Counter, EnergyUnit, FieldError, FieldIssue, Header, Measurements,
    MeasurementsDoc,
};
use crate::value::Unit;

pub use datetime::{format_interval, parse_interval, DateTimeSpec};
pub use ident::{
    Ident, LinePair, Phase, Quantity, Register, Statistic, NON_RESETTABLE_REGISTERS,
    RESETTABLE_REGISTERS,
};
pub use number::{Number, NumberError, MAX_EXP10};
#[cfg(feature = "xml")]
pub use parse::{parse_document, Ignored, IgnoredKind, ParsedDocument, XmlError, XmlErrorKind};
pub use split::{DocumentSplitter, SplitError};
pub use write::{write_document, LINE_END};

/// Largest document accepted (256 KiB, as for MQTT payloads). A real document with every
/// ident and statistic is about 10 KiB.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Deepest element nesting accepted (the format itself uses 3 levels).
pub const MAX_DEPTH: usize = 8;
/// Most elements in one document, ignored ones included.
pub const MAX_ELEMENTS: usize = 8192;
/// Most `value` elements in one document, unknown idents included.
pub const MAX_VALUES: usize = 4096;
/// Most attributes on one element.
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest attribute value read, in bytes as sent.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Longest text of a `value` element of a known ident, in bytes (a number needs about
/// 25); the text of an unknown ident is cut to this for the report.
pub const MAX_TEXT_BYTES: usize = 64;

/// One pushed document: one device, one or more measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `logId`: the gateway's document counter (restarts at 0 after a reboot).
    pub log_id: u64,
    /// `controlUnit`: the meter's serial number (checked with
    /// [`validate_serial`](crate::message::validate_serial) when read).
    pub control_unit: String,
    /// `deviceType`: the meter model, as sent (free text; the receiver bounds and cleans
    /// it for display as it does the MQTT `model`).
    pub device_type: String,
    /// `part`: 1 in every document seen so far.
    pub part: u32,
    pub measurements: Vec<Measurement>,
}

/// One `measurement` element: the values of one averaging interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// `dateTime`.
    pub date_time: DateTimeSpec,
    /// `tInterval` in seconds (`PT060S` is 60, `PT15M` is 900); never zero when read.
    pub interval_secs: u32,
    /// In document order.
    pub values: Vec<Value>,
}

/// One `value` element of a known ident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value {
    pub ident: Ident,
    /// Exactly as sent (scale included), in `unit`.
    pub value: Number,
    /// Checked against the ident when read ([`Quantity::accepts`]).
    pub unit: Unit,
}

impl Measurement {
    /// The instantaneous values of one statistic as the MQTT path types them: the same
    /// [`Measurements`] fields, SI units, plausibility checks and [`FieldIssue`]s as
    /// [`normalize_measurements`] (issues name the XML ident). [`Statistic::Avg`] is what
    /// MiSmart sends without suffix. Energy registers are in [`Measurement::counters`].
    #[must_use]
    pub fn measurements(&self, statistic: Statistic) -> (Measurements, Vec<FieldIssue>) {
        let mut raw = BTreeMap::new();
        let mut idents = BTreeMap::new();
        let mut issues = Vec::new();
        for value in self
            .values
            .iter()
            .filter(|v| v.ident.statistic == statistic)
        {
            let Some(key) = value.ident.quantity.mqtt_key() else {
                continue;
            };
            if !value.ident.quantity.accepts(value.unit) {
                issues.push(issue(
                    value,
                    FieldError::WrongUnit {
                        expected: value.ident.quantity.canonical_unit(),
                        found: value.unit,
                    },
                ));
                continue;
            }
            // A bare number, exact: the key says what it is and the unit was checked.
            let text = value.value.to_decimal().to_string();
            raw.insert(String::from(key), JsonValue::String(text));
            idents.insert(key, value.ident);
        }
        let doc = MeasurementsDoc {
            header: Header::default(),
            measurements: raw,
        };
        let (measurements, normalize_issues) = normalize_measurements(&doc);
        issues.extend(normalize_issues.into_iter().map(|mut issue| {
            if let Some(ident) = idents.get(issue.field.as_str()) {
                issue.field = ident.to_string();
            }
            issue
        }));
        (measurements, issues)
    }

    /// The energy registers (the values without suffix of `E1..E16`, `E1nr..E4nr`) as the
    /// MQTT path's [`Counter`]s: named `counterN[nr]`, exact milli-units, ordered
    /// non-resettable first, then by index (as
    /// [`normalize_counters`](crate::message::normalize_counters) orders them). MiSmart
    /// has no phase or tariff settings, so those stay empty.
    ///
    /// Registers that `parse_document` would have refused (only possible in a
    /// hand-built document) are reported instead of returned; a register repeated in a
    /// hand-built document counts once.
    #[must_use]
    pub fn counters(&self) -> (Vec<Counter>, Vec<FieldIssue>) {
        let mut counters = Vec::new();
        let mut issues = Vec::new();
        let mut seen = BTreeSet::new();
        for value in &self.values {
            let (Quantity::Energy(register), Statistic::Avg) =
                (value.ident.quantity, value.ident.statistic)
            else {
                continue;
            };
            if !seen.insert(register) {
                continue;
            }
            match register_milli(value) {
                Ok((unit, value_milli)) => counters.push(Counter {
                    name: register.mqtt_name(),
                    index: register.index(),
                    resettable: register.is_resettable(),
                    unit,
                    value_milli,
                    phase: None,
                    tariffs: Vec::new(),
                }),
                Err(error) => issues.push(issue(value, error)),
            }
        }
        counters.sort_by_key(|c| (c.resettable, c.index));
        (counters, issues)
    }
}

/// A register's unit and exact milli-unit value, or why it has none.
fn register_milli(value: &Value) -> Result<(EnergyUnit, i64), FieldError> {
    let unit = EnergyUnit::from_unit(value.unit).ok_or(FieldError::NotAnEnergyUnit(value.unit))?;
    if value.value.mantissa() < 0 {
        return Err(FieldError::NegativeCounter);
    }
    match value.value.to_milli() {
        Some(milli) => Ok((unit, milli)),
        // Fits when rounded: the problem is digits below a milli-unit, not size.
        None if value.value.to_decimal().to_scaled_i64(-3).is_some() => {
            Err(FieldError::CounterTooPrecise)
        }
        None => Err(FieldError::CounterOverflow),
    }
}

fn issue(value: &Value, error: FieldError) -> FieldIssue {
    let raw = JsonValue::String(alloc::format!(
        "{} {}",
        value.value,
        ident::unit_symbol(value.unit)
    ));
    FieldIssue::new(&value.ident.to_string(), &raw, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ident: &str, mantissa: i64, exp10: i32, unit: Unit) -> Value {
        Value {
            ident: Ident::parse(ident).unwrap(),
            value: Number::new(mantissa, exp10).unwrap(),
            unit,
        }
    }

    fn measurement(values: Vec<Value>) -> Measurement {
        Measurement {
            date_time: DateTimeSpec::Now,
            interval_secs: 60,
            values,
        }
    }

    #[test]
    fn measurements_fill_the_mqtt_fields() {
        let m = measurement(alloc::vec![
            value("f", 4998, -2, Unit::Hertz),
            value("U1", 23012, -2, Unit::Volt),
            value("U1_max", 23500, -2, Unit::Volt),
            value("P", 28150, -1, Unit::Watt),
            value("S0", 28510, -1, Unit::VoltAmpere),
            value("Tint", 3070, -2, Unit::Degree),
            value("I3%", 1402, -2, Unit::Percent),
            value("E1", 20010, 0, Unit::WattHour),
        ]);
        let (avg, issues) = m.measurements(Statistic::Avg);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(avg.frequency_hz, Some(49.98));
        assert_eq!(avg.u1, Some(230.12));
        assert_eq!(avg.p_total, Some(2815.0));
        assert_eq!(avg.s_total, Some(2851.0));
        assert_eq!(avg.temperature_c, Some(30.7));
        assert_eq!(avg.thd_i3, Some(14.02));
        let (max, _) = m.measurements(Statistic::Max);
        assert_eq!(max.u1, Some(235.0));
        assert_eq!(max.frequency_hz, None);
    }

    #[test]
    fn implausible_and_mismatched_values_are_issues_named_by_ident() {
        let m = measurement(alloc::vec![
            value("f", 0, 0, Unit::Hertz),
            value("U2", 230, 0, Unit::Ampere),
        ]);
        let (values, issues) = m.measurements(Statistic::Avg);
        assert_eq!((values.frequency_hz, values.u2), (None, None));
        let fields: Vec<_> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["U2", "f"]);
        assert!(matches!(issues[0].error, FieldError::WrongUnit { .. }));
        assert!(matches!(issues[1].error, FieldError::Implausible { .. }));
    }

    #[test]
    fn counters_are_exact_and_ordered_like_the_json_path() {
        let m = measurement(alloc::vec![
            value("E2", 0, 0, Unit::WattHour),
            value("E1nr", 1_842_331_250, -2, Unit::WattHour),
            value("E3nr", 4_410_020, -1, Unit::VarHour),
            value("E1#", 5, 0, Unit::WattHour),
            value("U1", 230, 0, Unit::Volt),
        ]);
        let (counters, issues) = m.counters();
        assert!(issues.is_empty(), "{issues:?}");
        let summary: Vec<_> = counters
            .iter()
            .map(|c| (c.name.as_str(), c.unit, c.value_milli))
            .collect();
        assert_eq!(
            summary,
            [
                ("counter1nr", EnergyUnit::Wh, 18_423_312_500),
                ("counter3nr", EnergyUnit::Varh, 441_002_000),
                ("counter2", EnergyUnit::Wh, 0),
            ]
        );
    }

    #[test]
    fn hand_built_registers_that_cannot_be_stored_are_issues() {
        let m = measurement(alloc::vec![
            value("E1", -1, 0, Unit::WattHour),
            value("E2", 1, -4, Unit::WattHour),
            value("E3", i64::MAX, 0, Unit::WattHour),
            value("E4", 1, 0, Unit::Watt),
        ]);
        let (counters, issues) = m.counters();
        assert!(counters.is_empty());
        let errors: Vec<_> = issues.iter().map(|i| i.error.clone()).collect();
        assert_eq!(
            errors,
            [
                FieldError::NegativeCounter,
                FieldError::CounterTooPrecise,
                FieldError::CounterOverflow,
                FieldError::NotAnEnergyUnit(Unit::Watt),
            ]
        );
        assert_eq!(issues[0].field, "E1");
        assert_eq!(issues[0].raw, "-1 Wh");
    }
}
