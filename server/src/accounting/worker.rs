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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use headend_energy::engine::{self, Reading, Register, QUARTER_MS};
use headend_energy::tariff::Contract;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::contracts::{self, SiteContracts};
use super::roles::{self, Role};
use super::topology::{self, Placement};
use crate::infra::metrics::Metrics;

/// Counters taken per transaction: large enough to amortise round trips, small enough that a
/// transaction stays short.
const BATCH: i64 = 2_000;
/// Counters recomputed together (one round of queries).
const CHUNK: usize = 200;
/// The worker looks for work at least this often even without a wake-up (rows queued by
/// another process, e.g. `headend` admin commands).
/// 9999-12-31T23:59:59Z, the last instant the worker writes as a range end.
const MAX_TS_MS: i64 = 253_402_300_799_000;
/// 0001-01-01T00:00:00Z, the first instant the worker writes as a range start (readings before
/// 1970 are possible with a generous backlog horizon; clamping the range at 1970 would leave
/// their intervals in place and make the next insert collide with them).
const MIN_TS_MS: i64 = -62_135_596_800_000;
/// Default of `energy.max_interpolation_gap_hours`: 31 days.
pub const DEFAULT_MAX_GAP_HOURS: u32 = 24 * 31;
const POLL: Duration = Duration::from_secs(5);

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
                // doing), system and internal errors.
                code != "57014" && ["08", "40", "53", "57", "58", "XX"].contains(&&code[..2])
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
}

