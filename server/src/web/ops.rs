//! Operations endpoints: `/healthz` for orchestrators and `/metrics` for Prometheus, and the
//! request counting middleware.

use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{session, WebState};

pub async fn count_requests(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    state.metrics.http_requests.inc();
    let response = next.run(request).await;
    if response.status().is_server_error() {
        state.metrics.http_errors.inc();
    }
    response
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
