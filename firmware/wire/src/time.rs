//! The gateway's `local_time`: `DD.MM.YYYY hh:mm:ss`, local wall-clock time with no zone.
//!
//! Only the shape is handled here; which instant it denotes (zone, DST gaps and repeats, a
//! clock years off) is decided by the server, which knows the site's time zone.

use alloc::format;
use alloc::string::String;
use core::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

/// Why a `local_time` was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeError {
    /// Not of the shape `DD.MM.YYYY hh:mm:ss`.
    Shape,
    /// The shape is right but there is no such calendar date (e.g. `99.99.2020`).
    NoSuchDate { day: u32, month: u32, year: i32 },
    /// The shape is right but there is no such time of day (e.g. `25:61:00`).
    NoSuchTime { hour: u32, minute: u32, second: u32 },
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape => f.write_str("local time is not of the form DD.MM.YYYY hh:mm:ss"),
            Self::NoSuchDate { day, month, year } => {
                write!(f, "local time names a date that does not exist: {day:02}.{month:02}.{year:04}")
            }
            Self::NoSuchTime {
                hour,
                minute,
                second,
            } => write!(
                f,
                "local time names a time of day that does not exist: {hour:02}:{minute:02}:{second:02}"
            ),
        }
    }
}

impl core::error::Error for TimeError {}

/// Parses `DD.MM.YYYY hh:mm:ss` strictly (two-digit fields, four-digit year, exactly one
/// space); surrounding whitespace is ignored.
///
/// # Errors
/// [`TimeError::Shape`] for anything else, [`TimeError::NoSuchDate`] /
/// [`TimeError::NoSuchTime`] for well-formed but impossible values.
pub fn parse_local_time(text: &str) -> Result<NaiveDateTime, TimeError> {
    const SHAPE: &[u8; 19] = b"DD.MM.YYYY hh:mm:ss";
    let bytes = text.trim().as_bytes();
    if bytes.len() != SHAPE.len() {
        return Err(TimeError::Shape);
    }
    let matches_shape = bytes.iter().zip(SHAPE).all(|(&b, &s)| {
        if s.is_ascii_alphabetic() {
            b.is_ascii_digit()
        } else {
            b == s
        }
    });
    if !matches_shape {
        return Err(TimeError::Shape);
    }
    // Every byte in these ranges is an ASCII digit, checked above.
    let field = |from: usize, to: usize| {
        bytes
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .fold(0_u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let (day, month) = (field(0, 2), field(3, 5));
    let year = i32::try_from(field(6, 10)).map_err(|_| TimeError::Shape)?;
    let (hour, minute, second) = (field(11, 13), field(14, 16), field(17, 19));
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or(TimeError::NoSuchDate {
        day,
        month,
        year,
    })?;
    date.and_hms_opt(hour, minute, second)
        .ok_or(TimeError::NoSuchTime {
            hour,
            minute,
            second,
        })
}

/// Formats a local time the way the SG does (inverse of [`parse_local_time`] for years
/// 0..=9999).
#[must_use]
pub fn format_local_time(time: NaiveDateTime) -> String {
    format!(
        "{:02}.{:02}.{:04} {:02}:{:02}:{:02}",
        time.day(),
        time.month(),
        time.year(),
        time.hour(),
        time.minute(),
        time.second()
    )
}
