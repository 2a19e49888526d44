//! Moves a batch of normalised rows into PostgreSQL in one transaction.
//!
//! Every table is written with one `INSERT ... SELECT FROM UNNEST(...)` per batch, so a batch of
//! two thousand messages costs a handful of round trips, not thousands. Every insert is
//! idempotent (`ON CONFLICT DO NOTHING` on natural keys, or on the journal position), so a batch
//! replayed after a crash or a database outage changes nothing that was already committed.
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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::clock::BEYOND_HORIZON;
use super::normalize::{CounterDef, DeviceAttrs, DeviceKey, RejectRow, Rows, MEASUREMENT_COLUMNS};

/// Ids of devices and counters already in the database, so the steady state skips the upserts.
/// Filled only after a commit: an id from a rolled-back transaction does not exist.
#[derive(Default)]
pub struct IdCache {
    devices: Mutex<HashMap<DeviceKey, (i64, DeviceAttrs)>>,
    counters: Mutex<HashMap<(i64, String), (i64, CounterDef)>>,
}

impl IdCache {
    fn device(&self, key: &DeviceKey, attrs: &DeviceAttrs) -> Option<i64> {
        let map = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, known)| attrs.changes_nothing(known))
            .map(|(id, _)| *id)
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

pub async fn write(
    pool: &PgPool,
    cache: &IdCache,
    epoch: i64,
    rows: &Rows,
) -> Result<Written, sqlx::Error> {
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
    Ok(written)
}

async fn resolve_devices(
    tx: &mut Transaction<'_, Postgres>,
    cache: &IdCache,
    rows: &Rows,
) -> Result<HashMap<DeviceKey, i64>, sqlx::Error> {
    let mut ids = HashMap::with_capacity(rows.devices.len());
    let mut missing: Vec<(&DeviceKey, &DeviceAttrs)> = Vec::new();
    for (key, attrs) in &rows.devices {
        match cache.device(key, attrs) {
            Some(id) => {
                ids.insert(key.clone(), id);
            }
            None => missing.push((key, attrs)),
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    // Deterministic order keeps concurrent writers from deadlocking on the same devices.
    missing.sort_by_key(|(k, _)| (k.gateway_id, k.kind.as_str(), k.port, k.slot));
    let gateway: Vec<i64> = missing.iter().map(|(k, _)| k.gateway_id).collect();
    let kind: Vec<&str> = missing.iter().map(|(k, _)| k.kind.as_str()).collect();
    let port: Vec<&str> = missing.iter().map(|(k, _)| k.port).collect();
    let slot: Vec<i16> = missing.iter().map(|(k, _)| k.slot).collect();
    let serial: Vec<&str> = missing.iter().map(|(_, a)| a.serial.as_str()).collect();
    let addr: Vec<Option<i32>> = missing.iter().map(|(_, a)| a.modbus_addr).collect();
    let phases: Vec<Option<i16>> = missing.iter().map(|(_, a)| a.phases).collect();
    let text = |f: fn(&DeviceAttrs) -> &Option<String>| -> Vec<Option<&str>> {
        missing.iter().map(|(_, a)| f(a).as_deref()).collect()
    };
    let description = text(|a| &a.description);
    let location = text(|a| &a.location);
    let sg_description = text(|a| &a.sg_description);
    let model = text(|a| &a.model);
    let found: Vec<(i64, i64, String, String, i16)> = sqlx::query_as(
        "INSERT INTO devices AS d (gateway_id, kind, port, slot, serial, model, modbus_addr, phases,
                                   description, location, sg_description)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int2[], $5::text[],
                              $6::text[], $7::int4[], $8::int2[], $9::text[], $10::text[], $11::text[])
         ON CONFLICT (gateway_id, kind, port, slot) DO UPDATE SET
             serial = EXCLUDED.serial,
             model = COALESCE(EXCLUDED.model, d.model),
             modbus_addr = COALESCE(EXCLUDED.modbus_addr, d.modbus_addr),
             phases = COALESCE(EXCLUDED.phases, d.phases),
             description = COALESCE(EXCLUDED.description, d.description),
             location = COALESCE(EXCLUDED.location, d.location),
             sg_description = COALESCE(EXCLUDED.sg_description, d.sg_description),
             updated_at = now()
         RETURNING id, gateway_id, kind, port, slot",
    )
    .bind(&gateway)
    .bind(&kind)
    .bind(&port)
    .bind(&slot)
    .bind(&serial)
    .bind(&model)
    .bind(&addr)
    .bind(&phases)
    .bind(&description)
    .bind(&location)
    .bind(&sg_description)
    .fetch_all(&mut **tx)
    .await?;
    for (id, gateway_id, kind, port, slot) in found {
        if let Some((key, _)) = missing.iter().find(|(k, _)| {
            k.gateway_id == gateway_id
                && k.kind.as_str() == kind
                && k.port == port
                && k.slot == slot
        }) {
            ids.insert((*key).clone(), id);
        }
    }
    Ok(ids)
}

