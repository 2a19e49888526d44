//! A circuit: its energy over quick ranges (7 or 30 days, this month, this year) or month by
//! month with earlier/later, beside the period before; its meters.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use headend_energy::calendar;

use super::site::{supported_view, PeriodParams, Quick};
use super::{supported_date, ExportForm, Nav, PageError, PageResult, PageUser};
use crate::accounting::structure;
use crate::dashboard::circuit::{circuit_data, CircuitData};
use crate::dashboard::period::{View, QUICK_RANGES};
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new().route("/circuits/{id}", get(circuit_page))
}

#[derive(Template)]
#[template(path = "circuit.html")]
struct CircuitPage {
    title: String,
    nav: Nav,
    site_id: i64,
    site_name: String,
    name: String,
    usage: String,
    period_label: String,
    previous_name: &'static str,
    quick: Vec<Quick>,
    prev_href: String,
    next_href: String,
    export: ExportForm,
    /// The chart, totals and meters of the period.
    d: CircuitData,
}

/// The query of a circuit page's view (`date` alone is a month).
fn query_of(v: View) -> String {
    match v {
        View::Month(d) => format!("date={d}"),
        View::Year(d) => format!("range=year&date={d}"),
        View::Last(n, d) => format!("range={n}d&date={d}"),
        View::Day(d) | View::Years(d) => format!("date={d}"),
    }
}

/// A circuit: its meters, its energy per day (or month) beside the period before, its CSV.
async fn circuit_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<PeriodParams>,
) -> PageResult {
    let circuit = structure::get_circuit(&state.read_pool, id)
        .await?
        .ok_or(PageError::NotFound)?;
    // The circuit exists for this user only if its site does.
    let site = sites::get(&state.read_pool, &user.scope, circuit.site_id)
        .await?
        .ok_or(PageError::NotFound)?;
    let tz = site.time_zone.tz();
    let now = Utc::now();
    let today = calendar::local_date(now, tz);
    // A circuit has no power curve of its own here: a day is one bar.
    let view = supported_view(
        match View::parse(q.range.as_deref(), None, supported_date(q.date)?, today)? {
            View::Day(d) => View::Last(1, d),
            View::Years(d) => View::Year(d),
            v => v,
        },
    )?;
    let (_, period, _) = view.spans();
    let d = circuit_data(&state.read_pool, &circuit, tz, view, now).await?;
    let period_label = view.label(today);
    let base = format!("/circuits/{id}");
    user.render(&CircuitPage {
        title: format!("{} · {}", circuit.name, period_label),
        nav: user.nav(),
        site_id: site.id,
        site_name: site.name.clone(),
        usage: circuit.usage,
        previous_name: view.previous_name(),
        period_label,
        quick: Quick::links(&base, &QUICK_RANGES[2..], view, today),
        prev_href: format!("{base}?{}", query_of(view.shifted(-1))),
        next_href: format!("{base}?{}", query_of(view.shifted(1))),
        export: ExportForm::new(
            "circuit",
            id.to_string(),
            format!("the meters of circuit {}", circuit.name),
            period,
            site.time_zone,
        ),
        name: circuit.name,
        d,
    })
}
