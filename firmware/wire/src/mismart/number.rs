//! Exact numbers as MiSmart writes them: `230.12`, `-312.4`, `1842331250e-2`, `0e+0`.

use alloc::string::String;
use core::fmt;

use crate::value::{abs, Decimal, MAX_MAGNITUDE};

/// Largest decimal exponent a [`Number`] carries. A mantissa fits in 19 digits and every
/// plausible value is below 10^15, so ±30 leaves room for any real meter's scaling while
/// keeping the plain notation of a number short (a hostile `1e-1000000` would otherwise
/// be written back as a million zeros).
pub const MAX_EXP10: i32 = 30;

/// An exact decimal `mantissa × 10^exp10` with the scale *as sent*.
///
/// Unlike [`Decimal`], trailing zeros are kept (`398.60` is `39860 × 10^-2`), so that a
/// document written back reproduces the gateway's digits; equality is therefore
/// representational (`398.60 != 398.6`). Use [`Number::to_decimal`] to compare values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Number {
    mantissa: i64,
    exp10: i32,
}

/// Why the text of a `value` element is not a usable number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NumberError {
    /// `NaN` or infinity.
    NotFinite,
    /// Not of the form `[-+]digits[.digits][e[-+]digits]`.
    Malformed,
    /// More digits than an `i64` mantissa holds.
    MantissaTooLong,
    /// A decimal exponent outside `±MAX_EXP10`.
    ExponentOutOfRange,
    /// A magnitude above [`MAX_MAGNITUDE`] base units.
    Implausible,
    /// An energy register below zero (registers only count up).
    NegativeEnergy,
    /// An energy register with digits below one milli-unit, which the exact milli-unit
    /// storage would have to round away.
    NotWholeMilli,
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFinite => "not a finite number",
            Self::Malformed => "not a number of the form [-]digits[.digits][e[-+]digits]",
            Self::MantissaTooLong => "too many digits for a 64-bit mantissa",
            Self::ExponentOutOfRange => "decimal exponent outside -30..=30",
            Self::Implausible => "implausibly large (magnitude above 1e15 base units)",
            Self::NegativeEnergy => "energy register is negative",
            Self::NotWholeMilli => {
                "energy register has digits below one milli-unit (not exactly representable)"
            }
        })
    }
}

impl core::error::Error for NumberError {}

impl Number {
    /// Zero, as the gateway writes an empty register (`0e+0`).
    pub const ZERO: Number = Number {
        mantissa: 0,
        exp10: 0,
    };

    /// `mantissa × 10^exp10`, or `None` if `|exp10| > MAX_EXP10`.
    #[must_use]
    pub fn new(mantissa: i64, exp10: i32) -> Option<Self> {
        (-MAX_EXP10..=MAX_EXP10)
            .contains(&exp10)
            .then_some(Self { mantissa, exp10 })
    }

    /// A register in milli-units, written as `<milli>e-3`.
    #[must_use]
    pub fn from_milli(milli: i64) -> Self {
        Self {
            mantissa: milli,
            exp10: -3,
        }
    }

    /// The integer mantissa, trailing zeros included.
    #[must_use]
    pub fn mantissa(self) -> i64 {
        self.mantissa
    }

    /// The power of ten the mantissa is scaled by.
    #[must_use]
    pub fn exp10(self) -> i32 {
        self.exp10
    }

