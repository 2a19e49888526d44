//! `/api/v1/converters`: Modbus converters and the devices polled behind them (reads for
//! anyone granted the converter's site, writes for admins), and counter resets of polled
//! meters (admins).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path};
use crate::auth::Principal;
use crate::modbus::store::{
    self, ConverterPatch, ConverterView, CounterResetView, NewConverter, NewPolledDevice,
    PolledDevicePatch,
};
use crate::modbus::ModbusError;
use crate::web::error::{ApiError, ApiResult, ErrorBody};
use crate::web::session::{Admin, Auth};
use crate::web::WebState;

impl From<ModbusError> for ApiError {
    fn from(e: ModbusError) -> Self {
        match e {
            ModbusError::Invalid(m) => Self::BadRequest(m),
            ModbusError::NotFound(what) => Self::NotFound(what),
            ModbusError::Conflict(m) => Self::Conflict(m),
            ModbusError::Bus(m) => Self::Conflict(m),
            e @ ModbusError::Maps(_) => Self::internal(e),
            ModbusError::Db(e) => Self::internal(e),
        }
    }
}

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(models))
        .routes(routes!(get, patch, delete))
        .routes(routes!(add_device))
        .routes(routes!(patch_device, delete_device))
        .routes(routes!(reset_counter))
}

/// Who may change a converter, and when it applies.
const ADMIN: &str =
    "Admins only. Configuration changes take effect on the converter's bus at once.";

/// Modbus converters of the user's sites, with their polled devices and communication state
#[utoipa::path(get, path = "/converters", tag = "converters",
    responses((status = 200, description = "Converters", body = Vec<ConverterView>)))]
async fn list(State(state): State<WebState>, Auth(p): Auth) -> ApiResult<Json<Vec<ConverterView>>> {
    Ok(Json(store::list(&state.pool, &p.scope).await?))
}

/// One converter with its polled devices
#[utoipa::path(get, path = "/converters/{id}", tag = "converters",
    params(("id" = i64, Path, description = "Converter id (its gateway id)")),
    responses((status = 200, description = "The converter", body = ConverterView)))]
async fn get(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<ConverterView>> {
    store::get(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("converter"))
}

/// Add a converter (admin)
///
/// Admins only. Configuration changes take effect on the converter's bus at once. The converter
/// becomes a gateway of kind `converter` (it never logs in over MQTT); its devices are stored
/// under it with port `modbus` and slot = unit id. An unknown model is refused with the list of
/// known models.
#[utoipa::path(post, path = "/converters", tag = "converters", request_body = NewConverter,
    responses((status = 201, description = "Created", body = ConverterView)))]
async fn create(
    State(state): State<WebState>,
    Admin(p): Admin,
    Json(body): Json<NewConverter>,
) -> ApiResult<(StatusCode, Json<ConverterView>)> {
    let id = store::create(
        &state.pool,
        state.modbus.maps(),
        state.modbus.settings(),
        body,
        state.default_time_zone,
        "api",
    )
    .await?;
    changed(&state);
    let converter = store::get(&state.pool, &p.scope, id)
        .await?
        .ok_or(ApiError::NotFound("converter"))?;
    Ok((StatusCode::CREATED, Json(converter)))
}

/// The converter, if the principal's scope sees it.
async fn visible(state: &WebState, p: &Principal, id: i64) -> ApiResult<()> {
    store::get(&state.pool, &p.scope, id)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound("converter"))
}

fn changed(state: &WebState) {
    state.modbus.changed();
    state.gateways_changed();
}

/// Change a converter (admin)
#[utoipa::path(patch, path = "/converters/{id}", tag = "converters", description = ADMIN,
    params(("id" = i64, Path, description = "Converter id (its gateway id)")),
    request_body = ConverterPatch,
    responses((status = 200, description = "The converter", body = ConverterView)))]
async fn patch(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<ConverterPatch>,
) -> ApiResult<Json<Option<ConverterView>>> {
    visible(&state, &p, id).await?;
    store::update(&state.pool, id, &body).await?;
    changed(&state);
    Ok(Json(store::get(&state.pool, &p.scope, id).await?))
}

/// Stop polling a converter (admin); its gateway, devices and data stay
#[utoipa::path(delete, path = "/converters/{id}", tag = "converters",
    params(("id" = i64, Path, description = "Converter id (its gateway id)")),
    responses((status = 204, description = "Removed")))]
async fn delete(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    visible(&state, &p, id).await?;
    store::delete(&state.pool, id).await?;
    changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

/// Poll a device behind the converter (admin)
#[utoipa::path(post, path = "/converters/{id}/devices", tag = "converters", description = ADMIN,
    params(("id" = i64, Path, description = "Converter id (its gateway id)")),
    request_body = NewPolledDevice,
    responses((status = 201, description = "The converter with the new device", body = ConverterView)))]
async fn add_device(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<NewPolledDevice>,
) -> ApiResult<(StatusCode, Json<Option<ConverterView>>)> {
    visible(&state, &p, id).await?;
    store::add_device(
        &state.pool,
        state.modbus.maps(),
        state.modbus.settings(),
        id,
        &body,
    )
    .await?;
    changed(&state);
    Ok((
        StatusCode::CREATED,
        Json(store::get(&state.pool, &p.scope, id).await?),
    ))
}

fn unit(unit: i64) -> ApiResult<i16> {
    i16::try_from(unit)
        .ok()
        .filter(|u| (1..=247).contains(u))
        .ok_or_else(|| ApiError::BadRequest(format!("unit {unit} must be between 1 and 247")))
}

