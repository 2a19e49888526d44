//! Operations endpoints: `/healthz` for orchestrators and `/metrics` for Prometheus, and the
//! request counting middleware.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{session, WebState};
use crate::infra::metrics::{Metrics, CONTENT_TYPE};

/// Counts every request by method, route and status, and times it. The route is the router's
/// pattern (`MatchedPath`), never the raw path, so the label set stays bounded whatever
/// clients send. A request dropped before its answer (the timeout layer answering 408
/// outside this one, or the client going away) is still counted, as `status="cancelled"`.
pub async fn count_requests(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    let mut pending = Pending {
        metrics: state.metrics.clone(),
        method: method_label(request.method()),
        // A clone of the router's `Arc<str>`: no allocation per request.
        route: request.extensions().get::<MatchedPath>().cloned(),
        status: None,
        started: Instant::now(),
    };
    let response = next.run(request).await;
    pending.status = Some(response.status().as_u16());
    response
}

/// One request being served; recorded when dropped, answered or not.
struct Pending {
    metrics: Arc<Metrics>,
    method: &'static str,
    route: Option<MatchedPath>,
    status: Option<u16>,
    started: Instant,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        self.metrics
            .record_http(self.method, route, self.status, self.started.elapsed());
    }
}

/// The method as a label: the standard ones, anything else (extension methods are any token
/// a client likes) as "other".
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// Liveness and readiness in one: 200 when the database answers, 503 otherwise.
pub async fn healthz(State(state): State<WebState>) -> Response {
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
pub async fn metrics(State(state): State<WebState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let presented = session::bearer(&parts.headers).flatten();
    let scraper = match (&state.metrics_token, presented) {
        (Some(token), Some(presented)) => {
            session::constant_time_eq(token.expose().as_bytes(), presented.as_bytes())
        }
        _ => false,
    };
    if !scraper {
        if let Err(refused) = session::Admin::from_request_parts(&mut parts, &state).await {
            return refused.into_response();
        }
    }
    state.metrics.refresh_database(&state.pool).await;
    let body = state.metrics.render(&(state.gauges)());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
