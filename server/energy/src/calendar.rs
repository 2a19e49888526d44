//! Site-local calendars over UTC quarter-hours.
//!
//! Headend stores energy per UTC-aligned quarter-hour (`start % 900 s == 0`). Every offset in
//! use today is a whole number of quarter-hours (+05:45 Kathmandu, +08:45 Eucla, +12:45
//! Chatham included), so a UTC quarter-hour is also a quarter-hour of local time and a site's
//! days, months and years are exact unions of stored intervals.
//!
//! # What a local day is
//!
//! The local day `d` is `[first(d), first(d + 1))` in UTC, where `first(d)` is the first instant
//! whose wall-clock time is at or after local midnight of `d`:
//!
//! - normally local midnight itself;
//! - when midnight does not exist (a DST jump at 00:00, e.g. America/Havana in March), the first
//!   existing instant after it, i.e. the moment of the jump (the day starts at 01:00);
//! - when midnight is ambiguous (a fall-back at 01:00 to 00:00), the earlier occurrence, so the
//!   repeated hour belongs to the new day rather than being split between two.
//!
//! Months and years are unions of their days, so all periods tile time without gaps or
//! overlaps, and a quarter-hour belongs to the period that contains its start. Counting the
//! quarter-hours whose start lies in `[start, end)` also stays well defined for historical
//! offsets that are not quarter-hours (local mean time before 1900s standardisation).
//!
//! A day that a zone skipped entirely (Pacific/Apia 2011-12-30) has empty bounds and zero
//! quarter-hours; [`periods`] leaves such empty spans out because they contain no time.
//!
//! Dates are expected to lie within chrono's range with a day of margin; the functions panic
//! beyond it (years beyond ±262 000), like date arithmetic in chrono itself.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Length of a stored interval in seconds ([`crate::engine::QUARTER_MS`]).
pub const QUARTER_SECS: i64 = crate::engine::QUARTER_MS / 1000;

/// Quarter-hours in a day without a DST change.
pub const QUARTERS_PER_DAY: u32 = 96;

/// Errors from parsing calendar parameters (API query strings, site settings).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Not one of the known period names.
    #[error("unknown period {0:?}: expected one of \"day\", \"month\", \"year\"")]
    UnknownPeriod(String),
    /// Not an IANA zone name; carries a suggestion when only the letter case was wrong.
    #[error(
        "unknown time zone {name:?}: expected an IANA zone name such as \"Europe/Ljubljana\", \
         \"America/New_York\" or \"UTC\"{}",
        suggestion.map(|s| format!(" (did you mean {:?}?)", s.name())).unwrap_or_default()
    )]
    UnknownZone {
        /// The rejected input.
        name: String,
        /// The zone whose name matches the input ignoring case, if any.
        suggestion: Option<Tz>,
    },
}

/// Dates Headend accepts from users (API, pages, contracts): far enough for any real meter
/// history and any contract, and far inside chrono's range, so period arithmetic on them can
/// never overflow.
pub const MIN_YEAR: i32 = 1900;
pub const MAX_YEAR: i32 = 2199;

/// Whether `date` is inside [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn supported(date: NaiveDate) -> bool {
    (MIN_YEAR..=MAX_YEAR).contains(&date.year())
}

/// A calendar period used to bucket energy in a site's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A local day (23, 24 or 25 hours around DST changes).
    Day,
    /// A local calendar month.
    Month,
    /// A local calendar year.
    Year,
}

impl Period {
    /// All periods, shortest first.
    pub const ALL: [Period; 3] = [Period::Day, Period::Month, Period::Year];

    /// The name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// The start date of the period following the one that starts at `start`
    /// (`start` should come from [`period_start`]).
    pub fn next_start(self, start: NaiveDate) -> NaiveDate {
        let start = period_start(start, self);
        match self {
            Period::Day => start.succ_opt(),
            Period::Month if start.month() == 12 => NaiveDate::from_ymd_opt(start.year() + 1, 1, 1),
            Period::Month => NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1),
            Period::Year => NaiveDate::from_ymd_opt(start.year() + 1, 1, 1),
        }
        .expect("date within chrono's range")
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = CalendarError;

