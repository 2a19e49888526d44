//! The demo's history: 15-minute counter readings from the load model, written with binary
//! `COPY` and queued in `energy_dirty` in the same transaction, as ingest queues what it
//! commits (the profile worker then computes intervals, days, costs and site totals, exactly
//! as for live data; this is how the energy benchmark backfills a year).
//!
//! Each counter continues from its newest stored reading, so running the demo again on the
//! same data directory only fills the time since the last run: nothing is duplicated and the
//! counters stay monotonic.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use super::load::{self, Moment, QUARTER_MS};
use super::model::{self, SiteSpec};

/// Days of instantaneous values (one row a quarter-hour per meter) before now.
const MEASUREMENT_DAYS: i64 = 2;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Which register of a demo meter a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// `counter1nr`, active import.
    Import,
    /// `counter2nr`, active export.
    Export,
    /// `counter3nr`, reactive import.
    Reactive,
}

impl Register {
    pub fn name(self) -> &'static str {
        match self {
            Self::Import => "counter1nr",
            Self::Export => "counter2nr",
            Self::Reactive => "counter3nr",
        }
    }
}

/// A counter of a demo meter.
#[derive(Debug, Clone, Copy)]
pub struct CounterRef {
    pub id: i64,
    /// Index in the site's `meters`.
    pub meter: usize,
    pub register: Register,
}

/// What the backfill wrote.
#[derive(Debug, Default)]
pub struct Filled {
    pub readings: u64,
    /// Each counter's value at `now`, mWh (or mvarh).
    pub end_values: HashMap<i64, i64>,
}

/// The register's value when the history starts: a meter that has run for some years.
fn initial_value(site: &SiteSpec, meter: usize, register: Register) -> i64 {
    let draw = load::unit(site.seed, 0x1417, (meter as u64) << 4 | register as u64);
    match register {
        Register::Import => 5_000_000_000 + (draw * 40_000_000_000.0) as i64,
        Register::Reactive => 1_000_000_000 + (draw * 8_000_000_000.0) as i64,
        Register::Export => match site.meters[meter].load {
            model::Load::Pv(_) | model::Load::Sum => 100_000_000 + (draw * 900_000_000.0) as i64,
            _ => 0,
        },
    }
}

/// `COPY ... FROM STDIN (FORMAT binary)` rows of `counter_readings`.
struct BinaryCopy {
    buf: BytesMut,
    rows: u64,
}

impl BinaryCopy {
    fn new() -> Self {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        Self { buf, rows: 0 }
    }

    fn reading(&mut self, counter: i64, ts_ms: i64, value: i64) {
        let ts_us = ts_ms * 1000 - PG_EPOCH_US;
        self.buf.put_i16(5);
        self.buf.put_i32(8);
        self.buf.put_i64(counter);
        self.buf.put_i32(8);
        self.buf.put_i64(ts_us);
        self.buf.put_i32(8);
        self.buf.put_i64(value);
        // Received when it was read: a gateway that pushed on time.
        self.buf.put_i32(8);
        self.buf.put_i64(ts_us);
        self.buf.put_i32(2);
        self.buf.put_i16(0);
        self.rows += 1;
    }

    fn finish(mut self) -> (bytes::Bytes, u64) {
        self.buf.put_i16(-1);
        (self.buf.freeze(), self.rows)
    }
}

/// Per counter: where it stands (ms, value) and the span of what is new.
struct Cursor {
    counter: CounterRef,
    at_ms: i64,
    value: i64,
    first_new: Option<i64>,
    last_new: i64,
}

