//! The profile worker: turns queued spans of new counter readings into 15-minute intervals,
//! daily rollups and site totals.
//!
//! Ingest appends a row to `energy_dirty` in the transaction that commits new readings. The
//! worker takes a batch of those rows, merges them per counter, recomputes only the readings
//! window around each span (the engine's results are local, see
//! [`headend_energy::engine::CONTEXT`]), rewrites the affected intervals, the local days they
//! fall in, and the site totals, and deletes the rows it took, all in one transaction. A crash
//! rolls everything back and the rows are taken again; every step is idempotent.
//!
//! `drain` takes the queue and runs a batch through its three steps, `intervals`, `rollups`
//! and `site`; `queue` is how admin changes queue work for it.
//!
//! # One bad counter does not stall the others
//!
//! A batch that fails with an error that is not about the database being away (a constraint
//! violation, a data error, a statement timeout, ...) is retried counter by counter, each in
//! its own transaction. A counter whose own recomputation still fails is *quarantined*: a row
//! in `energy_quarantine` (reason, since, attempts), one error log line, one increment of
//! `headend_profile_counters_quarantined_total`; its `energy_dirty` rows stay queued (merged
//! into one) but no longer take part in batches, so every other counter goes on. It is
//! released only by an admin (`POST /api/v1/energy/quarantine/{counter_id}/retry`), after
//! which its queued span is recomputed; failing again quarantines it again with one more
//! attempt. New readings of a quarantined counter are stored and queued as usual, and
//! accounted once it is released: a hostile counter cannot turn each of its messages into a
//! retry.
//!
//! Readings flagged [`BEYOND_HORIZON`](crate::ingest::clock::BEYOND_HORIZON) by ingest, and
//! readings dated before their device's `commissioned_at` (see [`queue_commissioning`]), are
//! never part of a window, and the engine interpolates across gaps of at most
//! `energy.max_interpolation_gap_hours` (see [`headend_energy::engine::compute_bounded`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use headend_energy::engine;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::infra::backoff::Backoff;
use crate::infra::cluster::{run_while_held, Leases};
use crate::infra::metrics::Metrics;

mod drain;
mod intervals;
mod pieces;
mod queue;
mod rollups;
mod site;

pub use pieces::{PieceLimits, DEFAULT_PIECE_DAYS, DEFAULT_PIECE_READINGS};
pub use queue::{queue_commissioning, queue_rollups};
pub(crate) use site::site_placements;

/// Counters taken per transaction: large enough to amortise round trips, small enough that a
/// transaction stays short.
const BATCH: i64 = 2_000;
/// Counters recomputed together (one round of queries).
const CHUNK: usize = 200;
/// Default of `energy.max_interpolation_gap_hours`: 31 days.
pub const DEFAULT_MAX_GAP_HOURS: u32 = 24 * 31;
/// The lease that makes an instance the one running the profile worker.
pub const LEASE: &str = "profiles:worker";
/// The worker looks for work at least this often even without a wake-up (rows queued by
/// another process, e.g. `headend` admin commands).
const POLL: Duration = Duration::from_secs(5);
/// After a step that emptied the queue, the worker lets new readings gather this long before
/// the next one. Why: while readings stream in, every ingest commit queues a little work, and a
/// step's cost is mostly per step (its transaction, each counter's context readings, the days
/// and site totals rewritten), so stepping after every commit cost PostgreSQL nearly a core at
/// 10 000 msg/s. A counter queued several times meanwhile is recomputed once. The first
/// readings after an idle spell are not delayed: the wake-up answers them at once.
const GATHER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("profile worker: {step}: {source}")]
    Db {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, WorkerError>;
}

impl WorkerError {
    /// Whether the error says the database is away or busy (retry the batch later), rather
    /// than something about the data of the counters in it (isolate them).
    pub fn is_transient(&self) -> bool {
        let Self::Db { source, .. } = self;
        match source {
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // Connection, transaction rollback (serialization, deadlock), resources,
                // operator intervention (but a statement timeout, 57014, is the counter's
                // doing), system and internal errors; and a read-only transaction (25006): a
                // demoted primary answering for a moment during a failover.
                code == "25006"
                    || (code != "57014"
                        && ["08", "40", "53", "57", "58", "XX"].contains(&&code[..2]))
            }),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        }
    }
}

impl<T> Step<T> for Result<T, sqlx::Error> {
    fn step(self, step: &'static str) -> Result<T, WorkerError> {
        self.map_err(|source| WorkerError::Db { step, source })
    }
}

pub struct ProfileWorker {
    pool: PgPool,
    params: engine::Params,
    /// Longest gap between readings the engine interpolates across.
    max_gap_ms: i64,
    /// How much of one counter's span is recomputed at once (memory bound, see `pieces`).
    pieces: PieceLimits,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    listener: Option<EnergyListener>,
}

