//! `counter_readings`, with the `energy_dirty` span of the new ones queued for the profile
//! worker in the same statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::conflicts::{at, before_commissioning, device_name, Conflict, Note};
use crate::ingest::clock::BEYOND_HORIZON;
use crate::ingest::normalize::{DeviceKey, Rows};

pub(super) async fn insert_counter_readings(
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
