//! Supply contracts of a site.
//!
//! Not yet converted: the routes below are the legacy handlers, undocumented.

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::web::legacy_energy;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .route(
            "/sites/{id}/contracts",
            get(legacy_energy::list_contracts).post(legacy_energy::create_contract),
        )
        .route("/contracts/example", get(legacy_energy::example_contract))
        .route(
            "/contracts/{id}",
            get(legacy_energy::get_contract)
                .put(legacy_energy::put_contract)
                .delete(legacy_energy::delete_contract),
        )
}
