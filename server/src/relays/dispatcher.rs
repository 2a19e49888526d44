//! Sends queued relay commands and settles them from the relay's reported state.
//!
//! Each tick (woken by new commands, by ingest when relay states or gateway sessions arrive,
//! and at least every second) it:
//! 1. expires what waited too long (approval, delivery, confirmation) — an expired command is
//!    never sent late;
//! 2. settles sent commands: a reported state equal to the target after sending confirms; the
//!    other state after the confirmation deadline fails; the state is asked again meanwhile;
//! 3. sends queued commands of online gateways: `bicom on|off` then `bicom state`; a toggle
//!    first asks the state and sends the opposite once it is reported.
//!
//! Every decision reads and writes the database in one transaction per command, so a restart
//! resumes exactly where it stopped.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sg_wire::command::{Command, RelayAction, RelayTarget};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ledger::{transition, Status};
use super::Timing;
use crate::mqtt::CommandSender;

const TICK: Duration = Duration::from_secs(1);

pub struct Dispatcher {
    pool: PgPool,
    sender: CommandSender,
    timing: Timing,
    wake: Arc<Notify>,
    /// Relays behind Modbus converters are switched by their converter's bus.
    converters: Option<crate::modbus::ModbusHandle>,
}

/// An open command with what it takes to act on it.
#[derive(Debug, sqlx::FromRow)]
struct Open {
    id: i64,
    device_id: i64,
    status: Status,
    target: Option<i16>,
    sent_at: Option<DateTime<Utc>>,
    confirm_deadline: Option<DateTime<Utc>>,
    state_asked_at: Option<DateTime<Utc>>,
    port: String,
    slot: i16,
    online: bool,
    command_topic: String,
    gateway_id: i64,
    gateway_kind: String,
}

impl Dispatcher {
    pub fn new(pool: PgPool, sender: CommandSender, timing: Timing, wake: Arc<Notify>) -> Self {
        Self {
            pool,
            sender,
            timing,
            wake,
            converters: None,
        }
    }

