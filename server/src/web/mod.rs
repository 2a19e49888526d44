//! HTTP: the JSON API, `/metrics`, `/healthz`. The only module that knows axum.

pub mod api;
pub mod assets;
pub mod error;
pub mod ops;
pub mod pages;
pub mod session;
pub mod urls;
pub mod xml_push;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::token::TokenKeys;
use crate::infra::metrics::{Gauges, Metrics};
use crate::zone::TimeZone;

/// Everything a handler may use.
#[derive(Clone)]
pub struct WebState {
    /// The primary: writes, sessions, and reads that must see their own writes.
    pub pool: PgPool,
    /// Dashboards (overview, site, circuit and meter pages, the energy API) and CSV exports:
    /// the read replica (`database.read_url`) when configured, else the primary.
    pub read_pool: PgPool,
    pub keys: TokenKeys,
    pub metrics: Arc<Metrics>,
    pub gauges: Arc<dyn Fn() -> Gauges + Send + Sync>,
    /// Zone of a new gateway or converter that belongs to no site (`ingest.default_time_zone`).
    pub default_time_zone: TimeZone,
    /// Mark every cookie `Secure`, even on a request that does not look like HTTPS (see
    /// [`reached_over_https`]).
    pub secure_cookies: bool,
    /// Called after gateways or sites change, so ingest sees them at once.
    pub on_gateways_changed: Arc<dyn Fn() + Send + Sync>,
    /// Wakes the profile worker after a change that queued rollup work.
    pub energy_wake: Arc<tokio::sync::Notify>,
    /// Wakes the relay command dispatcher after a new or approved command.
    pub commands_wake: Arc<tokio::sync::Notify>,
    pub command_timing: crate::relays::Timing,
    /// Tells the alarm tasks about rule changes and new outbox rows.
    pub alarms: crate::alarms::AlarmsHandle,
    /// Modbus converters: register maps, settings, the running buses.
    pub modbus: crate::modbus::ModbusHandle,
    /// The bearer token of Prometheus scrapers (`http.metrics_token`).
    pub metrics_token: Option<crate::config::Secret>,
    /// The brute-force throttle of password logins (API and page): one per running app, never
    /// a process-wide static that parallel apps in one test process would share.
    pub login_throttle: Arc<crate::auth::throttle::Throttle>,
    /// The brokers sites may be published to (`[northbound]`), for the settings' checks.
    pub northbound: Arc<crate::config::northbound::NorthboundConfig>,
}

impl WebState {
    pub fn gateways_changed(&self) {
        (self.on_gateways_changed)();
    }

    pub fn energy_changed(&self) {
        self.energy_wake.notify_one();
    }

    /// The brute-force throttle of password logins (API and page), one per running app.
    pub fn login_throttle(&self) -> &crate::auth::throttle::Throttle {
        &self.login_throttle
    }
}

/// The Content-Security-Policy of every response: pages load only their own styles, scripts
/// and images, and no response can be framed (clickjacking of relay buttons).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// Headers every response carries unless its handler set its own: no MIME sniffing, no
/// referrer outside the origin, the pages' CSP and no framing. Applied around the whole router
/// (errors, 404s, timeouts and static files included). A router merged into [`router`]'s
/// result afterwards (the XML push route in `app.rs`) needs it applied once more around the
/// merged router; applying it twice is harmless (`if_not_present`).
pub fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let headers: [(&str, &str); 4] = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
    ];
    headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ))
    })
}

/// Whether the client reached Headend over HTTPS. Headend has no TLS HTTP listener of its own,
/// so HTTPS means a TLS-terminating reverse proxy, which must set (overwriting any value the
/// client sent) `X-Forwarded-Proto` or `Forwarded: proto=`; an absolute `https` request URI
/// counts too. A client that forges the header only gets stricter cookies, so trusting it
/// cannot weaken anything.
pub fn reached_over_https(uri: &Uri, headers: &HeaderMap) -> bool {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ';']))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    uri.scheme_str() == Some("https")
        || values("x-forwarded-proto")
            .iter()
            .any(|p| p.eq_ignore_ascii_case("https"))
        || values("forwarded").iter().any(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
        })
}

/// Adds `Secure` to every cookie the response sets when the request came over HTTPS or
/// `http.secure_cookies` is on: one place, so no handler's cookie (session, CSRF, logout) can
/// miss it.
async fn secure_cookies(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let secure = state.secure_cookies || reached_over_https(request.uri(), request.headers());
    let mut response = next.run(request).await;
    if secure {
        mark_cookies_secure(response.headers_mut());
    }
    response
}

fn mark_cookies_secure(headers: &mut HeaderMap) {
    let header::Entry::Occupied(entry) = headers.entry(header::SET_COOKIE) else {
        return;
    };
    let (_, values) = entry.remove_entry_mult();
    let values: Vec<HeaderValue> = values
        .map(|value| {
            let is_secure = value.to_str().is_ok_and(|v| {
                v.split(';')
                    .skip(1)
                    .any(|attr| attr.trim().eq_ignore_ascii_case("secure"))
            });
            if is_secure {
                return value;
            }
            let mut bytes = value.as_bytes().to_vec();
            bytes.extend_from_slice(b"; Secure");
            HeaderValue::from_bytes(&bytes).unwrap_or(value)
        })
        .collect();
    for value in values {
        headers.append(header::SET_COOKIE, value);
    }
}

pub fn router(state: WebState, max_body_bytes: usize) -> Router {
    let (api, _) = api::router();
    let pages = pages::routes();
    let router = Router::new()
        .nest("/api/v1", api)
        .merge(pages)
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        // An explicit fallback, so that it keeps this router's layers (security headers) when
        // `app.rs` merges other routers into this one: axum keeps a custom fallback over a
        // default one, but of two defaults it keeps the other router's, unlayered.
        .fallback(not_found)
        // A bug must not cost more than its own request: a panic becomes an opaque 500
        // (counted below, logged) instead of a dropped connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ops::count_requests,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            secure_cookies,
        ))
        .layer(TraceLayer::new_for_http());
    security_headers(router).with_state(state)
}

fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    error::ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn https_is_the_uri_scheme_or_what_the_proxy_says() {
        let plain: Uri = "/login".parse().unwrap();
        let absolute: Uri = "https://headend.example/login".parse().unwrap();
        assert!(!reached_over_https(&plain, &headers(&[])));
        assert!(reached_over_https(&absolute, &headers(&[])));
        assert!(reached_over_https(
            &plain,
            &headers(&[("x-forwarded-proto", "HTTPS")])
        ));
        assert!(!reached_over_https(
            &plain,
            &headers(&[("x-forwarded-proto", "http")])
        ));
        assert!(reached_over_https(
            &plain,
            &headers(&[("forwarded", "for=192.0.2.1;proto=https;by=proxy")])
        ));
        assert!(!reached_over_https(
            &plain,
            &headers(&[("forwarded", "for=192.0.2.1;proto=http")])
        ));
    }

    #[test]
    fn every_cookie_becomes_secure_once() {
        let mut map = headers(&[
            ("set-cookie", "a=1; Path=/; HttpOnly"),
            ("set-cookie", "b=2; Path=/; secure"),
            ("content-type", "text/html"),
        ]);
        mark_cookies_secure(&mut map);
        let cookies: Vec<_> = map
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            cookies,
            ["a=1; Path=/; HttpOnly; Secure", "b=2; Path=/; secure"]
        );
        assert_eq!(map.get(header::CONTENT_TYPE).unwrap(), "text/html");
    }
}
