//! `/api/v1/relays` and `/api/v1/commands`: relays and their command ledger. Reads need the
//! relay's site in scope; commands need an operator or admin of that site; relay settings need
//! an admin.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::doc::ACCESS;
use super::extract::{Json, Path, Query};
use crate::relays::ledger::{
    self, CommandError, CommandView, Created, NewCommand, RelaySettings, RelayView,
};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::{Admin, Auth, ClientAddr};
use crate::web::WebState;

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

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, patch))
        .routes(routes!(history, create_command))
        .routes(routes!(get_command))
        .routes(routes!(cancel))
        .routes(routes!(approve))
}

/// Relays of the user's sites
///
/// The state is the last one the relay reported, with its age; a command in flight is shown as
/// such, never as the new state.
#[utoipa::path(get, path = "/relays", tag = "relays",
    responses((status = 200, description = "Relays", body = Vec<RelayView>)))]
async fn list(State(state): State<WebState>, Auth(p): Auth) -> ApiResult<Json<Vec<RelayView>>> {
    Ok(Json(ledger::list_relays(&state.pool, &p.scope).await?))
}

/// One relay: reported state and age, command in flight, wear
#[utoipa::path(get, path = "/relays/{id}", tag = "relays", description = ACCESS,
    params(("id" = i64, Path, description = "Relay id (a device of kind relay)")),
    responses((status = 200, description = "The relay", body = RelayView)))]
async fn get(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<RelayView>> {
    ledger::get_relay(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("relay"))
}

/// Relay settings (admin): critical (four-eyes for off), rated operations, anti-chatter interval, name
///
/// Absent fields stay unchanged.
#[utoipa::path(patch, path = "/relays/{id}", tag = "relays",
    params(("id" = i64, Path, description = "Relay id (a device of kind relay)")),
    request_body = RelaySettings,
    responses((status = 204, description = "Changed")))]
async fn patch(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<RelaySettings>,
) -> ApiResult<StatusCode> {
    ledger::get_relay(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("relay"))?;
    ledger::update_relay(&state.pool, id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// At most this many commands, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// Command history of a relay, newest first, with every transition
#[utoipa::path(get, path = "/relays/{id}/commands", tag = "relays", description = ACCESS,
    params(("id" = i64, Path, description = "Relay id (a device of kind relay)"), HistoryParams),
    responses((status = 200, description = "Commands, newest first", body = Vec<CommandView>)))]
async fn history(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<HistoryParams>,
) -> ApiResult<Json<Vec<CommandView>>> {
    ledger::get_relay(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("relay"))?;
    Ok(Json(
        ledger::history(&state.pool, &p.scope, id, q.limit.unwrap_or(100)).await?,
    ))
}

/// Command a relay: on, off or toggle
///
/// Operators and admins of the relay's site. 201 with the new command; 200 with the earlier one
/// when the idempotency key (body field or `Idempotency-Key` header) was used before on this
/// relay. 409 when refused by a safety rule: another command in flight, or the minimum interval
/// between switchings (anti-chatter). A critical relay's off (or toggle) waits in
/// `awaiting_approval` for a second operator. A newer command cancels older ones not yet sent.
/// The command is tracked until the relay's reported state proves it: queued → sent →
/// confirmed | failed | expired; cancelled before sending.
#[utoipa::path(post, path = "/relays/{id}/commands", tag = "relays",
    params(("id" = i64, Path, description = "Relay id (a device of kind relay)"),
        ("Idempotency-Key" = Option<String>, Header, description = "The idempotency key, when the body has none")),
    request_body = NewCommand,
    responses((status = 201, description = "Created", body = CommandView),
        (status = 200, description = "Same idempotency key: the existing command", body = CommandView)))]
async fn create_command(
    State(state): State<WebState>,
    Auth(p): Auth,
    ClientAddr(from): ClientAddr,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(mut body): Json<NewCommand>,
) -> ApiResult<(StatusCode, Json<CommandView>)> {
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

/// One command with its transitions
#[utoipa::path(get, path = "/commands/{id}", tag = "relays", description = ACCESS,
    params(("id" = i64, Path, description = "Command id")),
    responses((status = 200, description = "The command", body = CommandView)))]
async fn get_command(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<CommandView>> {
    ledger::get_command(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("command"))
}

/// Cancel a command not yet sent
///
/// Operators and admins granted the relay's site; viewers get 403, other sites 404. 409 when
/// the command was already sent or settled.
#[utoipa::path(post, path = "/commands/{id}/cancel", tag = "relays",
    params(("id" = i64, Path, description = "Command id")),
    responses((status = 200, description = "The cancelled command", body = CommandView)))]
async fn cancel(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<Option<CommandView>>> {
    ledger::cancel(&state.pool, &p, id).await?;
    Ok(Json(ledger::get_command(&state.pool, &p.scope, id).await?))
}

/// Approve switching a critical relay off (four-eyes)
///
/// Another operator or admin of the site than the requester, before the approval deadline; 409
/// otherwise.
#[utoipa::path(post, path = "/commands/{id}/approve", tag = "relays",
    params(("id" = i64, Path, description = "Command id")),
    responses((status = 200, description = "The approved command, queued", body = CommandView)))]
async fn approve(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<Option<CommandView>>> {
    ledger::approve(&state.pool, &p, id).await?;
    state.commands_wake.notify_one();
    Ok(Json(ledger::get_command(&state.pool, &p.scope, id).await?))
}
