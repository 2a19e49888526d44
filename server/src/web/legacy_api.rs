//! `/api/v1` handlers. Each checks role (by its extractor) and site scope (by passing the
//! principal's scope to the query), so a route cannot forget either.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::api::access::{resolve_meter, DeviceParam};
use super::error::{ApiError, ApiResult};
use super::session::{self, Admin, Auth, LoginCheck, Peer};
use super::WebState;
use crate::auth::{password, users, Role};
use crate::{fleet::devices, fleet::gateways, ingest, sites};

#[derive(Deserialize)]
pub struct Login {
    email: String,
    password: String,
}

pub async fn login(
    State(state): State<WebState>,
    Peer(source): Peer,
    Json(body): Json<Login>,
) -> ApiResult<impl IntoResponse> {
    if body.email.len() > 254 || body.password.len() > 1024 {
        return Err(ApiError::Unauthorized);
    }
    let user_id =
        match session::check_login(&state, &body.email, &body.password, source, "api").await? {
            LoginCheck::Passed(user_id) => user_id,
            LoginCheck::Refused => return Err(ApiError::Unauthorized),
            LoginCheck::Throttled(secs) => return Err(ApiError::TooManyRequests(secs)),
            LoginCheck::Busy => return Err(ApiError::TooManyRequests(1)),
        };
    let started = session::start(&state, user_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(&state, &started.token))
            .map_err(ApiError::internal)?,
    );
    let principal = started.principal;
    Ok((
        headers,
        Json(serde_json::json!({
            "token": started.token,
            "token_type": "Bearer",
            "expires_at": chrono::DateTime::from_timestamp(started.expires_at, 0),
            "user": { "id": user_id, "email": principal.email, "role": principal.role },
        })),
    ))
}

/// Ends the session of the request's token (bearer header or cookie) and clears the cookie;
/// 204 whether or not a session was live.
pub async fn logout(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    session::revoke(&state, &headers).await?;
    Ok((
        [(header::SET_COOKIE, session::CLEAR_COOKIE)],
        StatusCode::NO_CONTENT,
    ))
}

pub async fn me(Auth(p): Auth) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "id": p.user_id,
        "email": p.email,
        "role": p.role,
        "sites": match &p.scope { crate::auth::Scope::All => None, crate::auth::Scope::Sites(s) => Some(s.clone()) },
    }))
}

pub async fn list_sites(
    State(state): State<WebState>,
    Auth(p): Auth,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(sites::list(&state.pool, &p.scope).await?))
}

#[derive(Deserialize)]
pub struct NewSite {
    name: String,
    #[serde(alias = "timezone")]
    time_zone: String,
}

pub async fn create_site(
    State(state): State<WebState>,
    Admin(_): Admin,
    Json(body): Json<NewSite>,
) -> ApiResult<impl IntoResponse> {
    let id = sites::create(&state.pool, &body.name, &body.time_zone)
        .await
        .map_err(|e| match e {
            sites::SiteError::Invalid(m) => ApiError::BadRequest(m),
            sites::SiteError::Exists(_) => ApiError::Conflict(e.to_string()),
            sites::SiteError::Db(e) => ApiError::internal(e),
        })?;
    state.gateways_changed();
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

pub async fn list_users(
    State(state): State<WebState>,
    Admin(_): Admin,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(users::list(&state.pool).await?))
}

#[derive(Deserialize)]
pub struct NewUser {
    email: String,
    role: Role,
    password: Option<String>,
    #[serde(default)]
    sites: Vec<i64>,
}

pub async fn create_user(
    State(state): State<WebState>,
    Admin(_): Admin,
    Json(body): Json<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let generated = body.password.is_none();
    let secret = body.password.unwrap_or_else(password::generate);
    let id = users::create(&state.pool, &body.email, body.role, &secret)
        .await
        .map_err(|e| match e {
            users::UserError::Invalid(m) => ApiError::BadRequest(m),
            users::UserError::Exists(_) => ApiError::Conflict(e.to_string()),
            other => ApiError::internal(other),
        })?;
    for site in body.sites {
        if !users::grant_site(&state.pool, id, site).await? {
            return Err(ApiError::BadRequest(format!("site {site} does not exist")));
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": id,
            "password": generated.then_some(secret),
        })),
    ))
}

pub async fn grant_site(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path((user_id, site_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    if users::grant_site(&state.pool, user_id, site_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        // Either already granted or one of them does not exist; say which.
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM user_sites WHERE user_id = $1 AND site_id = $2)",
        )
        .bind(user_id)
        .bind(site_id)
        .fetch_one(&state.pool)
        .await?;
        if exists {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::NotFound("user or site"))
        }
    }
}

