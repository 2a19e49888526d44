//! What a site's page shows over a period, as data: its power curve of a day or its energy and
//! cost by day, month or year beside the period before, the totals (energy, cost, peak demand,
//! completeness), the breakdowns by circuit and by usage, and its tree of panels, circuits and
//! meters. The page (`web::pages::site`) only renders it.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::PgPool;

use super::charts::{self, Bar};
use super::period::{bar_label, local_text, View};
use super::{overview, power, units, DashboardError, SiteTree};
use crate::accounting::query::{self, Group, PeriodView, TotalView};

/// A row of a breakdown table, in the table's common unit.
pub struct Row {
    pub name: String,
    pub value: String,
    pub share: String,
    pub cost: Option<f64>,
}

/// Everything the site page shows of its period.
pub struct SiteData {
    /// The day's power curve (a day is shown), else empty.
    pub power_chart: String,
    /// The energy and cost bars (a longer period is shown), else empty.
    pub energy_chart: String,
    pub cost_chart: String,
    pub total_kwh: f64,
    pub previous_kwh: f64,
    /// The dates of the period before: "2026-11-01 to 2026-11-30".
    pub previous_label: String,
    /// Whether the previous total is cut at the same point of its period as the current one.
    pub previous_to_date: bool,
    pub previous_has_data: bool,
    /// Arrow, change and its class, against the period before.
    pub change: Option<(&'static str, String, &'static str)>,
    pub total_cost: Option<f64>,
    pub currency: String,
    pub peak_kw: Option<f64>,
    pub peak_at: String,
    pub complete_pct: f64,
    pub power_now_kw: Option<f64>,
    pub has_data: bool,
    pub has_meters: bool,
    pub has_contract: bool,
    /// When the last reading arrived, when the period has none.
    pub last_reading: Option<String>,
    pub circuit_unit: &'static str,
    pub usage_unit: &'static str,
    pub by_circuit: Vec<Row>,
    pub by_usage: Vec<Row>,
    pub circuit_chart: String,
    pub usage_chart: String,
    pub tree: SiteTree,
    /// The local dates the period covers, the last included (for the CSV export).
    pub from: NaiveDate,
    pub to: NaiveDate,
}

