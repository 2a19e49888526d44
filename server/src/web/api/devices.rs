//! Meters and relays behind the gateways: placement, latest values, profiles, counters.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, patch, post};
use utoipa_axum::router::OpenApiRouter;

use crate::web::WebState;
use crate::web::{legacy_api, legacy_converters, legacy_energy};

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route("/devices", get(legacy_api::list_devices))
        .route("/devices/{serial}", patch(legacy_energy::patch_device))
        .route("/devices/{serial}/latest", get(legacy_api::device_latest))
        .route(
            "/devices/{serial}/profile",
            get(legacy_energy::device_profile),
        )
        .route(
            "/devices/{serial}/counters",
            get(legacy_api::device_counters),
        )
        .route(
            "/devices/{serial}/counters/{name}/reset",
            post(legacy_converters::reset_counter),
        )
}
