//! The HTML dashboard: server-rendered askama pages that need no JavaScript to show data.
//!
//! Sessions: the same JWT as the API, in the `headend_session` cookie (HttpOnly,
//! SameSite=Strict). Forms carry a CSRF token that must equal the `headend_csrf` cookie
//! (double submit); with SameSite=Strict that makes a cross-site form post useless.

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{Datelike, NaiveDate, Utc};
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::session::{self, LoginCheck, Peer, COOKIE};
use super::urls::filters;
use super::WebState;
use crate::auth::{users, Principal, Role, Scope};
use crate::commands::ledger::{self, Created, NewCommand};
use crate::dashboard::charts::{self, Bar, PowerPoint};
use crate::dashboard::{self, DashboardError};
use crate::export::Kind;
use crate::profiles::query::{self, Group};
use crate::{devices, gateways, sites};

const CSRF_COOKIE: &str = "headend_csrf";

/// What every page's header needs.
pub struct Nav {
    pub email: Option<String>,
    pub admin: bool,
    pub operator: bool,
    pub csrf: String,
}

/// The CSV export form of a site, circuit or meter page (`templates/export_form.html`).
pub struct ExportForm {
    /// The export's scope parameter: `site`, `circuit` or `meter`.
    param: &'static str,
    value: String,
    /// With `meter`: the device id, so that a serial reported twice is still one meter.
    device: Option<i64>,
    what: String,
    from: NaiveDate,
    to: NaiveDate,
    time_zone: String,
    max_measurements: i64,
    max_readings: i64,
}

impl ExportForm {
    fn new(
        param: &'static str,
        value: String,
        what: String,
        (from, to): (NaiveDate, NaiveDate),
        time_zone: &str,
    ) -> Self {
        let limit = |kind: Kind| {
            let (site, one) = kind.max_days();
            if param == "site" {
                site
            } else {
                one
            }
        };
        Self {
            param,
            value,
            device: None,
            what,
            from,
            to,
            time_zone: time_zone.to_owned(),
            max_measurements: limit(Kind::Measurements),
            max_readings: limit(Kind::Readings),
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The request's CSRF token, and the cookie to set when it had none.
pub(super) fn csrf(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, CSRF_COOKIE)
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Some(t) => (t.to_owned(), None),
        None => {
            let (token, set) = fresh_csrf();
            (token, Some(set))
        }
    }
}

/// A new CSRF token and the cookie that sets it (`Secure` is added by the router when due).
/// Login always sets a new one, so a token planted or seen before login is worthless after.
fn fresh_csrf() -> (String, String) {
    let token: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let set = format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    (token, set)
}

/// Admin pages and forms: 403 for any other role.
pub(super) fn require_admin(p: &crate::auth::Principal) -> Result<(), PageError> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(PageError::Forbidden)
    }
}

