//! `measurement@dateTime` (`2026-03-29T00:45:00Z` or `now`) and `measurement@tInterval`
//! (ISO 8601 durations such as `PT060S`, `PT15M`).

use alloc::format;
use alloc::string::String;
use core::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// Intervals below this are written in seconds (`PT060S`), from it on in minutes
/// (`PT15M`), as the gateway does.
const MINUTES_FROM_SECS: u32 = 900;

/// When a measurement was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateTimeSpec {
    /// A UTC instant, whole seconds.
    Utc(DateTime<Utc>),
    /// The literal `now`: the gateway's clock is not set. The receiver substitutes its
    /// receive time and flags the clock as unset.
    Now,
}

impl DateTimeSpec {
    /// Parses `measurement@dateTime`: `YYYY-MM-DDThh:mm:ssZ` strictly, or `now` (any case).
    ///
    /// # Errors
    /// Why the text is not one, for an error message.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        parse_date_time(text)
    }
}

impl fmt::Display for DateTimeSpec {
    /// As the gateway writes it. Sub-second precision is not carried by the format and is
    /// dropped; years outside 0..=9999 do not fit it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Now => f.write_str("now"),
            Self::Utc(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
        }
    }
}

fn parse_date_time(text: &str) -> Result<DateTimeSpec, &'static str> {
    const SHAPE: &[u8; 20] = b"YYYY-MM-DDThh:mm:ssZ";
    const EXPECTED: &str = "expected YYYY-MM-DDThh:mm:ssZ (UTC) or `now`";
    if text.eq_ignore_ascii_case("now") {
        return Ok(DateTimeSpec::Now);
    }
    let bytes = text.as_bytes();
    let shaped = bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(&b, &s)| {
            if s.is_ascii_lowercase() || matches!(s, b'Y' | b'M' | b'D') {
                b.is_ascii_digit()
            } else {
                b == s
            }
        });
    if !shaped {
        return Err(EXPECTED);
    }
    // Every byte in these ranges is an ASCII digit, checked above.
    let field = |from: usize, to: usize| {
        bytes
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .fold(0_u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let year = i32::try_from(field(0, 4)).map_err(|_| EXPECTED)?;
    let date = NaiveDate::from_ymd_opt(year, field(5, 7), field(8, 10))
        .ok_or("names a calendar date that does not exist")?;
    let time = date
        .and_hms_opt(field(11, 13), field(14, 16), field(17, 19))
        .ok_or("names a time of day that does not exist")?;
    Ok(DateTimeSpec::Utc(time.and_utc()))
}

/// Parses an ISO 8601 duration of fixed length: `P[nD][T[nH][nM][nS]]` with integer
/// components (leading zeros allowed, as in `PT060S`). Years, months and weeks are
/// refused (years and months have no fixed length), as are fractions and zero.
///
/// # Errors
/// Why the text is not one, for an error message.
pub fn parse_interval(text: &str) -> Result<u32, &'static str> {
    const NOT_DURATION: &str = "expected an ISO 8601 duration such as PT060S or PT15M";
    const TOO_LONG: &str = "duration is too long";
    const DATE: &[(char, u32)] = &[('D', 86_400)];
    const TIME: &[(char, u32)] = &[('H', 3600), ('M', 60), ('S', 1)];
    let rest = text.strip_prefix('P').ok_or(NOT_DURATION)?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(NOT_DURATION),
        Some((date, time)) => (date, time),
        None => (rest, ""),
    };
    let mut total: u32 = 0;
    let mut components = 0;
    for (part, designators, is_date) in [(date, DATE, true), (time, TIME, false)] {
        // Designators must come in order and at most once: each is looked up among those
        // not yet passed.
        let mut allowed = designators;
        let mut rest = part;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (number, tail) = rest.split_at(digits);
            let mut chars = tail.chars();
            let designator = chars.next().ok_or(NOT_DURATION)?;
            rest = chars.as_str();
            if matches!(designator, '.' | ',') {
                return Err("fractional durations are not supported");
            }
            if number.is_empty() {
                return Err(NOT_DURATION);
            }
            let Some(position) = allowed.iter().position(|&(d, _)| d == designator) else {
                let calendar = is_date && "YMW".contains(designator);
                return Err(if calendar {
                    "durations in years, months or weeks have no fixed length"
                } else {
                    NOT_DURATION
                });
            };
            let (_, unit_secs) = allowed.get(position).copied().ok_or(NOT_DURATION)?;
            allowed = allowed.get(position + 1..).unwrap_or_default();
            let value: u32 = number.parse().map_err(|_| TOO_LONG)?;
            total = value
                .checked_mul(unit_secs)
                .and_then(|secs| total.checked_add(secs))
                .ok_or(TOO_LONG)?;
            components += 1;
        }
    }
    if components == 0 {
        return Err(NOT_DURATION);
    }
    if total == 0 {
        return Err("an averaging interval must be longer than zero");
    }
    Ok(total)
}

