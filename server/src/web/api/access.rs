//! What every API handler needs to find things in the caller's scope: a visible site and its
//! zone, the meter a serial addresses, an instant from a query, how the feature modules'
//! errors become API errors, and the answers several resources share.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use serde::{Deserialize, Serialize};

use crate::accounting::query;
use crate::accounting::structure::StructureError;
use crate::auth::{users::UserError, Scope};
use crate::fleet::{devices, gateways::GatewayError};
use crate::sites::{self, SiteError};
use crate::web::error::{ApiError, ApiResult, ErrorBody};
use crate::web::WebState;
use crate::xml_push::registry::RegistryError;

/// The answer of a creation: the new resource's id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: i64,
}

/// Several meters in the caller's scope report this serial: choose one with `device`
#[derive(utoipa::IntoResponses)]
#[response(status = 409)]
pub struct Ambiguous(pub ErrorBody);

impl From<SiteError> for ApiError {
    fn from(e: SiteError) -> Self {
        match e {
            SiteError::Invalid(m) => Self::BadRequest(m),
            SiteError::Exists(_) => Self::Conflict(e.to_string()),
            SiteError::Db(e) => Self::internal(e),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(m) => Self::BadRequest(m),
            UserError::Exists(_) => Self::Conflict(e.to_string()),
            UserError::Hash(_) | UserError::Db(_) => Self::internal(e),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Invalid(m) => Self::BadRequest(m),
            GatewayError::Exists(_) => Self::Conflict(e.to_string()),
            GatewayError::Hash(_) | GatewayError::Db(_) => Self::internal(e),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound => Self::NotFound("gateway"),
            RegistryError::Invalid(m) => Self::BadRequest(m),
            RegistryError::Db(e) => Self::internal(e),
        }
    }
}

impl From<StructureError> for ApiError {
    fn from(e: StructureError) -> Self {
        match e {
            StructureError::Invalid(m) => Self::BadRequest(m),
            StructureError::NotFound(what) => Self::NotFound(what),
            StructureError::Conflict(m) => Self::Conflict(m),
            StructureError::Db(e) => Self::internal(e),
        }
    }
}

impl From<query::QueryError> for ApiError {
    fn from(e: query::QueryError) -> Self {
        match e {
            query::QueryError::Invalid(m) => Self::BadRequest(m),
            query::QueryError::Db(e) => Self::internal(e),
        }
    }
}

/// The site's time zone, if the caller may see the site (otherwise "not found": the
/// existence of other tenants' sites is not disclosed).
pub async fn visible_site(state: &WebState, scope: &Scope, site: i64) -> ApiResult<Tz> {
    let site = sites::get(&state.pool, scope, site)
        .await?
        .ok_or(ApiError::NotFound("site"))?;
    Ok(site.time_zone.tz())
}

/// `found` (a panel, circuit, contract... of a site) if the caller may see its site; otherwise,
/// or when there is none, "`what` not found", exactly alike.
pub async fn in_visible_site<T>(
    state: &WebState,
    scope: &Scope,
    found: Option<T>,
    site_of: impl FnOnce(&T) -> i64,
    what: &'static str,
) -> ApiResult<T> {
    let found = found.ok_or(ApiError::NotFound(what))?;
    visible_site(state, scope, site_of(&found))
        .await
        .map_err(|_| ApiError::NotFound(what))?;
    Ok(found)
}

/// An instant as RFC 3339, or a plain date meaning local midnight of the site.
pub fn parse_instant(name: &str, value: &str, tz: Tz) -> ApiResult<DateTime<Utc>> {
    let out_of_range = || {
        ApiError::BadRequest(format!(
            "`{name}` must lie in the years {} to {}",
            calendar::MIN_YEAR,
            calendar::MAX_YEAR
        ))
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        let t = t.with_timezone(&Utc);
        if !calendar::supported(t.date_naive()) {
            return Err(out_of_range());
        }
        return Ok(t);
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if !calendar::supported(d) {
            return Err(out_of_range());
        }
        return Ok(calendar::period_bounds(tz, d, Period::Day).0);
    }
    Err(ApiError::BadRequest(format!(
        "`{name}` must be an RFC 3339 instant (2026-03-29T00:00:00+01:00) or a date (2026-03-29)"
    )))
}

/// `?device=<id>`: picks one of the meters reporting a serial (see [`devices::Resolved`]).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceParam {
    /// Device id: which of the meters reporting the serial (when several in scope do).
    pub device: Option<i64>,
}

/// The meter `serial` (and `device`) addresses for `scope`: 404 when there is none in scope,
/// 409 with the candidates when several are and `device` does not choose (see
/// [`devices::Resolved`]).
pub async fn resolve_meter(
    state: &WebState,
    scope: &crate::auth::Scope,
    serial: &str,
    device: Option<i64>,
) -> ApiResult<devices::DeviceView> {
    match devices::resolve_meter(&state.pool, scope, serial, device).await? {
        devices::Resolved::Found(d) => Ok(*d),
        devices::Resolved::NotFound => Err(ApiError::NotFound("meter")),
        devices::Resolved::Ambiguous(candidates) => Err(ApiError::Ambiguous {
            message: format!(
                "several meters report serial {:?}; choose one of the candidates with ?device=<id>",
                serial.chars().take(64).collect::<String>()
            ),
            candidates: serde_json::to_value(candidates).map_err(ApiError::internal)?,
        }),
    }
}
