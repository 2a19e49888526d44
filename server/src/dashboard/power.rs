//! A site's power curve: the mean power of each quarter-hour of its total import (the site's
//! top-level meters summed without double counting, `site_intervals`), so the overview's
//! sparkline, the site page's day curve and the site's peak demand are the same numbers.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::PgPool;

/// One quarter-hour of a site's curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quarter {
    pub start: DateTime<Utc>,
    /// Mean power over the quarter-hour, W; `None` when it was not accounted (yet).
    pub power_w: Option<f64>,
}

/// Mean power in W of a quarter-hour holding `energy_milli` mWh: 4 × its Wh.
pub fn mean_power_w(energy_milli: i64) -> f64 {
    energy_milli as f64 / 1000.0 * 4.0
}

/// The quarter-hours of the site-local `date` (92, 96 or 100 of them), each with its power.
pub fn day_quarters(
    tz: Tz,
    date: NaiveDate,
    energies: &HashMap<DateTime<Utc>, i64>,
) -> Vec<Quarter> {
    let (start, end) = calendar::period_bounds(tz, date, Period::Day);
    let mut out = Vec::with_capacity(100);
    let mut t = start;
    while t < end {
        out.push(Quarter {
            start: t,
            power_w: energies.get(&t).map(|e| mean_power_w(*e)),
        });
        t += Duration::minutes(15);
    }
    out
}

/// The quarter-hour energies (mWh) of several sites, each over its own `[from, to)`: one query
/// for all of them (the overview shows ~50 sites).
pub async fn sites_quarters(
    pool: &PgPool,
    ranges: &[(i64, DateTime<Utc>, DateTime<Utc>)],
) -> Result<HashMap<i64, HashMap<DateTime<Utc>, i64>>, sqlx::Error> {
    let sites: Vec<i64> = ranges.iter().map(|r| r.0).collect();
    let froms: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.1).collect();
    let tos: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.2).collect();
    let rows: Vec<(i64, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT i.site_id, i.start, i.energy_milli
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS r(site_id, f, t)
         JOIN site_intervals i ON i.site_id = r.site_id AND i.start >= r.f AND i.start < r.t
         ORDER BY 1, 2",
    )
    .bind(&sites)
    .bind(&froms)
    .bind(&tos)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<i64, HashMap<DateTime<Utc>, i64>> = HashMap::new();
    for (site, start, e) in rows {
        out.entry(site).or_default().insert(start, e);
    }
    Ok(out)
}

/// The power curve of one site on its local `date`.
pub async fn site_day(
    pool: &PgPool,
    site: i64,
    tz: Tz,
    date: NaiveDate,
) -> Result<Vec<Quarter>, sqlx::Error> {
    let (from, to) = calendar::period_bounds(tz, date, Period::Day);
    let energies = sites_quarters(pool, &[(site, from, to)])
        .await?
        .remove(&site)
        .unwrap_or_default();
    Ok(day_quarters(tz, date, &energies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_has_its_local_quarters_with_gaps_left_empty() {
        let tz: Tz = "Europe/Ljubljana".parse().unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let (start, _) = calendar::period_bounds(tz, date, Period::Day);
        let energies = HashMap::from([(start, 250), (start + Duration::minutes(30), 1000)]);
        let q = day_quarters(tz, date, &energies);
        assert_eq!(q.len(), 92, "spring forward");
        assert_eq!(q[0].power_w, Some(1.0));
        assert_eq!(q[1].power_w, None);
        assert_eq!(q[2].power_w, Some(4.0));
    }
}
