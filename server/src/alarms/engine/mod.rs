//! The evaluator: one task that owns every rule's state, fed with measurements as ingest
//! commits them and with timer observations; it steps [`rules::step`] and writes the changed
//! states and the alarm changes they cause in one transaction (retried until it commits).
//!
//! State is written whenever it changes, and loaded at start, so a restart neither forgets an
//! active alarm nor raises it again (replayed samples are older than the saved `last_ts`).
//! Several instances share the states: each batch is judged against the rows, and written under
//! their locks, so a (rule, subject) is raised or cleared once whichever instance its samples
//! reach ([`resolve`], [`persist`]).
//! A batch committed by ingest in the instant before a crash and not yet evaluated is not
//! evaluated after the restart; the next sample of the meter is, so a condition that still
//! holds is seen then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::types::Json;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod persist;
mod resolve;

use super::lifecycle::{RuleInfo, Subject};
use super::rules::{Change, Condition};
use super::{measurement_column, Actions, AlarmsHandle, Severity, Watch};
use crate::accounting::worker::EnergyChanged;
use crate::infra::{backoff::Backoff, db::decodable};
use crate::ingest::normalize::{DeviceKey, MeasurementRow, MEASUREMENT_COLUMNS};
use crate::zone::TimeZone;
use persist::{decode_state, judge_unlocked, persist};
use resolve::{Cached, Key, Stored};

/// How far back a recomputed span is judged: a backfill of months is judged on its last week
/// (older quarter-hours are history, not news; the CSV and the API still show them).
const ENERGY_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// One committed measurements row.
#[derive(Debug, Clone)]
pub struct Sample {
    pub device: DeviceKey,
    pub ts: DateTime<Utc>,
    pub values: [Option<f32>; MEASUREMENT_COLUMNS.len()],
}

/// A value of a timer rule for one subject, observed at `at`.
#[derive(Debug, Clone)]
pub struct Observation {
    pub rule_id: i64,
    pub subject: Subject,
    pub at: DateTime<Utc>,
    pub value: f64,
}

pub enum Input {
    Measurements(Vec<Sample>),
    Observations(Vec<Observation>),
    /// Quarter-hours the profile worker has just (re)computed.
    Energy(EnergyChanged),
}

/// The sending side, held by ingest and the timers.
#[derive(Clone)]
pub struct AlarmFeed {
    tx: mpsc::Sender<Input>,
    /// Whether any enabled rule watches measurements: ingest copies rows only then.
    wants_measurements: Arc<AtomicBool>,
}

impl AlarmFeed {
    /// Hands committed measurements to the evaluator. Waits when it is behind (backpressure on
    /// the ingest writer rather than a dropped sample).
    pub async fn measurements(&self, rows: &[MeasurementRow]) {
        if rows.is_empty() || !self.wants_measurements.load(Ordering::Relaxed) {
            return;
        }
        let samples = rows
            .iter()
            .map(|m| Sample {
                device: m.device.clone(),
                ts: m.ts,
                values: m.values,
            })
            .collect();
        if self.tx.send(Input::Measurements(samples)).await.is_err() {
            tracing::debug!("alarm evaluator stopped; measurements not evaluated");
        }
    }

    pub async fn observations(&self, obs: Vec<Observation>) {
        if !obs.is_empty() && self.tx.send(Input::Observations(obs)).await.is_err() {
            tracing::debug!("alarm evaluator stopped; observations not evaluated");
        }
    }

    /// Hands the profile worker's committed changes to the evaluator (from a synchronous
    /// callback: the send waits on its own task, so the worker never blocks on alarms).
    pub fn energy_changed(&self, changed: EnergyChanged) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if tx.send(Input::Energy(changed)).await.is_err() {
                tracing::debug!("alarm evaluator stopped; energy changes not evaluated");
            }
        });
    }
}

struct Compiled {
    info: RuleInfo,
    zone: Tz,
    column: Option<usize>,
}

#[derive(Default)]
struct Index {
    rules: HashMap<i64, Arc<Compiled>>,
    /// Meter → measurement rules that apply to it.
    by_device: HashMap<i64, Vec<i64>>,
}

pub struct Engine {
    pool: PgPool,
    rx: mpsc::Receiver<Input>,
    handle: AlarmsHandle,
    metrics: Arc<crate::infra::metrics::Metrics>,
    wants_measurements: Arc<AtomicBool>,
    index: Index,
    states: HashMap<Key, Cached>,
    devices: HashMap<DeviceKey, i64>,
}

/// How often rules and their meters are reloaded without being told (placements and new meters
/// change which meters a site, panel or circuit rule covers).
const RELOAD_EVERY: Duration = Duration::from_secs(30);