    /// The value as the crate's canonical [`Decimal`] (for value comparison).
    #[must_use]
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(i128::from(self.mantissa), self.exp10)
    }

    /// The nearest `f64`.
    #[must_use]
    pub fn to_f64(self) -> f64 {
        self.to_decimal().to_f64()
    }

    /// The value in milli-units, exactly: `1842331250e-2` Wh is `18_423_312_500` mWh.
    /// `None` if digits below one milli-unit are not zero or the result overflows `i64`;
    /// energy is never rounded.
    #[must_use]
    pub fn to_milli(self) -> Option<i64> {
        if self.mantissa == 0 {
            return Some(0);
        }
        // |exp10| <= 30, so the shift is within -27..=33 and the i128 powers below exist
        // whenever the result can fit.
        let shift = self.exp10 + 3;
        let mantissa = i128::from(self.mantissa);
        let milli = if shift >= 0 {
            mantissa.checked_mul(10_i128.checked_pow(shift.unsigned_abs())?)?
        } else {
            let divisor = 10_i128.checked_pow(shift.unsigned_abs())?;
            if mantissa % divisor != 0 {
                return None;
            }
            mantissa / divisor
        };
        i64::try_from(milli).ok()
    }

    /// Parses the text of a `value` element strictly: optional sign, digits with an
    /// optional `.`, optional exponent; surrounding whitespace is ignored. Every digit
    /// counts towards the mantissa, so the scale is kept.
    ///
    /// # Errors
    /// [`NumberError`] naming the problem; this never panics.
    pub fn parse(text: &str) -> Result<Self, NumberError> {
        let bytes = text.trim().as_bytes();
        let (negative, mut rest) = match bytes.split_first() {
            Some((b'-', tail)) => (true, tail),
            Some((b'+', tail)) => (false, tail),
            _ => (false, bytes),
        };
        let lower = |n: usize| rest.get(..n).map(<[u8]>::to_ascii_lowercase);
        if lower(3).is_some_and(|head| head == b"nan" || head == b"inf") {
            return Err(NumberError::NotFinite);
        }

        // Accumulated negatively so that `i64::MIN` itself is readable.
        let mut mantissa: i64 = 0;
        let mut digits = 0_usize;
        let mut fraction_digits: i64 = 0;
        let mut in_fraction = false;
        while let Some((&b, tail)) = rest.split_first() {
            match b {
                b'0'..=b'9' => {
                    mantissa = mantissa
                        .checked_mul(10)
                        .and_then(|m| m.checked_sub(i64::from(b - b'0')))
                        .ok_or(NumberError::MantissaTooLong)?;
                    digits += 1;
                    if in_fraction {
                        fraction_digits += 1;
                    }
                }
                b'.' if !in_fraction => in_fraction = true,
                _ => break,
            }
            rest = tail;
        }
        if digits == 0 {
            return Err(NumberError::Malformed);
        }

        let mut exponent: i64 = 0;
        if let Some((&e, tail)) = rest.split_first() {
            if !e.eq_ignore_ascii_case(&b'e') {
                return Err(NumberError::Malformed);
            }
            let (exp_negative, exp_digits) = match tail.split_first() {
                Some((b'-', t)) => (true, t),
                Some((b'+', t)) => (false, t),
                _ => (false, tail),
            };
            if exp_digits.is_empty() || !exp_digits.iter().all(u8::is_ascii_digit) {
                return Err(NumberError::Malformed);
            }
            // Saturate far beyond the allowed range; the range check below rejects it.
            let magnitude = exp_digits.iter().fold(0_i64, |acc, d| {
                (acc * 10 + i64::from(d - b'0')).min(i64::from(i32::MAX))
            });
            exponent = if exp_negative { -magnitude } else { magnitude };
        }

        let exp10 = i32::try_from(exponent - fraction_digits)
            .map_err(|_| NumberError::ExponentOutOfRange)?;
        let mantissa = if negative {
            mantissa
        } else {
            mantissa.checked_neg().ok_or(NumberError::MantissaTooLong)?
        };
        let number = Self::new(mantissa, exp10).ok_or(NumberError::ExponentOutOfRange)?;
        if abs(number.to_f64()) > MAX_MAGNITUDE {
            return Err(NumberError::Implausible);
        }
        Ok(number)
    }

    /// Plain notation with the exact digits: `230.12`, `-0.005`, `2815.0`. A positive
    /// exponent cannot be written plainly without changing the scale, so it falls back to
    /// [`Number::write_scientific`] (`28e+2`); either form parses back to `self`.
    pub(crate) fn write_plain(self, out: &mut String) {
        use fmt::Write as _;
        if self.exp10 > 0 {
            return self.write_scientific(out);
        }
        if self.mantissa < 0 {
            out.push('-');
        }
        let digits = alloc::format!("{}", self.mantissa.unsigned_abs());
        let fraction_len = self.exp10.unsigned_abs() as usize;
        if fraction_len == 0 {
            out.push_str(&digits);
        } else if digits.len() > fraction_len {
            let (int, fraction) = digits.split_at(digits.len() - fraction_len);
            let _ = write!(out, "{int}.{fraction}");
        } else {
            out.push_str("0.");
            (digits.len()..fraction_len).for_each(|_| out.push('0'));
            out.push_str(&digits);
        }
    }

    /// MiSmart's energy notation, mantissa and signed exponent: `1842331250e-2`, `0e+0`.
    pub(crate) fn write_scientific(self, out: &mut String) {
        use fmt::Write as _;
        let sign = if self.exp10 < 0 { '-' } else { '+' };
        let _ = write!(out, "{}e{sign}{}", self.mantissa, self.exp10.unsigned_abs());
    }
}

