//! The HTML dashboard: server-rendered askama pages that need no JavaScript to show data.
//!
//! Sessions: the same JWT as the API, in the `headend_session` cookie (HttpOnly,
//! SameSite=Strict). Forms carry a CSRF token that must equal the `headend_csrf` cookie
//! (double submit); with SameSite=Strict that makes a cross-site form post useless.
//!
//! One module per page (or resource), each with its `routes()`; the plumbing (session, CSRF,
//! admin role, page context) is in the extractors of `extract`; what a page shows comes from
//! `dashboard` and the feature modules, so a handler only picks its data and renders it.

pub mod admin;
pub mod alarms;
pub mod circuit;
pub mod converters;
pub mod extract;
pub mod form;
pub mod gateways;
pub mod login;
pub mod meter;
pub mod northbound;
pub mod outbox;
pub mod relays;
pub mod site;
pub mod site_admin;
pub mod sites;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use headend_energy::calendar;

use crate::accounting::query::{self};
use crate::dashboard::DashboardError;
use crate::export::Kind;
use crate::web::{assets, WebState};
use crate::zone::TimeZone;

pub use extract::{AdminForm, CsrfForm, NoFields, PageContext, PageUser};

/// Every page, form and static file of the dashboard: each page module's routes.
pub fn routes() -> Router<WebState> {
    let statics = Router::new()
        .route("/static/app.css", get(css))
        .route("/static/live.js", get(live_js))
        .route(
            "/static/vendor/uplot/uPlot.iife.min.js",
            get(assets::uplot_js),
        )
        .route("/static/vendor/uplot/uPlot.min.css", get(assets::uplot_css))
        .route("/static/charts.js", get(assets::charts_js));
    [
        login::routes(),
        sites::routes(),
        site::routes(),
        circuit::routes(),
        meter::routes(),
        relays::routes(),
        alarms::routes(),
        gateways::routes(),
        converters::routes(),
        admin::routes(),
        outbox::routes(),
        site_admin::routes(),
        northbound::routes(),
    ]
    .into_iter()
    .fold(statics, Router::merge)
}

/// What every page's header needs.
#[derive(Default)]
pub struct Nav {
    pub email: Option<String>,
    pub admin: bool,
    pub operator: bool,
    pub csrf: String,
    /// The part of the product the page belongs to, marked in the navigation.
    pub section: Section,
}

/// The navigation's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Section {
    Sites,
    Relays,
    Alarms,
    Gateways,
    Converters,
    Admin,
    #[default]
    None,
}

impl Section {
    /// The section of a page by its path: a site's circuits and meters belong to Sites, a
    /// command to Relays, alarm rules to Alarms, the outbox and site administration to Admin.
    pub fn of_path(path: &str) -> Self {
        let first = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        match first {
            "" | "sites" | "circuits" | "meters" => Self::Sites,
            "relays" | "commands" => Self::Relays,
            "alarms" | "alarm-rules" => Self::Alarms,
            "gateways" => Self::Gateways,
            "converters" => Self::Converters,
            "admin" => Self::Admin,
            _ => Self::None,
        }
    }
}

impl Nav {
    /// `{% if nav.is("relays") %}` in templates.
    pub fn is(&self, name: &str) -> bool {
        let s = match self.section {
            Section::Sites => "sites",
            Section::Relays => "relays",
            Section::Alarms => "alarms",
            Section::Gateways => "gateways",
            Section::Converters => "converters",
            Section::Admin => "admin",
            Section::None => "",
        };
        s == name
    }
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
    time_zone: TimeZone,
    max_measurements: i64,
    max_readings: i64,
}

impl ExportForm {
    fn new(
        param: &'static str,
        value: String,
        what: String,
        (from, to): (NaiveDate, NaiveDate),
        time_zone: TimeZone,
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
            time_zone,
            max_measurements: limit(Kind::Measurements),
            max_readings: limit(Kind::Readings),
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
            DashboardError::Query(query::QueryError::Invalid(m)) | DashboardError::Invalid(m) => {
                Self::Bad(m)
            }
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
            nav: Nav::default(),
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
pub(crate) fn render(page: &impl Template, set_cookie: Option<String>) -> PageResult {
    let body = page.render()?;
    let mut response = Html(body).into_response();
    let headers = response.headers_mut();
    // No caching of pages with personal data; no framing (clickjacking of relay buttons).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(crate::web::CONTENT_SECURITY_POLICY),
    );
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, c);
    }
    Ok(response)
}

// ---- static files -------------------------------------------------------------------------

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../../static/app.css"),
    )
}

async fn live_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../../static/live.js"),
    )
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

#[cfg(test)]
mod tests {
    use super::Section;

    #[test]
    fn a_page_belongs_to_the_section_of_its_first_path_segment() {
        assert_eq!(Section::of_path("/"), Section::Sites);
        assert_eq!(Section::of_path("/meters/X1%2F2"), Section::Sites);
        assert_eq!(Section::of_path("/circuits/3"), Section::Sites);
        assert_eq!(Section::of_path("/commands/9"), Section::Relays);
        assert_eq!(Section::of_path("/alarm-rules/2"), Section::Alarms);
        assert_eq!(Section::of_path("/admin/outbox"), Section::Admin);
        assert_eq!(Section::of_path("/gateways"), Section::Gateways);
        assert_eq!(Section::of_path("/login"), Section::None);
    }
}
