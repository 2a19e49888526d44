//! The alarm lifecycle: raise, clear, acknowledge, shelve, escalate. Every change writes its
//! history row and the outbox rows it causes in the same transaction, so a notification exists
//! exactly when the change committed.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

use super::rules::Condition;
use super::{Actions, AlarmError, Severity, Watch};
use crate::auth::{Principal, Role};

/// What the lifecycle needs to know of a rule.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub id: i64,
    pub site_id: i64,
    pub name: String,
    pub severity: Severity,
    pub watch: Watch,
    pub condition: Condition,
    pub actions: Actions,
}

/// What an alarm is about: a meter or a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub key: String,
    pub device_id: Option<i64>,
    pub gateway_id: Option<i64>,
}

impl Subject {
    pub fn meter(device_id: i64, gateway_id: i64) -> Self {
        Self {
            key: format!("meter:{device_id}"),
            device_id: Some(device_id),
            gateway_id: Some(gateway_id),
        }
    }

    pub fn site(site_id: i64) -> Self {
        Self {
            key: format!("site:{site_id}"),
            device_id: None,
            gateway_id: None,
        }
    }

    pub fn gateway(gateway_id: i64) -> Self {
        Self {
            key: format!("gateway:{gateway_id}"),
            device_id: None,
            gateway_id: Some(gateway_id),
        }
    }
}

type Tx<'a> = Transaction<'a, Postgres>;

async fn event(
    tx: &mut Tx<'_>,
    alarm: i64,
    kind: &str,
    actor: Option<&str>,
    comment: Option<&str>,
    value: Option<f64>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO alarm_events (alarm_id, kind, actor, comment, value)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(alarm)
    .bind(kind)
    .bind(actor)
    .bind(comment)
    .bind(value)
    .fetch_one(&mut **tx)
    .await
}

