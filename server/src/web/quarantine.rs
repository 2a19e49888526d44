//! `/api/v1/energy/quarantine`: the energy counters the profile worker set aside because
//! recomputing them failed on their own (see `accounting::worker`), for admins.
//!
//! - `GET /energy/quarantine`: every counter ever quarantined, active ones first, with the
//!   reason, since when, how many times, and where the counter is (device, gateway, site).
//! - `POST /energy/quarantine/{counter_id}/retry`: releases an active quarantine; the worker
//!   recomputes the counter's queued span at once. If it fails again the counter is quarantined
//!   again with one more attempt. 404 when the counter is not in quarantine.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::session::Admin;
use super::WebState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct QuarantinedCounter {
    pub counter_id: i64,
    pub counter: String,
    pub device_id: i64,
    pub device_serial: String,
    pub gateway_serial: String,
    pub site_id: Option<i64>,
    pub reason: String,
    pub since: DateTime<Utc>,
    pub attempts: i32,
    /// Still set aside (false: released by an admin, waiting for or past its retry).
    pub active: bool,
    pub released_at: Option<DateTime<Utc>>,
    /// Queued spans of the counter waiting for the worker.
    pub queued: i64,
}

pub async fn list(
    State(state): State<WebState>,
    Admin(_): Admin,
) -> ApiResult<Json<Vec<QuarantinedCounter>>> {
    let rows: Vec<QuarantinedCounter> = sqlx::query_as(
        "SELECT q.counter_id, c.name AS counter, d.id AS device_id, d.serial AS device_serial,
                g.serial AS gateway_serial, g.site_id, q.reason, q.since, q.attempts, q.active,
                q.released_at,
                (SELECT count(*) FROM energy_dirty e WHERE e.counter_id = q.counter_id) AS queued
         FROM energy_quarantine q
         JOIN counters c ON c.id = q.counter_id
         JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         ORDER BY q.active DESC, q.since DESC, q.counter_id
         LIMIT 1000",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

pub async fn retry(
    State(state): State<WebState>,
    Admin(admin): Admin,
    Path(counter_id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let released = sqlx::query(
        "UPDATE energy_quarantine SET active = false, released_at = now()
         WHERE counter_id = $1 AND active",
    )
    .bind(counter_id)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if released == 0 {
        return Err(ApiError::NotFound("quarantined counter"));
    }
    tracing::info!(counter_id, admin = %admin.email, "energy counter released from quarantine");
    state.energy_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI paths of this module, for `web::openapi::document` (`merged([...])`).
pub fn openapi_paths() -> serde_json::Value {
    use serde_json::json;
    let e = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    let id = json!({ "name": "counter_id", "in": "path", "required": true,
        "description": "Counter id", "schema": { "type": "integer", "format": "int64" } });
    let item = json!({ "type": "object", "properties": {
        "counter_id": { "type": "integer", "format": "int64" },
        "counter": { "type": "string", "description": "Register name, e.g. counter1nr" },
        "device_id": { "type": "integer", "format": "int64" },
        "device_serial": { "type": "string" },
        "gateway_serial": { "type": "string" },
        "site_id": { "type": ["integer", "null"], "format": "int64" },
        "reason": { "type": "string" },
        "since": { "type": "string", "format": "date-time" },
        "attempts": { "type": "integer" },
        "active": { "type": "boolean" },
        "released_at": { "type": ["string", "null"], "format": "date-time" },
        "queued": { "type": "integer", "description": "Queued spans waiting for the worker" }
    }});
    json!({
        "/energy/quarantine": {
            "get": { "summary": "Energy counters set aside by the profile worker (admin)", "tags": ["energy"],
                "description": "A counter whose recomputation fails on its own is quarantined so that the others go on; its readings stay stored and queued.",
                "responses": { "200": { "description": "OK", "content": { "application/json": {
                    "schema": { "type": "array", "items": item } } } },
                    "401": e("Unauthorized"), "403": e("Forbidden") } }
        },
        "/energy/quarantine/{counter_id}/retry": {
            "post": { "summary": "Release a quarantined counter: the worker recomputes it (admin)", "tags": ["energy"],
                "parameters": [id],
                "responses": { "204": { "description": "Released" },
                    "401": e("Unauthorized"), "403": e("Forbidden"), "404": e("NotFound") } }
        }
    })
}
