//! The notification outbox page (`/admin/outbox`, admins only): the newest `alarm_outbox`
//! rows with their channel, target, status, attempts and last error, so that a demo or a
//! site without a mail server still shows what the alarms would have sent. Same conventions
//! as `pages`: session cookie, askama escaping; read-only.

use askama::Template;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use super::{Nav, PageResult, PageUser};
use crate::alarms::outbox;
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new().route("/admin/outbox", get(outbox_page))
}

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

impl OutboxRow {
    fn new(e: outbox::OutboxEntry) -> Self {
        let clip = |s: String| s.chars().take(300).collect::<String>();
        Self {
            id: e.id,
            created_at: when(e.created_at),
            alarm_id: e.alarm_id,
            rule: e.rule.unwrap_or_default(),
            channel_label: channel_label(&e.channel),
            channel: e.channel,
            target: clip(e.target),
            status: e.status,
            attempts: e.attempts,
            sent_at: e.sent_at.map(when).unwrap_or_default(),
            last_error: clip(e.last_error.unwrap_or_default()),
            subject: clip(e.subject.unwrap_or_default()),
        }
    }
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

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

async fn outbox_page(State(state): State<WebState>, user: PageUser) -> PageResult {
    user.require_admin()?;
    let rows = outbox::recent(&state.pool, LIMIT).await?;
    let (pending, sent, failed) = outbox::status_counts(&state.pool).await?;
    user.render(&OutboxPage {
        title: "Notification outbox",
        nav: user.nav(),
        rows: rows.into_iter().map(OutboxRow::new).collect(),
        pending,
        sent,
        failed,
    })
}
