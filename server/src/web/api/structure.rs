//! Panels and circuits of a site.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_energy;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/sites/{id}/panels",
            get(legacy_energy::list_panels).post(legacy_energy::create_panel),
        )
        .route(
            "/sites/{id}/circuits",
            get(legacy_energy::list_site_circuits),
        )
        .route(
            "/panels/{id}",
            get(legacy_energy::get_panel)
                .patch(legacy_energy::patch_panel)
                .delete(legacy_energy::delete_panel),
        )
        .route(
            "/panels/{id}/circuits",
            get(legacy_energy::list_circuits).post(legacy_energy::create_circuit),
        )
        .route(
            "/circuits/{id}",
            get(legacy_energy::get_circuit)
                .patch(legacy_energy::patch_circuit)
                .delete(legacy_energy::delete_circuit),
        )
}
