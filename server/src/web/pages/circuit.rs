//! A circuit: its energy over quick ranges (7 or 30 days, this month, this year) or month by
//! month with earlier/later, beside the period before; its meters.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{NaiveDate, Utc};
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::site::{local_text, View};
use super::{label, nav, render, supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::accounting::query::{self, Group};
use crate::dashboard::charts::{self, Bar};
use crate::dashboard::{self, overview, DashboardError};
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;

/// A quick-range link.
pub struct Quick {
    pub key: &'static str,
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

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
    period_label: String,
    previous_name: &'static str,
    quick: Vec<Quick>,
    prev_href: String,
    next_href: String,
    energy_chart: String,
    total_kwh: f64,
    previous_kwh: f64,
    previous_label: String,
    previous_to_date: bool,
    change: Option<(&'static str, String, &'static str)>,
    total_cost: Option<f64>,
    currency: String,
    has_data: bool,
    has_contract: bool,
    last_reading: Option<String>,
    meters: Vec<dashboard::MeterNode>,
    export: ExportForm,
}

#[derive(Deserialize)]
pub struct CircuitParams {
    range: Option<String>,
    date: Option<NaiveDate>,
}

/// A circuit: its meters, its energy per day (or month) beside the period before, its CSV.
pub async fn circuit_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<CircuitParams>,
) -> PageResult {
    let circuit = crate::accounting::structure::get_circuit(&state.pool, id)
        .await?
        .ok_or(PageError::NotFound)?;
    // The circuit exists for this user only if its site does.
    let site = sites::get(&state.pool, &p.scope, circuit.site_id)
        .await?
        .ok_or(PageError::NotFound)?;
    let tz = dashboard::zone(&site.time_zone);
    let now = Utc::now();
    let today = calendar::local_date(now, tz);
    // A circuit has no power curve of its own here: a day is one bar.
    let view = match View::parse(q.range.as_deref(), None, supported_date(q.date)?, today)? {
        View::Day(d) => View::Last(1, d),
        View::Years(d) => View::Year(d),
        v => v,
    };
    let (by, (first, end), (prev_first, prev_end)) = view.spans();
    for d in [prev_first, end] {
        supported_date(Some(d))?;
    }
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let key = format!("circuit:{id}");
    let values = |c: &query::Consumption| -> Vec<(NaiveDate, Option<(f64, Option<f64>)>)> {
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
    let consumption = |from: NaiveDate, to: NaiveDate| {
        query::consumption(
            &state.pool,
            site.id,
            tz,
            at(from),
            at(to),
            by,
            Some(Group::Circuit),
            now,
        )
    };
    let current = consumption(first, end)
        .await
        .map_err(DashboardError::from)?;
    let previous = consumption(prev_first, prev_end)
        .await
        .map_err(DashboardError::from)?;
    let (cur, prev) = (values(&current), values(&previous));
    let bars: Vec<Bar> = cur
        .iter()
        .enumerate()
        .map(|(i, (start, v))| Bar {
            label: label(by, *start),
            value: v.map(|v| v.0),
            previous: prev.get(i).and_then(|p| p.1).map(|p| p.0),
            incomplete: false,
            title: start.to_string(),
            interval: charts::period_text(*start, by),
            previous_interval: prev
                .get(i)
                .map(|p| charts::period_text(p.0, by))
                .unwrap_or_default(),
            quality: (*start > today).then_some(charts::Quality::Upcoming),
            ..Bar::default()
        })
        .collect();
    let energy_chart = charts::bar_chart("energy-chart", "Energy", "kWh", &bars);
    let begun = current
        .periods
        .iter()
        .filter(|p| p.start_utc <= now)
        .count();
    let previous_to_date = begun < cur.len();
    let total_kwh: f64 = cur.iter().filter_map(|d| d.1).map(|v| v.0).sum();
    let previous_kwh: f64 = prev
        .iter()
        .take(if previous_to_date { begun } else { prev.len() })
        .filter_map(|d| d.1)
        .map(|v| v.0)
        .sum();
    let with_data: Vec<_> = cur.iter().filter_map(|d| d.1).collect();
    let total_cost = if with_data.is_empty() {
        None
    } else {
        with_data.iter().map(|v| v.1).sum::<Option<f64>>()
    };
    let change = (previous_kwh > 0.0 && !with_data.is_empty()).then(|| {
        let (arrow, text) = overview::trend((total_kwh - previous_kwh) / previous_kwh * 100.0);
        let class = match arrow {
            "▲" => "up",
            "▼" => "down",
            _ => "same",
        };
        (arrow, text, class)
    });
    let panel = crate::accounting::structure::get_panel(&state.pool, circuit.panel_id)
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
    let has_data = !with_data.is_empty();
    let last_reading = if has_data || meters.is_empty() {
        None
    } else {
        dashboard::last_reading(&state.pool, site.id)
            .await?
            .map(|t| local_text(t, tz))
    };
    let quick = [
        ("7d", "7 days"),
        ("30d", "30 days"),
        ("month", "This month"),
        ("year", "This year"),
    ]
    .into_iter()
    .map(|(key, label)| Quick {
        key,
        label,
        href: format!("/circuits/{id}?range={key}"),
        active: view.quick(today) == Some(key),
    })
    .collect();
    let query_of = |v: View| match v {
        View::Month(d) => format!("date={d}"),
        View::Year(d) => format!("range=year&date={d}"),
        View::Last(n, d) => format!("range={n}d&date={d}"),
        View::Day(d) | View::Years(d) => format!("date={d}"),
    };
    let period_label = view.label(today);
    let (nav, set) = nav(&p, &headers);
    render(
        &CircuitPage {
            title: format!("{} · {}", circuit.name, period_label),
            nav,
            site_id: site.id,
            site_name: site.name.clone(),
            panel,
            name: circuit.name.clone(),
            usage: circuit.usage,
            previous_name: view.previous_name(),
            period_label,
            quick,
            prev_href: format!("/circuits/{id}?{}", query_of(view.shifted(-1))),
            next_href: format!("/circuits/{id}?{}", query_of(view.shifted(1))),
            energy_chart,
            total_kwh,
            previous_kwh,
            previous_label: format!("{} to {}", previous.from, previous.to),
            previous_to_date,
            change,
            total_cost,
            currency: current.currency.unwrap_or_default(),
            has_data,
            has_contract: dashboard::has_contract(&state.pool, site.id).await?,
            last_reading,
            meters,
            export: ExportForm::new(
                "circuit",
                id.to_string(),
                format!("the meters of circuit {}", circuit.name),
                (first, end),
                &site.time_zone,
            ),
        },
        set,
    )
}
