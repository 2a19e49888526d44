//! A site's consumption and cost by day, month or year, from the daily and monthly rollups.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use headend_energy::engine::QUARTER_MS;
use sqlx::PgPool;

use super::super::contracts::in_force;
use super::super::topology::{self, Placement};
use super::meters::{group_rows, site_meters, Meter, MeterBucket, Sums};
use super::views::{Completeness, Consumption, Group, PeakView, PeriodView, TotalView};
use super::{load_site_contracts, money, wh, QueryError, MAX_DAYS_BY_DAY, MAX_YEARS};

/// The local dates `from..=to` a consumption request covers.
pub fn consumption_dates(
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by: Period,
) -> Result<(NaiveDate, NaiveDate), QueryError> {
    if to <= from {
        return Err(QueryError::Invalid("`to` must be after `from`".into()));
    }
    let first = calendar::local_date(from, tz);
    let last = calendar::local_date(to - Duration::milliseconds(1), tz).max(first);
    let days = (last - first).num_days() + 1;
    match by {
        Period::Day if days > MAX_DAYS_BY_DAY => Err(QueryError::Invalid(format!(
            "by=day covers at most {MAX_DAYS_BY_DAY} days; use by=month"
        ))),
        _ if last.year() - first.year() >= MAX_YEARS => Err(QueryError::Invalid(format!(
            "a consumption query covers at most {MAX_YEARS} years"
        ))),
        _ => Ok((first, last)),
    }
}

