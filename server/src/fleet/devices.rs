//! Devices (meters and relays behind gateways) and their latest values, read side.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::auth::Scope;
use crate::ingest::clock;
use crate::ingest::normalize::MEASUREMENT_COLUMNS;
use crate::zone::TimeZone;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Device)]
pub struct DeviceView {
    pub id: i64,
    /// The gateway's serial.
    pub gateway: String,
    pub site_id: Option<i64>,
    /// meter or relay.
    pub kind: String,
    /// ir, rs485 or xml.
    pub port: String,
    pub slot: i16,
    pub serial: String,
    pub model: Option<String>,
    pub modbus_addr: Option<i32>,
    pub phases: Option<i16>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub sg_description: Option<String>,
    /// Name given in Headend (placement for energy accounting, see `accounting::structure`).
    pub name: Option<String>,
    /// What the meter measures: site, panel or circuit; null: unplaced (not counted in the
    /// site's consumption).
    pub measures: Option<String>,
    pub panel_id: Option<i64>,
    pub circuit_id: Option<i64>,
    /// Overrides the circuit's usage.
    pub usage: Option<String>,
    /// Counter of active import; null: counter1nr.
    pub import_register: Option<String>,
    /// Counter of active export; null: counter2nr.
    pub export_register: Option<String>,
    /// Counter of (inductive) reactive energy; null: counter3nr.
    pub reactive_register: Option<String>,
    /// When the meter was commissioned (set by an admin); counter readings dated before it are
    /// kept but not accounted. null: unknown.
    pub commissioned_at: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DEVICE_SQL: &str =
    "SELECT d.id, g.serial AS gateway, g.site_id, d.kind, d.port, d.slot, d.serial,
        d.model, d.modbus_addr, d.phases, d.description, d.location, d.sg_description,
        d.name, d.measures, d.panel_id, d.circuit_id, d.usage,
        d.import_register, d.export_register, d.reactive_register, d.commissioned_at,
        d.first_seen_at, d.updated_at
 FROM devices d JOIN gateways g ON g.id = d.gateway_id
 WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1))";

pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<DeviceView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{DEVICE_SQL} ORDER BY g.serial, d.port, d.slot, d.kind"
    ))
    .bind(scope.site_ids())
    .fetch_all(pool)
    .await
}

/// The time zone of a device's local times: its site's, else its gateway's (a stored zone
/// this build does not know is a decoding error, never UTC).
pub async fn time_zone(pool: &PgPool, device_id: i64) -> Result<TimeZone, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(s.time_zone, g.time_zone) FROM devices d
         JOIN gateways g ON g.id = d.gateway_id LEFT JOIN sites s ON s.id = g.site_id WHERE d.id = $1",
    )
    .bind(device_id)
    .fetch_one(pool)
    .await
}

/// How a meter is addressed: its serial, within the caller's scope.
///
/// A serial is not unique: gateways of two sites (or two slots of one gateway) can report
/// the same one. The rule, shared by every API route and page through [`resolve_meter`]:
///
/// - Only meters on gateways of the caller's sites exist for the caller: another site's
///   meter with the same serial is "not found" (404) and never counted as a candidate.
/// - `?device=<id>` (the `devices` table id) picks one meter; it must be a meter in the
///   caller's scope with that serial, else "not found". The serial [`ANY_SERIAL`] (`~`)
///   stands for the serial of that device, for serials that cannot be a URL path segment
///   (empty, `.`, `..`); without `device` it is a serial like any other.
/// - Without `device`: one match is that meter; several are [`Resolved::Ambiguous`] with
///   the candidates (409 in the API, a chooser in the pages). Headend never picks one
///   itself (not "the newest", not "the first").
#[derive(Debug)]
pub enum Resolved {
    Found(Box<DeviceView>),
    NotFound,
    Ambiguous(Vec<Candidate>),
}

/// With `device`, stands for the serial of that device (see [`Resolved`]).
pub const ANY_SERIAL: &str = "~";

/// One of the meters a serial could mean, enough for a person or a script to choose.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Candidate {
    /// The `devices` id: pass it as `?device=`.
    pub id: i64,
    pub serial: String,
    /// The gateway's serial.
    pub gateway: String,
    pub site_id: Option<i64>,
    /// The site's name.
    pub site: Option<String>,
    pub port: String,
    pub slot: i16,
    pub model: Option<String>,
}

/// At most this many candidates are listed (the API says how many there are).
pub const MAX_CANDIDATES: i64 = 50;

/// The meter that `serial` (and `device`, if given) addresses for `scope`; see [`Resolved`].
pub async fn resolve_meter(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
    device: Option<i64>,
) -> Result<Resolved, sqlx::Error> {
    let mut found: Vec<DeviceView> = sqlx::query_as(&format!(
        "{DEVICE_SQL} AND d.kind = 'meter'
             AND ($3::int8 IS NULL OR d.id = $3)
             AND (d.serial = $2 OR ($3::int8 IS NOT NULL AND $2 = $4))
         ORDER BY d.id LIMIT 2"
    ))
    .bind(scope.site_ids())
    .bind(serial)
    .bind(device)
    .bind(ANY_SERIAL)
    .fetch_all(pool)
    .await?;
    match found.len() {
        0 => Ok(Resolved::NotFound),
        1 => Ok(Resolved::Found(Box::new(found.remove(0)))),
        _ => Ok(Resolved::Ambiguous(candidates(pool, scope, serial).await?)),
    }
}