    /// Accepts `day`, `month`, `year` in any letter case (query strings are typed by people).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| CalendarError::UnknownPeriod(s.to_owned()))
    }
}

/// Parses an IANA zone name (case-sensitive, as stored in the database), e.g. `Europe/Ljubljana`.
pub fn parse_zone(name: &str) -> Result<Tz, CalendarError> {
    name.parse::<Tz>().map_err(|_| CalendarError::UnknownZone {
        name: name.to_owned(),
        suggestion: chrono_tz::TZ_VARIANTS
            .iter()
            .copied()
            .find(|tz| tz.name().eq_ignore_ascii_case(name.trim())),
    })
}

/// The wall-clock date and time of an instant in `tz`.
pub fn local_datetime(ts: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    ts.with_timezone(&tz).naive_local()
}

/// The local weekday of an instant (of its wall-clock date).
pub fn local_weekday(ts: DateTime<Utc>, tz: Tz) -> Weekday {
    local_datetime(ts, tz).weekday()
}

/// The local wall-clock time of an instant.
pub fn local_time(ts: DateTime<Utc>, tz: Tz) -> NaiveTime {
    local_datetime(ts, tz).time()
}

/// The local day an instant belongs to: the day whose [`period_bounds`] contain it.
///
/// This is the wall-clock date, except in a fall-back that crosses midnight backwards (none in
/// current rules), where the repeated minutes before midnight already belong to the new day, as
/// the day bounds say; keeping both definitions identical is what makes buckets consistent.
pub fn local_date(ts: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let date = local_datetime(ts, tz).date();
    let next = date.succ_opt().expect("date within chrono's range");
    if ts >= day_start(tz, next) {
        next
    } else {
        date
    }
}

/// RFC 3339 text of an instant with its local offset, e.g. `2026-10-25T02:30:00+01:00`
/// (the two 02:30 of a fall-back day differ by their offset).
pub fn local_offset_string(ts: DateTime<Utc>, tz: Tz) -> String {
    ts.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The start date of the period containing `date`: the day itself, the first of its month, or
/// January 1 of its year.
pub fn period_start(date: NaiveDate, period: Period) -> NaiveDate {
    match period {
        Period::Day => Some(date),
        Period::Month => date.with_day(1),
        Period::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1),
    }
    .expect("the first of a month exists")
}

/// The first instant of the local day `date` in `tz` (see the module docs for gaps and folds).
pub fn day_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => gap_end(tz, midnight),
    }
}

/// The first instant whose wall-clock time is after `local`, which falls in a DST gap.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // Find the first existing wall-clock minute after the gap. Gaps are at most a day long
    // (Apia skipped 2011-12-30); two days of margin costs nothing on a rare path.
    let after = (1..=2 * 24 * 60)
        .find_map(
            |minute| match tz.from_local_datetime(&(local + Duration::minutes(minute))) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    Some(t.with_timezone(&Utc))
                }
                LocalResult::None => None,
            },
        )
        .expect("DST gaps are shorter than two days");
    // The transition lies in the preceding minute (the minute before `after` was in the gap);
    // transitions are whole minutes today, but historical ones may fall on any second. Before
    // the transition the wall clock reads less than `local`, from it on at least `local`.
    let reached = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .is_some_and(|t| t.with_timezone(&tz).naive_local() >= local)
    };
    let (mut lo, mut hi) = (after.timestamp() - 60, after.timestamp());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).expect("within range")
}

/// `[start, end)` in UTC of the period containing `start_date` (normalised with
/// [`period_start`], so any date inside the period may be given).
pub fn period_bounds(
    tz: Tz,
    start_date: NaiveDate,
    period: Period,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = period_start(start_date, period);
    (
        day_start(tz, first),
        day_start(tz, period.next_start(first)),
    )
}

/// Number of quarter-hours whose start lies in `[start, end)`.
pub fn quarters_between(start: DateTime<Utc>, end: DateTime<Utc>) -> u32 {
    let first = ceil_quarter_index(start.timestamp());
    let past_last = ceil_quarter_index(end.timestamp());
    u32::try_from((past_last - first).max(0)).expect("fewer than 2^32 quarter-hours")
}

