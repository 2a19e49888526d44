//! Exact decimal scales ("0.01", "10", "-1") and the integer arithmetic that turns raw counter
//! registers into milli-units without ever passing through a float.

use std::fmt;

/// `mantissa × 10^exponent`, parsed from a decimal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: i64,
    pub exponent: i32,
}

impl Decimal {
    pub const ONE: Decimal = Decimal {
        mantissa: 1,
        exponent: 0,
    };

    /// Parses `[-+]digits[.digits]` (at most 18 significant digits).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (negative, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "{text:?} is not a decimal number such as \"0.01\" or \"10\""
            ));
        }
        let all = format!("{int}{frac}");
        let significant = all.trim_start_matches('0');
        if significant.len() > 18 {
            return Err(format!("{text:?} has more than 18 significant digits"));
        }
        let mantissa: i64 = if significant.is_empty() {
            0
        } else {
            significant
                .parse()
                .map_err(|_| format!("{text:?} is not a decimal number"))?
        };
        if mantissa == 0 {
            return Err(format!("{text:?}: a scale of zero would erase every value"));
        }
        let exponent = -i32::try_from(frac.len()).map_err(|_| format!("{text:?} is too long"))?;
        Ok(Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            exponent,
        })
    }

    pub fn to_f64(self) -> f64 {
        self.mantissa as f64 * 10f64.powi(self.exponent)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e{}", self.mantissa, self.exponent)
    }
}

/// `value × 10^exponent`, rounded half away from zero to an integer, if it fits an i64.
pub fn scale_pow10(value: i128, exponent: i32) -> Option<i64> {
    if value == 0 {
        return Some(0);
    }
    if exponent >= 0 {
        if exponent > 38 {
            return None;
        }
        let factor = 10i128.checked_pow(exponent.unsigned_abs())?;
        i64::try_from(value.checked_mul(factor)?).ok()
    } else {
        let down = exponent.unsigned_abs();
        if down > 38 {
            // |value| < 2^127 < 10^39 / 2: rounds to zero.
            return Some(0);
        }
        let divisor = 10i128.pow(down);
        let quotient = value / divisor;
        let remainder = value % divisor;
        let rounded = if remainder.unsigned_abs() * 2 >= divisor.unsigned_abs() {
            quotient + value.signum()
        } else {
            quotient
        };
        i64::try_from(rounded).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scales() {
        assert_eq!(
            Decimal::parse("0.01").unwrap(),
            Decimal {
                mantissa: 1,
                exponent: -2
            }
        );
        assert_eq!(
            Decimal::parse("10").unwrap(),
            Decimal {
                mantissa: 10,
                exponent: 0
            }
        );
        assert_eq!(
            Decimal::parse("-1.5").unwrap(),
            Decimal {
                mantissa: -15,
                exponent: -1
            }
        );
        assert_eq!(Decimal::parse(".5").unwrap().mantissa, 5);
        for bad in ["", ".", "1e3", "abc", "0", "0.000", "1.2.3", "--1"] {
            assert!(Decimal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(scale_pow10(15, -1), Some(2));
        assert_eq!(scale_pow10(-15, -1), Some(-2));
        assert_eq!(scale_pow10(14, -1), Some(1));
        assert_eq!(scale_pow10(-14, -1), Some(-1));
        assert_eq!(scale_pow10(7, 3), Some(7000));
        assert_eq!(scale_pow10(1, 19), None);
        assert_eq!(scale_pow10(i128::from(i64::MAX), 0), Some(i64::MAX));
        assert_eq!(scale_pow10(5, -60), Some(0));
    }
}
