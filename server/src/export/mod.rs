//! CSV export of energy data: 15-minute intervals, local days and months, raw counter
//! readings, measurements, and a completeness summary, for a site, a circuit or one meter.
//!
//! The file is streamed: rows are read with a row stream (`sqlx` `fetch`) inside one
//! read-only `REPEATABLE READ` transaction (a consistent snapshot, even while the profile
//! worker rewrites intervals), encoded into chunks of [`CHUNK`] bytes and handed over a bounded
//! channel, so memory stays bounded whatever the size of the file and a slow client slows the
//! query down instead of filling memory. Everything that can be refused (scope, parameters,
//! period) is checked before the first byte; a failure after it is logged and ends the stream
//! with an error, so the client sees a truncated download rather than a short file. A client
//! that reads nothing for two minutes is cut off the same way (its connection and snapshot
//! are not held for ever).
//!
//! Columns (one header row; [`Kind::Completeness`] has its own, see there):
//!
//! `start_local, end_local, start_utc, site, meter, meter_name, register, value, unit,
//! quality, band, cost, currency`
//!
//! - `start_local`/`end_local`: RFC 3339 in the site's zone with the offset of each instant
//!   (`2026-03-29T01:45:00+01:00` to `2026-03-29T03:00:00+02:00`); `start_utc` with `Z`.
//! - `value`: energy in the register's unit (Wh, varh, VAh) as an exact decimal of the stored
//!   milli-units, the counter value for readings, the float4 value for measurements.
//! - `quality`: intervals `measured`/`estimated`/`missing` (a missing quarter-hour is a row
//!   with an empty value); days and months `measured`/`estimated`/`partial`/`missing`;
//!   readings and measurements `ok` or their flags (`clock_fault`, `dst_ambiguous`,
//!   `dst_gap`, joined by `+`).
//! - `band`, `cost`, `currency`: for import and export registers of a site with a contract in
//!   force. Interval cost is exact (1e-12, computed with `headend_energy::tariff` as the
//!   profile does); days and months are the stored daily costs (1e-9). An export register's
//!   cost is its credit, positive, as in the API. A stored contract in force during the
//!   period that is not valid any more refuses an interval export before the first byte
//!   ([`ExportError::BadContracts`], naming it and why): no day is costed with the wrong one.
//!
//! Rows are ordered by meter (serial), register, then time. Text fields are quoted as RFC 4180
//! says; text starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` so that a
//! spreadsheet does not run it as a formula (names come from gateways and users). [`csv`] is
//! the one CSV writer of Headend: the alarm history is written with it too.

pub mod csv;
mod produce;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use futures::Stream;
use headend_energy::{calendar, engine};
use sqlx::PgPool;

pub use self::csv::{DecimalMark, Format, Separator};
use crate::accounting::contracts::{self, BadContract, SiteContracts};
use crate::accounting::roles::{self, Role};
use crate::auth::Scope;
use crate::ingest::normalize::MEASUREMENT_COLUMNS;
use crate::zone::TimeZone;
use crate::{fleet::devices, sites};

