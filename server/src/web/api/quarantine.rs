//! `/api/v1/energy/quarantine`: the energy counters the profile worker set aside because
//! recomputing them failed on their own (see `accounting::worker`), for admins.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path};
use crate::accounting::quarantine::{self, QuarantinedCounter};
use crate::web::error::{ApiError, ApiResult};
use crate::web::session::Admin;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry))
}

/// Energy counters set aside by the profile worker (admin)
///
/// A counter whose recomputation fails on its own is quarantined so that the others go on; its
/// readings stay stored and queued. Every counter ever quarantined, active ones first, with the
/// reason, since when, how many times, and where the counter is (device, gateway, site).
#[utoipa::path(get, path = "/energy/quarantine", tag = "energy",
    responses((status = 200, description = "Quarantined counters, active first", body = Vec<QuarantinedCounter>)))]
async fn list(
    State(state): State<WebState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<QuarantinedCounter>>> {
    Ok(Json(quarantine::list(&state.pool).await?))
}

/// Release a quarantined counter: the worker recomputes it (admin)
///
/// The worker recomputes the counter's queued span at once; if that fails again the counter is
/// quarantined again with one more attempt.
#[utoipa::path(post, path = "/energy/quarantine/{counter_id}/retry", tag = "energy",
    params(("counter_id" = i64, Path, description = "Counter id")),
    responses((status = 204, description = "Released"),
        (status = 404, description = "The counter is not in quarantine", body = crate::web::error::ErrorBody)))]
async fn retry(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(counter_id): Path<i64>,
) -> ApiResult<StatusCode> {
    if !quarantine::release(&state.pool, counter_id).await? {
        return Err(ApiError::NotFound("quarantined counter"));
    }
    tracing::info!(counter_id, admin = %admin.email, "energy counter released from quarantine");
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}
