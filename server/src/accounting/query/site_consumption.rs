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

/// Per counter and bucket: energy, measured, estimated, cost, priced days, days, currency.
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

/// Where the sums of a range of local dates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `energy_days` as they are (by=day).
    Days,
    /// `energy_days` folded into months: the days of a partial first or last month.
    DaysByMonth,
    /// `energy_months`: whole months (12 rows a counter for a year).
    Months,
}

impl Source {
    /// Sums per counter and bucket over `[$2, $3)` of the counters `$1`. Each text is fixed,
    /// so its prepared statement is cached per connection.
    fn sums(self) -> &'static str {
        match self {
            Self::Days => {
                "SELECT counter_id, day, energy_milli, measured::int8, estimated::int8, cost_nano,
                        (cost_nano IS NOT NULL)::int4::int8, 1::int8, currency
                 FROM energy_days WHERE counter_id = ANY($1) AND day >= $2 AND day < $3"
            }
            Self::DaysByMonth => {
                "SELECT counter_id, (day - (EXTRACT(DAY FROM day)::int - 1)) AS bucket,
                        sum(energy_milli)::int8, sum(measured)::int8, sum(estimated)::int8,
                        sum(cost_nano)::int8, count(cost_nano), count(*), max(currency)
                 FROM energy_days WHERE counter_id = ANY($1) AND day >= $2 AND day < $3
                 GROUP BY 1, 2"
            }
            Self::Months => {
                "SELECT counter_id, month, energy_milli, measured, estimated, cost_nano,
                        priced_days::int8, days::int8, currency
                 FROM energy_months WHERE counter_id = ANY($1) AND month >= $2 AND month < $3"
            }
        }
    }

    /// Highest quarter-hour per counter and bucket (group=meter), like [`Self::sums`].
    fn peaks(self) -> &'static str {
        match self {
            Self::Days => {
                "SELECT counter_id, day, peak_milli FROM energy_days
                 WHERE counter_id = ANY($1) AND day >= $2 AND day < $3"
            }
            Self::DaysByMonth => {
                "SELECT counter_id, (day - (EXTRACT(DAY FROM day)::int - 1)), max(peak_milli)
                 FROM energy_days WHERE counter_id = ANY($1) AND day >= $2 AND day < $3
                 GROUP BY 1, 2"
            }
            Self::Months => {
                "SELECT counter_id, month, peak_milli FROM energy_months
                 WHERE counter_id = ANY($1) AND month >= $2 AND month < $3"
            }
        }
    }
}

/// The sources of `first..=last`, each with its `[from, to)` dates: by day the days; by month
/// or year the whole months from the monthly rollup, the days of partial edge months folded.
/// Each range is a plain index range (no `OR` for the planner to turn into a filter). Years
/// are folded from months in Rust, because demand charges are monthly.
fn sources(first: NaiveDate, last: NaiveDate, by: Period) -> Vec<(Source, NaiveDate, NaiveDate)> {
    let after_last = last.succ_opt().unwrap_or(last);
    if by == Period::Day {
        return vec![(Source::Days, first, after_last)];
    }
    let (whole_from, whole_to) = whole_months(first, last);
    if whole_from >= whole_to {
        return vec![(Source::DaysByMonth, first, after_last)];
    }
    let mut sources = vec![(Source::Months, whole_from, whole_to)];
    if first < whole_from {
        sources.push((Source::DaysByMonth, first, whole_from));
    }
    if whole_to < after_last {
        sources.push((Source::DaysByMonth, whole_to, after_last));
    }
    sources
}

/// The site's highest quarter-hour per day (the daily rollup's peak) in `$2..=$3`.
const SITE_PEAKS_BY_DAY: &str = "SELECT day, peak_milli, peak_start FROM site_days
     WHERE site_id = $1 AND day >= $2 AND day <= $3 ORDER BY day";
/// The site's highest quarter-hour per month in `$2..=$3` (first of the month as the key).
const SITE_PEAKS_BY_MONTH: &str = "SELECT DISTINCT ON (b) b, peak_milli, peak_start
     FROM (SELECT (day - (EXTRACT(DAY FROM day)::int - 1)) AS b, peak_milli, peak_start
           FROM site_days WHERE site_id = $1 AND day >= $2 AND day <= $3) d
     ORDER BY b, peak_milli DESC, peak_start";

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
    // One after the other on one connection: running them concurrently (one connection
    // each) was slower on the 2-core benchmark machine (docs/benchmarks/energy.md, run D), and
    // one connection saves an acquire per statement (run E).
    let mut conn = pool.acquire().await?;
    let meters = site_meters(&mut conn, site).await?;
    let site_peaks: Vec<(NaiveDate, i64, DateTime<Utc>)> = sqlx::query_as(match by {
        Period::Day => SITE_PEAKS_BY_DAY,
        Period::Month | Period::Year => SITE_PEAKS_BY_MONTH,
    })
    .bind(site)
    .bind(first)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let contracts = load_site_contracts(&mut *conn, site).await?;
    let placements: Vec<Placement> = meters.iter().map(|m| m.placement.clone()).collect();
    let top = topology::top_level(&placements);

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
    let mut rows: Vec<SumRow> = Vec::new();
    let mut peaks: Vec<(i64, NaiveDate, i64)> = Vec::new();
    for (source, from, to) in sources(first, last, by) {
        rows.extend(
            sqlx::query_as::<_, SumRow>(source.sums())
                .bind(&counter_ids)
                .bind(from)
                .bind(to)
                .fetch_all(&mut *conn)
                .await?,
        );
        if group == Some(Group::Meter) {
            peaks.extend(
                sqlx::query_as::<_, (i64, NaiveDate, i64)>(source.peaks())
                    .bind(&counter_ids)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
    }

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

    #[test]
    fn sources_split_whole_months_from_edge_days() {
        use Source::{Days, DaysByMonth, Months};
        // By day: the days as they are, end exclusive.
        assert_eq!(
            sources(d(2026, 1, 15), d(2026, 4, 10), Period::Day),
            vec![(Days, d(2026, 1, 15), d(2026, 4, 11))]
        );
        // Partial edges: whole months from the rollup, the edge days folded.
        assert_eq!(
            sources(d(2026, 1, 15), d(2026, 4, 10), Period::Month),
            vec![
                (Months, d(2026, 2, 1), d(2026, 4, 1)),
                (DaysByMonth, d(2026, 1, 15), d(2026, 2, 1)),
                (DaysByMonth, d(2026, 4, 1), d(2026, 4, 11)),
            ]
        );
        // A year of whole months: the rollup alone.
        assert_eq!(
            sources(d(2025, 11, 1), d(2026, 10, 31), Period::Year),
            vec![(Months, d(2025, 11, 1), d(2026, 11, 1))]
        );
        // Inside one month: its days only.
        assert_eq!(
            sources(d(2026, 2, 5), d(2026, 2, 20), Period::Month),
            vec![(DaysByMonth, d(2026, 2, 5), d(2026, 2, 21))]
        );
    }
}
