//! Gateways: registry, placement, MQTT password, XML push settings.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;

use crate::web::WebState;
use crate::web::{legacy_api, legacy_energy, xml_push};

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/gateways",
            get(legacy_api::list_gateways).post(legacy_api::create_gateway),
        )
        .route(
            "/gateways/{serial}",
            get(legacy_api::get_gateway).patch(legacy_energy::patch_gateway),
        )
        .route(
            "/gateways/{serial}/password",
            post(legacy_api::rotate_gateway_password),
        )
        .route(
            "/gateways/{serial}/xml-push",
            get(xml_push::get_settings).put(xml_push::put_settings),
        )
}
