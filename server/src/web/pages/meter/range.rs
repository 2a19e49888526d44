//! The period the meter page shows: the quick ranges and their local days, the period in
//! words, and the power graph's points over it (quarter-hours, hourly or daily means, by its
//! length).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};

use crate::accounting::query::{self};
use crate::dashboard::charts::{self, PowerPoint};
use crate::dashboard::DashboardError;
use crate::fleet::devices;
use crate::web::pages::PageError;
use crate::web::WebState;

// ---- ranges ----------------------------------------------------------------------------

/// The quick ranges of the power graph: `?range=<key>`.
pub(super) const RANGES: [(&str, &str); 7] = [
    ("24h", "Last 24 hours"),
    ("today", "Today"),
    ("yesterday", "Yesterday"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("month", "This month"),
    ("year", "This year"),
];

/// The local days of a quick range on `today` (`None`: the rolling last 24 hours).
pub(super) fn range_days(key: &str, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let tomorrow = today.succ_opt().unwrap_or(today);
    let back = |n: i64| today - Duration::days(n);
    match key {
        "today" => Some((today, tomorrow)),
        "yesterday" => Some((back(1), today)),
        "7d" => Some((back(6), tomorrow)),
        "30d" => Some((back(29), tomorrow)),
        "month" => Some((today.with_day(1).unwrap_or(today), tomorrow)),
        "year" => Some((
            NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today),
            tomorrow,
        )),
        _ => None,
    }
}

/// The longest period the power graph shows (a leap year).
pub const MAX_GRAPH_DAYS: i64 = 366;
/// Up to this many days the graph shows quarter-hours; up to [`query::MAX_PROFILE_DAYS`]
/// hourly means; beyond, daily means.
const QUARTER_DAYS: i64 = 3;

fn day(d: NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}

/// `from` to `to` (not included) as people say it: "7 Dec 2026", "1 Dec 2026 – 7 Dec 2026".
pub(super) fn days_text(from: NaiveDate, to: NaiveDate) -> String {
    let last = to.pred_opt().unwrap_or(to);
    if last <= from {
        day(from)
    } else {
        format!("{} – {}", day(from), day(last))
    }
}

