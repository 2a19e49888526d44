//! Site totals: the quarter-hours and daily peaks of the meters at the top of a site.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::{Postgres, Transaction};

use super::{Step, WorkerError};
use crate::accounting::roles::{self, Role};
use crate::accounting::topology::{self, Placement};

/// Recomputes the site's total per quarter-hour over `span` from its top-level meters' import
/// intervals, and the daily peaks of the local days it touches.
pub(super) async fn rebuild_site(
    tx: &mut Transaction<'_, Postgres>,
    site: i64,
    tz: Tz,
    span: (DateTime<Utc>, DateTime<Utc>),
) -> Result<(), WorkerError> {
    let first = calendar::local_date(span.0, tz);
    let last = calendar::local_date(span.1 - chrono::Duration::milliseconds(1), tz).max(first);
    let lo = calendar::period_bounds(tz, first, Period::Day).0;
    let hi = calendar::period_bounds(tz, last, Period::Day).1;
    let import = top_level_import_counters(tx, site).await?;
    sqlx::query("DELETE FROM site_intervals WHERE site_id = $1 AND start >= $2 AND start < $3")
        .bind(site)
        .bind(lo)
        .bind(hi)
        .execute(&mut **tx)
        .await
        .step("delete site intervals")?;
    sqlx::query(
        "INSERT INTO site_intervals (site_id, start, energy_milli)
         SELECT $1, start, sum(energy_milli)::int8 FROM energy_intervals
         WHERE counter_id = ANY($4) AND start >= $2 AND start < $3 GROUP BY start",
    )
    .bind(site)
    .bind(lo)
    .bind(hi)
    .bind(&import)
    .execute(&mut **tx)
    .await
    .step("insert site intervals")?;
    let rows: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT start, energy_milli FROM site_intervals
         WHERE site_id = $1 AND start >= $2 AND start < $3 ORDER BY start",
    )
    .bind(site)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut **tx)
    .await
    .step("load site intervals")?;
    let mut peaks: BTreeMap<NaiveDate, (i64, DateTime<Utc>)> = BTreeMap::new();
    for (start, energy) in rows {
        let day = calendar::local_date(start, tz);
        let entry = peaks.entry(day).or_insert((energy, start));
        // The first of equal peaks is the one reported.
        if energy > entry.0 {
            *entry = (energy, start);
        }
    }
    sqlx::query("DELETE FROM site_days WHERE site_id = $1 AND day >= $2 AND day <= $3")
        .bind(site)
        .bind(first)
        .bind(last)
        .execute(&mut **tx)
        .await
        .step("delete site days")?;
    let days: Vec<NaiveDate> = peaks.keys().copied().collect();
    let peak: Vec<i64> = peaks.values().map(|p| p.0).collect();
    let starts: Vec<DateTime<Utc>> = peaks.values().map(|p| p.1).collect();
    sqlx::query(
        "INSERT INTO site_days (site_id, day, peak_milli, peak_start)
         SELECT $1, d, p, s FROM UNNEST($2::date[], $3::int8[], $4::timestamptz[]) AS r(d, p, s)",
    )
    .bind(site)
    .bind(&days)
    .bind(&peak)
    .bind(&starts)
    .execute(&mut **tx)
    .await
    .step("insert site days")?;
    Ok(())
}

/// The import registers of the meters that make up the site total.
async fn top_level_import_counters(
    conn: &mut sqlx::PgConnection,
    site: i64,
) -> Result<Vec<i64>, WorkerError> {
    let placements = site_placements(&mut *conn, site)
        .await
        .step("load site meters")?;
    let top: HashSet<i64> = topology::top_level(&placements);
    let top: Vec<i64> = top.into_iter().collect();
    let rows: Vec<(i64, String, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT c.id, c.name, d.import_register, d.export_register, d.reactive_register
         FROM counters c JOIN devices d ON d.id = c.device_id WHERE d.id = ANY($1)",
    )
    .bind(&top)
    .fetch_all(&mut *conn)
    .await
    .step("load top-level counters")?;
    Ok(rows
        .into_iter()
        .filter(|(_, name, i, e, r)| {
            roles::role_of(name, i.as_deref(), e.as_deref(), r.as_deref()) == Role::Import
        })
        .map(|(id, ..)| id)
        .collect())
}

/// Every meter of a site with its placement.
pub(crate) async fn site_placements(
    conn: &mut sqlx::PgConnection,
    site: i64,
) -> Result<Vec<Placement>, sqlx::Error> {
    let rows: Vec<(i64, Option<String>, Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT d.id, d.measures, d.panel_id, d.circuit_id, c.panel_id
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN circuits c ON c.id = d.circuit_id
         WHERE g.site_id = $1 AND d.kind = 'meter'",
    )
    .bind(site)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(device_id, measures, panel_id, circuit_id, circuit_panel_id)| Placement {
                device_id,
                measures,
                panel_id,
                circuit_id,
                circuit_panel_id,
            },
        )
        .collect())
}
