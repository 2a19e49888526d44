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
//!
//! Several instances run a dispatcher each, on one database. With the embedded broker a
//! gateway's session is on one instance (`gateways.session_instance`): only that instance sends
//! and asks. With an external broker any instance may publish, so each command is claimed
//! under its row lock (`FOR UPDATE SKIP LOCKED`, the status checked again under it) and every
//! transition is conditional on the status it leaves, so two dispatchers never send, expire or
//! settle a command twice. Converters' relays are switched only by the instance that runs the
//! converter's bus. A command that this instance cannot send wakes the others at once
//! (`NOTIFY headend_commands`); the one-second tick stays the fallback.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use sg_wire::command::{Command, RelayAction, RelayTarget};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ledger::{transition, Status};
use super::Timing;
use crate::infra::cluster::InstanceId;
use crate::mqtt::CommandSender;

const TICK: Duration = Duration::from_secs(1);

/// The channel on which a dispatcher wakes the others for a command it cannot send itself.
pub const CHANNEL: &str = "headend_commands";

pub struct Dispatcher {
    pool: PgPool,
    sender: CommandSender,
    timing: Timing,
    wake: Arc<Notify>,
    /// Relays behind Modbus converters are switched by their converter's bus.
    converters: Option<crate::modbus::ModbusHandle>,
    /// With the embedded broker, this instance: only the gateways whose session it holds are
    /// sent to. `None` with an external broker (any instance may publish).
    instance: Option<InstanceId>,
    /// The newest command id the other instances were woken for.
    notified: AtomicI64,
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
    session_instance: Option<String>,
}

impl Dispatcher {
    pub fn new(pool: PgPool, sender: CommandSender, timing: Timing, wake: Arc<Notify>) -> Self {
        Self {
            pool,
            sender,
            timing,
            wake,
            converters: None,
            instance: None,
            notified: AtomicI64::new(0),
        }
    }

    /// With the embedded broker: send only to the gateways whose session `instance` holds.
    /// `None` (an external broker holds the sessions): any instance sends, each command once.
    pub fn with_instance(mut self, instance: Option<InstanceId>) -> Self {
        self.instance = instance;
        self
    }

    /// Relays of converters (gateways of kind `converter`) go to their bus through `handle`.
    pub fn with_converters(mut self, handle: crate::modbus::ModbusHandle) -> Self {
        self.converters = Some(handle);
        self
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let mut listener = self.listen().await;
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "relay command dispatch failed; retried");
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.wake.notified() => {}
                () = notified(&mut listener) => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Listens on [`CHANNEL`]; without it (no connection) the tick alone wakes us.
    async fn listen(&self) -> Option<PgListener> {
        let listening = async {
            let mut listener = crate::infra::changes::listener(&self.pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for relay commands of other instances; the 1 s tick finds them");
                None
            }
        }
    }

    /// Whether this instance sends to a gateway: online, and (embedded broker) its session is
    /// ours. A converter's relay: whoever runs its bus (the handle refuses otherwise).
    fn ours(&self, online: bool, kind: &str, session: Option<&str>) -> bool {
        online
            && (kind == "converter"
                || self
                    .instance
                    .as_ref()
                    .is_none_or(|me| session == Some(me.as_str())))
    }

    /// One pass over the open commands.
    pub async fn tick(&self) -> Result<(), sqlx::Error> {
        self.expire().await?;
        let open: Vec<Open> = sqlx::query_as(
            "SELECT c.id, c.device_id, c.status, c.target, c.sent_at, c.confirm_deadline,
                    c.state_asked_at, d.port, d.slot, g.online,
                    g.topic_root || '/' || g.topic_sub AS command_topic,
                    g.id AS gateway_id, g.kind AS gateway_kind, g.session_instance
             FROM relay_commands c JOIN devices d ON d.id = c.device_id
             JOIN gateways g ON g.id = d.gateway_id
             WHERE c.status IN ('queued', 'sent') ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut elsewhere = None;
        for command in open {
            let ours = self.ours(
                command.online,
                &command.gateway_kind,
                command.session_instance.as_deref(),
            );
            let result = if command.status == Status::Sent {
                self.settle(&command, ours).await
            } else if ours {
                self.dispatch(&command).await
            } else {
                Ok(!command.online)
            };
            match result {
                Ok(true) => {}
                Ok(false) => elsewhere = Some(command.id),
                Err(e) => {
                    tracing::warn!(command = command.id, error = %e, "relay command step failed")
                }
            }
        }
        if let Some(newest) = elsewhere {
            self.wake_others(newest).await;
        }
        Ok(())
    }

    /// Wakes the other instances' dispatchers once per new command this one left queued for
    /// a gateway it does not reach (its session or converter is on another instance).
    async fn wake_others(&self, newest: i64) {
        if self.notified.fetch_max(newest, Ordering::Relaxed) >= newest {
            return;
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "cannot wake the other dispatchers; their tick finds the command");
        }
    }