impl std::ops::AddAssign for Progress {
    fn add_assign(&mut self, other: Self) {
        self.counters += other.counters;
        self.intervals += other.intervals;
        self.days += other.days;
        self.quarantined += other.quarantined;
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
            wake,
            metrics,
            listener: None,
        }
    }

    /// Applies `energy.max_interpolation_gap_hours`; without this call the default (31 days)
    /// applies.
    #[must_use]
    pub fn with_energy_limits(mut self, energy: &crate::config::EnergyConfig) -> Self {
        self.max_gap_ms = energy.max_interpolation_gap_ms();
        self
    }

    /// Tells `listener` what each committed step changed.
    pub fn with_listener(mut self, listener: EnergyListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Works until `shutdown`. A database error is logged and retried with backoff: the queue
    /// is durable, so nothing is lost while PostgreSQL is away.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let started = Instant::now();
            match self.step().await {
                Ok(progress) if progress.counters > 0 || progress.quarantined > 0 => {
                    backoff = Duration::from_millis(200);
                    self.metrics.record_profiles(
                        progress.counters as u64,
                        progress.intervals as u64,
                        started.elapsed(),
                    );
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    self.metrics.db_errors.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "profile step failed; retried");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
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

    /// The counters of the next batch, each in its own transaction.
    async fn isolate(&self) -> Result<Progress, WorkerError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT counter_id FROM (
                 SELECT counter_id FROM energy_dirty e
                 WHERE NOT EXISTS (SELECT 1 FROM energy_quarantine q
                                   WHERE q.counter_id = e.counter_id AND q.active)
                 ORDER BY id LIMIT $1) first_in_line",
        )
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await
        .step("list the counters of a failed batch")?;
        let mut progress = Progress::default();
        for id in ids {
            match self.step_batch(Some(id)).await {
                Ok(done) => progress += done,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    self.quarantine(id, &e.to_string()).await?;
                    progress.quarantined += 1;
                }
            }
        }
        Ok(progress)
    }

    /// Sets a counter aside: its queued spans are merged into one and skipped by batches until
    /// an admin releases it.
    async fn quarantine(&self, counter: i64, reason: &str) -> Result<(), WorkerError> {
        let reason = crate::ingest::normalize::truncate(reason, 4096);
        let mut tx = self.pool.begin().await.step("begin quarantine")?;
        let attempts: Option<i32> = sqlx::query_scalar(
            "INSERT INTO energy_quarantine AS q (counter_id, reason)
             SELECT id, $2 FROM counters WHERE id = $1
             ON CONFLICT (counter_id) DO UPDATE SET
                 reason = EXCLUDED.reason, since = now(), attempts = q.attempts + 1,
                 active = true, released_at = NULL
             WHERE NOT q.active
             RETURNING attempts",
        )
        .bind(counter)
        .bind(&reason)
        .fetch_optional(&mut *tx)
        .await
        .step("quarantine a counter")?;
        sqlx::query(
            "WITH taken AS (DELETE FROM energy_dirty WHERE counter_id = $1
                            RETURNING from_ts, to_ts, readings)
             INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
             SELECT $1, min(from_ts), max(to_ts), bool_or(readings) FROM taken
             HAVING count(*) > 0",
        )
        .bind(counter)
        .execute(&mut *tx)
        .await
        .step("merge the quarantined counter's spans")?;
        tx.commit().await.step("commit quarantine")?;
        if let Some(attempts) = attempts {
            self.metrics.profile_counters_quarantined.inc();
            tracing::error!(
                counter,
                attempts,
                %reason,
                "energy counter quarantined: its intervals are not recomputed until an admin \
                 retries it (GET /api/v1/energy/quarantine)"
            );
        }
        Ok(())
    }

    /// One batch: the first counters in line (`None`), or every queued span of one counter.
    #[tracing::instrument(name = "profile_step", skip_all, fields(counters))]
    async fn step_batch(&self, only: Option<i64>) -> Result<Progress, WorkerError> {
        let mut tx = self.pool.begin().await.step("begin")?;
        let queued: Vec<(i64, DateTime<Utc>, DateTime<Utc>, bool)> = match only {
            // Every queued row of the first counters in line, so that a backlog of many small
            // spans of one counter becomes one span. MATERIALIZED keeps PostgreSQL from
            // re-running the LIMIT under the join (it would then take more than the bound).
            // Quarantined counters wait for their release.
            None => sqlx::query_as(
                "WITH counters AS MATERIALIZED (
                     SELECT DISTINCT counter_id FROM (
                         SELECT counter_id FROM energy_dirty e
                         WHERE NOT EXISTS (SELECT 1 FROM energy_quarantine q
                                           WHERE q.counter_id = e.counter_id AND q.active)
                         ORDER BY id LIMIT $1) first_in_line)
                 DELETE FROM energy_dirty e USING counters c WHERE e.counter_id = c.counter_id
                 RETURNING e.counter_id, e.from_ts, e.to_ts, e.readings",
            )
            .bind(BATCH),
            Some(id) => sqlx::query_as(
                "DELETE FROM energy_dirty WHERE counter_id = $1
                 RETURNING counter_id, from_ts, to_ts, readings",
            )
            .bind(id),
        }
        .fetch_all(&mut *tx)
        .await
        .step("take queued spans")?;
        if queued.is_empty() {
            return Ok(Progress::default());
        }
        let mut spans: BTreeMap<i64, Span> = BTreeMap::new();
        for (counter, from, to, readings) in queued {
            spans
                .entry(counter)
                .and_modify(|s| s.merge(from, to, readings))
                .or_insert(Span { from, to, readings });
        }
        tracing::Span::current().record("counters", spans.len());
        let counters = load_counters(&mut tx, &spans.keys().copied().collect::<Vec<_>>()).await?;

        let contracts = load_contracts(&mut tx, &counters).await?;
        let mut changed_all: HashMap<i64, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
        let mut intervals = 0;
        let mut days = 0;
        // Chunks bound the memory of one step: a backfill can queue a year per counter.
        let ids: Vec<i64> = spans
            .keys()
            .copied()
            .filter(|id| counters.contains_key(id))
            .collect();
        for chunk in ids.chunks(CHUNK) {
            // 1. Intervals from readings.
            let recompute: Vec<(i64, Span)> = chunk
                .iter()
                .filter(|id| spans[id].readings)
                .map(|id| (*id, spans[id]))
                .collect();
            let mut changed: HashMap<i64, (DateTime<Utc>, DateTime<Utc>)> = chunk
                .iter()
                .filter(|id| !spans[id].readings)
                .map(|id| (*id, (spans[id].from, spans[id].to)))
                .collect();
            let written = recompute_intervals(
                &mut tx,
                &counters,
                &recompute,
                &self.params,
                self.max_gap_ms,
            )
            .await?;
            intervals += written.intervals;
            for (id, span) in written.changed {
                changed
                    .entry(id)
                    .and_modify(|c| *c = (c.0.min(span.0), c.1.max(span.1)))
                    .or_insert(span);
            }
            // 2. Daily rollups of the local days the changed intervals fall in.
            days += rollup_days(&mut tx, &counters, &contracts, &changed).await?;
            changed_all.extend(changed);
        }
        let changed = changed_all;

        // 3. Site totals (for the site's peak demand) where an import register changed.
        let mut site_spans: HashMap<i64, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
        for (id, span) in &changed {
            let c = &counters[id];
            if let (Some(site), Role::Import) = (c.site_id, c.role) {
                site_spans
                    .entry(site)
                    .and_modify(|s| *s = (s.0.min(span.0), s.1.max(span.1)))
                    .or_insert(*span);
            }
        }
        for (site, span) in &site_spans {
            let tz = counters
                .values()
                .find(|c| c.site_id == Some(*site))
                .map_or(chrono_tz::UTC, |c| c.tz);
            rebuild_site(&mut tx, *site, tz, *span).await?;
        }
        tx.commit().await.step("commit")?;
        if let Some(listener) = &self.listener {
            if !changed.is_empty() {
                listener(EnergyChanged {
                    counters: changed.iter().map(|(id, s)| (*id, s.0, s.1)).collect(),
                    sites: site_spans.iter().map(|(id, s)| (*id, s.0, s.1)).collect(),
                });
            }
        }
        Ok(Progress {
            counters: spans.len(),
            intervals,
            days,
            quarantined: 0,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    readings: bool,
}

impl Span {
    fn merge(&mut self, from: DateTime<Utc>, to: DateTime<Utc>, readings: bool) {
        self.from = self.from.min(from);
        self.to = self.to.max(to);
        self.readings |= readings;
    }
}

/// A counter register with what the worker needs to know about its device and site.
#[derive(Debug, Clone)]
pub(crate) struct CounterInfo {
    pub device_id: i64,
    pub resettable: bool,
    pub site_id: Option<i64>,
    pub tz: Tz,
    pub role: Role,
}

async fn load_counters(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<HashMap<i64, CounterInfo>, WorkerError> {
    type Row = (
        i64,
        i64,
        bool,
        String,
        Option<i64>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.id, c.device_id, c.resettable, c.name, g.site_id,
                    COALESCE(s.time_zone, g.time_zone),
                    d.import_register, d.export_register, d.reactive_register
             FROM counters c
             JOIN devices d ON d.id = c.device_id
             JOIN gateways g ON g.id = d.gateway_id
             LEFT JOIN sites s ON s.id = g.site_id
             WHERE c.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .step("load counters")?;
    Ok(rows
        .into_iter()
        .map(
            |(id, device_id, resettable, name, site_id, tz, imp, exp, reac)| {
                let role = roles::role_of(&name, imp.as_deref(), exp.as_deref(), reac.as_deref());
                (
                    id,
                    CounterInfo {
                        device_id,
                        resettable,
                        site_id,
                        tz: tz.parse().unwrap_or(chrono_tz::UTC),
                        role,
                    },
                )
            },
        )
        .collect())
}

struct IntervalsWritten {
    intervals: usize,
    /// Per counter, the span of interval starts that were deleted or written.
    changed: Vec<(i64, (DateTime<Utc>, DateTime<Utc>))>,
}

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Loads each counter's readings window, runs the engine, and replaces the intervals (and
/// events) inside the part of the window the engine's locality makes exact.
async fn recompute_intervals(
    tx: &mut Transaction<'_, Postgres>,
    counters: &HashMap<i64, CounterInfo>,
    spans: &[(i64, Span)],
    params: &engine::Params,
    max_gap_ms: i64,
) -> Result<IntervalsWritten, WorkerError> {
    if spans.is_empty() {
        return Ok(IntervalsWritten {
            intervals: 0,
            changed: Vec::new(),
        });
    }
    // Readings beyond each end: CONTEXT readings decide the edge readings, and CONTEXT more
    // make the intervals that depend on the new readings exact.
    let margin = i64::try_from(2 * engine::CONTEXT + 1).unwrap_or(64);
    let ids: Vec<i64> = spans.iter().map(|(id, _)| *id).collect();
    let froms: Vec<DateTime<Utc>> = spans.iter().map(|(_, s)| s.from).collect();
    let tos: Vec<DateTime<Utc>> = spans.iter().map(|(_, s)| s.to).collect();
    // Readings dated before their device's commissioning (`devices.commissioned_at`, set by
    // an admin) are not part of the series: `lo` is a second lower bound on the primary key's
    // `ts`, so each part stays one index range scan of `(counter_id, ts)`.
    let rows: Vec<(i64, i16, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT q.counter_id, w.part, w.ts, w.value_milli
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS q(counter_id, f, t)
         JOIN counters c ON c.id = q.counter_id
         JOIN devices d ON d.id = c.device_id
         CROSS JOIN LATERAL (
             SELECT COALESCE(d.commissioned_at, '-infinity'::timestamptz) AS lo) b
         CROSS JOIN LATERAL (
             (SELECT 0::int2 AS part, ts, value_milli FROM counter_readings
              WHERE counter_id = q.counter_id AND ts < q.f AND ts >= b.lo AND flags & $5 = 0
              ORDER BY ts DESC LIMIT $4)
             UNION ALL
             (SELECT 1::int2, ts, value_milli FROM counter_readings
              WHERE counter_id = q.counter_id AND ts >= q.f AND ts <= q.t AND ts >= b.lo
                AND flags & $5 = 0)
             UNION ALL
             (SELECT 2::int2, ts, value_milli FROM counter_readings
              WHERE counter_id = q.counter_id AND ts > q.t AND ts >= b.lo AND flags & $5 = 0
              ORDER BY ts LIMIT $4)
         ) AS w",
    )
    .bind(&ids)
    .bind(&froms)
    .bind(&tos)
    .bind(margin)
    .bind(crate::ingest::clock::BEYOND_HORIZON)
    .fetch_all(&mut **tx)
    .await
    .step("load readings windows")?;

    let mut windows: HashMap<i64, Vec<(i16, Reading)>> = HashMap::new();
    for (id, part, t, value) in rows {
        windows.entry(id).or_default().push((
            part,
            Reading {
                ts_ms: t.timestamp_millis(),
                value,
            },
        ));
    }

    let (mut del_c, mut del_lo, mut del_hi) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ev_lo, mut ev_hi) = (Vec::new(), Vec::new());
    let (mut ins_c, mut ins_start, mut ins_energy, mut ins_quality) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ev_c, mut ev_ts, mut ev_kind, mut ev_prev, mut ev_value) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut changed = Vec::new();
    for (id, _) in spans {
        let Some(info) = counters.get(id) else {
            continue;
        };
        let mut window = windows.remove(id).unwrap_or_default();
        window.sort_by_key(|(_, r)| r.ts_ms);
        let before = window.iter().filter(|(p, _)| *p == 0).count();
        let after = window.iter().filter(|(p, _)| *p == 2).count();
        let readings: Vec<Reading> = window.iter().map(|(_, r)| *r).collect();
        let full = usize::try_from(margin).unwrap_or(usize::MAX);
        // The exact part of the window: from the CONTEXT-th reading in, unless the window
        // already starts (ends) at the first (last) reading of the whole series.
        let lo_ms = if before < full {
            i64::MIN
        } else {
            readings[engine::CONTEXT].ts_ms
        };
        let hi_ms = if after < full {
            i64::MAX
        } else {
            readings[readings.len() - 1 - engine::CONTEXT].ts_ms
        };
        let outcome = engine::compute_bounded(
            &readings,
            Register {
                resettable: info.resettable,
            },
            params,
            max_gap_ms,
        );
        // Intervals that lie wholly inside [lo, hi].
        let first_start = if lo_ms == i64::MIN {
            i64::MIN
        } else {
            engine::ceil_quarter(lo_ms)
        };
        let last_end = if hi_ms == i64::MAX {
            i64::MAX
        } else {
            engine::floor_quarter(hi_ms)
        };
        if first_start >= last_end {
            continue;
        }
        // Open ends become 0001 and 9999: PostgreSQL's range, and no reading lies outside.
        del_c.push(*id);
        del_lo.push(ts(first_start.max(MIN_TS_MS)));
        del_hi.push(ts(last_end.min(MAX_TS_MS)));
        ev_lo.push(ts(lo_ms.max(MIN_TS_MS)));
        ev_hi.push(ts(hi_ms.min(MAX_TS_MS)));
        let mut span: Option<(i64, i64)> = None;
        for interval in &outcome.intervals {
            if interval.start_ms < first_start || interval.start_ms + QUARTER_MS > last_end {
                continue;
            }
            ins_c.push(*id);
            ins_start.push(ts(interval.start_ms));
            ins_energy.push(interval.energy);
            ins_quality.push(interval.quality.code());
            span = Some(
                span.map_or((interval.start_ms, interval.start_ms), |(a, b)| {
                    (a.min(interval.start_ms), b.max(interval.start_ms))
                }),
            );
        }
        for event in &outcome.events {
            if event.ts_ms < lo_ms || event.ts_ms > hi_ms {
                continue;
            }
            ev_c.push(*id);
            ev_ts.push(ts(event.ts_ms));
            ev_kind.push(
                match event.kind {
                    engine::EventKind::Reset => "reset",
                    engine::EventKind::Glitch => "glitch",
                    engine::EventKind::Exchange => "exchange",
                }
                .to_owned(),
            );
            ev_prev.push(event.previous);
            ev_value.push(event.value);
        }
        if let Some((a, b)) = span {
            changed.push((*id, (ts(a), ts(b + QUARTER_MS))));
        }
    }

    // What was there before also changed (an interval may have disappeared).
    let deleted: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "WITH r AS (SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(c, lo, hi)),
              d AS (DELETE FROM energy_intervals e USING r
                    WHERE e.counter_id = r.c AND e.start >= r.lo AND e.start < r.hi
                    RETURNING e.counter_id, e.start)
         SELECT counter_id, min(start), max(start) FROM d GROUP BY counter_id",
    )
    .bind(&del_c)
    .bind(&del_lo)
    .bind(&del_hi)
    .fetch_all(&mut **tx)
    .await
    .step("delete stale intervals")?;
    for (id, a, b) in deleted {
        changed.push((id, (a, b + chrono::Duration::milliseconds(QUARTER_MS))));
    }
    sqlx::query(
        "INSERT INTO energy_intervals (counter_id, start, energy_milli, quality)
         SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[], $4::int2[])",
    )
    .bind(&ins_c)
    .bind(&ins_start)
    .bind(&ins_energy)
    .bind(&ins_quality)
    .execute(&mut **tx)
    .await
    .step("insert intervals")?;

    sqlx::query(
        "WITH r AS (SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(c, lo, hi))
         DELETE FROM counter_events e USING r
         WHERE e.counter_id = r.c AND e.ts >= r.lo AND e.ts <= r.hi",
    )
    .bind(&del_c)
    .bind(&ev_lo)
    .bind(&ev_hi)
    .execute(&mut **tx)
    .await
    .step("delete stale events")?;
    sqlx::query(
        "INSERT INTO counter_events (counter_id, ts, kind, previous, value)
         SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::text[], $4::int8[], $5::int8[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&ev_c)
    .bind(&ev_ts)
    .bind(&ev_kind)
    .bind(&ev_prev)
    .bind(&ev_value)
    .execute(&mut **tx)
    .await
    .step("insert events")?;

    // Merge the per-counter spans.
    let mut merged: BTreeMap<i64, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for (id, (a, b)) in changed {
        merged
            .entry(id)
            .and_modify(|s| *s = (s.0.min(a), s.1.max(b)))
            .or_insert((a, b));
    }
    Ok(IntervalsWritten {
        intervals: ins_c.len(),
        changed: merged.into_iter().collect(),
    })
}

