//! The CSV writer (the export's, and the alarm history's): RFC 4180 fields, formula
//! defusing, exact decimals from integers, RFC 3339 timestamps, written straight into a byte
//! buffer (the export's hot loop; no `format!`).

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Offset, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;

/// The field separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    Comma,
    Semicolon,
}

/// The decimal mark of numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalMark {
    Point,
    Comma,
}

/// How the file is written: `Comma`/`Point` by default; `Semicolon`/`Comma` is what Excel
/// expects in most of Europe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub separator: Separator,
    pub decimal: DecimalMark,
    /// Start with a UTF-8 byte order mark (Excel then reads the file as UTF-8).
    pub bom: bool,
}

impl Default for Format {
    fn default() -> Self {
        Self {
            separator: Separator::Comma,
            decimal: DecimalMark::Point,
            bom: false,
        }
    }
}

pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A buffer of CSV rows. Fields are appended left to right; [`Csv::end_row`] ends a row.
pub struct Csv {
    buf: BytesMut,
    sep: u8,
    decimal: u8,
    /// The decimal mark is the separator: numbers with a fraction must be quoted.
    quote_numbers: bool,
    at_row_start: bool,
    capacity: usize,
}

impl Csv {
    pub fn new(format: Format, capacity: usize) -> Self {
        let sep = match format.separator {
            Separator::Comma => b',',
            Separator::Semicolon => b';',
        };
        let decimal = match format.decimal {
            DecimalMark::Point => b'.',
            DecimalMark::Comma => b',',
        };
        Self {
            buf: BytesMut::with_capacity(capacity),
            sep,
            decimal,
            quote_numbers: sep == decimal,
            at_row_start: true,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything written so far, leaving the buffer empty.
    pub fn take(&mut self) -> Bytes {
        let out = self.buf.split().freeze();
        self.buf.reserve(self.capacity);
        out
    }

    /// Bytes outside any field (the byte order mark).
    pub fn preamble(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn start_field(&mut self) {
        if self.at_row_start {
            self.at_row_start = false;
        } else {
            self.buf.extend_from_slice(&[self.sep]);
        }
    }

    /// Ends the row (CRLF, as RFC 4180 says).
    pub fn end_row(&mut self) {
        self.buf.extend_from_slice(b"\r\n");
        self.at_row_start = true;
    }

    pub fn empty(&mut self) {
        self.start_field();
    }

    /// A field the caller knows needs no quoting: ASCII without separators, quotes or line
    /// breaks (timestamps, fixed words, register names checked by the database).
    pub fn plain(&mut self, s: &str) {
        debug_assert!(!needs_quotes(s.as_bytes(), self.sep), "{s:?}");
        self.start_field();
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Fields encoded earlier by a [`Csv`] of the same format (see [`Csv::take`]).
    pub fn fields(&mut self, encoded: &[u8]) {
        self.start_field();
        self.buf.extend_from_slice(encoded);
    }

    /// Free text: quoted when it holds the separator, a quote, CR or LF (quotes doubled).
    ///
    /// Text that a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, tab
    /// or CR) gets a leading `'`: meter names come from gateways and users, and a CSV must not
    /// run a formula on the computer that opens it (OWASP "CSV injection").
    pub fn text(&mut self, s: &str) {
        self.start_field();
        let bytes = s.as_bytes();
        let formula = is_formula(bytes);
        if !needs_quotes(bytes, self.sep) {
            if formula {
                self.buf.extend_from_slice(b"'");
            }
            self.buf.extend_from_slice(bytes);
            return;
        }
        self.buf.extend_from_slice(b"\"");
        if formula {
            self.buf.extend_from_slice(b"'");
        }
        for part in s.split_inclusive('"') {
            self.buf.extend_from_slice(part.as_bytes());
            if part.ends_with('"') {
                self.buf.extend_from_slice(b"\"");
            }
        }
        self.buf.extend_from_slice(b"\"");
    }

    /// An exact decimal: `value` × 10^-`scale`, trailing zeros of the fraction removed
    /// (`decimal(1234567, 3)` is `1234.567`, `decimal(1500, 3)` is `1.5`).
    pub fn decimal(&mut self, value: i128, scale: u32) {
        let mut digits = [0u8; 48];
        let n = write_decimal(&mut digits, value, scale, self.decimal);
        self.number(&digits[..n]);
    }

    /// An integer.
    pub fn integer(&mut self, value: i64) {
        self.decimal(i128::from(value), 0);
    }

    /// A float4 measurement as its shortest round-trip decimal (what PostgreSQL prints).
    pub fn float(&mut self, value: f32) {
        self.float_text(&value.to_string());
    }

    /// A float8 as its shortest round-trip decimal.
    pub fn float64(&mut self, value: f64) {
        self.float_text(&value.to_string());
    }

    /// A float's `Display` text, with the file's decimal mark. A number, negative ones
    /// included, is never taken for a formula: only [`Csv::text`] is defused.
    fn float_text(&mut self, text: &str) {
        if self.decimal == b'.' {
            self.number(text.as_bytes());
        } else {
            let swapped: Vec<u8> = text
                .bytes()
                .map(|b| if b == b'.' { self.decimal } else { b })
                .collect();
            self.number(&swapped);
        }
    }

    /// `part / whole` in percent with two decimals, rounded half up; empty when `whole` is 0.
    pub fn percent(&mut self, part: u64, whole: u64) {
        if whole == 0 {
            self.empty();
            return;
        }
        let hundredths = (u128::from(part) * 20_000 + u128::from(whole)) / (2 * u128::from(whole));
        let mut digits = [0u8; 48];
        let n = write_decimal(
            &mut digits,
            i128::try_from(hundredths).unwrap_or(i128::MAX),
            2,
            self.decimal,
        );
        self.number(&digits[..n]);
    }

    fn number(&mut self, digits: &[u8]) {
        self.start_field();
        if self.quote_numbers && digits.contains(&self.decimal) {
            self.buf.extend_from_slice(b"\"");
            self.buf.extend_from_slice(digits);
            self.buf.extend_from_slice(b"\"");
        } else {
            self.buf.extend_from_slice(digits);
        }
    }

    /// An instant in UTC: `2026-03-29T01:00:00Z` (fractional seconds only when present).
    pub fn utc(&mut self, ts: DateTime<Utc>) {
        self.start_field();
        write_timestamp(&mut self.buf, ts, None);
    }

    /// An instant as local wall-clock time with its offset: `2026-03-29T03:00:00+02:00`.
    pub fn local(&mut self, ts: DateTime<Utc>, offset_secs: i32) {
        self.start_field();
        write_timestamp(&mut self.buf, ts, Some(offset_secs));
    }
}

/// The UTC offset of `tz` at `ts`, in seconds.
pub fn offset_at(tz: Tz, ts: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&ts.naive_utc())
        .fix()
        .local_minus_utc()
}

/// Whether a spreadsheet would read text as a formula: OWASP's list of leading characters
/// (`=`, `+`, `-`, `@`, tab, carriage return).
fn is_formula(bytes: &[u8]) -> bool {
    matches!(
        bytes.first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

fn needs_quotes(bytes: &[u8], sep: u8) -> bool {
    bytes
        .iter()
        .any(|&b| b == sep || b == b'"' || b == b'\r' || b == b'\n')
}

/// Writes `value` × 10^-`scale` into `out`; returns the length.
fn write_decimal(out: &mut [u8; 48], value: i128, scale: u32, mark: u8) -> usize {
    let mut abs = value.unsigned_abs();
    let mut scale = scale;
    // Trailing zeros of the fraction say nothing: drop them.
    while scale > 0 && abs % 10 == 0 {
        abs /= 10;
        scale -= 1;
    }
    // Digits, least significant first, into the end of a scratch buffer.
    let mut scratch = [0u8; 48];
    let mut i = scratch.len();
    let mut written = 0u32;
    loop {
        i -= 1;
        scratch[i] = b'0' + (abs % 10) as u8;
        abs /= 10;
        written += 1;
        if written == scale {
            i -= 1;
            scratch[i] = mark;
        }
        if abs == 0 && written > scale {
            break;
        }
    }
    let mut n = 0;
    if value < 0 {
        out[0] = b'-';
        n = 1;
    }
    let len = scratch.len() - i;
    out[n..n + len].copy_from_slice(&scratch[i..]);
    n + len
}

/// RFC 3339 with `Z` (offset `None`) or `±HH:MM`, seconds always, fractions as chrono's
/// `AutoSi` writes them. Years outside 0..=9999 (never stored in practice) go through chrono.
fn write_timestamp(buf: &mut BytesMut, ts: DateTime<Utc>, offset: Option<i32>) {
    let shift = i64::from(offset.unwrap_or(0));
    let secs = ts.timestamp() + shift;
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        let text = match offset {
            None => ts.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            Some(o) => match chrono::FixedOffset::east_opt(o) {
                Some(fixed) => ts
                    .with_timezone(&fixed)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false),
                None => ts.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            },
        };
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    let mut out = [0u8; 40];
    let year = year as u32;
    put2(&mut out[0..2], year / 100);
    put2(&mut out[2..4], year % 100);
    out[4] = b'-';
    put2(&mut out[5..7], month);
    out[7] = b'-';
    put2(&mut out[8..10], day);
    out[10] = b'T';
    let in_day = in_day as u32;
    put2(&mut out[11..13], in_day / 3600);
    out[13] = b':';
    put2(&mut out[14..16], in_day / 60 % 60);
    out[16] = b':';
    put2(&mut out[17..19], in_day % 60);
    let mut n = 19;
    let nanos = ts.timestamp_subsec_nanos();
    if nanos != 0 {
        let (value, width) = if nanos % 1_000_000 == 0 {
            (nanos / 1_000_000, 3)
        } else if nanos % 1_000 == 0 {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        out[n] = b'.';
        let mut v = value;
        for k in (0..width).rev() {
            out[n + 1 + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        n += 1 + width;
    }
    match offset {
        None => {
            out[n] = b'Z';
            n += 1;
        }
        Some(o) => {
            out[n] = if o < 0 { b'-' } else { b'+' };
            let minutes = o.unsigned_abs() / 60;
            put2(&mut out[n + 1..n + 3], minutes / 60);
            out[n + 3] = b':';
            put2(&mut out[n + 4..n + 6], minutes % 60);
            n += 6;
        }
    }
    buf.extend_from_slice(&out[..n]);
}

fn put2(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(format: Format, write: impl FnOnce(&mut Csv)) -> String {
        let mut csv = Csv::new(format, 64);
        write(&mut csv);
        String::from_utf8(csv.take().to_vec()).unwrap()
    }

    fn europe() -> Format {
        Format {
            separator: Separator::Semicolon,
            decimal: DecimalMark::Comma,
            bom: false,
        }
    }

    #[test]
    fn decimals_are_exact() {
        let d = |v: i128, s: u32| one(Format::default(), |c| c.decimal(v, s));
        assert_eq!(d(1_234_567, 3), "1234.567");
        assert_eq!(d(1_234_000, 3), "1234");
        assert_eq!(d(1_500, 3), "1.5");
        assert_eq!(d(5, 3), "0.005");
        assert_eq!(d(0, 3), "0");
        assert_eq!(d(-5, 3), "-0.005");
        assert_eq!(d(-1_000, 3), "-1");
        assert_eq!(d(175_308_514_000, 12), "0.175308514");
        assert_eq!(d(i128::from(i64::MAX), 3), "9223372036854775.807");
        assert_eq!(d(i128::from(i64::MIN), 0), "-9223372036854775808");
        assert_eq!(one(europe(), |c| c.decimal(1_234_567, 3)), "1234,567");
    }

    #[test]
    fn comma_decimals_are_quoted_when_the_separator_is_a_comma() {
        let f = Format {
            decimal: DecimalMark::Comma,
            ..Format::default()
        };
        let row = one(f, |c| {
            c.decimal(1_500, 3);
            c.decimal(2_000, 3);
            c.float(0.25);
            c.end_row();
        });
        assert_eq!(row, "\"1,5\",2,\"0,25\"\r\n");
    }

    #[test]
    fn text_is_quoted_per_rfc_4180() {
        let row = one(Format::default(), |c| {
            c.text("plain");
            c.text("a,b");
            c.text("say \"hi\"");
            c.text("two\nlines");
            c.text("semi;colon");
            c.end_row();
        });
        assert_eq!(
            row,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",semi;colon\r\n"
        );
        let row = one(europe(), |c| {
            c.text("a,b");
            c.text("semi;colon");
            c.end_row();
        });
        assert_eq!(row, "a,b;\"semi;colon\"\r\n");
    }

    #[test]
    fn formulas_are_defused() {
        let row = one(Format::default(), |c| {
            c.text("=1+1");
            c.text("@SUM(A1),x");
            c.text("a=b");
        });
        assert_eq!(row, "'=1+1,\"'@SUM(A1),x\",a=b");
    }

    /// OWASP "CSV injection": every leading character a spreadsheet takes for a formula gets a
    /// `'`, quoted or not; text that merely contains one does not; numbers stay numbers.
    #[test]
    fn the_defusing_rule() {
        let text = |s: &str| one(Format::default(), |c| c.text(s));
        assert_eq!(text("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(text("+1"), "'+1");
        assert_eq!(text("-1"), "'-1");
        assert_eq!(text("@cmd"), "'@cmd");
        assert_eq!(text("\tx"), "'\tx");
        assert_eq!(text("\rx"), "\"'\rx\"");
        assert_eq!(text("x-1"), "x-1");
        assert_eq!(text("'quoted"), "'quoted");
        assert_eq!(text(""), "");
        assert_eq!(one(europe(), |c| c.text("-a;b")), "\"'-a;b\"");
        // A negative number is a number, not text: never prefixed.
        assert_eq!(one(Format::default(), |c| c.decimal(-1_500, 3)), "-1.5");
        assert_eq!(one(Format::default(), |c| c.integer(-7)), "-7");
        assert_eq!(one(Format::default(), |c| c.float(-0.5)), "-0.5");
        assert_eq!(one(Format::default(), |c| c.float64(-230.25)), "-230.25");
        assert_eq!(one(europe(), |c| c.float64(-230.25)), "-230,25");
    }

    #[test]
    fn timestamps() {
        let t = DateTime::parse_from_rfc3339("2026-03-29T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(one(Format::default(), |c| c.utc(t)), "2026-03-29T01:00:00Z");
        assert_eq!(
            one(Format::default(), |c| c.local(t, 7200)),
            "2026-03-29T03:00:00+02:00"
        );
        assert_eq!(
            one(Format::default(), |c| c.local(t, -(3 * 3600 + 30 * 60))),
            "2026-03-28T21:30:00-03:30"
        );
        let ms = t + chrono::Duration::milliseconds(250);
        assert_eq!(
            one(Format::default(), |c| c.utc(ms)),
            "2026-03-29T01:00:00.250Z"
        );
        let us = t + chrono::Duration::microseconds(7);
        assert_eq!(
            one(Format::default(), |c| c.utc(us)),
            "2026-03-29T01:00:00.000007Z"
        );
        // Agrees with chrono over a range of days, leap years and the epoch included.
        let tz: Tz = "Asia/Kathmandu".parse().unwrap();
        for day in (-800_000i64..800_000).step_by(997) {
            let t = DateTime::from_timestamp(day * 86_400 + 45_296, 0).unwrap();
            assert_eq!(
                one(Format::default(), |c| c.utc(t)),
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
            assert_eq!(
                one(Format::default(), |c| c.local(t, offset_at(tz, t))),
                headend_energy::calendar::local_offset_string(t, tz)
            );
        }
    }

    #[test]
    fn percent_rounds_half_up() {
        let p = |a: u64, b: u64| one(Format::default(), |c| c.percent(a, b));
        assert_eq!(p(92, 92), "100");
        assert_eq!(p(1, 3), "33.33");
        assert_eq!(p(2, 3), "66.67");
        assert_eq!(p(1, 8), "12.5");
        assert_eq!(p(0, 96), "0");
        assert_eq!(p(0, 0), "");
    }
}