/// Change a polled device (admin)
#[utoipa::path(patch, path = "/converters/{id}/devices/{unit}", tag = "converters",
    description = ADMIN,
    params(("id" = i64, Path, description = "Converter id (its gateway id)"),
        ("unit" = i64, Path, minimum = 1, maximum = 247, description = "Modbus unit id, 1..247")),
    request_body = PolledDevicePatch,
    responses((status = 200, description = "The converter", body = ConverterView)))]
async fn patch_device(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path((id, u)): Path<(i64, i64)>,
    Json(body): Json<PolledDevicePatch>,
) -> ApiResult<Json<Option<ConverterView>>> {
    visible(&state, &p, id).await?;
    store::update_device(&state.pool, state.modbus.maps(), id, unit(u)?, &body).await?;
    changed(&state);
    Ok(Json(store::get(&state.pool, &p.scope, id).await?))
}

/// Stop polling a device (admin); its data stay
#[utoipa::path(delete, path = "/converters/{id}/devices/{unit}", tag = "converters",
    params(("id" = i64, Path, description = "Converter id (its gateway id)"),
        ("unit" = i64, Path, minimum = 1, maximum = 247, description = "Modbus unit id, 1..247")),
    responses((status = 204, description = "Removed")))]
async fn delete_device(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path((id, u)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    visible(&state, &p, id).await?;
    store::delete_device(&state.pool, id, unit(u)?).await?;
    changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

/// A register map: what a polled device of this model reports.
#[derive(Serialize, utoipa::ToSchema)]
struct ConverterModel {
    /// The map's name, the `model` of a polled device.
    model: String,
    description: String,
    /// The map has a relay.
    relay: bool,
    /// The measurements columns it fills.
    measurements: Vec<String>,
    counters: Vec<ModelCounter>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ModelCounter {
    name: String,
    unit: String,
    /// The counter can be reset (energy accounting counts a drop as a reset, not a glitch).
    resettable: bool,
    /// Headend can reset it (`POST /devices/{id}/counters/{name}/reset`).
    reset: bool,
}

/// Register maps Headend knows (built in and from modbus.maps_dir)
#[utoipa::path(get, path = "/converters/models", tag = "converters",
    responses((status = 200, description = "The register maps", body = Vec<ConverterModel>)))]
async fn models(State(state): State<WebState>, _auth: Auth) -> Json<Vec<ConverterModel>> {
    let maps = state.modbus.maps();
    let models = maps
        .names()
        .into_iter()
        .filter_map(|name| {
            let map = maps.get(&name)?;
            Some(ConverterModel {
                description: map.description.clone(),
                relay: map.has_relay(),
                measurements: map.measurement_columns().map(str::to_owned).collect(),
                counters: map
                    .counters()
                    .map(|c| ModelCounter {
                        name: c.name.clone(),
                        unit: c.unit.to_owned(),
                        resettable: c.resettable,
                        reset: map.counter_reset(&c.name).is_some(),
                    })
                    .collect(),
                model: name,
            })
        })
        .collect();
    Json(models)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    /// Why the counter is reset (kept in the reset log).
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

/// Reset a counter of a polled meter (admin)
///
/// The path's device segment is the numeric device id of a meter behind a converter (polled
/// meters need not have a serial). The map's reset register is written through the converter's
/// bus and the meter is read again; the reset is recorded (who, when, why, outcome), and the
/// counter is resettable, so energy accounting counts the drop as a reset. 409 when the bus
/// could not carry it out.
#[utoipa::path(post, path = "/devices/{serial}/counters/{name}/reset", tag = "converters",
    params(("serial" = String, Path, description = "Device id (numeric)"),
        ("name" = String, Path, description = "Counter name")),
    request_body = ResetRequest,
    responses((status = 201, description = "Reset, and recorded", body = CounterResetView),
        (status = 409, description = "The bus could not carry the reset out (recorded as failed), or the meter's register map is not loaded", body = ErrorBody)))]
async fn reset_counter(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path((device, counter)): Path<(String, String)>,
    Json(body): Json<ResetRequest>,
) -> ApiResult<(StatusCode, Json<CounterResetView>)> {
    let device: i64 = device
        .parse()
        .map_err(|_| ApiError::NotFound("polled meter"))?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(ApiError::BadRequest(
            "reason is required: 1 to 1000 characters saying why the counter is reset".into(),
        ));
    }
    let target = store::reset_target(&state.pool, &p.scope, device)
        .await?
        .ok_or(ApiError::NotFound("polled meter"))?;
    let map = state.modbus.maps().get(&target.model).ok_or_else(|| {
        ApiError::Conflict(format!("no register map {:?} is loaded", target.model))
    })?;
    if map.counter_reset(&counter).is_none() {
        return Err(ApiError::BadRequest(format!(
            "counter {:?} of model {:?} cannot be reset; resettable counters: {}",
            counter.chars().take(64).collect::<String>(),
            target.model,
            map.counters()
                .filter(|c| map.counter_reset(&c.name).is_some())
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let outcome = state
        .modbus
        .reset_counter(target.gateway_id, target.unit, &counter)
        .await;
    let (status, detail) = match &outcome {
        Ok(()) => ("done", None),
        Err(e) => ("failed", Some(e.to_string())),
    };
    let logged = store::log_reset(
        &state.pool,
        target.device_id,
        &counter,
        p.user_id,
        &p.email,
        reason,
        status,
        detail.as_deref(),
    )
    .await?;
    tracing::info!(device = target.device_id, counter = %counter, by = %p.email, status, "counter reset");
    match outcome {
        Ok(()) => Ok((StatusCode::CREATED, Json(logged))),
        Err(e) => Err(e.into()),
    }
}
