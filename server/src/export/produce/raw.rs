//! Raw rows as stored: counter readings and instantaneous measurements, with their clock
//! and daylight-saving flags.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{fixed_fields, Sink, Stop};
use crate::export::csv::offset_at;
use crate::export::{Export, TARIFF};
use crate::fleet::devices::unit_of;
use crate::ingest::clock::{CLOCK_FAULT, DST_AMBIGUOUS, DST_GAP};

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

pub(super) async fn readings(
    export: &Export,
    conn: &mut PgConnection,
    sink: &mut Sink,
) -> Result<(), Stop> {
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

pub(super) async fn measurements(
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
