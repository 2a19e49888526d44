//! Exact decimal numbers.
//!
//! Energy counters must not pick up binary floating-point error on their way from the
//! gateway's text to the database, so SG value strings are first parsed into a [`Decimal`]
//! (an integer mantissa and a power of ten) and only converted to `f64` where a float is
//! what the caller wants.

use alloc::format;
use core::fmt;
use core::str::FromStr;

use super::ValueError;

/// Exponents of ten larger than this in magnitude are never plausible on the wire; capping
/// the exponent keeps every intermediate computation far away from `i32` overflow.
const MAX_EXP10: i64 = 1_000_000;

/// An exact decimal number `mantissa × 10^exp10`.
///
/// The representation is canonical: the mantissa carries no trailing zero digits and zero is
/// always `0 × 10^0`, so the derived equality is value equality (`1.50` equals `1.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    mantissa: i128,
    exp10: i32,
}

impl Decimal {
    /// Zero.
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        exp10: 0,
    };

    /// `mantissa × 10^exp10`, normalised.
    #[must_use]
    pub fn new(mantissa: i128, exp10: i32) -> Self {
        let (mut mantissa, mut exp10) = (mantissa, exp10);
        if mantissa == 0 {
            return Self::ZERO;
        }
        while mantissa % 10 == 0 && exp10 < i32::MAX {
            mantissa /= 10;
            exp10 += 1;
        }
        Self { mantissa, exp10 }
    }

    /// The integer mantissa (no trailing zeros).
    #[must_use]
    pub fn mantissa(self) -> i128 {
        self.mantissa
    }

    /// The power of ten the mantissa is scaled by.
    #[must_use]
    pub fn exp10(self) -> i32 {
        self.exp10
    }

    /// Whether the value is zero.
    #[must_use]
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// Whether the value is below zero (`-0` is zero, not negative).
    #[must_use]
    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The value multiplied by `10^shift` (used to apply SI prefixes), or `None` if the
    /// exponent would leave the representable range.
    #[must_use]
    pub fn shifted(self, shift: i32) -> Option<Self> {
        if self.is_zero() {
            return Some(self);
        }
        Some(Self {
            mantissa: self.mantissa,
            exp10: self.exp10.checked_add(shift)?,
        })
    }

    /// The nearest `f64` (correctly rounded: `"229.5"` gives exactly `229.5`).
    #[must_use]
    pub fn to_f64(self) -> f64 {
        // core's float parser is correctly rounded, which hand-rolled `m * 10^e` is not.
        format!("{}e{}", self.mantissa, self.exp10)
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// The value as an integer count of `10^scale_exp10` units, e.g. `scale_exp10 = -3` turns
    /// kWh-derived Wh into mWh: `184233.125 kWh` → `184_233_125_000`.
    ///
    /// Digits below the scale are rounded half away from zero. `None` if the result does not
    /// fit in an `i64`.
    #[must_use]
    pub fn to_scaled_i64(self, scale_exp10: i32) -> Option<i64> {
        if self.is_zero() {
            return Some(0);
        }
        let shift = i64::from(self.exp10) - i64::from(scale_exp10);
        let scaled = if shift >= 0 {
            let factor = 10_i128.checked_pow(u32::try_from(shift).ok()?)?;
            self.mantissa.checked_mul(factor)?
        } else {
            // |mantissa| < 1.8e38, so dividing by 10^39 or more always rounds to zero.
            let Some(divisor) = u32::try_from(-shift)
                .ok()
                .and_then(|d| 10_i128.checked_pow(d))
            else {
                return Some(0);
            };
            let quotient = self.mantissa / divisor;
            let remainder = self.mantissa % divisor;
            // Compare 2·|r| with the divisor without overflowing (|r| < divisor).
            if remainder.unsigned_abs() >= divisor.unsigned_abs() - remainder.unsigned_abs() {
                quotient + self.mantissa.signum()
            } else {
                quotient
            }
        };
        i64::try_from(scaled).ok()
    }
}

impl fmt::Display for Decimal {
    /// Plain notation (`184233.125`, `-0.5`, `1200`) for ordinary exponents and
    /// `<mantissa>e<exp>` beyond that; both forms parse back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.exp10;
        if (0..=24).contains(&exp) {
            write!(f, "{}", self.mantissa)?;
            (0..exp).try_for_each(|_| f.write_str("0"))
        } else if (-48..0).contains(&exp) {
            let digits = format!("{}", self.mantissa.unsigned_abs());
            let frac_len = exp.unsigned_abs() as usize;
            if self.mantissa < 0 {
                f.write_str("-")?;
            }
            match digits.len().checked_sub(frac_len) {
                Some(0) | None => {
                    f.write_str("0.")?;
                    (digits.len()..frac_len).try_for_each(|_| f.write_str("0"))?;
                    f.write_str(&digits)
                }
                Some(int_len) => {
                    let (int, frac) = digits.split_at(int_len);
                    write!(f, "{int}.{frac}")
                }
            }
        } else {
            write!(f, "{}e{}", self.mantissa, exp)
        }
    }
}

