//! Gateways: registry, placement on a site, MQTT password, XML push identity.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path};
use crate::accounting::structure;
use crate::auth::Scope;
use crate::fleet::gateways::{self, Created, GatewayView, NewGateway};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::{Admin, Auth};
use crate::web::WebState;
use crate::xml_push::registry::{self, SettingsView, XmlPushSettings};

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list_gateways, create_gateway))
        .routes(routes!(get_gateway, patch_gateway))
        .routes(routes!(rotate_password))
        .routes(routes!(get_xml_push, put_xml_push))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GatewayPatch {
    /// The site to move to; null (or absent): no site.
    site_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct GatewayPassword {
    serial: String,
    /// The new MQTT password, shown once.
    password: String,
}

/// Gateways of the user's sites
#[utoipa::path(get, path = "/gateways", tag = "gateways",
    responses((status = 200, description = "The gateways, by serial", body = Vec<GatewayView>)))]
async fn list_gateways(
    State(state): State<WebState>,
    Auth(p): Auth,
) -> ApiResult<Json<Vec<GatewayView>>> {
    Ok(Json(gateways::list(&state.pool, &p.scope).await?))
}

/// Register a gateway (admin); its MQTT password is returned once
#[utoipa::path(post, path = "/gateways", tag = "gateways",
    request_body = NewGateway,
    responses((status = 201, description = "Registered", body = Created)))]
async fn create_gateway(
    State(state): State<WebState>,
    _admin: Admin,
    Json(body): Json<NewGateway>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let created = gateways::create(&state.pool, body, state.default_time_zone).await?;
    state.gateways_changed();
    Ok((StatusCode::CREATED, Json(created)))
}

/// One gateway: online state, last hello, firmware, clock skew, rejected messages
#[utoipa::path(get, path = "/gateways/{serial}", tag = "gateways",
    params(("serial" = String, Path, description = "Gateway serial, e.g. SG000017")),
    responses((status = 200, description = "The gateway", body = GatewayView)))]
async fn get_gateway(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
) -> ApiResult<Json<GatewayView>> {
    gateways::get(&state.pool, &p.scope, &serial)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("gateway"))
}

/// Move a gateway and its meters to a site, or off any site (admin)
///
/// `site_id` null (or absent) takes the gateway off any site. The gateway's meters lose their
/// placement (panel, circuit) from the old site; both sites' consumption is rebuilt in the
/// background, and the new site's time zone and contracts apply.
#[utoipa::path(patch, path = "/gateways/{serial}", tag = "gateways",
    params(("serial" = String, Path, description = "Gateway serial, e.g. SG000017")),
    request_body = GatewayPatch,
    responses((status = 204, description = "Moved (or already there)")))]
async fn patch_gateway(
    State(state): State<WebState>,
    _admin: Admin,
    Path(serial): Path<String>,
    Json(body): Json<GatewayPatch>,
) -> ApiResult<StatusCode> {
    let gw = gateways::get(&state.pool, &Scope::All, &serial)
        .await?
        .ok_or(ApiError::NotFound("gateway"))?;
    structure::assign_gateway(&state.pool, gw.id, body.site_id).await?;
    state.gateways_changed();
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Give a gateway a new MQTT password (admin); returned once
///
/// The next CONNECT needs the new password; sessions already open stay open until they
/// reconnect.
#[utoipa::path(post, path = "/gateways/{serial}/password", tag = "gateways",
    params(("serial" = String, Path, description = "Gateway serial, e.g. SG000017")),
    responses((status = 200, description = "The new password", body = GatewayPassword)))]
async fn rotate_password(
    State(state): State<WebState>,
    _admin: Admin,
    Path(serial): Path<String>,
) -> ApiResult<Json<GatewayPassword>> {
    let password = gateways::rotate_password(&state.pool, &serial)
        .await?
        .ok_or(ApiError::NotFound("gateway"))?;
    Ok(Json(GatewayPassword { serial, password }))
}

/// A gateway's MiSmart XML push identity: allowed source addresses and meters, with the device slot each meter is stored on
#[utoipa::path(get, path = "/gateways/{serial}/xml-push", tag = "gateways",
    params(("serial" = String, Path, description = "Gateway serial, e.g. SG000017")),
    responses((status = 200, description = "Sources and meters", body = SettingsView)))]
async fn get_xml_push(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
) -> ApiResult<Json<SettingsView>> {
    Ok(Json(registry::get(&state.pool, &p.scope, &serial).await?))
}

/// Set a gateway's MiSmart XML push identity (admin)
///
/// Replaces the source addresses (a TCP push from any other address is refused) and the meter
/// serials (`controlUnit`) the gateway may push for. A new meter is pinned to the gateway's
/// meter with the same serial if MQTT already reported it, else to the first free `xml` slot; a
/// kept meter keeps its device. The gateway itself pushes to the XML push listener, or with
/// HTTP Basic (its serial and MQTT password) to `POST /api/v1/xml-push`; see docs/xml-push.md.
#[utoipa::path(put, path = "/gateways/{serial}/xml-push", tag = "gateways",
    params(("serial" = String, Path, description = "Gateway serial, e.g. SG000017")),
    request_body = XmlPushSettings,
    responses((status = 200, description = "The settings now in force", body = SettingsView)))]
async fn put_xml_push(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(serial): Path<String>,
    Json(body): Json<XmlPushSettings>,
) -> ApiResult<Json<SettingsView>> {
    Ok(Json(
        registry::set(&state.pool, &p.scope, &serial, &body).await?,
    ))
}
