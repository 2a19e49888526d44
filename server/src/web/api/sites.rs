//! Sites: list, create, read, rename or re-zone, delete; a site's consumption.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::web::WebState;
use crate::web::{legacy_api, legacy_energy};

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/sites",
            get(legacy_api::list_sites).post(legacy_api::create_site),
        )
        .route(
            "/sites/{id}",
            get(legacy_energy::get_site)
                .patch(legacy_energy::patch_site)
                .delete(legacy_energy::delete_site),
        )
        .route(
            "/sites/{id}/consumption",
            get(legacy_energy::site_consumption),
        )
}
