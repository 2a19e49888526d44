//! The period a site or circuit page shows: a quick range (today, yesterday, the last 7 or 30
//! days, this month, this year) or a day, month, year or five years to browse with
//! earlier/later, always beside the period before; its links and how it reads.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};

use super::DashboardError;

/// The quick ranges of a site page: `?range=<key>` and its label. A circuit has no power
/// curve of its own, so its page offers them from `7d` on (`&QUICK_RANGES[2..]`).
pub const QUICK_RANGES: [(&str, &str); 6] = [
    ("today", "Today"),
    ("yesterday", "Yesterday"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("month", "This month"),
    ("year", "This year"),
];

/// The period a site or circuit page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The power curve of one local day.
    Day(NaiveDate),
    /// Daily bars of the `n` days ending with the date.
    Last(u32, NaiveDate),
    /// Daily bars of the month of the date.
    Month(NaiveDate),
    /// Monthly bars of the year of the date.
    Year(NaiveDate),
    /// Yearly bars of the five years ending with the year of the date.
    Years(NaiveDate),
}

fn add_months(d: NaiveDate, n: i32) -> NaiveDate {
    if n < 0 {
        d.checked_sub_months(Months::new(n.unsigned_abs()))
    } else {
        d.checked_add_months(Months::new(n.unsigned_abs()))
    }
    .unwrap_or(d)
}

impl View {
    /// From the query: `range` (today, yesterday, day, 7d, 30d, month, year) or the older
    /// `by` (day: the days of a month, month: the months of a year, year: five years), with
    /// `date` as the anchor. Without either: this month.
    pub fn parse(
        range: Option<&str>,
        by: Option<&str>,
        date: Option<NaiveDate>,
        today: NaiveDate,
    ) -> Result<Self, DashboardError> {
        let d = date.unwrap_or(today);
        Ok(match (range, by) {
            (Some("today"), _) => Self::Day(today),
            (Some("yesterday"), _) => Self::Day(today.pred_opt().unwrap_or(today)),
            (Some("day"), _) => Self::Day(d),
            (Some("7d"), _) => Self::Last(7, d),
            (Some("30d"), _) => Self::Last(30, d),
            (Some("month"), _) | (None, Some("day")) | (None, None) => Self::Month(d),
            (Some("year"), _) | (None, Some("month")) => Self::Year(d),
            (None, Some("year")) => Self::Years(d),
            (Some(other), _) => {
                return Err(DashboardError::Invalid(format!(
                    "range {other:?} is not one of today, yesterday, day, 7d, 30d, month, year"
                )))
            }
            (None, Some(other)) => {
                return Err(DashboardError::Invalid(format!(
                    "by {other:?} is not one of day, month, year"
                )))
            }
        })
    }

    /// The buckets and the local dates `[first, end)` shown, and those of the period before.
    pub fn spans(self) -> (Period, (NaiveDate, NaiveDate), (NaiveDate, NaiveDate)) {
        let day = |d: NaiveDate, n: i64| d + Duration::days(n);
        match self {
            Self::Day(d) => (Period::Day, (d, day(d, 1)), (day(d, -1), d)),
            Self::Last(n, end) => {
                let n = i64::from(n);
                (
                    Period::Day,
                    (day(end, 1 - n), day(end, 1)),
                    (day(end, 1 - 2 * n), day(end, 1 - n)),
                )
            }
            Self::Month(d) => {
                let first = calendar::period_start(d, Period::Month);
                (
                    Period::Day,
                    (first, add_months(first, 1)),
                    (add_months(first, -1), first),
                )
            }
            Self::Year(d) => {
                let first = calendar::period_start(d, Period::Year);
                (
                    Period::Month,
                    (first, add_months(first, 12)),
                    (add_months(first, -12), first),
                )
            }
            Self::Years(d) => {
                let end = add_months(calendar::period_start(d, Period::Year), 12);
                (
                    Period::Year,
                    (add_months(end, -60), end),
                    (add_months(end, -120), add_months(end, -60)),
                )
            }
        }
    }

    /// The query string of this view.
    pub fn query(self) -> String {
        match self {
            Self::Day(d) => format!("range=day&date={d}"),
            Self::Last(n, d) => format!("range={n}d&date={d}"),
            Self::Month(d) => format!("by=day&date={d}"),
            Self::Year(d) => format!("by=month&date={d}"),
            Self::Years(d) => format!("by=year&date={d}"),
        }
    }

    /// The same kind of view, `steps` periods later (earlier when negative).
    pub fn shifted(self, steps: i32) -> Self {
        match self {
            Self::Day(d) => Self::Day(d + Duration::days(i64::from(steps))),
            Self::Last(n, d) => Self::Last(n, d + Duration::days(i64::from(steps) * i64::from(n))),
            Self::Month(d) => Self::Month(add_months(d, steps)),
            Self::Year(d) => Self::Year(add_months(d, 12 * steps)),
            Self::Years(d) => Self::Years(add_months(d, 60 * steps)),
        }
    }

    /// The quick range this view is, if any.
    pub fn quick(self, today: NaiveDate) -> Option<&'static str> {
        let same = |a: NaiveDate, p: Period| {
            calendar::period_start(a, p) == calendar::period_start(today, p)
        };
        match self {
            Self::Day(d) if d == today => Some("today"),
            Self::Day(d) if Some(d) == today.pred_opt() => Some("yesterday"),
            Self::Last(7, d) if d == today => Some("7d"),
            Self::Last(30, d) if d == today => Some("30d"),
            Self::Month(d) if same(d, Period::Month) => Some("month"),
            Self::Year(d) if same(d, Period::Year) => Some("year"),
            _ => None,
        }
    }

    /// The heading of the period: "Today, Mon 7 Dec 2026", "Last 7 days, 1 Dec – 7 Dec 2026".
    pub fn label(self, today: NaiveDate) -> String {
        let (_, (first, end), _) = self.spans();
        let last = end.pred_opt().unwrap_or(end);
        let named = |name: &str, rest: String| match self.quick(today) {
            Some(_) => format!("{name}, {rest}"),
            None => rest,
        };
        match self {
            Self::Day(d) => {
                let text = d.format("%a %-d %b %Y").to_string();
                match self.quick(today) {
                    Some("today") => format!("Today, {text}"),
                    Some("yesterday") => format!("Yesterday, {text}"),
                    _ => text,
                }
            }
            Self::Last(n, _) => named(
                &format!("Last {n} days"),
                format!("{} – {}", first.format("%-d %b"), last.format("%-d %b %Y")),
            ),
            Self::Month(d) => named("This month", d.format("%B %Y").to_string()),
            Self::Year(d) => named("This year", d.format("%Y").to_string()),
            Self::Years(_) => format!("{} – {}", first.year(), last.year()),
        }
    }

    /// What the period before is called beside this one.
    pub fn previous_name(self) -> &'static str {
        match self {
            Self::Day(_) => "the day before",
            Self::Last(..) => "the days before",
            Self::Month(_) => "the month before",
            Self::Year(_) => "the year before",
            Self::Years(_) => "the five years before",
        }
    }
}

/// A bar's label: the day of the month, the month or the year.
pub fn bar_label(by: Period, d: NaiveDate) -> String {
    match by {
        Period::Day => d.format("%d").to_string(),
        Period::Month => d.format("%b").to_string(),
        Period::Year => d.format("%Y").to_string(),
    }
}

/// An instant in the site's zone, as "no readings since" messages say it.
pub fn local_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %-d %b %Y %H:%M %Z")
        .to_string()
}
