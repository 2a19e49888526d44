//! Energy accounting: 15-minute interval energy from counter readings, local-calendar
//! rollups, site structure (panels, circuits), supply contracts and cost.
//!
//! The arithmetic lives in the pure `headend-energy` crate; this module stores its results,
//! keeps them current as data arrives ([`worker`]) and answers queries ([`query`]).

pub mod contracts;
pub mod quarantine;
pub mod query;
pub mod roles;
pub mod structure;
pub mod topology;
pub mod worker;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use headend_energy::tariff::Contract;

use roles::Role;

/// One local day of one register, accumulated interval by interval.
#[derive(Debug, Clone)]
pub(crate) struct DayTotals {
    pub energy: i64,
    pub measured: i32,
    pub estimated: i32,
    pub peak: i64,
    pub peak_start: Option<DateTime<Utc>>,
    pub bands: Vec<i64>,
    /// Exact energy cost in 1e-12 of the currency.
    pub cost_pico: i128,
    pub priced: bool,
}

impl DayTotals {
    pub fn new(bands: usize) -> Self {
        Self {
            energy: 0,
            measured: 0,
            estimated: 0,
            peak: 0,
            peak_start: None,
            bands: vec![0; bands],
            cost_pico: 0,
            priced: true,
        }
    }

    pub fn add(
        &mut self,
        start: DateTime<Utc>,
        energy: i64,
        quality: i16,
        pricing: Option<(&Contract, Tz, Option<u8>, Role)>,
    ) {
        self.energy += energy;
        if quality == 0 {
            self.measured += 1;
        } else {
            self.estimated += 1;
        }
        if self.peak_start.is_none() || energy > self.peak {
            self.peak = energy;
            self.peak_start = Some(start);
        }
        if let Some((contract, tz, tariff, role)) = pricing {
            let band = contract.band_at(start, tz, tariff);
            if let Some(slot) = self.bands.get_mut(band) {
                *slot += energy;
            }
            match role {
                Role::Import => self.cost_pico += contract.energy_cost(band, energy).0,
                // A band without an export price credits nothing.
                Role::Export => self.cost_pico += contract.export_credit(band, energy).0,
                Role::Reactive | Role::Other => self.priced = false,
            }
        } else {
            self.priced = false;
        }
    }

    /// The day's cost in 1e-9 of the currency, rounded half away from zero once, from the
    /// exact sum; `None` for registers that are not priced or days without a contract.
    pub fn cost_nano(&self, role: Role, contract: Option<&Contract>) -> Option<i64> {
        if !self.priced || contract.is_none() || !matches!(role, Role::Import | Role::Export) {
            return None;
        }
        let p = self.cost_pico;
        let rounded = if p >= 0 {
            (p + 500) / 1000
        } else {
            (p - 500) / 1000
        };
        i64::try_from(rounded).ok()
    }
}
