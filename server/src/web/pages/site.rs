//! A site: its power curve of a day, its energy and cost over quick ranges (today, yesterday,
//! the last 7 or 30 days, this month, this year) or by day, month or year with earlier/later,
//! always beside the period before; by circuit and usage; its tree.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::{label, nav, render, supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::accounting::query::{self, Group};
use crate::dashboard::charts::{self, Bar};
use crate::dashboard::{self, power, units, DashboardError};
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;

/// What the page shows.
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
    ) -> Result<Self, PageError> {
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
                return Err(PageError::Bad(format!(
                    "range {other:?} is not one of today, yesterday, day, 7d, 30d, month, year"
                )))
            }
            (None, Some(other)) => {
                return Err(PageError::Bad(format!(
                    "by {other:?} is not one of day, month, year"
                )))
            }
        })
    }

    /// The buckets and the local dates `[first, end)` shown, and those of the period before.
    pub(super) fn spans(self) -> (Period, (NaiveDate, NaiveDate), (NaiveDate, NaiveDate)) {
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
    pub(super) fn shifted(self, steps: i32) -> Self {
        match self {
            Self::Day(d) => Self::Day(d + Duration::days(i64::from(steps))),
            Self::Last(n, d) => Self::Last(n, d + Duration::days(i64::from(steps) * i64::from(n))),
            Self::Month(d) => Self::Month(add_months(d, steps)),
            Self::Year(d) => Self::Year(add_months(d, 12 * steps)),
            Self::Years(d) => Self::Years(add_months(d, 60 * steps)),
        }
    }

    /// The quick range this view is, if any.
    pub(super) fn quick(self, today: NaiveDate) -> Option<&'static str> {
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
    pub(super) fn previous_name(self) -> &'static str {
        match self {
            Self::Day(_) => "the day before",
            Self::Last(..) => "the days before",
            Self::Month(_) => "the month before",
            Self::Year(_) => "the year before",
            Self::Years(_) => "the five years before",
        }
    }
}

/// A quick-range link.
pub struct Quick {
    pub key: &'static str,
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

/// A row of a breakdown table, in the table's common unit.
pub struct Row {
    pub name: String,
    pub value: String,
    pub share: String,
    pub cost: Option<f64>,
}

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    title: String,
    nav: Nav,
    site_id: i64,
    site_name: String,
    time_zone: String,
    /// `day`, `month`, `year` for the Days/Months/Years tabs, or empty.
    by: &'static str,
    quick: Vec<Quick>,
    /// The first date shown, for the Days/Months/Years tabs.
    anchor: NaiveDate,
    prev_href: String,
    next_href: String,
    period_label: String,
    previous_name: &'static str,
    export: ExportForm,
    /// The day's power curve (Today, Yesterday, a day), else empty.
    power_chart: String,
    energy_chart: String,
    cost_chart: String,
    total_kwh: f64,
    previous_kwh: f64,
    previous_label: String,
    /// Whether the previous total is cut at the same point of its period as the current one.
    previous_to_date: bool,
    previous_has_data: bool,
    /// A quick range is the view (the Days/Months/Years tabs are then not marked).
    quick_active: bool,
    change: Option<(&'static str, String, &'static str)>,
    total_cost: Option<f64>,
    currency: String,
    peak_kw: Option<f64>,
    peak_at: String,
    complete_pct: f64,
    power_now_kw: Option<f64>,
    has_data: bool,
    has_meters: bool,
    has_contract: bool,
    last_reading: Option<String>,
    circuit_unit: &'static str,
    usage_unit: &'static str,
    by_circuit: Vec<Row>,
    by_usage: Vec<Row>,
    circuit_chart: String,
    usage_chart: String,
    tree: dashboard::SiteTree,
}

#[derive(Deserialize)]
pub struct SiteParams {
    range: Option<String>,
    by: Option<String>,
    date: Option<NaiveDate>,
}

