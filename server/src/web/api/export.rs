//! CSV exports.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_export;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().route("/export.csv", get(legacy_export::csv))
}