pub(super) fn check_csrf(headers: &HeaderMap, submitted: &str) -> Result<(), PageError> {
    match cookie(headers, CSRF_COOKIE) {
        Some(expected)
            if !submitted.is_empty() && constant_eq(expected.as_bytes(), submitted.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(PageError::Csrf),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in user of a page; others are sent to the login page.
pub struct PageUser(pub Principal);

impl FromRequestParts<WebState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let token = cookie(&parts.headers, COOKIE).ok_or_else(to_login)?;
        // Signature, expiry, a live session and the account's current role, in one query.
        match session::principal_of(state, token).await {
            Ok(Some(p)) => Ok(Self(p)),
            Ok(None) => Err(to_login()),
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    #[error("this needs another role")]
    Forbidden,
    #[error("the form expired; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    Bad(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<DashboardError> for PageError {
    fn from(e: DashboardError) -> Self {
        match e {
            DashboardError::Query(query::QueryError::Invalid(m)) => Self::Bad(m),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(anyhow::anyhow!("template: {e}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::Bad(_) => StatusCode::BAD_REQUEST,
            Self::Internal(e) => {
                tracing::error!(error = ?e, "page failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let page = ErrorPage {
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            nav: Nav {
                email: None,
                admin: false,
                operator: false,
                csrf: String::new(),
            },
            message: self.to_string(),
        };
        (
            status,
            Html(page.render().unwrap_or_else(|_| self.to_string())),
        )
            .into_response()
    }
}

pub(super) type PageResult = Result<Response, PageError>;

#[derive(Template)]
#[template(
    source = r#"{% extends "base.html" %}{% block content %}<h1>{{ title }}</h1><p class="error">{{ message }}</p><p><a href="/">Back to the sites</a></p>{% endblock %}"#,
    ext = "html"
)]
struct ErrorPage {
    title: String,
    nav: Nav,
    message: String,
}

/// Renders a page, setting the CSRF cookie when the browser had none.
pub(super) fn render(page: &impl Template, set_cookie: Option<String>) -> PageResult {
    let body = page.render()?;
    let mut response = Html(body).into_response();
    let headers = response.headers_mut();
    // No caching of pages with personal data; no framing (clickjacking of relay buttons).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, c);
    }
    Ok(response)
}

pub(super) fn nav(p: &Principal, headers: &HeaderMap) -> (Nav, Option<String>) {
    let (token, set) = csrf(headers);
    (
        Nav {
            email: Some(p.email.clone()),
            admin: p.role == Role::Admin,
            operator: matches!(p.role, Role::Admin | Role::Operator),
            csrf: token,
        },
        set,
    )
}

// ---- static files -------------------------------------------------------------------------

pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../static/app.css"),
    )
}

pub async fn live_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../static/live.js"),
    )
}

// ---- login ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: &'static str,
    nav: Nav,
    error: Option<String>,
}

pub async fn login_form(headers: HeaderMap) -> PageResult {
    let (token, set) = csrf(&headers);
    render(
        &LoginPage {
            title: "Log in",
            nav: Nav {
                email: None,
                admin: false,
                operator: false,
                csrf: token,
            },
            error: None,
        },
        set,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

pub async fn login(
    State(state): State<WebState>,
    Peer(source): Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    let refused = |status: StatusCode, message: &str| {
        let (token, set) = csrf(&headers);
        let page = LoginPage {
            title: "Log in",
            nav: Nav {
                email: None,
                admin: false,
                operator: false,
                csrf: token,
            },
            error: Some(message.to_owned()),
        };
        render(&page, set).map(|mut r| {
            *r.status_mut() = status;
            r
        })
    };
    let wrong = || refused(StatusCode::UNAUTHORIZED, "E-mail or password is wrong.");
    let wait = |secs: u64, message: String| {
        refused(StatusCode::TOO_MANY_REQUESTS, &message).map(|mut r| {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        })
    };
    if form.email.len() > 254 || form.password.len() > 1024 {
        return wrong();
    }
    let user_id =
        match session::check_login(&state, &form.email, &form.password, source, "page").await? {
            LoginCheck::Passed(user_id) => user_id,
            LoginCheck::Refused => return wrong(),
            LoginCheck::Throttled(secs) => {
                return wait(
                    secs,
                    format!(
                        "Too many login attempts. Wait {secs} second{} and try again.",
                        if secs == 1 { "" } else { "s" }
                    ),
                )
            }
            LoginCheck::Busy => {
                return wait(
                    1,
                    "The server is busy checking passwords. Try again in a second.".into(),
                )
            }
        };
    let Some(started) = session::start(&state, user_id)
        .await
        .map_err(PageError::Internal)?
    else {
        return wrong();
    };
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&state, &started.token)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    // A new CSRF token with the new session: one planted or read before login is now useless.
    let (_, csrf_cookie) = fresh_csrf();
    if let Ok(v) = HeaderValue::from_str(&csrf_cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// Ends the session server-side (its token stops working everywhere at once) and clears the
/// cookie.
pub async fn logout(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    session::revoke(&state, &headers).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(session::CLEAR_COOKIE),
    );
    Ok(response)
}

// ---- sites ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    title: &'static str,
    nav: Nav,
    sites: Vec<dashboard::SiteSummary>,
}

pub async fn sites_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let sites = dashboard::sites_overview(&state.pool, &p.scope, Utc::now()).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &SitesPage {
            title: "Sites",
            nav,
            sites,
        },
        set,
    )
}

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

