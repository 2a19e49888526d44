//! The command ledger's rules (who may command, four-eyes, anti-chatter, idempotency,
//! supersession) and, in [`read`], its read side.

mod read;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use super::Timing;
use crate::auth::{Principal, Role, Scope};
pub use read::{get_command, get_relay, history, list_relays, CommandView, RelayView, Transition};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// Refused by a safety rule (anti-chatter, a command in flight, four-eyes).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    On,
    Off,
    Toggle,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Toggle => "toggle",
        }
    }
}

/// Where a command is in its life. Stored as the same words in `relay_commands.status` (and
/// in each `relay_command_transitions` row) and written so in JSON.
///
/// `awaiting_approval` → `queued` → `sent` → `confirmed` | `failed` | `expired`; a command
/// not yet sent may also be `cancelled` (or superseded, which cancels it) or `expired`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case", no_pg_array)]
pub enum Status {
    /// A critical relay switched off: waits for a second operator.
    AwaitingApproval,
    /// Waits for its gateway to be online.
    Queued,
    /// Sent; waits for the relay to report the target state.
    Sent,
    Confirmed,
    Failed,
    Expired,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Not sent yet: it can still be cancelled (or superseded).
    pub fn is_unsent(self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::Queued)
    }

    pub fn awaits_approval(self) -> bool {
        self == Self::AwaitingApproval
    }

    /// Settled: nothing will happen to it any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Confirmed | Self::Failed | Self::Expired | Self::Cancelled
        )
    }

    /// What the status means, in words (for the pages).
    pub fn describe(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "waiting for a second operator to approve",
            Self::Queued => "waiting to be sent to the gateway",
            Self::Sent => "sent; waiting for the relay to report its new state",
            Self::Confirmed => "the relay reported the new state",
            Self::Failed => "the relay did not switch",
            Self::Expired => "not sent in time; nothing was switched",
            Self::Cancelled => "cancelled before it was sent",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommand {
    pub action: Action,
    /// A retried request with the same key (for the same relay) returns the first command;
    /// may also come as the `Idempotency-Key` header.
    #[schema(max_length = 200)]
    pub idempotency_key: Option<String>,
    /// Not delivered and confirmed by then: expired. Default: now +
    /// `commands.default_expiry_secs` (300 s).
    pub expires_at: Option<DateTime<Utc>>,
    /// Alternatively, seconds from now.
    #[schema(minimum = 1)]
    pub expires_in_s: Option<u32>,
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

/// Relay settings; absent fields stay unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub critical: Option<bool>,
    #[schema(minimum = 1)]
    pub rated_operations: Option<i32>,
    /// Anti-chatter: the shortest time between two switchings.
    #[schema(minimum = 0, maximum = 86400)]
    pub min_switch_interval_s: Option<i32>,
    #[serde(default)]
    pub name: Option<String>,
}

pub async fn update_relay(pool: &PgPool, id: i64, s: &RelaySettings) -> Result<(), CommandError> {
    if s.rated_operations.is_some_and(|r| r <= 0) {
        return Err(CommandError::Invalid(
            "rated_operations must be positive".into(),
        ));
    }
    if s.min_switch_interval_s
        .is_some_and(|m| !(0..=86_400).contains(&m))
    {
        return Err(CommandError::Invalid(
            "min_switch_interval_s is 0 to 86400 seconds".into(),
        ));
    }
    if s.name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        return Err(CommandError::Invalid(
            "a relay name is at most 200 characters".into(),
        ));
    }
    let done = sqlx::query(
        "UPDATE devices SET critical = COALESCE($2, critical),
                rated_operations = COALESCE($3, rated_operations),
                min_switch_interval_s = COALESCE($4, min_switch_interval_s),
                name = COALESCE($5, name), updated_at = now()
         WHERE id = $1 AND kind = 'relay'",
    )
    .bind(id)
    .bind(s.critical)
    .bind(s.rated_operations)
    .bind(s.min_switch_interval_s)
    .bind(&s.name)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(CommandError::NotFound("relay"));
    }
    Ok(())
}

