//! A site: energy and cost by day, month or year, by circuit and usage, its tree.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{Datelike, NaiveDate, Utc};
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::{label, nav, render, supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::dashboard::charts::{self, Bar};
use crate::dashboard::{self, DashboardError};
use crate::profiles::query::{self, Group};
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    title: String,
    nav: Nav,
    site_id: i64,
    site_name: String,
    time_zone: String,
    by: &'static str,
    anchor: NaiveDate,
    prev_anchor: NaiveDate,
    next_anchor: NaiveDate,
    period_label: String,
    export: ExportForm,
    energy_chart: String,
    cost_chart: String,
    total_kwh: f64,
    previous_kwh: f64,
    previous_label: String,
    total_cost: Option<f64>,
    currency: String,
    peak: Option<String>,
    complete_pct: f64,
    by_circuit: Vec<(String, f64, Option<f64>)>,
    by_usage: Vec<(String, f64, Option<f64>)>,
    circuit_chart: String,
    usage_chart: String,
    tree: dashboard::SiteTree,
}

#[derive(Deserialize)]
pub struct SiteParams {
    by: Option<String>,
    date: Option<NaiveDate>,
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
    let by: Period =
        q.by.as_deref()
            .unwrap_or("day")
            .parse()
            .map_err(|e: calendar::CalendarError| PageError::Bad(e.to_string()))?;
    let anchor = supported_date(q.date)?.unwrap_or_else(|| calendar::local_date(now, tz));
    let compared =
        dashboard::site_consumption(&state.pool, id, tz, by, anchor, Some(Group::Circuit), now)
            .await?;
    let by_usage = query::consumption(
        &state.pool,
        id,
        tz,
        compared
            .current
            .periods
            .first()
            .map_or(now, |p| p.start_utc),
        compared.current.periods.last().map_or(now, |p| p.end_utc),
        usage_bucket(by),
        Some(Group::Usage),
        now,
    )
    .await
    .map_err(DashboardError::from)?;

