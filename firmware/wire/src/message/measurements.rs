//! Measurements documents → typed SI values.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::issue::json_type;
use super::{FieldError, FieldIssue, MeasurementsDoc};
use crate::value::{abs, parse_power_factor, parse_quantity, Unit, ValueError};

/// Instantaneous values in SI units. `None` means not sent, `"N/A"`, or unusable (the last
/// with a [`FieldIssue`]). Single-phase meters fill phase 1 only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// `frequency`, Hz.
    pub frequency_hz: Option<f64>,
    /// `U1`..`U3`, phase-to-neutral V.
    pub u1: Option<f64>,
    pub u2: Option<f64>,
    pub u3: Option<f64>,
    /// `U12`, `U23`, `U31`, phase-to-phase V.
    pub u12: Option<f64>,
    pub u23: Option<f64>,
    pub u31: Option<f64>,
    /// `I1`..`I3`, A.
    pub i1: Option<f64>,
    pub i2: Option<f64>,
    pub i3: Option<f64>,
    /// `In`, neutral current, A.
    pub i_n: Option<f64>,
    /// `P0`..`P3`, active power, W (`P0` is the total).
    pub p_total: Option<f64>,
    pub p1: Option<f64>,
    pub p2: Option<f64>,
    pub p3: Option<f64>,
    /// `Q0`..`Q3`, reactive power, var.
    pub q_total: Option<f64>,
    pub q1: Option<f64>,
    pub q2: Option<f64>,
    pub q3: Option<f64>,
    /// `S0`..`S3`, apparent power, VA.
    pub s_total: Option<f64>,
    pub s1: Option<f64>,
    pub s2: Option<f64>,
    pub s3: Option<f64>,
    /// `PF0`..`PF3`, signed: inductive positive, capacitive negative
    /// (see [`PowerFactor::signed`](crate::value::PowerFactor::signed)).
    pub pf_total: Option<f64>,
    pub pf1: Option<f64>,
    pub pf2: Option<f64>,
    pub pf3: Option<f64>,
    /// `PA0`..`PA3`, power angle, degrees.
    pub pa_total: Option<f64>,
    pub pa1: Option<f64>,
    pub pa2: Option<f64>,
    pub pa3: Option<f64>,
    /// `Tint`, the meter's internal temperature, °C.
    pub temperature_c: Option<f64>,
    /// `THDI1`..`THDI3`, current THD, %.
    pub thd_i1: Option<f64>,
    pub thd_i2: Option<f64>,
    pub thd_i3: Option<f64>,
    /// `THDUp1`..`THDUp3`, phase voltage THD, %.
    pub thd_u1: Option<f64>,
    pub thd_u2: Option<f64>,
    pub thd_u3: Option<f64>,
    /// `tariff`, the active tariff.
    pub tariff: Option<i16>,
}

/// The head-end's measurement columns, one per [`Measurements`] quantity in field order
/// (`tariff` aside): every ingest path (SG documents, MiSmart XML, Modbus register maps) feeds
/// these names, so the list lives here once.
pub const MEASUREMENT_COLUMNS: [&str; 39] = [
    "frequency",
    "u1",
    "u2",
    "u3",
    "u12",
    "u23",
    "u31",
    "i1",
    "i2",
    "i3",
    "i_n",
    "p",
    "p1",
    "p2",
    "p3",
    "q",
    "q1",
    "q2",
    "q3",
    "s",
    "s1",
    "s2",
    "s3",
    "pf",
    "pf1",
    "pf2",
    "pf3",
    "pa",
    "pa1",
    "pa2",
    "pa3",
    "temperature",
    "thd_i1",
    "thd_i2",
    "thd_i3",
    "thd_u1",
    "thd_u2",
    "thd_u3",
    // Reserved position kept last so the array length documents the schema width.
    "_reserved",
];

/// What a key measures: its unit and plausible range.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Frequency,
    Voltage,
    Current,
    ActivePower,
    ReactivePower,
    ApparentPower,
    PowerFactor,
    Angle,
    Temperature,
    Thd,
}

/// Larger than any installation a gateway meters (1 TW); a bigger power is a glitch.
const MAX_POWER: f64 = 1e12;

impl Kind {
    fn unit(self) -> Unit {
        match self {
            Self::Frequency => Unit::Hertz,
            Self::Voltage => Unit::Volt,
            Self::Current => Unit::Ampere,
            Self::ActivePower => Unit::Watt,
            Self::ReactivePower => Unit::Var,
            Self::ApparentPower => Unit::VoltAmpere,
            Self::PowerFactor => Unit::None,
            Self::Angle => Unit::Degree,
            Self::Temperature => Unit::Celsius,
            Self::Thd => Unit::Percent,
        }
    }

    /// `Err(description of the plausible range)` when `value` is outside it.
    fn check(self, value: f64) -> Result<(), &'static str> {
        let (ok, range) = match self {
            Self::Frequency => (value > 0.0 && value < 1000.0, "0 < f < 1000 Hz"),
            Self::Voltage => (abs(value) < 1e6, "|U| < 1e6 V"),
            Self::Current => (abs(value) < 1e6, "|I| < 1e6 A"),
            Self::ActivePower | Self::ReactivePower | Self::ApparentPower => {
                (abs(value) < MAX_POWER, "|power| < 1e12")
            }
            Self::PowerFactor => (abs(value) <= 1.0, "|PF| <= 1"),
            Self::Angle => ((-360.0..=360.0).contains(&value), "-360..=360 degrees"),
            Self::Temperature => ((-100.0..=300.0).contains(&value), "-100..=300 °C"),
            Self::Thd => ((0.0..=1000.0).contains(&value), "0..=1000 %"),
        };
        if ok {
            Ok(())
        } else {
            Err(range)
        }
    }
}