async fn resolve_counters(
    tx: &mut Transaction<'_, Postgres>,
    cache: &IdCache,
    rows: &Rows,
    devices: &HashMap<DeviceKey, i64>,
) -> Result<HashMap<(i64, String), i64>, sqlx::Error> {
    let mut ids = HashMap::with_capacity(rows.counter_defs.len());
    let mut missing: Vec<(i64, &CounterDef)> = Vec::new();
    for ((key, name), def) in &rows.counter_defs {
        let Some(&device_id) = devices.get(key) else {
            continue;
        };
        match cache.counter(device_id, def) {
            Some(id) => {
                ids.insert((device_id, name.clone()), id);
            }
            None => missing.push((device_id, def)),
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    missing.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let device: Vec<i64> = missing.iter().map(|(d, _)| *d).collect();
    let name: Vec<&str> = missing.iter().map(|(_, c)| c.name.as_str()).collect();
    let idx: Vec<i16> = missing.iter().map(|(_, c)| c.idx).collect();
    let resettable: Vec<bool> = missing.iter().map(|(_, c)| c.resettable).collect();
    let unit: Vec<&str> = missing.iter().map(|(_, c)| c.unit).collect();
    let phase: Vec<Option<&str>> = missing.iter().map(|(_, c)| c.phase.as_deref()).collect();
    // Tariff sets travel as text ("1 2 3 4") because UNNEST cannot carry an array of arrays.
    let tariffs: Vec<String> = missing
        .iter()
        .map(|(_, c)| {
            c.tariffs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let found: Vec<(i64, i64, String)> = sqlx::query_as(
        "INSERT INTO counters AS c (device_id, name, idx, resettable, unit, phase, tariffs)
         SELECT u.d, u.n, u.i, u.r, u.un, u.ph,
                COALESCE(string_to_array(NULLIF(u.t, ''), ' ')::int2[], '{}')
         FROM UNNEST($1::int8[], $2::text[], $3::int2[], $4::bool[], $5::text[], $6::text[], $7::text[])
              AS u(d, n, i, r, un, ph, t)
         ON CONFLICT (device_id, name) DO UPDATE SET
             idx = EXCLUDED.idx, resettable = EXCLUDED.resettable, unit = EXCLUDED.unit,
             phase = EXCLUDED.phase, tariffs = EXCLUDED.tariffs
         RETURNING id, device_id, name",
    )
    .bind(&device)
    .bind(&name)
    .bind(&idx)
    .bind(&resettable)
    .bind(&unit)
    .bind(&phase)
    .bind(&tariffs)
    .fetch_all(&mut **tx)
    .await?;
    for (id, device_id, name) in found {
        ids.insert((device_id, name), id);
    }
    Ok(ids)
}

/// A row refused because its key holds other values: which message, and what differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub seq: i64,
    pub gateway_id: i64,
    pub what: String,
    /// For a measurement: its (seq, device, ts).
    pub measurement: Option<(i64, DeviceKey, DateTime<Utc>)>,
}

/// Something the writer found about rows it stored, reported as a partial reject of their
/// message: counter readings dated before their device's commissioning.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub seq: i64,
    pub gateway_id: i64,
    pub what: String,
}

/// The batch's rejects plus one per message with conflicting rows or notes (merged into the
/// message's own reject when it has one: rejects are keyed on the journal position).
fn with_conflicts(rows: &Rows, conflicts: Vec<Conflict>, notes: Vec<Note>) -> Cow<'_, [RejectRow]> {
    if conflicts.is_empty() && notes.is_empty() {
        return Cow::Borrowed(&rows.rejects);
    }
    let mut by_seq: BTreeMap<i64, (i64, Vec<String>)> = BTreeMap::new();
    for c in conflicts {
        by_seq
            .entry(c.seq)
            .or_insert_with(|| (c.gateway_id, Vec::new()))
            .1
            .push(c.what);
    }
    let mut keyed: HashMap<i64, usize> = HashMap::new();
    for seq in rows
        .measurements
        .iter()
        .map(|m| m.seq)
        .chain(rows.counter_readings.iter().map(|c| c.seq))
        .chain(rows.relay_states.iter().map(|r| r.seq))
    {
        *keyed.entry(seq).or_default() += 1;
    }
    let mut rejects = rows.rejects.clone();
    for (seq, (gateway_id, whats)) in by_seq {
        // Partial: some of the message's rows were stored (or were already there, the same).
        let partial = keyed.get(&seq).copied().unwrap_or(0) > whats.len();
        let reason = format!(
            "conflicting replay: {} (the stored values are kept; this message's were not \
             stored)",
            whats.join("; ")
        );
        add_reject(&mut rejects, rows, seq, gateway_id, &reason, partial);
    }
    let mut by_seq: BTreeMap<i64, (i64, Vec<String>)> = BTreeMap::new();
    for n in notes {
        let entry = by_seq
            .entry(n.seq)
            .or_insert_with(|| (n.gateway_id, Vec::new()));
        if !entry.1.contains(&n.what) {
            entry.1.push(n.what);
        }
    }
    for (seq, (gateway_id, whats)) in by_seq {
        add_reject(&mut rejects, rows, seq, gateway_id, &whats.join("; "), true);
    }
    Cow::Owned(rejects)
}

/// Adds `reason` to message `seq`'s reject: appended to the one it has (a partial reject stays
/// partial only if this one is too), else a new reject carrying the message's record.
fn add_reject(
    rejects: &mut Vec<RejectRow>,
    rows: &Rows,
    seq: i64,
    gateway_id: i64,
    reason: &str,
    partial: bool,
) {
    if let Some(existing) = rejects.iter_mut().find(|r| r.seq == seq) {
        existing.reason =
            super::normalize::truncate(&format!("{}; {reason}", existing.reason), 4096);
        existing.partial &= partial;
    } else if let Some(record) = rows.records.get(&seq) {
        tracing::warn!(
            topic = %record.topic,
            client = %record.client,
            %reason,
            "ingest reject"
        );
        rejects.push(RejectRow {
            received_at: record.received_at,
            source: record.source.clone(),
            topic: record.topic.clone(),
            client: record.client.clone(),
            gateway_id: Some(gateway_id),
            reason: super::normalize::truncate(reason, 4096),
            partial,
            payload: record.payload.clone(),
            seq,
        });
    }
}

fn device_name(key: &DeviceKey) -> String {
    format!("{} {}/{}", key.kind.as_str(), key.port, key.slot)
}

fn at(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

async fn insert_measurements(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
    devices: &HashMap<DeviceKey, i64>,
    conflicts: &mut Vec<Conflict>,
) -> Result<u64, sqlx::Error> {
    let present: Vec<_> = rows
        .measurements
        .iter()
        .filter_map(|m| devices.get(&m.device).map(|id| (*id, m)))
        .collect();
    if present.is_empty() {
        return Ok(0);
    }
    let value_columns = &MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1];
    let sql = measurement_sql(value_columns);
    let mut query = sqlx::query(&sql)
        .bind(present.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
        .bind(
            present
                .iter()
                .map(|(_, m)| m.ts)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            present
                .iter()
                .map(|(_, m)| m.received_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(present.iter().map(|(_, m)| m.flags).collect::<Vec<i16>>())
        .bind(
            present
                .iter()
                .map(|(_, m)| m.tariff)
                .collect::<Vec<Option<i16>>>(),
        );
    for column in 0..value_columns.len() {
        query = query.bind(
            present
                .iter()
                .map(|(_, m)| m.values[column])
                .collect::<Vec<Option<f32>>>(),
        );
    }
    let inserted = query.execute(&mut **tx).await?.rows_affected();
    if inserted < present.len() as u64 {
        measurement_conflicts(tx, &present, value_columns, conflicts).await?;
    }
    Ok(inserted)
}

/// The rows of `present` whose (device, ts) holds other values than theirs.
async fn measurement_conflicts(
    tx: &mut Transaction<'_, Postgres>,
    present: &[(i64, &super::normalize::MeasurementRow)],
    value_columns: &[&str],
    conflicts: &mut Vec<Conflict>,
) -> Result<(), sqlx::Error> {
    let stored: Vec<String> = value_columns.iter().map(|c| format!("m.{c}")).collect();
    let names: Vec<String> = (0..value_columns.len()).map(|i| format!("c{i}")).collect();
    let given: Vec<String> = names.iter().map(|n| format!("u.{n}")).collect();
    let params: Vec<String> = (0..value_columns.len())
        .map(|i| format!("${}::float4[]", i + 4))
        .collect();
    let sql = format!(
        "SELECT u.ord, m.tariff, ARRAY[{stored}]::float4[]
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::int2[], {params})
              WITH ORDINALITY AS u(d, t, tariff, {names}, ord)
         JOIN measurements m ON m.device_id = u.d AND m.ts = u.t
         WHERE (m.tariff, {stored}) IS DISTINCT FROM (u.tariff, {given})",
        stored = stored.join(", "),
        given = given.join(", "),
        names = names.join(", "),
        params = params.join(", "),
    );
    let mut query = sqlx::query_as::<_, (i64, Option<i16>, Vec<Option<f32>>)>(&sql)
        .bind(present.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
        .bind(present.iter().map(|(_, m)| m.ts).collect::<Vec<_>>())
        .bind(
            present
                .iter()
                .map(|(_, m)| m.tariff)
                .collect::<Vec<Option<i16>>>(),
        );
    for column in 0..value_columns.len() {
        query = query.bind(
            present
                .iter()
                .map(|(_, m)| m.values[column])
                .collect::<Vec<Option<f32>>>(),
        );
    }
    let show = |v: Option<f32>| v.map_or_else(|| "absent".to_owned(), |v| v.to_string());
    for (ord, tariff, values) in query.fetch_all(&mut **tx).await? {
        let Some((_, m)) = usize::try_from(ord - 1).ok().and_then(|i| present.get(i)) else {
            continue;
        };
        let mut differ: Vec<String> = value_columns
            .iter()
            .zip(values.iter().zip(&m.values))
            .filter(|(_, (old, new))| old != new)
            .map(|(column, (old, new))| {
                format!("{column} stored {}, here {}", show(*old), show(*new))
            })
            .collect();
        if tariff != m.tariff {
            differ.push(format!("tariff stored {tariff:?}, here {:?}", m.tariff));
        }
        conflicts.push(Conflict {
            seq: m.seq,
            gateway_id: m.device.gateway_id,
            measurement: Some((m.seq, m.device.clone(), m.ts)),
            what: format!(
                "the measurements of {} at {} are already stored with other values ({})",
                device_name(&m.device),
                at(m.ts),
                differ.join(", ")
            ),
        });
    }
    Ok(())
}

fn measurement_sql(value_columns: &[&str]) -> String {
    let columns = value_columns.join(", ");
    let params: Vec<String> = (0..value_columns.len())
        .map(|i| format!("${}::float4[]", i + 6))
        .collect();
    format!(
        "INSERT INTO measurements (device_id, ts, received_at, flags, tariff, {columns})
         SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::int2[],
                              $5::int2[], {})
         ON CONFLICT (device_id, ts) DO NOTHING",
        params.join(", ")
    )
}

async fn insert_counter_readings(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
    devices: &HashMap<DeviceKey, i64>,
    counters: &HashMap<(i64, String), i64>,
    conflicts: &mut Vec<Conflict>,
    notes: &mut Vec<Note>,
) -> Result<u64, sqlx::Error> {
    let mut given = Vec::with_capacity(rows.counter_readings.len());
    let mut id = Vec::with_capacity(rows.counter_readings.len());
    let mut ts = Vec::with_capacity(rows.counter_readings.len());
    let mut value = Vec::with_capacity(rows.counter_readings.len());
    let mut received = Vec::with_capacity(rows.counter_readings.len());
    let mut flags = Vec::with_capacity(rows.counter_readings.len());
    for r in &rows.counter_readings {
        let Some(counter) = devices
            .get(&r.device)
            .and_then(|d| counters.get(&(*d, r.name.clone())))
        else {
            continue;
        };
        given.push(r);
        id.push(*counter);
        ts.push(r.ts);
        value.push(r.value_milli);
        received.push(r.received_at);
        flags.push(r.flags);
    }
    if id.is_empty() {
        return Ok(0);
    }
    // The readings that were new (a redelivery changes nothing) queue their span for the
    // profile worker in the same transaction, so intervals can never miss a committed reading.
    // Readings beyond the backlog horizon are stored but never accounted: they queue nothing.
    // Readings before their device's commissioning are queued like any other (the worker
    // leaves them out by the commissioning date it reads, so a concurrent change of that date
    // cannot lose one); the same statement returns the commissioning dates of the batch's
    // counters (most have none), read in this transaction: no extra round trip, no cache to
    // go stale.
    let (inserted, commissioned_ids, commissioned_at): (i64, Vec<i64>, Vec<DateTime<Utc>>) =
        sqlx::query_as(
        "WITH ins AS (
             INSERT INTO counter_readings (counter_id, ts, value_milli, received_at, flags)
             SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[], $4::timestamptz[], $5::int2[])
             ON CONFLICT (counter_id, ts) DO NOTHING
             RETURNING counter_id, ts, flags
         ), dirty AS (
             INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
             SELECT counter_id, min(ts), max(ts), true FROM ins
             WHERE flags & $6 = 0 GROUP BY counter_id
         ), commissioned AS (
             SELECT c.id, d.commissioned_at FROM counters c JOIN devices d ON d.id = c.device_id
             WHERE c.id = ANY($1) AND d.commissioned_at IS NOT NULL
         )
         SELECT (SELECT count(*) FROM ins),
                COALESCE((SELECT array_agg(id ORDER BY id) FROM commissioned), '{}'),
                COALESCE((SELECT array_agg(commissioned_at ORDER BY id) FROM commissioned), '{}')",
    )
    .bind(&id)
    .bind(&ts)
    .bind(&value)
    .bind(&received)
    .bind(&flags)
    .bind(BEYOND_HORIZON)
    .fetch_one(&mut **tx)
    .await?;
    if !commissioned_ids.is_empty() {
        let commissioned: HashMap<i64, DateTime<Utc>> =
            commissioned_ids.into_iter().zip(commissioned_at).collect();
        for (r, counter) in given.iter().zip(&id) {
            // Beyond the horizon: already reported, and out of the accounting anyway.
            if r.flags & BEYOND_HORIZON != 0 {
                continue;
            }
            if let Some(since) = commissioned.get(counter).filter(|since| r.ts < **since) {
                notes.push(Note {
                    seq: r.seq,
                    gateway_id: r.device.gateway_id,
                    what: before_commissioning(&r.device, r.ts, *since),
                });
            }
        }
    }
    if inserted.unsigned_abs() < id.len() as u64 {
        let differ: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT u.ord, r.value_milli
             FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[]) WITH ORDINALITY AS u(c, t, v, ord)
             JOIN counter_readings r ON r.counter_id = u.c AND r.ts = u.t
             WHERE r.value_milli <> u.v",
        )
        .bind(&id)
        .bind(&ts)
        .bind(&value)
        .fetch_all(&mut **tx)
        .await?;
        for (ord, stored) in differ {
            let Some(r) = usize::try_from(ord - 1).ok().and_then(|i| given.get(i)) else {
                continue;
            };
            conflicts.push(Conflict {
                seq: r.seq,
                gateway_id: r.device.gateway_id,
                measurement: None,
                what: format!(
                    "counter {} of {} at {} is already stored as {stored} milli-units, here {}",
                    r.name,
                    device_name(&r.device),
                    at(r.ts),
                    r.value_milli
                ),
            });
        }
    }
    Ok(inserted.unsigned_abs())
}