/// Rows are sent in chunks of about this size.
pub const CHUNK: usize = 64 * 1024;
/// Chunks encoded ahead of the client: with [`CHUNK`], the export's own buffering.
const CHANNEL_CHUNKS: usize = 4;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Kind {
    /// 15-minute interval energy per register, with band and cost.
    Intervals,
    /// Energy per local day per register (the stored daily rollups).
    Daily,
    /// Energy per local month per register (sums of the daily rollups; energy cost only,
    /// no demand or reactive charges, which belong to the site).
    Monthly,
    /// Raw counter readings.
    Readings,
    /// Instantaneous measurements, one row per instant and quantity.
    Measurements,
    /// One row per meter and register: expected, measured, estimated and missing
    /// quarter-hours of the period (up to now) and their shares, and the energy.
    Completeness,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intervals => "intervals",
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::Readings => "readings",
            Self::Measurements => "measurements",
            Self::Completeness => "completeness",
        }
    }

    /// The longest period in days for a site, and for a meter or circuit.
    pub fn max_days(self) -> (i64, i64) {
        match self {
            Self::Intervals | Self::Completeness => (366, 1_100),
            Self::Daily => (1_100, 1_100),
            Self::Monthly => (7_305, 7_305),
            Self::Readings => (31, 366),
            Self::Measurements => (7, 31),
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, ExportError> {
        Ok(match s {
            "intervals" => Self::Intervals,
            "daily" => Self::Daily,
            "monthly" => Self::Monthly,
            "readings" => Self::Readings,
            "measurements" => Self::Measurements,
            "completeness" => Self::Completeness,
            other => {
                return Err(ExportError::Invalid(format!(
                    "kind {other:?} is not one of intervals, daily, monthly, readings, \
                     measurements, completeness"
                )))
            }
        })
    }
}

/// Whose data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every meter of the site.
    Site(i64),
    /// One meter, by serial.
    Meter(String),
    /// The meters placed on the circuit.
    Circuit(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("export query failed: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored contract in force during the period is not valid: its costs cannot be
    /// written, and leaving them out (or costing the days with another contract) would be a
    /// silent lie. Refused before the first byte, naming each contract and why.
    #[error(
        "{}; an admin must correct or replace it (PUT /api/v1/contracts/{{id}}) before this \
         period can be exported",
        joined(.0)
    )]
    BadContracts(Vec<BadContract>),
    /// The file stopped before its end (after the first byte; the log says why).
    #[error("the export stopped before its end")]
    Truncated,
}

fn joined(bad: &[BadContract]) -> String {
    bad.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone)]
struct Meter {
    id: i64,
    serial: String,
    name: String,
    import: Option<String>,
    export: Option<String>,
    reactive: Option<String>,
}

#[derive(Debug, Clone)]
struct Counter {
    id: i64,
    /// Index into the selection's meters.
    meter: usize,
    name: String,
    unit: String,
    role: Role,
}

/// The meters a caller may export, resolved against their scope.
#[derive(Debug)]
pub struct Selection {
    tz: Tz,
    site: Option<(i64, String)>,
    /// For the file name: `site-3`, `meter-X0000124`, `circuit-7`.
    label: String,
    /// A whole site: the tighter period limits apply.
    whole_site: bool,
    meters: Vec<Meter>,
}

/// The display name of a meter as the consumption API gives it (the fallback, model and
/// serial, is added in Rust).
const METER_SQL: &str = "SELECT d.id, d.serial,
        COALESCE(d.name, NULLIF(d.description, ''), NULLIF(d.sg_description, '')), d.model,
        d.import_register, d.export_register, d.reactive_register
 FROM devices d JOIN gateways g ON g.id = d.gateway_id";

type MeterRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn meter_of((id, serial, name, model, import, export, reactive): MeterRow) -> Meter {
    let name = name.unwrap_or_else(|| {
        format!("{} {}", model.unwrap_or_default(), serial)
            .trim()
            .to_owned()
    });
    Meter {
        id,
        serial,
        name,
        import,
        export,
        reactive,
    }
}