/// Formats as the gateway does: `PT060S` below 900 s, whole minutes from there on
/// (`PT15M`), seconds if not whole minutes (`PT905S`).
#[must_use]
pub fn format_interval(secs: u32) -> String {
    if secs < MINUTES_FROM_SECS {
        format!("PT{secs:03}S")
    } else if secs % 60 == 0 {
        format!("PT{}M", secs / 60)
    } else {
        format!("PT{secs}S")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn date_times() {
        let t = parse_date_time("2026-03-29T00:45:00Z").unwrap();
        let DateTimeSpec::Utc(instant) = t else {
            panic!()
        };
        assert_eq!(instant.timestamp(), 1_774_745_100);
        assert_eq!(t.to_string(), "2026-03-29T00:45:00Z");
        assert_eq!(parse_date_time("now"), Ok(DateTimeSpec::Now));
        assert_eq!(parse_date_time("NOW"), Ok(DateTimeSpec::Now));
        assert_eq!(DateTimeSpec::Now.to_string(), "now");
        for bad in [
            "",
            "2026-03-29T00:45:00",
            "2026-03-29 00:45:00Z",
            "2026-03-29T00:45:00+01:00",
            "2026-03-29T00:45:00.5Z",
            "26-03-29T00:45:00Z",
            "2026-3-29T00:45:00Z",
            "2026-03-29T00:45:0xZ",
            "yesterday",
        ] {
            assert!(
                parse_date_time(bad).unwrap_err().contains("expected"),
                "{bad}"
            );
        }
        assert!(parse_date_time("2026-02-30T00:00:00Z")
            .unwrap_err()
            .contains("date"));
        assert!(parse_date_time("2026-03-29T24:00:00Z")
            .unwrap_err()
            .contains("time of day"));
        assert!(parse_date_time("2026-03-29T23:59:60Z").is_err());
    }

    #[test]
    fn intervals() {
        for (text, secs) in [
            ("PT060S", 60),
            ("PT15M", 900),
            ("PT1H", 3600),
            ("PT1H30M", 5400),
            ("P1D", 86_400),
            ("P1DT1S", 86_401),
            ("PT0M5S", 5),
            ("PT0000000000000000060S", 60),
        ] {
            assert_eq!(parse_interval(text), Ok(secs), "{text}");
        }
        for (text, why) in [
            ("", "expected"),
            ("60", "expected"),
            ("P", "expected"),
            ("PT", "expected"),
            ("PT60", "expected"),
            ("PTS", "expected"),
            ("PT5S1M", "expected"),
            ("PT1M1M", "expected"),
            ("pt60s", "expected"),
            ("-PT60S", "expected"),
            ("PT1Y", "expected"),
            ("P1M", "no fixed length"),
            ("P1Y", "no fixed length"),
            ("P1W", "no fixed length"),
            ("PT1.5S", "fractional"),
            ("PT0S", "longer than zero"),
            ("PT99999999999S", "too long"),
            ("P50000D", "too long"),
        ] {
            let error = parse_interval(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn interval_format_follows_the_gateway() {
        assert_eq!(format_interval(60), "PT060S");
        assert_eq!(format_interval(5), "PT005S");
        assert_eq!(format_interval(899), "PT899S");
        assert_eq!(format_interval(900), "PT15M");
        assert_eq!(format_interval(3600), "PT60M");
        assert_eq!(format_interval(905), "PT905S");
        for secs in [1, 60, 899, 900, 905, 3600, 86_400, u32::MAX] {
            assert_eq!(parse_interval(&format_interval(secs)), Ok(secs));
        }
    }
}