/// The power graph's points over `[start, end)` and how they were made.
pub(super) struct Graph {
    pub(super) points: Vec<PowerPoint>,
    pub(super) title: &'static str,
    pub(super) note: String,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn graph(
    state: &WebState,
    device: &devices::DeviceView,
    tz: Tz,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    (from, to): (NaiveDate, NaiveDate),
    import: &str,
) -> Result<Graph, PageError> {
    let days = (end - start).num_hours().div_euclid(24);
    if days <= QUARTER_DAYS {
        let profile = query::profile(
            &state.read_pool,
            device.site_id,
            device.id,
            &device.serial,
            tz,
            start,
            end,
            Some(import),
        )
        .await
        .or_else(|e| match e {
            // A meter without that register still shows its live values.
            query::QueryError::Invalid(_) => Ok(query::Profile {
                device: device.serial.clone(),
                time_zone: tz.into(),
                from: start,
                to: end,
                registers: Vec::new(),
                power: Vec::new(),
            }),
            other => Err(other),
        })
        .map_err(DashboardError::from)?;
        let points = match profile.registers.first() {
            Some(r) => r
                .intervals
                .iter()
                .map(|i| PowerPoint {
                    label: i.start_local.get(11..16).unwrap_or("").to_owned(),
                    power_w: i.energy.map(|wh| wh * 4.0),
                    estimated: i.quality == headend_energy::engine::Quality::Estimated,
                    start: Some(i.start),
                    interval: charts::quarter_text(i.start, tz),
                    ..PowerPoint::default()
                })
                .collect(),
            None => Vec::new(),
        };
        return Ok(Graph {
            points,
            title: "Power, 15-minute means",
            note: String::new(),
        });
    }
    let quality = |estimated: bool, complete: bool| {
        Some(if estimated {
            charts::Quality::Estimated
        } else if complete {
            charts::Quality::Measured
        } else {
            charts::Quality::Incomplete
        })
    };
    if days <= query::MAX_PROFILE_DAYS {
        let hours = devices::hourly_energy(&state.read_pool, device.id, import, start, end).await?;
        let mut by_hour = hours.into_iter().peekable();
        let first = start.timestamp() - start.timestamp().rem_euclid(3600);
        let mut points = Vec::new();
        let mut t = first;
        while t < end.timestamp() {
            let Some(at) = DateTime::from_timestamp(t, 0) else {
                break;
            };
            let mut found = None;
            while let Some(h) = by_hour.peek() {
                if h.start < at {
                    by_hour.next();
                } else {
                    if h.start == at {
                        found = by_hour.next();
                    }
                    break;
                }
            }
            let lt = at.with_timezone(&tz);
            let next = (at + Duration::hours(1)).with_timezone(&tz);
            points.push(PowerPoint {
                label: lt.format("%-d %b %Hh").to_string(),
                power_w: found
                    .as_ref()
                    .filter(|h| h.quarters > 0)
                    .map(|h| h.energy_milli as f64 * 4.0 / 1000.0 / h.quarters as f64),
                estimated: found.as_ref().is_some_and(|h| h.estimated),
                start: Some(at),
                interval: format!(
                    "{}–{} {}",
                    lt.format("%a %-d %b %Y %H:%M"),
                    next.format("%H:%M"),
                    next.format("%Z")
                ),
                quality: found
                    .as_ref()
                    .and_then(|h| quality(h.estimated, h.quarters >= 4)),
            });
            t += 3600;
        }
        return Ok(Graph {
            points,
            title: "Power, hourly means",
            note: format!(
                "hourly means of the 15-minute energy, so that {} days stay readable",
                (to - from).num_days()
            ),
        });
    }
    let days_found = devices::daily_energy(&state.read_pool, device.id, import, from, to).await?;
    let mut by_day = days_found.into_iter().peekable();
    let mut points = Vec::new();
    let mut d = from;
    while d < to {
        let mut found = None;
        while let Some(x) = by_day.peek() {
            if x.day < d {
                by_day.next();
            } else {
                if x.day == d {
                    found = by_day.next();
                }
                break;
            }
        }
        let covered = found.as_ref().map_or(0, |x| x.measured + x.estimated);
        points.push(PowerPoint {
            label: d.format("%-d %b").to_string(),
            power_w: found
                .as_ref()
                .filter(|_| covered > 0)
                .map(|x| x.energy_milli as f64 * 4.0 / 1000.0 / f64::from(covered)),
            estimated: found.as_ref().is_some_and(|x| x.estimated > 0),
            start: Some(calendar::period_bounds(tz, d, Period::Day).0),
            interval: charts::period_text(d, Period::Day),
            quality: found
                .as_ref()
                .and_then(|x| quality(x.estimated > 0, covered >= x.quarters)),
        });
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    Ok(Graph {
        points,
        title: "Power, daily means",
        note: format!(
            "daily means of the 15-minute energy, so that {} days stay readable",
            (to - from).num_days()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_ranges_are_local_days() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let today = d("2026-12-07");
        assert_eq!(range_days("24h", today), None);
        assert_eq!(
            range_days("today", today),
            Some((d("2026-12-07"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("yesterday", today),
            Some((d("2026-12-06"), d("2026-12-07")))
        );
        assert_eq!(
            range_days("7d", today),
            Some((d("2026-12-01"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("30d", today),
            Some((d("2026-11-08"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("month", today),
            Some((d("2026-12-01"), d("2026-12-08")))
        );
        assert_eq!(
            range_days("year", today),
            Some((d("2026-01-01"), d("2026-12-08")))
        );
        assert_eq!(days_text(d("2026-12-07"), d("2026-12-08")), "7 Dec 2026");
        assert_eq!(
            days_text(d("2026-12-01"), d("2026-12-08")),
            "1 Dec 2026 – 7 Dec 2026"
        );
    }
}