/// A readable name of the subject: the meter's name or serial, its gateway and site.
async fn describe_subject(tx: &mut Tx<'_>, subject: &Subject) -> Result<String, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>, String, Option<String>)> =
        match subject.device_id {
            Some(device) => {
                sqlx::query_as(
                    "SELECT d.name, NULLIF(d.serial, ''), g.serial, s.name FROM devices d
             JOIN gateways g ON g.id = d.gateway_id LEFT JOIN sites s ON s.id = g.site_id
             WHERE d.id = $1",
                )
                .bind(device)
                .fetch_optional(&mut **tx)
                .await?
            }
            None if subject.gateway_id.is_some() => {
                sqlx::query_as(
                    "SELECT NULL::text, NULL::text, g.serial, s.name FROM gateways g
             LEFT JOIN sites s ON s.id = g.site_id WHERE g.id = $1",
                )
                .bind(subject.gateway_id)
                .fetch_optional(&mut **tx)
                .await?
            }
            None => return Ok(format!("the site total ({})", subject.key)),
        };
    Ok(match row {
        Some((name, serial, gateway, site)) => {
            let site = site.unwrap_or_else(|| "no site".into());
            match (subject.device_id, name.or(serial)) {
                (Some(_), Some(meter)) => format!("meter {meter} on gateway {gateway} ({site})"),
                (Some(id), None) => format!("meter #{id} on gateway {gateway} ({site})"),
                (None, _) => format!("gateway {gateway} ({site})"),
            }
        }
        None => subject.key.clone(),
    })
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// A raise: a new alarm with its notifications; or, when the previous alarm of this rule and
/// subject is cleared but still unacknowledged, that alarm reopened without new notifications
/// (a flapping value tells people once); or nothing when it is already active (a restart that
/// lost a state write must not raise again).
pub async fn raise(
    tx: &mut Tx<'_>,
    rule: &RuleInfo,
    subject: &Subject,
    at: DateTime<Utc>,
    value: f64,
) -> Result<Option<i64>, sqlx::Error> {
    let open: Option<(i64, bool, i32, bool)> = sqlx::query_as(
        "SELECT id, active, raise_count, COALESCE(shelved_until > now(), false) FROM alarms
         WHERE rule_id = $1 AND subject = $2 AND (active OR acked_at IS NULL) FOR UPDATE",
    )
    .bind(rule.id)
    .bind(&subject.key)
    .fetch_optional(&mut **tx)
    .await?;
    match open {
        Some((_, true, _, _)) => return Ok(None),
        Some((id, false, count, shelved)) => {
            sqlx::query(
                "UPDATE alarms SET active = true, cleared_at = NULL, cleared_value = NULL,
                     raise_count = raise_count + 1, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&mut **tx)
            .await?;
            let ev = event(tx, id, "reraised", None, None, Some(value)).await?;
            // Flapping: the first return after a clear notice is told once (so nobody is left
            // believing it cleared); later ones are not, until someone acknowledges.
            let a = &rule.actions;
            if count == 1 && a.notify_clear && !shelved {
                enqueue_notifications(tx, id, ev, "reraised", &a.email, a, at, value).await?;
            }
            return Ok(Some(id));
        }
        None => {}
    }
    let what = describe_subject(tx, subject).await?;
    let message = format!(
        "{}: {} {} ({}) on {what}",
        rule.name,
        rule.watch.label(),
        format_value(value),
        rule.condition.describe()
    );
    // The partial unique index allows one open alarm per rule and subject: a transaction that
    // raced another one's insert waits for it and then raises nothing (the alarm is open).
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO alarms (rule_id, rule_name, site_id, subject, device_id, gateway_id,
             severity, message, raised_at, raised_value)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (rule_id, subject) WHERE active OR acked_at IS NULL DO NOTHING
         RETURNING id",
    )
    .bind(rule.id)
    .bind(&rule.name)
    .bind(rule.site_id)
    .bind(&subject.key)
    .bind(subject.device_id)
    .bind(subject.gateway_id)
    .bind(rule.severity.as_str())
    .bind(&message)
    .bind(at)
    .bind(value)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    let ev = event(tx, id, "raised", None, None, Some(value)).await?;
    let a = &rule.actions;
    enqueue_notifications(tx, id, ev, "raised", &a.email, a, at, value).await?;
    if let Some(relay) = a.shed_relay {
        let reason = format!("alarm rule {}: {message}", rule.id);
        enqueue_relay(tx, id, ev, relay, "off", rule.id, &reason).await?;
    }
    tracing::info!(alarm = id, rule = rule.id, subject = %subject.key, value, "alarm raised");
    Ok(Some(id))
}

/// A clear: the active alarm of this rule and subject, if any, is cleared (and closed when it
/// was acknowledged); notifications unless shelved; the shed relay restored if configured.
pub async fn clear(
    tx: &mut Tx<'_>,
    rule: &RuleInfo,
    subject: &Subject,
    at: DateTime<Utc>,
    value: f64,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64, bool, i32)> = sqlx::query_as(
        "UPDATE alarms SET active = false, cleared_at = $3, cleared_value = $4, updated_at = now()
         WHERE rule_id = $1 AND subject = $2 AND active
         RETURNING id, COALESCE(shelved_until > now(), false), raise_count",
    )
    .bind(rule.id)
    .bind(&subject.key)
    .bind(at)
    .bind(value)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, shelved, count)) = row else {
        return Ok(None);
    };
    let ev = event(tx, id, "cleared", None, None, Some(value)).await?;
    let a = &rule.actions;
    // Only the first clear of an alarm is told: a flapping value is not a stream of e-mails.
    if a.notify_clear && !shelved && count == 1 {
        enqueue_notifications(tx, id, ev, "cleared", &a.email, a, at, value).await?;
    }
    if let (Some(relay), true) = (a.shed_relay, a.restore_on_clear) {
        let reason = format!("alarm rule {}: cleared, restoring", rule.id);
        enqueue_relay(tx, id, ev, relay, "on", rule.id, &reason).await?;
    }
    tracing::info!(alarm = id, rule = rule.id, subject = %subject.key, value, "alarm cleared");
    Ok(Some(id))
}

