//! Rejected gateway messages.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_api;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().route("/ingest/rejects", get(legacy_api::list_rejects))
}