fn ceil_quarter_index(secs: i64) -> i64 {
    -(-secs).div_euclid(QUARTER_SECS)
}

/// Whether an instant starts a stored interval (whole seconds, multiple of 900 s since epoch).
pub fn is_quarter_aligned(ts: DateTime<Utc>) -> bool {
    floor_quarter(ts) == ts
}

/// The start of the stored interval containing `ts`: [`crate::engine::floor_quarter`], the
/// one quarter-hour floor, for a `DateTime`.
pub fn floor_quarter(ts: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(crate::engine::floor_quarter(ts.timestamp_millis()))
        .expect("within range")
}

/// The starts of the quarter-hours whose start lies in `[start, end)`, in order.
pub fn quarter_starts(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + Clone {
    let first = ceil_quarter_index(start.timestamp());
    let past_last = ceil_quarter_index(end.timestamp());
    (first..past_last).map(|i| DateTime::from_timestamp(i * QUARTER_SECS, 0).expect("within range"))
}

/// Quarter-hours in the period containing `date`: 96 on an ordinary day, 92 on a spring-forward
/// day and 100 on a fall-back day in Europe; months and years are the sums of their days.
pub fn quarter_hours_in(tz: Tz, date: NaiveDate, period: Period) -> u32 {
    let (start, end) = period_bounds(tz, date, period);
    quarters_between(start, end)
}

/// One period of a range, clipped to the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeriodSpan {
    /// Local start date of the whole period (the bucket key), even when clipped.
    pub start_date: NaiveDate,
    /// Start of the span in UTC: the period start, or the range start if later.
    pub start_utc: DateTime<Utc>,
    /// End (exclusive) of the span in UTC: the period end, or the range end if earlier.
    pub end_utc: DateTime<Utc>,
    /// Quarter-hours whose start lies in `[start_utc, end_utc)`.
    pub quarters: u32,
    /// The range clipped the period: the span does not cover the whole period.
    pub partial: bool,
}

impl PeriodSpan {
    /// The starts of the span's quarter-hours.
    pub fn quarter_starts(&self) -> impl Iterator<Item = DateTime<Utc>> + Clone {
        quarter_starts(self.start_utc, self.end_utc)
    }
}

/// The periods covering `[from, to)` in `tz`, in order; see [`periods`].
#[derive(Debug, Clone)]
pub struct Periods {
    tz: Tz,
    period: Period,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The next period's start date and UTC start (carried over so each boundary is computed
    /// once); `None` when done.
    next: Option<(NaiveDate, DateTime<Utc>)>,
}

impl Iterator for Periods {
    type Item = PeriodSpan;

    fn next(&mut self) -> Option<PeriodSpan> {
        loop {
            let (date, start) = self.next.take()?;
            if start >= self.to {
                return None;
            }
            let next_date = self.period.next_start(date);
            let end = day_start(self.tz, next_date);
            self.next = Some((next_date, end));
            let span_start = start.max(self.from);
            let span_end = end.min(self.to);
            if span_start >= span_end {
                // A skipped day, or a period that ends exactly where the range starts.
                continue;
            }
            return Some(PeriodSpan {
                start_date: date,
                start_utc: span_start,
                end_utc: span_end,
                quarters: quarters_between(span_start, span_end),
                partial: span_start != start || span_end != end,
            });
        }
    }
}

impl std::iter::FusedIterator for Periods {}

