//! Value strings the way the SG writes them, for the firmware side.

use alloc::format;
use alloc::string::String;

use super::{abs, Decimal, PowerFactor, PowerFactorKind, Unit};
use crate::message::EnergyUnit;

/// Formats a value in base units as the SG does: `"229.5 V"`, `"2.815 kW"`, `"50.01 Hz"`.
///
/// Powers and energies (see [`Unit::takes_kilo`]) switch to `k` when the magnitude reaches
/// 1000. [`Unit::None`] gives the bare number. A non-finite value gives `"N/A"`, which is
/// what the SG publishes for a value it does not have.
#[must_use]
pub fn format_quantity(value: f64, unit: Unit, decimals: u8) -> String {
    if !value.is_finite() {
        return String::from("N/A");
    }
    let decimals = usize::from(decimals);
    let (value, prefix) = if unit.takes_kilo() && abs(value) >= 1000.0 {
        (value / 1000.0, "k")
    } else {
        (value, "")
    };
    if unit == Unit::None {
        format!("{value:.decimals$}")
    } else {
        format!("{value:.decimals$} {prefix}{}", unit.symbol())
    }
}

/// Formats a power factor as the SG does: `"0.9874 Ind"`, `"0.8984 Cap"`, `"1.0000"`.
#[must_use]
pub fn format_power_factor(pf: PowerFactor, decimals: u8) -> String {
    let decimals = usize::from(decimals);
    let suffix = match pf.kind {
        PowerFactorKind::Inductive => " Ind",
        PowerFactorKind::Capacitive => " Cap",
        PowerFactorKind::None => "",
    };
    format!("{:.decimals$}{suffix}", pf.value)
}

/// Formats an energy register exactly, in k-units with at least three decimals:
/// `184_233_125_000` mWh → `"184233.125 kWh"`, `12_500` mWh → `"0.0125 kWh"`.
///
/// Exact because counters must survive the firmware → server trip without float rounding.
#[must_use]
pub fn format_counter(value_milli: i64, unit: EnergyUnit) -> String {
    // milli-units are 10^-6 k-units.
    let kilo = Decimal::new(i128::from(value_milli), -6);
    let text = format!("{kilo}");
    let decimals = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    let zeros = 3_usize.saturating_sub(decimals);
    let point = if decimals == 0 { "." } else { "" };
    format!("{text}{point}{:0<zeros$} k{}", "", unit.symbol())
}
