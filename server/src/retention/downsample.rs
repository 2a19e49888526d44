//! Raw measurements into `measurements_15min`: per device and UTC quarter-hour, the number of
//! rows and, per quantity, how many rows had it and its min, mean and max.
//!
//! A quarter-hour already there (late rows that reached the default partition after their
//! month was dropped) is merged: min of mins, max of maxes, and the mean weighted by the
//! per-quantity counts, so merging gives what one pass over all the rows would have (to float4).

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::ingest::normalize::MEASUREMENT_COLUMNS;

/// The quantities (the reserved last column aside).
fn quantities() -> &'static [&'static str] {
    &MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1]
}

/// Downsamples the rows of `source` (a partition, or a detached default), those before
/// `before` when given. Returns the number of quarter-hours written or merged.
pub async fn into_15min(
    tx: &mut Transaction<'_, Postgres>,
    source: &str,
    before: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(&sql(source))
        .bind(before)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

fn sql(source: &str) -> String {
    let mut columns = vec!["device_id".to_owned(), "start".into(), "samples".into()];
    let mut aggregates = vec![
        "device_id".to_owned(),
        "date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')".into(),
        "count(*)::int".into(),
    ];
    let mut merges = vec!["samples = t.samples + EXCLUDED.samples".to_owned()];
    for q in quantities() {
        columns.extend([
            format!("{q}_n"),
            format!("{q}_min"),
            format!("{q}_mean"),
            format!("{q}_max"),
        ]);
        aggregates.extend([
            format!("count({q})::int"),
            format!("min({q})"),
            format!("avg({q})::real"),
            format!("max({q})"),
        ]);
        merges.extend([
            format!("{q}_min = LEAST(t.{q}_min, EXCLUDED.{q}_min)"),
            format!("{q}_max = GREATEST(t.{q}_max, EXCLUDED.{q}_max)"),
            format!(
                "{q}_mean = CASE WHEN t.{q}_n + EXCLUDED.{q}_n = 0 THEN NULL ELSE
                 ((COALESCE(t.{q}_mean::float8 * t.{q}_n, 0)
                   + COALESCE(EXCLUDED.{q}_mean::float8 * EXCLUDED.{q}_n, 0))
                  / (t.{q}_n + EXCLUDED.{q}_n))::real END"
            ),
            format!("{q}_n = t.{q}_n + EXCLUDED.{q}_n"),
        ]);
    }
    format!(
        "INSERT INTO measurements_15min AS t ({columns})
         SELECT {aggregates} FROM \"{source}\"
         WHERE $1::timestamptz IS NULL OR ts < $1
         GROUP BY 1, 2
         ON CONFLICT (device_id, start) DO UPDATE SET {merges}",
        columns = columns.join(", "),
        aggregates = aggregates.join(", "),
        merges = merges.join(", "),
    )
}
