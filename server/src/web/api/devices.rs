//! Meters and relays behind the gateways: list, placement, latest values, counters. (A meter's
//! profile is in [`super::energy`].)

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{resolve_meter, Ambiguous, DeviceParam};
use super::doc::METER_IDENTITY;
use super::extract::{Json, Path, Query};
use crate::accounting::structure::{self, DevicePatch};
use crate::auth::Scope;
use crate::fleet::devices::{self, CounterLatest, DeviceView, Latest};
use crate::web::error::ApiResult;
use crate::web::session::{Admin, Auth};
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices))
        .routes(routes!(patch_device))
        .routes(routes!(device_latest))
        .routes(routes!(device_counters))
}

#[derive(Serialize, ToSchema)]
struct DeviceCounters {
    device: DeviceView,
    /// The latest reading of each counter, non-resettable first.
    counters: Vec<CounterLatest>,
}

/// Meters and relays of the user's sites
#[utoipa::path(get, path = "/devices", tag = "devices",
    responses((status = 200, description = "The devices, by gateway, port and slot", body = Vec<DeviceView>)))]
async fn list_devices(
    State(state): State<WebState>,
    Auth(p): Auth,
) -> ApiResult<Json<Vec<DeviceView>>> {
    Ok(Json(devices::list(&state.pool, &p.scope).await?))
}

/// Name a meter, place it on its site, set its usage and billing registers (admin)
///
/// Every field is optional: an absent field stays unchanged, `null` clears it. `measures` is
/// implied by `circuit_id` or `panel_id` when left out; the panel or circuit must belong to the
/// site of the meter's gateway. A change of placement or registers rebuilds the site's
/// consumption in the background; a change of `commissioned_at` recomputes the meter's
/// intervals from its readings.
#[utoipa::path(patch, path = "/devices/{serial}", tag = "devices",
    params(("serial" = String, Path, description = "Meter serial number, percent-encoded"), DeviceParam),
    request_body = DevicePatch,
    responses((status = 204, description = "Changed"), Ambiguous))]
async fn patch_device(
    State(state): State<WebState>,
    _admin: Admin,
    Path(serial): Path<String>,
    Query(q): Query<DeviceParam>,
    Json(body): Json<DevicePatch>,
) -> ApiResult<StatusCode> {
    let device = resolve_meter(&state, &Scope::All, &serial, q.device).await?;
    structure::patch_device(&state.pool, device.id, body).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Latest instantaneous measurements of a meter, SI units
#[utoipa::path(get, path = "/devices/{serial}/latest", tag = "devices", description = METER_IDENTITY,
    params(("serial" = String, Path, description = "Meter serial number, percent-encoded"), DeviceParam),
    responses((status = 200, description = "The newest measurements", body = Latest), Ambiguous))]
async fn device_latest(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
    Query(q): Query<DeviceParam>,
) -> ApiResult<Json<Latest>> {
    let device = resolve_meter(&state, &p.scope, &serial, q.device).await?;
    Ok(Json(devices::latest(&state.pool, device).await?))
}

/// Latest reading of each energy counter of a meter
#[utoipa::path(get, path = "/devices/{serial}/counters", tag = "devices", description = METER_IDENTITY,
    params(("serial" = String, Path, description = "Meter serial number, percent-encoded"), DeviceParam),
    responses((status = 200, description = "The meter and its counters", body = DeviceCounters), Ambiguous))]
async fn device_counters(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
    Query(q): Query<DeviceParam>,
) -> ApiResult<Json<DeviceCounters>> {
    let device = resolve_meter(&state, &p.scope, &serial, q.device).await?;
    let counters = devices::counters(&state.pool, device.id).await?;
    Ok(Json(DeviceCounters { device, counters }))
}
