//! Ingest: gateway traffic from the MQTT front door (or an external broker) to PostgreSQL.
//!
//! ```text
//! gate / external client ──append──▶ journal (fsynced, group commit) ──batches──▶ writers ──▶ PostgreSQL
//!        ▲ broker PUBACK only after the append is durable          ack ◀── commit ──┘
//! ```
//!
//! The journal is the only hand-off: live tailing, catch-up after a database outage and replay
//! after a crash are the same code path. Writers are idempotent, so a replay changes nothing.

pub mod clock;
pub mod drain;
pub mod normalize;
pub mod normalize_polled;
pub mod normalize_xml;
pub mod receipts;
pub mod record;
pub mod rejects;
mod turn;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use headend_journal::{Appender, Journal, Reader};
use sqlx::PgPool;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::fleet::gateways;
use crate::infra::backoff::Backoff;
use crate::infra::metrics::Metrics;
use normalize::{Directory, Normalizer, Rows};
use record::IngestRecord;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest journal: {0}")]
    Journal(#[from] headend_journal::JournalError),
    #[error("loading gateways for ingest: {0}")]
    Directory(#[source] sqlx::Error),
}

/// The write side handed to the MQTT adapters.
#[derive(Clone)]
pub struct IngestSink {
    appender: Appender,
    metrics: Arc<Metrics>,
}

impl IngestSink {
    /// Resolves once the record is durable in the journal.
    pub async fn append(&self, record: &IngestRecord) -> Result<(), headend_journal::JournalError> {
        let result = self.appender.append(record.encode()).await;
        match &result {
            Ok(_) => self.metrics.journal_appended.inc(),
            Err(_) => self.metrics.journal_append_errors.inc(),
        }
        result.map(|_| ())
    }
}

pub struct IngestSettings {
    pub writers: usize,
    pub batch_max_messages: usize,
    /// See `ingest.batch_linger_ms`.
    pub batch_linger: Duration,
    pub clock_tolerance: chrono::Duration,
}

pub struct Ingest {
    journal: Arc<Journal>,
    directory: Arc<RwLock<DirectoryState>>,
    pool: PgPool,
    metrics: Arc<Metrics>,
    settings: IngestSettings,
    cache: Arc<writer::IdCache>,
    receipts: receipts::Receipts,
    commands: Option<crate::mqtt::CommandSender>,
    gateway_writes: GatewayWrites,
    energy_wake: Arc<tokio::sync::Notify>,
    commands_wake: Arc<tokio::sync::Notify>,
    /// The alarm evaluator, handed committed measurements (attached once at start).
    alarm_feed: std::sync::OnceLock<crate::alarms::engine::AlarmFeed>,
    /// `energy.backlog_horizon_days` (see [`Ingest::with_energy_limits`]).
    backlog_horizon: chrono::Duration,
    /// Whose sessions the journal's connects and disconnects are (see [`Ingest::with_instance`]).
    instance: Option<crate::infra::cluster::InstanceId>,
    /// Commits in journal order (see [`turn`]).
    order: turn::CommitOrder,
}

/// How often `last_seen_at` and the clock skew of a gateway are written at most, when nothing
/// else about it changed. Every message would otherwise update its gateway's row: a hot row
/// that concurrent writers queue on, and a dead tuple per batch.
const GATEWAY_TOUCH_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// What was last written of each gateway's liveness, to skip updates that change nothing
/// worth a write.
#[derive(Default)]
struct GatewayWrites(std::sync::Mutex<HashMap<i64, (chrono::DateTime<chrono::Utc>, Option<f64>)>>);

impl GatewayWrites {
    fn skip_unchanged(&self, updates: &mut HashMap<i64, normalize::GatewayUpdate>) {
        let written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        updates.retain(|id, u| {
            if u.hello.is_some() || u.online.is_some() || u.clock_faults > 0 {
                return true;
            }
            let Some((seen, skew)) = written.get(id) else {
                return true;
            };
            let stale = u
                .last_seen_at
                .is_some_and(|at| at - *seen >= GATEWAY_TOUCH_INTERVAL);
            let skew_moved = match (u.skew, skew) {
                (Some((_, new)), Some(old)) => (new - old).abs() >= 1.0,
                (Some(_), None) => true,
                (None, _) => false,
            };
            stale || skew_moved
        });
    }

    fn written(&self, updates: &HashMap<i64, normalize::GatewayUpdate>) {
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (id, u) in updates {
            if let Some(seen) = u.last_seen_at {
                let skew = u
                    .skew
                    .map(|(_, s)| s)
                    .or_else(|| written.get(id).and_then(|w| w.1));
                written.insert(*id, (seen, skew));
            }
        }
    }
}

struct DirectoryState {
    directory: Arc<Directory>,
    /// When a record naming an unknown gateway last caused a reload.
    miss_reload_at: Option<Instant>,
}

/// A reload because of an unknown gateway happens at most this often, so a flood of messages
/// for unregistered topics cannot turn into a flood of queries.
const DIRECTORY_RELOAD_MIN: Duration = Duration::from_millis(500);

impl Ingest {
    pub async fn new(
        journal: Journal,
        pool: PgPool,
        metrics: Arc<Metrics>,
        settings: IngestSettings,
        commands: Option<crate::mqtt::CommandSender>,
    ) -> Result<Self, IngestError> {
        let directory = gateways::load_directory(&pool)
            .await
            .map_err(IngestError::Directory)?;
        let journal = Arc::new(journal);
        Ok(Self {
            order: turn::CommitOrder::new(journal.clone(), turn::STUCK_AFTER),
            journal,
            directory: Arc::new(RwLock::new(DirectoryState {
                directory: Arc::new(directory),
                miss_reload_at: None,
            })),
            pool,
            metrics,
            settings,
            cache: Arc::default(),
            receipts: receipts::Receipts::default(),
            commands,
            gateway_writes: GatewayWrites::default(),
            energy_wake: Arc::default(),
            commands_wake: Arc::default(),
            alarm_feed: std::sync::OnceLock::new(),
            backlog_horizon: chrono::Duration::days(i64::from(
                normalize::DEFAULT_BACKLOG_HORIZON_DAYS,
            )),
            instance: None,
        })
    }

    /// The instance whose journal this is: its connects make it the owner of the gateway's
    /// session (`gateways.session_instance`) and its disconnects count only while it is. `None`
    /// (the default: a drained journal whose instance is unknown) changes only unowned rows.
    #[must_use]
    pub fn with_instance(mut self, instance: Option<crate::infra::cluster::InstanceId>) -> Self {
        self.instance = instance;
        self
    }

    /// Applies the `[energy]` limits that ingest enforces: counter readings dated more than
    /// `backlog_horizon_days` before their receive time are kept flagged, out of the energy
    /// accounting, with a partial reject. Without this call the default (400 days) applies.
    #[must_use]
    pub fn with_energy_limits(mut self, energy: &crate::config::EnergyConfig) -> Self {
        self.backlog_horizon = energy.backlog_horizon();
        self
    }

    pub fn sink(&self) -> IngestSink {
        IngestSink {
            appender: self.journal.appender(),
            metrics: self.metrics.clone(),
        }
    }

    /// Notified after a batch committed new counter readings (the profile worker waits on it).
    pub fn energy_wake(&self) -> Arc<tokio::sync::Notify> {
        self.energy_wake.clone()
    }

    /// Notified after a batch committed relay states or gateway events (the relay command
    /// dispatcher waits on it).
    pub fn commands_wake(&self) -> Arc<tokio::sync::Notify> {
        self.commands_wake.clone()
    }

    /// Hands every committed batch's measurements to the alarm evaluator from now on.
    pub fn attach_alarms(&self, feed: crate::alarms::engine::AlarmFeed) {
        let _ = self.alarm_feed.set(feed);
    }

    pub fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    /// Runs `settings.writers` writers until `shutdown`; returns when all have stopped.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), IngestError> {
        let reader = self.journal.reader();
        let mut writers = tokio::task::JoinSet::new();
        for n in 0..self.settings.writers {
            let this = self.clone();
            let reader = reader.clone();
            let shutdown = shutdown.clone();
            writers.spawn(async move { this.writer(n, reader, shutdown).await });
        }
        let mut result = Ok(());
        while let Some(joined) = writers.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shutdown.cancel();
                    result = Err(e);
                }
                // Aborted with its runtime (a test app dropped without a clean stop): not a
                // fault of the writer, and nothing acknowledged is lost (the journal keeps it).
                Err(e) if e.is_cancelled() => {
                    tracing::debug!("ingest writer aborted with its runtime");
                    shutdown.cancel();
                }
                Err(e) => {
                    tracing::error!(error = %e, "ingest writer panicked");
                    shutdown.cancel();
                }
            }
        }
        result
    }

    #[tracing::instrument(name = "ingest_writer", skip_all, fields(writer = n))]
    async fn writer(
        &self,
        n: usize,
        reader: Reader,
        shutdown: CancellationToken,
    ) -> Result<(), IngestError> {
        let epoch = self.journal.epoch() as i64;
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                batch = reader.next_batch_within(
                    self.settings.batch_max_messages,
                    16 * 1024 * 1024,
                    self.settings.batch_linger,
                ) => batch?,
            };
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            let confirmations = loop {
                // Normalised again on every attempt: a gateway registered while the database
                // was down is known once it is back.
                let mut rows = self.normalize(&batch).await;
                self.gateway_writes.skip_unchanged(&mut rows.gateways);
                let started = Instant::now();
                // Commits (and so the alarm feed and the profile worker's queue) follow the
                // journal's order: a batch commits once every batch before it is acknowledged.
                let before = batch.first_seq - 1;
                let turn = self.order.turn(before);
                match writer::write(&self.pool, &self.cache, epoch, &rows, turn).await {
                    Ok(None) => {
                        self.metrics.ingest_turn_yields.inc();
                        tracing::debug!(
                            first_seq = batch.first_seq,
                            "ingest batch gave way to an earlier one; written again in turn"
                        );
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = self.order.turn(before) => {}
                        }
                    }
                    Ok(Some(written)) => {
                        self.metrics
                            .record_written(&rows, &written, started.elapsed());
                        if written.counter_readings > 0 {
                            self.energy_wake.notify_one();
                        }
                        if written.relay_states > 0 || written.events > 0 {
                            self.commands_wake.notify_one();
                        }
                        // After the commit and before the journal ack: a crash in between
                        // replays the batch, and the evaluator skips samples it has seen.
                        if let Some(feed) = self.alarm_feed.get() {
                            if written.refused_measurements.is_empty() {
                                feed.measurements(&rows.measurements).await;
                            } else {
                                // A conflicting replay was not stored: the evaluator sees
                                // what is in the database, not what was refused.
                                let stored: Vec<_> = rows
                                    .measurements
                                    .iter()
                                    .filter(|m| {
                                        !written.refused_measurements.iter().any(|(seq, d, ts)| {
                                            *seq == m.seq && *d == m.device && *ts == m.ts
                                        })
                                    })
                                    .cloned()
                                    .collect();
                                feed.measurements(&stored).await;
                            }
                        }
                        self.gateway_writes.written(&rows.gateways);
                        break rows.receipts;
                    }
                    Err(e) => {
                        self.metrics.db_errors.inc();
                        self.cache.clear();
                        let wait = backoff.next_delay();
                        tracing::warn!(
                            error = %e,
                            first_seq = batch.first_seq,
                            last_seq = batch.last_seq,
                            retry_in_ms = wait.as_millis() as u64,
                            "ingest batch not committed; kept in the journal and retried"
                        );
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            };
            self.journal.ack(batch.first_seq..=batch.last_seq)?;
            self.confirm(batch.last_seq, confirmations).await;
        }
    }

    /// Sends receipts for what the journal checkpoint now covers.
    async fn confirm(&self, last_seq: u64, seqs: receipts::Seqs) {
        let Some(commands) = &self.commands else {
            return;
        };
        let checkpoint = self.journal.stats().checkpoint;
        let confirm = self.receipts.committed(last_seq, seqs, checkpoint);
        if confirm.is_empty() {
            return;
        }
        let directory = self.directory.read().await.directory.clone();
        for (gateway, seq) in confirm {
            if let Some(gw) = directory.by_id(gateway) {
                let ack = sg_wire::command::Command::Ack { seq }.to_json();
                commands.send(gw.layout.command_topic(), ack.into_bytes().into());
            }
        }
    }

    async fn normalize(&self, batch: &headend_journal::Batch) -> Rows {
        let records: Vec<(i64, Result<IngestRecord, record::RecordError>)> = batch
            .records
            .iter()
            .map(|r| (r.seq as i64, IngestRecord::decode(r.payload.clone())))
            .collect();
        let directory = self.directory_for(&records).await;
        let normalizer = Normalizer {
            directory: &directory,
            clock_tolerance: self.settings.clock_tolerance,
            backlog_horizon: self.backlog_horizon,
        };
        let mut rows = Rows {
            session_instance: self.instance.as_ref().map(ToString::to_string),
            ..Rows::default()
        };
        for (seq, record) in records {
            match record {
                Ok(record) => normalizer.push(&mut rows, seq, record),
                // A record this build cannot read (corrupt or from a newer version): keep it
                // visible rather than dropping it silently.
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable journal record");
                    self.metrics.journal_unreadable.inc();
                }
            }
        }
        rows
    }

    /// The directory, reloaded first if a record names a gateway it does not know (a gateway
    /// registered since the last load).
    async fn directory_for(
        &self,
        records: &[(i64, Result<IngestRecord, record::RecordError>)],
    ) -> Arc<Directory> {
        let state = self.directory.read().await;
        let unknown = records.iter().any(|(_, r)| match r {
            Ok(r) if !r.client.is_empty() => state.directory.by_serial(&r.client).is_none(),
            Ok(r) if r.kind == record::RecordKind::Publish => {
                state.directory.by_topic(&r.topic).is_none()
            }
            _ => false,
        });
        let recently = state
            .miss_reload_at
            .is_some_and(|at| at.elapsed() < DIRECTORY_RELOAD_MIN);
        if !unknown || recently {
            return state.directory.clone();
        }
        drop(state);
        self.directory.write().await.miss_reload_at = Some(Instant::now());
        self.reload_directory().await
    }

    pub async fn reload_directory(&self) -> Arc<Directory> {
        let mut state = self.directory.write().await;
        match gateways::load_directory(&self.pool).await {
            Ok(directory) => state.directory = Arc::new(directory),
            Err(e) => tracing::warn!(error = %e, "could not reload the gateway directory"),
        }
        state.directory.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normalize::GatewayUpdate;

    fn seen(secs: i64) -> GatewayUpdate {
        GatewayUpdate {
            last_seen_at: chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0),
            skew: Some((chrono::DateTime::UNIX_EPOCH, 0.5)),
            ..GatewayUpdate::default()
        }
    }

    #[test]
    fn liveness_is_written_when_it_moved_enough_and_changes_always() {
        let writes = GatewayWrites::default();
        let mut batch = HashMap::from([(1, seen(0))]);
        writes.skip_unchanged(&mut batch);
        assert_eq!(batch.len(), 1, "never written: written");
        writes.written(&batch);

        let mut batch = HashMap::from([(1, seen(5))]);
        writes.skip_unchanged(&mut batch);
        assert!(batch.is_empty(), "5 s later, same skew: skipped");

        let mut batch = HashMap::from([(1, seen(31))]);
        writes.skip_unchanged(&mut batch);
        assert_eq!(batch.len(), 1, "30 s later: written");

        let mut moved = seen(6);
        moved.skew = Some((chrono::DateTime::UNIX_EPOCH, 3.0));
        let mut faulted = seen(6);
        faulted.clock_faults = 1;
        let mut online = seen(6);
        online.online = Some((chrono::DateTime::UNIX_EPOCH, false));
        let mut batch = HashMap::from([(1, moved), (2, faulted), (3, online)]);
        writes.skip_unchanged(&mut batch);
        assert_eq!(
            batch.len(),
            3,
            "skew moved, a clock fault, a session change: written"
        );
    }
}