/// The meters in `scope` reporting `serial`, by site, gateway and slot.
pub async fn candidates(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.serial, g.serial AS gateway, g.site_id, s.name AS site, d.port, d.slot,
                d.model
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN sites s ON s.id = g.site_id
         WHERE ($1::int8[] IS NULL OR g.site_id = ANY($1)) AND d.kind = 'meter' AND d.serial = $2
         ORDER BY s.name NULLS LAST, g.serial, d.port, d.slot, d.id
         LIMIT $3",
    )
    .bind(scope.site_ids())
    .bind(serial)
    .bind(MAX_CANDIDATES)
    .fetch_all(pool)
    .await
}

/// The meter with this serial in `scope` when exactly one has it (see [`Resolved`]): `None`
/// when there is none *or several*. Callers that can say "ambiguous" use [`resolve_meter`].
pub async fn meter_by_serial(
    pool: &PgPool,
    scope: &Scope,
    serial: &str,
) -> Result<Option<DeviceView>, sqlx::Error> {
    Ok(match resolve_meter(pool, scope, serial, None).await? {
        Resolved::Found(d) => Some(*d),
        Resolved::NotFound | Resolved::Ambiguous(_) => None,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Latest {
    pub device: DeviceView,
    /// When the meter measured (UTC).
    pub ts: Option<DateTime<Utc>>,
    /// When Headend received it.
    pub received_at: Option<DateTime<Utc>>,
    /// The gateway clock was unusable; `ts` is the receive time.
    pub clock_fault: bool,
    pub dst_ambiguous: bool,
    pub dst_gap: bool,
    /// The meter's own tariff (T1..T6).
    pub tariff: Option<i16>,
    /// Column name to value in SI units: frequency, u1..u3, u12, u23, u31, i1..i3, i_n, p,
    /// p1..p3, q.., s.., pf.. (inductive +, capacitive -), pa.., temperature, thd_i1..3,
    /// thd_u1..3; absent values are omitted, never zero.
    #[schema(value_type = BTreeMap<String, f64>)]
    pub values: serde_json::Map<String, serde_json::Value>,
    /// The unit of each value.
    #[schema(value_type = BTreeMap<String, String>)]
    pub units: serde_json::Map<String, serde_json::Value>,
}

pub fn unit_of(column: &str) -> &'static str {
    match column.trim_end_matches(char::is_numeric) {
        "frequency" => "Hz",
        "u" => "V",
        "i" | "i_n" => "A",
        "p" => "W",
        "q" => "var",
        "s" => "VA",
        "pf" => "",
        "pa" => "deg",
        "temperature" => "C",
        "thd_i" | "thd_u" => "%",
        _ => "",
    }
}

/// The newest measurements of a meter resolved with [`resolve_meter`].
pub async fn latest(pool: &PgPool, device: DeviceView) -> Result<Latest, sqlx::Error> {
    let columns = &MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1];
    // to_jsonb keeps float4 values as PostgreSQL prints them (shortest round-trip text),
    // so 220.5 stays 220.5 rather than 220.5000152587890625.
    type Row = (
        DateTime<Utc>,
        DateTime<Utc>,
        i16,
        Option<i16>,
        serde_json::Value,
    );
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT ts, received_at, flags, tariff, jsonb_build_object({})
             FROM measurements WHERE device_id = $1 ORDER BY ts DESC LIMIT 1",
        columns
            .iter()
            .map(|c| format!("'{c}', {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(device.id)
    .fetch_optional(pool)
    .await?;
    let mut latest = Latest {
        device,
        ts: None,
        received_at: None,
        clock_fault: false,
        dst_ambiguous: false,
        dst_gap: false,
        tariff: None,
        values: serde_json::Map::new(),
        units: serde_json::Map::new(),
    };
    if let Some((ts, received_at, flags, tariff, values)) = row {
        latest.ts = Some(ts);
        latest.received_at = Some(received_at);
        latest.clock_fault = flags & clock::CLOCK_FAULT != 0;
        latest.dst_ambiguous = flags & clock::DST_AMBIGUOUS != 0;
        latest.dst_gap = flags & clock::DST_GAP != 0;
        latest.tariff = tariff;
        if let serde_json::Value::Object(map) = values {
            for (k, v) in map {
                if !v.is_null() {
                    latest
                        .units
                        .insert(k.clone(), serde_json::Value::from(unit_of(&k)));
                    latest.values.insert(k, v);
                }
            }
        }
    }
    Ok(latest)
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Counter)]
pub struct CounterLatest {
    pub name: String,
    pub index: i16,
    pub resettable: bool,
    /// Wh, varh or VAh.
    pub unit: String,
    pub phase: Option<String>,
    pub tariffs: Vec<i16>,
    pub ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Exact value in milli-units (mWh, mvarh, mVAh).
    pub value_milli: i64,
    /// The same in base units, as a decimal string so that no float rounding creeps in.
    pub value: String,
    pub clock_fault: bool,
}

/// The newest reading of each counter of a meter resolved with [`resolve_meter`].
pub async fn counters(pool: &PgPool, device_id: i64) -> Result<Vec<CounterLatest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.name, c.idx AS index, c.resettable, c.unit, c.phase, c.tariffs,
                r.ts, r.received_at, r.value_milli,
                trim_scale(r.value_milli::numeric / 1000)::text AS value,
                (r.flags & 1) <> 0 AS clock_fault
         FROM counters c
         CROSS JOIN LATERAL (SELECT ts, received_at, value_milli, flags FROM counter_readings
                             WHERE counter_id = c.id ORDER BY ts DESC LIMIT 1) r
         WHERE c.device_id = $1
         ORDER BY c.resettable, c.idx",
    )
    .bind(device_id)
    .fetch_all(pool)
    .await
}

