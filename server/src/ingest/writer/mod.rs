//! Moves a batch of normalised rows into PostgreSQL in one transaction.
//!
//! Every table is written with one `INSERT ... SELECT FROM UNNEST(...)` per batch, so a batch of
//! two thousand messages costs a handful of round trips, not thousands. Every insert is
//! idempotent (`ON CONFLICT DO NOTHING` on natural keys, or on the journal position), so a batch
//! replayed after a crash or a database outage changes nothing that was already committed.
//!
//! `resolve` finds the device and counter ids, one module per table inserts its rows
//! (`measurements`, `counters`, `relays`, `events`, `gateways`), and `conflicts` turns what
//! they refused or noticed into rejects.
//!
//! # Conflicting replays
//!
//! A measurement, counter reading or relay state whose key (device or counter, time) is
//! already stored is skipped. When the stored row says the same thing (a journal replay, a
//! gateway resending) that is silent; when it says something else (`U1` = 111 V stored, this
//! message 222 V at the same instant) the skipped row is a *conflicting replay* and its message
//! gets a reject in the same transaction, with the stored and the refused values in the reason
//! and the message verbatim as payload: the first value stays, and the second is not lost.
//! The check costs nothing while every row is new: it runs only when an insert stored fewer
//! rows than it was given.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::normalize::{CounterDef, DeviceAttrs, DeviceKey, Rows};
use conflicts::with_conflicts;
use counters::insert_counter_readings;
use events::{insert_events, insert_rejects};
use gateways::update_gateways;
use measurements::insert_measurements;
use relays::insert_relay_states;
use resolve::{resolve_counters, resolve_devices};

mod conflicts;
mod counters;
mod events;
mod gateways;
mod measurements;
mod relays;
mod resolve;

pub use conflicts::{Conflict, Note};

/// Ids of devices and counters already in the database, so the steady state skips the upserts.
/// Filled only after a commit: an id from a rolled-back transaction does not exist.
#[derive(Default)]
pub struct IdCache {
    devices: Mutex<HashMap<DeviceKey, (i64, DeviceAttrs)>>,
    counters: Mutex<HashMap<(i64, String), (i64, CounterDef)>>,
}

impl IdCache {
    /// Forgets every id: after a failed batch, in case one of them was deleted since (its
    /// rows would fail the parent check forever); the retry resolves them again.
    pub fn clear(&self) {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn device(&self, key: &DeviceKey, attrs: &DeviceAttrs) -> Option<i64> {
        let map = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, known)| attrs.changes_nothing(known))
            .map(|(id, _)| *id)
    }

    /// Whether every device and counter of `rows` is known as it is: the batch registers
    /// nothing (writes no row that another batch may write too).
    fn knows_all(&self, rows: &Rows) -> bool {
        let mut ids = HashMap::with_capacity(rows.devices.len());
        for (key, attrs) in &rows.devices {
            let Some(id) = self.device(key, attrs) else {
                return false;
            };
            ids.insert(key, id);
        }
        rows.counter_defs.iter().all(|((key, _), def)| {
            ids.get(key)
                .is_some_and(|id| self.counter(*id, def).is_some())
        })
    }

    fn counter(&self, device_id: i64, def: &CounterDef) -> Option<i64> {
        let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(device_id, def.name.clone()))
            .filter(|(_, d)| same_counter(d, def))
            .map(|(id, _)| *id)
    }
}

fn same_counter(a: &CounterDef, b: &CounterDef) -> bool {
    a.idx == b.idx
        && a.resettable == b.resettable
        && a.unit == b.unit
        && a.phase == b.phase
        && a.tariffs == b.tariffs
}

pub struct Written {
    pub measurements: u64,
    pub counter_readings: u64,
    pub relay_states: u64,
    pub events: u64,
    pub rejects: u64,
    /// Measurements of the batch that were not stored because their (device, ts) holds other
    /// values (journal seq, device, ts): not to be handed on as if they were data.
    pub refused_measurements: Vec<(i64, DeviceKey, DateTime<Utc>)>,
}

