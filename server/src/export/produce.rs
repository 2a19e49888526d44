//! Writing an export: one task per download reads row streams and sends CSV chunks.

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::TryStreamExt;
use headend_energy::calendar;
use headend_energy::engine::QUARTER_MS;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tokio::sync::mpsc;

use super::csv::{offset_at, Csv, BOM};
use super::{next_month, Counter, Export, ExportError, Kind, Meter, CHUNK, TARIFF};
use crate::accounting::roles::Role;
use crate::fleet::devices::unit_of;
use crate::ingest::clock::{CLOCK_FAULT, DST_AMBIGUOUS, DST_GAP};

/// How long a client may read nothing before the export gives up on it.
const CLIENT_STALL: StdDuration = StdDuration::from_secs(120);

const HEADER: [&str; 13] = [
    "start_local",
    "end_local",
    "start_utc",
    "site",
    "meter",
    "meter_name",
    "register",
    "value",
    "unit",
    "quality",
    "band",
    "cost",
    "currency",
];

const COMPLETENESS_HEADER: [&str; 16] = [
    "from_local",
    "to_local",
    "from_utc",
    "site",
    "meter",
    "meter_name",
    "register",
    "unit",
    "expected",
    "measured",
    "estimated",
    "missing",
    "measured_percent",
    "estimated_percent",
    "missing_percent",
    "energy",
];

/// Why writing stopped early.
enum Stop {
    /// The client went away (the body was dropped): nothing to report to anyone.
    Closed,
    /// The client read nothing for [`CLIENT_STALL`]: the database connection and snapshot
    /// are given back rather than held for a reader that may never come back.
    Stalled,
    Failed(ExportError),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(ExportError::Db(e))
    }
}

struct Sink {
    tx: mpsc::Sender<Bytes>,
    csv: Csv,
    rows: u64,
}

impl Sink {
    /// Ends a row; true when a chunk is full and should be sent.
    fn end_row(&mut self) -> bool {
        self.csv.end_row();
        self.rows += 1;
        self.csv.len() >= CHUNK
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.csv.is_empty() {
            return Ok(());
        }
        let chunk = self.csv.take();
        match tokio::time::timeout(CLIENT_STALL, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => Err(Stop::Stalled),
        }
    }
}

/// The task behind [`Export::stream`]: sends the file's chunks, and sets `complete` after
/// the last one. Whatever ends it early (an error, a stall, a panic) drops `tx` without
/// `complete`, and the stream then ends with an error: a truncated download, never a
/// complete-looking short file.
pub(super) async fn run(
    export: Export,
    pool: PgPool,
    tx: mpsc::Sender<Bytes>,
    complete: Arc<AtomicBool>,
) {
    let started = std::time::Instant::now();
    let mut sink = Sink {
        tx,
        csv: Csv::new(export.format, CHUNK + 4096),
        rows: 0,
    };
    match write(&export, &pool, &mut sink).await {
        Ok(()) => {
            complete.store(true, Ordering::Release);
            tracing::debug!(
                file = %export.filename,
                rows = sink.rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "export written"
            )
        }
        Err(Stop::Closed) => tracing::info!(
            file = %export.filename,
            rows = sink.rows,
            "export: the client went away before the end"
        ),
        Err(Stop::Stalled) => tracing::warn!(
            file = %export.filename,
            rows = sink.rows,
            stall_s = CLIENT_STALL.as_secs(),
            "export: the client stopped reading; the download is cut"
        ),
        // The status line is gone: the stream ends with an error, so the server closes the
        // connection without the final chunk and the client sees a broken download.
        Err(Stop::Failed(error)) => tracing::error!(
            file = %export.filename,
            rows = sink.rows,
            error = %error,
            "export failed after the download started; the file is truncated"
        ),
    }
}

