//! What the web dashboard shows, as plain data: the pages (in `web::pages`) only render it.
//! Every number comes from the same queries as the API, so page, API and CSV agree.

pub mod charts;
pub mod circuit;
pub mod counters;
pub mod objects;
pub mod overview;
pub mod period;
pub mod power;
pub mod site;
pub mod spark;
pub mod units;

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::PgPool;

use crate::accounting::query::{self, Consumption, Group};
use crate::accounting::{structure, topology, worker};
use crate::auth::Scope;
use crate::fleet::devices;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A request the pages refuse (400): an unknown range, say.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Query(#[from] query::QueryError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Worker(#[from] worker::WorkerError),
}

/// The current power of a site: its top-level meters' latest total P within 15 minutes.
pub async fn site_power_w(pool: &PgPool, site: i64) -> Result<Option<f64>, DashboardError> {
    let mut conn = pool.acquire().await?;
    let placements = worker::site_placements(&mut conn, site).await?;
    let top: Vec<i64> = topology::top_level(&placements).into_iter().collect();
    if top.is_empty() {
        return Ok(None);
    }
    let rows: Vec<(i64, Option<f32>)> = sqlx::query_as(
        "SELECT DISTINCT ON (device_id) device_id, p FROM measurements
         WHERE device_id = ANY($1) AND ts > now() - interval '15 minutes'
         ORDER BY device_id, ts DESC",
    )
    .bind(&top)
    .fetch_all(&mut *conn)
    .await?;
    let values: Vec<f64> = rows.iter().filter_map(|(_, p)| p.map(f64::from)).collect();
    Ok((!values.is_empty()).then(|| values.iter().sum()))
}

/// The meters of a site as a tree: panels with their meters and circuits, site meters, and
/// meters not placed yet.
#[derive(Debug, Default)]
pub struct SiteTree {
    pub site_meters: Vec<MeterNode>,
    pub panels: Vec<PanelNode>,
    pub unplaced: Vec<MeterNode>,
}

#[derive(Debug)]
pub struct PanelNode {
    pub id: i64,
    pub name: String,
    pub meters: Vec<MeterNode>,
    pub circuits: Vec<CircuitNode>,
}

#[derive(Debug)]
pub struct CircuitNode {
    pub id: i64,
    pub name: String,
    pub usage: String,
    pub meters: Vec<MeterNode>,
}

#[derive(Debug, Clone)]
pub struct MeterNode {
    /// The `devices` id: links carry it, since serials are not unique.
    pub id: i64,
    pub serial: String,
    pub name: String,
    pub counted: bool,
}

pub async fn site_tree(pool: &PgPool, site: i64) -> Result<SiteTree, DashboardError> {
    let panels = structure::list_panels(pool, site).await?;
    let circuits = structure::list_site_circuits(pool, site).await?;
    let mut conn = pool.acquire().await?;
    let placements = worker::site_placements(&mut conn, site).await?;
    drop(conn);
    let top: HashSet<i64> = topology::top_level(&placements);
    let meters: Vec<(
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT d.id, d.serial, COALESCE(d.name, NULLIF(d.description, ''), d.model), d.measures,
                d.panel_id, d.circuit_id
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         WHERE g.site_id = $1 AND d.kind = 'meter' ORDER BY d.serial, d.id",
    )
    .bind(site)
    .fetch_all(pool)
    .await?;
    let node = |id: i64, serial: &str, name: &Option<String>| MeterNode {
        id,
        serial: serial.to_owned(),
        name: name.clone().unwrap_or_else(|| serial.to_owned()),
        counted: top.contains(&id),
    };
    let mut tree = SiteTree::default();
    for p in panels {
        tree.panels.push(PanelNode {
            id: p.id,
            name: p.name,
            meters: meters
                .iter()
                .filter(|m| m.3.as_deref() == Some("panel") && m.4 == Some(p.id))
                .map(|m| node(m.0, &m.1, &m.2))
                .collect(),
            circuits: circuits
                .iter()
                .filter(|c| c.panel_id == p.id)
                .map(|c| CircuitNode {
                    id: c.id,
                    name: c.name.clone(),
                    usage: c.usage.clone(),
                    meters: meters
                        .iter()
                        .filter(|m| m.5 == Some(c.id))
                        .map(|m| node(m.0, &m.1, &m.2))
                        .collect(),
                })
                .collect(),
        });
    }
    for m in &meters {
        match m.3.as_deref() {
            Some("site") => tree.site_meters.push(node(m.0, &m.1, &m.2)),
            None => tree.unplaced.push(node(m.0, &m.1, &m.2)),
            _ => {}
        }
    }
    Ok(tree)
}