/// The reason given for counter readings of `device` dated `ts`, before its commissioning.
fn before_commissioning(device: &DeviceKey, ts: DateTime<Utc>, since: DateTime<Utc>) -> String {
    format!(
        "counter readings of {} dated {} are before the meter's commissioning at {} \
         (devices.commissioned_at): stored but not turned into energy intervals",
        device_name(device),
        at(ts),
        at(since)
    )
}

/// Two reports of different relay states for the same second received at most this far apart
/// are a switch within that second (the SG's `local_time` has whole seconds): the later one is
/// the relay's state and replaces the earlier. Further apart, the later one is a conflicting
/// replay.
const RELAY_FLIP_WINDOW_SECS: i64 = 60;

async fn insert_relay_states(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
    devices: &HashMap<DeviceKey, i64>,
    conflicts: &mut Vec<Conflict>,
) -> Result<u64, sqlx::Error> {
    let mut given: Vec<_> = rows
        .relay_states
        .iter()
        .filter_map(|r| devices.get(&r.device).map(|id| (*id, r)))
        .collect();
    if given.is_empty() {
        return Ok(0);
    }
    let window = chrono::Duration::seconds(RELAY_FLIP_WINDOW_SECS);
    // One row per (device, ts) in the insert (an upsert may not touch a row twice): the same
    // state again is a repeat, another state within the window a switch (the later wins),
    // beyond it a conflict.
    given.sort_by_key(|(id, r)| (*id, r.ts, r.received_at, r.seq));
    let mut present: Vec<(i64, &super::normalize::RelayStateRow)> = Vec::with_capacity(given.len());
    for (id, r) in given {
        match present.last_mut() {
            Some((last_id, last)) if *last_id == id && last.ts == r.ts => {
                if last.state == r.state {
                } else if r.received_at - last.received_at <= window {
                    *last = r;
                } else {
                    conflicts.push(relay_conflict(r, last.state));
                }
            }
            _ => present.push((id, r)),
        }
    }
    let done = sqlx::query(
        "INSERT INTO relay_states AS s (device_id, ts, state, received_at, flags)
         SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::int2[], $4::timestamptz[], $5::int2[])
         ON CONFLICT (device_id, ts) DO UPDATE SET
             state = EXCLUDED.state, received_at = EXCLUDED.received_at, flags = EXCLUDED.flags
         WHERE s.state <> EXCLUDED.state AND EXCLUDED.received_at > s.received_at
           AND EXCLUDED.received_at <= s.received_at + make_interval(secs => $6)",
    )
    .bind(present.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
    .bind(present.iter().map(|(_, r)| r.ts).collect::<Vec<_>>())
    .bind(present.iter().map(|(_, r)| r.state).collect::<Vec<i16>>())
    .bind(present.iter().map(|(_, r)| r.received_at).collect::<Vec<_>>())
    .bind(present.iter().map(|(_, r)| r.flags).collect::<Vec<i16>>())
    .bind(RELAY_FLIP_WINDOW_SECS as f64)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() < present.len() as u64 {
        // Not stored, not the same, and not a switch within the window of the stored report
        // (a journal replay of the earlier report of a switch is silent).
        let differ: Vec<(i64, i16)> = sqlx::query_as(
            "SELECT u.ord, s.state
             FROM UNNEST($1::int8[], $2::timestamptz[], $3::int2[], $4::timestamptz[])
                  WITH ORDINALITY AS u(d, t, v, r, ord)
             JOIN relay_states s ON s.device_id = u.d AND s.ts = u.t
             WHERE s.state <> u.v
               AND abs(extract(epoch FROM s.received_at - u.r)) > $5",
        )
        .bind(present.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
        .bind(present.iter().map(|(_, r)| r.ts).collect::<Vec<_>>())
        .bind(present.iter().map(|(_, r)| r.state).collect::<Vec<i16>>())
        .bind(
            present
                .iter()
                .map(|(_, r)| r.received_at)
                .collect::<Vec<_>>(),
        )
        .bind(RELAY_FLIP_WINDOW_SECS as f64)
        .fetch_all(&mut **tx)
        .await?;
        for (ord, stored) in differ {
            if let Some((_, r)) = usize::try_from(ord - 1).ok().and_then(|i| present.get(i)) {
                conflicts.push(relay_conflict(r, stored));
            }
        }
    }
    Ok(done.rows_affected())
}

fn relay_conflict(r: &super::normalize::RelayStateRow, stored: i16) -> Conflict {
    Conflict {
        seq: r.seq,
        gateway_id: r.device.gateway_id,
        measurement: None,
        what: format!(
            "the state of {} at {} is already stored as {stored}, here {} (received more than \
             {RELAY_FLIP_WINDOW_SECS} s after it: not a switch within that second)",
            device_name(&r.device),
            at(r.ts),
            r.state
        ),
    }
}

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    epoch: i64,
    rows: &Rows,
) -> Result<u64, sqlx::Error> {
    if rows.events.is_empty() {
        return Ok(0);
    }
    let e = &rows.events;
    let done = sqlx::query(
        "INSERT INTO gateway_events (gateway_id, kind, received_at, body, journal_epoch, journal_seq)
         SELECT u.g, u.k, u.r, u.b, $5, u.s
         FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[], $4::text[], $6::int8[])
              AS u(g, k, r, b, s)
         ON CONFLICT (journal_epoch, journal_seq) DO NOTHING",
    )
    .bind(e.iter().map(|x| x.gateway_id).collect::<Vec<i64>>())
    .bind(e.iter().map(|x| x.kind).collect::<Vec<&str>>())
    .bind(e.iter().map(|x| x.received_at).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.body.as_str()).collect::<Vec<&str>>())
    .bind(epoch)
    .bind(e.iter().map(|x| x.seq).collect::<Vec<i64>>())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn insert_rejects(
    tx: &mut Transaction<'_, Postgres>,
    epoch: i64,
    r: &[RejectRow],
) -> Result<u64, sqlx::Error> {
    if r.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO ingest_rejects (received_at, source, topic, client, gateway_id, reason, partial,
                                     payload, payload_size, journal_epoch, journal_seq)
         SELECT u.ra, u.so, u.t, u.c, u.g, u.re, u.pa, u.pl, octet_length(u.pl), $9, u.s
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[],
                     $7::bool[], $8::bytea[], $10::int8[]) AS u(ra, so, t, c, g, re, pa, pl, s)
         ON CONFLICT (journal_epoch, journal_seq) DO NOTHING",
    )
    .bind(r.iter().map(|x| x.received_at).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.source.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.topic.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.client.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.gateway_id).collect::<Vec<Option<i64>>>())
    .bind(r.iter().map(|x| x.reason.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.partial).collect::<Vec<bool>>())
    .bind(r.iter().map(|x| x.payload.as_ref()).collect::<Vec<&[u8]>>())
    .bind(epoch)
    .bind(r.iter().map(|x| x.seq).collect::<Vec<i64>>())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn update_gateways(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
) -> Result<(), sqlx::Error> {
    if rows.gateways.is_empty() {
        return Ok(());
    }
    let mut updates: Vec<_> = rows.gateways.iter().collect();
    updates.sort_by_key(|(id, _)| **id);
    let id: Vec<i64> = updates.iter().map(|(id, _)| **id).collect();
    let seen: Vec<Option<DateTime<Utc>>> = updates.iter().map(|(_, u)| u.last_seen_at).collect();
    let online: Vec<Option<bool>> = updates
        .iter()
        .map(|(_, u)| u.online.map(|(_, o)| o))
        .collect();
    let online_at: Vec<Option<DateTime<Utc>>> = updates
        .iter()
        .map(|(_, u)| u.online.map(|(at, _)| at))
        .collect();
    let hello_at: Vec<Option<DateTime<Utc>>> = updates
        .iter()
        .map(|(_, u)| u.hello.as_ref().map(|h| h.at))
        .collect();
    let model: Vec<Option<&str>> = updates
        .iter()
        .map(|(_, u)| u.hello.as_ref().and_then(|h| h.model.as_deref()))
        .collect();
    let fw: Vec<Option<&str>> = updates
        .iter()
        .map(|(_, u)| u.hello.as_ref().and_then(|h| h.firmware_version.as_deref()))
        .collect();
    let hw: Vec<Option<&str>> = updates
        .iter()
        .map(|(_, u)| u.hello.as_ref().and_then(|h| h.hardware_version.as_deref()))
        .collect();
    let skew: Vec<Option<f64>> = updates
        .iter()
        .map(|(_, u)| u.skew.map(|(_, s)| s))
        .collect();
    let faults: Vec<i64> = updates.iter().map(|(_, u)| u.clock_faults).collect();
    // Lock the rows in id order first: an UPDATE ... FROM join locks them in whatever order
    // its plan visits them, and two writers doing that deadlock (seen in the energy benchmark).
    // NO KEY UPDATE is the UPDATE's own lock: it does not conflict with the KEY SHARE lock a
    // concurrent device insert holds on its gateway (FOR UPDATE would, and deadlock there).
    sqlx::query("SELECT 1 FROM gateways WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE gateways AS g SET
             last_seen_at = GREATEST(g.last_seen_at, u.seen),
             -- Session events can be committed out of order by concurrent writers: newest wins.
             online = CASE WHEN u.online_at IS NOT NULL
                            AND (g.online_changed_at IS NULL OR u.online_at >= g.online_changed_at)
                           THEN u.online ELSE g.online END,
             online_changed_at = GREATEST(g.online_changed_at, u.online_at),
             last_hello_at = GREATEST(g.last_hello_at, u.hello_at),
             model = COALESCE(u.model, g.model),
             firmware_version = COALESCE(u.fw, g.firmware_version),
             hardware_version = COALESCE(u.hw, g.hardware_version),
             clock_skew_s = COALESCE(u.skew, g.clock_skew_s),
             clock_faults = g.clock_faults + u.faults
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::bool[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::text[], $8::float8[], $9::int8[], $10::timestamptz[])
              AS u(id, seen, online, hello_at, model, fw, hw, skew, faults, online_at)
         WHERE g.id = u.id",
    )
    .bind(&id)
    .bind(&seen)
    .bind(&online)
    .bind(&hello_at)
    .bind(&model)
    .bind(&fw)
    .bind(&hw)
    .bind(&skew)
    .bind(&faults)
    .bind(&online_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::record::{IngestRecord, RecordKind};

    fn record(n: u8) -> IngestRecord {
        IngestRecord {
            kind: RecordKind::Publish,
            received_at: "2026-12-07T09:00:00Z".parse().unwrap(),
            source: "mqtt".into(),
            client: "SG1".into(),
            topic: "sg/SG1/pub/counters/ir".into(),
            payload: bytes::Bytes::from(vec![n]),
            reason: String::new(),
        }
    }

    #[test]
    fn readings_before_commissioning_become_one_partial_reject_per_message() {
        let mut rows = Rows::default();
        rows.records.insert(1, record(1));
        rows.records.insert(2, record(2));
        rows.rejects.push(RejectRow {
            received_at: "2026-12-07T09:00:00Z".parse().unwrap(),
            source: "mqtt".into(),
            topic: "sg/SG1/pub/counters/ir".into(),
            client: "SG1".into(),
            gateway_id: Some(7),
            reason: "counter13: unreadable".into(),
            partial: true,
            payload: bytes::Bytes::from_static(&[2]),
            seq: 2,
        });
        let device = DeviceKey {
            gateway_id: 7,
            kind: super::super::normalize::DeviceKind::Meter,
            port: "ir",
            slot: 0,
        };
        let ts: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let since: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let note = |seq| Note {
            seq,
            gateway_id: 7,
            what: before_commissioning(&device, ts, since),
        };
        // Two registers of message 1, one of message 2 (which has its own reject already).
        let rejects = with_conflicts(&rows, Vec::new(), vec![note(1), note(1), note(2)]);
        assert_eq!(rejects.len(), 2, "{rejects:?}");
        let own = rejects.iter().find(|r| r.seq == 2).unwrap();
        assert!(own
            .reason
            .starts_with("counter13: unreadable; counter readings of meter ir/0"));
        let new = rejects.iter().find(|r| r.seq == 1).unwrap();
        assert!(new.partial);
        assert_eq!(new.gateway_id, Some(7));
        assert_eq!(new.payload, bytes::Bytes::from_static(&[1]));
        assert_eq!(
            new.reason,
            "counter readings of meter ir/0 dated 2026-01-01T00:00:00Z are before the meter's \
             commissioning at 2026-02-01T00:00:00Z (devices.commissioned_at): stored but not \
             turned into energy intervals"
        );
    }
}
