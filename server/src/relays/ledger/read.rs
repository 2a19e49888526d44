//! The read side of the ledger: relays with their reported state and wear, and commands with
//! their transitions, always within the caller's site scope.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{Action, Status};
use crate::auth::Scope;

/// A relay as Headend knows it: the last *reported* state with its age, and the command in
/// flight if any (never shown as the new state before the relay reports it).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Relay)]
pub struct RelayView {
    pub id: i64,
    pub gateway: String,
    pub site_id: Option<i64>,
    pub port: String,
    pub slot: i16,
    pub serial: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub gateway_online: bool,
    /// 1 on, 0 off, -1 unknown; null if never reported.
    pub state: Option<i16>,
    pub state_at: Option<DateTime<Utc>>,
    pub state_age_s: Option<f64>,
    /// Switching it off needs a second operator's approval (four-eyes).
    pub critical: bool,
    /// Confirmed switchings counted by Headend.
    pub operations: i64,
    pub rated_operations: i32,
    pub wear_pct: f64,
    pub min_switch_interval_s: i32,
    pub command_in_flight: Option<i64>,
    pub command_status: Option<Status>,
    #[schema(value_type = Option<Action>)]
    pub command_action: Option<String>,
}

const RELAY_SQL: &str = "
SELECT d.id, g.serial AS gateway, g.site_id, d.port, d.slot, d.serial, d.name, d.description,
       g.online AS gateway_online,
       rs.state, rs.ts AS state_at,
       EXTRACT(EPOCH FROM (now() - rs.ts))::float8 AS state_age_s,
       d.critical, d.operations, d.rated_operations,
       (100.0 * d.operations / d.rated_operations)::float8 AS wear_pct,
       d.min_switch_interval_s,
       c.id AS command_in_flight, c.status AS command_status, c.action AS command_action
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
LEFT JOIN LATERAL (SELECT state, ts FROM relay_states WHERE device_id = d.id
                   ORDER BY ts DESC LIMIT 1) rs ON true
LEFT JOIN LATERAL (SELECT id, status, action FROM relay_commands WHERE device_id = d.id
                   AND status IN ('awaiting_approval', 'queued', 'sent')
                   ORDER BY id DESC LIMIT 1) c ON true
WHERE d.kind = 'relay' AND ($1::int8[] IS NULL OR g.site_id = ANY($1))";

pub async fn list_relays(pool: &PgPool, scope: &Scope) -> Result<Vec<RelayView>, sqlx::Error> {
    sqlx::query_as(&format!("{RELAY_SQL} ORDER BY g.serial, d.port, d.slot"))
        .bind(scope.site_ids())
        .fetch_all(pool)
        .await
}

pub async fn get_relay(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
) -> Result<Option<RelayView>, sqlx::Error> {
    sqlx::query_as(&format!("{RELAY_SQL} AND d.id = $2"))
        .bind(scope.site_ids())
        .bind(id)
        .fetch_optional(pool)
        .await
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Command)]
pub struct CommandView {
    pub id: i64,
    pub relay_id: i64,
    #[schema(value_type = Action)]
    pub action: String,
    /// 1 on, 0 off; a toggle's target is known once the state was read.
    pub target: Option<i16>,
    pub status: Status,
    pub idempotency_key: Option<String>,
    pub requested_by: Option<i64>,
    pub requested_email: String,
    pub requested_from: Option<String>,
    pub reason: Option<String>,
    pub approved_by: Option<i64>,
    pub approved_email: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub approval_deadline: Option<DateTime<Utc>>,
    pub confirm_deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
    #[sqlx(skip)]
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub status: Status,
    pub detail: Option<String>,
}

const COMMAND_SQL: &str = "SELECT c.id, c.device_id AS relay_id, c.action, c.target, c.status,
        c.idempotency_key, c.requested_by, c.requested_email, c.requested_from, c.reason,
        c.approved_by, c.approved_email, c.expires_at, c.approval_deadline, c.confirm_deadline,
        c.created_at, c.sent_at, c.finished_at, c.detail
 FROM relay_commands c JOIN devices d ON d.id = c.device_id JOIN gateways g ON g.id = d.gateway_id
 WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1))";

async fn with_transitions(
    pool: &PgPool,
    mut commands: Vec<CommandView>,
) -> Result<Vec<CommandView>, sqlx::Error> {
    let ids: Vec<i64> = commands.iter().map(|c| c.id).collect();
    let rows: Vec<(i64, DateTime<Utc>, Status, Option<String>)> = sqlx::query_as(
        "SELECT command_id, at, status, detail FROM relay_command_transitions
         WHERE command_id = ANY($1) ORDER BY at, status",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for (id, at, status, detail) in rows {
        if let Some(c) = commands.iter_mut().find(|c| c.id == id) {
            c.transitions.push(Transition { at, status, detail });
        }
    }
    Ok(commands)
}

pub async fn get_command(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
) -> Result<Option<CommandView>, sqlx::Error> {
    let found: Option<CommandView> = sqlx::query_as(&format!("{COMMAND_SQL} AND c.id = $2"))
        .bind(scope.site_ids())
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(match found {
        Some(c) => with_transitions(pool, vec![c]).await?.pop(),
        None => None,
    })
}

pub async fn history(
    pool: &PgPool,
    scope: &Scope,
    relay: i64,
    limit: i64,
) -> Result<Vec<CommandView>, sqlx::Error> {
    let rows: Vec<CommandView> = sqlx::query_as(&format!(
        "{COMMAND_SQL} AND c.device_id = $2 ORDER BY c.id DESC LIMIT $3"
    ))
    .bind(scope.site_ids())
    .bind(relay)
    .bind(limit.clamp(1, 1000))
    .fetch_all(pool)
    .await?;
    with_transitions(pool, rows).await
}
