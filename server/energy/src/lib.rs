//! Energy accounting without I/O: everything here is a pure function of its inputs, so the
//! invariants that bills depend on are checked by property tests rather than by the database.
//!
//! - [`engine`]: interval energy per quarter-hour from cumulative counter readings (resets,
//!   glitches, meter exchanges, gaps, late data).
//! - [`calendar`]: a site's local days, months and years over UTC quarter-hours (DST, odd offsets).
//! - [`tariff`]: supply contracts, time-of-use bands and exact cost.
#![forbid(unsafe_code)]

pub mod calendar;
pub mod engine;
pub mod tariff;