/// One hour of a register's 15-minute energy (UTC-aligned hours), for long power graphs.
#[derive(Debug, sqlx::FromRow)]
pub struct HourEnergy {
    pub start: DateTime<Utc>,
    /// Sum of the hour's intervals, mWh (or the register's milli-unit).
    pub energy_milli: i64,
    /// How many of its quarter-hours have an interval (measured or estimated).
    pub quarters: i64,
    pub estimated: bool,
}

/// The hourly sums of register `register` of device `device_id` over `[from, to)`; hours
/// without any interval have no row.
pub async fn hourly_energy(
    pool: &PgPool,
    device_id: i64,
    register: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<HourEnergy>, sqlx::Error> {
    sqlx::query_as(
        "SELECT date_bin('1 hour', e.start, 'epoch') AS start,
                sum(e.energy_milli)::int8 AS energy_milli, count(*) AS quarters,
                bool_or(e.quality = 1) AS estimated
         FROM energy_intervals e JOIN counters c ON c.id = e.counter_id
         WHERE c.device_id = $1 AND c.name = $2 AND e.start >= $3 AND e.start < $4
         GROUP BY 1 ORDER BY 1",
    )
    .bind(device_id)
    .bind(register)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// One local day of a register (its `energy_days` rollup).
#[derive(Debug, sqlx::FromRow)]
pub struct DayEnergy {
    pub day: chrono::NaiveDate,
    pub energy_milli: i64,
    pub measured: i32,
    pub estimated: i32,
    /// Quarter-hours in the day (92, 96 or 100).
    pub quarters: i32,
}

/// The daily rollups of register `register` of device `device_id`, local days `[from, to)`.
pub async fn daily_energy(
    pool: &PgPool,
    device_id: i64,
    register: &str,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Vec<DayEnergy>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.day, e.energy_milli, e.measured, e.estimated, e.quarters
         FROM energy_days e JOIN counters c ON c.id = e.counter_id
         WHERE c.device_id = $1 AND c.name = $2 AND e.day >= $3 AND e.day < $4
         ORDER BY e.day",
    )
    .bind(device_id)
    .bind(register)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// What helps a person tell candidates apart: the meter's name and when it last reported.
#[derive(Debug, sqlx::FromRow)]
pub struct CandidateDetail {
    pub id: i64,
    /// The placement name, else the SG description.
    pub name: Option<String>,
    /// The newest measurement or counter reading (measured time).
    pub last_reading: Option<DateTime<Utc>>,
}

/// [`CandidateDetail`] of the devices `ids` (callers pass ids already resolved in scope).
pub async fn candidate_details(
    pool: &PgPool,
    ids: &[i64],
) -> Result<Vec<CandidateDetail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, COALESCE(d.name, NULLIF(d.description, ''), NULLIF(d.sg_description, '')) AS name,
                GREATEST(
                    (SELECT max(m.ts) FROM measurements m WHERE m.device_id = d.id),
                    (SELECT max(r.ts) FROM counters c JOIN counter_readings r ON r.counter_id = c.id
                     WHERE c.device_id = d.id)
                ) AS last_reading
         FROM devices d WHERE d.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// The gateway a device is behind, as the meter page shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct DeviceGateway {
    /// The zone of the device's local times: its site's, else its gateway's.
    pub time_zone: TimeZone,
    pub serial: String,
    /// `sg` (pushes over MQTT) or `converter` (polled over Modbus TCP).
    pub kind: String,
    pub online: bool,
}

/// The gateway of device `id` (which exists).
pub async fn gateway_of(pool: &PgPool, id: i64) -> Result<DeviceGateway, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(s.time_zone, g.time_zone) AS time_zone, g.serial, g.kind, g.online
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN sites s ON s.id = g.site_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_column_names() {
        assert_eq!(unit_of("u1"), "V");
        assert_eq!(unit_of("i_n"), "A");
        assert_eq!(unit_of("p"), "W");
        assert_eq!(unit_of("thd_u3"), "%");
        assert_eq!(unit_of("pf2"), "");
        assert_eq!(unit_of("frequency"), "Hz");
    }
}