fn has_data(t: &TotalView) -> bool {
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
    periods: impl IntoIterator<Item = &'a PeriodView>,
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

/// The charts of the period and the total of the period before as compared with it.
struct Compared {
    power_chart: String,
    energy_chart: String,
    cost_chart: String,
    previous_kwh: f64,
    previous_to_date: bool,
    previous_has_data: bool,
}

/// A day: its power curve beside the day before; today is compared with the day before up to
/// the same quarter-hour.
async fn day(
    pool: &PgPool,
    site: i64,
    tz: Tz,
    d: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Compared, DashboardError> {
    let day = power::site_day(pool, site, tz, d).await?;
    let before = power::site_day(pool, site, tz, d - Duration::days(1)).await?;
    let cut = day
        .iter()
        .filter(|q| q.start < calendar::floor_quarter(now))
        .count();
    let to_date = cut < day.len();
    let previous_kwh = before
        .iter()
        .take(if to_date { cut } else { before.len() })
        .filter_map(|q| q.power_w)
        .sum::<f64>()
        / 4.0
        / 1000.0;
    Ok(Compared {
        power_chart: day_chart(tz, &day, &before),
        energy_chart: String::new(),
        cost_chart: String::new(),
        previous_kwh,
        previous_to_date: to_date,
        previous_has_data: before.iter().any(|q| q.power_w.is_some()),
    })
}

/// Days, months or years: energy and cost bars beside the period before; the periods that
/// have begun (`begun`) are compared with as many of the period before.
fn periods(
    by: Period,
    cur: &[PeriodView],
    prev: &[PeriodView],
    begun: usize,
    currency: &str,
) -> Compared {
    let bars = |cost: bool| -> Vec<Bar> {
        let value = |t: &TotalView| {
            if !has_data(t) {
                None
            } else if cost {
                t.cost
            } else {
                Some(t.import_wh / 1000.0)
            }
        };
        cur.iter()
            .enumerate()
            .map(|(i, c)| {
                let p = prev.get(i);
                Bar {
                    label: bar_label(by, c.start),
                    value: value(&c.total),
                    previous: p.and_then(|p| value(&p.total)),
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
    let previous_kwh = prev
        .iter()
        .take(if to_date { begun } else { prev.len() })
        .map(|p| p.total.import_wh)
        .sum::<f64>()
        / 1000.0;
    let cost_unit = if currency.is_empty() {
        "cost"
    } else {
        currency
    };
    Compared {
        power_chart: String::new(),
        energy_chart: charts::bar_chart("energy-chart", "Energy", "kWh", &bars(false)),
        cost_chart: charts::bar_chart("cost-chart", "Cost", cost_unit, &bars(true)),
        previous_kwh,
        previous_to_date: to_date,
        previous_has_data: prev.iter().any(|p| has_data(&p.total)),
    }
}

/// The site's data over `view`: its circuits' consumption beside the period before, its usages,
/// its tree, its power now.
pub async fn site_data(
    pool: &PgPool,
    site: i64,
    tz: Tz,
    view: View,
    now: DateTime<Utc>,
) -> Result<SiteData, DashboardError> {
    let (by, (first, end), before) = view.spans();
    let compared = super::site_range(
        pool,
        site,
        tz,
        by,
        (first, end),
        before,
        Some(Group::Circuit),
        now,
    )
    .await?;
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let by_usage = query::consumption(
        pool,
        site,
        tz,
        at(first),
        at(end),
        Period::Year,
        Some(Group::Usage),
        now,
    )
    .await?;
    let currency = compared.current.currency.clone().unwrap_or_default();
    let cur = &compared.current.periods;
    // Periods that have begun: the previous total is compared up to the same point.
    let begun = cur.iter().filter(|p| p.start_utc <= now).count();
    let charts = match view {
        View::Day(d) => day(pool, site, tz, d, now).await?,
        _ => periods(by, cur, &compared.previous.periods, begun, &currency),
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
    let circuit_groups = fold_groups(cur);
    let usage_groups = fold_groups(&by_usage.periods);
    let (circuit_unit, by_circuit) = rows(&circuit_groups);
    let (usage_unit, by_usage) = rows(&usage_groups);
    let share = |groups: &[(String, f64, Option<f64>)], id: &str, title: &str| {
        let rows: Vec<(String, f64)> = groups.iter().map(|r| (r.0.clone(), r.1)).collect();
        charts::share_chart(id, title, "kWh", &rows)
    };
    let tree = super::site_tree(pool, site).await?;
    let has_meters = !tree.site_meters.is_empty()
        || tree
            .panels
            .iter()
            .any(|p| !p.meters.is_empty() || p.circuits.iter().any(|c| !c.meters.is_empty()));
    let has_data = !with_data.is_empty();
    let last_reading = if has_data {
        None
    } else {
        super::last_reading(pool, site)
            .await?
            .map(|t| local_text(t, tz))
    };
    Ok(SiteData {
        change: overview::against(total_kwh, charts.previous_kwh).filter(|_| has_data),
        power_chart: charts.power_chart,
        energy_chart: charts.energy_chart,
        cost_chart: charts.cost_chart,
        total_kwh,
        previous_kwh: charts.previous_kwh,
        previous_label: format!("{} to {}", compared.previous.from, compared.previous.to),
        previous_to_date: charts.previous_to_date,
        previous_has_data: charts.previous_has_data,
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
        power_now_kw: super::site_power_w(pool, site).await?.map(|w| w / 1000.0),
        has_data,
        has_meters,
        has_contract: super::has_contract(pool, site).await?,
        last_reading,
        circuit_unit,
        usage_unit,
        by_circuit,
        by_usage,
        circuit_chart: share(&circuit_groups, "circuit-chart", "Energy by circuit"),
        usage_chart: share(&usage_groups, "usage-chart", "Energy by usage"),
        tree,
        from: compared.current.from,
        to: compared.current.to,
    })
}
