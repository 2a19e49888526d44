//! Interval computation: each counter's readings window through the engine, and the intervals
//! and counter events it makes exact written back.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use headend_energy::engine::{self, Reading, Register, QUARTER_MS};
use sqlx::{Postgres, Transaction};

use super::drain::{CounterInfo, Span};
use super::{Step, WorkerError};

/// 9999-12-31T23:59:59Z, the last instant the worker writes as a range end.
const MAX_TS_MS: i64 = 253_402_300_799_000;
/// 0001-01-01T00:00:00Z, the first instant the worker writes as a range start (readings before
/// 1970 are possible with a generous backlog horizon; clamping the range at 1970 would leave
/// their intervals in place and make the next insert collide with them).
const MIN_TS_MS: i64 = -62_135_596_800_000;

pub(super) struct IntervalsWritten {
    pub(super) intervals: usize,
    /// Per counter, the span of interval starts that were deleted or written.
    pub(super) changed: Vec<(i64, (DateTime<Utc>, DateTime<Utc>))>,
}

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Loads each counter's readings window, runs the engine, and replaces the intervals (and
/// events) inside the part of the window the engine's locality makes exact.
pub(super) async fn recompute_intervals(
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