async fn enqueue(
    tx: &mut Tx<'_>,
    alarm: i64,
    ev: i64,
    channel: &str,
    target: &str,
    payload: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alarm_outbox (alarm_id, event_id, channel, target, payload, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(alarm)
    .bind(ev)
    .bind(channel)
    .bind(target)
    .bind(payload)
    .bind(format!("headend-alarm-event-{ev}-{channel}-{target}"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Switching the rule's shed relay (`action` on or off) through the command ledger, for one
/// event.
async fn enqueue_relay(
    tx: &mut Tx<'_>,
    alarm: i64,
    ev: i64,
    relay: i64,
    action: &str,
    rule: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let payload = json!({"relay": relay, "action": action, "rule_id": rule, "reason": reason});
    enqueue(tx, alarm, ev, "relay", &relay.to_string(), payload).await
}

/// E-mails to `recipients`, and the webhook and MQTT documents, for one event.
#[allow(clippy::too_many_arguments)]
async fn enqueue_notifications(
    tx: &mut Tx<'_>,
    alarm: i64,
    ev: i64,
    kind: &str,
    recipients: &[String],
    actions: &Actions,
    at: DateTime<Utc>,
    value: f64,
) -> Result<(), sqlx::Error> {
    let doc: Option<(
        i64,
        Option<i64>,
        String,
        i64,
        String,
        String,
        String,
        String,
    )> = sqlx::query_as(
        "SELECT a.id, a.rule_id, a.rule_name, a.site_id, s.name, a.subject, a.severity, a.message
             FROM alarms a JOIN sites s ON s.id = a.site_id WHERE a.id = $1",
    )
    .bind(alarm)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, rule_id, rule_name, site_id, site, subject, severity, message)) = doc else {
        return Ok(());
    };
    let document = json!({
        "event": kind, "alarm_id": id, "rule_id": rule_id, "rule": rule_name,
        "site_id": site_id, "site": site, "subject": subject, "severity": severity,
        "value": value, "at": at, "message": message,
    });
    let headline = match kind {
        "raised" => severity.to_uppercase(),
        "reraised" => format!(
            "{} AGAIN, flapping: further changes are not notified until acknowledged",
            severity.to_uppercase()
        ),
        "escalated" => format!("ESCALATED {}", severity.to_uppercase()),
        other => other.to_owned(),
    };
    let mail = json!({
        "subject": format!("[Headend {headline}] {message}"),
        "text": format!(
            "Alarm {id} {kind} at {at} (UTC).\r\n\r\nSite: {site}\r\nRule: {rule_name}\r\nSeverity: {severity}\r\nValue: {}\r\n\r\n{message}\r\n",
            format_value(value)
        ),
    });
    for to in recipients {
        enqueue(tx, alarm, ev, "email", to, mail.clone()).await?;
    }
    if let Some(url) = &actions.webhook_url {
        enqueue(tx, alarm, ev, "webhook", url, document.clone()).await?;
    }
    if let Some(topic) = &actions.mqtt_topic {
        enqueue(tx, alarm, ev, "mqtt", topic, document).await?;
    }
    Ok(())
}

fn may_handle(who: &Principal) -> Result<(), AlarmError> {
    match who.role {
        Role::Admin | Role::Operator => Ok(()),
        Role::Viewer => Err(AlarmError::Forbidden(
            "only operators and admins acknowledge or shelve alarms",
        )),
    }
}

/// Locks the alarm if the principal may see it.
async fn lock_alarm(
    tx: &mut Tx<'_>,
    who: &Principal,
    id: i64,
) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), AlarmError> {
    let row: Option<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT acked_at, shelved_until FROM alarms
         WHERE id = $1 AND ($2::int8[] IS NULL OR site_id = ANY($2)) FOR UPDATE",
    )
    .bind(id)
    .bind(who.scope.site_ids())
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(AlarmError::NotFound("alarm"))
}

fn check_comment(comment: Option<&str>) -> Result<(), AlarmError> {
    if comment.is_some_and(|c| c.chars().count() > 2000) {
        return Err(AlarmError::Invalid(
            "a comment is at most 2000 characters".into(),
        ));
    }
    Ok(())
}

