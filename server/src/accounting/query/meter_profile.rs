//! A meter's quarter-hour profile: energy per register with quality, band and cost, its
//! counter events, and power statistics.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use headend_energy::calendar;
use headend_energy::engine::{Quality, QUARTER_MS};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use chrono::NaiveDate;

use super::super::contracts::{in_force, Loaded, SiteContracts};
use super::super::roles::{self, Role};
use super::{load_site_contracts, money_pico, wh, QualitySchema, QueryError, MAX_PROFILE_DAYS};
use crate::zone::TimeZone;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Profile {
    /// Meter serial.
    pub device: String,
    /// Zone of `start_local`.
    pub time_zone: TimeZone,
    /// Requested start, snapped down to a quarter-hour.
    pub from: DateTime<Utc>,
    /// Requested end, snapped up to a quarter-hour (exclusive).
    pub to: DateTime<Utc>,
    pub registers: Vec<RegisterProfile>,
    /// Quarter-hours with at least one measurement.
    pub power: Vec<PowerInterval>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegisterProfile {
    /// Counter name, e.g. counter1nr.
    pub name: String,
    /// Wh, varh or VAh.
    pub unit: String,
    pub resettable: bool,
    pub role: Role,
    /// Every quarter-hour of the range, in order.
    pub intervals: Vec<IntervalView>,
    pub events: Vec<EventView>,
    pub totals: ProfileTotals,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ProfileInterval)]
