//! Read side: a meter's 15-minute profile, and a site's consumption by day, month or year.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use headend_energy::engine::{Quality, QUARTER_MS};
use serde::Serialize;
use sqlx::PgPool;

use super::contracts::{self, in_force, SiteContracts};
use super::roles::{self, Role};
use super::topology::{self, Placement};

/// The longest profile one request may ask for (2 976 quarter-hours per register).
pub const MAX_PROFILE_DAYS: i64 = 31;
/// The longest consumption range per bucket size.
pub const MAX_DAYS_BY_DAY: i64 = 1_100;
pub const MAX_YEARS: i32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn wh(milli: i64) -> f64 {
    milli as f64 / 1000.0
}

/// Currency units from 1e-9, rounded to 1e-6 for display (the exact value stays stored).
fn money(nano: i128) -> f64 {
    let micro = if nano >= 0 {
        (nano + 500) / 1000
    } else {
        (nano - 500) / 1000
    };
    micro as f64 / 1e6
}

/// Currency units from 1e-12, rounded to 1e-6.
fn money_pico(pico: i128) -> f64 {
    let micro = if pico >= 0 {
        (pico + 500_000) / 1_000_000
    } else {
        (pico - 500_000) / 1_000_000
    };
    micro as f64 / 1e6
}

// ---------------------------------------------------------------------------------------
// Profile

#[derive(Debug, Serialize)]
pub struct Profile {
    pub device: String,
    pub time_zone: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub registers: Vec<RegisterProfile>,
    pub power: Vec<PowerInterval>,
}

#[derive(Debug, Serialize)]
pub struct RegisterProfile {
    pub name: String,
    pub unit: String,
    pub resettable: bool,
    pub role: Role,
    pub intervals: Vec<IntervalView>,
    pub events: Vec<EventView>,
    pub totals: ProfileTotals,
}

#[derive(Debug, Serialize)]
pub struct IntervalView {
    pub start: DateTime<Utc>,
    pub start_local: String,
    /// In the register's unit; `null` when missing.
    pub energy: Option<f64>,
    pub quality: Quality,
    /// The contract band of the interval, for import and export registers of a site with a
    /// contract in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<String>,
    /// Its cost at the band's price (export: the credit), in the contract currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub previous: f64,
    pub value: f64,
}

#[derive(Debug, Serialize)]
pub struct ProfileTotals {
    pub energy: f64,
    pub measured: u32,
    pub estimated: u32,
    pub missing: u32,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct PowerInterval {
    pub start: DateTime<Utc>,
    #[sqlx(skip)]
    pub start_local: String,
    pub samples: i64,
    pub p_mean: Option<f64>,
    pub p_min: Option<f64>,
    pub p_max: Option<f64>,
    pub q_mean: Option<f64>,
    pub s_mean: Option<f64>,
    pub u1_mean: Option<f64>,
    pub u2_mean: Option<f64>,
    pub u3_mean: Option<f64>,
    pub i1_mean: Option<f64>,
    pub i2_mean: Option<f64>,
    pub i3_mean: Option<f64>,
    /// The meter's own tariff (T1..T6) last reported in the interval.
    pub tariff: Option<i16>,
}

/// Snaps a requested range outwards to quarter-hours and bounds it.
pub fn profile_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), QueryError> {
    if to <= from {
        return Err(QueryError::Invalid("`to` must be after `from`".into()));
    }
    if to - from > Duration::days(MAX_PROFILE_DAYS) {
        return Err(QueryError::Invalid(format!(
            "a profile covers at most {MAX_PROFILE_DAYS} days; use the CSV export for more"
        )));
    }
    let q = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or(from);
    Ok((
        q(headend_energy::engine::floor_quarter(
            from.timestamp_millis(),
        )),
        q(headend_energy::engine::ceil_quarter(to.timestamp_millis())),
    ))
}