/// How long a batch holds its finished transaction open waiting for the batches before it to
/// commit before it looks whether it blocks someone; if so, the transaction gives way (rolls
/// back): an earlier batch may be waiting on
/// a row this one holds (a gateway's message redelivered into both, a device seen for the first
/// time in both), which PostgreSQL cannot see as a deadlock because half of the wait is here.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether another session waits on a lock this transaction holds.
async fn blocks_others(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                        WHERE wait_event_type = 'Lock'
                          AND pg_backend_pid() = ANY (pg_blocking_pids(pid)))",
    )
    .fetch_one(&mut **tx)
    .await
}

/// Writes one batch in one transaction, committed once `turn` resolves (every earlier batch of
/// the journal is committed), so a gateway's rows become visible in the order it sent them.
/// Returns `None` when the transaction gave way (see [`TURN_WAIT`]): nothing was written, and
/// the caller writes the batch again once its turn has come.
pub async fn write(
    pool: &PgPool,
    cache: &IdCache,
    epoch: i64,
    rows: &Rows,
    turn: impl std::future::Future<Output = ()>,
) -> Result<Option<Written>, sqlx::Error> {
    let mut turn = std::pin::pin!(turn);
    // A batch that registers devices or counters upserts rows the batches around it may upsert
    // too (a fleet's first messages): it takes its turn before it writes anything, so it never
    // holds a row an earlier batch waits for.
    let registers = !cache.knows_all(rows);
    if registers {
        turn.as_mut().await;
    }
    let mut tx = pool.begin().await?;
    let devices = resolve_devices(&mut tx, cache, rows).await?;
    let counters = resolve_counters(&mut tx, cache, rows, &devices).await?;
    let mut conflicts = Vec::new();
    let mut notes = Vec::new();
    let measurements = insert_measurements(&mut tx, rows, &devices, &mut conflicts).await?;
    let conflicts_measurements: Vec<(i64, DeviceKey, DateTime<Utc>)> = conflicts
        .iter()
        .filter_map(|c| c.measurement.clone())
        .collect();
    let counter_readings = insert_counter_readings(
        &mut tx,
        rows,
        &devices,
        &counters,
        &mut conflicts,
        &mut notes,
    )
    .await?;
    let relay_states = insert_relay_states(&mut tx, rows, &devices, &mut conflicts).await?;
    let rejects = with_conflicts(rows, conflicts, notes);
    let written = Written {
        measurements,
        counter_readings,
        relay_states,
        events: insert_events(&mut tx, epoch, rows).await?,
        rejects: insert_rejects(&mut tx, epoch, &rejects).await?,
        refused_measurements: conflicts_measurements,
    };
    if !registers {
        // Waiting long is normal under load; giving way (redoing the batch) is only worth it
        // when someone waits on this transaction.
        while tokio::time::timeout(TURN_WAIT, turn.as_mut())
            .await
            .is_err()
        {
            if blocks_others(&mut tx).await? {
                tx.rollback().await?;
                return Ok(None);
            }
        }
    }
    // After the wait: consecutive batches of one gateway update its row, and the earlier one
    // must not find it locked by the later one.
    update_gateways(&mut tx, rows).await?;
    tx.commit().await?;

    let mut map = cache.devices.lock().unwrap_or_else(|e| e.into_inner());
    for (key, attrs) in &rows.devices {
        if let Some(id) = devices.get(key) {
            map.entry(key.clone())
                .and_modify(|(known_id, known)| {
                    *known_id = *id;
                    known.merge(attrs);
                })
                .or_insert_with(|| (*id, attrs.clone()));
        }
    }
    drop(map);
    let mut map = cache.counters.lock().unwrap_or_else(|e| e.into_inner());
    for ((key, name), def) in &rows.counter_defs {
        if let (Some(device_id), Some(id)) = (
            devices.get(key),
            devices
                .get(key)
                .and_then(|d| counters.get(&(*d, name.clone()))),
        ) {
            map.insert((*device_id, name.clone()), (*id, def.clone()));
        }
    }
    Ok(Some(written))
}