pub fn channel(
    pool: PgPool,
    handle: AlarmsHandle,
    metrics: Arc<crate::infra::metrics::Metrics>,
) -> (AlarmFeed, Engine) {
    let (tx, rx) = mpsc::channel(64);
    let wants = Arc::new(AtomicBool::new(false));
    (
        AlarmFeed {
            tx,
            wants_measurements: wants.clone(),
        },
        Engine {
            pool,
            rx,
            handle,
            metrics,
            wants_measurements: wants,
            index: Index::default(),
            states: HashMap::new(),
            devices: HashMap::new(),
        },
    )
}

type StateRow = (i64, String, Json<serde_json::Value>, i64);

fn cached((rule, subject, state, version): StateRow) -> (Key, Cached) {
    let state = decode_state(rule, &subject, state.0);
    ((rule, subject), Cached::loaded(Stored { state, version }))
}

type RuleRow = (
    i64,
    i64,
    TimeZone,
    String,
    String,
    Json<Watch>,
    Json<Condition>,
    Json<Actions>,
);

async fn load_index(pool: &PgPool) -> Result<Index, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.id, r.site_id, s.time_zone, r.name, r.severity, r.watch, r.condition, r.actions
         FROM alarm_rules r JOIN sites s ON s.id = r.site_id WHERE r.enabled",
    )
    .fetch_all(pool)
    .await?;
    let mut index = Index::default();
    // A rule whose site's zone this build does not know is left out, never read in UTC.
    let rules = decodable::<RuleRow>(&rows, "alarm rule");
    for (id, site_id, zone, name, severity, watch, condition, actions) in rules {
        let column = match &watch.0 {
            Watch::Measurement { quantity } => measurement_column(quantity),
            _ => None,
        };
        let info = RuleInfo {
            id,
            site_id,
            name,
            severity: Severity::parse(&severity).unwrap_or(Severity::Warning),
            watch: watch.0,
            condition: condition.0,
            actions: actions.0,
        };
        index.rules.insert(
            id,
            Arc::new(Compiled {
                info,
                zone: zone.tz(),
                column,
            }),
        );
    }
    let members: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT r.id, m.device_id FROM alarm_rules r {MEMBERS_JOIN}
         WHERE r.enabled AND r.watch->>'kind' = 'measurement'"
    ))
    .fetch_all(pool)
    .await?;
    for (rule, device) in members {
        index.by_device.entry(device).or_default().push(rule);
    }
    Ok(index)
}

/// Joins `m` (device_id, gateway_id): the meters a rule `r` covers. A meter is in the site of
/// its gateway, so a rule of site A never covers a meter of site B.
pub const MEMBERS_JOIN: &str = "
    JOIN LATERAL (
        SELECT d.id AS device_id, d.gateway_id FROM devices d
        JOIN gateways g ON g.id = d.gateway_id
        LEFT JOIN circuits c ON c.id = d.circuit_id
        WHERE g.site_id = r.site_id AND d.kind = 'meter' AND (
            r.target = 'site'
            OR (r.target = 'meter' AND d.id = r.device_id)
            OR (r.target = 'circuit' AND d.circuit_id = r.circuit_id)
            OR (r.target = 'panel' AND (d.panel_id = r.panel_id OR c.panel_id = r.panel_id)))
    ) m ON true";

