//! What a consumption query answers: periods with their totals, peaks, completeness and
//! groups.

use chrono::{DateTime, NaiveDate, Utc};
use headend_energy::calendar::Period;
use serde::Serialize;

use super::{PeriodSchema, QueryError};
use crate::zone::TimeZone;

/// How a consumption answer splits each period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Consumption {
    pub site_id: i64,
    pub time_zone: TimeZone,
    #[schema(value_type = PeriodSchema)]
    pub by: Period,
    #[schema(value_type = Option<Group>)]
    pub group: Option<&'static str>,
    /// First local date covered.
    pub from: NaiveDate,
    /// Last local date covered (inclusive).
    pub to: NaiveDate,
    /// Currency of the costs; null without a contract.
    pub currency: Option<String>,
    pub periods: Vec<PeriodView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsumptionPeriod)]
pub struct PeriodView {
    /// Local start date of the whole period (first of the month or year).
    pub start: NaiveDate,
    /// Start of the covered span (clipped to the range).
    pub start_utc: DateTime<Utc>,
    /// End of the covered span, exclusive.
    pub end_utc: DateTime<Utc>,
    pub total: TotalView,
    /// Empty without `group`. The circuit, panel and usage rows add up to the total (a metered
    /// panel or site contributes its remainder after its submeters); group=meter lists every
    /// meter with an import register, submeters included.
    pub groups: Vec<GroupView>,
}

/// Costs are in the contract currency, rounded to 1e-6 from the exact amounts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsumptionTotal)]
pub struct TotalView {
    pub import_wh: f64,
    pub export_wh: f64,
    pub reactive_varh: f64,
    /// Import at the contract's band prices, net of the export credit; null without a contract
    /// or when part of the energy could not be priced.
    pub energy_cost: Option<f64>,
    /// Demand charge on each month's peak (by=month and by=year only, with a contract that has
    /// one).
    pub demand_charge: Option<f64>,
    /// Reactive energy above the contract's tan(phi) limit (by=month and by=year only).
    pub reactive_charge: Option<f64>,
    /// energy_cost + demand_charge + reactive_charge, computed from the exact amounts.
    pub cost: Option<f64>,
    pub peak: Option<PeakView>,
    pub completeness: Completeness,
}

/// The site's highest quarter-hour of the period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Peak)]
pub struct PeakView {
    /// Mean power of the highest quarter-hour, W.
    pub power_w: f64,
    pub start: DateTime<Utc>,
    pub start_local: String,
}

/// Quarter-hours of the import registers: expected (the part of the period already past, per
/// counted meter), measured, estimated, missing; percentages of expected with two decimals.
#[derive(Debug, Serialize, Default, Clone, Copy, utoipa::ToSchema)]
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
    pub(super) fn new(expected: u64, measured: u64, estimated: u64) -> Self {
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsumptionGroup)]
pub struct GroupView {
    /// meter: the serial (`device:{id}` when the serial does not name one meter of the site);
    /// usage: the usage; circuit and panel: `circuit:{id}`, `panel:{id}`, `panel:{id}:rest` (a
    /// panel meter minus its submeters), `site:rest`, `meter:{serial}` (unplaced;
    /// `meter:device:{id}` likewise).
    pub key: String,
    pub name: String,
    pub import_wh: f64,
    pub export_wh: f64,
    /// Import cost net of export credit.
    pub energy_cost: Option<f64>,
    /// Highest quarter-hour mean power of this group's own meter, W (group=meter only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_w: Option<f64>,
    /// group=meter only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completeness: Option<Completeness>,
}