async fn write(export: &Export, pool: &PgPool, sink: &mut Sink) -> Result<(), Stop> {
    if export.format.bom {
        sink.csv.preamble(BOM);
    }
    let header: &[&str] = match export.kind {
        Kind::Completeness => &COMPLETENESS_HEADER,
        _ => &HEADER,
    };
    for name in header {
        match (*name, export.kind) {
            ("register", Kind::Measurements) => sink.csv.plain("quantity"),
            _ => sink.csv.plain(name),
        }
    }
    sink.csv.end_row();
    // The download starts now, whatever the queries take.
    sink.flush().await?;

    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    match export.kind {
        Kind::Intervals => intervals(export, &mut tx, sink).await?,
        Kind::Daily => daily(export, &mut tx, sink).await?,
        Kind::Monthly => monthly(export, &mut tx, sink).await?,
        Kind::Readings => readings(export, &mut tx, sink).await?,
        Kind::Measurements => measurements(export, &mut tx, sink).await?,
        Kind::Completeness => completeness(export, &mut tx, sink).await?,
    }
    tx.rollback().await?;
    sink.flush().await
}

/// The fields that are the same on every row of a register (or, for measurements, of a
/// meter), encoded once: site, meter, meter name and, when given, the register.
fn fixed_fields(export: &Export, meter: &Meter, register: Option<&str>) -> Bytes {
    let mut csv = Csv::new(export.format, 256);
    csv.text(&export.site_name);
    csv.text(&meter.serial);
    csv.text(&meter.name);
    if let Some(r) = register {
        csv.text(r);
    }
    csv.take()
}

fn flags_text(flags: i16) -> &'static str {
    match (
        flags & CLOCK_FAULT != 0,
        flags & DST_AMBIGUOUS != 0,
        flags & DST_GAP != 0,
    ) {
        (false, false, false) => "ok",
        (true, false, false) => "clock_fault",
        (false, true, false) => "dst_ambiguous",
        (true, true, false) => "clock_fault+dst_ambiguous",
        (false, false, true) => "dst_gap",
        (true, false, true) => "clock_fault+dst_gap",
        (false, true, true) => "dst_ambiguous+dst_gap",
        (true, true, true) => "clock_fault+dst_ambiguous+dst_gap",
    }
}

fn period_quality(measured: i64, estimated: i64, quarters: i64) -> &'static str {
    let present = measured + estimated;
    if present == 0 {
        "missing"
    } else if present < quarters {
        "partial"
    } else if estimated > 0 {
        "estimated"
    } else {
        "measured"
    }
}

// -- intervals ------------------------------------------------------------------------------

/// What every register shares about one quarter-hour of the export: the local offset at its
/// start, and the contract and scheduled band in force. Computed once per export (8 bytes a
/// quarter-hour: 280 KiB for a year), not once per row.
#[derive(Clone, Copy)]
struct Slot {
    offset: i32,
    /// Index into the export's contracts; `u16::MAX`: none in force.
    contract: u16,
    band: u16,
}

struct Grid {
    from_ms: i64,
    /// One more than the quarter-hours: the last one's end.
    slots: Vec<Slot>,
}

impl Grid {
    fn new(export: &Export) -> Self {
        let from_ms = export.from.timestamp_millis();
        let quarters = (export.to.timestamp_millis() - from_ms) / QUARTER_MS;
        let slots = (0..=quarters)
            .map(|q| {
                let start = DateTime::from_timestamp_millis(from_ms + q * QUARTER_MS)
                    .unwrap_or(export.from);
                let day = calendar::local_date(start, export.tz);
                let contract = export.contracts.iter().rposition(|(f, _)| *f <= day);
                Slot {
                    offset: offset_at(export.tz, start),
                    contract: contract
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(u16::MAX),
                    band: contract
                        .map(|c| {
                            export.contracts[c]
                                .1
                                .band_at_local(calendar::local_datetime(start, export.tz))
                        })
                        .and_then(|b| u16::try_from(b).ok())
                        .unwrap_or(0),
                }
            })
            .collect();
        Self { from_ms, slots }
    }

    fn quarters(&self) -> usize {
        self.slots.len() - 1
    }

