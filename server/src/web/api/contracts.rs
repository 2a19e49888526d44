//! Supply contracts of a site. Read by anyone granted the site, written by admins; every
//! change rebuilds the site's costs in the background.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use headend_energy::tariff::Contract;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{in_visible_site, visible_site, Created};
use super::doc::ACCESS;
use super::extract::{Json, Path};
use crate::accounting::contracts::{self, schema::ContractSchema, ContractView};
use crate::auth::Principal;
use crate::web::error::ApiResult;
use crate::web::session::{Admin, Auth};
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list_contracts, create_contract))
        .routes(routes!(example_contract))
        .routes(routes!(get_contract, put_contract, delete_contract))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ContractInput {
    /// First local date the contract applies to.
    valid_from: Option<NaiveDate>,
    #[schema(value_type = ContractSchema)]
    contract: serde_json::Value,
}

/// The contract, if the caller may see its site.
async fn visible_contract(state: &WebState, p: &Principal, id: i64) -> ApiResult<ContractView> {
    let contract = contracts::get(&state.pool, id).await?;
    in_visible_site(state, &p.scope, contract, |c| c.site_id, "contract").await
}

/// Contracts of a site, oldest first
#[utoipa::path(get, path = "/sites/{id}/contracts", tag = "contracts", description = ACCESS,
    params(("id" = i64, Path, description = "Site id")),
    responses((status = 200, description = "The contracts", body = Vec<ContractView>)))]
async fn list_contracts(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
) -> ApiResult<Json<Vec<ContractView>>> {
    visible_site(&state, &p.scope, site).await?;
    Ok(Json(contracts::list(&state.pool, site).await?))
}

/// Add a supply contract to a site (admin)
///
/// The contract applies from `valid_from` (a local date) until the next contract's date;
/// without `valid_from` it applies to all history (it is stored as 2000-01-01), the usual first
/// contract. The contract is validated; the error names the offending field. Costs are rebuilt
/// in the background. 409 when the site already has a contract from that date.
#[utoipa::path(post, path = "/sites/{id}/contracts", tag = "contracts",
    params(("id" = i64, Path, description = "Site id")),
    request_body = ContractInput,
    responses((status = 201, description = "Created", body = Created)))]
async fn create_contract(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(site): Path<i64>,
    Json(body): Json<ContractInput>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    visible_site(&state, &p.scope, site).await?;
    let contract = contracts::parse(body.contract)?;
    // Without a date the contract applies to all history (the usual first contract).
    let valid_from = body
        .valid_from
        .unwrap_or(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default());
    let id = contracts::create(&state.pool, site, valid_from, &contract).await?;
    state.energy_changed();
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// An example contract to start from
///
/// Any signed-in user.
#[utoipa::path(get, path = "/contracts/example", tag = "contracts",
    responses((status = 200, description = "An example contract", body = ContractSchema)))]
async fn example_contract(_auth: Auth) -> Json<Contract> {
    Json(Contract::example_eur())
}

/// One contract
#[utoipa::path(get, path = "/contracts/{id}", tag = "contracts", description = ACCESS,
    params(("id" = i64, Path, description = "Contract id")),
    responses((status = 200, description = "The contract", body = ContractView)))]
async fn get_contract(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<ContractView>> {
    Ok(Json(visible_contract(&state, &p, id).await?))
}

/// Replace a contract (admin)
///
/// Replaces the contract body; `valid_from` absent keeps the current date. Costs are rebuilt in
/// the background. 409 when another contract of the site starts on the new date.
#[utoipa::path(put, path = "/contracts/{id}", tag = "contracts",
    params(("id" = i64, Path, description = "Contract id")),
    request_body = ContractInput,
    responses((status = 204, description = "Replaced")))]
async fn put_contract(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
    Json(body): Json<ContractInput>,
) -> ApiResult<StatusCode> {
    visible_contract(&state, &p, id).await?;
    let contract = contracts::parse(body.contract)?;
    contracts::replace(&state.pool, id, body.valid_from, &contract).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a contract (admin)
///
/// The previous contract (if any) then applies until the next one; costs are rebuilt in the
/// background.
#[utoipa::path(delete, path = "/contracts/{id}", tag = "contracts",
    params(("id" = i64, Path, description = "Contract id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_contract(
    State(state): State<WebState>,
    Admin(p): Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    visible_contract(&state, &p, id).await?;
    contracts::delete(&state.pool, id).await?;
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}