/// The field a key fills, or `None` for an unknown key.
fn slot<'m>(m: &'m mut Measurements, key: &str) -> Option<(Kind, &'m mut Option<f64>)> {
    use Kind::*;
    Some(match key {
        "frequency" => (Frequency, &mut m.frequency_hz),
        "U1" => (Voltage, &mut m.u1),
        "U2" => (Voltage, &mut m.u2),
        "U3" => (Voltage, &mut m.u3),
        "U12" => (Voltage, &mut m.u12),
        "U23" => (Voltage, &mut m.u23),
        "U31" => (Voltage, &mut m.u31),
        "I1" => (Current, &mut m.i1),
        "I2" => (Current, &mut m.i2),
        "I3" => (Current, &mut m.i3),
        "In" | "IN" => (Current, &mut m.i_n),
        "P0" => (ActivePower, &mut m.p_total),
        "P1" => (ActivePower, &mut m.p1),
        "P2" => (ActivePower, &mut m.p2),
        "P3" => (ActivePower, &mut m.p3),
        "Q0" => (ReactivePower, &mut m.q_total),
        "Q1" => (ReactivePower, &mut m.q1),
        "Q2" => (ReactivePower, &mut m.q2),
        "Q3" => (ReactivePower, &mut m.q3),
        "S0" => (ApparentPower, &mut m.s_total),
        "S1" => (ApparentPower, &mut m.s1),
        "S2" => (ApparentPower, &mut m.s2),
        "S3" => (ApparentPower, &mut m.s3),
        "PF0" => (PowerFactor, &mut m.pf_total),
        "PF1" => (PowerFactor, &mut m.pf1),
        "PF2" => (PowerFactor, &mut m.pf2),
        "PF3" => (PowerFactor, &mut m.pf3),
        "PA0" => (Angle, &mut m.pa_total),
        "PA1" => (Angle, &mut m.pa1),
        "PA2" => (Angle, &mut m.pa2),
        "PA3" => (Angle, &mut m.pa3),
        "Tint" => (Temperature, &mut m.temperature_c),
        "THDI1" => (Thd, &mut m.thd_i1),
        "THDI2" => (Thd, &mut m.thd_i2),
        "THDI3" => (Thd, &mut m.thd_i3),
        "THDUp1" => (Thd, &mut m.thd_u1),
        "THDUp2" => (Thd, &mut m.thd_u2),
        "THDUp3" => (Thd, &mut m.thd_u3),
        _ => return None,
    })
}

/// Turns a measurements document into SI values.
///
/// `"N/A"` (and `null`) give `None` silently. Every other value that cannot be used gives
/// `None` and a [`FieldIssue`]: unreadable text, a unit that does not fit the key (a value
/// without unit is accepted: the key says what it is), or a value outside the quantity's
/// plausible range (a frequency of 0, a THD of 5000 %). Unknown keys are reported as
/// [`FieldError::UnknownField`] and otherwise ignored. Nothing here rejects the document.
#[must_use]
pub fn normalize_measurements(doc: &MeasurementsDoc) -> (Measurements, Vec<FieldIssue>) {
    let mut out = Measurements::default();
    let mut issues = Vec::new();
    for (key, raw) in &doc.measurements {
        let result = if key == "tariff" {
            tariff(raw).map(|t| out.tariff = t)
        } else if let Some((kind, field)) = slot(&mut out, key) {
            value(kind, raw).map(|v| *field = v)
        } else {
            Err(FieldError::UnknownField)
        };
        if let Err(error) = result {
            issues.push(FieldIssue::new(key, raw, error));
        }
    }
    (out, issues)
}

/// One measurement in SI units; `Ok(None)` for N/A.
fn value(kind: Kind, raw: &Value) -> Result<Option<f64>, FieldError> {
    let number = match raw {
        Value::Null => return Ok(None),
        // Sloppy firmware may send a bare JSON number: it is in base units like "50.01 ".
        Value::Number(number) => number.as_f64().ok_or(FieldError::UnexpectedType {
            found: "a non-finite number",
        })?,
        Value::String(text) => match parse(kind, text) {
            Err(FieldError::Value(ValueError::NotAvailable)) => return Ok(None),
            other => other?,
        },
        other => {
            return Err(FieldError::UnexpectedType {
                found: json_type(other),
            })
        }
    };
    kind.check(number)
        .map_err(|range| FieldError::Implausible {
            value: number,
            range,
        })?;
    Ok(Some(number))
}

fn parse(kind: Kind, text: &str) -> Result<f64, FieldError> {
    if let Kind::PowerFactor = kind {
        return Ok(parse_power_factor(text)?.signed());
    }
    let quantity = parse_quantity(text)?;
    if quantity.unit != Unit::None && quantity.unit != kind.unit() {
        return Err(FieldError::WrongUnit {
            expected: kind.unit(),
            found: quantity.unit,
        });
    }
    Ok(quantity.to_f64())
}

/// `tariff` is a JSON number; numeric strings are accepted too.
fn tariff(raw: &Value) -> Result<Option<i16>, FieldError> {
    let parsed = match raw {
        Value::Null => return Ok(None),
        Value::Number(number) => number.as_i64().and_then(|t| i16::try_from(t).ok()),
        Value::String(text) if text.trim().eq_ignore_ascii_case("N/A") => return Ok(None),
        Value::String(text) => text.trim().parse().ok(),
        other => {
            return Err(FieldError::UnexpectedType {
                found: json_type(other),
            })
        }
    };
    parsed.map(Some).ok_or(FieldError::InvalidTariff)
}
