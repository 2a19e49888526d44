//! The HTML dashboard: server-rendered askama pages that need no JavaScript to show data.
//!
//! Sessions: the same JWT as the API, in the `headend_session` cookie (HttpOnly,
//! SameSite=Strict). Forms carry a CSRF token that must equal the `headend_csrf` cookie
//! (double submit); with SameSite=Strict that makes a cross-site form post useless.

pub mod admin;
pub mod alarms;
pub mod circuit;
pub mod converters;
pub mod form;
pub mod gateways;
pub mod login;
pub mod meter;
pub mod outbox;
pub mod relays;
pub mod site;
pub mod site_admin;
pub mod sites;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use crate::accounting::query::{self};
use crate::auth::{Principal, Role};
use crate::dashboard::DashboardError;
use crate::export::Kind;
use crate::web::session::{self, COOKIE};
use crate::web::WebState;

const CSRF_COOKIE: &str = "headend_csrf";

/// What every page's header needs.
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

/// An internal request header carrying the request's path to [`nav`], which gets the headers
/// but not the URI. Set by [`remember_path`] on every request, replacing whatever a client sent.
const PAGE_PATH: &str = "x-headend-page-path";

/// Middleware: records the path for [`nav`] (a client-sent value is overwritten, so it can at
/// most change which navigation link is highlighted on its own page).
pub async fn remember_path(mut request: axum::extract::Request) -> axum::extract::Request {
    let path = HeaderValue::from_str(request.uri().path()).ok();
    let headers = request.headers_mut();
    headers.remove(PAGE_PATH);
    if let Some(path) = path {
        headers.insert(PAGE_PATH, path);
    }
    request
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
pub(crate) fn csrf(headers: &HeaderMap) -> (String, Option<String>) {
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
pub(crate) fn require_admin(p: &crate::auth::Principal) -> Result<(), PageError> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(PageError::Forbidden)
    }
}

pub(crate) fn check_csrf(headers: &HeaderMap, submitted: &str) -> Result<(), PageError> {
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
                section: Section::None,
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
pub(crate) fn render(page: &impl Template, set_cookie: Option<String>) -> PageResult {
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

pub(crate) fn nav(p: &Principal, headers: &HeaderMap) -> (Nav, Option<String>) {
    let (token, set) = csrf(headers);
    (
        Nav {
            email: Some(p.email.clone()),
            admin: p.role == Role::Admin,
            operator: matches!(p.role, Role::Admin | Role::Operator),
            csrf: token,
            section: headers
                .get(PAGE_PATH)
                .and_then(|v| v.to_str().ok())
                .map_or(Section::None, Section::of_path),
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
        include_str!("../../../../static/app.css"),
    )
}

pub async fn live_js() -> impl IntoResponse {
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

fn label(by: Period, d: NaiveDate) -> String {
    match by {
        Period::Day => d.format("%d").to_string(),
        Period::Month => d.format("%b").to_string(),
        Period::Year => d.format("%Y").to_string(),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
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