    fn start(&self, q: usize) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.from_ms + q as i64 * QUARTER_MS).unwrap_or_default()
    }

    fn index(&self, start: DateTime<Utc>) -> usize {
        usize::try_from((start.timestamp_millis() - self.from_ms) / QUARTER_MS).unwrap_or(0)
    }
}

const INTERVALS_SQL: &str = "SELECT start, energy_milli, quality, NULL::int2 FROM energy_intervals
     WHERE counter_id = $1 AND start >= $2 AND start < $3 ORDER BY start";

/// With the meter's own tariff (the last one it reported in the quarter-hour), for contracts
/// that pick the band by it, as the daily rollup does.
const INTERVALS_TARIFF_SQL: &str = "SELECT e.start, e.energy_milli, e.quality, t.tariff
     FROM energy_intervals e
     LEFT JOIN LATERAL (
         SELECT m.tariff FROM measurements m
         WHERE m.device_id = $4 AND m.ts >= e.start AND m.ts < e.start + interval '15 minutes'
           AND m.tariff IS NOT NULL
         ORDER BY m.ts DESC LIMIT 1) t ON true
     WHERE e.counter_id = $1 AND e.start >= $2 AND e.start < $3 ORDER BY e.start";

async fn intervals(export: &Export, conn: &mut PgConnection, sink: &mut Sink) -> Result<(), Stop> {
    let grid = Grid::new(export);
    let by_tariff = export
        .contracts
        .iter()
        .any(|(_, c)| c.meter_tariff_bands.is_some());
    for counter in &export.counters {
        let meter = &export.meters[counter.meter];
        let fixed = fixed_fields(export, meter, Some(&counter.name));
        let priced = matches!(counter.role, Role::Import | Role::Export);
        let mut query =
            sqlx::query_as::<_, (DateTime<Utc>, i64, i16, Option<i16>)>(if priced && by_tariff {
                INTERVALS_TARIFF_SQL
            } else {
                INTERVALS_SQL
            })
            .bind(counter.id)
            .bind(export.from)
            .bind(export.to);
        if priced && by_tariff {
            query = query.bind(meter.id);
        }
        let mut rows = query.fetch(&mut *conn);
        let mut next = 0;
        while let Some((start, energy, quality, tariff)) = rows.try_next().await? {
            let q = grid.index(start);
            while next < q {
                if interval_row(export, &grid, sink, counter, &fixed, next, None) {
                    sink.flush().await?;
                }
                next += 1;
            }
            let found = Some((energy, quality, tariff));
            if interval_row(export, &grid, sink, counter, &fixed, q, found) {
                sink.flush().await?;
            }
            next = q + 1;
        }
        drop(rows);
        while next < grid.quarters() {
            if interval_row(export, &grid, sink, counter, &fixed, next, None) {
                sink.flush().await?;
            }
            next += 1;
        }
    }
    Ok(())
}

