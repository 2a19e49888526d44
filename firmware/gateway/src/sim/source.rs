//! Simulated devices behind a gateway.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use chrono::NaiveDateTime;

use super::meter::{CounterLayout, Profile, SimMeter};
use crate::config::{DeviceKind, GatewayConfig, Slot};
use crate::fault::Fault;
use crate::rng::hash;
use crate::source::{CounterValue, MeasurementValues, MeterSource, ReadError};

/// A simulated relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRelay {
    pub on: bool,
    /// A faulty relay ignores switch commands (its state push shows it).
    pub faulty: bool,
}

#[derive(Debug, Clone)]
struct MeterEntry {
    meter: SimMeter,
    /// The relay that cuts this meter's load.
    behind: Option<Slot>,
    /// Measurement reads still to fail.
    silent_reads: u32,
}

/// Simulated meters and relays, by slot.
#[derive(Debug, Clone, Default)]
pub struct SimSource {
    meters: BTreeMap<Slot, MeterEntry>,
    relays: BTreeMap<Slot, SimRelay>,
    wall: Option<NaiveDateTime>,
}

impl SimSource {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A device for every device in `config`: meters with the configured phase count and a
    /// profile drawn from `seed` (the IR meter a household with [`CounterLayout::Full`],
    /// like the IE38MD fixture; RS485 meters [`CounterLayout::Basic`], like the WM3M4C
    /// one), relays on and working; the IR relay cuts the IR meter's load.
    #[must_use]
    pub fn for_config(config: &GatewayConfig, seed: u64) -> Self {
        let mut source = Self::new();
        for device in &config.devices {
            match &device.kind {
                DeviceKind::Meter(info) => {
                    let meter_seed = hash(seed, u64::from(device.slot.index()), 0x3E7E);
                    let (profile, layout) = match device.slot {
                        Slot::IrMeter => (Profile::Household, CounterLayout::Full),
                        _ => {
                            let profiles =
                                [Profile::Household, Profile::Office, Profile::Industrial];
                            (profiles[(meter_seed % 3) as usize], CounterLayout::Basic)
                        }
                    };
                    let meter = SimMeter::new(meter_seed, info.phases, profile).with_layout(layout);
                    source.add_meter(device.slot, meter);
                }
                DeviceKind::Relay(_) => source.add_relay(
                    device.slot,
                    SimRelay {
                        on: true,
                        faulty: false,
                    },
                ),
            }
        }
        if source.relays.contains_key(&Slot::IrRelay) && source.meters.contains_key(&Slot::IrMeter)
        {
            source.cut_by(Slot::IrMeter, Slot::IrRelay);
        }
        source
    }

    /// Adds (or replaces) the meter in `slot`, advanced to the source's time.
    pub fn add_meter(&mut self, slot: Slot, mut meter: SimMeter) {
        if let Some(wall) = self.wall {
            meter.advance_to(wall);
        }
        self.meters.insert(
            slot,
            MeterEntry {
                meter,
                behind: None,
                silent_reads: 0,
            },
        );
    }

    pub fn add_relay(&mut self, slot: Slot, relay: SimRelay) {
        self.relays.insert(slot, relay);
    }

    /// Puts the meter in `meter` behind the relay in `relay`: when the relay is off, the
    /// meter's load draws nothing. Returns whether both exist.
    pub fn cut_by(&mut self, meter: Slot, relay: Slot) -> bool {
        let (Some(entry), Some(state)) = (self.meters.get_mut(&meter), self.relays.get(&relay))
        else {
            return false;
        };
        entry.behind = Some(relay);
        entry.meter.set_connected(state.on);
        true
    }

    /// Carries out [`Action::SwitchRelay`](crate::Action::SwitchRelay). Returns whether the
    /// relay switched (false for a faulty or missing relay).
    pub fn switch_relay(&mut self, slot: Slot, on: bool) -> bool {
        let Some(relay) = self.relays.get_mut(&slot) else {
            return false;
        };
        if relay.faulty {
            return false;
        }
        relay.on = on;
        for entry in self.meters.values_mut() {
            if entry.behind == Some(slot) {
                entry.meter.set_connected(on);
            }
        }
        true
    }

    /// Makes a relay ignore (or obey again) switch commands.
    pub fn set_faulty(&mut self, slot: Slot, faulty: bool) {
        if let Some(relay) = self.relays.get_mut(&slot) {
            relay.faulty = faulty;
        }
    }

    #[must_use]
    pub fn meter(&self, slot: Slot) -> Option<&SimMeter> {
        self.meters.get(&slot).map(|e| &e.meter)
    }

    pub fn meter_mut(&mut self, slot: Slot) -> Option<&mut SimMeter> {
        self.meters.get_mut(&slot).map(|e| &mut e.meter)
    }

    #[must_use]
    pub fn relay(&self, slot: Slot) -> Option<SimRelay> {
        self.relays.get(&slot).copied()
    }

    /// Whether the meter in `slot` is silenced ([`Fault::MeterSilent`]): its next reads fail.
    #[must_use]
    pub fn is_silent(&self, slot: Slot) -> bool {
        self.meters.get(&slot).is_some_and(|e| e.silent_reads > 0)
    }

    /// The source's time: the last [`advance_to`](MeterSource::advance_to).
    #[must_use]
    pub fn wall(&self) -> Option<NaiveDateTime> {
        self.wall
    }

    fn entry(&mut self, slot: Slot) -> Result<&mut MeterEntry, ReadError> {
        self.meters.get_mut(&slot).ok_or(ReadError::NoDevice)
    }
}

impl MeterSource for SimSource {
    fn advance_to(&mut self, wall: NaiveDateTime) {
        self.wall = Some(wall);
        for entry in self.meters.values_mut() {
            entry.meter.advance_to(wall);
        }
    }

    /// Fails while the meter is silenced, counting down one push per read.
    fn read_measurements(&mut self, slot: Slot) -> Result<MeasurementValues, ReadError> {
        let wall = self.wall.ok_or(ReadError::NotResponding)?;
        let entry = self.entry(slot)?;
        if entry.silent_reads > 0 {
            entry.silent_reads -= 1;
            return Err(ReadError::NotResponding);
        }
        Ok(entry.meter.measurements_at(wall))
    }

    fn read_counters(&mut self, slot: Slot) -> Result<Vec<CounterValue>, ReadError> {
        let entry = self.entry(slot)?;
        if entry.silent_reads > 0 {
            return Err(ReadError::NotResponding);
        }
        Ok(entry.meter.counters())
    }

    fn relay_state(&mut self, slot: Slot) -> Option<bool> {
        self.relays.get(&slot).map(|r| r.on)
    }

    fn inject_fault(&mut self, fault: &Fault) -> bool {
        match *fault {
            Fault::CounterReset { slot } => self
                .meters
                .get_mut(&slot)
                .map(|e| e.meter.reset_counters())
                .is_some(),
            Fault::MeterSilent { slot, pushes } => self
                .meters
                .get_mut(&slot)
                .map(|e| e.silent_reads = pushes)
                .is_some(),
            Fault::RelayStuck { slot, stuck } => {
                let exists = self.relays.contains_key(&slot);
                self.set_faulty(slot, stuck);
                exists
            }
            Fault::ClockDrift { .. } | Fault::GoOffline { .. } | Fault::Garble => false,
        }
    }
}
