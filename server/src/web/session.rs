//! Who is asking: the `Authorization: Bearer` token, or the session cookie for safe methods.
//!
//! The cookie is accepted only for GET and HEAD on the API: a state-changing API call must carry
//! the token in a header, which a cross-site form cannot, so the API needs no CSRF token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};

use super::error::ApiError;
use super::WebState;
use crate::auth::{users, Principal, Role};

pub const COOKIE: &str = "headend_session";

/// An authenticated user with at least viewer rights.
pub struct Auth(pub Principal);

/// An authenticated admin.
pub struct Admin(pub Principal);

fn token_from(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return value.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl FromRequestParts<WebState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let token = token_from(parts).ok_or(ApiError::Unauthorized)?;
        let claims = state.keys.verify(token).ok_or(ApiError::Unauthorized)?;
        let user_id: i64 = claims.sub.parse().map_err(|_| ApiError::Unauthorized)?;
        // Role and grants come from the database, not the token: revocation is immediate.
        let principal = users::principal(&state.pool, user_id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Self(principal))
    }
}

impl FromRequestParts<WebState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::Forbidden("this needs the admin role"));
        }
        Ok(Self(principal))
    }
}
