//! Energy read side: a site's consumption by day, month or year, and a meter's quarter-hour
//! profile. Both need the site (or the meter) in the caller's scope.

use axum::extract::State;
use chrono::Utc;
use headend_energy::calendar::{self, Period};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{parse_instant, resolve_meter, visible_site, Ambiguous};
use super::extract::{Json, Path, Query};
use crate::accounting::query::{self, Consumption, Group, PeriodSchema, Profile};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::Auth;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(site_consumption))
        .routes(routes!(device_profile))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConsumptionParams {
    /// An RFC 3339 instant (2026-03-29T00:00:00+01:00), or a local date YYYY-MM-DD meaning
    /// local midnight at the start of that date in the site's time zone.
    from: String,
    /// Like `from`, exclusive: to=2026-04-01 ends with March 31.
    to: String,
    /// Period length (default day).
    #[param(value_type = Option<PeriodSchema>)]
    by: Option<String>,
    /// Also split each period: per meter (serial), per circuit, per panel, or per usage (the
    /// meter's, else its circuit's).
    #[param(value_type = Option<Group>)]
    group: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ProfileParams {
    /// An RFC 3339 instant (2026-03-29T00:00:00+01:00), or a local date YYYY-MM-DD meaning
    /// local midnight at the start of that date in the meter's time zone.
    from: String,
    /// Like `from`, exclusive.
    to: String,
    /// Only this register (counter name, e.g. counter1nr); default all.
    register: Option<String>,
    /// Device id: which of the meters reporting the serial (when several in scope do).
    device: Option<i64>,
}

/// Consumption and cost of a site by day, month or year
///
/// Sums over the site's counted meters (those not below another counted meter, so nothing is
/// counted twice) of their import, export and reactive registers, per local calendar period of
/// the site's time zone (days of 23 or 25 hours at DST changes are whole days). The range
/// covers whole local days, from the date of `from` through the date of the last instant
/// before `to`; the first and last periods are clipped to it (`start_utc`, `end_utc`). Energy
/// is in Wh and varh; costs are in the contract currency (`currency`), rounded to 1e-6 while
/// sums are kept exact internally. Periods not yet ended count only their past quarter-hours
/// as expected in `completeness`. With `group`, each period also lists groups (by circuit,
/// panel or usage they add up to the site total; by meter they list every meter). At most 1100
/// days with by=day, and 20 years in all.
#[utoipa::path(get, path = "/sites/{id}/consumption", tag = "energy",
    params(("id" = i64, Path, description = "Site id"), ConsumptionParams),
    responses((status = 200, description = "The site's consumption", body = Consumption)))]
async fn site_consumption(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(site): Path<i64>,
    Query(q): Query<ConsumptionParams>,
) -> ApiResult<Json<Consumption>> {
    let tz = visible_site(&state, &p.scope, site).await?;
    let from = parse_instant("from", &q.from, tz)?;
    let to = parse_instant("to", &q.to, tz)?;
    let by: Period =
        q.by.as_deref()
            .unwrap_or("day")
            .parse()
            .map_err(|e: calendar::CalendarError| ApiError::BadRequest(e.to_string()))?;
    let group = q.group.as_deref().map(str::parse).transpose()?;
    let result =
        query::consumption(&state.read_pool, site, tz, from, to, by, group, Utc::now()).await?;
    Ok(Json(result))
}

/// Quarter-hour energy profile of a meter's registers, with power statistics
///
/// Every quarter-hour of the range (snapped outwards to quarter-hours, at most 31 days) for
/// each register: energy in the register's unit (Wh, varh, VAh; `null` when missing) and its
/// quality; resets, glitches and meter exchanges; totals. Import and export intervals of a site
/// with a contract also carry their band and cost (export: the credit) in the contract
/// currency, rounded to 1e-6. `power` has statistics of the instantaneous measurements per
/// quarter-hour that has any. Local times are in the zone of the meter's site (or its gateway
/// when the gateway has no site). The meter is addressed by its serial within the caller's
/// scope, as every `devices` route (409 with the candidates when several meters report it).
#[utoipa::path(get, path = "/devices/{serial}/profile", tag = "energy",
    params(("serial" = String, Path, description = "Meter serial number, percent-encoded"), ProfileParams),
    responses((status = 200, description = "The meter's profile", body = Profile), Ambiguous))]
async fn device_profile(
    State(state): State<WebState>,
    Auth(p): Auth,
    Path(serial): Path<String>,
    Query(q): Query<ProfileParams>,
) -> ApiResult<Json<Profile>> {
    let device = resolve_meter(&state, &p.scope, &serial, q.device).await?;
    // One pooled connection for the rest: three statements, no acquire between them.
    let mut conn = state.read_pool.acquire().await?;
    let setting = query::meter_setting(&mut conn, device.id, device.site_id).await?;
    let from = parse_instant("from", &q.from, setting.tz)?;
    let to = parse_instant("to", &q.to, setting.tz)?;
    let profile = query::profile_on(
        &mut conn,
        &setting,
        (device.id, &device.serial),
        (from, to),
        q.register.as_deref(),
    )
    .await?;
    Ok(Json(profile))
}
