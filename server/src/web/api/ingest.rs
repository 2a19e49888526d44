//! Rejected gateway messages, kept verbatim with the reason.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use crate::ingest::rejects::{self, RejectView};
use crate::web::error::ApiResult;
use crate::web::session::Auth;
use crate::web::WebState;

pub fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(list_rejects))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RejectQuery {
    /// How many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Page backwards: only ids below this.
    before: Option<i64>,
    /// Only this gateway serial.
    gateway: Option<String>,
}

/// Rejected (or partly rejected) gateway messages, newest first, kept verbatim with the reason
///
/// Non-admins see only the rejects attributed to a gateway of one of their sites.
#[utoipa::path(get, path = "/ingest/rejects", tag = "ingest",
    params(RejectQuery),
    responses((status = 200, description = "The rejects, newest first", body = Vec<RejectView>)))]
async fn list_rejects(
    State(state): State<WebState>,
    Auth(p): Auth,
    Query(q): Query<RejectQuery>,
) -> ApiResult<Json<Vec<RejectView>>> {
    Ok(Json(
        rejects::list(
            &state.pool,
            &p.scope,
            q.limit.unwrap_or(100),
            q.before,
            q.gateway.as_deref(),
        )
        .await?,
    ))
}