/// Consumption of a period and of the one before it, for "previous beside current" charts.
pub struct Compared {
    pub current: Consumption,
    pub previous: Consumption,
}

/// The consumption of the local dates `[first, end)` in `by` buckets beside that of
/// `[prev_first, prev_end)` (the period before, or the same period a year earlier).
#[allow(clippy::too_many_arguments)]
pub async fn site_range(
    pool: &PgPool,
    site: i64,
    tz: Tz,
    by: Period,
    (first, end): (NaiveDate, NaiveDate),
    (prev_first, prev_end): (NaiveDate, NaiveDate),
    group: Option<Group>,
    now: DateTime<Utc>,
) -> Result<Compared, DashboardError> {
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let current = query::consumption(pool, site, tz, at(first), at(end), by, group, now).await?;
    let previous =
        query::consumption(pool, site, tz, at(prev_first), at(prev_end), by, None, now).await?;
    Ok(Compared { current, previous })
}

/// When the newest counter reading of a site's meters was taken, if any (for "no readings in
/// this period" messages). One index probe per counter.
pub async fn last_reading(
    pool: &PgPool,
    site: i64,
) -> Result<Option<DateTime<Utc>>, DashboardError> {
    Ok(sqlx::query_scalar(
        "SELECT max(r.ts) FROM counters c
         JOIN devices d ON d.id = c.device_id JOIN gateways g ON g.id = d.gateway_id
         CROSS JOIN LATERAL (SELECT max(ts) AS ts FROM counter_readings
                             WHERE counter_id = c.id) r
         WHERE g.site_id = $1",
    )
    .bind(site)
    .fetch_one(pool)
    .await?)
}

/// Whether a site has a supply contract (costs need one).
pub async fn has_contract(pool: &PgPool, site: i64) -> Result<bool, DashboardError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contracts WHERE site_id = $1)")
            .bind(site)
            .fetch_one(pool)
            .await?,
    )
}

/// A meter of a site as the placement form shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct MeterPlacement {
    /// The `devices` id: the form carries it, since serials are not unique.
    pub id: i64,
    pub serial: String,
    pub gateway: String,
    pub model: Option<String>,
    pub name: Option<String>,
    pub measures: Option<String>,
    pub panel_id: Option<i64>,
    pub circuit_id: Option<i64>,
    pub usage: Option<String>,
    pub import_register: Option<String>,
    pub export_register: Option<String>,
    pub reactive_register: Option<String>,
    /// The counters the meter has reported, for the register fields.
    pub registers: Vec<String>,
    /// Where it is read: `ir`, `rs485`, `modbus`, `xml`, and the slot (or unit) there.
    pub port: String,
    pub slot: i16,
    /// Set by an admin; readings before it are not accounted.
    pub commissioned_at: Option<DateTime<Utc>>,
}

/// Every meter on the gateways of `site`, with its placement.
pub async fn meter_placements(
    pool: &PgPool,
    site: i64,
) -> Result<Vec<MeterPlacement>, DashboardError> {
    Ok(sqlx::query_as(
        "SELECT d.id, d.serial, g.serial AS gateway, d.model, d.name, d.measures, d.panel_id,
                d.circuit_id, d.usage, d.import_register, d.export_register, d.reactive_register,
                ARRAY(SELECT c.name FROM counters c WHERE c.device_id = d.id ORDER BY c.name)
                    AS registers, d.port, d.slot, d.commissioned_at
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         WHERE g.site_id = $1 AND d.kind = 'meter' AND d.serial <> ''
         ORDER BY d.serial, g.serial, d.port, d.slot",
    )
    .bind(site)
    .fetch_all(pool)
    .await?)
}

/// The meter `serial` on a gateway of `site`, resolved by the rule of
/// [`crate::fleet::devices::Resolved`] with the site as the scope: `device` picks one, and without it
/// a serial that two meters of the site report is ambiguous.
pub async fn site_meter(
    pool: &PgPool,
    site: i64,
    serial: &str,
    device: Option<i64>,
) -> Result<devices::Resolved, DashboardError> {
    Ok(devices::resolve_meter(pool, &Scope::Sites(vec![site]), serial, device).await?)
}
