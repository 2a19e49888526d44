//! `/api/v1` handlers for relays and their command ledger. Reads need the relay's site in
//! scope; commands need an operator or admin of that site; relay settings need an admin.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::session::{Admin, Auth};
use super::WebState;
use crate::relays::ledger::{self, CommandError, Created};

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(m) => Self::BadRequest(m),
            CommandError::NotFound(what) => Self::NotFound(what),
            CommandError::Forbidden(m) => Self::Forbidden(m),
            CommandError::Refused(m) => Self::Conflict(m),
            CommandError::Db(e) => Self::internal(e),
        }
    }
}

/// Where a request came from, for the ledger: the peer address (a reverse proxy's
/// `X-Forwarded-For` is recorded beside it, not instead of it, since it can be forged).
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>());
        Ok(Self(match (peer, forwarded) {
            (Some(p), Some(f)) => Some(format!("{p} (forwarded for {f})")),
            (p, f) => p.or(f),
        }))
    }
}

pub async fn list(State(state): State<WebState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(Json(ledger::list_relays(&state.pool, &p.scope).await?))
}

pub async fn get(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    ledger::get_relay(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("relay"))
}

pub async fn patch(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<ledger::RelaySettings>,
) -> ApiResult<impl IntoResponse> {
    ledger::get_relay(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("relay"))?;
    ledger::update_relay(&state.pool, id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct HistoryParams {
    limit: Option<i64>,
}

pub async fn history(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<HistoryParams>,
) -> ApiResult<impl IntoResponse> {
    ledger::get_relay(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("relay"))?;
    Ok(Json(
        ledger::history(&state.pool, &p.scope, id, q.limit.unwrap_or(100)).await?,
    ))
}

pub async fn create_command(
    State(state): State<WebState>,
    Auth(p): Auth,
    ClientAddr(from): ClientAddr,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    Json(mut body): Json<ledger::NewCommand>,
) -> ApiResult<impl IntoResponse> {
    // The key may also come as the conventional header.
    if body.idempotency_key.is_none() {
        body.idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    let created = ledger::create(&state.pool, &state.command_timing, &p, from, id, body).await?;
    let (status, command_id) = match created {
        Created::New(c) => (StatusCode::CREATED, c),
        Created::Existing(c) => (StatusCode::OK, c),
    };
    state.commands_wake.notify_one();
    let command = ledger::get_command(&state.pool, &p.scope, command_id)
        .await?
        .ok_or(ApiError::NotFound("command"))?;
    Ok((status, Json(command)))
}

pub async fn get_command(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    ledger::get_command(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("command"))
}

pub async fn cancel(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    ledger::cancel(&state.pool, &p, id).await?;
    Ok(Json(ledger::get_command(&state.pool, &p.scope, id).await?))
}

pub async fn approve(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    ledger::approve(&state.pool, &p, id).await?;
    state.commands_wake.notify_one();
    Ok(Json(ledger::get_command(&state.pool, &p.scope, id).await?))
}
