//! What a circuit's page shows over a period, as data: its energy by day or month beside the
//! period before, its totals and its meters. The page (`web::pages::circuit`) only renders it.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use headend_energy::calendar::{self, Period};
use sqlx::PgPool;

use super::charts::{self, Bar};
use super::period::{bar_label, local_text, View};
use super::{overview, DashboardError, MeterNode};
use crate::accounting::query::{self, Consumption, Group};
use crate::accounting::structure::CircuitView;

/// Everything the circuit page shows of its period.
pub struct CircuitData {
    /// The name of the circuit's panel.
    pub panel: String,
    pub energy_chart: String,
    pub total_kwh: f64,
    pub previous_kwh: f64,
    /// The dates of the period before: "2026-11-01 to 2026-11-30".
    pub previous_label: String,
    /// Whether the previous total is cut at the same point of its period as the current one.
    pub previous_to_date: bool,
    /// Arrow, change and its class, against the period before.
    pub change: Option<(&'static str, String, &'static str)>,
    pub total_cost: Option<f64>,
    pub currency: String,
    pub has_data: bool,
    pub has_contract: bool,
    /// When the site's last reading arrived, when the period has none (and meters are placed).
    pub last_reading: Option<String>,
    pub meters: Vec<MeterNode>,
}

/// The circuit's energy and cost in each period of `c`, by the period's start.
fn values(c: &Consumption, key: &str) -> Vec<(NaiveDate, Option<(f64, Option<f64>)>)> {
    c.periods
        .iter()
        .map(|period| {
            let g = period.groups.iter().find(|g| g.key == key);
            (
                period.start,
                g.map(|g| (g.import_wh / 1000.0, g.energy_cost)),
            )
        })
        .collect()
}

/// The data of `circuit` (of the site `site`, in zone `tz`) over `view`, a period of days or
/// months (a circuit has no power curve of its own).
pub async fn circuit_data(
    pool: &PgPool,
    circuit: &CircuitView,
    tz: Tz,
    view: View,
    now: DateTime<Utc>,
) -> Result<CircuitData, DashboardError> {
    let site = circuit.site_id;
    let today = calendar::local_date(now, tz);
    let (by, (first, end), (prev_first, prev_end)) = view.spans();
    let at = |d: NaiveDate| calendar::period_bounds(tz, d, Period::Day).0;
    let consumption = |from: NaiveDate, to: NaiveDate| {
        let group = Some(Group::Circuit);
        query::consumption(pool, site, tz, at(from), at(to), by, group, now)
    };
    let current = consumption(first, end).await?;
    let previous = consumption(prev_first, prev_end).await?;
    let key = format!("circuit:{}", circuit.id);
    let (cur, prev) = (values(&current, &key), values(&previous, &key));
    let bars: Vec<Bar> = cur
        .iter()
        .enumerate()
        .map(|(i, (start, v))| Bar {
            label: bar_label(by, *start),
            value: v.map(|v| v.0),
            previous: prev.get(i).and_then(|p| p.1).map(|p| p.0),
            incomplete: false,
            title: start.to_string(),
            interval: charts::period_text(*start, by),
            previous_interval: prev
                .get(i)
                .map(|p| charts::period_text(p.0, by))
                .unwrap_or_default(),
            quality: (*start > today).then_some(charts::Quality::Upcoming),
            ..Bar::default()
        })
        .collect();
    let begun = current
        .periods
        .iter()
        .filter(|p| p.start_utc <= now)
        .count();
    let previous_to_date = begun < cur.len();
    let total_kwh: f64 = cur.iter().filter_map(|d| d.1).map(|v| v.0).sum();
    let previous_kwh: f64 = prev
        .iter()
        .take(if previous_to_date { begun } else { prev.len() })
        .filter_map(|d| d.1)
        .map(|v| v.0)
        .sum();
    let with_data: Vec<_> = cur.iter().filter_map(|d| d.1).collect();
    let has_data = !with_data.is_empty();
    let total_cost = if has_data {
        with_data.iter().map(|v| v.1).sum::<Option<f64>>()
    } else {
        None
    };
    let panel = crate::accounting::structure::get_panel(pool, circuit.panel_id)
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    let meters = super::site_tree(pool, site)
        .await?
        .panels
        .into_iter()
        .flat_map(|p| p.circuits)
        .find(|c| c.id == circuit.id)
        .map(|c| c.meters)
        .unwrap_or_default();
    let last_reading = if has_data || meters.is_empty() {
        None
    } else {
        super::last_reading(pool, site)
            .await?
            .map(|t| local_text(t, tz))
    };
    Ok(CircuitData {
        panel,
        energy_chart: charts::bar_chart("energy-chart", "Energy", "kWh", &bars),
        total_kwh,
        previous_kwh,
        previous_label: format!("{} to {}", previous.from, previous.to),
        previous_to_date,
        change: overview::against(total_kwh, previous_kwh).filter(|_| has_data),
        total_cost,
        currency: current.currency.unwrap_or_default(),
        has_data,
        has_contract: super::has_contract(pool, site).await?,
        last_reading,
        meters,
    })
}
