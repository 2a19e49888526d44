//! What the gateway reads from its devices, provided by the driver: Modbus and IR on real
//! hardware, [`SimSource`](crate::sim::SimSource) in tests and demonstrations.

use alloc::vec::Vec;
use core::fmt;

use chrono::NaiveDateTime;

use crate::config::Slot;
use crate::fault::Fault;

/// An energy register as read from a meter; the same type Headend gets back from
/// [`sg_wire::message::normalize_counters`], so a round trip can be compared with `==`.
pub type CounterValue = sg_wire::message::Counter;

/// One phase's instantaneous values in SI units. A NaN is published as `"N/A"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseValues {
    /// Phase-to-neutral voltage, V.
    pub u_v: f64,
    /// Current, A.
    pub i_a: f64,
    /// Active power, W.
    pub p_w: f64,
    /// Reactive power, var (positive inductive).
    pub q_var: f64,
    /// Apparent power, VA.
    pub s_va: f64,
    /// Power factor, signed as in [`sg_wire::value::PowerFactor::signed`]: inductive
    /// positive, capacitive negative.
    pub pf: f64,
    /// Power angle, degrees.
    pub angle_deg: f64,
    /// Voltage THD, %.
    pub thd_u_pct: f64,
    /// Current THD, %.
    pub thd_i_pct: f64,
}

/// Totals over all phases (for a single-phase meter, phase 1 again).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TotalValues {
    pub p_w: f64,
    pub q_var: f64,
    pub s_va: f64,
    pub pf: f64,
    pub angle_deg: f64,
}

/// A meter's instantaneous values.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementValues {
    pub frequency_hz: f64,
    /// Phase 1 first; one entry for a single-phase meter, three for a 3-phase one.
    pub phases: Vec<PhaseValues>,
    pub total: TotalValues,
    /// The meter's internal temperature, °C.
    pub temperature_c: f64,
    /// The active tariff, if the meter reports one.
    pub tariff: Option<u8>,
}

/// Why a device could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadError {
    /// No answer (Modbus timeout, IR head not seeing the meter).
    NotResponding,
    /// The source has no such device.
    NoDevice,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotResponding => "not responding",
            Self::NoDevice => "no such device",
        })
    }
}

impl core::error::Error for ReadError {}

/// The devices behind the gateway. Calls are synchronous: the gateway reads only at push
/// time and on command, and a driver with slow buses can read ahead and serve a cache.
pub trait MeterSource {
    /// Wall time has advanced to `wall` (true time, not the gateway's possibly drifting
    /// clock). A simulator integrates its energy up to here; real hardware ignores it.
    fn advance_to(&mut self, wall: NaiveDateTime) {
        let _ = wall;
    }

    /// # Errors
    /// When the meter does not answer; the gateway publishes an error line instead.
    fn read_measurements(&mut self, slot: Slot) -> Result<MeasurementValues, ReadError>;

    /// # Errors
    /// As [`read_measurements`](Self::read_measurements).
    fn read_counters(&mut self, slot: Slot) -> Result<Vec<CounterValue>, ReadError>;

    /// The relay's real state: `Some(true)` on, `Some(false)` off, `None` unknown.
    fn relay_state(&mut self, slot: Slot) -> Option<bool>;

    /// A device-level fault for simulation ([`Fault::CounterReset`],
    /// [`Fault::MeterSilent`]). Returns whether it was applied; real hardware returns
    /// `false`, which is the default.
    fn inject_fault(&mut self, fault: &Fault) -> bool {
        let _ = fault;
        false
    }
}

impl<S: MeterSource + ?Sized> MeterSource for &mut S {
    fn advance_to(&mut self, wall: NaiveDateTime) {
        (**self).advance_to(wall);
    }

    fn read_measurements(&mut self, slot: Slot) -> Result<MeasurementValues, ReadError> {
        (**self).read_measurements(slot)
    }

    fn read_counters(&mut self, slot: Slot) -> Result<Vec<CounterValue>, ReadError> {
        (**self).read_counters(slot)
    }

    fn relay_state(&mut self, slot: Slot) -> Option<bool> {
        (**self).relay_state(slot)
    }

    fn inject_fault(&mut self, fault: &Fault) -> bool {
        (**self).inject_fault(fault)
    }
}