/// Writes the readings of `site`'s counters from `start` (or each counter's newest reading)
/// up to `now`: one at every quarter-hour boundary and one at `now`.
pub async fn fill(
    pool: &PgPool,
    site: &SiteSpec,
    meters: &[i64],
    counters: &[CounterRef],
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Filled> {
    let ids: Vec<i64> = counters.iter().map(|c| c.id).collect();
    let newest: Vec<(i64, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (counter_id) counter_id, ts, value_milli FROM counter_readings
         WHERE counter_id = ANY($1) ORDER BY counter_id, ts DESC",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let newest: HashMap<i64, (i64, i64)> = newest
        .into_iter()
        .map(|(id, ts, v)| (id, (ts.timestamp_millis(), v)))
        .collect();
    let start_ms = headend_energy::engine::floor_quarter(start.timestamp_millis());
    let now_ms = now.timestamp_millis().div_euclid(1000) * 1000;
    let mut copy = BinaryCopy::new();
    let mut cursors: Vec<Cursor> = counters
        .iter()
        .map(|&counter| match newest.get(&counter.id) {
            // A gap longer than the history is not refilled from its beginning.
            Some(&(ts, value)) => Cursor {
                counter,
                at_ms: ts.max(start_ms),
                value,
                first_new: None,
                last_new: ts,
            },
            None => {
                let value = initial_value(site, counter.meter, counter.register);
                copy.reading(counter.id, start_ms, value);
                Cursor {
                    counter,
                    at_ms: start_ms,
                    value,
                    first_new: Some(start_ms),
                    last_new: start_ms,
                }
            }
        })
        .collect();
    let from_ms = cursors.iter().map(|c| c.at_ms).min().unwrap_or(now_ms);
    let first_year = chrono::Datelike::year(&start.date_naive()) - 1;
    let last_year = chrono::Datelike::year(&now.date_naive()) + 1;
    let holidays: Vec<NaiveDate> = model::holidays(site, first_year..=last_year);
    let mut measurements = Measurements::default();
    let recent_ms = now_ms - MEASUREMENT_DAYS * 86_400_000;
    let mut quarter = from_ms.div_euclid(QUARTER_MS);
    while quarter * QUARTER_MS < now_ms {
        let q_start = quarter * QUARTER_MS;
        let q_end = q_start + QUARTER_MS;
        let moment = Moment::new(quarter, site.zone, &holidays);
        let energies = load::quarter(site, &moment);
        if q_start >= recent_ms && q_end <= now_ms && q_start >= from_ms {
            for (i, &(import, export)) in energies.iter().enumerate() {
                let spec = &site.meters[i];
                // Mean power of the quarter, W (mWh per quarter × 4 / 1000).
                let p = (import - export) as f64 / 250.0;
                let seed = site.seed ^ 0x5EED ^ i as u64;
                measurements.push(
                    meters[i],
                    q_start + QUARTER_MS / 2,
                    p,
                    spec.phases(),
                    if spec.has_reactive() {
                        site.tan_phi
                    } else {
                        0.25
                    },
                    load::unit(seed, 5, quarter as u64),
                );
            }
        }
        for cursor in &mut cursors {
            if cursor.at_ms >= q_end {
                continue;
            }
            let (import, export) = energies[cursor.counter.meter];
            let energy = match cursor.counter.register {
                Register::Import => import,
                Register::Export => export,
                Register::Reactive => (import as f64 * site.tan_phi).round() as i64,
            };
            let from = cursor.at_ms.max(q_start);
            let to = q_end.min(now_ms);
            if to <= from {
                continue;
            }
            // The share of the quarter's energy in [from, to): exact integers, so the
            // readings are the running sum of whole quarters wherever both ends are
            // boundaries.
            let before = energy * (from - q_start) / QUARTER_MS;
            let until = energy * (to - q_start) / QUARTER_MS;
            cursor.value += until - before;
            cursor.at_ms = to;
            copy.reading(cursor.counter.id, to, cursor.value);
            cursor.first_new.get_or_insert(from);
            cursor.last_new = to;
        }
        quarter += 1;
    }
    let (data, rows) = copy.finish();
    let mut dirty_ids = Vec::new();
    let mut dirty_from = Vec::new();
    let mut dirty_to = Vec::new();
    for c in &cursors {
        if let Some(first) = c.first_new {
            dirty_ids.push(c.counter.id);
            dirty_from.push(DateTime::<Utc>::from_timestamp_millis(first).unwrap_or(now));
            dirty_to.push(DateTime::<Utc>::from_timestamp_millis(c.last_new).unwrap_or(now));
        }
    }
    if rows > 0 {
        let mut tx = pool.begin().await?;
        let mut sink = tx
            .copy_in_raw(
                "COPY counter_readings (counter_id, ts, value_milli, received_at, flags) \
                 FROM STDIN (FORMAT binary)",
            )
            .await?;
        sink.send(data).await?;
        let copied = sink.finish().await?;
        anyhow::ensure!(copied == rows, "COPY wrote {copied} of {rows} readings");
        sqlx::query(
            "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
             SELECT *, true FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[])",
        )
        .bind(&dirty_ids)
        .bind(&dirty_from)
        .bind(&dirty_to)
        .execute(&mut *tx)
        .await?;
        measurements.insert(&mut tx).await?;
        tx.commit().await?;
    }
    Ok(Filled {
        readings: rows,
        end_values: cursors.iter().map(|c| (c.counter.id, c.value)).collect(),
    })
}

/// Instantaneous values of the last days, one row per meter and quarter-hour (the mean
/// power of the quarter, with voltages, currents and power factor to match), so that the
/// meter pages' live values and the measurements export have a past as well.
#[derive(Default)]
struct Measurements {
    device: Vec<i64>,
    ts: Vec<DateTime<Utc>>,
    u: [Vec<Option<f32>>; 3],
    i: [Vec<Option<f32>>; 3],
    p: Vec<f32>,
    p_phase: [Vec<Option<f32>>; 3],
    q: Vec<f32>,
    s: Vec<f32>,
    pf: Vec<f32>,
    frequency: Vec<f32>,
}

impl Measurements {
    fn push(&mut self, device: i64, ts_ms: i64, p: f64, phases: i16, tan_phi: f64, draw: f64) {
        let q = p.abs() * tan_phi;
        let s = (p * p + q * q).sqrt();
        let pf = if s > 0.0 { p.abs() / s } else { 1.0 };
        let n: u8 = if phases == 1 { 1 } else { 3 };
        for k in 0..3 {
            let on = k < usize::from(n);
            let u = 229.0 + 4.0 * draw + k as f64 * 0.7;
            self.u[k].push(on.then_some(u as f32));
            self.i[k].push(on.then_some((s / f64::from(n) / u) as f32));
            self.p_phase[k].push(on.then_some((p / f64::from(n)) as f32));
        }
        self.device.push(device);
        self.ts
            .push(DateTime::<Utc>::from_timestamp_millis(ts_ms).unwrap_or_default());
        self.p.push(p as f32);
        self.q.push(q as f32);
        self.s.push(s as f32);
        self.pf.push(pf as f32);
        self.frequency.push((49.98 + 0.04 * draw) as f32);
    }

    async fn insert(&self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        if self.device.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO measurements (device_id, ts, received_at, flags, u1, u2, u3, i1, i2, i3,
                                       p, p1, p2, p3, q, s, pf, frequency)
             SELECT d, t, t, 0, u1, u2, u3, i1, i2, i3, p, p1, p2, p3, q, s, pf, f
             FROM UNNEST($1::int8[], $2::timestamptz[], $3::float4[], $4::float4[], $5::float4[],
                         $6::float4[], $7::float4[], $8::float4[], $9::float4[], $10::float4[],
                         $11::float4[], $12::float4[], $13::float4[], $14::float4[],
                         $15::float4[], $16::float4[])
                  AS m(d, t, u1, u2, u3, i1, i2, i3, p, p1, p2, p3, q, s, pf, f)
             ON CONFLICT (device_id, ts) DO NOTHING",
        )
        .bind(&self.device)
        .bind(&self.ts)
        .bind(&self.u[0])
        .bind(&self.u[1])
        .bind(&self.u[2])
        .bind(&self.i[0])
        .bind(&self.i[1])
        .bind(&self.i[2])
        .bind(&self.p)
        .bind(&self.p_phase[0])
        .bind(&self.p_phase[1])
        .bind(&self.p_phase[2])
        .bind(&self.q)
        .bind(&self.s)
        .bind(&self.pf)
        .bind(&self.frequency)
        .execute(tx)
        .await?;
        Ok(())
    }
}