impl fmt::Display for Number {
    /// Plain notation with the exact digits (`398.60`, `-0.005`) where the exponent is
    /// not positive, `28e+2` where it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_plain(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn n(mantissa: i64, exp10: i32) -> Number {
        Number::new(mantissa, exp10).unwrap()
    }

    #[test]
    fn parses_keeping_the_scale() {
        assert_eq!(Number::parse("1842331250e-2"), Ok(n(1_842_331_250, -2)));
        assert_eq!(Number::parse("0e+0"), Ok(n(0, 0)));
        assert_eq!(Number::parse("20010e+0"), Ok(n(20010, 0)));
        assert_eq!(Number::parse("398.60"), Ok(n(39860, -2)));
        assert_eq!(Number::parse(" -312.4\n"), Ok(n(-3124, -1)));
        assert_eq!(Number::parse("+5"), Ok(n(5, 0)));
        assert_eq!(Number::parse(".5"), Ok(n(5, -1)));
        assert_eq!(Number::parse("5."), Ok(n(5, 0)));
        assert_eq!(Number::parse("0.005"), Ok(n(5, -3)));
        assert_eq!(Number::parse("28E2"), Ok(n(28, 2)));
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        for (text, error) in [
            ("", NumberError::Malformed),
            ("-", NumberError::Malformed),
            (".", NumberError::Malformed),
            ("1.2.3", NumberError::Malformed),
            ("12x", NumberError::Malformed),
            ("12 V", NumberError::Malformed),
            ("1e", NumberError::Malformed),
            ("1e+", NumberError::Malformed),
            ("1e2.5", NumberError::Malformed),
            ("0x10", NumberError::Malformed),
            ("NaN", NumberError::NotFinite),
            ("-inf", NumberError::NotFinite),
            ("Infinity", NumberError::NotFinite),
            ("99999999999999999999", NumberError::MantissaTooLong),
            ("1e31", NumberError::ExponentOutOfRange),
            ("1e-99999999999", NumberError::ExponentOutOfRange),
            ("1e99999999999", NumberError::ExponentOutOfRange),
            ("1e308", NumberError::ExponentOutOfRange),
            ("2e15", NumberError::Implausible),
        ] {
            assert_eq!(Number::parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn milli_units_are_exact_or_refused() {
        assert_eq!(n(1_842_331_250, -2).to_milli(), Some(18_423_312_500));
        assert_eq!(n(0, 0).to_milli(), Some(0));
        assert_eq!(n(0, -30).to_milli(), Some(0));
        assert_eq!(n(20010, 0).to_milli(), Some(20_010_000));
        assert_eq!(n(1_230_000, -6).to_milli(), Some(1230));
        assert_eq!(n(1_234_567, -6).to_milli(), None);
        assert_eq!(n(1, 30).to_milli(), None);
        assert_eq!(n(i64::MAX, 0).to_milli(), None);
        assert_eq!(n(-5, -3).to_milli(), Some(-5));
    }

    #[test]
    fn writes_both_notations_exactly() {
        let plain = |m, e| {
            let mut s = String::new();
            n(m, e).write_plain(&mut s);
            s
        };
        let scientific = |m, e| {
            let mut s = String::new();
            n(m, e).write_scientific(&mut s);
            s
        };
        assert_eq!(plain(23012, -2), "230.12");
        assert_eq!(plain(28150, -1), "2815.0");
        assert_eq!(plain(-3124, -1), "-312.4");
        assert_eq!(plain(-5, -3), "-0.005");
        assert_eq!(plain(7, 0), "7");
        assert_eq!(plain(28, 2), "28e+2");
        assert_eq!(scientific(1_842_331_250, -2), "1842331250e-2");
        assert_eq!(scientific(0, 0), "0e+0");
        assert_eq!(scientific(i64::MIN, -30), "-9223372036854775808e-30");
        assert_eq!(n(5, -1).to_string(), "0.5");
    }

    #[test]
    fn every_written_form_parses_back() {
        for (m, e) in [
            (1, -30),
            (-1, 30),
            (0, -5),
            (123_456, -3),
            (i64::MAX, -30),
            (i64::MIN, -30),
        ] {
            let number = n(m, e);
            let (mut plain, mut scientific) = (String::new(), String::new());
            number.write_plain(&mut plain);
            number.write_scientific(&mut scientific);
            // Magnitude checks aside (1e30 is implausible), the digits must survive.
            for text in [plain, scientific] {
                match Number::parse(&text) {
                    Ok(back) => assert_eq!(back, number, "{text}"),
                    Err(error) => assert_eq!(error, NumberError::Implausible, "{text}"),
                }
            }
        }
    }
}