/// The contracts of every site involved, oldest first.
pub(crate) type Contracts = HashMap<i64, SiteContracts>;

/// The valid contracts of the counters' sites; a stored contract that is not valid is logged
/// (its site's days are then costed with the contract before it, as if it did not exist).
async fn load_contracts(
    tx: &mut Transaction<'_, Postgres>,
    counters: &HashMap<i64, CounterInfo>,
) -> Result<Contracts, WorkerError> {
    let sites: Vec<i64> = counters
        .values()
        .filter_map(|c| c.site_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let loaded = contracts::load(&mut **tx, &sites)
        .await
        .step("load contracts")?;
    loaded.warn_bad("profile worker");
    Ok(loaded.sites)
}

/// The contract in force on a local date.
pub(crate) fn contract_on(
    contracts: &Contracts,
    site: Option<i64>,
    day: NaiveDate,
) -> Option<&Contract> {
    contracts::in_force(contracts.get(&site?)?, day)
}

/// Recomputes `energy_days` for every local day touched by the changed spans.
async fn rollup_days(
    tx: &mut Transaction<'_, Postgres>,
    counters: &HashMap<i64, CounterInfo>,
    contracts: &Contracts,
    changed: &HashMap<i64, (DateTime<Utc>, DateTime<Utc>)>,
) -> Result<usize, WorkerError> {
    if changed.is_empty() {
        return Ok(0);
    }
    // Widen each span to whole local days of the counter's site.
    let mut ids = Vec::new();
    let mut los = Vec::new();
    let mut his = Vec::new();
    let mut day_ranges: HashMap<i64, (NaiveDate, NaiveDate)> = HashMap::new();
    for (id, (a, b)) in changed {
        let info = &counters[id];
        let first = calendar::local_date(*a, info.tz);
        let last = calendar::local_date(*b - chrono::Duration::milliseconds(1), info.tz).max(first);
        let lo = calendar::period_bounds(info.tz, first, Period::Day).0;
        let hi = calendar::period_bounds(info.tz, last, Period::Day).1;
        ids.push(*id);
        los.push(lo);
        his.push(hi);
        day_ranges.insert(*id, (first, last));
    }
    let rows: Vec<(i64, DateTime<Utc>, i64, i16)> = sqlx::query_as(
        "SELECT e.counter_id, e.start, e.energy_milli, e.quality
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(c, lo, hi)
         JOIN energy_intervals e ON e.counter_id = r.c AND e.start >= r.lo AND e.start < r.hi
         ORDER BY e.counter_id, e.start",
    )
    .bind(&ids)
    .bind(&los)
    .bind(&his)
    .fetch_all(&mut **tx)
    .await
    .step("load intervals for rollup")?;

    // Meter tariffs, only for counters whose contract picks bands by the meter's tariff.
    let tariff_devices: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = ids
        .iter()
        .zip(los.iter().zip(&his))
        .filter(|(id, _)| {
            let info = &counters[*id];
            contracts
                .get(&info.site_id.unwrap_or(-1))
                .is_some_and(|cs| cs.iter().any(|(_, c)| c.meter_tariff_bands.is_some()))
        })
        .map(|(id, (lo, hi))| (counters[id].device_id, *lo, *hi))
        .collect();
    let meter_tariffs = load_meter_tariffs(tx, &tariff_devices).await?;

    let mut acc: BTreeMap<(i64, NaiveDate), super::DayTotals> = BTreeMap::new();
    for (id, start, energy, quality) in rows {
        let info = &counters[&id];
        let day = calendar::local_date(start, info.tz);
        let contract = contract_on(contracts, info.site_id, day);
        let tariff = meter_tariffs
            .get(&(info.device_id, start.timestamp_millis()))
            .copied();
        acc.entry((id, day))
            .or_insert_with(|| super::DayTotals::new(contract.map(|c| c.bands.len()).unwrap_or(0)))
            .add(
                start,
                energy,
                quality,
                contract.map(|c| (c, info.tz, tariff, info.role)),
            );
    }

    let mut c = Vec::new();
    let mut d = Vec::new();
    let mut energy = Vec::new();
    let mut measured = Vec::new();
    let mut estimated = Vec::new();
    let mut quarters = Vec::new();
    let mut peak = Vec::new();
    let mut peak_start = Vec::new();
    let mut bands = Vec::new();
    let mut cost = Vec::new();
    let mut currency = Vec::new();
    for ((id, day), totals) in &acc {
        let info = &counters[id];
        let contract = contract_on(contracts, info.site_id, *day);
        c.push(*id);
        d.push(*day);
        energy.push(totals.energy);
        measured.push(totals.measured);
        estimated.push(totals.estimated);
        quarters.push(
            i32::try_from(calendar::quarter_hours_in(info.tz, *day, Period::Day)).unwrap_or(96),
        );
        peak.push(totals.peak);
        peak_start.push(totals.peak_start);
        // A Postgres array literal keeps the UNNEST of a ragged 2-D array out of the query.
        bands.push(format!(
            "{{{}}}",
            totals
                .bands
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        cost.push(totals.cost_nano(info.role, contract));
        currency.push(contract.map(|c| c.currency.clone()));
    }
    let (del_c, del_from, del_to): (Vec<i64>, Vec<NaiveDate>, Vec<NaiveDate>) =
        day_ranges.iter().map(|(id, (a, b))| (*id, *a, *b)).fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |mut acc, (id, a, b)| {
                acc.0.push(id);
                acc.1.push(a);
                acc.2.push(b);
                acc
            },
        );
    sqlx::query(
        "DELETE FROM energy_days e USING UNNEST($1::int8[], $2::date[], $3::date[]) AS r(c, a, b)
         WHERE e.counter_id = r.c AND e.day >= r.a AND e.day <= r.b",
    )
    .bind(&del_c)
    .bind(&del_from)
    .bind(&del_to)
    .execute(&mut **tx)
    .await
    .step("delete stale days")?;
    sqlx::query(
        "INSERT INTO energy_days (counter_id, day, energy_milli, measured, estimated, quarters,
                                  peak_milli, peak_start, band_milli, cost_nano, currency)
         SELECT c, d, e, m, s, q, p, ps, b::int8[], co, cu
         FROM UNNEST($1::int8[], $2::date[], $3::int8[], $4::int4[], $5::int4[], $6::int4[],
                     $7::int8[], $8::timestamptz[], $9::text[], $10::int8[], $11::text[])
              AS r(c, d, e, m, s, q, p, ps, b, co, cu)",
    )
    .bind(&c)
    .bind(&d)
    .bind(&energy)
    .bind(&measured)
    .bind(&estimated)
    .bind(&quarters)
    .bind(&peak)
    .bind(&peak_start)
    .bind(&bands)
    .bind(&cost)
    .bind(&currency)
    .execute(&mut **tx)
    .await
    .step("insert days")?;
    Ok(acc.len())
}

/// The meter's reported tariff per quarter-hour (the latest measurement in it that had one).
async fn load_meter_tariffs(
    tx: &mut Transaction<'_, Postgres>,
    ranges: &[(i64, DateTime<Utc>, DateTime<Utc>)],
) -> Result<HashMap<(i64, i64), u8>, WorkerError> {
    if ranges.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = ranges.iter().map(|r| r.0).collect();
    let los: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.1).collect();
    let his: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.2).collect();
    let rows: Vec<(i64, DateTime<Utc>, i16)> = sqlx::query_as(
        "SELECT DISTINCT ON (m.device_id, date_bin('15 minutes', m.ts, 'epoch'))
                m.device_id, date_bin('15 minutes', m.ts, 'epoch'), m.tariff
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(dev, lo, hi)
         JOIN measurements m ON m.device_id = r.dev AND m.ts >= r.lo AND m.ts < r.hi
         WHERE m.tariff IS NOT NULL
         ORDER BY m.device_id, date_bin('15 minutes', m.ts, 'epoch'), m.ts DESC",
    )
    .bind(&ids)
    .bind(&los)
    .bind(&his)
    .fetch_all(&mut **tx)
    .await
    .step("load meter tariffs")?;
    Ok(rows
        .into_iter()
        .filter_map(|(dev, q, t)| Some(((dev, q.timestamp_millis()), u8::try_from(t).ok()?)))
        .collect())
}

