//! Draining `energy_dirty`: one batch in one transaction (intervals, then the local days they
//! fall in, then site totals), and the counter-by-counter retry that quarantines a bad one.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::{Postgres, Transaction};

use super::intervals::recompute_intervals;
use super::pieces::nth_readings;
use super::rollups::{load_contracts, rollup_days};
use super::site::rebuild_site;
use super::{EnergyChanged, ProfileWorker, Progress, Step, WorkerError, BATCH, CHUNK};
use crate::accounting::roles::{self, Role};
use crate::zone::TimeZone;

impl ProfileWorker {
    /// The counters of the next batch, each in its own transaction.
    pub(super) async fn isolate(&self) -> Result<Progress, WorkerError> {
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
    pub(super) async fn step_batch(&self, only: Option<i64>) -> Result<Progress, WorkerError> {
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
        let taken = queued.len();
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
            // Each counter's span in bounded pieces, one piece per counter per round.
            let mut todo: Vec<(i64, Span)> = chunk.iter().map(|id| (*id, spans[id])).collect();
            while !todo.is_empty() {
                let nth = nth_readings(&mut tx, &todo, &self.pieces).await?;
                let (now, rest) = self.pieces.split(&todo, &nth);
                let (written, changed) = self.piece(&mut tx, &counters, &now).await?;
                intervals += written;
                // 2. Daily rollups of the local days the changed intervals fall in.
                days += rollup_days(&mut tx, &counters, &contracts, &changed).await?;
                for (id, span) in changed {
                    merge_span(&mut changed_all, id, span);
                }
                todo = rest;
            }
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
            taken,
        })
    }

    /// Step 1, intervals from readings, for one piece of each span; returns the intervals
    /// written and, per counter, the span whose rollups changed.
    async fn piece(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        counters: &HashMap<i64, CounterInfo>,
        pieces: &[(i64, Span)],
    ) -> Result<(usize, HashMap<i64, (DateTime<Utc>, DateTime<Utc>)>), WorkerError> {
        let recompute: Vec<(i64, Span)> =
            pieces.iter().filter(|(_, s)| s.readings).copied().collect();
        let mut changed: HashMap<i64, (DateTime<Utc>, DateTime<Utc>)> = pieces
            .iter()
            .filter(|(_, s)| !s.readings)
            .map(|(id, s)| (*id, (s.from, s.to)))
            .collect();
        let written =
            recompute_intervals(tx, counters, &recompute, &self.params, self.max_gap_ms).await?;
        for (id, span) in written.changed {
            merge_span(&mut changed, id, span);
        }
        Ok((written.intervals, changed))
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) from: DateTime<Utc>,
    pub(super) to: DateTime<Utc>,
    pub(super) readings: bool,
}

/// Widens the span of `id` in `spans` to cover `span`.
fn merge_span(
    spans: &mut HashMap<i64, (DateTime<Utc>, DateTime<Utc>)>,
    id: i64,
    span: (DateTime<Utc>, DateTime<Utc>),
) {
    spans
        .entry(id)
        .and_modify(|c| *c = (c.0.min(span.0), c.1.max(span.1)))
        .or_insert(span);
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
pub(super) struct CounterInfo {
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
        TimeZone,
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
                        tz: tz.tz(),
                        role,
                    },
                )
            },
        )
        .collect())
}
