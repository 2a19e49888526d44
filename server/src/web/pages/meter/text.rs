//! How the meter page writes numbers and times.
//!
//! Numbers are shown as people read them: counters in kWh or MWh (kvarh or Mvarh), power in
//! kW or MW, voltage in V... ([`measurement_text`], mirrored by `static/live.js`, which must
//! produce the same text for the same number). The API and the CSV keep the exact values.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

// ---- numbers ---------------------------------------------------------------------------

/// `x` with `decimals` decimals, rounded half up on the magnitude, never `-0`. Written with
/// integer steps so that `static/live.js` (`fixed`) gives the very same text.
fn fixed(x: f64, decimals: usize) -> String {
    const SCALE: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
    if !x.is_finite() {
        return "–".to_owned();
    }
    let decimals = decimals.min(3);
    let n = (x.abs() * SCALE[decimals]).round();
    let mut digits = format!("{n:.0}");
    while digits.len() < decimals + 1 {
        digits.insert(0, '0');
    }
    let (int, frac) = digits.split_at(digits.len() - decimals);
    let sign = if x < 0.0 && n != 0.0 { "-" } else { "" };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Three significant digits (four from 1000 to 9999), as `dashboard::units::digits`.
fn sig(x: f64) -> String {
    let a = x.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 || a == 0.0 {
        2
    } else {
        3
    };
    fixed(x, decimals)
}

/// A value in a base unit given in thousands (kW from W): kilo, or mega from 10 000 kilo.
fn kilo(x: f64, unit: &str) -> String {
    let k = x / 1000.0;
    if k.abs() >= 10_000.0 {
        format!("{} M{unit}", sig(k / 1000.0))
    } else {
        format!("{} k{unit}", sig(k))
    }
}

/// A measurement (`measurements` column `key`, SI value) as the page shows it:
/// `229.5 V`, `5.23 A`, `1.20 kW`, `0.950`, `50.01 Hz`, `41.5 °C`, `2.1 %`.
pub fn measurement_text(key: &str, value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "–".to_owned();
    };
    match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "u" if v.abs() >= 10_000.0 => format!("{} kV", sig(v / 1000.0)),
        "u" => format!("{} V", fixed(v, 1)),
        "i" | "i_n" if v.abs() >= 10_000.0 => format!("{} kA", sig(v / 1000.0)),
        "i" | "i_n" if v.abs() >= 100.0 => format!("{} A", fixed(v, 1)),
        "i" | "i_n" => format!("{} A", fixed(v, 2)),
        "p" => kilo(v, "W"),
        "q" => kilo(v, "var"),
        "s" => kilo(v, "VA"),
        "pf" => fixed(v, 3),
        "pa" => format!("{}°", fixed(v, 1)),
        "frequency" => format!("{} Hz", fixed(v, 2)),
        "temperature" => format!("{} °C", fixed(v, 1)),
        "thd_u" | "thd_i" => format!("{} %", fixed(v, 1)),
        _ => sig(v),
    }
}

pub(super) fn local(ts: DateTime<Utc>, tz: Tz) -> String {
    ts.with_timezone(&tz).format("%-d %b %Y %H:%M").to_string()
}

/// When the shown measurements were measured, in the site's zone; `static/live.js` writes the
/// same text when it refreshes them.
pub fn measured_text(ts: DateTime<Utc>, tz: Tz) -> String {
    ts.with_timezone(&tz)
        .format("measured %-d %b %Y %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_read_in_their_units() {
        let t = |k: &str, v: f64| measurement_text(k, Some(v));
        assert_eq!(t("u1", 229.5), "229.5 V");
        assert_eq!(t("u2", 231.25), "231.3 V");
        assert_eq!(t("u1", 20_500.0), "20.5 kV");
        assert_eq!(t("i1", 5.234), "5.23 A");
        assert_eq!(t("i_n", 0.0), "0.00 A");
        assert_eq!(t("i2", 123.45), "123.5 A");
        assert_eq!(t("p", 1200.0), "1.20 kW");
        assert_eq!(t("p1", 800.0), "0.800 kW");
        assert_eq!(t("p", -2815.0), "-2.82 kW");
        assert_eq!(t("p", 12_345_000.0), "12.3 MW");
        assert_eq!(t("p", 9_999_000.0), "9999 kW");
        assert_eq!(t("q", 450.0), "0.450 kvar");
        assert_eq!(t("s3", 3_000.0), "3.00 kVA");
        assert_eq!(t("pf", 0.95), "0.950");
        assert_eq!(t("pf1", -0.0004), "0.000");
        assert_eq!(t("pa1", 12.34), "12.3°");
        assert_eq!(t("frequency", 50.01), "50.01 Hz");
        assert_eq!(t("temperature", 41.5), "41.5 °C");
        assert_eq!(t("thd_u1", 2.1), "2.1 %");
        assert_eq!(measurement_text("u1", None), "–");
        assert_eq!(measurement_text("u1", Some(f64::NAN)), "–");
    }

    #[test]
    fn rounding_is_half_up_on_the_magnitude() {
        assert_eq!(fixed(0.125, 2), "0.13");
        assert_eq!(fixed(-0.125, 2), "-0.13");
        assert_eq!(fixed(2.5, 0), "3");
        assert_eq!(fixed(0.05, 1), "0.1");
        assert_eq!(fixed(-0.04, 1), "0.0");
        assert_eq!(fixed(1234.5678, 3), "1234.568");
        assert_eq!(sig(0.0), "0.00");
    }
}
