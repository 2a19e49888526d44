//! The notification outbox page (`/admin/outbox`, admins only): the newest `alarm_outbox`
//! rows with their channel, target, status, attempts and last error, so that a demo or a
//! site without a mail server still shows what the alarms would have sent. Same conventions
//! as `pages`: session cookie, askama escaping; read-only.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use super::{nav, render, require_admin, Nav, PageResult, PageUser};
use crate::web::WebState;

/// Rows shown, newest first.
const LIMIT: i64 = 200;

/// A channel as people say it.
fn channel_label(channel: &str) -> &'static str {
    match channel {
        "email" => "E-mail",
        "webhook" => "Webhook",
        "mqtt" => "MQTT message",
        "relay" => "Relay switched",
        _ => "Other",
    }
}

/// One outbox row as shown.
pub struct OutboxRow {
    pub channel_label: &'static str,
    pub id: i64,
    pub created_at: String,
    pub alarm_id: Option<i64>,
    pub rule: String,
    pub channel: String,
    pub target: String,
    pub status: String,
    pub attempts: i32,
    pub sent_at: String,
    pub last_error: String,
    pub subject: String,
}

#[derive(Template)]
#[template(path = "outbox.html")]
struct OutboxPage {
    title: &'static str,
    nav: Nav,
    rows: Vec<OutboxRow>,
    pending: i64,
    sent: i64,
    failed: i64,
}

type Row = (
    i64,
    DateTime<Utc>,
    Option<i64>,
    Option<String>,
    String,
    String,
    String,
    i32,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
);

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub async fn outbox_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    require_admin(&p)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.id, o.created_at, o.alarm_id, a.rule_name, o.channel, o.target, o.status,
                o.attempts, o.sent_at, o.last_error,
                COALESCE(o.payload->>'subject', o.payload->>'message', o.payload->>'event')
         FROM alarm_outbox o LEFT JOIN alarms a ON a.id = o.alarm_id
         ORDER BY o.id DESC LIMIT $1",
    )
    .bind(LIMIT)
    .fetch_all(&state.pool)
    .await?;
    let (pending, sent, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'sent'),
                count(*) FILTER (WHERE status = 'failed')
         FROM alarm_outbox",
    )
    .fetch_one(&state.pool)
    .await?;
    let clip = |s: String| s.chars().take(300).collect::<String>();
    let rows = rows
        .into_iter()
        .map(
            |(
                id,
                created,
                alarm_id,
                rule,
                channel,
                target,
                status,
                attempts,
                sent,
                error,
                subject,
            )| {
                OutboxRow {
                    id,
                    created_at: when(created),
                    alarm_id,
                    rule: rule.unwrap_or_default(),
                    channel_label: channel_label(&channel),
                    channel,
                    target: clip(target),
                    status,
                    attempts,
                    sent_at: sent.map(when).unwrap_or_default(),
                    last_error: clip(error.unwrap_or_default()),
                    subject: clip(subject.unwrap_or_default()),
                }
            },
        )
        .collect();
    let (nav, set) = nav(&p, &headers);
    render(
        &OutboxPage {
            title: "Notification outbox",
            nav,
            rows,
            pending,
            sent,
            failed,
        },
        set,
    )
}