impl Selection {
    /// Resolves `target` in `scope`: what the caller may not see is "not found", exactly as
    /// for the rest of the API.
    pub async fn resolve(
        pool: &PgPool,
        scope: &Scope,
        target: &Target,
    ) -> Result<Self, ExportError> {
        match target {
            Target::Site(id) => {
                let site = sites::get(pool, scope, *id)
                    .await?
                    .ok_or(ExportError::NotFound("site"))?;
                let rows: Vec<MeterRow> = sqlx::query_as(&format!(
                    "{METER_SQL} WHERE g.site_id = $1 AND d.kind = 'meter' ORDER BY d.serial, d.id"
                ))
                .bind(site.id)
                .fetch_all(pool)
                .await?;
                Ok(Self {
                    tz: site.time_zone.tz(),
                    label: format!("site-{}", site.id),
                    site: Some((site.id, site.name)),
                    whole_site: true,
                    meters: rows.into_iter().map(meter_of).collect(),
                })
            }
            Target::Meter(serial) => {
                let device = devices::meter_by_serial(pool, scope, serial)
                    .await?
                    .ok_or(ExportError::NotFound("meter"))?;
                let row: MeterRow = sqlx::query_as(&format!("{METER_SQL} WHERE d.id = $1"))
                    .bind(device.id)
                    .fetch_one(pool)
                    .await?;
                let (zone, site): (TimeZone, Option<(i64, String)>) = {
                    let (zone, id, name): (TimeZone, Option<i64>, Option<String>) = sqlx::query_as(
                        "SELECT COALESCE(s.time_zone, g.time_zone), s.id, s.name
                             FROM devices d JOIN gateways g ON g.id = d.gateway_id
                             LEFT JOIN sites s ON s.id = g.site_id WHERE d.id = $1",
                    )
                    .bind(device.id)
                    .fetch_one(pool)
                    .await?;
                    (zone, id.zip(name))
                };
                Ok(Self {
                    tz: zone.tz(),
                    label: format!("meter-{}", file_safe(&device.serial)),
                    site,
                    whole_site: false,
                    meters: vec![meter_of(row)],
                })
            }
            Target::Circuit(id) => {
                let circuit = crate::accounting::structure::get_circuit(pool, *id)
                    .await?
                    .ok_or(ExportError::NotFound("circuit"))?;
                let site = sites::get(pool, scope, circuit.site_id)
                    .await?
                    .ok_or(ExportError::NotFound("circuit"))?;
                let rows: Vec<MeterRow> = sqlx::query_as(&format!(
                    "{METER_SQL} WHERE d.circuit_id = $1 AND g.site_id = $2 AND d.kind = 'meter'
                     ORDER BY d.serial, d.id"
                ))
                .bind(circuit.id)
                .bind(site.id)
                .fetch_all(pool)
                .await?;
                Ok(Self {
                    tz: site.time_zone.tz(),
                    label: format!("circuit-{}", circuit.id),
                    site: Some((site.id, site.name)),
                    whole_site: false,
                    meters: rows.into_iter().map(meter_of).collect(),
                })
            }
        }
    }

    /// The zone local dates and times are read and written in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }
}

/// What to write, once the selection is known.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// A register (`counter1nr`), or for measurements a quantity (`p`, `u1`, `tariff`).
    pub register: Option<String>,
    pub format: Format,
}

/// A checked export, ready to stream.
pub struct Export {
    kind: Kind,
    format: Format,
    tz: Tz,
    site_name: String,
    meters: Vec<Meter>,
    counters: Vec<Counter>,
    /// Measurements: the quantities to write.
    quantities: Vec<&'static str>,
    contracts: SiteContracts,
    /// `[from, to)`: quarter-hours for intervals, readings and measurements (exact instants),
    /// local day bounds for days and months.
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// Local dates covered, for days and months.
    first_day: NaiveDate,
    last_day: NaiveDate,
    now: DateTime<Utc>,
    filename: String,
}

/// The quantities of a measurements export: the float columns, then the meter's tariff.
const TARIFF: &str = "tariff";

fn measurement_quantities() -> impl Iterator<Item = &'static str> {
    MEASUREMENT_COLUMNS[..MEASUREMENT_COLUMNS.len() - 1]
        .iter()
        .copied()
        .chain([TARIFF])
}

