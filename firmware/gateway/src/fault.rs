//! Faults on demand, for exercising Headend against a misbehaving gateway.

use serde::{Deserialize, Serialize};

use crate::config::Slot;

/// A fault to inject with [`Gateway::inject`](crate::Gateway::inject). Device faults are
/// passed on to the [`MeterSource`](crate::MeterSource); gateway faults act on the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The meter's resettable counters go back to 0 (device fault).
    CounterReset { slot: Slot },
    /// The meter does not answer for the next `pushes` pushes (device fault): the gateway
    /// publishes an error line instead of each reading.
    MeterSilent { slot: Slot, pushes: u32 },
    /// From now on the gateway's clock runs `ppm` parts per million fast (negative: slow),
    /// so its `local_time` drifts away from true time. Replaces an earlier drift; the offset
    /// already accumulated stays.
    ClockDrift { ppm: i32 },
    /// The gateway drops its links for `secs` seconds; the driver carries it out
    /// ([`Action::GoOffline`](crate::Action::GoOffline)).
    GoOffline { secs: u32 },
    /// The next payload handed to the driver is cut off mid-JSON.
    Garble,
    /// The relay in `slot` ignores switch commands (`stuck: true`, e.g. welded contacts)
    /// or obeys again (`stuck: false`); it still reports its real state (device fault).
    RelayStuck { slot: Slot, stuck: bool },
}

impl Fault {
    /// Whether the fault is the device's (passed on to the source) rather than the gateway's.
    #[must_use]
    pub fn is_device_fault(&self) -> bool {
        matches!(
            self,
            Self::CounterReset { .. } | Self::MeterSilent { .. } | Self::RelayStuck { .. }
        )
    }
}
