//! The outbox sender: delivers `alarm_outbox` rows (e-mail, webhook, MQTT, relay command) with
//! retries and exponential backoff.
//!
//! A row is locked (`FOR UPDATE SKIP LOCKED`) in a transaction that stays open while it is
//! delivered and then marks it sent or reschedules it, so a restart or an outage loses nothing
//! and a delivered row is never picked again. The one window left (the receiver accepted, the
//! process died before the commit) resends with the same idempotency key: the same
//! `Message-ID`, the same `Idempotency-Key` header, the same relay command key (which the
//! ledger turns into the existing command).
//!
//! Several instances run this sender at once, without a lease, and still never send one row
//! twice: a row is delivered only by the transaction holding its row lock, which marks it
//! `sent` (or reschedules it) before it commits. Another instance's `SKIP LOCKED` passes the
//! row while it is locked, and once the lock is gone re-checks the row's committed status
//! (`pending` no longer matches). The crash window above is the only resend, lease or not.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::smtp::{self, Mail, Mailer, SmtpSettings};
use super::webhook::{self, Target};
use crate::auth::{Principal, Role, Scope};
use crate::config::Secret;
use crate::infra::backoff;
use crate::mqtt::CommandSender;
use crate::relays::ledger::{self, Action, CommandError, NewCommand};

#[derive(Clone)]
pub struct OutboxSettings {
    pub smtp: Option<Mailer>,
    pub webhook_secret: Option<Secret>,
    /// Follows no redirect; times out after `alarms.send_timeout_secs`.
    pub http: reqwest::Client,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_attempts: i32,
}

pub struct OutboxSender {
    pub pool: PgPool,
    pub settings: OutboxSettings,
    pub mqtt: CommandSender,
    pub timing: crate::relays::Timing,
    pub wake: Arc<Notify>,
    pub commands_wake: Arc<Notify>,
    pub metrics: Arc<crate::infra::metrics::Metrics>,
}

enum Outcome {
    Sent,
    Retry,
    Failed,
}

enum Failure {
    Transient(String),
    Permanent(String),
}

type Row = (i64, Option<i64>, String, String, Value, String, i32);

/// The sender's settings from `[alarms]`; fails on a CA file that cannot be used.
pub fn settings(config: &crate::config::AlarmsConfig) -> Result<OutboxSettings, String> {
    let ca_pem = crate::infra::http::ca_pem(config.tls_ca_file.as_deref())?;
    let timeout = Duration::from_secs(config.send_timeout_secs.max(1));
    let smtp = config
        .smtp_host
        .as_ref()
        .map(|host| {
            Mailer::new(&SmtpSettings {
                host: host.clone(),
                port: config.smtp_port,
                tls: smtp::TlsMode::parse(&config.smtp_tls).unwrap_or(smtp::TlsMode::StartTls),
                user: config.smtp_user.clone(),
                password: config.smtp_password.clone(),
                from: config.smtp_from.clone(),
                timeout,
                ca_pem: ca_pem.clone(),
            })
        })
        .transpose()?;
    let http = crate::infra::http::http_client(
        crate::infra::http::tls_config(ca_pem.as_deref())?,
        timeout,
    )?;
    Ok(OutboxSettings {
        smtp,
        webhook_secret: config.webhook_secret.clone(),
        http,
        retry_base: Duration::from_secs(config.retry_base_secs.max(1)),
        retry_max: Duration::from_secs(config.retry_max_secs.max(1)),
        max_attempts: i32::try_from(config.max_attempts)
            .unwrap_or(i32::MAX)
            .max(1),
    })
}