impl Export {
    /// Checks the period and the register, loads the registers and contracts involved.
    pub async fn prepare(
        pool: &PgPool,
        selection: Selection,
        spec: Spec,
        now: DateTime<Utc>,
    ) -> Result<Self, ExportError> {
        let Selection {
            tz,
            site,
            label,
            whole_site,
            meters,
        } = selection;
        let Spec {
            kind,
            from,
            to,
            register,
            format,
        } = spec;
        if to <= from {
            return Err(ExportError::Invalid("`to` must be after `from`".into()));
        }
        let first_day = calendar::local_date(from, tz);
        let last_day = calendar::local_date(to - Duration::milliseconds(1), tz).max(first_day);
        let days = (last_day - first_day).num_days() + 1;
        let (site_limit, meter_limit) = kind.max_days();
        let limit = if whole_site { site_limit } else { meter_limit };
        if days > limit {
            let what = if whole_site {
                "a site"
            } else {
                "a meter or circuit"
            };
            return Err(ExportError::Invalid(format!(
                "kind={} covers at most {limit} days for {what} (this request: {days} days); \
                 export the period in parts",
                kind.as_str()
            )));
        }
        let (from, to) = match kind {
            Kind::Intervals | Kind::Completeness => {
                let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or(from);
                (
                    at(engine::floor_quarter(from.timestamp_millis())),
                    at(engine::ceil_quarter(to.timestamp_millis())),
                )
            }
            Kind::Daily | Kind::Monthly => (
                calendar::day_start(tz, first_day),
                calendar::day_start(tz, next_day(last_day)?),
            ),
            Kind::Readings | Kind::Measurements => (from, to),
        };

        let mut quantities = Vec::new();
        let mut counters = Vec::new();
        if kind == Kind::Measurements {
            quantities = match register.as_deref() {
                None => measurement_quantities().collect(),
                Some(r) => vec![measurement_quantities().find(|q| *q == r).ok_or_else(|| {
                    ExportError::Invalid(format!(
                        "{r:?} is not a measured quantity (e.g. p, q, s, u1, i1, pf, frequency, {TARIFF})"
                    ))
                })?],
            };
        } else {
            let ids: Vec<i64> = meters.iter().map(|m| m.id).collect();
            let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(
                "SELECT id, device_id, name, unit FROM counters
                 WHERE device_id = ANY($1) AND ($2::text IS NULL OR name = $2)
                 ORDER BY idx, name",
            )
            .bind(&ids)
            .bind(register.as_deref())
            .fetch_all(pool)
            .await?;
            let index: HashMap<i64, usize> =
                meters.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
            counters = rows
                .into_iter()
                .filter_map(|(id, device, name, unit)| {
                    let meter = *index.get(&device)?;
                    let m = &meters[meter];
                    let role = roles::role_of(
                        &name,
                        m.import.as_deref(),
                        m.export.as_deref(),
                        m.reactive.as_deref(),
                    );
                    Some(Counter {
                        id,
                        meter,
                        name,
                        unit,
                        role,
                    })
                })
                .collect();
            // Meter order, then register order (stable sort keeps idx, name).
            counters.sort_by_key(|c| c.meter);
            if let (Some(r), true) = (&register, counters.is_empty() && !meters.is_empty()) {
                return Err(ExportError::Invalid(format!(
                    "no meter of this export has a register {r:?}"
                )));
            }
        }
        let contracts = match (kind, &site) {
            (Kind::Intervals, Some((id, _))) => {
                let mut loaded = contracts::load(pool, &[*id]).await?;
                loaded.warn_bad("export");
                let bad = loaded.bad_within(*id, first_day, last_day);
                if !bad.is_empty() {
                    return Err(ExportError::BadContracts(
                        bad.into_iter().cloned().collect(),
                    ));
                }
                loaded.take_site(*id)
            }
            _ => Vec::new(),
        };
        let filename = format!(
            "headend-{}-{label}-{}-{}.csv",
            kind.as_str(),
            first_day.format("%Y%m%d"),
            last_day.format("%Y%m%d")
        );
        Ok(Self {
            kind,
            format,
            tz,
            site_name: site.map(|(_, name)| name).unwrap_or_default(),
            meters,
            counters,
            quantities,
            contracts,
            from,
            to,
            first_day,
            last_day,
            now,
            filename,
        })
    }

    /// A file name for `Content-Disposition` (ASCII, no quotes).
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// Starts writing: the header row is sent at once, rows follow in chunks. Dropping the
    /// stream (the client went away) stops the query.
    pub fn stream(self, pool: PgPool) -> impl Stream<Item = Result<Bytes, ExportError>> + Send {
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
        let complete = Arc::new(AtomicBool::new(false));
        tokio::spawn(produce::run(self, pool, tx, complete.clone()));
        let mut ended = false;
        futures::stream::poll_fn(move |cx| {
            if ended {
                return Poll::Ready(None);
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
                Poll::Ready(None) => {
                    ended = true;
                    if complete.load(Ordering::Acquire) {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(ExportError::Truncated)))
                    }
                }
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

fn next_day(day: NaiveDate) -> Result<NaiveDate, ExportError> {
    day.succ_opt()
        .ok_or_else(|| ExportError::Invalid("date out of range".into()))
}

/// The first day of the month after `day`'s.
fn next_month(day: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if day.month() == 12 {
        (day.year() + 1, 1)
    } else {
        (day.year(), day.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
}

/// Letters, digits, `-` and `_` only: safe in a quoted `Content-Disposition` file name.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