pub async fn acknowledge(
    pool: &PgPool,
    who: &Principal,
    id: i64,
    comment: Option<&str>,
) -> Result<(), AlarmError> {
    may_handle(who)?;
    check_comment(comment)?;
    let mut tx = pool.begin().await?;
    let (acked, _) = lock_alarm(&mut tx, who, id).await?;
    if acked.is_some() {
        return Err(AlarmError::Conflict(
            "the alarm is already acknowledged".into(),
        ));
    }
    sqlx::query(
        "UPDATE alarms SET acked_at = now(), acked_by = $2, acked_email = $3, ack_comment = $4,
             updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(who.user_id)
    .bind(&who.email)
    .bind(comment)
    .execute(&mut *tx)
    .await?;
    event(&mut tx, id, "acknowledged", Some(&who.email), comment, None).await?;
    tx.commit().await?;
    tracing::info!(alarm = id, user = %who.email, "alarm acknowledged");
    Ok(())
}

/// Silences the alarm's notifications (clear, escalation) until `until`.
pub async fn shelve(
    pool: &PgPool,
    who: &Principal,
    id: i64,
    until: DateTime<Utc>,
    comment: Option<&str>,
) -> Result<(), AlarmError> {
    may_handle(who)?;
    check_comment(comment)?;
    let now = Utc::now();
    if until <= now || until > now + Duration::days(30) {
        return Err(AlarmError::Invalid(
            "shelve until a time within the next 30 days".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    lock_alarm(&mut tx, who, id).await?;
    sqlx::query(
        "UPDATE alarms SET shelved_until = $2, shelved_email = $3, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(until)
    .bind(&who.email)
    .execute(&mut *tx)
    .await?;
    let note = format!(
        "until {}{}",
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        comment.map(|c| format!(": {c}")).unwrap_or_default()
    );
    event(&mut tx, id, "shelved", Some(&who.email), Some(&note), None).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn unshelve(pool: &PgPool, who: &Principal, id: i64) -> Result<(), AlarmError> {
    may_handle(who)?;
    let mut tx = pool.begin().await?;
    let (_, shelved) = lock_alarm(&mut tx, who, id).await?;
    if shelved.is_none_or(|s| s <= Utc::now()) {
        return Err(AlarmError::Conflict("the alarm is not shelved".into()));
    }
    sqlx::query("UPDATE alarms SET shelved_until = NULL, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    event(&mut tx, id, "unshelved", Some(&who.email), None, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Escalates unacknowledged, unshelved alarms (active, or cleared but not acknowledged: nobody
/// has seen them yet) whose rule asks for it and whose delay has passed: one `escalated` event
/// and e-mails to the second list. Returns how many.
pub async fn escalate_due(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<(i64, sqlx::types::Json<Actions>, Option<f64>)> = sqlx::query_as(
        "SELECT a.id, r.actions, a.raised_value FROM alarms a JOIN alarm_rules r ON r.id = a.rule_id
         WHERE a.acked_at IS NULL AND a.escalated_at IS NULL
           AND COALESCE(a.shelved_until <= now(), true)
           AND (r.actions->>'escalate_after_min') IS NOT NULL
           AND a.created_at + make_interval(mins => (r.actions->>'escalate_after_min')::int) <= now()
         ORDER BY a.id LIMIT 100 FOR UPDATE OF a SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, actions, value) in &due {
        sqlx::query("UPDATE alarms SET escalated_at = now(), updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let ev = event(&mut tx, *id, "escalated", None, None, *value).await?;
        let only_mail = Actions {
            webhook_url: None,
            mqtt_topic: None,
            ..actions.0.clone()
        };
        enqueue_notifications(
            &mut tx,
            *id,
            ev,
            "escalated",
            &actions.0.escalate_to,
            &only_mail,
            Utc::now(),
            value.unwrap_or(f64::NAN),
        )
        .await?;
        tracing::info!(alarm = id, "alarm escalated");
    }
    tx.commit().await?;
    Ok(due.len())
}

/// Records that an action of an alarm failed for good (kept in its history).
pub async fn action_failed(pool: &PgPool, alarm: i64, what: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    event(&mut tx, alarm, "action_failed", None, Some(what), None).await?;
    tx.commit().await
}