/// What a committed step changed: the intervals of these counters and the site totals of these
/// sites, each over a span (UTC). Handed to a listener (the alarm evaluator) after the commit,
/// so rules on quarter-hours are evaluated as the data arrives.
#[derive(Debug, Clone, Default)]
pub struct EnergyChanged {
    pub counters: Vec<(i64, DateTime<Utc>, DateTime<Utc>)>,
    pub sites: Vec<(i64, DateTime<Utc>, DateTime<Utc>)>,
}

pub type EnergyListener = Arc<dyn Fn(EnergyChanged) + Send + Sync>;

/// What one step did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub counters: usize,
    pub intervals: usize,
    pub days: usize,
    /// Counters set aside in this step (see the module docs).
    pub quarantined: usize,
    /// Queue rows taken.
    pub taken: usize,
}

impl std::ops::AddAssign for Progress {
    fn add_assign(&mut self, other: Self) {
        self.counters += other.counters;
        self.intervals += other.intervals;
        self.days += other.days;
        self.quarantined += other.quarantined;
        self.taken += other.taken;
    }
}

impl ProfileWorker {
    pub fn new(
        pool: PgPool,
        params: engine::Params,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            params,
            max_gap_ms: i64::from(DEFAULT_MAX_GAP_HOURS) * 3_600_000,
            pieces: PieceLimits::default(),
            wake,
            metrics,
            listener: None,
        }
    }

    /// Applies `energy.max_interpolation_gap_hours`, `energy.worker_piece_readings` and
    /// `energy.worker_piece_days`; without this call their defaults apply.
    #[must_use]
    pub fn with_energy_limits(mut self, energy: &crate::config::EnergyConfig) -> Self {
        self.max_gap_ms = energy.max_interpolation_gap_ms();
        self.pieces = PieceLimits::new(energy.worker_piece_readings, energy.worker_piece_days);
        self
    }

    /// Tells `listener` what each committed step changed.
    pub fn with_listener(mut self, listener: EnergyListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Works until `shutdown`, on one instance at a time: only while this instance holds lease
    /// [`LEASE`] (instances sharing the database would otherwise take the same queued rows and
    /// compute the same counters twice). Rollup rebuilds are queued work of this same queue
    /// ([`queue_rollups`]), so they are single too. A database error is logged and retried with
    /// backoff: the queue is durable, so nothing is lost while PostgreSQL is away.
    pub async fn run(self, leases: &Leases, shutdown: CancellationToken) -> Result<(), String> {
        let (this, shutdown_ref) = (&self, &shutdown);
        run_while_held(leases, LEASE, &shutdown, |lost| async move {
            this.work(lost, shutdown_ref).await;
            Ok(())
        })
        .await
    }

    /// The worker's loop while holding the lease; returns when it is lost (or at shutdown).
    async fn work(&self, lost: CancellationToken, shutdown: &CancellationToken) {
        // A step in flight when the lease is lost is abandoned (its transaction rolls back,
        // nothing of it is committed after another instance may have taken over); at shutdown
        // it is finished, as before.
        let taken_over = async {
            lost.cancelled().await;
            if shutdown.is_cancelled() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(taken_over);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            if lost.is_cancelled() {
                return;
            }
            let started = Instant::now();
            let stepped = tokio::select! {
                biased;
                () = &mut taken_over => return,
                stepped = self.step() => stepped,
            };
            match stepped {
                Ok(progress) if progress.counters > 0 || progress.quarantined > 0 => {
                    backoff.reset();
                    self.metrics.record_profiles(
                        progress.counters as u64,
                        progress.intervals as u64,
                        started.elapsed(),
                    );
                    // A full batch: more is queued (a backlog), take it at once.
                    if progress.taken < BATCH as usize {
                        tokio::select! {
                            () = lost.cancelled() => return,
                            () = tokio::time::sleep(GATHER) => {}
                        }
                    }
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        () = lost.cancelled() => return,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    self.metrics.db_errors.inc();
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "profile step failed; retried");
                    tokio::select! {
                        () = lost.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Takes one batch of queued work and does it in one transaction; if that fails for a
    /// reason other than the database being away, does the batch's counters one by one and
    /// quarantines those that fail alone (see the module docs).
    pub async fn step(&self) -> Result<Progress, WorkerError> {
        match self.step_batch(None).await {
            Err(e) if !e.is_transient() => {
                tracing::warn!(error = %e, "profile batch failed; its counters are recomputed one by one");
                self.isolate().await
            }
            other => other,
        }
    }
}