impl FromStr for Decimal {
    type Err = ValueError;

    /// A bare number: optional sign, digits with an optional `.`, optional exponent
    /// (`-1.5e3`); surrounding whitespace is allowed, anything else is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (value, rest) = scan_number(s.trim())?;
        if rest.trim().is_empty() {
            Ok(value)
        } else {
            Err(ValueError::TrailingText(super::excerpt(rest.trim())))
        }
    }
}

/// Scans a number at the start of `s` (which must not start with whitespace) and returns it
/// with the unparsed rest.
pub(crate) fn scan_number(s: &str) -> Result<(Decimal, &str), ValueError> {
    let bytes = s.as_bytes();
    let (negative, mut pos) = match bytes.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let unsigned = s.get(pos..).unwrap_or_default();
    if starts_with_ignore_ascii_case(unsigned, "nan")
        || starts_with_ignore_ascii_case(unsigned, "inf")
    {
        return Err(ValueError::NotFinite);
    }

    let mut acc = Accumulator::default();
    let mut in_fraction = false;
    let mut any_digit = false;
    while let Some(&b) = bytes.get(pos) {
        match b {
            b'0'..=b'9' => {
                acc.push(b - b'0', in_fraction)?;
                any_digit = true;
            }
            b'.' if !in_fraction => in_fraction = true,
            _ => break,
        }
        pos += 1;
    }
    if !any_digit {
        return Err(ValueError::NoNumber);
    }

    let mut exp = acc.exp_adjust + i64::from(acc.pending_zeros);
    if let Some((explicit, len)) = scan_exponent(bytes.get(pos..).unwrap_or_default()) {
        exp += explicit;
        pos += len;
    }
    let rest = s.get(pos..).unwrap_or_default();

    let mantissa = if negative {
        -acc.mantissa
    } else {
        acc.mantissa
    };
    if mantissa == 0 {
        return Ok((Decimal::ZERO, rest));
    }
    if exp > MAX_EXP10 {
        return Err(ValueError::Implausible);
    }
    // Absurdly small magnitudes are zero for every purpose on this wire.
    let Ok(exp10) = i32::try_from(exp.max(-MAX_EXP10)) else {
        return Err(ValueError::Implausible);
    };
    if exp < -MAX_EXP10 {
        return Ok((Decimal::ZERO, rest));
    }
    Ok((Decimal { mantissa, exp10 }, rest))
}

/// Collects digits into a mantissa without trailing zeros, so that long runs of zeros (in
/// either the integer or the fraction part) never overflow the mantissa.
#[derive(Default)]
struct Accumulator {
    mantissa: i128,
    /// Zeros seen since the last non-zero digit, not yet multiplied into the mantissa.
    pending_zeros: u32,
    /// Minus the number of fraction digits.
    exp_adjust: i64,
}

impl Accumulator {
    fn push(&mut self, digit: u8, in_fraction: bool) -> Result<(), ValueError> {
        if in_fraction {
            self.exp_adjust -= 1;
        }
        if digit == 0 {
            if self.mantissa != 0 {
                self.pending_zeros = self.pending_zeros.saturating_add(1);
            }
            return Ok(());
        }
        self.mantissa = self
            .pending_zeros
            .checked_add(1)
            .and_then(|zeros| 10_i128.checked_pow(zeros))
            .and_then(|factor| self.mantissa.checked_mul(factor))
            .and_then(|m| m.checked_add(i128::from(digit)))
            .ok_or(ValueError::TooManyDigits)?;
        self.pending_zeros = 0;
        Ok(())
    }
}

/// `e`/`E`, optional sign, at least one digit. Returns the exponent (saturated far beyond
/// anything plausible) and the number of bytes consumed; `None` leaves the `e` to the caller
/// (it is then reported as an unknown unit).
fn scan_exponent(bytes: &[u8]) -> Option<(i64, usize)> {
    let (first, tail) = bytes.split_first()?;
    if !first.eq_ignore_ascii_case(&b'e') {
        return None;
    }
    let (negative, digits_at) = match tail.first() {
        Some(b'-') => (true, 2),
        Some(b'+') => (false, 2),
        _ => (false, 1),
    };
    let digits = bytes.get(digits_at..)?;
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let value = digits.iter().take(len).fold(0_i64, |acc, b| {
        (acc * 10 + i64::from(b - b'0')).min(10 * MAX_EXP10)
    });
    Some((if negative { -value } else { value }, digits_at + len))
}

fn starts_with_ignore_ascii_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}