    /// Relays of converters (gateways of kind `converter`) go to their bus through `handle`.
    pub fn with_converters(mut self, handle: crate::modbus::ModbusHandle) -> Self {
        self.converters = Some(handle);
        self
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "relay command dispatch failed; retried");
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// One pass over the open commands.
    pub async fn tick(&self) -> Result<(), sqlx::Error> {
        self.expire().await?;
        let open: Vec<Open> = sqlx::query_as(
            "SELECT c.id, c.device_id, c.status, c.target, c.sent_at, c.confirm_deadline,
                    c.state_asked_at, d.port, d.slot, g.online,
                    g.topic_root || '/' || g.topic_sub AS command_topic,
                    g.id AS gateway_id, g.kind AS gateway_kind
             FROM relay_commands c JOIN devices d ON d.id = c.device_id
             JOIN gateways g ON g.id = d.gateway_id
             WHERE c.status IN ('queued', 'sent') ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        for command in open {
            let result = if command.status == Status::Sent {
                self.settle(&command).await
            } else if command.online {
                self.dispatch(&command).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::warn!(command = command.id, error = %e, "relay command step failed");
            }
        }
        Ok(())
    }

    async fn expire(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let expired: Vec<(i64, String)> = sqlx::query_as(
            "UPDATE relay_commands SET status = 'expired', finished_at = now(), updated_at = now(),
                    detail = CASE status
                        WHEN 'awaiting_approval' THEN 'not approved in time'
                        WHEN 'queued' THEN 'not delivered before it expired (gateway offline)'
                        ELSE 'sent, but the relay reported no state in time' END
             WHERE (status = 'awaiting_approval' AND (approval_deadline < now() OR expires_at < now()))
                OR (status = 'queued' AND expires_at < now())
                OR (status = 'sent' AND expires_at < now() AND confirm_deadline < now())
             RETURNING id, detail",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, detail) in &expired {
            transition(&mut tx, *id, Status::Expired, Some(detail)).await?;
            tracing::info!(command = id, %detail, "relay command expired");
        }
        tx.commit().await
    }

    /// The relay's newest reported state received after `after`.
    async fn state_since(
        &self,
        device: i64,
        after: DateTime<Utc>,
    ) -> Result<Option<i16>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT state FROM relay_states WHERE device_id = $1 AND received_at > $2
             ORDER BY received_at DESC, ts DESC LIMIT 1",
        )
        .bind(device)
        .bind(after)
        .fetch_optional(&self.pool)
        .await
    }

    fn publish(&self, command: &Open, action: RelayAction) -> bool {
        if command.gateway_kind == "converter" {
            // The bus writes the relay register, then reads the state back through ingest.
            return self
                .converters
                .as_ref()
                .is_some_and(|c| c.relay(command.gateway_id, command.slot, action));
        }
        let index = match command.port.as_str() {
            "ir" => 0,
            _ => u8::try_from(command.slot).unwrap_or(0),
        };
        let payload = Command::Bicom {
            target: RelayTarget::Index(index),
            action,
        }
        .to_json();
        self.sender
            .send(command.command_topic.clone(), payload.into_bytes().into())
    }

    fn poll_due(&self, asked: Option<DateTime<Utc>>) -> bool {
        let poll = chrono::Duration::from_std(self.timing.state_poll)
            .unwrap_or(chrono::Duration::seconds(5));
        asked.is_none_or(|a| Utc::now() - a >= poll)
    }

    async fn ask_state(&self, command: &Open) -> Result<(), sqlx::Error> {
        if self.publish(command, RelayAction::State) {
            sqlx::query("UPDATE relay_commands SET state_asked_at = clock_timestamp(), updated_at = now() WHERE id = $1")
                .bind(command.id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// A queued command of an online gateway.
    async fn dispatch(&self, command: &Open) -> Result<(), sqlx::Error> {
        let target = match command.target {
            Some(t) => t,
            None => {
                // Toggle: the target is the opposite of a state reported after we asked.
                let known = match command.state_asked_at {
                    Some(asked) => self.state_since(command.device_id, asked).await?,
                    None => None,
                };
                match known {
                    Some(state @ (0 | 1)) => {
                        let target = 1 - state;
                        sqlx::query("UPDATE relay_commands SET target = $2, updated_at = now() WHERE id = $1")
                            .bind(command.id)
                            .bind(target)
                            .execute(&self.pool)
                            .await?;
                        target
                    }
                    _ => {
                        if self.poll_due(command.state_asked_at) {
                            self.ask_state(command).await?;
                        }
                        return Ok(());
                    }
                }
            }
        };
        let mut tx = self.pool.begin().await?;
        // Still queued (not cancelled, expired or superseded since the tick began)?
        let still: Option<Status> =
            sqlx::query_scalar("SELECT status FROM relay_commands WHERE id = $1 FOR UPDATE")
                .bind(command.id)
                .fetch_optional(&mut *tx)
                .await?;
        if still != Some(Status::Queued) {
            return Ok(());
        }
        let before: Option<i16> = sqlx::query_scalar(
            "SELECT state FROM relay_states WHERE device_id = $1 ORDER BY ts DESC LIMIT 1",
        )
        .bind(command.device_id)
        .fetch_optional(&mut *tx)
        .await?;
        let action = if target == 1 {
            RelayAction::On
        } else {
            RelayAction::Off
        };
        // The switch, then the question whose answer confirms it.
        if !self.publish(command, action) {
            tracing::warn!(
                command = command.id,
                "command queue to the broker is full; retried next tick"
            );
            return Ok(());
        }
        self.publish(command, RelayAction::State);
        let confirm = chrono::Duration::from_std(self.timing.confirm_timeout)
            .unwrap_or(chrono::Duration::seconds(30));
        sqlx::query(
            "UPDATE relay_commands SET status = 'sent', sent_at = clock_timestamp(),
                    state_asked_at = clock_timestamp(), confirm_deadline = clock_timestamp() + $2,
                    state_before = $3, updated_at = now()
             WHERE id = $1",
        )
        .bind(command.id)
        .bind(confirm)
        .bind(before)
        .execute(&mut *tx)
        .await?;
        transition(
            &mut tx,
            command.id,
            Status::Sent,
            Some(if target == 1 { "bicom on" } else { "bicom off" }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            command = command.id,
            relay = command.device_id,
            target,
            "relay command sent"
        );
        Ok(())
    }

    /// A sent command: confirm, fail, or ask again.
    async fn settle(&self, command: &Open) -> Result<(), sqlx::Error> {
        let (Some(sent_at), Some(target)) = (command.sent_at, command.target) else {
            return Ok(());
        };
        let reported = self.state_since(command.device_id, sent_at).await?;
        let past_deadline = command.confirm_deadline.is_some_and(|d| Utc::now() > d);
        let outcome = match reported {
            Some(state) if state == target => Some((
                Status::Confirmed,
                format!("relay reported {}", on_off(state)),
            )),
            Some(state) if past_deadline => Some((
                Status::Failed,
                format!(
                    "relay still reports {} after the confirmation deadline",
                    on_off(state)
                ),
            )),
            _ => None,
        };
        let Some((status, detail)) = outcome else {
            if command.online && self.poll_due(command.state_asked_at) {
                self.ask_state(command).await?;
            }
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE relay_commands SET status = $2, finished_at = now(), updated_at = now(), detail = $3
             WHERE id = $1 AND status = 'sent'",
        )
        .bind(command.id)
        .bind(status)
        .bind(&detail)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            if status == Status::Confirmed {
                // A switching counts toward wear when the state really changed.
                sqlx::query(
                    "UPDATE devices d SET operations = operations + 1 FROM relay_commands c
                     WHERE c.id = $1 AND d.id = c.device_id AND c.state_before IS DISTINCT FROM c.target",
                )
                .bind(command.id)
                .execute(&mut *tx)
                .await?;
            }
            transition(&mut tx, command.id, status, Some(&detail)).await?;
        }
        tx.commit().await?;
        tracing::info!(command = command.id, %status, %detail, "relay command settled");
        Ok(())
    }
}

fn on_off(state: i16) -> &'static str {
    match state {
        1 => "on",
        0 => "off",
        _ => "an unknown state",
    }
}
