//! `/api/v1` handlers for energy accounting: profiles, consumption, site structure and
//! contracts. Reads need the site in the caller's scope; writes need an admin.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use serde::Deserialize;

use super::api::access::{parse_instant, resolve_meter, visible_site, DeviceParam};
use super::error::{ApiError, ApiResult};
use super::session::{Admin, Auth};
use super::WebState;
use crate::accounting::structure::{self};
use crate::accounting::{contracts, query};
use crate::auth::{Principal, Scope};
use crate::{fleet::gateways, sites};

#[derive(Deserialize)]
pub struct ProfileParams {
    from: String,
    to: String,
    register: Option<String>,
    /// Picks one of the meters reporting the serial (see [`crate::fleet::devices::Resolved`]).
    device: Option<i64>,
}

pub async fn device_profile(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
    Query(q): Query<ProfileParams>,
) -> ApiResult<impl IntoResponse> {
    let device = resolve_meter(&state, &p.scope, &serial, q.device).await?;
    let tz: String = sqlx::query_scalar(
        "SELECT COALESCE(s.time_zone, g.time_zone) FROM devices d
         JOIN gateways g ON g.id = d.gateway_id LEFT JOIN sites s ON s.id = g.site_id WHERE d.id = $1",
    )
    .bind(device.id)
    .fetch_one(&state.pool)
    .await?;
    let tz: Tz = tz.parse().unwrap_or(chrono_tz::UTC);
    let from = parse_instant("from", &q.from, tz)?;
    let to = parse_instant("to", &q.to, tz)?;
    let profile = query::profile(
        &state.pool,
        device.site_id,
        device.id,
        &device.serial,
        tz,
        from,
        to,
        q.register.as_deref(),
    )
    .await?;
    Ok(Json(profile))
}

#[derive(Deserialize)]
pub struct ConsumptionParams {
    from: String,
    to: String,
    by: Option<String>,
    group: Option<String>,
}

pub async fn site_consumption(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
    Query(q): Query<ConsumptionParams>,
) -> ApiResult<impl IntoResponse> {
    let tz = visible_site(&state, &p.scope, site).await?;
    let from = parse_instant("from", &q.from, tz)?;
    let to = parse_instant("to", &q.to, tz)?;
    let by: Period =
        q.by.as_deref()
            .unwrap_or("day")
            .parse()
            .map_err(|e: calendar::CalendarError| ApiError::BadRequest(e.to_string()))?;
    let group = q.group.as_deref().map(str::parse).transpose()?;
    let result = query::consumption(&state.pool, site, tz, from, to, by, group, Utc::now()).await?;
    Ok(Json(result))
}

// -- sites ------------------------------------------------------------------------------