fn has_data(t: &query::TotalView) -> bool {
    t.completeness.measured + t.completeness.estimated > 0
}

/// Breakdown rows in one unit (that of the largest), each with its share of the rows' total.
fn rows(groups: &[(String, f64, Option<f64>)]) -> (&'static str, Vec<Row>) {
    let (unit, div) = units::common_unit(groups.iter().map(|g| g.1), false);
    let total: f64 = groups.iter().map(|g| g.1.max(0.0)).sum();
    let rows = groups
        .iter()
        .map(|(name, kwh, cost)| Row {
            name: name.clone(),
            value: units::digits(kwh / div),
            share: if total > 0.0 {
                format!("{:.1} %", kwh.max(0.0) * 100.0 / total)
            } else {
                "–".to_owned()
            },
            cost: *cost,
        })
        .collect();
    (unit, rows)
}

/// Sums the groups of several periods by name.
fn fold_groups<'a>(
    periods: impl IntoIterator<Item = &'a query::PeriodView>,
) -> Vec<(String, f64, Option<f64>)> {
    let mut out: Vec<(String, f64, Option<f64>)> = Vec::new();
    for period in periods {
        for g in &period.groups {
            match out.iter_mut().find(|(n, ..)| *n == g.name) {
                Some(row) => {
                    row.1 += g.import_wh / 1000.0;
                    row.2 = row.2.zip(g.energy_cost).map(|(a, b)| a + b);
                }
                None => out.push((g.name.clone(), g.import_wh / 1000.0, g.energy_cost)),
            }
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The power curve of a day beside the day before, quarter by quarter.
fn day_chart(tz: Tz, cur: &[power::Quarter], prev: &[power::Quarter]) -> String {
    let bars: Vec<Bar> = cur
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let p = prev.get(i);
            Bar {
                label: q.start.with_timezone(&tz).format("%H:%M").to_string(),
                value: q.power_w.map(|w| w / 1000.0),
                previous: p.and_then(|p| p.power_w).map(|w| w / 1000.0),
                incomplete: false,
                title: charts::quarter_text(q.start, tz),
                interval: charts::quarter_text(q.start, tz),
                previous_interval: p
                    .map(|p| charts::quarter_text(p.start, tz))
                    .unwrap_or_default(),
                quality: (q.start + chrono::Duration::minutes(15) > chrono::Utc::now()
                    && q.power_w.is_none())
                .then_some(charts::Quality::Upcoming),
                ..Bar::default()
            }
        })
        .collect();
    charts::bar_chart("power-chart", "Mean power per quarter-hour", "kW", &bars)
}

pub(super) fn local_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %-d %b %Y %H:%M %Z")
        .to_string()
}