/// Writes quarter-hour `q` of a register; `found` is the stored interval (energy, quality,
/// meter tariff), `None` when missing. True when a chunk is full.
fn interval_row(
    export: &Export,
    grid: &Grid,
    sink: &mut Sink,
    counter: &Counter,
    fixed: &[u8],
    q: usize,
    found: Option<(i64, i16, Option<i16>)>,
) -> bool {
    let (slot, next) = (grid.slots[q], grid.slots[q + 1]);
    let start = grid.start(q);
    let csv = &mut sink.csv;
    csv.local(start, slot.offset);
    csv.local(start + Duration::milliseconds(QUARTER_MS), next.offset);
    csv.utc(start);
    csv.fields(fixed);
    match found {
        Some((energy, ..)) => csv.decimal(i128::from(energy), 3),
        None => csv.empty(),
    }
    csv.plain(&counter.unit);
    csv.plain(match found.map(|f| f.1) {
        None => "missing",
        Some(0) => "measured",
        Some(_) => "estimated",
    });
    let contract = export
        .contracts
        .get(usize::from(slot.contract))
        .map(|(_, c)| c)
        .filter(|_| matches!(counter.role, Role::Import | Role::Export));
    match contract {
        Some(contract) => {
            // The meter's tariff wins when the contract maps it (Contract::band_at).
            let band = found
                .and_then(|f| f.2)
                .and_then(|t| u8::try_from(t).ok())
                .and_then(|t| contract.meter_tariff_bands.as_ref()?.get(&t))
                .and_then(|name| contract.band_index(name))
                .unwrap_or(usize::from(slot.band));
            csv.text(&contract.bands[band].name);
            match found {
                Some((energy, ..)) => {
                    let cost = match counter.role {
                        Role::Export => contract.export_credit(band, energy),
                        _ => contract.energy_cost(band, energy),
                    };
                    csv.decimal(cost.0, 12);
                }
                None => csv.empty(),
            }
            csv.plain(&contract.currency);
        }
        None => {
            csv.empty();
            csv.empty();
            csv.empty();
        }
    }
    sink.end_row()
}

// -- days and months ------------------------------------------------------------------------

/// A local day or month of the export: its key, its clipped span and quarter-hours.
struct Span {
    key: NaiveDate,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    quarters: i64,
}

fn day_spans(export: &Export) -> Vec<Span> {
    export
        .first_day
        .iter_days()
        .take_while(|d| *d <= export.last_day)
        .map(|d| {
            let (start, end) = calendar::period_bounds(export.tz, d, calendar::Period::Day);
            Span {
                key: d,
                start,
                end,
                quarters: i64::from(calendar::quarters_between(start, end)),
            }
        })
        .collect()
}

fn month_spans(export: &Export) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut month = calendar::period_start(export.first_day, calendar::Period::Month);
    while month <= export.last_day {
        let Some(next) = next_month(month) else {
            break;
        };
        let first = month.max(export.first_day);
        let after = next.min(export.last_day.succ_opt().unwrap_or(next));
        let (start, end) = (
            calendar::day_start(export.tz, first),
            calendar::day_start(export.tz, after),
        );
        spans.push(Span {
            key: month,
            start,
            end,
            quarters: i64::from(calendar::quarters_between(start, end)),
        });
        month = next;
    }
    spans
}

/// A day or month row; `sums` is (energy, measured, estimated, cost in 1e-9, currency).
#[allow(clippy::type_complexity)]
fn period_row(
    export: &Export,
    sink: &mut Sink,
    counter: &Counter,
    fixed: &[u8],
    span: &Span,
    sums: Option<(i64, i64, i64, Option<i64>, Option<&str>)>,
) -> bool {
    let csv = &mut sink.csv;
    csv.local(span.start, offset_at(export.tz, span.start));
    csv.local(span.end, offset_at(export.tz, span.end));
    csv.utc(span.start);
    csv.fields(fixed);
    match sums {
        Some((energy, ..)) => csv.decimal(i128::from(energy), 3),
        None => csv.empty(),
    }
    csv.plain(&counter.unit);
    let (measured, estimated) = sums.map_or((0, 0), |s| (s.1, s.2));
    csv.plain(period_quality(measured, estimated, span.quarters));
    csv.empty();
    match sums.and_then(|s| Some((s.3?, s.4?))) {
        Some((cost, currency)) => {
            csv.decimal(i128::from(cost), 9);
            csv.text(currency);
        }
        None => {
            csv.empty();
            csv.empty();
        }
    }
    sink.end_row()
}

