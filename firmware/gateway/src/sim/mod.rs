//! Simulated meters and relays.
//!
//! A [`SimMeter`] draws a load that follows the time of day and the weekday of a
//! [`Profile`], with noise, and is physically consistent: `S² = P² + Q²`, `PF = P/S` with
//! `Ind`/`Cap` by the sign of `Q`, `I = S/U`. Its energy counters are the *exact* integral
//! of its simulated power: power is constant over each wall-clock second and integrated in
//! integer mW·ms, so `counter(t2) − counter(t1)` is the simulated energy between the two
//! instants to the mWh, whatever the steps the simulation was advanced in. Everything is a
//! pure function of the seed and the wall times, so runs are reproducible.
//!
//! [`SimSource`] puts meters and relays behind a [`Gateway`](crate::Gateway); a relay in
//! front of a meter really cuts its load.

mod meter;
mod source;

pub use meter::{tariff_at, CounterLayout, Energy, Profile, SimMeter};
pub use source::{SimRelay, SimSource};
