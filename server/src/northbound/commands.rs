//! A Home Assistant switch command, through the relay command ledger like any operator's: the
//! ledger's rules (four-eyes for switching a critical relay off, anti-chatter, a command in
//! flight) apply unchanged, and the switch keeps showing the relay's reported state.
//!
//! The actor is a dedicated, disabled account (`northbound@headend.invalid`, role operator,
//! no usable password) scoped to the one site, so the ledger records who asked, a second
//! (human) operator can approve, and Home Assistant can never approve its own request.

use sqlx::PgPool;

use crate::auth::{Principal, Role, Scope};
use crate::relays::ledger::{self, Action, CommandError, Created, NewCommand};
use crate::relays::Timing;

pub const ACTOR_EMAIL: &str = "northbound@headend.invalid";

/// What happened to one command message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new command in the ledger (queued, or awaiting a second operator's approval).
    Created(i64),
    /// Not a command (unknown payload, unknown relay, a retained message).
    Ignored(String),
    /// Refused by the ledger's rules.
    Refused(String),
}

/// `ON` / `OFF` (as Home Assistant's switch sends them), nothing else.
pub fn parse_action(payload: &[u8]) -> Option<Action> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if text.eq_ignore_ascii_case("on") {
        Some(Action::On)
    } else if text.eq_ignore_ascii_case("off") {
        Some(Action::Off)
    } else {
        None
    }
}

/// The actor's user id, created (disabled, no usable password) on first use.
async fn actor(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (email, password_hash, role, disabled)
         VALUES ($1, '!northbound: no password login', 'operator', true)
         ON CONFLICT ((lower(email))) DO NOTHING",
    )
    .bind(ACTOR_EMAIL)
    .execute(pool)
    .await?;
    sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1)")
        .bind(ACTOR_EMAIL)
        .fetch_one(pool)
        .await
}

/// Asks the ledger to switch `relay` of `site` as `broker`'s Home Assistant asked.
pub async fn request(
    pool: &PgPool,
    timing: &Timing,
    site: i64,
    broker: &str,
    relay: i64,
    action: Action,
) -> Result<Outcome, sqlx::Error> {
    let who = Principal {
        user_id: actor(pool).await?,
        email: format!("Home Assistant (northbound broker {broker})"),
        role: Role::Operator,
        scope: Scope::Sites(vec![site]),
    };
    let input = NewCommand {
        action,
        idempotency_key: None,
        expires_at: None,
        expires_in_s: None,
        reason: Some("Home Assistant switch over MQTT".into()),
    };
    match ledger::create(
        pool,
        timing,
        &who,
        Some(format!("mqtt:{broker}")),
        relay,
        input,
    )
    .await
    {
        Ok(Created::New(id) | Created::Existing(id)) => Ok(Outcome::Created(id)),
        Err(CommandError::Db(e)) => Err(e),
        Err(CommandError::NotFound(what)) => Ok(Outcome::Ignored(format!("{what} not found"))),
        Err(e) => Ok(Outcome::Refused(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_on_and_off() {
        assert_eq!(parse_action(b"ON"), Some(Action::On));
        assert_eq!(parse_action(b" off\n"), Some(Action::Off));
        for bad in [&b"TOGGLE"[..], b"", b"1", b"\xff"] {
            assert_eq!(parse_action(bad), None);
        }
    }
}