async fn daily(export: &Export, conn: &mut PgConnection, sink: &mut Sink) -> Result<(), Stop> {
    let spans = day_spans(export);
    for counter in &export.counters {
        let fixed = fixed_fields(export, &export.meters[counter.meter], Some(&counter.name));
        let mut rows = sqlx::query_as::<_, (NaiveDate, i64, i32, i32, Option<i64>, Option<String>)>(
            "SELECT day, energy_milli, measured, estimated, cost_nano, currency FROM energy_days
             WHERE counter_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(counter.id)
        .bind(export.first_day)
        .bind(export.last_day)
        .fetch(&mut *conn);
        let mut spans_left = spans.iter().peekable();
        while let Some((day, energy, measured, estimated, cost, currency)) = rows.try_next().await?
        {
            while let Some(span) = spans_left.next_if(|s| s.key < day) {
                if period_row(export, sink, counter, &fixed, span, None) {
                    sink.flush().await?;
                }
            }
            if let Some(span) = spans_left.next_if(|s| s.key == day) {
                let sums = (
                    energy,
                    i64::from(measured),
                    i64::from(estimated),
                    cost,
                    currency.as_deref(),
                );
                if period_row(export, sink, counter, &fixed, span, Some(sums)) {
                    sink.flush().await?;
                }
            }
        }
        drop(rows);
        for span in spans_left {
            if period_row(export, sink, counter, &fixed, span, None) {
                sink.flush().await?;
            }
        }
    }
    Ok(())
}

async fn monthly(export: &Export, conn: &mut PgConnection, sink: &mut Sink) -> Result<(), Stop> {
    let spans = month_spans(export);
    type MonthRow = (
        NaiveDate,
        i64,
        i64,
        i64,
        Option<i64>,
        i64,
        i64,
        Option<String>,
    );
    for counter in &export.counters {
        let fixed = fixed_fields(export, &export.meters[counter.meter], Some(&counter.name));
        let mut rows = sqlx::query_as::<_, MonthRow>(
            "SELECT date_trunc('month', day)::date, sum(energy_milli)::int8, sum(measured)::int8,
                    sum(estimated)::int8, sum(cost_nano)::int8, count(cost_nano), count(*),
                    max(currency)
             FROM energy_days WHERE counter_id = $1 AND day >= $2 AND day <= $3
             GROUP BY 1 ORDER BY 1",
        )
        .bind(counter.id)
        .bind(export.first_day)
        .bind(export.last_day)
        .fetch(&mut *conn);
        let mut spans_left = spans.iter().peekable();
        while let Some((month, energy, measured, estimated, cost, priced, days, currency)) =
            rows.try_next().await?
        {
            while let Some(span) = spans_left.next_if(|s| s.key < month) {
                if period_row(export, sink, counter, &fixed, span, None) {
                    sink.flush().await?;
                }
            }
            if let Some(span) = spans_left.next_if(|s| s.key == month) {
                // A cost only when every day of the month with energy had one.
                let cost = cost.filter(|_| priced == days);
                let sums = (energy, measured, estimated, cost, currency.as_deref());
                if period_row(export, sink, counter, &fixed, span, Some(sums)) {
                    sink.flush().await?;
                }
            }
        }
        drop(rows);
        for span in spans_left {
            if period_row(export, sink, counter, &fixed, span, None) {
                sink.flush().await?;
            }
        }
    }
    Ok(())
}

// -- raw data -------------------------------------------------------------------------------

async fn readings(export: &Export, conn: &mut PgConnection, sink: &mut Sink) -> Result<(), Stop> {
    for counter in &export.counters {
        let fixed = fixed_fields(export, &export.meters[counter.meter], Some(&counter.name));
        let mut rows = sqlx::query_as::<_, (DateTime<Utc>, i64, i16)>(
            "SELECT ts, value_milli, flags FROM counter_readings
             WHERE counter_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
        )
        .bind(counter.id)
        .bind(export.from)
        .bind(export.to)
        .fetch(&mut *conn);
        while let Some((ts, value, flags)) = rows.try_next().await? {
            let csv = &mut sink.csv;
            csv.local(ts, offset_at(export.tz, ts));
            csv.empty();
            csv.utc(ts);
            csv.fields(&fixed);
            csv.decimal(i128::from(value), 3);
            csv.plain(&counter.unit);
            csv.plain(flags_text(flags));
            csv.empty();
            csv.empty();
            csv.empty();
            if sink.end_row() {
                sink.flush().await?;
            }
        }
    }
    Ok(())
}

async fn measurements(
    export: &Export,
    conn: &mut PgConnection,
    sink: &mut Sink,
) -> Result<(), Stop> {
    // Column 0 ts, 1 flags, then the quantities (tariff is int2, the others float4).
    let columns = export.quantities.join(", ");
    let sql = format!(
        "SELECT ts, flags, {columns} FROM measurements
         WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts"
    );
    for meter in &export.meters {
        let fixed = fixed_fields(export, meter, None);
        let mut rows = sqlx::query(&sql)
            .bind(meter.id)
            .bind(export.from)
            .bind(export.to)
            .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            if measurement_rows(export, sink, &fixed, &row)? {
                sink.flush().await?;
            }
        }
    }
    Ok(())
}

