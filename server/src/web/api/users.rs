//! User accounts and their site grants (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path};
use crate::auth::users::{self, UserRow};
use crate::auth::{password, Role};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::Admin;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(patch_user))
        .routes(routes!(grant_site, revoke_site))
}

#[derive(Deserialize, ToSchema)]
struct NewUser {
    email: String,
    role: Role,
    /// At least 10 characters; generated (and returned once) when absent.
    password: Option<String>,
    /// Sites to grant at once.
    #[serde(default)]
    sites: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
struct NewUserAnswer {
    id: i64,
    /// The generated password, shown once; null when the request gave one.
    password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    /// Disable (true) or enable (false) the account.
    #[serde(default)]
    disabled: Option<bool>,
    /// Give the user a new generated password, returned once.
    #[serde(default)]
    reset_password: bool,
}

/// The account after a change.
#[derive(Serialize, ToSchema)]
struct UserAnswer {
    id: i64,
    disabled: bool,
    /// The new password, when reset; shown once.
    password: Option<String>,
}

/// All users (admin)
#[utoipa::path(get, path = "/users", tag = "users",
    responses((status = 200, description = "The users, by id", body = Vec<UserRow>)))]
async fn list_users(State(state): State<WebState>, _admin: Admin) -> ApiResult<Json<Vec<UserRow>>> {
    Ok(Json(users::list(&state.pool).await?))
}

/// Create a user (admin); a generated password is returned once
#[utoipa::path(post, path = "/users", tag = "users",
    request_body = NewUser,
    responses((status = 201, description = "Created", body = NewUserAnswer)))]
async fn create_user(
    State(state): State<WebState>,
    _admin: Admin,
    Json(body): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<NewUserAnswer>)> {
    let generated = body.password.is_none();
    let secret = body.password.unwrap_or_else(password::generate);
    let id = users::create(&state.pool, &body.email, body.role, &secret).await?;
    for site in body.sites {
        if !users::grant_site(&state.pool, id, site).await? {
            return Err(ApiError::BadRequest(format!("site {site} does not exist")));
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(NewUserAnswer {
            id,
            password: generated.then_some(secret),
        }),
    ))
}

/// Disable or enable an account, or reset its password (admin); a new password is returned once
///
/// A disabled user's tokens and sessions stop working at once, and so do all of a user's
/// sessions when their password is reset. An admin cannot disable their own account (409).
#[utoipa::path(patch, path = "/users/{user_id}", tag = "users",
    params(("user_id" = i64, Path, description = "User id")),
    request_body = UserPatch,
    responses((status = 200, description = "The account", body = UserAnswer)))]
async fn patch_user(
    State(state): State<WebState>,
    Admin(me): Admin,
    Path(user_id): Path<i64>,
    Json(body): Json<UserPatch>,
) -> ApiResult<Json<UserAnswer>> {
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
        Some(
            users::reset_password(&state.pool, user_id)
                .await?
                .ok_or(ApiError::NotFound("user"))?,
        )
    } else {
        None
    };
    let disabled = users::is_disabled(&state.pool, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(UserAnswer {
        id: user_id,
        disabled,
        password,
    }))
}

/// Grant a user access to a site (admin)
///
/// 204 also when the user already had it.
#[utoipa::path(put, path = "/users/{user_id}/sites/{site_id}", tag = "users",
    params(("user_id" = i64, Path, description = "User id"),
        ("site_id" = i64, Path, description = "Site id")),
    responses((status = 204, description = "Granted")))]
async fn grant_site(
    State(state): State<WebState>,
    _admin: Admin,
    Path((user_id, site_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    // Not inserted: either already granted or one of them does not exist; say which.
    if users::grant_site(&state.pool, user_id, site_id).await?
        || users::has_site(&state.pool, user_id, site_id).await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("user or site"))
    }
}

/// Take a site away from a user (admin)
///
/// 404 when the user did not have it.
#[utoipa::path(delete, path = "/users/{user_id}/sites/{site_id}", tag = "users",
    params(("user_id" = i64, Path, description = "User id"),
        ("site_id" = i64, Path, description = "Site id")),
    responses((status = 204, description = "Revoked")))]
async fn revoke_site(
    State(state): State<WebState>,
    _admin: Admin,
    Path((user_id, site_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    if users::revoke_site(&state.pool, user_id, site_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("grant"))
    }
}