/// A date from a query string, refused (400) outside the years Headend works with.
fn supported_date(date: Option<NaiveDate>) -> Result<Option<NaiveDate>, PageError> {
    match date {
        Some(d) if !calendar::supported(d) => Err(PageError::Bad(format!(
            "choose a date in the years {} to {}",
            calendar::MIN_YEAR,
            calendar::MAX_YEAR
        ))),
        other => Ok(other),
    }
}

fn label(by: Period, d: NaiveDate) -> String {
    match by {
        Period::Day => d.format("%d").to_string(),
        Period::Month => d.format("%b").to_string(),
        Period::Year => d.format("%Y").to_string(),
    }
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

// ---- meter ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "meter.html")]
struct MeterPage {
    title: String,
    nav: Nav,
    serial: String,
    /// The `devices` id: every link and form of the page carries it.
    device_id: i64,
    name: String,
    model: String,
    gateway: String,
    time_zone: String,
    from: NaiveDate,
    to: NaiveDate,
    period_label: String,
    export: ExportForm,
    power_chart: String,
    measured_at: String,
    phase_rows: Vec<(&'static str, Vec<(String, String)>)>,
    other_rows: Vec<(&'static str, &'static str, String)>,
    counters: Vec<(String, String, String, String)>,
}

#[derive(Deserialize)]
pub struct MeterParams {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// Which of the meters reporting the serial (see [`devices::Resolved`]).
    device: Option<i64>,
}

/// A serial that several meters of the user's sites report: the person chooses.
#[derive(Template)]
#[template(path = "meter_choose.html")]
struct MeterChooser {
    title: String,
    nav: Nav,
    serial: String,
    /// Each candidate with the link to its page.
    candidates: Vec<(String, devices::Candidate)>,
}

fn show(v: Option<&serde_json::Value>) -> String {
    match v.and_then(serde_json::Value::as_f64) {
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "–".into(),
    }
}

pub async fn meter_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Query(q): Query<MeterParams>,
) -> PageResult {
    let device = match devices::resolve_meter(&state.pool, &p.scope, &serial, q.device).await? {
        devices::Resolved::Found(d) => *d,
        devices::Resolved::NotFound => return Err(PageError::NotFound),
        devices::Resolved::Ambiguous(candidates) => {
            let (nav, set) = nav(&p, &headers);
            return render(
                &MeterChooser {
                    title: format!("Which meter {serial}?"),
                    nav,
                    candidates: candidates
                        .into_iter()
                        .map(|c| (super::urls::meter(&c.serial, c.id), c))
                        .collect(),
                    serial,
                },
                set,
            );
        }
    };
    // From here on the serial is the device's own (the path may have been the placeholder).
    let serial = device.serial.clone();
    let (zone_name, gateway): (String, String) = sqlx::query_as(
        "SELECT COALESCE(s.time_zone, g.time_zone), g.serial FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN sites s ON s.id = g.site_id WHERE d.id = $1",
    )
    .bind(device.id)
    .fetch_one(&state.pool)
    .await?;
    let tz = dashboard::zone(&zone_name);
    let now = Utc::now();
    let today = calendar::local_date(now, tz);
    // Without a chosen period: the last 24 hours, up to and including the quarter-hour in
    // progress, like the SG's Power graph page. A chosen period is whole local days.
    let rolling = q.from.is_none() && q.to.is_none();
    let to = supported_date(q.to)?.unwrap_or_else(|| today.succ_opt().unwrap_or(today));
    let from = supported_date(q.from)?.unwrap_or_else(|| {
        if rolling {
            calendar::local_date(now - chrono::Duration::hours(24), tz)
        } else {
            to.pred_opt().unwrap_or(to)
        }
    });
    if to <= from || (to - from).num_days() > query::MAX_PROFILE_DAYS {
        return Err(PageError::Bad(format!(
            "choose a period of 1 to {} days",
            query::MAX_PROFILE_DAYS
        )));
    }
    let (start, end, period_label) = if rolling {
        let quarter = now.timestamp() - now.timestamp().rem_euclid(900);
        let end = chrono::DateTime::from_timestamp(quarter + 900, 0).unwrap_or(now);
        (
            end - chrono::Duration::hours(24),
            end,
            "the last 24 hours".to_owned(),
        )
    } else {
        (
            calendar::period_bounds(tz, from, Period::Day).0,
            calendar::period_bounds(tz, to, Period::Day).0,
            format!("{from} to {to}"),
        )
    };
    let import = device
        .import_register
        .clone()
        .unwrap_or_else(|| crate::profiles::roles::DEFAULT_IMPORT.into());
    let profile = query::profile(
        &state.pool,
        device.site_id,
        device.id,
        &device.serial,
        tz,
        start,
        end,
        Some(&import),
    )
    .await
    .or_else(|e| match e {
        // A meter without that register still shows its live values.
        query::QueryError::Invalid(_) => Ok(query::Profile {
            device: device.serial.clone(),
            time_zone: zone_name.clone(),
            from: start,
            to: end,
            registers: Vec::new(),
            power: Vec::new(),
        }),
        other => Err(other),
    })
    .map_err(DashboardError::from)?;
    let points: Vec<PowerPoint> = match profile.registers.first() {
        Some(r) => r
            .intervals
            .iter()
            .map(|i| PowerPoint {
                label: i.start_local.get(11..16).unwrap_or("").to_owned(),
                power_w: i.energy.map(|wh| wh * 4.0),
                estimated: i.quality == headend_energy::engine::Quality::Estimated,
            })
            .collect(),
        None => Vec::new(),
    };
    let power_chart = charts::power_graph("power-chart", "Power", &points);

    let latest = devices::latest(&state.pool, device.clone()).await?;
    let values = latest.values.clone();
    let cell = |key: &str| (key.to_owned(), show(values.get(key)));
    let phase_rows = vec![
        (
            "U (V)",
            vec![
                cell("u1"),
                cell("u2"),
                cell("u3"),
                (String::new(), String::new()),
            ],
        ),
        (
            "I (A)",
            vec![cell("i1"), cell("i2"), cell("i3"), cell("i_n")],
        ),
        ("P (W)", vec![cell("p1"), cell("p2"), cell("p3"), cell("p")]),
        (
            "Q (var)",
            vec![cell("q1"), cell("q2"), cell("q3"), cell("q")],
        ),
        (
            "S (VA)",
            vec![cell("s1"), cell("s2"), cell("s3"), cell("s")],
        ),
        (
            "PF",
            vec![cell("pf1"), cell("pf2"), cell("pf3"), cell("pf")],
        ),
        (
            "Angle (°)",
            vec![cell("pa1"), cell("pa2"), cell("pa3"), cell("pa")],
        ),
        (
            "THD-U (%)",
            vec![
                cell("thd_u1"),
                cell("thd_u2"),
                cell("thd_u3"),
                (String::new(), String::new()),
            ],
        ),
        (
            "THD-I (%)",
            vec![
                cell("thd_i1"),
                cell("thd_i2"),
                cell("thd_i3"),
                (String::new(), String::new()),
            ],
        ),
    ];
    let other_rows = vec![
        ("Frequency (Hz)", "frequency", show(values.get("frequency"))),
        (
            "Temperature (°C)",
            "temperature",
            show(values.get("temperature")),
        ),
        (
            "Active tariff",
            "tariff",
            latest.tariff.map_or("–".into(), |t| format!("T{t}")),
        ),
    ];
    let counters = devices::counters(&state.pool, device.id)
        .await?
        .iter()
        .map(|c| {
            let v = serde_json::to_value(c).unwrap_or_default();
            (
                v["name"].as_str().unwrap_or("").to_owned(),
                format!(
                    "{} {}",
                    v["value"].as_str().unwrap_or(""),
                    v["unit"].as_str().unwrap_or("")
                ),
                v["tariffs"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .map(|x| format!("T{x}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
                v["ts"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let (nav, set) = nav(&p, &headers);
    render(
        &MeterPage {
            title: device.name.clone().unwrap_or_else(|| serial.clone()),
            nav,
            name: device
                .name
                .clone()
                .or(device.description.clone())
                .unwrap_or_else(|| serial.clone()),
            model: device.model.clone().unwrap_or_default(),
            export: ExportForm {
                device: Some(device.id),
                ..ExportForm::new(
                    "meter",
                    serial.clone(),
                    format!("meter {serial}"),
                    (from, to),
                    &zone_name,
                )
            },
            serial,
            device_id: device.id,
            gateway,
            time_zone: zone_name,
            from,
            to,
            period_label,
            power_chart,
            measured_at: latest
                .ts
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "no measurements yet".into()),
            phase_rows,
            other_rows,
            counters,
        },
        set,
    )
}

// ---- relays --------------------------------------------------------------------------------

pub struct RelayRow {
    id: i64,
    label: String,
    gateway: String,
    online: bool,
    state: &'static str,
    age: String,
    critical: bool,
    in_flight: Option<(i64, String, String)>,
    operations: i64,
    rated: i32,
    wear_pct: f64,
}

fn relay_row(r: ledger::RelayView) -> RelayRow {
    RelayRow {
        label: r.name.clone().or(r.description.clone()).unwrap_or_else(|| {
            format!(
                "{} relay {}",
                r.port.to_uppercase(),
                if r.port == "ir" {
                    String::new()
                } else {
                    r.slot.to_string()
                }
            )
            .trim()
            .to_owned()
        }),
        id: r.id,
        gateway: r.gateway,
        online: r.gateway_online,
        state: match r.state {
            Some(1) => "ON",
            Some(0) => "OFF",
            Some(_) => "unknown",
            None => "never reported",
        },
        age: r
            .state_age_s
            .map_or(String::new(), |s| format!("{} ago", human_age(s))),
        critical: r.critical,
        in_flight: r.command_in_flight.map(|id| {
            (
                id,
                r.command_action.unwrap_or_default(),
                r.command_status.unwrap_or_default(),
            )
        }),
        operations: r.operations,
        rated: r.rated_operations,
        wear_pct: r.wear_pct,
    }
}

fn human_age(s: f64) -> String {
    let s = s.max(0.0) as i64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[derive(Template)]
#[template(path = "relays.html")]
struct RelaysPage {
    title: &'static str,
    nav: Nav,
    relays: Vec<RelayRow>,
}

pub async fn relays_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let relays = ledger::list_relays(&state.pool, &p.scope)
        .await?
        .into_iter()
        .map(relay_row)
        .collect();
    let (nav, set) = nav(&p, &headers);
    render(
        &RelaysPage {
            title: "Relays",
            nav,
            relays,
        },
        set,
    )
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    title: String,
    nav: Nav,
    relay: RelayRow,
    history: Vec<ledger::CommandView>,
}

pub async fn relay_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> PageResult {
    let relay = relay_row(
        ledger::get_relay(&state.pool, &p.scope, id)
            .await?
            .ok_or(PageError::NotFound)?,
    );
    let history = ledger::history(&state.pool, &p.scope, id, 50).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &RelayPage {
            title: relay.label.clone(),
            nav,
            relay,
            history,
        },
        set,
    )
}

#[derive(Template)]
#[template(path = "relay_confirm.html")]
struct ConfirmPage {
    title: String,
    nav: Nav,
    id: i64,
    label: String,
    action: String,
    state: &'static str,
    idempotency_key: String,
}

#[derive(Deserialize)]
pub struct ConfirmParams {
    action: String,
}

pub async fn relay_confirm(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<ConfirmParams>,
) -> PageResult {
    if !matches!(p.role, Role::Admin | Role::Operator) {
        return Err(PageError::Forbidden);
    }
    if !matches!(q.action.as_str(), "on" | "off" | "toggle") {
        return Err(PageError::Bad("the action is on, off or toggle".into()));
    }
    let relay = relay_row(
        ledger::get_relay(&state.pool, &p.scope, id)
            .await?
            .ok_or(PageError::NotFound)?,
    );
    let (nav, set) = nav(&p, &headers);
    // A double submit of the confirmation (a double click, a reload) makes one command.
    let key: String = (0..12)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    render(
        &ConfirmPage {
            title: format!("Switch {}", relay.label),
            nav,
            id,
            label: relay.label,
            action: q.action,
            state: relay.state,
            idempotency_key: key,
        },
        set,
    )
}

#[derive(Deserialize)]
pub struct CommandForm {
    csrf: String,
    action: String,
    idempotency_key: Option<String>,
    reason: Option<String>,
}

pub async fn relay_command(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    super::relays::ClientAddr(from): super::relays::ClientAddr,
    Path(id): Path<i64>,
    Form(form): Form<CommandForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    let action = match form.action.as_str() {
        "on" => ledger::Action::On,
        "off" => ledger::Action::Off,
        "toggle" => ledger::Action::Toggle,
        _ => return Err(PageError::Bad("the action is on, off or toggle".into())),
    };
    let created = ledger::create(
        &state.pool,
        &state.command_timing,
        &p,
        from,
        id,
        NewCommand {
            action,
            idempotency_key: form.idempotency_key.filter(|k| !k.is_empty()),
            expires_at: None,
            expires_in_s: None,
            reason: form.reason.filter(|r| !r.trim().is_empty()),
        },
    )
    .await
    .map_err(|e| match e {
        ledger::CommandError::NotFound(_) => PageError::NotFound,
        ledger::CommandError::Forbidden(_) => PageError::Forbidden,
        ledger::CommandError::Invalid(m) | ledger::CommandError::Refused(m) => PageError::Bad(m),
        ledger::CommandError::Db(e) => PageError::from(e),
    })?;
    state.commands_wake.notify_one();
    let command = match created {
        Created::New(c) | Created::Existing(c) => c,
    };
    Ok(Redirect::to(&format!("/commands/{command}")).into_response())
}

#[derive(Template)]
#[template(path = "command.html")]
struct CommandPage {
    title: String,
    nav: Nav,
    c: ledger::CommandView,
    done: bool,
}

pub async fn command_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> PageResult {
    let c = ledger::get_command(&state.pool, &p.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let done = matches!(
        c.status.as_str(),
        "confirmed" | "failed" | "expired" | "cancelled"
    );
    let (nav, set) = nav(&p, &headers);
    render(
        &CommandPage {
            title: format!("Command {id}"),
            nav,
            c,
            done,
        },
        set,
    )
}

pub async fn command_action(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, what)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    let result = match what.as_str() {
        "approve" => ledger::approve(&state.pool, &p, id).await,
        "cancel" => ledger::cancel(&state.pool, &p, id).await,
        _ => return Err(PageError::NotFound),
    };
    result.map_err(|e| match e {
        ledger::CommandError::NotFound(_) => PageError::NotFound,
        ledger::CommandError::Forbidden(_) => PageError::Forbidden,
        ledger::CommandError::Invalid(m) | ledger::CommandError::Refused(m) => PageError::Bad(m),
        ledger::CommandError::Db(e) => PageError::from(e),
    })?;
    state.commands_wake.notify_one();
    Ok(Redirect::to(&format!("/commands/{id}")).into_response())
}

// ---- gateways and admin ----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    title: &'static str,
    nav: Nav,
    gateways: Vec<gateways::GatewayView>,
}

pub async fn gateways_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let gateways = gateways::list(&state.pool, &p.scope).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &GatewaysPage {
            title: "Gateways",
            nav,
            gateways,
        },
        set,
    )
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    title: &'static str,
    nav: Nav,
    message: Option<String>,
    error: Option<String>,
    sites: Vec<(i64, String, String, i64)>,
    /// Id, e-mail, role, sites, disabled.
    users: Vec<(i64, String, String, String, bool)>,
    gateways: Vec<gateways::GatewayView>,
}

#[derive(Deserialize, Default)]
pub struct AdminParams {
    message: Option<String>,
    error: Option<String>,
}

pub async fn admin_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Query(q): Query<AdminParams>,
) -> PageResult {
    require_admin(&p)?;
    admin_view(&state, &p, &headers, q.message, q.error).await
}

/// The admin page with a note: from a redirect's query, or (for a secret shown once) rendered
/// straight into the POST's answer, so the secret is never in a URL, history or proxy log.
async fn admin_view(
    state: &WebState,
    p: &crate::auth::Principal,
    headers: &HeaderMap,
    message: Option<String>,
    error: Option<String>,
) -> PageResult {
    let sites: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT s.id, s.name, s.time_zone, (SELECT count(*) FROM contracts c WHERE c.site_id = s.id)
         FROM sites s ORDER BY s.name",
    )
    .fetch_all(&state.pool)
    .await?;
    let users: Vec<(i64, String, String, String, bool)> = sqlx::query_as(
        "SELECT u.id, u.email, u.role, COALESCE(string_agg(s.name, ', ' ORDER BY s.name), ''),
                u.disabled
         FROM users u LEFT JOIN user_sites us ON us.user_id = u.id LEFT JOIN sites s ON s.id = us.site_id
         GROUP BY u.id ORDER BY u.email",
    )
    .fetch_all(&state.pool)
    .await?;
    let gateways = gateways::list(&state.pool, &Scope::All).await?;
    let (nav, set) = nav(p, headers);
    // Shown as text, never as markup.
    render(
        &AdminPage {
            title: "Administration",
            nav,
            message: message.map(|m| m.chars().take(300).collect()),
            error: error.map(|m| m.chars().take(300).collect()),
            sites,
            users,
            gateways,
        },
        set,
    )
}

pub(super) fn back_to_admin(result: Result<String, String>) -> Response {
    let (key, text) = match result {
        Ok(m) => ("message", m),
        Err(e) => ("error", e),
    };
    Redirect::to(&format!("/admin?{key}={}", percent(&text))).into_response()
}

/// Percent-encodes text for a query string value.
pub(super) fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct NewSiteForm {
    csrf: String,
    name: String,
    time_zone: String,
}

pub async fn admin_create_site(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewSiteForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let result = sites::create(&state.pool, &form.name, &form.time_zone).await;
    state.gateways_changed();
    Ok(back_to_admin(match result {
        Ok(id) => Ok(format!("Site {id} created.")),
        Err(sites::SiteError::Db(e)) => return Err(e.into()),
        Err(e) => Err(e.to_string()),
    }))
}

#[derive(Deserialize)]
pub struct NewUserForm {
    csrf: String,
    email: String,
    role: String,
    sites: Option<String>,
}

pub async fn admin_create_user(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewUserForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let Ok(role) = form.role.parse::<Role>() else {
        return Ok(back_to_admin(Err(
            "role is admin, operator or viewer".into()
        )));
    };
    let site_ids: Result<Vec<i64>, _> = form
        .sites
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let Ok(site_ids) = site_ids else {
        return Ok(back_to_admin(Err(
            "site ids are numbers separated by commas".into(),
        )));
    };
    let password = crate::auth::password::generate();
    match users::create(&state.pool, &form.email, role, &password).await {
        Ok(id) => {
            for site in site_ids {
                users::grant_site(&state.pool, id, site).await?;
            }
            // Shown once, like the API does; the admin hands it over.
            secret_shown_once(
                admin_view(
                    &state,
                    &p,
                    &headers,
                    Some(format!(
                        "User {} created; password: {password}",
                        form.email.trim()
                    )),
                    None,
                )
                .await,
            )
        }
        Err(e) => Ok(back_to_admin(Err(e.to_string()))),
    }
}

#[derive(Deserialize)]
pub struct GrantForm {
    csrf: String,
    user_id: i64,
    site_id: i64,
}

/// Lets a viewer or operator see one more site.
pub async fn admin_grant_site(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<GrantForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    Ok(back_to_admin(
        match users::grant_site(&state.pool, form.user_id, form.site_id).await? {
            true => Ok("Access granted.".into()),
            false => Err("that user already has that site, or one of them does not exist".into()),
        },
    ))
}

/// Takes a site away from a viewer or operator.
pub async fn admin_revoke_site(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<GrantForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    Ok(back_to_admin(
        match users::revoke_site(&state.pool, form.user_id, form.site_id).await? {
            true => Ok("Access taken away.".into()),
            false => Err("that user does not have that site".into()),
        },
    ))
}

#[derive(Deserialize)]
pub struct DisabledForm {
    csrf: String,
    disabled: String,
}

/// Disables or enables an account (not one's own).
pub async fn admin_user_disabled(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<DisabledForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let disabled = form.disabled == "1";
    if disabled && id == p.user_id {
        return Ok(back_to_admin(Err(
            "you cannot disable your own account".into()
        )));
    }
    Ok(back_to_admin(
        match users::set_disabled(&state.pool, id, disabled).await? {
            true if disabled => Ok("Account disabled; its sessions ended.".into()),
            true => Ok("Account enabled.".into()),
            false => Err("no such user".into()),
        },
    ))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// A new generated password for a user, shown once in the answer.
pub async fn admin_user_password(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    let Some(email) = email else {
        return Ok(back_to_admin(Err("no such user".into())));
    };
    match users::reset_password(&state.pool, id).await {
        Ok(Some(password)) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!("New password for {email}: {password}")),
                None,
            )
            .await,
        ),
        Ok(None) => Ok(back_to_admin(Err("no such user".into()))),
        Err(users::UserError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::Internal(e.into())),
    }
}