pub struct IntervalView {
    pub start: DateTime<Utc>,
    /// The start with the site's offset, e.g. 2026-10-25T02:30:00+01:00.
    pub start_local: String,
    /// In the register's unit (Wh, varh, VAh); `null` when missing.
    pub energy: Option<f64>,
    #[schema(value_type = QualitySchema)]
    pub quality: Quality,
    /// The contract band of the interval, for import and export registers of a site with a
    /// contract in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<String>,
    /// Its cost at the band's price (export: the credit), in the contract currency rounded to
    /// 1e-6; absent when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CounterEvent)]
pub struct EventView {
    pub ts: DateTime<Utc>,
    /// reset: a resettable register restarted; glitch: a reading contradicted by its
    /// neighbours, ignored; exchange: a confirmed drop of a non-resettable register (new meter).
    pub kind: String,
    /// Last effective reading before, register unit.
    pub previous: f64,
    /// The reading, register unit.
    pub value: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileTotals {
    /// Sum of the intervals, register unit.
    pub energy: f64,
    pub measured: u32,
    pub estimated: u32,
    pub missing: u32,
}

/// Statistics of the instantaneous measurements of one quarter-hour (W, var, VA, V, A).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// What a meter's profile needs besides its range: the zone of its local times and its
/// site's contracts.
pub struct MeterSetting {
    pub tz: Tz,
    contracts: SiteContracts,
}

/// The zone of a meter's local times (its site's, else its gateway's; a stored zone this
/// build does not know is a decoding error) and its site's contracts, in one round trip.
pub async fn meter_setting(
    conn: &mut PgConnection,
    device_id: i64,
    site: Option<i64>,
) -> Result<MeterSetting, QueryError> {
    type Row = (
        TimeZone,
        Option<Vec<i64>>,
        Option<Vec<NaiveDate>>,
        Option<Vec<sqlx::types::Json<serde_json::Value>>>,
    );
    let (tz, ids, days, bodies): Row = sqlx::query_as(
        "SELECT COALESCE(s.time_zone, g.time_zone), k.ids, k.days, k.bodies
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN sites s ON s.id = g.site_id
         LEFT JOIN LATERAL (
             SELECT array_agg(c.id ORDER BY c.valid_from, c.id) AS ids,
                    array_agg(c.valid_from ORDER BY c.valid_from, c.id) AS days,
                    array_agg(c.body ORDER BY c.valid_from, c.id) AS bodies
             FROM contracts c WHERE c.site_id = $2) k ON true
         WHERE d.id = $1",
    )
    .bind(device_id)
    .bind(site)
    .fetch_one(&mut *conn)
    .await?;
    let contracts = match site {
        Some(site) => {
            let rows = ids
                .unwrap_or_default()
                .into_iter()
                .zip(days.unwrap_or_default())
                .zip(bodies.unwrap_or_default())
                .map(|((id, day), body)| (id, site, day, body.0));
            let mut loaded = Loaded::from_rows(rows);
            loaded.warn_bad("energy query");
            loaded.take_site(site)
        }
        None => Vec::new(),
    };
    Ok(MeterSetting {
        tz: tz.tz(),
        contracts,
    })
}

/// A meter's profile on a connection of its own (the pages' entry point; the API takes the
/// setting and the profile on one connection, [`meter_setting`] and [`profile_on`]).
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
    let range = profile_range(from, to)?;
    let mut conn = pool.acquire().await?;
    let contracts = match site {
        Some(site) => load_site_contracts(&mut *conn, site).await?,
        None => Vec::new(),
    };
    let setting = MeterSetting { tz, contracts };
    profile_on(
        &mut conn,
        &setting,
        (device_id, device_serial),
        range,
        register,
    )
    .await
}

/// The profile of meter `(id, serial)` over `[from, to)`, in three statements on one
/// connection: its registers with their intervals and events (arrays per register), then its
/// power statistics. Each statement's text is fixed, so it is prepared once per connection.
pub async fn profile_on(
    conn: &mut PgConnection,
    setting: &MeterSetting,
    (device_id, device_serial): (i64, &str),
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    register: Option<&str>,
) -> Result<Profile, QueryError> {
    let (from, to) = profile_range(from, to)?;
    let tz = setting.tz;
    let contracts = &setting.contracts;
    type CounterRow = (
        i64,
        String,
        String,
        bool,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<DateTime<Utc>>>,
        Option<Vec<i64>>,
        Option<Vec<i16>>,
        Option<Vec<DateTime<Utc>>>,
        Option<Vec<String>>,
        Option<Vec<i64>>,
        Option<Vec<i64>>,
    );
    // The aggregates of one level read their rows in the same order, so each register's
    // arrays line up; events are ordered by (ts, kind), their key within a counter.
    let rows: Vec<CounterRow> = sqlx::query_as(
        "SELECT c.id, c.name, c.unit, c.resettable,
                d.import_register, d.export_register, d.reactive_register,
                i.starts, i.energies, i.qualities, e.ts, e.kinds, e.previous, e.vals
         FROM counters c JOIN devices d ON d.id = c.device_id
         LEFT JOIN LATERAL (
             SELECT array_agg(start) AS starts, array_agg(energy_milli) AS energies,
                    array_agg(quality) AS qualities
             FROM energy_intervals
             WHERE counter_id = c.id AND start >= $3 AND start < $4) i ON true
         LEFT JOIN LATERAL (
             SELECT array_agg(ts ORDER BY ts, kind) AS ts, array_agg(kind ORDER BY ts, kind) AS kinds,
                    array_agg(previous ORDER BY ts, kind) AS previous,
                    array_agg(value ORDER BY ts, kind) AS vals
             FROM counter_events
             WHERE counter_id = c.id AND ts >= $3 AND ts < $4) e ON true
         WHERE c.device_id = $1 AND ($2::text IS NULL OR c.name = $2) ORDER BY c.idx, c.name",
    )
    .bind(device_id)
    .bind(register)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    if let (Some(r), true) = (register, rows.is_empty()) {
        return Err(QueryError::Invalid(format!(
            "the meter has no register {r:?}"
        )));
    }
    let mut counters = Vec::with_capacity(rows.len());
    let mut by_counter: HashMap<i64, HashMap<i64, (i64, i16)>> = HashMap::new();
    let mut events: Vec<(i64, DateTime<Utc>, String, i64, i64)> = Vec::new();
    for (
        id,
        name,
        unit,
        resettable,
        imp,
        exp,
        reac,
        starts,
        energies,
        qualities,
        ts,
        kinds,
        previous,
        values,
    ) in rows
    {
        let stored = by_counter.entry(id).or_default();
        for ((start, energy), quality) in starts
            .unwrap_or_default()
            .into_iter()
            .zip(energies.unwrap_or_default())
            .zip(qualities.unwrap_or_default())
        {
            stored.insert(start.timestamp_millis(), (energy, quality));
        }
        for (((ts, kind), previous), value) in ts
            .unwrap_or_default()
            .into_iter()
            .zip(kinds.unwrap_or_default())
            .zip(previous.unwrap_or_default())
            .zip(values.unwrap_or_default())
        {
            events.push((id, ts, kind, previous, value));
        }
        counters.push((id, name, unit, resettable, imp, exp, reac));
    }
    // Raw measurements where they are kept; past `retention.measurements_days` their
    // 15-minute downsample (`measurements_15min`, without the tariff) stands in.
    let mut power: Vec<PowerInterval> = sqlx::query_as(
        "WITH raw AS (
             SELECT date_bin('15 minutes', ts, 'epoch') AS start, count(*) AS samples,
                avg(p)::float8 AS p_mean, min(p)::float8 AS p_min, max(p)::float8 AS p_max,
                avg(q)::float8 AS q_mean, avg(s)::float8 AS s_mean,
                avg(u1)::float8 AS u1_mean, avg(u2)::float8 AS u2_mean, avg(u3)::float8 AS u3_mean,
                avg(i1)::float8 AS i1_mean, avg(i2)::float8 AS i2_mean, avg(i3)::float8 AS i3_mean,
                (array_agg(tariff ORDER BY ts DESC) FILTER (WHERE tariff IS NOT NULL))[1] AS tariff
             FROM measurements WHERE device_id = $1 AND ts >= $2 AND ts < $3
             GROUP BY 1)
         SELECT * FROM raw
         UNION ALL
         SELECT d.start, d.samples::int8, d.p_mean::float8, d.p_min::float8, d.p_max::float8,
                d.q_mean::float8, d.s_mean::float8, d.u1_mean::float8, d.u2_mean::float8,
                d.u3_mean::float8, d.i1_mean::float8, d.i2_mean::float8, d.i3_mean::float8,
                NULL::int2
         FROM measurements_15min d
         WHERE d.device_id = $1 AND d.start >= $2 AND d.start < $3
           AND NOT EXISTS (SELECT 1 FROM raw WHERE raw.start = d.start)
         ORDER BY 1",
    )
    .bind(device_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for p in &mut power {
        p.start_local = calendar::local_offset_string(p.start, tz);
    }

    let tariffs: HashMap<i64, u8> = power
        .iter()
        .filter_map(|p| Some((p.start.timestamp_millis(), u8::try_from(p.tariff?).ok()?)))
        .collect();
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
                        .then(|| in_force(contracts, calendar::local_date(*q, tz)))
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
        time_zone: tz.into(),
        from,
        to,
        registers,
        power,
    })
}