/// Takes a site away from a user (204), or 404 when the user did not have it.
pub async fn revoke_site(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path((user_id, site_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    if users::revoke_site(&state.pool, user_id, site_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("grant"))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Disable (true) or enable (false) the account.
    #[serde(default)]
    disabled: Option<bool>,
    /// Give the user a new generated password, returned once.
    #[serde(default)]
    reset_password: bool,
}

/// Disables or enables an account, or resets its password.
pub async fn patch_user(
    State(state): State<WebState>,
    Admin(me): Admin,
    Path(user_id): Path<i64>,
    Json(body): Json<UserPatch>,
) -> ApiResult<impl IntoResponse> {
    if body.disabled == Some(true) && user_id == me.user_id {
        // The last way back in must not be closed by accident.
        return Err(ApiError::Conflict(
            "an admin cannot disable their own account".into(),
        ));
    }
    if let Some(disabled) = body.disabled {
        if !users::set_disabled(&state.pool, user_id, disabled).await? {
            return Err(ApiError::NotFound("user"));
        }
    }
    let password = if body.reset_password {
        match users::reset_password(&state.pool, user_id).await {
            Ok(Some(p)) => Some(p),
            Ok(None) => return Err(ApiError::NotFound("user")),
            Err(users::UserError::Db(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::internal(e)),
        }
    } else {
        None
    };
    let disabled: Option<bool> = sqlx::query_scalar("SELECT disabled FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&state.pool)
        .await?;
    let disabled = disabled.ok_or(ApiError::NotFound("user"))?;
    Ok(Json(serde_json::json!({
        "id": user_id,
        "disabled": disabled,
        "password": password,
    })))
}

/// Gives a gateway a new MQTT password, returned once.
pub async fn rotate_gateway_password(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path(serial): Path<String>,
) -> ApiResult<impl IntoResponse> {
    match gateways::rotate_password(&state.pool, &serial).await {
        Ok(Some(password)) => Ok(Json(serde_json::json!({
            "serial": serial,
            "password": password,
        }))),
        Ok(None) => Err(ApiError::NotFound("gateway")),
        Err(gateways::GatewayError::Db(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub async fn list_gateways(
    State(state): State<WebState>,
    Auth(p): Auth,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(gateways::list(&state.pool, &p.scope).await?))
}

pub async fn get_gateway(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
) -> ApiResult<impl IntoResponse> {
    gateways::get(&state.pool, &p.scope, &serial)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("gateway"))
}

#[derive(Deserialize)]
pub struct NewGateway {
    serial: String,
    password: Option<String>,
    site_id: Option<i64>,
    time_zone: Option<String>,
    topic_root: Option<String>,
    topic_pub: Option<String>,
    topic_sub: Option<String>,
}

pub async fn create_gateway(
    State(state): State<WebState>,
    Admin(_): Admin,
    Json(body): Json<NewGateway>,
) -> ApiResult<impl IntoResponse> {
    let created = gateways::create(
        &state.pool,
        gateways::NewGateway {
            serial: body.serial,
            password: body.password,
            site_id: body.site_id,
            time_zone: body.time_zone,
            topic_root: body.topic_root,
            topic_pub: body.topic_pub,
            topic_sub: body.topic_sub,
        },
        &state.default_time_zone,
    )
    .await
    .map_err(|e| match e {
        gateways::GatewayError::Invalid(m) => ApiError::BadRequest(m),
        gateways::GatewayError::Exists(_) => ApiError::Conflict(e.to_string()),
        other => ApiError::internal(other),
    })?;
    state.gateways_changed();
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list_devices(
    State(state): State<WebState>,
    Auth(p): Auth,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(devices::list(&state.pool, &p.scope).await?))
}

pub async fn device_latest(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
    Query(q): Query<DeviceParam>,
) -> ApiResult<impl IntoResponse> {
    let device = resolve_meter(&state, &p.scope, &serial, q.device).await?;
    Ok(Json(devices::latest(&state.pool, device).await?))
}

pub async fn device_counters(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
    Query(q): Query<DeviceParam>,
) -> ApiResult<impl IntoResponse> {
    let device = resolve_meter(&state, &p.scope, &serial, q.device).await?;
    let counters = devices::counters(&state.pool, device.id).await?;
    Ok(Json(
        serde_json::json!({ "device": device, "counters": counters }),
    ))
}

#[derive(Deserialize)]
pub struct RejectQuery {
    limit: Option<i64>,
    before: Option<i64>,
    gateway: Option<String>,
}

pub async fn list_rejects(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<RejectQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        ingest::rejects::list(
            &state.pool,
            &p.scope,
            q.limit.unwrap_or(100),
            q.before,
            q.gateway.as_deref(),
        )
        .await?,
    ))
}
