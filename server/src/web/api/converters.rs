//! Modbus TCP converters and the devices polled behind them.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, patch, post};
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_converters;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/converters",
            get(legacy_converters::list).post(legacy_converters::create),
        )
        .route("/converters/models", get(legacy_converters::models))
        .route(
            "/converters/{id}",
            get(legacy_converters::get)
                .patch(legacy_converters::patch)
                .delete(legacy_converters::delete),
        )
        .route(
            "/converters/{id}/devices",
            post(legacy_converters::add_device),
        )
        .route(
            "/converters/{id}/devices/{unit}",
            patch(legacy_converters::patch_device).delete(legacy_converters::delete_device),
        )
}