    let bars = |cost: bool| -> Vec<Bar> {
        compared
            .current
            .periods
            .iter()
            .enumerate()
            .map(|(i, cur)| {
                let value = |t: &query::TotalView| {
                    if cost {
                        t.cost
                    } else {
                        Some(t.import_wh / 1000.0)
                    }
                };
                let has_data =
                    cur.total.completeness.measured + cur.total.completeness.estimated > 0;
                Bar {
                    label: label(by, cur.start),
                    value: if has_data { value(&cur.total) } else { None },
                    previous: compared.previous.periods.get(i).and_then(|p| {
                        (p.total.completeness.measured + p.total.completeness.estimated > 0)
                            .then(|| value(&p.total))
                            .flatten()
                    }),
                    incomplete: cur.total.completeness.missing > 0
                        || cur.total.completeness.estimated > 0,
                    title: cur.start.to_string(),
                }
            })
            .collect()
    };
    let currency = compared.current.currency.clone().unwrap_or_default();
    let energy_chart = charts::bar_chart("energy-chart", "Energy", "kWh", &bars(false));
    let cost_chart = charts::bar_chart(
        "cost-chart",
        "Cost",
        if currency.is_empty() {
            "cost"
        } else {
            &currency
        },
        &bars(true),
    );
    let totals = &compared.current.periods;
    let total_kwh = totals.iter().map(|p| p.total.import_wh).sum::<f64>() / 1000.0;
    // Periods without any data (the days of this month still to come) have no cost and do not
    // make the total unknown; a period with data but no cost does.
    let with_data: Vec<_> = totals
        .iter()
        .filter(|p| p.total.completeness.measured + p.total.completeness.estimated > 0)
        .collect();
    let total_cost = if with_data.is_empty() {
        None
    } else {
        with_data.iter().map(|p| p.total.cost).sum::<Option<f64>>()
    };
    let previous_kwh = compared
        .previous
        .periods
        .iter()
        .map(|p| p.total.import_wh)
        .sum::<f64>()
        / 1000.0;
    let expected: u64 = totals.iter().map(|p| p.total.completeness.expected).sum();
    let measured: u64 = totals
        .iter()
        .map(|p| p.total.completeness.measured + p.total.completeness.estimated)
        .sum();
    let peak = totals
        .iter()
        .filter_map(|p| p.total.peak.as_ref())
        .max_by(|a, b| a.power_w.total_cmp(&b.power_w))
        .map(|pk| format!("{:.2} kW at {}", pk.power_w / 1000.0, pk.start_local));
    let mut by_circuit: Vec<(String, f64, Option<f64>)> = Vec::new();
    for period in totals {
        for g in &period.groups {
            match by_circuit.iter_mut().find(|(n, ..)| *n == g.name) {
                Some(row) => {
                    row.1 += g.import_wh / 1000.0;
                    row.2 = row.2.zip(g.energy_cost).map(|(a, b)| a + b);
                }
                None => by_circuit.push((g.name.clone(), g.import_wh / 1000.0, g.energy_cost)),
            }
        }
    }
    let by_usage: Vec<(String, f64, Option<f64>)> = {
        let mut rows: Vec<(String, f64, Option<f64>)> = Vec::new();
        for period in &by_usage.periods {
            for g in &period.groups {
                match rows.iter_mut().find(|(n, ..)| *n == g.name) {
                    Some(row) => {
                        row.1 += g.import_wh / 1000.0;
                        row.2 = row.2.zip(g.energy_cost).map(|(a, b)| a + b);
                    }
                    None => rows.push((g.name.clone(), g.import_wh / 1000.0, g.energy_cost)),
                }
            }
        }
        rows
    };
    let (step_back, step_fwd) = match by {
        Period::Day => (
            anchor
                .checked_sub_months(chrono::Months::new(1))
                .unwrap_or(anchor),
            anchor
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(anchor),
        ),
        Period::Month => (
            anchor.with_year(anchor.year() - 1).unwrap_or(anchor),
            anchor.with_year(anchor.year() + 1).unwrap_or(anchor),
        ),
        Period::Year => (
            anchor.with_year(anchor.year() - 5).unwrap_or(anchor),
            anchor.with_year(anchor.year() + 5).unwrap_or(anchor),
        ),
    };
    let tree = dashboard::site_tree(&state.pool, id).await?;
    let (nav, set) = nav(&p, &headers);
    let csv_from = compared.current.from;
    let csv_to = compared
        .current
        .to
        .succ_opt()
        .unwrap_or(compared.current.to);
    render(
        &SitePage {
            title: site.name.clone(),
            nav,
            site_id: id,
            site_name: site.name.clone(),
            time_zone: site.time_zone.clone(),
            by: by.as_str(),
            anchor,
            prev_anchor: step_back,
            next_anchor: step_fwd,
            period_label: format!("{} to {}", compared.current.from, compared.current.to),
            export: ExportForm::new(
                "site",
                id.to_string(),
                format!("all meters of {}", site.name),
                (csv_from, csv_to),
                &site.time_zone,
            ),
            energy_chart,
            cost_chart,
            total_kwh,
            previous_kwh,
            previous_label: format!("{} to {}", compared.previous.from, compared.previous.to),
            total_cost,
            currency,
            peak,
            complete_pct: if expected == 0 {
                0.0
            } else {
                measured as f64 * 100.0 / expected as f64
            },
            circuit_chart: share(&by_circuit, "circuit-chart", "Energy by circuit"),
            usage_chart: share(&by_usage, "usage-chart", "Energy by usage"),
            by_circuit,
            by_usage,
            tree,
        },
        set,
    )
}

// ---- circuit -------------------------------------------------------------------------------

/// The horizontal bar chart of a breakdown table's energy.
fn share(rows: &[(String, f64, Option<f64>)], id: &str, title: &str) -> String {
    let rows: Vec<(String, f64)> = rows.iter().map(|r| (r.0.clone(), r.1)).collect();
    charts::share_chart(id, title, "kWh", &rows)
}

/// The bucket of the usage breakdown: few rows for the whole range shown.
fn usage_bucket(by: Period) -> Period {
    match by {
        Period::Day => Period::Month,
        Period::Month | Period::Year => Period::Year,
    }
}