pub async fn get_site(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    sites::get(&state.pool, &p.scope, site)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("site"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    name: Option<String>,
    #[serde(alias = "time_zone")]
    timezone: Option<String>,
}

pub async fn patch_site(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path(site): Path<i64>,
    Json(body): Json<SitePatch>,
) -> ApiResult<impl IntoResponse> {
    structure::update_site(
        &state.pool,
        site,
        body.name.as_deref(),
        body.timezone.as_deref(),
    )
    .await?;
    state.gateways_changed();
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_site(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path(site): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    structure::delete_site(&state.pool, site).await?;
    state.gateways_changed();
    Ok(StatusCode::NO_CONTENT)
}

// -- panels and circuits ------------------------------------------------------------------

pub async fn list_panels(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_site(&state, &p.scope, site).await?;
    Ok(Json(structure::list_panels(&state.pool, site).await?))
}

pub async fn create_panel(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(body): Json<structure::PanelInput>,
) -> ApiResult<impl IntoResponse> {
    visible_site(&state, &p.scope, site).await?;
    let id = structure::create_panel(&state.pool, site, &body).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn visible_panel(
    state: &WebState,
    p: &Principal,
    id: i64,
) -> ApiResult<structure::PanelView> {
    let panel = structure::get_panel(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("panel"))?;
    visible_site(state, &p.scope, panel.site_id)
        .await
        .map_err(|_| ApiError::NotFound("panel"))?;
    Ok(panel)
}

pub async fn get_panel(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(visible_panel(&state, &p, id).await?))
}

pub async fn patch_panel(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<structure::PanelInput>,
) -> ApiResult<impl IntoResponse> {
    visible_panel(&state, &p, id).await?;
    structure::update_panel(&state.pool, id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_panel(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_panel(&state, &p, id).await?;
    structure::delete_panel(&state.pool, id).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_circuits(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(panel): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_panel(&state, &p, panel).await?;
    Ok(Json(structure::list_circuits(&state.pool, panel).await?))
}

pub async fn list_site_circuits(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_site(&state, &p.scope, site).await?;
    Ok(Json(
        structure::list_site_circuits(&state.pool, site).await?,
    ))
}

pub async fn create_circuit(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(panel): Path<i64>,
    Json(body): Json<structure::CircuitInput>,
) -> ApiResult<impl IntoResponse> {
    visible_panel(&state, &p, panel).await?;
    let id = structure::create_circuit(&state.pool, panel, &body).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn visible_circuit(
    state: &WebState,
    p: &Principal,
    id: i64,
) -> ApiResult<structure::CircuitView> {
    let circuit = structure::get_circuit(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("circuit"))?;
    visible_site(state, &p.scope, circuit.site_id)
        .await
        .map_err(|_| ApiError::NotFound("circuit"))?;
    Ok(circuit)
}

pub async fn get_circuit(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(visible_circuit(&state, &p, id).await?))
}

pub async fn patch_circuit(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<structure::CircuitInput>,
) -> ApiResult<impl IntoResponse> {
    visible_circuit(&state, &p, id).await?;
    structure::update_circuit(&state.pool, id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_circuit(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_circuit(&state, &p, id).await?;
    structure::delete_circuit(&state.pool, id).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

// -- contracts ----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractInput {
    valid_from: Option<NaiveDate>,
    contract: serde_json::Value,
}

pub async fn list_contracts(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_site(&state, &p.scope, site).await?;
    Ok(Json(contracts::list(&state.pool, site).await?))
}

pub async fn create_contract(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(body): Json<ContractInput>,
) -> ApiResult<impl IntoResponse> {
    visible_site(&state, &p.scope, site).await?;
    let contract = contracts::parse(body.contract)?;
    // Without a date the contract applies to all history (the usual first contract).
    let valid_from = body
        .valid_from
        .unwrap_or(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default());
    let id = contracts::create(&state.pool, site, valid_from, &contract).await?;
    state.energy_changed();
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn visible_contract(
    state: &WebState,
    p: &Principal,
    id: i64,
) -> ApiResult<contracts::ContractView> {
    let c = contracts::get(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("contract"))?;
    visible_site(state, &p.scope, c.site_id)
        .await
        .map_err(|_| ApiError::NotFound("contract"))?;
    Ok(c)
}

pub async fn get_contract(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(visible_contract(&state, &p, id).await?))
}

pub async fn put_contract(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<ContractInput>,
) -> ApiResult<impl IntoResponse> {
    visible_contract(&state, &p, id).await?;
    let contract = contracts::parse(body.contract)?;
    contracts::replace(&state.pool, id, body.valid_from, &contract).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_contract(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    visible_contract(&state, &p, id).await?;
    contracts::delete(&state.pool, id).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// An example contract to start from.
pub async fn example_contract(Auth(_): Auth) -> impl IntoResponse {
    Json(headend_energy::tariff::Contract::example_eur())
}

// -- placement ----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayPatch {
    /// `null` takes the gateway off any site.
    site_id: Option<i64>,
}

pub async fn patch_gateway(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path(serial): Path<String>,
    Json(body): Json<GatewayPatch>,
) -> ApiResult<impl IntoResponse> {
    let gw = gateways::get(&state.pool, &Scope::All, &serial)
        .await?
        .ok_or(ApiError::NotFound("gateway"))?;
    structure::assign_gateway(&state.pool, gw.id, body.site_id).await?;
    state.gateways_changed();
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn patch_device(
    State(state): State<WebState>,
    Admin(_): Admin,
    Path(serial): Path<String>,
    Query(q): Query<DeviceParam>,
    Json(body): Json<structure::DevicePatch>,
) -> ApiResult<impl IntoResponse> {
    let device = resolve_meter(&state, &Scope::All, &serial, q.device).await?;
    structure::patch_device(&state.pool, device.id, body).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}