impl OutboxSender {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        loop {
            let wait = match self.drain(&shutdown).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "alarm outbox not read; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Delivers every due row; returns how long until the next one is due.
    async fn drain(&self, shutdown: &CancellationToken) -> Result<Duration, sqlx::Error> {
        while !shutdown.is_cancelled() {
            let mut tx = self.pool.begin().await?;
            let row: Option<Row> = sqlx::query_as(
                "SELECT id, alarm_id, channel, target, payload, idempotency_key, attempts
                 FROM alarm_outbox WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some((id, alarm, channel, target, payload, key, attempts)) = row else {
                tx.commit().await?;
                break;
            };
            let span =
                tracing::info_span!("alarm_outbox", id, channel = %channel, attempt = attempts + 1);
            let result = {
                let _enter = span.enter();
                self.deliver(&channel, &target, &payload, &key, alarm).await
            };
            let attempts = attempts + 1;
            let outcome = match result {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE alarm_outbox SET status = 'sent', sent_at = now(), attempts = $2,
                             last_error = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(id, channel = %channel, "alarm notification delivered");
                    Outcome::Sent
                }
                Err(Failure::Transient(e)) if attempts < self.settings.max_attempts => {
                    // Attempts are counted from 1 (the row's column is never negative).
                    let delay = backoff::delay(
                        self.settings.retry_base,
                        self.settings.retry_max,
                        u32::try_from(attempts).unwrap_or(0),
                    );
                    sqlx::query(
                        "UPDATE alarm_outbox SET attempts = $2, last_error = $3,
                             next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .bind(truncate(&e))
                    .bind(delay.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                    tracing::warn!(id, channel = %channel, error = %e, retry_in_s = delay.as_secs_f64(),
                        "alarm notification not delivered; will retry");
                    Outcome::Retry
                }
                Err(Failure::Transient(e) | Failure::Permanent(e)) => {
                    sqlx::query(
                        "UPDATE alarm_outbox SET status = 'failed', attempts = $2, last_error = $3
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .bind(truncate(&e))
                    .execute(&mut *tx)
                    .await?;
                    if let Some(alarm) = alarm {
                        sqlx::query(
                            "INSERT INTO alarm_events (alarm_id, kind, comment)
                             VALUES ($1, 'action_failed', $2)",
                        )
                        .bind(alarm)
                        .bind(truncate(&format!("{channel} to {target}: {e}")))
                        .execute(&mut *tx)
                        .await?;
                    }
                    tracing::error!(id, channel = %channel, error = %e, "alarm notification failed for good");
                    Outcome::Failed
                }
            };
            tx.commit().await?;
            match outcome {
                Outcome::Sent => self.metrics.alarm_notifications_sent.inc(),
                Outcome::Retry => self.metrics.alarm_notification_retries.inc(),
                Outcome::Failed => self.metrics.alarm_notifications_failed.inc(),
            }
        }
        let next: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM alarm_outbox WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next
            .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(60))
            .clamp(Duration::from_millis(50), Duration::from_secs(60)))
    }

    async fn deliver(
        &self,
        channel: &str,
        target: &str,
        payload: &Value,
        key: &str,
        alarm: Option<i64>,
    ) -> Result<(), Failure> {
        match channel {
            "email" => {
                let smtp = self.settings.smtp.as_ref().ok_or_else(|| {
                    Failure::Transient("no SMTP server configured (alarms.smtp_host)".into())
                })?;
                let text = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
                let message_id = format!("{key}@headend");
                smtp.send(&Mail {
                    to: target,
                    subject: text("subject"),
                    text: text("text"),
                    message_id: &message_id,
                })
                .await
                .map_err(|e| match e {
                    smtp::SmtpError::Transient(m) => Failure::Transient(m),
                    smtp::SmtpError::Permanent(m) => Failure::Permanent(m),
                })
            }
            "webhook" => {
                let secret = self.settings.webhook_secret.as_ref().ok_or_else(|| {
                    Failure::Transient(
                        "alarms.webhook_secret is not set; webhooks are never sent unsigned".into(),
                    )
                })?;
                let target = Target::parse(target).map_err(Failure::Permanent)?;
                let body = serde_json::to_vec(payload).unwrap_or_default();
                webhook::post(
                    &self.settings.http,
                    &target,
                    secret.expose().as_bytes(),
                    body,
                    key,
                )
                .await
                .map_err(|e| match e {
                    webhook::WebhookError::Transient(m) => Failure::Transient(m),
                    webhook::WebhookError::Permanent(m) => Failure::Permanent(m),
                })
            }
            "mqtt" => {
                // Gateways' command topics belong to the relay ledger (tracked, confirmed,
                // audited): an alarm never publishes there, nor under a gateway's topics.
                let gateway_topic: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM gateways
                     WHERE $1 = topic_root || '/' || topic_sub
                        OR $1 LIKE replace(replace(replace(topic_root, '\\', '\\\\'),
                                   '%', '\\%'), '_', '\\_') || '/%')",
                )
                .bind(target)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| Failure::Transient(format!("checking the topic: {e}")))?;
                if gateway_topic {
                    return Err(Failure::Permanent(format!(
                        "{target:?} is a gateway's topic; alarms publish elsewhere"
                    )));
                }
                let body = serde_json::to_vec(payload).unwrap_or_default();
                if self.mqtt.send(target.to_owned(), body.into()) {
                    Ok(())
                } else {
                    Err(Failure::Transient("the MQTT publish queue is full".into()))
                }
            }
            "relay" => self.relay(payload, key, alarm).await,
            other => Err(Failure::Permanent(format!("unknown channel {other:?}"))),
        }
    }

    /// A relay command through the ledger, as the rule: operator rights on the rule's site only,
    /// recorded with the rule's author and "alarm rule N" as the requester.
    async fn relay(&self, payload: &Value, key: &str, alarm: Option<i64>) -> Result<(), Failure> {
        let relay = payload.get("relay").and_then(Value::as_i64);
        let rule = payload.get("rule_id").and_then(Value::as_i64);
        let action = match payload.get("action").and_then(Value::as_str) {
            Some("off") => Action::Off,
            Some("on") => Action::On,
            _ => return Err(Failure::Permanent("bad relay action".into())),
        };
        let (Some(relay), Some(rule)) = (relay, rule) else {
            return Err(Failure::Permanent("bad relay action".into()));
        };
        let owner: Option<(i64, Option<i64>)> =
            sqlx::query_as("SELECT site_id, created_by FROM alarm_rules WHERE id = $1")
                .bind(rule)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
        let Some((site, Some(author))) = owner else {
            return Err(Failure::Permanent(format!(
                "alarm rule {rule} or its author no longer exists"
            )));
        };
        let who = Principal {
            user_id: author,
            email: format!("alarm rule {rule}"),
            role: Role::Operator,
            scope: Scope::Sites(vec![site]),
        };
        let reason = payload
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| r.chars().take(1000).collect());
        let created = ledger::create(
            &self.pool,
            &self.timing,
            &who,
            alarm.map(|a| format!("alarm {a}")),
            relay,
            NewCommand {
                action,
                idempotency_key: Some(key.chars().take(200).collect()),
                expires_at: None,
                expires_in_s: None,
                reason,
            },
        )
        .await;
        match created {
            Ok(_) => {
                self.commands_wake.notify_one();
                Ok(())
            }
            Err(CommandError::Refused(m)) => Err(Failure::Transient(m)),
            Err(CommandError::Db(e)) => Err(Failure::Transient(e.to_string())),
            Err(e) => Err(Failure::Permanent(e.to_string())),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}

// ---- read side (the outbox page) ------------------------------------------------------------

/// One outbox row with its alarm's rule and the subject of its payload.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxEntry {
    pub id: i64,
    pub created_at: chrono::DateTime<Utc>,
    pub alarm_id: Option<i64>,
    pub rule: Option<String>,
    pub channel: String,
    pub target: String,
    pub status: String,
    pub attempts: i32,
    pub sent_at: Option<chrono::DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The payload's subject, message or event, whichever it has.
    pub subject: Option<String>,
}

/// The newest `limit` outbox rows, newest first.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.created_at, o.alarm_id, a.rule_name AS rule, o.channel, o.target, o.status,
                o.attempts, o.sent_at, o.last_error,
                COALESCE(o.payload->>'subject', o.payload->>'message', o.payload->>'event') AS subject
         FROM alarm_outbox o LEFT JOIN alarms a ON a.id = o.alarm_id
         ORDER BY o.id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many outbox rows are pending, sent and failed.
pub async fn status_counts(pool: &PgPool) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'sent'),
                count(*) FILTER (WHERE status = 'failed')
         FROM alarm_outbox",
    )
    .fetch_one(pool)
    .await
}