#[allow(clippy::too_many_arguments)]
pub async fn profile(
    pool: &PgPool,
    site: Option<i64>,
    device_id: i64,
    device_serial: &str,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    register: Option<&str>,
) -> Result<Profile, QueryError> {
    let (from, to) = profile_range(from, to)?;
    type CounterRow = (
        i64,
        String,
        String,
        bool,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let counters: Vec<CounterRow> = sqlx::query_as(
        "SELECT c.id, c.name, c.unit, c.resettable, d.import_register, d.export_register, d.reactive_register
         FROM counters c JOIN devices d ON d.id = c.device_id
         WHERE c.device_id = $1 AND ($2::text IS NULL OR c.name = $2) ORDER BY c.idx, c.name",
    )
    .bind(device_id)
    .bind(register)
    .fetch_all(pool)
    .await?;
    if let (Some(r), true) = (register, counters.is_empty()) {
        return Err(QueryError::Invalid(format!(
            "the meter has no register {r:?}"
        )));
    }
    let ids: Vec<i64> = counters.iter().map(|c| c.0).collect();
    let intervals: Vec<(i64, DateTime<Utc>, i64, i16)> = sqlx::query_as(
        "SELECT counter_id, start, energy_milli, quality FROM energy_intervals
         WHERE counter_id = ANY($1) AND start >= $2 AND start < $3 ORDER BY counter_id, start",
    )
    .bind(&ids)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let events: Vec<(i64, DateTime<Utc>, String, i64, i64)> = sqlx::query_as(
        "SELECT counter_id, ts, kind, previous, value FROM counter_events
         WHERE counter_id = ANY($1) AND ts >= $2 AND ts < $3 ORDER BY ts",
    )
    .bind(&ids)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut power: Vec<PowerInterval> = sqlx::query_as(
        "SELECT date_bin('15 minutes', ts, 'epoch') AS start, count(*) AS samples,
                avg(p)::float8 AS p_mean, min(p)::float8 AS p_min, max(p)::float8 AS p_max,
                avg(q)::float8 AS q_mean, avg(s)::float8 AS s_mean,
                avg(u1)::float8 AS u1_mean, avg(u2)::float8 AS u2_mean, avg(u3)::float8 AS u3_mean,
                avg(i1)::float8 AS i1_mean, avg(i2)::float8 AS i2_mean, avg(i3)::float8 AS i3_mean,
                (array_agg(tariff ORDER BY ts DESC) FILTER (WHERE tariff IS NOT NULL))[1] AS tariff
         FROM measurements WHERE device_id = $1 AND ts >= $2 AND ts < $3
         GROUP BY 1 ORDER BY 1",
    )
    .bind(device_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    for p in &mut power {
        p.start_local = calendar::local_offset_string(p.start, tz);
    }

    let contracts = match site {
        Some(site) => load_site_contracts(pool, site).await?,
        None => Vec::new(),
    };
    let tariffs: HashMap<i64, u8> = power
        .iter()
        .filter_map(|p| Some((p.start.timestamp_millis(), u8::try_from(p.tariff?).ok()?)))
        .collect();
    let mut by_counter: HashMap<i64, HashMap<i64, (i64, i16)>> = HashMap::new();
    for (id, start, energy, quality) in intervals {
        by_counter
            .entry(id)
            .or_default()
            .insert(start.timestamp_millis(), (energy, quality));
    }
    let quarters: Vec<DateTime<Utc>> = (from.timestamp_millis()..to.timestamp_millis())
        .step_by(usize::try_from(QUARTER_MS).unwrap_or(900_000))
        .filter_map(DateTime::from_timestamp_millis)
        .collect();
    let locals: Vec<String> = quarters
        .iter()
        .map(|q| calendar::local_offset_string(*q, tz))
        .collect();
    let registers = counters
        .into_iter()
        .map(|(id, name, unit, resettable, imp, exp, reac)| {
            let role = roles::role_of(&name, imp.as_deref(), exp.as_deref(), reac.as_deref());
            let stored = by_counter.remove(&id).unwrap_or_default();
            let mut totals = ProfileTotals {
                energy: 0.0,
                measured: 0,
                estimated: 0,
                missing: 0,
            };
            let mut sum = 0i64;
            let intervals = quarters
                .iter()
                .zip(&locals)
                .map(|(q, local)| {
                    let found = stored.get(&q.timestamp_millis()).copied();
                    let quality = match found {
                        Some((_, code)) => Quality::from_code(code).unwrap_or(Quality::Estimated),
                        None => Quality::Missing,
                    };
                    match quality {
                        Quality::Measured => totals.measured += 1,
                        Quality::Estimated => totals.estimated += 1,
                        Quality::Missing => totals.missing += 1,
                    }
                    if let Some((e, _)) = found {
                        sum += e;
                    }
                    let priced = matches!(role, Role::Import | Role::Export)
                        .then(|| in_force(&contracts, calendar::local_date(*q, tz)))
                        .flatten()
                        .map(|c| {
                            let band =
                                c.band_at(*q, tz, tariffs.get(&q.timestamp_millis()).copied());
                            let cost = found.map(|(e, _)| match role {
                                Role::Export => c.export_credit(band, e),
                                _ => c.energy_cost(band, e),
                            });
                            (c.bands[band].name.clone(), cost.map(|c| money_pico(c.0)))
                        });
                    IntervalView {
                        start: *q,
                        start_local: local.clone(),
                        energy: found.map(|(e, _)| wh(e)),
                        quality,
                        band: priced.as_ref().map(|(b, _)| b.clone()),
                        cost: priced.and_then(|(_, c)| c),
                    }
                })
                .collect();
            totals.energy = wh(sum);
            RegisterProfile {
                events: events
                    .iter()
                    .filter(|e| e.0 == id)
                    .map(|(_, ts, kind, previous, value)| EventView {
                        ts: *ts,
                        kind: kind.clone(),
                        previous: wh(*previous),
                        value: wh(*value),
                    })
                    .collect(),
                name,
                unit,
                resettable,
                role,
                intervals,
                totals,
            }
        })
        .collect();
    Ok(Profile {
        device: device_serial.to_owned(),
        time_zone: tz.name().to_owned(),
        from,
        to,
        registers,
        power,
    })
}

// ---------------------------------------------------------------------------------------
// Consumption

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Meter,
    Circuit,
    Panel,
    Usage,
}

impl std::str::FromStr for Group {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "meter" => Ok(Self::Meter),
            "circuit" => Ok(Self::Circuit),
            "panel" => Ok(Self::Panel),
            "usage" => Ok(Self::Usage),
            other => Err(QueryError::Invalid(format!(
                "group {other:?} is not one of meter, circuit, panel, usage"
            ))),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Consumption {
    pub site_id: i64,
    pub time_zone: String,
    pub by: Period,
    pub group: Option<&'static str>,
    /// First and last local date covered (inclusive).
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub currency: Option<String>,
    pub periods: Vec<PeriodView>,
}

#[derive(Debug, Serialize)]
pub struct PeriodView {
    pub start: NaiveDate,
    pub start_utc: DateTime<Utc>,
    pub end_utc: DateTime<Utc>,
    pub total: TotalView,
    pub groups: Vec<GroupView>,
}

#[derive(Debug, Serialize)]
pub struct TotalView {
    pub import_wh: f64,
    pub export_wh: f64,
    pub reactive_varh: f64,
    /// Energy at the contract's band prices, net of export credit.
    pub energy_cost: Option<f64>,
    /// Monthly demand charge on the month's peak (months and years only).
    pub demand_charge: Option<f64>,
    /// Reactive energy above the contract's tan(phi) limit (months and years only).
    pub reactive_charge: Option<f64>,
    pub cost: Option<f64>,
    pub peak: Option<PeakView>,
    pub completeness: Completeness,
}

#[derive(Debug, Serialize)]
pub struct PeakView {
    /// Mean power of the highest quarter-hour, W.
    pub power_w: f64,
    pub start: DateTime<Utc>,
    pub start_local: String,
}

#[derive(Debug, Serialize, Default, Clone, Copy)]
pub struct Completeness {
    pub expected: u64,
    pub measured: u64,
    pub estimated: u64,
    pub missing: u64,
    pub measured_pct: f64,
    pub estimated_pct: f64,
    pub missing_pct: f64,
}

impl Completeness {
    fn new(expected: u64, measured: u64, estimated: u64) -> Self {
        let missing = expected.saturating_sub(measured + estimated);
        let pct = |n: u64| {
            if expected == 0 {
                0.0
            } else {
                (n as f64 * 10_000.0 / expected as f64).round() / 100.0
            }
        };
        Self {
            expected,
            measured,
            estimated,
            missing,
            measured_pct: pct(measured),
            estimated_pct: pct(estimated),
            missing_pct: pct(missing),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupView {
    pub key: String,
    pub name: String,
    pub import_wh: f64,
    pub export_wh: f64,
    pub energy_cost: Option<f64>,
    /// Highest quarter-hour of this group's own meter (meter grouping only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_w: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completeness: Option<Completeness>,
}

/// A meter of the site with its labels and billing registers.
#[derive(Debug, Clone)]
struct Meter {
    placement: Placement,
    serial: String,
    name: String,
    usage: String,
    circuit: Option<(i64, String)>,
    panel: Option<(i64, String)>,
    import: Option<i64>,
    export: Option<i64>,
    reactive: Option<i64>,
}

/// Sums of one register over one bucket.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    energy: i64,
    measured: i64,
    estimated: i64,
    cost_nano: i128,
    priced: bool,
    peak: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct MeterBucket {
    import: Sums,
    export: Sums,
    reactive: Sums,
}

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
        time_zone: tz.name().to_owned(),
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

/// Rows that add up to the site total: leaves, plus each counted parent meter's remainder.
fn group_rows(
    group: Group,
    meters: &[Meter],
    per_meter: &[(usize, MeterBucket)],
    top: &std::collections::HashSet<i64>,
    expected: u64,
) -> Vec<GroupView> {
    let placements: Vec<Placement> = meters.iter().map(|m| m.placement.clone()).collect();
    let children = topology::children(&placements);
    // A meter's key is its serial, unless the serial does not name one meter of the site
    // (serials are not unique, see `devices::Resolved`): then `device:{id}`, so that two
    // meters are never merged into one row.
    let mut serials: HashMap<&str, usize> = HashMap::new();
    for m in meters {
        *serials.entry(m.serial.as_str()).or_default() += 1;
    }
    let meter_key = |m: &Meter| {
        if m.serial.is_empty() || serials.get(m.serial.as_str()).copied().unwrap_or(0) > 1 {
            format!("device:{}", m.placement.device_id)
        } else {
            m.serial.clone()
        }
    };
    let by_id: HashMap<i64, (&Meter, &MeterBucket)> = per_meter
        .iter()
        .map(|(i, b)| (meters[*i].placement.device_id, (&meters[*i], b)))
        .collect();
    let cost = |b: &MeterBucket| -> Option<i128> {
        b.import.priced.then_some(
            b.import.cost_nano
                - if b.export.priced {
                    b.export.cost_nano
                } else {
                    0
                },
        )
    };

    if group == Group::Meter {
        return meters
            .iter()
            .zip(per_meter)
            .filter(|(m, _)| m.import.is_some())
            .map(|(m, (_, b))| GroupView {
                key: meter_key(m),
                name: m.name.clone(),
                import_wh: wh(b.import.energy),
                export_wh: wh(b.export.energy),
                energy_cost: cost(b).map(money),
                peak_w: Some(wh(b.import.peak) * 4.0),
                completeness: Some(Completeness::new(
                    expected,
                    b.import.measured as u64,
                    b.import.estimated as u64,
                )),
            })
            .collect();
    }

    // Accumulate (key, name) -> (import, export, cost).
    let mut acc: BTreeMap<String, (String, i64, i64, Option<i128>)> = BTreeMap::new();
    let mut add = |key: String, name: String, import: i64, export: i64, c: Option<i128>| {
        let e = acc.entry(key).or_insert((name, 0, 0, Some(0)));
        e.1 += import;
        e.2 += export;
        e.3 = match (e.3, c) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    };
    // Walk down from the counted meters: a parent contributes its remainder, its children
    // themselves (recursively).
    let mut stack: Vec<i64> = top.iter().copied().collect();
    stack.sort_unstable();
    while let Some(id) = stack.pop() {
        let Some((m, b)) = by_id.get(&id) else {
            continue;
        };
        let kids = children.get(&id).cloned().unwrap_or_default();
        let (mut imp, mut exp, mut c) = (b.import.energy, b.export.energy, cost(b));
        for k in &kids {
            if let Some((_, kb)) = by_id.get(k) {
                imp -= kb.import.energy;
                exp -= kb.export.energy;
                c = match (c, cost(kb)) {
                    (Some(a), Some(kc)) => Some(a - kc),
                    _ => None,
                };
            }
            stack.push(*k);
        }
        let (key, name) = match group {
            Group::Usage => (m.usage.clone(), m.usage.clone()),
            Group::Circuit => match (&m.circuit, &m.panel, kids.is_empty()) {
                (Some((cid, cname)), Some((_, pname)), _) => {
                    (format!("circuit:{cid}"), format!("{pname} / {cname}"))
                }
                (_, Some((pid, pname)), false) => (
                    format!("panel:{pid}:rest"),
                    format!("{pname} (not submetered)"),
                ),
                (_, Some((pid, pname)), true) => (format!("panel:{pid}"), pname.clone()),
                (_, None, false) if m.placement.measures.as_deref() == Some("site") => {
                    ("site:rest".into(), "Site (not submetered)".into())
                }
                _ => (
                    format!("meter:{}", meter_key(m)),
                    format!("Unplaced: {}", m.name),
                ),
            },
            Group::Panel => match (&m.panel, m.placement.measures.as_deref()) {
                (Some((pid, pname)), _) => (format!("panel:{pid}"), pname.clone()),
                (None, Some("site")) => ("site:rest".into(), "Site (no panel)".into()),
                _ => (
                    format!("meter:{}", meter_key(m)),
                    format!("Unplaced: {}", m.name),
                ),
            },
            Group::Meter => unreachable!("handled above"),
        };
        add(key, name, imp, exp, c);
    }
    acc.into_iter()
        .map(|(key, (name, imp, exp, c))| GroupView {
            key,
            name,
            import_wh: wh(imp),
            export_wh: wh(exp),
            energy_cost: c.map(money),
            peak_w: None,
            completeness: None,
        })
        .collect()
}

async fn site_meters(pool: &PgPool, site: i64) -> Result<Vec<Meter>, sqlx::Error> {
    type Row = (
        i64,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.id, d.measures, d.panel_id, d.circuit_id, c.panel_id, d.serial,
                COALESCE(d.name, NULLIF(d.description, ''), NULLIF(d.sg_description, '')),
                COALESCE(d.usage, c.usage), c.name, p.name,
                d.import_register, d.export_register, d.reactive_register, d.model
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN circuits c ON c.id = d.circuit_id
         LEFT JOIN panels p ON p.id = COALESCE(c.panel_id, d.panel_id)
         WHERE g.site_id = $1 AND d.kind = 'meter'
         ORDER BY d.id",
    )
    .bind(site)
    .fetch_all(pool)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let counters: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT id, device_id, name FROM counters WHERE device_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                measures,
                panel_id,
                circuit_id,
                circuit_panel,
                serial,
                name,
                usage,
                cname,
                pname,
                imp,
                exp,
                reac,
                model,
            )| {
                let find = |role: Role| {
                    counters
                        .iter()
                        .find(|(_, d, n)| {
                            *d == id
                                && roles::role_of(
                                    n,
                                    imp.as_deref(),
                                    exp.as_deref(),
                                    reac.as_deref(),
                                ) == role
                        })
                        .map(|(c, ..)| *c)
                };
                let panel_id_eff = circuit_panel.or(panel_id);
                Meter {
                    placement: Placement {
                        device_id: id,
                        measures,
                        panel_id,
                        circuit_id,
                        circuit_panel_id: circuit_panel,
                    },
                    name: name.unwrap_or_else(|| {
                        format!("{} {}", model.unwrap_or_default(), serial)
                            .trim()
                            .to_owned()
                    }),
                    serial,
                    usage: usage.unwrap_or_else(|| "other".into()),
                    circuit: circuit_id.zip(cname),
                    panel: panel_id_eff.zip(pname),
                    import: find(Role::Import),
                    export: find(Role::Export),
                    reactive: find(Role::Reactive),
                }
            },
        )
        .collect())
}

/// The site's valid contracts; a stored one that is not valid is logged (see
/// [`super::contracts::load`]).
async fn load_site_contracts(pool: &PgPool, site: i64) -> Result<SiteContracts, sqlx::Error> {
    let mut loaded = contracts::load(pool, &[site]).await?;
    loaded.warn_bad("energy query");
    Ok(loaded.take_site(site))
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