    async fn expire(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Rows another dispatcher holds are skipped: it is expiring or sending them, and
        // a send re-checks the expiry under its lock.
        let expired: Vec<(i64, String)> = sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM relay_commands
                 WHERE (status = 'awaiting_approval' AND (approval_deadline < now() OR expires_at < now()))
                    OR (status = 'queued' AND expires_at < now())
                    OR (status = 'sent' AND expires_at < now() AND confirm_deadline < now())
                 ORDER BY id FOR UPDATE SKIP LOCKED)
             UPDATE relay_commands c SET status = 'expired', finished_at = now(), updated_at = now(),
                    detail = CASE c.status
                        WHEN 'awaiting_approval' THEN 'not approved in time'
                        WHEN 'queued' THEN 'not delivered before it expired (gateway offline)'
                        ELSE 'sent, but the relay reported no state in time' END
             FROM due WHERE c.id = due.id
             RETURNING c.id, c.detail",
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

    /// Asks the relay's state, once among all dispatchers: the ask is recorded only if
    /// nobody asked since the tick read the command, and undone if it could not be published.
    async fn ask_state(&self, command: &Open) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE relay_commands SET state_asked_at = clock_timestamp(), updated_at = now()
             WHERE id = $1 AND status = $2 AND state_asked_at IS NOT DISTINCT FROM $3",
        )
        .bind(command.id)
        .bind(command.status)
        .bind(command.state_asked_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed && self.publish(command, RelayAction::State) {
            tx.commit().await?;
        }
        Ok(())
    }

    /// A queued command of a gateway this instance reaches. `Ok(false)` when it was left
    /// queued for another instance (a converter whose bus runs elsewhere).
    async fn dispatch(&self, command: &Open) -> Result<bool, sqlx::Error> {
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
                        // Conditional: another dispatcher may have set it from the same state.
                        sqlx::query(
                            "UPDATE relay_commands SET target = $2, updated_at = now()
                             WHERE id = $1 AND status = 'queued' AND target IS NULL",
                        )
                        .bind(command.id)
                        .bind(1 - state)
                        .execute(&self.pool)
                        .await?;
                        1 - state
                    }
                    _ => {
                        if self.poll_due(command.state_asked_at) {
                            self.ask_state(command).await?;
                        }
                        return Ok(true);
                    }
                }
            }
        };
        let mut tx = self.pool.begin().await?;
        // Still queued with this target, not expired, its gateway still reached here? Locked,
        // or skipped when another dispatcher holds it (that one is sending it).
        let still: Option<(Status, bool, Option<String>)> = sqlx::query_as(
            "SELECT c.status, g.online AND c.expires_at >= now() AND c.target = $2,
                    g.session_instance
             FROM relay_commands c JOIN devices d ON d.id = c.device_id
             JOIN gateways g ON g.id = d.gateway_id
             WHERE c.id = $1 FOR UPDATE OF c SKIP LOCKED",
        )
        .bind(command.id)
        .bind(target)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((Status::Queued, true, session)) = still else {
            return Ok(true);
        };
        if !self.ours(true, &command.gateway_kind, session.as_deref()) {
            return Ok(true);
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
            if command.gateway_kind == "converter" {
                // Its bus runs on another instance (or its queue is full): left queued.
                return Ok(false);
            }
            tracing::warn!(
                command = command.id,
                "command queue to the broker is full; retried next tick"
            );
            return Ok(true);
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
        Ok(true)
    }

    /// A sent command: confirm, fail, or ask again (only the instance that reaches the
    /// gateway asks: `ours`). Any dispatcher may settle: the transition is conditional.
    async fn settle(&self, command: &Open, ours: bool) -> Result<bool, sqlx::Error> {
        let (Some(sent_at), Some(target)) = (command.sent_at, command.target) else {
            return Ok(true);
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
            if ours && self.poll_due(command.state_asked_at) {
                self.ask_state(command).await?;
            }
            return Ok(true);
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
            tx.commit().await?;
            tracing::info!(command = command.id, %status, %detail, "relay command settled");
        }
        Ok(true)
    }
}

/// Resolves on the next notification on the listener; never without one. An error (the
/// connection lost and not yet back) waits a tick, so a database outage is no busy loop.
async fn notified(listener: &mut Option<PgListener>) {
    match listener {
        Some(listener) => {
            if let Err(e) = listener.recv().await {
                tracing::debug!(error = %e, "relay command listener lost its connection; retried");
                tokio::time::sleep(TICK).await;
            }
        }
        None => std::future::pending().await,
    }
}

fn on_off(state: i16) -> &'static str {
    match state {
        1 => "on",
        0 => "off",
        _ => "an unknown state",
    }
}