/// The whole months inside `first..=last`, as `[from, to)` first-of-month dates (empty when
/// `from >= to`).
fn whole_months(first: NaiveDate, last: NaiveDate) -> (NaiveDate, NaiveDate) {
    let month_start = |d: NaiveDate| d.with_day(1).unwrap_or(d);
    let next_month = |d: NaiveDate| {
        month_start(d)
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(d)
    };
    let from = if first.day() == 1 {
        first
    } else {
        next_month(first)
    };
    let after_last = last.succ_opt().unwrap_or(last);
    let to = month_start(after_last);
    if from >= to {
        (from, from)
    } else {
        (from, to)
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn consumption(
    pool: &PgPool,
    site: i64,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by: Period,
    group: Option<Group>,
    now: DateTime<Utc>,
) -> Result<Consumption, QueryError> {
    let (first, last) = consumption_dates(tz, from, to, by)?;
    let meters = site_meters(pool, site).await?;
    let placements: Vec<Placement> = meters.iter().map(|m| m.placement.clone()).collect();
    let top = topology::top_level(&placements);

    // Per counter and bucket sums: SQL does the day-to-bucket folding. A bucket is a date
    // computed with date arithmetic (no cast through timestamptz); years are folded from
    // months in Rust, because demand charges are monthly.
    let bucket = match by {
        Period::Day => "day",
        Period::Month | Period::Year => "(day - (EXTRACT(DAY FROM day)::int - 1))",
    };
    // Only the registers the answer needs: the total needs the top-level meters (import,
    // export, reactive for the reactive charge); a grouping needs every meter's import and
    // export.
    let counter_ids: Vec<i64> = meters
        .iter()
        .flat_map(|m| {
            let counted = top.contains(&m.placement.device_id);
            let shown = counted || group.is_some();
            [
                m.import.filter(|_| shown),
                m.export.filter(|_| shown),
                m.reactive.filter(|_| counted),
            ]
        })
        .flatten()
        .collect();
    type SumRow = (
        i64,
        NaiveDate,
        i64,
        i64,
        i64,
        Option<i64>,
        i64,
        i64,
        Option<String>,
    );
    // Whole months come from the monthly rollup (12 rows a counter for a year); the days of
    // a partial first or last month from the daily one.
    let (whole_from, whole_to) = whole_months(first, last);
    let sql = if by == Period::Day {
        // One row per counter and day already: no grouping.
        "SELECT counter_id, day, energy_milli, measured::int8, estimated::int8, cost_nano,
                (cost_nano IS NOT NULL)::int4::int8, 1::int8, currency
         FROM energy_days WHERE counter_id = ANY($1) AND day >= $2 AND day <= $3"
            .to_owned()
    } else {
        format!(
            "SELECT counter_id, month, energy_milli, measured, estimated, cost_nano,
                    priced_days::int8, days::int8, currency
             FROM energy_months
             WHERE counter_id = ANY($1) AND month >= $4 AND month < $5
             UNION ALL
             SELECT counter_id, {bucket} AS bucket,
                    sum(energy_milli)::int8, sum(measured)::int8, sum(estimated)::int8,
                    sum(cost_nano)::int8, count(cost_nano), count(*), max(currency)
             FROM energy_days
             WHERE counter_id = ANY($1)
               AND ((day >= $2 AND day <= $3 AND day < $4)
                    OR (day >= $2 AND day <= $3 AND day >= $5))
             GROUP BY 1, 2"
        )
    };
    let rows: Vec<SumRow> = sqlx::query_as(&sql)
        .bind(&counter_ids)
        .bind(first)
        .bind(last)
        .bind(whole_from)
        .bind(whole_to)
        .fetch_all(pool)
        .await?;
    let peaks: Vec<(i64, NaiveDate, i64)> = if group == Some(Group::Meter) {
        let sql = if by == Period::Day {
            "SELECT counter_id, day, peak_milli
             FROM energy_days WHERE counter_id = ANY($1) AND day >= $2 AND day <= $3"
                .to_owned()
        } else {
            format!(
                "SELECT counter_id, month, peak_milli FROM energy_months
                 WHERE counter_id = ANY($1) AND month >= $4 AND month < $5
                 UNION ALL
                 SELECT counter_id, {bucket}, max(peak_milli)
                 FROM energy_days
                 WHERE counter_id = ANY($1)
                   AND ((day >= $2 AND day <= $3 AND day < $4)
                        OR (day >= $2 AND day <= $3 AND day >= $5))
                 GROUP BY 1, 2"
            )
        };
        sqlx::query_as(&sql)
            .bind(&counter_ids)
            .bind(first)
            .bind(last)
            .bind(whole_from)
            .bind(whole_to)
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let site_peaks: Vec<(NaiveDate, i64, DateTime<Utc>)> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (b) b, peak_milli, peak_start
         FROM (SELECT {bucket} AS b, peak_milli, peak_start FROM site_days
               WHERE site_id = $1 AND day >= $2 AND day <= $3) d
         ORDER BY b, peak_milli DESC, peak_start"
    ))
    .bind(site)
    .bind(first)
    .bind(last)
    .fetch_all(pool)
    .await?;
    let contracts = load_site_contracts(pool, site).await?;

    let mut currency = None;
    let mut sums: HashMap<(i64, NaiveDate), Sums> = HashMap::new();
    for (counter, bucket, energy, measured, estimated, cost, priced, days, cur) in rows {
        if cur.is_some() {
            currency = cur;
        }
        sums.insert(
            (counter, bucket),
            Sums {
                energy,
                measured,
                estimated,
                cost_nano: cost.map_or(0, i128::from),
                priced: priced == days,
                peak: 0,
            },
        );
    }
    for (counter, bucket, peak) in peaks {
        if let Some(s) = sums.get_mut(&(counter, bucket)) {
            s.peak = peak;
        }
    }

    // Monthly (or daily) buckets, then folded into the requested periods.
    let spans: Vec<calendar::PeriodSpan> = calendar::periods(
        tz,
        calendar::period_bounds(tz, first, Period::Day).0,
        calendar::period_bounds(tz, last, Period::Day).1,
        by,
    )
    .collect();
    let mut periods = Vec::with_capacity(spans.len());
    for span in spans {
        let buckets: Vec<NaiveDate> = match by {
            Period::Day => vec![span.start_date],
            Period::Month => vec![span.start_date],
            Period::Year => (1..=12)
                .filter_map(|m| NaiveDate::from_ymd_opt(span.start_date.year(), m, 1))
                .filter(|d| {
                    *d <= last
                        && calendar::period_start(*d, Period::Month)
                            >= calendar::period_start(first, Period::Month)
                })
                .collect(),
        };
        let bucket_of = |m: &Meter| -> MeterBucket {
            let get = |c: Option<i64>| {
                let mut acc = Sums {
                    priced: true,
                    ..Sums::default()
                };
                let mut any = false;
                for b in &buckets {
                    if let Some(s) = c.and_then(|c| sums.get(&(c, *b))) {
                        any = true;
                        acc.energy += s.energy;
                        acc.measured += s.measured;
                        acc.estimated += s.estimated;
                        acc.cost_nano += s.cost_nano;
                        acc.priced &= s.priced;
                        acc.peak = acc.peak.max(s.peak);
                    }
                }
                if !any {
                    acc.priced = false;
                }
                acc
            };
            MeterBucket {
                import: get(m.import),
                export: get(m.export),
                reactive: get(m.reactive),
            }
        };
        let per_meter: Vec<(usize, MeterBucket)> = meters
            .iter()
            .enumerate()
            .map(|(i, m)| (i, bucket_of(m)))
            .collect();

        // Expected quarter-hours: the part of the period that has already ended.
        let end_clipped = span.end_utc.min(now.max(span.start_utc));
        let expected_per_meter =
            ((end_clipped - span.start_utc).num_milliseconds().max(0) / QUARTER_MS) as u64;

        let top_buckets: Vec<&MeterBucket> = per_meter
            .iter()
            .filter(|(i, _)| top.contains(&meters[*i].placement.device_id))
            .map(|(_, b)| b)
            .collect();
        let import: i64 = top_buckets.iter().map(|b| b.import.energy).sum();
        let export: i64 = top_buckets.iter().map(|b| b.export.energy).sum();
        let reactive: i64 = top_buckets.iter().map(|b| b.reactive.energy).sum();
        let priced = !top_buckets.is_empty()
            && top_buckets
                .iter()
                .all(|b| b.import.priced && (b.export.energy == 0 || b.export.priced));
        let energy_cost: i128 = top_buckets
            .iter()
            .map(|b| b.import.cost_nano - b.export.cost_nano)
            .sum();
        let with_import: Vec<&&MeterBucket> = top_buckets.iter().filter(|_| true).collect();
        let n_meters = meters
            .iter()
            .filter(|m| top.contains(&m.placement.device_id) && m.import.is_some())
            .count() as u64;
        let completeness = Completeness::new(
            expected_per_meter * n_meters,
            with_import.iter().map(|b| b.import.measured as u64).sum(),
            with_import.iter().map(|b| b.import.estimated as u64).sum(),
        );

        // Monthly charges (demand on the site's peak, reactive above tan phi).
        let (mut demand, mut reactive_charge, mut any_monthly) = (0i128, 0i128, false);
        let mut peak: Option<(i64, DateTime<Utc>)> = None;
        for (bucket, p, start) in &site_peaks {
            let inside = match by {
                Period::Day | Period::Month => *bucket == span.start_date,
                Period::Year => bucket.year() == span.start_date.year(),
            };
            if !inside {
                continue;
            }
            if peak.is_none_or(|(best, _)| *p > best) {
                peak = Some((*p, *start));
            }
            if by != Period::Day {
                if let Some(contract) = in_force(&contracts, *bucket) {
                    if contract.demand_charge.is_some() {
                        any_monthly = true;
                        // Mean power of a quarter-hour in W = 4 × its energy in Wh.
                        demand += contract.demand_cost(p.saturating_mul(4)).0 / 1000;
                    }
                }
            }
        }
        if by != Period::Day {
            for b in &buckets {
                let Some(contract) = in_force(&contracts, *b) else {
                    continue;
                };
                if contract.reactive.is_none() {
                    continue;
                }
                any_monthly = true;
                let (mut active_m, mut reactive_m) = (0i64, 0i64);
                for m in meters
                    .iter()
                    .filter(|m| top.contains(&m.placement.device_id))
                {
                    active_m += m
                        .import
                        .and_then(|c| sums.get(&(c, *b)))
                        .map_or(0, |s| s.energy);
                    reactive_m += m
                        .reactive
                        .and_then(|c| sums.get(&(c, *b)))
                        .map_or(0, |s| s.energy);
                }
                reactive_charge += contract.reactive_cost(active_m, reactive_m).0 / 1000;
            }
        }
        let has_contract = buckets.iter().any(|b| in_force(&contracts, *b).is_some())
            || in_force(&contracts, span.start_date).is_some();
        let energy_cost_v = (has_contract && priced).then(|| money(energy_cost));
        let demand_v = (by != Period::Day && any_monthly).then(|| money(demand));
        let reactive_v = (by != Period::Day && any_monthly).then(|| money(reactive_charge));
        let total = TotalView {
            import_wh: wh(import),
            export_wh: wh(export),
            reactive_varh: wh(reactive),
            energy_cost: energy_cost_v,
            demand_charge: demand_v,
            reactive_charge: reactive_v,
            cost: energy_cost_v.map(|_| money(energy_cost + demand + reactive_charge)),
            peak: peak.map(|(p, start)| PeakView {
                power_w: wh(p) * 4.0,
                start,
                start_local: calendar::local_offset_string(start, tz),
            }),
            completeness,
        };
        let groups = match group {
            None => Vec::new(),
            Some(g) => group_rows(g, &meters, &per_meter, &top, expected_per_meter),
        };
        periods.push(PeriodView {
            start: span.start_date,
            start_utc: span.start_utc,
            end_utc: span.end_utc,
            total,
            groups,
        });
    }
    Ok(Consumption {
        site_id: site,
        time_zone: tz.into(),
        by,
        group: group.map(|g| match g {
            Group::Meter => "meter",
            Group::Circuit => "circuit",
            Group::Panel => "panel",
            Group::Usage => "usage",
        }),
        from: first,
        to: last,
        currency,
        periods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn whole_months_inside_a_range() {
        // A year: all twelve months, no edge days.
        assert_eq!(
            whole_months(d(2025, 11, 1), d(2026, 10, 31)),
            (d(2025, 11, 1), d(2026, 11, 1))
        );
        // Partial edges: only the months in between.
        assert_eq!(
            whole_months(d(2026, 1, 15), d(2026, 4, 10)),
            (d(2026, 2, 1), d(2026, 4, 1))
        );
        // Inside one month: none (empty range).
        let (a, b) = whole_months(d(2026, 3, 5), d(2026, 3, 20));
        assert!(a >= b);
        // Ends on the last day of February in a leap year.
        assert_eq!(
            whole_months(d(2028, 2, 1), d(2028, 2, 29)),
            (d(2028, 2, 1), d(2028, 3, 1))
        );
        // Starts on the 1st, ends mid-month.
        assert_eq!(
            whole_months(d(2026, 1, 1), d(2026, 3, 30)),
            (d(2026, 1, 1), d(2026, 3, 1))
        );
    }
}
