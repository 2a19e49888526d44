//! Relays and the command ledger.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_relays;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route("/relays", get(legacy_relays::list))
        .route(
            "/relays/{id}",
            get(legacy_relays::get).patch(legacy_relays::patch),
        )
        .route(
            "/relays/{id}/commands",
            get(legacy_relays::history).post(legacy_relays::create_command),
        )
        .route("/commands/{id}", get(legacy_relays::get_command))
        .route("/commands/{id}/cancel", post(legacy_relays::cancel))
        .route("/commands/{id}/approve", post(legacy_relays::approve))
}
