//! Work queued for the worker by other writers than ingest: admin changes that invalidate
//! intervals or rollups.

use chrono::{DateTime, Utc};

/// Queues a recompute of the intervals (then the rollups) of every counter of `device` after
/// its commissioning date changed from `old` to `new` (either `None`: unknown, no bound).
///
/// The span runs from the counter's first reading to the later of the two dates: the worker
/// then finds no usable reading before the start of the span (those before commissioning are
/// left out of its windows), so it rewrites every interval from the year 1 on, which deletes
/// the intervals that now fall before commissioning and brings back those that no longer do.
/// Counters without readings have no intervals and queue nothing.
pub async fn queue_commissioning(
    conn: &mut sqlx::PgConnection,
    device: i64,
    old: Option<DateTime<Utc>>,
    new: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT c.id, f.first, GREATEST(f.first, $2, $3), true
         FROM counters c
         CROSS JOIN LATERAL (SELECT min(ts) AS first FROM counter_readings
                             WHERE counter_id = c.id) f
         WHERE c.device_id = $1 AND f.first IS NOT NULL",
    )
    .bind(device)
    .bind(old)
    .bind(new)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queues a rebuild of the rollups (not the intervals) of every counter of a site, or of the
/// given devices: after a contract, time zone or placement change.
pub async fn queue_rollups(
    conn: &mut sqlx::PgConnection,
    site: Option<i64>,
    devices: &[i64],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO energy_dirty (counter_id, from_ts, to_ts, readings)
         SELECT c.id, b.lo, b.hi + interval '15 minutes', false
         FROM counters c
         JOIN devices d ON d.id = c.device_id
         JOIN gateways g ON g.id = d.gateway_id
         CROSS JOIN LATERAL (
             SELECT (SELECT min(start) FROM energy_intervals WHERE counter_id = c.id) AS lo,
                    (SELECT max(start) FROM energy_intervals WHERE counter_id = c.id) AS hi
         ) b
         WHERE b.lo IS NOT NULL AND (g.site_id = $1 OR d.id = ANY($2))",
    )
    .bind(site)
    .bind(devices)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