/// The periods of `tz` that intersect `[from, to)`, clipped to it; the first and last spans are
/// `partial` when the range does not start or end on a period boundary. Empty when `from >= to`.
pub fn periods(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>, period: Period) -> Periods {
    let next = (from < to).then(|| {
        let date = period_start(local_date(from, tz), period);
        (date, day_start(tz, date))
    });
    Periods {
        tz,
        period,
        from,
        to,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;
    use chrono_tz::{America, Asia, Australia, Europe};
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ljubljana_spring_forward_day_has_92_quarters() {
        let tz = Europe::Ljubljana;
        let (start, end) = period_bounds(tz, date(2026, 3, 29), Period::Day);
        assert_eq!(start, utc("2026-03-28T23:00:00Z"));
        assert_eq!(end, utc("2026-03-29T22:00:00Z"));
        assert_eq!(quarter_hours_in(tz, date(2026, 3, 29), Period::Day), 92);
        assert_eq!(quarter_hours_in(tz, date(2026, 3, 28), Period::Day), 96);
        assert_eq!(quarter_hours_in(tz, date(2026, 3, 30), Period::Day), 96);
        // 01:45 CET is followed by 03:00 CEST.
        assert_eq!(
            local_offset_string(utc("2026-03-29T00:45:00Z"), tz),
            "2026-03-29T01:45:00+01:00"
        );
        assert_eq!(
            local_offset_string(utc("2026-03-29T01:00:00Z"), tz),
            "2026-03-29T03:00:00+02:00"
        );
    }

    #[test]
    fn ljubljana_fall_back_day_has_100_distinct_contiguous_quarters() {
        let tz = Europe::Ljubljana;
        let day = date(2026, 10, 25);
        let (start, end) = period_bounds(tz, day, Period::Day);
        assert_eq!(start, utc("2026-10-24T22:00:00Z"));
        assert_eq!(end, utc("2026-10-25T23:00:00Z"));
        assert_eq!(quarter_hours_in(tz, day, Period::Day), 100);

        let starts: Vec<_> = quarter_starts(start, end).collect();
        assert_eq!(starts.len(), 100);
        assert_eq!(starts[0], start);
        assert!(starts
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::seconds(QUARTER_SECS)));
        assert_eq!(
            *starts.last().unwrap() + Duration::seconds(QUARTER_SECS),
            end
        );
        assert!(starts.iter().all(|&s| local_date(s, tz) == day));
        // The repeated 02:30 is told apart by its offset.
        let texts: std::collections::BTreeSet<_> =
            starts.iter().map(|&s| local_offset_string(s, tz)).collect();
        assert_eq!(texts.len(), 100);
        assert!(texts.contains("2026-10-25T02:30:00+02:00"));
        assert!(texts.contains("2026-10-25T02:30:00+01:00"));
    }

    #[test]
    fn kathmandu_day_bounds_are_quarter_aligned() {
        let tz = Asia::Kathmandu; // +05:45, no DST
        let (start, end) = period_bounds(tz, date(2026, 6, 1), Period::Day);
        assert_eq!(start, utc("2026-05-31T18:15:00Z"));
        assert_eq!(end, utc("2026-06-01T18:15:00Z"));
        assert!(is_quarter_aligned(start) && is_quarter_aligned(end));
        assert_eq!(quarter_hours_in(tz, date(2026, 6, 1), Period::Day), 96);
        assert_eq!(
            local_date(utc("2026-05-31T18:14:59Z"), tz),
            date(2026, 5, 31)
        );
        assert_eq!(
            local_date(utc("2026-05-31T18:15:00Z"), tz),
            date(2026, 6, 1)
        );
        assert_eq!(
            local_offset_string(utc("2026-05-31T18:15:00Z"), tz),
            "2026-06-01T00:00:00+05:45"
        );
        // Every UTC quarter-hour is a local quarter-hour.
        for q in quarter_starts(start, end) {
            assert_eq!(local_time(q, tz).minute() % 15, 0);
        }
    }

    #[test]
    fn eucla_day_bounds_are_quarter_aligned() {
        let tz = Australia::Eucla; // +08:45
        let (start, end) = period_bounds(tz, date(2026, 1, 15), Period::Day);
        assert_eq!(start, utc("2026-01-14T15:15:00Z"));
        assert_eq!(end, utc("2026-01-15T15:15:00Z"));
        assert!(is_quarter_aligned(start));
        assert_eq!(quarter_hours_in(tz, date(2026, 1, 15), Period::Day), 96);
    }

    #[test]
    fn havana_day_starts_at_one_when_midnight_is_skipped() {
        let tz = America::Havana; // DST starts 2026-03-08 at 00:00 -> 01:00
        let (start, end) = period_bounds(tz, date(2026, 3, 8), Period::Day);
        assert_eq!(start, utc("2026-03-08T05:00:00Z"));
        assert_eq!(local_offset_string(start, tz), "2026-03-08T01:00:00-04:00");
        assert_eq!(end, utc("2026-03-09T04:00:00Z"));
        assert_eq!(quarter_hours_in(tz, date(2026, 3, 8), Period::Day), 92);
        // The day before ends where this one starts.
        assert_eq!(period_bounds(tz, date(2026, 3, 7), Period::Day).1, start);
        assert_eq!(local_date(start, tz), date(2026, 3, 8));
        assert_eq!(
            local_date(start - Duration::seconds(1), tz),
            date(2026, 3, 7)
        );
    }

    #[test]
    fn havana_ambiguous_midnight_takes_the_earlier() {
        let tz = America::Havana; // DST ends 2026-11-01 at 01:00 CDT -> 00:00 CST
        let (start, end) = period_bounds(tz, date(2026, 11, 1), Period::Day);
        assert_eq!(start, utc("2026-11-01T04:00:00Z"));
        assert_eq!(local_offset_string(start, tz), "2026-11-01T00:00:00-04:00");
        assert_eq!(end, utc("2026-11-02T05:00:00Z"));
        assert_eq!(quarter_hours_in(tz, date(2026, 11, 1), Period::Day), 100);
        assert_eq!(quarter_hours_in(tz, date(2026, 10, 31), Period::Day), 96);
    }

    #[test]
    fn month_with_dst_change() {
        let tz = Europe::Ljubljana;
        assert_eq!(
            quarter_hours_in(tz, date(2026, 3, 1), Period::Month),
            31 * 96 - 4
        );
        // Any date of the month gives the same bucket.
        assert_eq!(
            quarter_hours_in(tz, date(2026, 3, 17), Period::Month),
            31 * 96 - 4
        );
        assert_eq!(
            quarter_hours_in(tz, date(2026, 10, 1), Period::Month),
            31 * 96 + 4
        );
        assert_eq!(
            quarter_hours_in(tz, date(2026, 2, 1), Period::Month),
            28 * 96
        );
        let (start, end) = period_bounds(tz, date(2026, 3, 9), Period::Month);
        assert_eq!(start, utc("2026-02-28T23:00:00Z"));
        assert_eq!(end, utc("2026-03-31T22:00:00Z"));
    }

    #[test]
    fn years_common_and_leap() {
        let tz = Europe::Ljubljana;
        assert_eq!(
            quarter_hours_in(tz, date(2026, 7, 4), Period::Year),
            365 * 96
        );
        assert_eq!(
            quarter_hours_in(tz, date(2028, 1, 1), Period::Year),
            366 * 96
        );
        assert_eq!(quarter_hours_in(tz, date(2028, 2, 29), Period::Day), 96);
        assert_eq!(
            quarter_hours_in(tz, date(2028, 2, 1), Period::Month),
            29 * 96
        );
        assert_eq!(
            quarter_hours_in(Tz::UTC, date(2026, 1, 1), Period::Year),
            35_040
        );
        assert_eq!(
            quarter_hours_in(Tz::UTC, date(2028, 1, 1), Period::Year),
            35_136
        );
        let (start, end) = period_bounds(tz, date(2026, 5, 5), Period::Year);
        assert_eq!(start, utc("2025-12-31T23:00:00Z"));
        assert_eq!(end, utc("2026-12-31T23:00:00Z"));
    }

    #[test]
    fn utc_days_are_plain() {
        let (start, end) = period_bounds(Tz::UTC, date(2026, 3, 29), Period::Day);
        assert_eq!(start, utc("2026-03-29T00:00:00Z"));
        assert_eq!(end, utc("2026-03-30T00:00:00Z"));
        assert_eq!(
            local_offset_string(utc("2026-03-29T10:15:00Z"), Tz::UTC),
            "2026-03-29T10:15:00+00:00"
        );
    }

    #[test]
    fn periods_clip_first_and_last_spans() {
        let tz = Europe::Ljubljana;
        let spans: Vec<_> = periods(
            tz,
            utc("2026-03-28T12:00:00Z"),
            utc("2026-03-30T06:00:00Z"),
            Period::Day,
        )
        .collect();
        let summary: Vec<_> = spans
            .iter()
            .map(|s| (s.start_date, s.quarters, s.partial))
            .collect();
        assert_eq!(
            summary,
            [
                (date(2026, 3, 28), 44, true),
                (date(2026, 3, 29), 92, false),
                (date(2026, 3, 30), 32, true),
            ]
        );
        assert_eq!(spans[0].start_utc, utc("2026-03-28T12:00:00Z"));
        assert_eq!(spans[0].end_utc, spans[1].start_utc);
        assert_eq!(spans[2].end_utc, utc("2026-03-30T06:00:00Z"));
    }

    #[test]
    fn periods_months_of_a_year() {
        let tz = Europe::Ljubljana;
        let (start, end) = period_bounds(tz, date(2026, 1, 1), Period::Year);
        let spans: Vec<_> = periods(tz, start, end, Period::Month).collect();
        assert_eq!(spans.len(), 12);
        assert!(spans.iter().all(|s| !s.partial));
        assert_eq!(spans.iter().map(|s| s.quarters).sum::<u32>(), 35_040);
        assert_eq!(spans[2].quarters, 31 * 96 - 4);
        assert_eq!(spans[9].quarters, 31 * 96 + 4);
        assert_eq!(spans[11].start_date, date(2026, 12, 1));
    }

    #[test]
    fn periods_of_an_empty_range() {
        let t = utc("2026-03-28T12:00:00Z");
        assert_eq!(periods(Tz::UTC, t, t, Period::Day).count(), 0);
        assert_eq!(
            periods(Tz::UTC, t, t - Duration::hours(1), Period::Day).count(),
            0
        );
        // A range inside one day gives one partial span.
        let spans: Vec<_> = periods(Tz::UTC, t, t + Duration::minutes(30), Period::Year).collect();
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].quarters, spans[0].partial), (2, true));
        assert_eq!(spans[0].start_date, date(2026, 1, 1));
    }

    #[test]
    fn skipped_day_is_empty() {
        // Samoa moved across the date line: 2011-12-30 did not happen in Pacific/Apia.
        let tz = chrono_tz::Pacific::Apia;
        assert_eq!(quarter_hours_in(tz, date(2011, 12, 30), Period::Day), 0);
        let (start, _) = period_bounds(tz, date(2011, 12, 29), Period::Day);
        let (_, end) = period_bounds(tz, date(2011, 12, 31), Period::Day);
        let days: Vec<_> = periods(tz, start, end, Period::Day)
            .map(|s| s.start_date)
            .collect();
        assert_eq!(days, [date(2011, 12, 29), date(2011, 12, 31)]);
    }

    #[test]
    fn period_parsing_and_serde() {
        assert_eq!("month".parse::<Period>(), Ok(Period::Month));
        assert_eq!("Day".parse::<Period>(), Ok(Period::Day));
        let err = "week".parse::<Period>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown period \"week\": expected one of \"day\", \"month\", \"year\""
        );
        assert_eq!(serde_json::to_string(&Period::Year).unwrap(), "\"year\"");
        assert_eq!(
            serde_json::from_str::<Period>("\"day\"").unwrap(),
            Period::Day
        );
        assert_eq!(Period::Month.to_string(), "month");
    }

    #[test]
    fn zone_parsing() {
        assert_eq!(parse_zone("Europe/Ljubljana"), Ok(Europe::Ljubljana));
        assert_eq!(parse_zone("UTC"), Ok(Tz::UTC));
        let err = parse_zone("Europe/Lubljana").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown time zone \"Europe/Lubljana\": expected an IANA zone name such as \
             \"Europe/Ljubljana\", \"America/New_York\" or \"UTC\""
        );
        let err = parse_zone("europe/ljubljana").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(did you mean \"Europe/Ljubljana\"?)"),
            "{err}"
        );
        assert!(parse_zone("+01:00").is_err());
    }

    #[test]
    fn local_weekday_and_time() {
        let ts = utc("2026-10-24T22:15:00Z");
        assert_eq!(local_weekday(ts, Europe::Ljubljana), Weekday::Sun);
        assert_eq!(local_weekday(ts, Tz::UTC), Weekday::Sat);
        assert_eq!(
            local_time(ts, Europe::Ljubljana),
            NaiveTime::from_hms_opt(0, 15, 0).unwrap()
        );
    }

    #[test]
    fn quarter_helpers() {
        let t = utc("2026-01-01T10:07:30Z");
        assert!(!is_quarter_aligned(t));
        assert_eq!(floor_quarter(t), utc("2026-01-01T10:00:00Z"));
        assert!(is_quarter_aligned(floor_quarter(t)));
        assert_eq!(quarters_between(t, utc("2026-01-01T11:00:00Z")), 3);
        assert_eq!(quarters_between(utc("2026-01-01T11:00:00Z"), t), 0);
    }

    /// Zones with DST, odd offsets, midnight switches, half-hour DST and a skipped day.
    const ZONES: &[Tz] = &[
        Tz::UTC,
        Europe::Ljubljana,
        Europe::London,
        America::Havana,
        America::Santiago,
        America::St_Johns,
        America::New_York,
        Asia::Kathmandu,
        Asia::Kolkata,
        Asia::Tehran,
        Australia::Eucla,
        Australia::Lord_Howe,
        chrono_tz::Pacific::Chatham,
        chrono_tz::Pacific::Apia,
        chrono_tz::Africa::Casablanca,
        chrono_tz::Asia::Gaza,
    ];

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 1980..2100: offsets are whole quarter-hours in all the zones above.
        (315_532_800i64..4_102_444_800).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
    }

    proptest! {
        #[test]
        fn instant_lies_in_its_own_periods(ts in instant(), zone in 0..ZONES.len()) {
            let tz = ZONES[zone];
            let day = local_date(ts, tz);
            for period in Period::ALL {
                let (start, end) = period_bounds(tz, day, period);
                prop_assert!(start <= ts && ts < end, "{period} {day} {start} {end} {ts}");
                prop_assert!(is_quarter_aligned(start) && is_quarter_aligned(end));
                let spans: Vec<_> = periods(tz, ts, end, period).collect();
                prop_assert_eq!(spans.len(), 1);
                prop_assert_eq!(spans[0].start_date, period_start(day, period));
            }
        }

        #[test]
        fn consecutive_days_tile_time(ts in instant(), zone in 0..ZONES.len()) {
            let tz = ZONES[zone];
            let day = local_date(ts, tz);
            let (start, end) = period_bounds(tz, day, Period::Day);
            let next = day.succ_opt().unwrap();
            let (next_start, next_end) = period_bounds(tz, next, Period::Day);
            prop_assert_eq!(end, next_start);
            prop_assert!(next_start <= next_end);
            // The edges belong to the right day on both sides.
            prop_assert_eq!(local_date(start, tz), day);
            prop_assert_eq!(local_date(end - Duration::seconds(1), tz), day);
            prop_assert!(local_date(end, tz) > day);
            let quarters = quarters_between(start, end);
            prop_assert!((88..=104).contains(&quarters), "{} has {}", day, quarters);
        }

        #[test]
        fn spans_tile_a_range(
            from in instant(),
            len in 0i64..(3 * 366 * 86_400),
            zone in 0..ZONES.len(),
            period in 0..3usize,
        ) {
            let tz = ZONES[zone];
            let period = Period::ALL[period];
            let from = floor_quarter(from);
            let to = from + Duration::seconds(len / QUARTER_SECS * QUARTER_SECS);
            let spans: Vec<_> = periods(tz, from, to, period).collect();
            prop_assert_eq!(spans.is_empty(), from == to);
            if let (Some(first), Some(last)) = (spans.first(), spans.last()) {
                prop_assert_eq!(first.start_utc, from);
                prop_assert_eq!(last.end_utc, to);
            }
            for pair in spans.windows(2) {
                prop_assert_eq!(pair[0].end_utc, pair[1].start_utc);
                prop_assert!(pair[0].start_date < pair[1].start_date);
            }
            if spans.len() > 2 {
                for span in &spans[1..spans.len() - 1] {
                    prop_assert!(!span.partial);
                }
            }
            let total: u32 = spans.iter().map(|s| s.quarters).sum();
            prop_assert_eq!(total, quarters_between(from, to));
        }
    }
}
