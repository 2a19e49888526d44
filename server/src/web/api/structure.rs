//! Panels and circuits of a site. Read by anyone granted the site, written by admins; a panel
//! or circuit of a site the caller may not see is "not found".

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{in_visible_site, visible_site, Created};
use super::doc::ACCESS;
use super::extract::{Json, Path};
use crate::accounting::structure::{self, CircuitInput, CircuitView, PanelInput, PanelView};
use crate::auth::Principal;
use crate::web::error::ApiResult;
use crate::web::session::{Admin, Auth};
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list_panels, create_panel))
        .routes(routes!(list_site_circuits))
        .routes(routes!(get_panel, patch_panel, delete_panel))
        .routes(routes!(list_circuits, create_circuit))
        .routes(routes!(get_circuit, patch_circuit, delete_circuit))
}

/// The panel, if the caller may see its site.
async fn visible_panel(state: &WebState, p: &Principal, id: i64) -> ApiResult<PanelView> {
    let panel = structure::get_panel(&state.pool, id).await?;
    in_visible_site(state, &p.scope, panel, |c| c.site_id, "panel").await
}

/// The circuit, if the caller may see its site.
async fn visible_circuit(state: &WebState, p: &Principal, id: i64) -> ApiResult<CircuitView> {
    let circuit = structure::get_circuit(&state.pool, id).await?;
    in_visible_site(state, &p.scope, circuit, |c| c.site_id, "circuit").await
}

/// Panels of a site, by name
#[utoipa::path(get, path = "/sites/{id}/panels", tag = "structure", description = ACCESS,
    params(("id" = i64, Path, description = "Site id")),
    responses((status = 200, description = "The panels", body = Vec<PanelView>)))]
async fn list_panels(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<Json<Vec<PanelView>>> {
    visible_site(&state, &p.scope, site).await?;
    Ok(Json(structure::list_panels(&state.pool, site).await?))
}

/// Add a panel to a site (admin)
///
/// `name` is required (1 to 200 characters, unique in the site); `description` at most 2000
/// characters.
#[utoipa::path(post, path = "/sites/{id}/panels", tag = "structure",
    params(("id" = i64, Path, description = "Site id")),
    request_body = PanelInput,
    responses((status = 201, description = "Created", body = Created)))]
async fn create_panel(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(body): Json<PanelInput>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    visible_site(&state, &p.scope, site).await?;
    let id = structure::create_panel(&state.pool, site, &body).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// All circuits of a site, by panel name and circuit name
#[utoipa::path(get, path = "/sites/{id}/circuits", tag = "structure", description = ACCESS,
    params(("id" = i64, Path, description = "Site id")),
    responses((status = 200, description = "The circuits", body = Vec<CircuitView>)))]
async fn list_site_circuits(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<Json<Vec<CircuitView>>> {
    visible_site(&state, &p.scope, site).await?;
    Ok(Json(
        structure::list_site_circuits(&state.pool, site).await?,
    ))
}

/// One panel
#[utoipa::path(get, path = "/panels/{id}", tag = "structure", description = ACCESS,
    params(("id" = i64, Path, description = "Panel id")),
    responses((status = 200, description = "The panel", body = PanelView)))]
async fn get_panel(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<PanelView>> {
    Ok(Json(visible_panel(&state, &p, id).await?))
}

/// Rename or describe a panel (admin)
///
/// Absent fields stay unchanged.
#[utoipa::path(patch, path = "/panels/{id}", tag = "structure",
    params(("id" = i64, Path, description = "Panel id")),
    request_body = PanelInput,
    responses((status = 204, description = "Changed")))]
async fn patch_panel(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<PanelInput>,
) -> ApiResult<StatusCode> {
    visible_panel(&state, &p, id).await?;
    structure::update_panel(&state.pool, id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a panel and its circuits (admin)
///
/// Meters placed on the panel or its circuits become unplaced; the site's consumption is
/// rebuilt in the background.
#[utoipa::path(delete, path = "/panels/{id}", tag = "structure",
    params(("id" = i64, Path, description = "Panel id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_panel(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    visible_panel(&state, &p, id).await?;
    structure::delete_panel(&state.pool, id).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Circuits of a panel, by name
#[utoipa::path(get, path = "/panels/{id}/circuits", tag = "structure", description = ACCESS,
    params(("id" = i64, Path, description = "Panel id")),
    responses((status = 200, description = "The circuits", body = Vec<CircuitView>)))]
async fn list_circuits(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(panel): Path<i64>,
) -> ApiResult<Json<Vec<CircuitView>>> {
    visible_panel(&state, &p, panel).await?;
    Ok(Json(structure::list_circuits(&state.pool, panel).await?))
}

/// Add a circuit to a panel (admin)
///
/// `name` is required (1 to 200 characters, unique in the panel); `usage` defaults to `other`.
#[utoipa::path(post, path = "/panels/{id}/circuits", tag = "structure",
    params(("id" = i64, Path, description = "Panel id")),
    request_body = CircuitInput,
    responses((status = 201, description = "Created", body = Created)))]
async fn create_circuit(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(panel): Path<i64>,
    Json(body): Json<CircuitInput>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    visible_panel(&state, &p, panel).await?;
    let id = structure::create_circuit(&state.pool, panel, &body).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// One circuit
#[utoipa::path(get, path = "/circuits/{id}", tag = "structure", description = ACCESS,
    params(("id" = i64, Path, description = "Circuit id")),
    responses((status = 200, description = "The circuit", body = CircuitView)))]
async fn get_circuit(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<CircuitView>> {
    Ok(Json(visible_circuit(&state, &p, id).await?))
}

/// Rename a circuit or change its usage or description (admin)
///
/// Absent fields stay unchanged.
#[utoipa::path(patch, path = "/circuits/{id}", tag = "structure",
    params(("id" = i64, Path, description = "Circuit id")),
    request_body = CircuitInput,
    responses((status = 204, description = "Changed")))]
async fn patch_circuit(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<CircuitInput>,
) -> ApiResult<StatusCode> {
    visible_circuit(&state, &p, id).await?;
    structure::update_circuit(&state.pool, id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a circuit (admin)
///
/// Meters placed on the circuit become unplaced; the site's consumption is rebuilt in the
/// background.
#[utoipa::path(delete, path = "/circuits/{id}", tag = "structure",
    params(("id" = i64, Path, description = "Circuit id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_circuit(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    visible_circuit(&state, &p, id).await?;
    structure::delete_circuit(&state.pool, id).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}
