//! Sessions: log in, log out, who am I.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use crate::auth::{Role, Scope};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::{self, Auth, LoginCheck, Peer};
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
struct Login {
    email: String,
    password: String,
}

/// A new session: its token, also set as the HttpOnly session cookie.
#[derive(Serialize, ToSchema)]
struct Session {
    /// Send it as `Authorization: Bearer <token>`.
    token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_at: Option<DateTime<Utc>>,
    user: SessionUser,
}

#[derive(Serialize, ToSchema)]
struct SessionUser {
    id: i64,
    email: String,
    role: Role,
}

/// The current user.
#[derive(Serialize, ToSchema)]
struct Me {
    id: i64,
    email: String,
    role: Role,
    /// The sites granted to the user; null for admins, who see every site.
    sites: Option<Vec<i64>>,
}

/// Exchange e-mail and password for a session token (also set as an HttpOnly cookie)
///
/// Attempts are throttled per account and per source address (429 with `Retry-After`); a wrong
/// password, an unknown e-mail and a disabled account all answer 401.
#[utoipa::path(post, path = "/auth/login", tag = "auth", security(()),
    request_body = Login,
    responses((status = 200, description = "Logged in", body = Session,
        headers(("set-cookie" = String, description = "The session cookie (HttpOnly, SameSite=Strict)")))))]
async fn login(
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
        Json(Session {
            token: started.token,
            token_type: "Bearer",
            expires_at: DateTime::from_timestamp(started.expires_at, 0),
            user: SessionUser {
                id: user_id,
                email: principal.email,
                role: principal.role,
            },
        }),
    ))
}

/// End the session and clear the session cookie
///
/// Revokes the session of the request's token (bearer header or cookie); 204 whether or not a
/// session was live.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security((), ("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "Session ended, cookie cleared",
        headers(("set-cookie" = String, description = "Clears the session cookie")))))]
async fn logout(State(state): State<WebState>, headers: HeaderMap) -> ApiResult<impl IntoResponse> {
    session::revoke(&state, &headers).await?;
    Ok((
        [(header::SET_COOKIE, session::CLEAR_COOKIE)],
        StatusCode::NO_CONTENT,
    ))
}

/// The current user
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, description = "The current user", body = Me)))]
async fn me(Auth(p): Auth) -> Json<Me> {
    Json(Me {
        id: p.user_id,
        email: p.email,
        role: p.role,
        sites: match p.scope {
            Scope::All => None,
            Scope::Sites(s) => Some(s),
        },
    })
}
