//! User accounts and their site grants (admin).
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, patch, put};
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_api;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/users",
            get(legacy_api::list_users).post(legacy_api::create_user),
        )
        .route("/users/{user_id}", patch(legacy_api::patch_user))
        .route(
            "/users/{user_id}/sites/{site_id}",
            put(legacy_api::grant_site).delete(legacy_api::revoke_site),
        )
}