/// A new generated MQTT password for a gateway, shown once in the answer.
pub async fn admin_gateway_password(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    match gateways::rotate_password(&state.pool, &serial).await {
        Ok(Some(password)) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!(
                    "New MQTT password for gateway {serial} (shown once): {password}; sessions open now last until they reconnect"
                )),
                None,
            )
            .await,
        ),
        Ok(None) => Ok(back_to_admin(Err("no such gateway".into()))),
        Err(gateways::GatewayError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
pub struct NewGatewayForm {
    csrf: String,
    serial: String,
    site_id: Option<String>,
}

pub async fn admin_create_gateway(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewGatewayForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let site_id = match form
        .site_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => match s.parse() {
            Ok(id) => Some(id),
            Err(_) => return Ok(back_to_admin(Err("the site id is a number".into()))),
        },
        None => None,
    };
    let created = gateways::create(
        &state.pool,
        gateways::NewGateway {
            serial: form.serial,
            site_id,
            ..Default::default()
        },
        &state.default_time_zone,
    )
    .await;
    state.gateways_changed();
    match created {
        Ok(g) => secret_shown_once(
            admin_view(
                &state,
                &p,
                &headers,
                Some(format!(
                    "Gateway {} registered; MQTT password (shown once): {}; publish base {}; command topic {}",
                    g.serial, g.password, g.publish_base, g.command_topic
                )),
                None,
            )
            .await,
        ),
        Err(e) => Ok(back_to_admin(Err(e.to_string()))),
    }
}

/// A page carrying a secret: never cached, never stored.
fn secret_shown_once(page: PageResult) -> PageResult {
    let mut page = page?;
    page.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(page)
}
