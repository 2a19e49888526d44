//! Sessions: log in, log out, who am I.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_api;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route("/auth/login", post(legacy_api::login))
        .route("/auth/logout", post(legacy_api::logout))
        .route("/me", get(legacy_api::me))
}
