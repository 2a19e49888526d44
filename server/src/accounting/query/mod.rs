//! Read side: a meter's 15-minute profile (`meter_profile`), and a site's consumption by
//! day, month or year (`site_consumption`, answering with the `views` types, over the
//! site's `meters`).

mod meter_profile;
mod meters;
mod site_consumption;
mod views;

use sqlx::PgExecutor;

use super::contracts::{self, SiteContracts};

pub use meter_profile::{
    meter_setting, profile, profile_on, profile_range, EventView, IntervalView, MeterSetting,
    PowerInterval, Profile, ProfileTotals, RegisterProfile,
};
pub use site_consumption::{consumption, consumption_dates};
pub use views::{Completeness, Consumption, Group, GroupView, PeakView, PeriodView, TotalView};

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
// Schemas of the pure crate's types (it knows nothing of OpenAPI): what the document shows.

/// Quality of an interval's energy. measured: both boundaries read; estimated: interpolated
/// across a gap or overlapping a meter exchange; missing: no value.
#[derive(utoipa::ToSchema)]
#[schema(as = Quality, rename_all = "snake_case")]
pub enum QualitySchema {
    Measured,
    Estimated,
    Missing,
}

/// A local calendar period of the site's time zone.
#[derive(utoipa::ToSchema)]
#[schema(as = Period, rename_all = "snake_case")]
pub enum PeriodSchema {
    Day,
    Month,
    Year,
}

/// The site's valid contracts; a stored one that is not valid is logged (see
/// [`super::contracts::load`]).
async fn load_site_contracts<'e>(
    db: impl PgExecutor<'e>,
    site: i64,
) -> Result<SiteContracts, sqlx::Error> {
    let mut loaded = contracts::load(db, &[site]).await?;
    loaded.warn_bad("energy query");
    Ok(loaded.take_site(site))
}
