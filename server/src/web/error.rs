//! The web layer's error: 4xx say what was wrong, 5xx say nothing and log everything.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A 409 that lists what the request could have meant, e.g. a meter serial reported by
    /// several devices in the caller's scope: the caller picks one, Headend never guesses.
    #[error("{message}")]
    Ambiguous {
        message: String,
        candidates: serde_json::Value,
    },
    /// Throttled or shed: 429 with `Retry-After` (seconds).
    #[error("too many attempts; try again in {0} s")]
    TooManyRequests(u64),
    /// An extractor refused the request (a body that is not JSON, a wrong content type, a path
    /// or query parameter of the wrong type): its own status (400, 413, 415, 422) and message.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong; for a 5xx only "internal error" (the log has the rest).
    pub error: String,
    /// With a 409 for an ambiguous meter serial: the meters in the caller's scope that report
    /// it (at most 50); pass one's `id` as `device`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub candidates: Option<serde_json::Value>,
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::Ambiguous { .. } => StatusCode::CONFLICT,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Rejected { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

impl From<crate::auth::users::LoginError> for ApiError {
    fn from(e: crate::auth::users::LoginError) -> Self {
        match e {
            crate::auth::users::LoginError::Db(e) => Self::internal(e),
            // The hashing pool is full: nothing was decided, the client should come back.
            crate::auth::users::LoginError::Busy(_) => Self::TooManyRequests(1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(e) = &self {
            // The body stays opaque; the log has the chain.
            tracing::error!(error = ?e, "request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            candidates: match &self {
                Self::Ambiguous { candidates, .. } => Some(candidates.clone()),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::TooManyRequests(secs) = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
