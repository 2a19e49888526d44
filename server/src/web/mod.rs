//! HTTP: the JSON API, `/metrics`, `/healthz`. The only module that knows axum.

pub mod alarms;
pub mod api;
pub mod assets;
pub mod converters;
pub mod energy;
pub mod error;
pub mod export;
pub mod openapi;
pub mod pages;
pub mod quarantine;
pub mod relays;
pub mod session;
pub mod urls;
pub mod xml_push;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use sqlx::PgPool;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::token::TokenKeys;
use crate::infra::metrics::{Gauges, Metrics};

/// Everything a handler may use.
#[derive(Clone)]
pub struct WebState {
    pub pool: PgPool,
    pub keys: TokenKeys,
    pub metrics: Arc<Metrics>,
    pub gauges: Arc<dyn Fn() -> Gauges + Send + Sync>,
    pub default_time_zone: String,
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
    let api = Router::new()
        .route("/auth/login", post(api::login))
        .route("/auth/logout", post(api::logout))
        .route("/me", get(api::me))
        .route("/sites", get(api::list_sites).post(api::create_site))
        .route(
            "/sites/{id}",
            get(energy::get_site)
                .patch(energy::patch_site)
                .delete(energy::delete_site),
        )
        .route("/sites/{id}/consumption", get(energy::site_consumption))
        .route(
            "/sites/{id}/panels",
            get(energy::list_panels).post(energy::create_panel),
        )
        .route("/sites/{id}/circuits", get(energy::list_site_circuits))
        .route(
            "/sites/{id}/contracts",
            get(energy::list_contracts).post(energy::create_contract),
        )
        .route(
            "/panels/{id}",
            get(energy::get_panel)
                .patch(energy::patch_panel)
                .delete(energy::delete_panel),
        )
        .route(
            "/panels/{id}/circuits",
            get(energy::list_circuits).post(energy::create_circuit),
        )
        .route(
            "/circuits/{id}",
            get(energy::get_circuit)
                .patch(energy::patch_circuit)
                .delete(energy::delete_circuit),
        )
        .route("/contracts/example", get(energy::example_contract))
        .route(
            "/contracts/{id}",
            get(energy::get_contract)
                .put(energy::put_contract)
                .delete(energy::delete_contract),
        )
        .route("/users", get(api::list_users).post(api::create_user))
        .route("/users/{user_id}", patch(api::patch_user))
        .route(
            "/users/{user_id}/sites/{site_id}",
            put(api::grant_site).delete(api::revoke_site),
        )
        .route(
            "/gateways/{serial}/password",
            post(api::rotate_gateway_password),
        )
        .route(
            "/gateways",
            get(api::list_gateways).post(api::create_gateway),
        )
        .route(
            "/gateways/{serial}",
            get(api::get_gateway).patch(energy::patch_gateway),
        )
        .route(
            "/gateways/{serial}/xml-push",
            get(xml_push::get_settings).put(xml_push::put_settings),
        )
        .route("/export.csv", get(export::csv))
        .route("/devices", get(api::list_devices))
        .route("/devices/{serial}", patch(energy::patch_device))
        .route("/devices/{serial}/latest", get(api::device_latest))
        .route("/devices/{serial}/profile", get(energy::device_profile))
        .route("/devices/{serial}/counters", get(api::device_counters))
        .route(
            "/devices/{serial}/counters/{name}/reset",
            post(converters::reset_counter),
        )
        .route(
            "/converters",
            get(converters::list).post(converters::create),
        )
        .route("/converters/models", get(converters::models))
        .route(
            "/converters/{id}",
            get(converters::get)
                .patch(converters::patch)
                .delete(converters::delete),
        )
        .route("/converters/{id}/devices", post(converters::add_device))
        .route(
            "/converters/{id}/devices/{unit}",
            patch(converters::patch_device).delete(converters::delete_device),
        )
        .route("/ingest/rejects", get(api::list_rejects))
        .route("/energy/quarantine", get(quarantine::list))
        .route(
            "/energy/quarantine/{counter_id}/retry",
            post(quarantine::retry),
        )
        .route("/relays", get(relays::list))
        .route("/relays/{id}", get(relays::get).patch(relays::patch))
        .route(
            "/relays/{id}/commands",
            get(relays::history).post(relays::create_command),
        )
        .route("/commands/{id}", get(relays::get_command))
        .route("/commands/{id}/cancel", post(relays::cancel))
        .route("/commands/{id}/approve", post(relays::approve))
        .route("/alarms", get(alarms::list).post(alarms::bulk))
        .route("/alarms/history.csv", get(alarms::history_csv))
        .route("/alarms/{id}", get(alarms::get))
        .route("/alarms/{id}/acknowledge", post(alarms::acknowledge))
        .route("/alarms/{id}/shelve", post(alarms::shelve))
        .route("/alarms/{id}/unshelve", post(alarms::unshelve))
        .route(
            "/alarm-rules",
            get(alarms::list_rules).post(alarms::create_rule),
        )
        .route(
            "/alarm-rules/{id}",
            get(alarms::get_rule)
                .put(alarms::put_rule)
                .delete(alarms::delete_rule),
        )
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { error::ApiError::NotFound("route") });
    let pages = Router::new()
        .route(
            "/login",
            get(pages::login::login_form).post(pages::login::login),
        )
        .route("/logout", post(pages::login::logout))
        .route("/", get(pages::sites::sites_page))
        .route("/sites/{id}", get(pages::site::site_page))
        .route("/meters/{serial}", get(pages::meter::meter_page))
        .route("/relays", get(pages::relays::relays_page))
        .route("/relays/{id}", get(pages::relays::relay_page))
        .route("/relays/{id}/confirm", get(pages::relays::relay_confirm))
        .route("/relays/{id}/command", post(pages::relays::relay_command))
        .route("/commands/{id}", get(pages::relays::command_page))
        .route(
            "/commands/{id}/{action}",
            post(pages::relays::command_action),
        )
        .route("/alarms", get(pages::alarms::alarms_page))
        .route("/alarms/{id}", get(pages::alarms::alarm_page))
        .route("/alarms/{id}/{action}", post(pages::alarms::alarm_action))
        .route(
            "/alarm-rules",
            get(pages::alarms::rules_page).post(pages::alarms::create_rule),
        )
        .route(
            "/alarm-rules/{id}",
            get(pages::alarms::rule_page).post(pages::alarms::update_rule),
        )
        .route("/alarm-rules/{id}/delete", post(pages::alarms::delete_rule))
        .route("/gateways", get(pages::gateways::gateways_page))
        .route(
            "/converters",
            get(pages::converters::converters_page).post(pages::converters::create_converter),
        )
        .route(
            "/converters/{id}/devices",
            post(pages::converters::add_device),
        )
        .route(
            "/converters/{id}/devices/{unit}/remove",
            post(pages::converters::remove_device),
        )
        .route(
            "/converters/{id}/enabled",
            post(pages::converters::set_enabled),
        )
        .route("/admin", get(pages::admin::admin_page))
        .route("/admin/outbox", get(pages::outbox::outbox_page))
        .route("/admin/sites", post(pages::admin::admin_create_site))
        .route("/admin/users", post(pages::admin::admin_create_user))
        .route("/admin/grants", post(pages::admin::admin_grant_site))
        .route("/admin/revocations", post(pages::admin::admin_revoke_site))
        .route(
            "/admin/users/{id}/disabled",
            post(pages::admin::admin_user_disabled),
        )
        .route(
            "/admin/users/{id}/password",
            post(pages::admin::admin_user_password),
        )
        .route(
            "/admin/gateways/{serial}/password",
            post(pages::admin::admin_gateway_password),
        )
        .route("/admin/gateways", post(pages::admin::admin_create_gateway))
        .route("/static/app.css", get(pages::css))
        .route("/static/live.js", get(pages::live_js))
        .route(
            "/static/vendor/uplot/uPlot.iife.min.js",
            get(assets::uplot_js),
        )
        .route("/static/vendor/uplot/uPlot.min.css", get(assets::uplot_css))
        .route("/static/charts.js", get(assets::charts_js))
        .route("/circuits/{id}", get(pages::circuit::circuit_page))
        .merge(pages::site_admin::routes());
    let router = Router::new()
        .nest("/api/v1", api)
        .merge(pages)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // An explicit fallback, so that it keeps this router's layers (security headers) when
        // `app.rs` merges other routers into this one: axum keeps a custom fallback over a
        // default one, but of two defaults it keeps the other router's, unlayered.
        .fallback(not_found)
        // A bug must not cost more than its own request: a panic becomes an opaque 500
        // (counted below, logged) instead of a dropped connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
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
        .layer(middleware::map_request(pages::remember_path))
        .layer(TraceLayer::new_for_http());
    security_headers(router).with_state(state)
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

async fn count_requests(State(state): State<WebState>, request: Request, next: Next) -> Response {
    state.metrics.http_requests.inc();
    let response = next.run(request).await;
    if response.status().is_server_error() {
        state.metrics.http_errors.inc();
    }
    response
}

fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    error::ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Liveness and readiness in one: 200 when the database answers, 503 otherwise.
async fn healthz(State(state): State<WebState>) -> Response {
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    match db {
        Ok(Ok(_)) => Json(serde_json::json!({ "status": "ok", "database": "ok" })).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "degraded", "database": "unreachable" })),
        )
            .into_response(),
    }
}

/// Prometheus metrics: for the configured scraper token, or for an admin.
async fn metrics(State(state): State<WebState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let scraper = match (&state.metrics_token, presented) {
        (Some(token), Some(presented)) => constant_time_eq(token.expose(), presented),
        _ => false,
    };
    if !scraper {
        if let Err(refused) = session::Admin::from_request_parts(&mut parts, &state).await {
            return refused.into_response();
        }
    }
    let body = state.metrics.render(&(state.gauges)());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
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