impl Engine {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), String> {
        self.load(&shutdown).await;
        let mut reload = tokio::time::interval(RELOAD_EVERY);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rules_changed = self.handle.rules_changed.clone();
        loop {
            tokio::select! {
                // Rule changes first, so a sample that arrives after an edit sees it.
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = rules_changed.notified() => self.reload().await,
                _ = reload.tick() => self.reload().await,
                input = self.rx.recv() => match input {
                    None => return Ok(()),
                    Some(input) => self.process(input, &shutdown).await,
                },
            }
        }
    }

    /// Rules and saved states, retried until the database answers.
    async fn load(&mut self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let states: Result<Vec<StateRow>, _> =
                sqlx::query_as("SELECT rule_id, subject, state, version FROM alarm_rule_states")
                    .fetch_all(&self.pool)
                    .await;
            let version = self.handle.requested();
            match (states, load_index(&self.pool).await) {
                (Ok(states), Ok(index)) => {
                    self.states = states.into_iter().map(cached).collect();
                    self.set_index(index);
                    self.handle.loaded(version);
                    return;
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "alarm rules not loaded; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn set_index(&mut self, index: Index) {
        // Any measurement rule, even one that covers no meter yet: a meter that appears later
        // (a gateway commissioned after its rules) must reach the evaluator to join it.
        let wanted = index
            .rules
            .values()
            .any(|r| matches!(r.info.watch, Watch::Measurement { .. }));
        self.wants_measurements.store(wanted, Ordering::Relaxed);
        // States of rules that are gone or disabled are forgotten (deleted rows cascade).
        self.states
            .retain(|(rule, _), _| index.rules.contains_key(rule));
        self.index = index;
    }

    async fn reload(&mut self) {
        let version = self.handle.requested();
        match load_index(&self.pool).await {
            Ok(index) => {
                // A state dropped by a rule edit (what it watches changed) is dropped here too.
                let kept: Result<Vec<(i64, String)>, _> =
                    sqlx::query_as("SELECT rule_id, subject FROM alarm_rule_states")
                        .fetch_all(&self.pool)
                        .await;
                if let Ok(kept) = kept {
                    let kept: std::collections::HashSet<_> = kept.into_iter().collect();
                    self.states.retain(|k, _| kept.contains(k));
                }
                // A rule enabled again resumes from its saved states.
                let returning: Vec<i64> = index
                    .rules
                    .keys()
                    .filter(|id| !self.index.rules.contains_key(id))
                    .copied()
                    .collect();
                if !returning.is_empty() {
                    let saved: Result<Vec<StateRow>, _> = sqlx::query_as(
                        "SELECT rule_id, subject, state, version FROM alarm_rule_states
                         WHERE rule_id = ANY($1)",
                    )
                    .bind(&returning)
                    .fetch_all(&self.pool)
                    .await;
                    match saved {
                        Ok(saved) => {
                            for (key, state) in saved.into_iter().map(cached) {
                                self.states.entry(key).or_insert(state);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "alarm rules not reloaded");
                            return;
                        }
                    }
                }
                self.set_index(index);
                self.handle.loaded(version);
            }
            Err(e) => tracing::warn!(error = %e, "alarm rules not reloaded"),
        }
    }

    /// The id of a meter, from the cache or the database (the row is committed before ingest
    /// hands the sample over). Returns whether it was new to the cache.
    async fn device_id(&mut self, key: &DeviceKey) -> Result<Option<(i64, bool)>, sqlx::Error> {
        if let Some(id) = self.devices.get(key) {
            return Ok(Some((*id, false)));
        }
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM devices WHERE gateway_id = $1 AND kind = $2 AND port = $3 AND slot = $4",
        )
        .bind(key.gateway_id)
        .bind(key.kind.as_str())
        .bind(key.port)
        .bind(key.slot)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(id) = id {
            self.devices.insert(key.clone(), id);
        }
        Ok(id.map(|id| (id, true)))
    }

    /// Quarter-hour rules over what the profile worker just computed: each covered meter's
    /// import intervals (energy or mean power) and each site's total (demand), judged at the
    /// end of each quarter-hour, oldest first (the rule state skips those already seen).
    async fn energy_observations(
        &self,
        changed: &EnergyChanged,
    ) -> Result<Vec<Observation>, sqlx::Error> {
        let watched = |kinds: &[&str]| {
            self.index.rules.values().any(|r| {
                let kind = match r.info.watch {
                    Watch::Energy15 => "energy_15min",
                    Watch::MeanPower15 => "mean_power_15min",
                    Watch::PeakDemand => "peak_demand",
                    _ => "",
                };
                kinds.contains(&kind)
            })
        };
        let mut out = Vec::new();
        let bounded = |spans: &[(i64, DateTime<Utc>, DateTime<Utc>)]| {
            let ids: Vec<i64> = spans.iter().map(|s| s.0).collect();
            let los: Vec<DateTime<Utc>> = spans
                .iter()
                .map(|s| s.1.max(s.2 - ENERGY_LOOKBACK))
                .collect();
            let his: Vec<DateTime<Utc>> = spans.iter().map(|s| s.2).collect();
            (ids, los, his)
        };
        if !changed.counters.is_empty() && watched(&["energy_15min", "mean_power_15min"]) {
            let (ids, los, his) = bounded(&changed.counters);
            let rows: Vec<(i64, i64, i64, DateTime<Utc>, f64)> = sqlx::query_as(&format!(
                "SELECT r.id, m.device_id, m.gateway_id, q.start + interval '15 minutes',
                     CASE WHEN r.watch->>'kind' = 'energy_15min' THEN q.energy_milli / 1000.0
                          ELSE q.energy_milli / 250.0 END::float8
                 FROM alarm_rules r {MEMBERS_JOIN}
                 JOIN devices d ON d.id = m.device_id
                 JOIN counters c ON c.device_id = d.id
                      AND c.name = COALESCE(d.import_register, '{import}')
                 JOIN UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS ch(cid, lo, hi)
                      ON ch.cid = c.id
                 JOIN energy_intervals q ON q.counter_id = c.id
                      AND q.start >= ch.lo - interval '15 minutes' AND q.start < ch.hi
                 WHERE r.enabled AND r.watch->>'kind' IN ('energy_15min', 'mean_power_15min')
                 ORDER BY q.start",
                import = crate::accounting::roles::DEFAULT_IMPORT,
            ))
            .bind(&ids)
            .bind(&los)
            .bind(&his)
            .fetch_all(&self.pool)
            .await?;
            out.extend(
                rows.into_iter()
                    .map(|(rule, device, gateway, end, value)| Observation {
                        rule_id: rule,
                        subject: Subject::meter(device, gateway),
                        at: end,
                        value,
                    }),
            );
        }
        if !changed.sites.is_empty() && watched(&["peak_demand"]) {
            let (ids, los, his) = bounded(&changed.sites);
            let rows: Vec<(i64, i64, DateTime<Utc>, f64)> = sqlx::query_as(
                "SELECT r.id, r.site_id, q.start + interval '15 minutes',
                        (q.energy_milli / 250.0)::float8
                 FROM alarm_rules r
                 JOIN UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS ch(sid, lo, hi)
                      ON ch.sid = r.site_id
                 JOIN site_intervals q ON q.site_id = r.site_id
                      AND q.start >= ch.lo - interval '15 minutes' AND q.start < ch.hi
                 WHERE r.enabled AND r.watch->>'kind' = 'peak_demand'
                 ORDER BY q.start",
            )
            .bind(&ids)
            .bind(&los)
            .bind(&his)
            .fetch_all(&self.pool)
            .await?;
            out.extend(
                rows.into_iter()
                    .map(|(rule, site, end, value)| Observation {
                        rule_id: rule,
                        subject: Subject::site(site),
                        at: end,
                        value,
                    }),
            );
        }
        // Oldest first across rules, so each subject's state sees its quarter-hours in order.
        out.sort_by_key(|o| o.at);
        Ok(out)
    }

    async fn observations(&mut self, samples: Vec<Sample>) -> Vec<Observation> {
        let mut resolved = Vec::with_capacity(samples.len());
        let mut new_device = false;
        for s in samples {
            match self.device_id(&s.device).await {
                Ok(Some((id, new))) => {
                    new_device |= new;
                    resolved.push((id, s));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "meter of a sample not resolved"),
            }
        }
        if new_device {
            // A meter new to this process may be covered by a site, panel or circuit rule.
            self.reload().await;
        }
        let mut out = Vec::new();
        for (device, s) in resolved {
            let Some(rules) = self.index.by_device.get(&device) else {
                continue;
            };
            for rule in rules {
                let Some(compiled) = self.index.rules.get(rule) else {
                    continue;
                };
                let Some(value) = compiled.column.and_then(|c| s.values[c]) else {
                    continue;
                };
                out.push(Observation {
                    rule_id: *rule,
                    subject: Subject::meter(device, s.device.gateway_id),
                    at: s.ts,
                    value: f64::from(value),
                });
            }
        }
        out
    }

    async fn process(&mut self, input: Input, shutdown: &CancellationToken) {
        let obs = match input {
            Input::Measurements(samples) => self.observations(samples).await,
            Input::Observations(obs) => obs,
            Input::Energy(changed) => match self.energy_observations(&changed).await {
                Ok(obs) => obs,
                Err(e) => {
                    tracing::warn!(error = %e, "quarter-hour alarm rules not evaluated");
                    Vec::new()
                }
            },
        };
        let work = resolve::group(obs, &self.index.rules);
        if work.is_empty() {
            return;
        }
        // Most batches change nothing: judged against the rows without a lock. Otherwise (or
        // when that read fails) the locked path, retried until it commits.
        match judge_unlocked(&self.pool, &work, &self.states).await {
            Ok(Some(stepped)) => {
                for (w, s) in work.iter().zip(stepped) {
                    self.states.insert(w.key.clone(), s.cached(None));
                }
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "alarm states not read; taking the locked path"),
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let done = loop {
            match persist(&self.pool, &work, &self.states).await {
                Ok(done) => break done,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                        "alarm state not written; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let mut changes = Vec::new();
        for (key, cached, changed) in done {
            self.states.insert(key, cached);
            changes.extend(changed);
        }
        if !changes.is_empty() {
            for change in &changes {
                match change {
                    Change::Raise { .. } => self.metrics.alarms_raised.inc(),
                    Change::Clear { .. } => self.metrics.alarms_cleared.inc(),
                }
            }
            self.handle.outbox_wake.notify_one();
        }
    }
}
