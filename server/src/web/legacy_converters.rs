//! `/api/v1/converters`: Modbus converters and the devices polled behind them (reads for
//! anyone granted the converter's site, writes for admins), and counter resets of polled
//! meters (admins).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::session::{Admin, Auth};
use super::WebState;
use crate::modbus::store::{
    self, ConverterPatch, NewConverter, NewPolledDevice, PolledDevicePatch,
};
use crate::modbus::ModbusError;

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

pub async fn list(State(state): State<WebState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(Json(store::list(&state.pool, &p.scope).await?))
}

pub async fn get(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    store::get(&state.pool, &p.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("converter"))
}

pub async fn create(
    State(state): State<WebState>,
    Admin(p): Admin,
    Json(body): Json<NewConverter>,
) -> ApiResult<impl IntoResponse> {
    let id = store::create(
        &state.pool,
        state.modbus.maps(),
        state.modbus.settings(),
        body,
        &state.default_time_zone,
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
async fn visible(state: &WebState, p: &crate::auth::Principal, id: i64) -> ApiResult<()> {
    store::get(&state.pool, &p.scope, id)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound("converter"))
}

fn changed(state: &WebState) {
    state.modbus.changed();
    state.gateways_changed();
}

pub async fn patch(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<ConverterPatch>,
) -> ApiResult<impl IntoResponse> {
    visible(&state, &p, id).await?;
    store::update(&state.pool, id, &body).await?;
    changed(&state);
    Ok(Json(store::get(&state.pool, &p.scope, id).await?))
}

pub async fn delete(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible(&state, &p, id).await?;
    store::delete(&state.pool, id).await?;
    changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_device(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<NewPolledDevice>,
) -> ApiResult<impl IntoResponse> {
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

pub async fn patch_device(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path((id, u)): Path<(i64, i64)>,
    Json(body): Json<PolledDevicePatch>,
) -> ApiResult<impl IntoResponse> {
    visible(&state, &p, id).await?;
    store::update_device(&state.pool, state.modbus.maps(), id, unit(u)?, &body).await?;
    changed(&state);
    Ok(Json(store::get(&state.pool, &p.scope, id).await?))
}

pub async fn delete_device(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path((id, u)): Path<(i64, i64)>,
) -> ApiResult<impl IntoResponse> {
    visible(&state, &p, id).await?;
    store::delete_device(&state.pool, id, unit(u)?).await?;
    changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn models(State(state): State<WebState>, Auth(_): Auth) -> impl IntoResponse {
    let maps = state.modbus.maps();
    let models: Vec<serde_json::Value> = maps
        .names()
        .into_iter()
        .filter_map(|name| {
            let map = maps.get(&name)?;
            Some(serde_json::json!({
                "model": name,
                "description": map.description,
                "relay": map.has_relay(),
                "measurements": map.measurement_columns().collect::<Vec<_>>(),
                "counters": map.counters().map(|c| serde_json::json!({
                    "name": c.name, "unit": c.unit, "resettable": c.resettable,
                    "reset": map.counter_reset(&c.name).is_some(),
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    Json(models)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    reason: String,
}

/// `POST /devices/{id}/counters/{name}/reset`: the path's device segment is the numeric
/// device id (polled meters need not have a serial).
pub async fn reset_counter(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path((device, counter)): Path<(String, String)>,
    Json(body): Json<ResetRequest>,
) -> ApiResult<impl IntoResponse> {
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

/// OpenAPI paths of this module (merged into `openapi::document`).
pub fn openapi_paths() -> serde_json::Value {
    use serde_json::json;
    let r = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let e = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    let id = json!({ "name": "id", "in": "path", "required": true, "description": "Converter id (its gateway id)", "schema": { "type": "integer", "format": "int64" } });
    let unit = json!({ "name": "unit", "in": "path", "required": true, "description": "Modbus unit id, 1..247", "schema": { "type": "integer", "minimum": 1, "maximum": 247 } });
    let json_ok = |status: &str, schema: serde_json::Value| json!({ status: { "description": "OK", "content": { "application/json": { "schema": schema } } } });
    let with = |mut v: serde_json::Value, codes: &[&str]| {
        for code in codes {
            let name = match *code {
                "400" => "BadRequest",
                "401" => "Unauthorized",
                "403" => "Forbidden",
                "404" => "NotFound",
                _ => "Conflict",
            };
            v[*code] = e(name);
        }
        v
    };
    let body = |schema: serde_json::Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let admin = "Admins only. Configuration changes take effect on the converter's bus at once.";
    json!({
        "/converters": {
            "get": { "summary": "Modbus converters of the user's sites, with their polled devices and communication state", "tags": ["converters"],
                "responses": with(json_ok("200", json!({ "type": "array", "items": r("Converter") })), &["401"]) },
            "post": { "summary": "Add a converter (admin)", "tags": ["converters"],
                "description": format!("{admin} The converter becomes a gateway of kind `converter` (it never logs in over MQTT); its devices are stored under it with port `modbus` and slot = unit id. An unknown model is refused with the list of known models."),
                "requestBody": body(r("NewConverter")),
                "responses": with(json_ok("201", r("Converter")), &["400", "401", "403", "409"]) }
        },
        "/converters/models": { "get": { "summary": "Register maps Headend knows (built in and from modbus.maps_dir)", "tags": ["converters"],
            "responses": with(json_ok("200", json!({ "type": "array", "items": { "type": "object" } })), &["401"]) } },
        "/converters/{id}": {
            "get": { "summary": "One converter with its polled devices", "tags": ["converters"], "parameters": [id],
                "responses": with(json_ok("200", r("Converter")), &["401", "404"]) },
            "patch": { "summary": "Change a converter (admin)", "tags": ["converters"], "description": admin, "parameters": [id],
                "requestBody": body(json!({ "type": "object", "properties": {
                    "host": { "type": "string" }, "port": { "type": "integer" }, "gap_ms": { "type": "integer" },
                    "timeout_ms": { "type": "integer" }, "retries": { "type": "integer" }, "enabled": { "type": "boolean" } } })),
                "responses": with(json_ok("200", r("Converter")), &["400", "401", "403", "404"]) },
            "delete": { "summary": "Stop polling a converter (admin); its gateway, devices and data stay", "tags": ["converters"], "parameters": [id],
                "responses": with(json!({ "204": { "description": "Removed" } }), &["401", "403", "404"]) }
        },
        "/converters/{id}/devices": { "post": { "summary": "Poll a device behind the converter (admin)", "tags": ["converters"], "description": admin, "parameters": [id],
            "requestBody": body(r("NewPolledDevice")),
            "responses": with(json_ok("201", r("Converter")), &["400", "401", "403", "404", "409"]) } },
        "/converters/{id}/devices/{unit}": {
            "patch": { "summary": "Change a polled device (admin)", "tags": ["converters"], "parameters": [id, unit],
                "requestBody": body(json!({ "type": "object", "properties": {
                    "model": { "type": "string" }, "poll_interval_ms": { "type": "integer" }, "serial": { "type": "string" }, "enabled": { "type": "boolean" } } })),
                "responses": with(json_ok("200", r("Converter")), &["400", "401", "403", "404"]) },
            "delete": { "summary": "Stop polling a device (admin); its data stay", "tags": ["converters"], "parameters": [id, unit],
                "responses": with(json!({ "204": { "description": "Removed" } }), &["401", "403", "404"]) }
        },
        "/devices/{serial}/counters/{name}/reset": { "post": {
            "summary": "Reset a counter of a polled meter (admin)", "tags": ["converters"],
            "description": "The path's device segment is the numeric device id of a meter behind a converter. The map's reset register is written through the converter's bus and the meter is read again; the reset is recorded (who, when, why, outcome), and the counter is resettable, so energy accounting counts the drop as a reset. 409 when the bus could not carry it out.",
            "parameters": [
                { "name": "serial", "in": "path", "required": true, "description": "Device id (numeric)", "schema": { "type": "string" } },
                { "name": "name", "in": "path", "required": true, "description": "Counter name", "schema": { "type": "string" } }
            ],
            "requestBody": body(json!({ "type": "object", "required": ["reason"], "properties": { "reason": { "type": "string", "maxLength": 1000 } } })),
            "responses": with(json_ok("201", r("CounterReset")), &["400", "401", "403", "404", "409"])
        }}
    })
}

/// OpenAPI schemas of this module.
pub fn openapi_schemas() -> serde_json::Value {
    use serde_json::json;
    let dt = json!({ "type": ["string", "null"], "format": "date-time" });
    let device = json!({ "type": "object", "required": ["unit", "model"], "properties": {
        "unit": { "type": "integer", "minimum": 1, "maximum": 247 },
        "model": { "type": "string", "description": "A register map name (GET /converters/models)" },
        "kind": { "enum": ["meter", "relay"], "default": "meter" },
        "poll_interval_ms": { "type": "integer", "minimum": 100, "description": "Default: modbus.default_poll_interval_ms" },
        "serial": { "type": "string", "maxLength": 64 },
        "enabled": { "type": "boolean", "default": true } } });
    json!({
        "NewPolledDevice": device,
        "NewConverter": { "type": "object", "required": ["name", "host"], "properties": {
            "name": { "type": "string", "description": "Also its gateway serial: 1 to 32 of A-Z a-z 0-9 - _ ." },
            "host": { "type": "string" }, "port": { "type": "integer", "default": 502 },
            "site_id": { "type": ["integer", "null"] },
            "gap_ms": { "type": "integer", "description": "Silence between frames; default modbus.gap_ms" },
            "timeout_ms": { "type": "integer", "description": "Per request; default modbus.timeout_ms (200)" },
            "retries": { "type": "integer", "maximum": 5 },
            "enabled": { "type": "boolean" },
            "devices": { "type": "array", "items": { "$ref": "#/components/schemas/NewPolledDevice" } } } },
        "PolledDevice": { "type": "object", "properties": {
            "id": { "type": "integer" }, "converter_id": { "type": "integer" }, "device_id": { "type": ["integer", "null"] },
            "unit": { "type": "integer" }, "kind": { "enum": ["meter", "relay"] }, "model": { "type": "string" },
            "serial": { "type": "string" }, "poll_interval_ms": { "type": "integer" }, "enabled": { "type": "boolean" },
            "comm": { "enum": ["ok", "failing", "unknown"], "description": "failing: communication lost, the device is backed off" },
            "last_ok_at": dt, "last_error_at": dt, "last_error": { "type": ["string", "null"] },
            "consecutive_failures": { "type": "integer" }, "backoff_until": dt } },
        "Converter": { "type": "object", "properties": {
            "id": { "type": "integer" }, "name": { "type": "string" }, "site_id": { "type": ["integer", "null"] },
            "host": { "type": "string" }, "port": { "type": "integer" },
            "gap_ms": { "type": ["integer", "null"] }, "timeout_ms": { "type": ["integer", "null"] }, "retries": { "type": ["integer", "null"] },
            "enabled": { "type": "boolean" }, "source": { "enum": ["api", "config"] },
            "online": { "type": "boolean", "description": "The TCP link is up" }, "online_changed_at": dt,
            "last_error": { "type": ["string", "null"] }, "last_error_at": dt,
            "devices": { "type": "array", "items": { "$ref": "#/components/schemas/PolledDevice" } } } },
        "CounterReset": { "type": "object", "properties": {
            "id": { "type": "integer" }, "device_id": { "type": "integer" }, "counter": { "type": "string" },
            "requested_email": { "type": "string" }, "reason": { "type": "string" }, "requested_at": { "type": "string", "format": "date-time" },
            "status": { "enum": ["done", "failed"] }, "detail": { "type": ["string", "null"] } } }
    })
}
