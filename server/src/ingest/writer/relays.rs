//! `relay_states`: a switch within one second is not a conflict, a different state later is.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::conflicts::{at, device_name, Conflict};
use crate::ingest::normalize::{DeviceKey, RelayStateRow, Rows};

/// Two reports of different relay states for the same second received at most this far apart
/// are a switch within that second (the SG's `local_time` has whole seconds): the later one is
/// the relay's state and replaces the earlier. Further apart, the later one is a conflicting
/// replay.
const RELAY_FLIP_WINDOW_SECS: i64 = 60;

pub(super) async fn insert_relay_states(
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
    let mut present: Vec<(i64, &RelayStateRow)> = Vec::with_capacity(given.len());
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

fn relay_conflict(r: &RelayStateRow, stored: i16) -> Conflict {
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