/// Recomputes the site's total per quarter-hour over `span` from its top-level meters' import
/// intervals, and the daily peaks of the local days it touches.
async fn rebuild_site(
    tx: &mut Transaction<'_, Postgres>,
    site: i64,
    tz: Tz,
    span: (DateTime<Utc>, DateTime<Utc>),
) -> Result<(), WorkerError> {
    let first = calendar::local_date(span.0, tz);
    let last = calendar::local_date(span.1 - chrono::Duration::milliseconds(1), tz).max(first);
    let lo = calendar::period_bounds(tz, first, Period::Day).0;
    let hi = calendar::period_bounds(tz, last, Period::Day).1;
    let import = top_level_import_counters(tx, site).await?;
    sqlx::query("DELETE FROM site_intervals WHERE site_id = $1 AND start >= $2 AND start < $3")
        .bind(site)
        .bind(lo)
        .bind(hi)
        .execute(&mut **tx)
        .await
        .step("delete site intervals")?;
    sqlx::query(
        "INSERT INTO site_intervals (site_id, start, energy_milli)
         SELECT $1, start, sum(energy_milli)::int8 FROM energy_intervals
         WHERE counter_id = ANY($4) AND start >= $2 AND start < $3 GROUP BY start",
    )
    .bind(site)
    .bind(lo)
    .bind(hi)
    .bind(&import)
    .execute(&mut **tx)
    .await
    .step("insert site intervals")?;
    let rows: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT start, energy_milli FROM site_intervals
         WHERE site_id = $1 AND start >= $2 AND start < $3 ORDER BY start",
    )
    .bind(site)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut **tx)
    .await
    .step("load site intervals")?;
    let mut peaks: BTreeMap<NaiveDate, (i64, DateTime<Utc>)> = BTreeMap::new();
    for (start, energy) in rows {
        let day = calendar::local_date(start, tz);
        let entry = peaks.entry(day).or_insert((energy, start));
        // The first of equal peaks is the one reported.
        if energy > entry.0 {
            *entry = (energy, start);
        }
    }
    sqlx::query("DELETE FROM site_days WHERE site_id = $1 AND day >= $2 AND day <= $3")
        .bind(site)
        .bind(first)
        .bind(last)
        .execute(&mut **tx)
        .await
        .step("delete site days")?;
    let days: Vec<NaiveDate> = peaks.keys().copied().collect();
    let peak: Vec<i64> = peaks.values().map(|p| p.0).collect();
    let starts: Vec<DateTime<Utc>> = peaks.values().map(|p| p.1).collect();
    sqlx::query(
        "INSERT INTO site_days (site_id, day, peak_milli, peak_start)
         SELECT $1, d, p, s FROM UNNEST($2::date[], $3::int8[], $4::timestamptz[]) AS r(d, p, s)",
    )
    .bind(site)
    .bind(&days)
    .bind(&peak)
    .bind(&starts)
    .execute(&mut **tx)
    .await
    .step("insert site days")?;
    Ok(())
}

