//! What the web dashboard shows, as plain data: the pages (in `web::pages`) only render it.
//! Every number comes from the same queries as the API, so page, API and CSV agree.

pub mod charts;
pub mod counters;
pub mod power;
pub mod units;

use std::collections::HashSet;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::PgPool;

use crate::auth::Scope;
use crate::profiles::query::{self, Consumption, Group};
use crate::profiles::{structure, topology, worker};
use crate::{devices, sites};

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    Query(#[from] query::QueryError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Worker(#[from] worker::WorkerError),
}

/// One row of the sites overview.
#[derive(Debug)]
pub struct SiteSummary {
    pub id: i64,
    pub name: String,
    pub time_zone: String,
    pub power_kw: Option<f64>,
    pub today_kwh: f64,
    pub today_cost: Option<f64>,
    pub month_kwh: f64,
    pub month_cost: Option<f64>,
    pub currency: String,
    pub gateways_online: i64,
    pub gateways_offline: i64,
    /// Alarms active now (shelved ones included: they are silenced, not gone), and how many
    /// of them are critical.
    pub alarms_active: i64,
    pub alarms_critical: i64,
}

pub fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::UTC)
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

pub async fn sites_overview(
    pool: &PgPool,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<Vec<SiteSummary>, DashboardError> {
    let mut out = Vec::new();
    for site in sites::list(pool, scope).await? {
        let tz = zone(&site.time_zone);
        let today = calendar::local_date(now, tz);
        let (day_start, day_end) = calendar::period_bounds(tz, today, Period::Day);
        let (month_start, month_end) = calendar::period_bounds(tz, today, Period::Month);
        let day = query::consumption(
            pool,
            site.id,
            tz,
            day_start,
            day_end,
            Period::Day,
            None,
            now,
        )
        .await?;
        let month = query::consumption(
            pool,
            site.id,
            tz,
            month_start,
            month_end,
            Period::Month,
            None,
            now,
        )
        .await?;
        let (online, offline): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE online), count(*) FILTER (WHERE NOT online)
             FROM gateways WHERE site_id = $1",
        )
        .bind(site.id)
        .fetch_one(pool)
        .await?;
        let (alarms_active, alarms_critical): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE severity = 'critical')
             FROM alarms WHERE site_id = $1 AND active",
        )
        .bind(site.id)
        .fetch_one(pool)
        .await?;
        let d = day.periods.first();
        let m = month.periods.first();
        out.push(SiteSummary {
            id: site.id,
            name: site.name,
            time_zone: site.time_zone,
            power_kw: site_power_w(pool, site.id).await?.map(|w| w / 1000.0),
            today_kwh: d.map_or(0.0, |p| p.total.import_wh / 1000.0),
            today_cost: d.and_then(|p| p.total.cost),
            month_kwh: m.map_or(0.0, |p| p.total.import_wh / 1000.0),
            month_cost: m.and_then(|p| p.total.cost),
            currency: month.currency.or(day.currency).unwrap_or_default(),
            gateways_online: online,
            gateways_offline: offline,
            alarms_active,
            alarms_critical,
        });
    }
    Ok(out)
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

/// The periods a site page shows for `by`, around the local date `anchor`: the days of its
/// month, the months of its year, or the last five years.
pub async fn site_consumption(
    pool: &PgPool,
    site: i64,
    tz: Tz,
    by: Period,
    anchor: NaiveDate,
    group: Option<Group>,
    now: DateTime<Utc>,
) -> Result<Compared, DashboardError> {
    let (first, last, prev_first, prev_last) = match by {
        Period::Day => {
            let first = calendar::period_start(anchor, Period::Month);
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first);
            let prev = first
                .checked_sub_months(chrono::Months::new(1))
                .unwrap_or(first);
            (first, next, prev, first)
        }
        Period::Month => {
            let first = calendar::period_start(anchor, Period::Year);
            let next = NaiveDate::from_ymd_opt(first.year() + 1, 1, 1).unwrap_or(first);
            let prev = NaiveDate::from_ymd_opt(first.year() - 1, 1, 1).unwrap_or(first);
            (first, next, prev, first)
        }
        Period::Year => {
            let next = NaiveDate::from_ymd_opt(anchor.year() + 1, 1, 1).unwrap_or(anchor);
            let first = NaiveDate::from_ymd_opt(anchor.year() - 4, 1, 1).unwrap_or(anchor);
            let prev = NaiveDate::from_ymd_opt(anchor.year() - 9, 1, 1).unwrap_or(anchor);
            (first, next, prev, first)
        }
    };
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let current = query::consumption(pool, site, tz, at(first), at(last), by, group, now).await?;
    let previous =
        query::consumption(pool, site, tz, at(prev_first), at(prev_last), by, None, now).await?;
    Ok(Compared { current, previous })
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
                    AS registers
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         WHERE g.site_id = $1 AND d.kind = 'meter' AND d.serial <> ''
         ORDER BY d.serial, g.serial, d.port, d.slot",
    )
    .bind(site)
    .fetch_all(pool)
    .await?)
}

/// The meter `serial` on a gateway of `site`, resolved by the rule of
/// [`crate::devices::Resolved`] with the site as the scope: `device` picks one, and without it
/// a serial that two meters of the site report is ambiguous.
pub async fn site_meter(
    pool: &PgPool,
    site: i64,
    serial: &str,
    device: Option<i64>,
) -> Result<devices::Resolved, DashboardError> {
    Ok(devices::resolve_meter(pool, &Scope::Sites(vec![site]), serial, device).await?)
}
