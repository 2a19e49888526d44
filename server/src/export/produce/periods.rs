//! Day and month rows: one per local day or month of the export and register, from the
//! daily rollups, with their quality over the period's quarter-hours and their cost.

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use headend_energy::calendar;
use sqlx::PgConnection;

use super::{fixed_fields, Sink, Stop};
use crate::export::csv::offset_at;
use crate::export::{next_month, Counter, Export};

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

pub(super) async fn daily(
    export: &Export,
    conn: &mut PgConnection,
    sink: &mut Sink,
) -> Result<(), Stop> {
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

pub(super) async fn monthly(
    export: &Export,
    conn: &mut PgConnection,
    sink: &mut Sink,
) -> Result<(), Stop> {
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