/// The rows of one measurement instant, one per quantity with a value. True when a chunk is
/// full.
fn measurement_rows(
    export: &Export,
    sink: &mut Sink,
    fixed: &[u8],
    row: &PgRow,
) -> Result<bool, Stop> {
    let ts: DateTime<Utc> = row.try_get(0)?;
    let flags: i16 = row.try_get(1)?;
    let offset = offset_at(export.tz, ts);
    let mut full = false;
    for (i, quantity) in export.quantities.iter().enumerate() {
        let value = if *quantity == TARIFF {
            row.try_get::<Option<i16>, _>(i + 2)?.map(f32::from)
        } else {
            row.try_get::<Option<f32>, _>(i + 2)?
        };
        let Some(value) = value else {
            continue;
        };
        let csv = &mut sink.csv;
        csv.local(ts, offset);
        csv.empty();
        csv.utc(ts);
        csv.fields(fixed);
        csv.plain(quantity);
        csv.float(value);
        csv.plain(if *quantity == TARIFF {
            ""
        } else {
            unit_of(quantity)
        });
        csv.plain(flags_text(flags));
        csv.empty();
        csv.empty();
        csv.empty();
        full |= sink.end_row();
    }
    Ok(full)
}

// -- completeness ---------------------------------------------------------------------------

async fn completeness(
    export: &Export,
    conn: &mut PgConnection,
    sink: &mut Sink,
) -> Result<(), Stop> {
    // Quarter-hours that have ended by now are expected; later ones are not missing yet.
    let now_q = calendar::floor_quarter(export.now);
    let expected = u64::from(calendar::quarters_between(
        export.from,
        export.to.min(now_q),
    ));
    let from_offset = offset_at(export.tz, export.from);
    let to_offset = offset_at(export.tz, export.to);
    for counter in &export.counters {
        let meter = &export.meters[counter.meter];
        let (measured, estimated, energy): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE quality = 0), count(*) FILTER (WHERE quality <> 0),
                    COALESCE(sum(energy_milli), 0)::int8
             FROM energy_intervals WHERE counter_id = $1 AND start >= $2 AND start < $3",
        )
        .bind(counter.id)
        .bind(export.from)
        .bind(export.to)
        .fetch_one(&mut *conn)
        .await?;
        let (measured, estimated) = (measured.max(0) as u64, estimated.max(0) as u64);
        let missing = expected.saturating_sub(measured + estimated);
        let fixed = fixed_fields(export, meter, Some(&counter.name));
        let csv = &mut sink.csv;
        csv.local(export.from, from_offset);
        csv.local(export.to, to_offset);
        csv.utc(export.from);
        csv.fields(&fixed);
        csv.plain(&counter.unit);
        for n in [expected, measured, estimated, missing] {
            csv.integer(i64::try_from(n).unwrap_or(i64::MAX));
        }
        csv.percent(measured, expected);
        csv.percent(estimated, expected);
        csv.percent(missing, expected);
        csv.decimal(i128::from(energy), 3);
        if sink.end_row() {
            sink.flush().await?;
        }
    }
    Ok(())
}
