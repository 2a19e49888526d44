//! Read side of the reject log.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::auth::Scope;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Reject)]
pub struct RejectView {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub source: String,
    pub topic: String,
    pub client: String,
    pub gateway: Option<String>,
    pub reason: String,
    /// The valid part of the message was stored; only what `reason` names was refused.
    pub partial: bool,
    pub payload_size: i32,
    /// The payload verbatim when it is UTF-8 (cut at 64 KiB), else `payload_base64`.
    pub payload: Option<String>,
    pub payload_base64: Option<String>,
}

const MAX_SHOWN: usize = 64 * 1024;

/// Newest first; `before` pages backwards by id. Non-admins see only rejects attributed to a
/// gateway of one of their sites.
pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    limit: i64,
    before: Option<i64>,
    gateway: Option<&str>,
) -> Result<Vec<RejectView>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        received_at: DateTime<Utc>,
        source: String,
        topic: String,
        client: String,
        gateway: Option<String>,
        reason: String,
        partial: bool,
        payload_size: i32,
        payload: Vec<u8>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.id, r.received_at, r.source, r.topic, r.client, g.serial AS gateway, r.reason,
                r.partial, r.payload_size, substring(r.payload FROM 1 FOR $5) AS payload
         FROM ingest_rejects r LEFT JOIN gateways g ON g.id = r.gateway_id
         WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1))
           AND ($2::int8 IS NULL OR r.id < $2)
           AND ($3::text IS NULL OR g.serial = $3)
         ORDER BY r.id DESC LIMIT $4",
    )
    .bind(scope.site_ids())
    .bind(before)
    .bind(gateway)
    .bind(limit.clamp(1, 1000))
    .bind(MAX_SHOWN as i32)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let (payload, payload_base64) = match String::from_utf8(r.payload) {
                Ok(text) => (Some(text), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                ),
            };
            RejectView {
                id: r.id,
                received_at: r.received_at,
                source: r.source,
                topic: r.topic,
                client: r.client,
                gateway: r.gateway,
                reason: r.reason,
                partial: r.partial,
                payload_size: r.payload_size,
                payload,
                payload_base64,
            }
        })
        .collect())
}