/// The import registers of the meters that make up the site total.
pub(crate) async fn top_level_import_counters(
    conn: &mut sqlx::PgConnection,
    site: i64,
) -> Result<Vec<i64>, WorkerError> {
    let placements = site_placements(&mut *conn, site)
        .await
        .step("load site meters")?;
    let top: HashSet<i64> = topology::top_level(&placements);
    let top: Vec<i64> = top.into_iter().collect();
    let rows: Vec<(i64, String, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT c.id, c.name, d.import_register, d.export_register, d.reactive_register
         FROM counters c JOIN devices d ON d.id = c.device_id WHERE d.id = ANY($1)",
    )
    .bind(&top)
    .fetch_all(&mut *conn)
    .await
    .step("load top-level counters")?;
    Ok(rows
        .into_iter()
        .filter(|(_, name, i, e, r)| {
            roles::role_of(name, i.as_deref(), e.as_deref(), r.as_deref()) == Role::Import
        })
        .map(|(id, ..)| id)
        .collect())
}

/// Every meter of a site with its placement.
pub(crate) async fn site_placements(
    conn: &mut sqlx::PgConnection,
    site: i64,
) -> Result<Vec<Placement>, sqlx::Error> {
    let rows: Vec<(i64, Option<String>, Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT d.id, d.measures, d.panel_id, d.circuit_id, c.panel_id
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN circuits c ON c.id = d.circuit_id
         WHERE g.site_id = $1 AND d.kind = 'meter'",
    )
    .bind(site)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(device_id, measures, panel_id, circuit_id, circuit_panel_id)| Placement {
                device_id,
                measures,
                panel_id,
                circuit_id,
                circuit_panel_id,
            },
        )
        .collect())
}

