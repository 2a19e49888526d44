//! Sites: list, create, read, rename or re-zone, delete. (A site's consumption is in
//! [`super::energy`].)

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Created;
use super::doc::ACCESS;
use super::extract::{Json, Path};
use crate::accounting::structure;
use crate::sites::{self, SiteView};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::{Admin, Auth};
use crate::web::WebState;
use crate::zone::TimeZone;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, patch_site, delete_site))
}

#[derive(Deserialize, ToSchema)]
struct NewSite {
    /// 1 to 200 characters, unique.
    name: String,
    /// IANA zone, e.g. Europe/Ljubljana (`timezone` is accepted too).
    #[serde(alias = "timezone")]
    time_zone: TimeZone,
}

/// Absent fields stay unchanged.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SitePatch {
    /// 1 to 200 characters, unique.
    name: Option<String>,
    /// IANA zone, e.g. Europe/Ljubljana (`time_zone` is accepted too).
    #[serde(alias = "time_zone")]
    timezone: Option<TimeZone>,
}

/// Sites visible to the user
#[utoipa::path(get, path = "/sites", tag = "sites",
    responses((status = 200, description = "The sites, by name", body = Vec<SiteView>)))]
async fn list_sites(
    State(state): State<WebState>,
    Auth(p): Auth,
) -> ApiResult<Json<Vec<SiteView>>> {
    Ok(Json(sites::list(&state.pool, &p.scope).await?))
}

/// Create a site (admin)
#[utoipa::path(post, path = "/sites", tag = "sites",
    request_body = NewSite,
    responses((status = 201, description = "Created", body = Created)))]
async fn create_site(
    State(state): State<WebState>,
    _admin: Admin,
    Json(body): Json<NewSite>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let id = sites::create(&state.pool, &body.name, body.time_zone).await?;
    state.gateways_changed();
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// One site
#[utoipa::path(get, path = "/sites/{id}", tag = "sites", description = ACCESS,
    params(("id" = i64, Path, description = "Site id")),
    responses((status = 200, description = "The site", body = SiteView)))]
async fn get_site(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<Json<SiteView>> {
    sites::get(&state.pool, &p.scope, site)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("site"))
}

/// Rename a site or change its time zone (admin)
///
/// Absent fields stay unchanged. A new time zone moves every local day, so the site's daily,
/// monthly and yearly consumption is rebuilt in the background (answers may be incomplete
/// until then).
#[utoipa::path(patch, path = "/sites/{id}", tag = "sites",
    params(("id" = i64, Path, description = "Site id")),
    request_body = SitePatch,
    responses((status = 204, description = "Changed")))]
async fn patch_site(
    State(state): State<WebState>,
    _admin: Admin,
    Path(site): Path<i64>,
    Json(body): Json<SitePatch>,
) -> ApiResult<StatusCode> {
    structure::update_site(&state.pool, site, body.name.as_deref(), body.timezone).await?;
    state.gateways_changed();
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a site (admin)
///
/// Deletes the site with its panels, circuits, contracts and user grants. Its gateways and
/// their meters stay registered, without a site.
#[utoipa::path(delete, path = "/sites/{id}", tag = "sites",
    params(("id" = i64, Path, description = "Site id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_site(
    State(state): State<WebState>,
    _admin: Admin,
    Path(site): Path<i64>,
) -> ApiResult<StatusCode> {
    structure::delete_site(&state.pool, site).await?;
    state.gateways_changed();
    Ok(StatusCode::NO_CONTENT)
}
