//! A circuit: its energy by day and its meters.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{NaiveDate, Utc};
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
#[template(path = "circuit.html")]
struct CircuitPage {
    title: String,
    nav: Nav,
    site_id: i64,
    site_name: String,
    panel: String,
    name: String,
    usage: String,
    id: i64,
    month: String,
    prev_month: NaiveDate,
    next_month: NaiveDate,
    energy_chart: String,
    total_kwh: f64,
    previous_kwh: f64,
    total_cost: Option<f64>,
    currency: String,
    meters: Vec<dashboard::MeterNode>,
    export: ExportForm,
}

#[derive(Deserialize)]
pub struct CircuitParams {
    date: Option<NaiveDate>,
}

/// A circuit: its meters, its energy per day of a month beside the month before, its CSV.
pub async fn circuit_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<CircuitParams>,
) -> PageResult {
    let circuit = crate::profiles::structure::get_circuit(&state.pool, id)
        .await?
        .ok_or(PageError::NotFound)?;
    // The circuit exists for this user only if its site does.
    let site = sites::get(&state.pool, &p.scope, circuit.site_id)
        .await?
        .ok_or(PageError::NotFound)?;
    let tz = dashboard::zone(&site.time_zone);
    let now = Utc::now();
    let anchor = calendar::period_start(
        supported_date(q.date)?.unwrap_or_else(|| calendar::local_date(now, tz)),
        Period::Month,
    );
    let months = |n: i32| {
        if n < 0 {
            anchor.checked_sub_months(chrono::Months::new(n.unsigned_abs()))
        } else {
            anchor.checked_add_months(chrono::Months::new(n.unsigned_abs()))
        }
        .unwrap_or(anchor)
    };
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let key = format!("circuit:{id}");
    let days = |c: &query::Consumption| -> Vec<(NaiveDate, Option<(f64, Option<f64>)>)> {
        c.periods
            .iter()
            .map(|period| {
                let g = period.groups.iter().find(|g| g.key == key);
                (
                    period.start,
                    g.map(|g| (g.import_wh / 1000.0, g.energy_cost)),
                )
            })
            .collect()
    };
    let current = query::consumption(
        &state.pool,
        site.id,
        tz,
        at(anchor),
        at(months(1)),
        Period::Day,
        Some(Group::Circuit),
        now,
    )
    .await
    .map_err(DashboardError::from)?;
    let previous = query::consumption(
        &state.pool,
        site.id,
        tz,
        at(months(-1)),
        at(anchor),
        Period::Day,
        Some(Group::Circuit),
        now,
    )
    .await
    .map_err(DashboardError::from)?;
    let (cur, prev) = (days(&current), days(&previous));
    let bars: Vec<Bar> = cur
        .iter()
        .enumerate()
        .map(|(i, (day, v))| Bar {
            label: label(Period::Day, *day),
            value: v.map(|v| v.0),
            previous: prev.get(i).and_then(|p| p.1).map(|p| p.0),
            incomplete: false,
            title: day.to_string(),
        })
        .collect();
    let energy_chart = charts::bar_chart("energy-chart", "Energy", "kWh", &bars);
    let total_kwh = cur.iter().filter_map(|d| d.1).map(|v| v.0).sum();
    let previous_kwh = prev.iter().filter_map(|d| d.1).map(|v| v.0).sum();
    let total_cost = cur
        .iter()
        .filter_map(|d| d.1)
        .map(|v| v.1)
        .sum::<Option<f64>>();
    let panel = crate::profiles::structure::get_panel(&state.pool, circuit.panel_id)
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    let meters = dashboard::site_tree(&state.pool, site.id)
        .await?
        .panels
        .into_iter()
        .flat_map(|p| p.circuits)
        .find(|c| c.id == id)
        .map(|c| c.meters)
        .unwrap_or_default();
    let (nav, set) = nav(&p, &headers);
    render(
        &CircuitPage {
            title: circuit.name.clone(),
            nav,
            site_id: site.id,
            site_name: site.name.clone(),
            panel,
            name: circuit.name.clone(),
            usage: circuit.usage,
            id,
            month: anchor.format("%B %Y").to_string(),
            prev_month: months(-1),
            next_month: months(1),
            energy_chart,
            total_kwh,
            previous_kwh,
            total_cost,
            currency: current.currency.unwrap_or_default(),
            meters,
            export: ExportForm::new(
                "circuit",
                id.to_string(),
                format!("the meters of circuit {}", circuit.name),
                (anchor, months(1)),
                &site.time_zone,
            ),
        },
        set,
    )
}
