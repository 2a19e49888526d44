//! `/api/v1`: the JSON API, a module per resource. Each exposes `routes()`, an
//! [`OpenApiRouter`] built only from `routes!(handler, ...)`, so a route cannot exist without
//! its `#[utoipa::path]`, and the document at `/api/v1/openapi.json` is derived from the
//! handlers' typed requests and answers and from the router itself: there is no route list to
//! keep in step.

pub mod access;
pub mod alarms;
pub mod auth;
pub mod contracts;
pub mod converters;
pub mod devices;
pub mod doc;
pub mod energy;
pub mod export;
pub mod extract;
pub mod gateways;
pub mod ingest;
pub mod northbound;
pub mod quarantine;
pub mod relays;
pub mod sites;
pub mod structure;
pub mod users;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::WebState;

/// The API router (to nest at `/api/v1`) and its document.
pub fn router() -> (Router<WebState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .merge(auth::routes())
        .merge(sites::routes())
        .merge(structure::routes())
        .merge(contracts::routes())
        .merge(users::routes())
        .merge(gateways::routes())
        .merge(devices::routes())
        .merge(energy::routes())
        .merge(converters::routes())
        .merge(ingest::routes())
        .merge(quarantine::routes())
        .merge(relays::routes())
        .merge(alarms::routes())
        .merge(export::routes())
        .merge(northbound::routes())
        .routes(routes!(openapi_json))
        .split_for_parts();
    // The modifiers ran on the bare document; the error answers go on every derived operation.
    utoipa::Modify::modify(&doc::Errors, &mut document);
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    DOCUMENT.get_or_init(|| document.to_json().unwrap_or_default());
    let router = router.fallback(|| async { ApiError::NotFound("route").into_response() });
    (router, document)
}

/// The document is the same for every app in the process: derived from the code.
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// This document (OpenAPI 3.1)
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get().cloned().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    /// Every resource module's source: a plain `.route(` would add an undocumented route.
    const SOURCES: [(&str, &str); 16] = [
        ("alarms", include_str!("alarms.rs")),
        ("auth", include_str!("auth.rs")),
        ("contracts", include_str!("contracts.rs")),
        ("converters", include_str!("converters.rs")),
        ("devices", include_str!("devices.rs")),
        ("energy", include_str!("energy.rs")),
        ("export", include_str!("export.rs")),
        ("gateways", include_str!("gateways.rs")),
        ("ingest", include_str!("ingest.rs")),
        ("northbound", include_str!("northbound.rs")),
        ("quarantine", include_str!("quarantine.rs")),
        ("relays", include_str!("relays.rs")),
        ("sites", include_str!("sites.rs")),
        ("structure", include_str!("structure.rs")),
        ("users", include_str!("users.rs")),
        ("mod", include_str!("mod.rs")),
    ];

    #[test]
    fn every_route_is_added_with_its_documentation() {
        let plain = [".route", "(\""].concat();
        for (name, source) in SOURCES {
            assert!(
                !source.contains(&plain),
                "web/api/{name}.rs adds a route without `routes!`: it would be undocumented"
            );
        }
    }

    #[test]
    fn the_document_declares_every_operation_with_its_errors() {
        let (_, document) = super::router();
        let mut operations = 0;
        for (path, item) in &document.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                let Some(op) = op else { continue };
                operations += 1;
                assert!(op.summary.is_some(), "{method} {path}: no summary");
                for status in ["400", "401", "404", "422", "500"] {
                    assert!(
                        op.responses.responses.contains_key(status),
                        "{method} {path}: {status} not declared"
                    );
                }
            }
        }
        assert!(operations >= 70, "{operations} operations");
    }
}
