//! The completeness report: per register, how many quarter-hours of the export were
//! measured, estimated or missing.

use headend_energy::calendar;
use sqlx::PgConnection;

use super::{fixed_fields, Sink, Stop};
use crate::export::csv::offset_at;
use crate::export::Export;

pub(super) async fn completeness(
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