/// Queues a recompute of the intervals (then the rollups) of every counter of `device` after
/// its commissioning date changed from `old` to `new` (either `None`: unknown, no bound).
///
/// The span runs from the counter's first reading to the later of the two dates: the worker
/// then finds no usable reading before the start of the span (those before commissioning are
/// left out of its windows), so it rewrites every interval from the year 1 on, which deletes
/// the intervals that now fall before commissioning and brings back those that no longer do.
/// Counters without readings have no intervals and queue nothing.
pub async fn queue_commissioning(
    conn: &mut sqlx::PgConnection,
    device: i64,
    old: Option<DateTime<Utc>>,
    new: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT c.id, f.first, GREATEST(f.first, $2, $3), true
         FROM counters c
         CROSS JOIN LATERAL (SELECT min(ts) AS first FROM counter_readings
                             WHERE counter_id = c.id) f
         WHERE c.device_id = $1 AND f.first IS NOT NULL",
    )
    .bind(device)
    .bind(old)
    .bind(new)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queues a rebuild of the rollups (not the intervals) of every counter of a site, or of the
/// given devices: after a contract, time zone or placement change.
pub async fn queue_rollups(
    conn: &mut sqlx::PgConnection,
    site: Option<i64>,
    devices: &[i64],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT c.id, b.lo, b.hi + interval '15 minutes', false
         FROM counters c
         JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         CROSS JOIN LATERAL (
             SELECT (SELECT min(start) FROM energy_intervals WHERE counter_id = c.id) AS lo,
                    (SELECT max(start) FROM energy_intervals WHERE counter_id = c.id) AS hi
         ) b
         WHERE b.lo IS NOT NULL AND (g.site_id = $1 OR d.id = ANY($2))",
    )
    .bind(site)
    .bind(devices)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
