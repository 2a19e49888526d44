//! Numbers as people read them on a page: energy in Wh, kWh, MWh or GWh and power in W, kW or
//! MW, with three or four significant digits. Pages only; the API and the CSV keep exact values
//! in their fixed units (kWh, kW), because audits recompute from them.

use std::fmt;

/// A value with the unit chosen for its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaled {
    pub value: f64,
    pub unit: &'static str,
}

impl fmt::Display for Scaled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", digits(self.value), self.unit)
    }
}

/// Three significant digits (four for 1000–9999), no exponent, no `-0`.
pub fn digits(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_owned()
    } else {
        s
    }
}

/// Chooses the unit of `base_value` (in the base unit at index `base` of `units`, each 1000×
/// the one before) so that the shown number is below 10 000.
fn scale(base_value: f64, units: &'static [&'static str], base: usize) -> Scaled {
    let mut value = base_value;
    let mut i = base;
    if value.is_finite() {
        while value.abs() >= 10_000.0 && i + 1 < units.len() {
            value /= 1000.0;
            i += 1;
        }
        while value != 0.0 && value.abs() < 1.0 && i > 0 {
            value *= 1000.0;
            i -= 1;
        }
    }
    Scaled {
        value,
        unit: units[i],
    }
}

const ENERGY: &[&str] = &["Wh", "kWh", "MWh", "GWh"];
const POWER: &[&str] = &["W", "kW", "MW", "GW"];
const REACTIVE_ENERGY: &[&str] = &["varh", "kvarh", "Mvarh", "Gvarh"];

/// Energy given in kWh.
pub fn energy_kwh(kwh: f64) -> Scaled {
    scale(kwh, ENERGY, 1)
}

/// Power given in kW.
pub fn power_kw(kw: f64) -> Scaled {
    scale(kw, POWER, 1)
}

/// Reactive energy given in kvarh.
pub fn reactive_kvarh(kvarh: f64) -> Scaled {
    scale(kvarh, REACTIVE_ENERGY, 1)
}

/// Several values of one chart or table in one unit (the one of the largest), so they compare
/// at a glance: returns the unit and the divisor from the base unit (kWh or kW).
pub fn common_unit(values: impl IntoIterator<Item = f64>, power: bool) -> (&'static str, f64) {
    let max = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, |m, v| m.max(v.abs()));
    let units = if power { POWER } else { ENERGY };
    let s = scale(if max == 0.0 { 1.0 } else { max }, units, 1);
    let divisor = match units.iter().position(|u| *u == s.unit) {
        Some(i) => 1000f64.powi(i as i32 - 1),
        None => 1.0,
    };
    (s.unit, divisor)
}

/// Money with two decimals and a thin grouping of thousands (`12 345.67 EUR`).
pub fn money(amount: f64, currency: &str) -> String {
    if !amount.is_finite() {
        return "–".to_owned();
    }
    let cents = (amount.abs() * 100.0).round() as u64;
    let (units, cents) = (cents / 100, cents % 100);
    let digits = units.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push('\u{202f}');
        }
        grouped.push(c);
    }
    let sign = if amount < 0.0 && (units > 0 || cents > 0) {
        "−"
    } else {
        ""
    };
    if currency.is_empty() {
        format!("{sign}{grouped}.{cents:02}")
    } else {
        format!("{sign}{grouped}.{cents:02} {currency}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_is_scaled_to_a_readable_unit() {
        assert_eq!(energy_kwh(0.0).to_string(), "0.00 kWh");
        assert_eq!(energy_kwh(0.25).to_string(), "250 Wh");
        assert_eq!(energy_kwh(12.345).to_string(), "12.3 kWh");
        assert_eq!(energy_kwh(9_999.0).to_string(), "9999 kWh");
        assert_eq!(energy_kwh(12_345.0).to_string(), "12.3 MWh");
        assert_eq!(energy_kwh(-1.5).to_string(), "-1.50 kWh");
        assert_eq!(energy_kwh(45_000_000.0).to_string(), "45.0 GWh");
        assert_eq!(power_kw(0.0042).to_string(), "4.20 W");
        assert_eq!(power_kw(1_500_000.0).to_string(), "1500 MW");
        assert_eq!(reactive_kvarh(20_000.0).to_string(), "20.0 Mvarh");
        assert_eq!(digits(-0.0001), "0.000");
        assert_eq!(digits(f64::NAN), "–");
    }

    #[test]
    fn a_table_shares_the_unit_of_its_largest_value() {
        assert_eq!(common_unit([1.0, 20_000.0], false), ("MWh", 1000.0));
        assert_eq!(common_unit([0.2, 0.5], true), ("W", 0.001));
        assert_eq!(common_unit([], false), ("kWh", 1.0));
    }

    #[test]
    fn money_groups_thousands() {
        assert_eq!(money(1234567.891, "EUR"), "1\u{202f}234\u{202f}567.89 EUR");
        assert_eq!(money(-0.004, "USD"), "0.00 USD");
        assert_eq!(money(-12.5, ""), "−12.50");
    }
}