/// Records a transition; the caller has already updated the command's status.
pub(crate) async fn transition(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    status: Status,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_command_transitions (command_id, status, detail) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(status)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn may_operate(p: &Principal) -> Result<(), CommandError> {
    match p.role {
        Role::Admin | Role::Operator => Ok(()),
        Role::Viewer => Err(CommandError::Forbidden(
            "only operators and admins switch relays",
        )),
    }
}

/// What `create` did: a new command, or the one an earlier request with the same key made.
pub enum Created {
    New(i64),
    Existing(i64),
}

/// Creates a command after the safety checks; returns its id.
pub async fn create(
    pool: &PgPool,
    timing: &Timing,
    who: &Principal,
    from: Option<String>,
    relay: i64,
    input: NewCommand,
) -> Result<Created, CommandError> {
    may_operate(who)?;
    if let Some(key) = &input.idempotency_key {
        if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
            return Err(CommandError::Invalid(
                "an idempotency key is 1 to 200 printable characters".into(),
            ));
        }
    }
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 1000)
    {
        return Err(CommandError::Invalid(
            "a reason is at most 1000 characters".into(),
        ));
    }
    let now = Utc::now();
    let expires_at = match (input.expires_at, input.expires_in_s) {
        (Some(_), Some(_)) => {
            return Err(CommandError::Invalid(
                "give expires_at or expires_in_s, not both".into(),
            ))
        }
        (Some(at), None) => at,
        (None, Some(s)) => now + Duration::seconds(i64::from(s)),
        (None, None) => {
            now + Duration::from_std(timing.default_expiry).unwrap_or(Duration::minutes(5))
        }
    };
    if expires_at <= now {
        return Err(CommandError::Invalid(
            "the command would expire before it is sent".into(),
        ));
    }
    if expires_at > now + Duration::days(7) {
        return Err(CommandError::Invalid(
            "a command expires within 7 days".into(),
        ));
    }

    let mut tx = pool.begin().await?;
    // The relay row serialises commands for one relay.
    let relay_row: Option<(bool, i32, Option<i64>)> = sqlx::query_as(
        "SELECT d.critical, d.min_switch_interval_s, g.site_id FROM devices d
         JOIN gateways g ON g.id = d.gateway_id
         WHERE d.id = $1 AND d.kind = 'relay' AND ($2::int8[] IS NULL OR g.site_id = ANY($2))
         FOR UPDATE OF d",
    )
    .bind(relay)
    .bind(who.scope.site_ids())
    .fetch_optional(&mut *tx)
    .await?;
    let (critical, min_interval, _site) = relay_row.ok_or(CommandError::NotFound("relay"))?;

    if let Some(key) = &input.idempotency_key {
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM relay_commands WHERE device_id = $1 AND idempotency_key = $2",
        )
        .bind(relay)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            return Ok(Created::Existing(id));
        }
    }

    let in_flight: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM relay_commands WHERE device_id = $1 AND status = 'sent' LIMIT 1",
    )
    .bind(relay)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = in_flight {
        return Err(CommandError::Refused(format!(
            "command {id} is in flight on this relay; wait until it is confirmed, failed or expired"
        )));
    }
    let last_sent: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(sent_at) FROM relay_commands WHERE device_id = $1 AND sent_at IS NOT NULL",
    )
    .bind(relay)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(last) = last_sent {
        let since = (now - last).num_milliseconds() as f64 / 1000.0;
        if since < f64::from(min_interval) {
            return Err(CommandError::Refused(format!(
                "the relay was switched {since:.0} s ago; its minimum interval between switchings is {min_interval} s (anti-chatter)"
            )));
        }
    }

    let needs_approval = critical && matches!(input.action, Action::Off | Action::Toggle);
    let status = if needs_approval {
        Status::AwaitingApproval
    } else {
        Status::Queued
    };
    let target: Option<i16> = match input.action {
        Action::On => Some(1),
        Action::Off => Some(0),
        Action::Toggle => None,
    };
    let approval_deadline = needs_approval.then(|| {
        now + Duration::from_std(timing.approval_timeout).unwrap_or(Duration::minutes(10))
    });
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO relay_commands (device_id, action, target, status, idempotency_key,
             requested_by, requested_email, requested_from, reason, expires_at, approval_deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(relay)
    .bind(input.action.as_str())
    .bind(target)
    .bind(status)
    .bind(&input.idempotency_key)
    .bind(who.user_id)
    .bind(&who.email)
    .bind(&from)
    .bind(&input.reason)
    .bind(expires_at)
    .bind(approval_deadline)
    .fetch_one(&mut *tx)
    .await?;
    transition(
        &mut tx,
        id,
        status,
        needs_approval.then_some("critical relay: a second operator must approve switching it off"),
    )
    .await?;

    // A newer command supersedes older ones that have not been sent.
    let superseded: Vec<i64> = sqlx::query_scalar(
        "UPDATE relay_commands SET status = 'cancelled', finished_at = now(), updated_at = now(),
                detail = $3
         WHERE device_id = $1 AND id <> $2 AND status IN ('awaiting_approval', 'queued')
         RETURNING id",
    )
    .bind(relay)
    .bind(id)
    .bind(format!("superseded by command {id}"))
    .fetch_all(&mut *tx)
    .await?;
    for old in superseded {
        transition(
            &mut tx,
            old,
            Status::Cancelled,
            Some(&format!("superseded by command {id}")),
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(command = id, relay, action = input.action.as_str(), user = %who.email, %status, "relay command");
    Ok(Created::New(id))
}

/// The command's relay, if visible to `scope`.
async fn command_relay(
    tx: &mut Transaction<'_, Postgres>,
    scope: &Scope,
    id: i64,
) -> Result<(Status, Option<i64>, Option<DateTime<Utc>>), CommandError> {
    let row: Option<(Status, Option<i64>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT c.status, c.requested_by, c.approval_deadline FROM relay_commands c
         JOIN devices d ON d.id = c.device_id JOIN gateways g ON g.id = d.gateway_id
         WHERE c.id = $1 AND ($2::int8[] IS NULL OR g.site_id = ANY($2)) FOR UPDATE OF c",
    )
    .bind(id)
    .bind(scope.site_ids())
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(CommandError::NotFound("command"))
}

/// Cancels a command that has not been sent yet.
pub async fn cancel(pool: &PgPool, who: &Principal, id: i64) -> Result<(), CommandError> {
    may_operate(who)?;
    let mut tx = pool.begin().await?;
    let (status, ..) = command_relay(&mut tx, &who.scope, id).await?;
    if !status.is_unsent() {
        return Err(CommandError::Refused(format!(
            "command {id} is {status}; only a command not yet sent can be cancelled"
        )));
    }
    let detail = format!("cancelled by {}", who.email);
    sqlx::query(
        "UPDATE relay_commands SET status = 'cancelled', finished_at = now(), updated_at = now(), detail = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(&detail)
    .execute(&mut *tx)
    .await?;
    transition(&mut tx, id, Status::Cancelled, Some(&detail)).await?;
    tx.commit().await?;
    Ok(())
}

/// A second operator approves switching a critical relay off.
pub async fn approve(pool: &PgPool, who: &Principal, id: i64) -> Result<(), CommandError> {
    may_operate(who)?;
    let mut tx = pool.begin().await?;
    let (status, requested_by, deadline) = command_relay(&mut tx, &who.scope, id).await?;
    if !status.awaits_approval() {
        return Err(CommandError::Refused(format!(
            "command {id} is {status}, not awaiting approval"
        )));
    }
    if requested_by == Some(who.user_id) {
        return Err(CommandError::Refused(
            "four-eyes: the approval must come from another operator than the requester".into(),
        ));
    }
    if deadline.is_some_and(|d| d < Utc::now()) {
        return Err(CommandError::Refused(format!(
            "command {id}'s approval time has passed"
        )));
    }
    let detail = format!("approved by {}", who.email);
    sqlx::query(
        "UPDATE relay_commands SET status = 'queued', approved_by = $2, approved_email = $3,
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(who.user_id)
    .bind(&who.email)
    .execute(&mut *tx)
    .await?;
    transition(&mut tx, id, Status::Queued, Some(&detail)).await?;
    tx.commit().await?;
    Ok(())
}