pub async fn site_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<SiteParams>,
) -> PageResult {
    let site = sites::get(&state.pool, &p.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let tz = dashboard::zone(&site.time_zone);
    let now = Utc::now();
    let today = calendar::local_date(now, tz);
    let view = View::parse(
        q.range.as_deref(),
        q.by.as_deref(),
        supported_date(q.date)?,
        today,
    )?;
    // The period before must be supported too (earlier/later near the calendar's ends).
    let (by, (first, end), (prev_first, prev_end)) = view.spans();
    for d in [prev_first, end] {
        supported_date(Some(d))?;
    }
    let compared = dashboard::site_range(
        &state.pool,
        id,
        tz,
        by,
        (first, end),
        (prev_first, prev_end),
        Some(Group::Circuit),
        now,
    )
    .await?;
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let by_usage = query::consumption(
        &state.pool,
        id,
        tz,
        at(first),
        at(end),
        Period::Year,
        Some(Group::Usage),
        now,
    )
    .await
    .map_err(DashboardError::from)?;

    let currency = compared.current.currency.clone().unwrap_or_default();
    let cur = &compared.current.periods;
    let prev = &compared.previous.periods;
    // Periods that have begun: the previous total is compared up to the same point.
    let begun = cur.iter().filter(|p| p.start_utc <= now).count();

    let (power_chart, energy_chart, cost_chart, previous_kwh, previous_to_date, previous_has_data) =
        if let View::Day(d) = view {
            let day = power::site_day(&state.pool, id, tz, d).await?;
            let before = power::site_day(&state.pool, id, tz, d - Duration::days(1)).await?;
            // Today is compared with the day before up to the same quarter-hour.
            let cut = day
                .iter()
                .filter(|q| q.start < calendar::floor_quarter(now))
                .count();
            let to_date = cut < day.len();
            let prev_kwh = before
                .iter()
                .take(if to_date { cut } else { before.len() })
                .filter_map(|q| q.power_w)
                .sum::<f64>()
                / 4.0
                / 1000.0;
            (
                day_chart(tz, &day, &before),
                String::new(),
                String::new(),
                prev_kwh,
                to_date,
                before.iter().any(|q| q.power_w.is_some()),
            )
        } else {
            let bars = |cost: bool| -> Vec<Bar> {
                cur.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let value = |t: &query::TotalView| {
                            if cost {
                                t.cost
                            } else {
                                Some(t.import_wh / 1000.0)
                            }
                        };
                        let p = prev.get(i);
                        Bar {
                            label: label(by, c.start),
                            value: if has_data(&c.total) {
                                value(&c.total)
                            } else {
                                None
                            },
                            previous: p.and_then(|p| {
                                has_data(&p.total).then(|| value(&p.total)).flatten()
                            }),
                            incomplete: c.total.completeness.missing > 0
                                || c.total.completeness.estimated > 0,
                            title: c.start.to_string(),
                            interval: charts::period_text(c.start, by),
                            previous_interval: p
                                .map(|p| charts::period_text(p.start, by))
                                .unwrap_or_default(),
                            quality: (i >= begun).then_some(charts::Quality::Upcoming),
                            ..Bar::default()
                        }
                    })
                    .collect()
            };
            let to_date = begun < cur.len();
            let prev_kwh = prev
                .iter()
                .take(if to_date { begun } else { prev.len() })
                .map(|p| p.total.import_wh)
                .sum::<f64>()
                / 1000.0;
            (
                String::new(),
                charts::bar_chart("energy-chart", "Energy", "kWh", &bars(false)),
                charts::bar_chart(
                    "cost-chart",
                    "Cost",
                    if currency.is_empty() {
                        "cost"
                    } else {
                        &currency
                    },
                    &bars(true),
                ),
                prev_kwh,
                to_date,
                prev.iter().any(|p| has_data(&p.total)),
            )
        };
    let total_kwh = cur.iter().map(|p| p.total.import_wh).sum::<f64>() / 1000.0;
    // Periods without any data (the days of this month still to come) have no cost and do not
    // make the total unknown; a period with data but no cost does.
    let with_data: Vec<_> = cur.iter().filter(|p| has_data(&p.total)).collect();
    let total_cost = if with_data.is_empty() {
        None
    } else {
        with_data.iter().map(|p| p.total.cost).sum::<Option<f64>>()
    };
    let expected: u64 = cur.iter().map(|p| p.total.completeness.expected).sum();
    let measured: u64 = cur
        .iter()
        .map(|p| p.total.completeness.measured + p.total.completeness.estimated)
        .sum();
    let peak = cur
        .iter()
        .filter_map(|p| p.total.peak.as_ref())
        .max_by(|a, b| a.power_w.total_cmp(&b.power_w));
    let change = (previous_kwh > 0.0 && !with_data.is_empty()).then(|| {
        let (arrow, text) =
            dashboard::overview::trend((total_kwh - previous_kwh) / previous_kwh * 100.0);
        let class = match arrow {
            "▲" => "up",
            "▼" => "down",
            _ => "same",
        };
        (arrow, text, class)
    });
    let circuit_groups = fold_groups(cur);
    let usage_groups = fold_groups(&by_usage.periods);
    let (circuit_unit, by_circuit) = rows(&circuit_groups);
    let (usage_unit, by_usage) = rows(&usage_groups);
    let share = |groups: &[(String, f64, Option<f64>)], id: &str, title: &str| {
        let rows: Vec<(String, f64)> = groups.iter().map(|r| (r.0.clone(), r.1)).collect();
        charts::share_chart(id, title, "kWh", &rows)
    };
    let circuit_chart = share(&circuit_groups, "circuit-chart", "Energy by circuit");
    let usage_chart = share(&usage_groups, "usage-chart", "Energy by usage");
    let tree = dashboard::site_tree(&state.pool, id).await?;
    let has_meters = !tree.site_meters.is_empty()
        || tree
            .panels
            .iter()
            .any(|p| !p.meters.is_empty() || p.circuits.iter().any(|c| !c.meters.is_empty()));
    let has_data_now = !with_data.is_empty();
    let last_reading = if has_data_now {
        None
    } else {
        dashboard::last_reading(&state.pool, id)
            .await?
            .map(|t| local_text(t, tz))
    };
    let quick = [
        ("today", "Today"),
        ("yesterday", "Yesterday"),
        ("7d", "7 days"),
        ("30d", "30 days"),
        ("month", "This month"),
        ("year", "This year"),
    ]
    .into_iter()
    .map(|(key, label)| Quick {
        key,
        label,
        href: format!("/sites/{id}?range={key}"),
        active: view.quick(today) == Some(key),
    })
    .collect();
    let period_label = view.label(today);
    let (nav, set) = nav(&p, &headers);
    let csv_to = compared
        .current
        .to
        .succ_opt()
        .unwrap_or(compared.current.to);
    render(
        &SitePage {
            title: format!("{} · {}", site.name, period_label),
            nav,
            site_id: id,
            site_name: site.name.clone(),
            time_zone: site.time_zone.clone(),
            by: match view {
                View::Month(_) => "day",
                View::Year(_) => "month",
                View::Years(_) => "year",
                _ => "",
            },
            quick,
            anchor: first,
            prev_href: format!("/sites/{id}?{}", view.shifted(-1).query()),
            next_href: format!("/sites/{id}?{}", view.shifted(1).query()),
            previous_name: view.previous_name(),
            period_label,
            export: ExportForm::new(
                "site",
                id.to_string(),
                format!("all meters of {}", site.name),
                (compared.current.from, csv_to),
                &site.time_zone,
            ),
            power_chart,
            energy_chart,
            cost_chart,
            total_kwh,
            previous_kwh,
            previous_label: format!("{} to {}", compared.previous.from, compared.previous.to),
            previous_to_date,
            previous_has_data,
            quick_active: view.quick(today).is_some(),
            change,
            total_cost,
            currency,
            peak_kw: peak.map(|pk| pk.power_w / 1000.0),
            peak_at: peak
                .map(|pk| {
                    let t = pk.start.with_timezone(&tz);
                    match view {
                        View::Day(_) => t.format("at %H:%M").to_string(),
                        _ => t.format("on %a %-d %b %Y at %H:%M").to_string(),
                    }
                })
                .unwrap_or_default(),
            complete_pct: if expected == 0 {
                0.0
            } else {
                measured as f64 * 100.0 / expected as f64
            },
            power_now_kw: dashboard::site_power_w(&state.pool, id)
                .await?
                .map(|w| w / 1000.0),
            has_data: has_data_now,
            has_meters,
            has_contract: dashboard::has_contract(&state.pool, id).await?,
            last_reading,
            circuit_unit,
            usage_unit,
            by_circuit,
            by_usage,
            circuit_chart,
            usage_chart,
            tree,
        },
        set,
    )
}
