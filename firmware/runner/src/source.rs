//! Where the runner's gateway reads its devices: the core's simulator, or Modbus (TCP, or RTU
//! on the RS485 bus).
//!
//! The core reads synchronously at push time, while Modbus is slow and asynchronous, so each
//! Modbus device has a poller task that reads ahead into a cache, and [`HostSource`] serves
//! the cache. A device whose last read failed, or whose reading is older than a few poll
//! periods, counts as not responding: the core publishes its `P/error` line.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sg_gateway_core::config::Slot;
use sg_gateway_core::sim::SimSource;
use sg_gateway_core::{
    CounterValue, Fault, MeasurementValues, MeterSource, PhaseValues, ReadError, TotalValues,
};
use sg_wire::message::EnergyUnit;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::counter_config::CounterConfig;
use crate::modbus::{self, ModbusDevice};

/// Units of the four Modbus energy counters (import/export active, import/export
/// reactive: the Iskra default configuration), for a meter whose configuration registers
/// do not say.
const COUNTER_UNITS: [EnergyUnit; 4] = [
    EnergyUnit::Wh,
    EnergyUnit::Wh,
    EnergyUnit::Varh,
    EnergyUnit::Varh,
];

/// Which way the energy a counter accumulates flows, as the meter's counter configuration
/// (or the simulator's model) says: what the SG's JSON API reports as `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Energy taken from the grid.
    Import,
    /// Energy sent to the grid.
    Export,
    /// Both ways (a four-quadrant register).
    Bidirectional,
}

/// The latest read-ahead of one Modbus device.
#[derive(Debug, Default)]
pub struct Cached {
    reading: Option<(Instant, Reading)>,
    /// The last attempt failed: the device does not respond, whatever it said before.
    failed: bool,
    /// The counters' directions from the meter's configuration registers, once read.
    directions: BTreeMap<String, Direction>,
}

#[derive(Debug, Clone)]
enum Reading {
    Meter {
        measurements: MeasurementValues,
        counters: Vec<CounterValue>,
    },
    Relay(bool),
}

/// Devices behind the core: simulated ones, and Modbus ones via their caches.
pub struct HostSource {
    sim: SimSource,
    modbus: HashMap<Slot, (Arc<Mutex<Cached>>, Duration)>,
}

impl HostSource {
    #[must_use]
    pub fn new(sim: SimSource) -> Self {
        Self {
            sim,
            modbus: HashMap::new(),
        }
    }

    /// Serves `slot` from `cache`; readings older than `max_age` are stale.
    pub fn add_modbus(&mut self, slot: Slot, cache: Arc<Mutex<Cached>>, max_age: Duration) {
        self.modbus.insert(slot, (cache, max_age));
    }

    /// Whether `slot` is simulated (its relay is switched in the simulator).
    #[must_use]
    pub fn is_simulated(&self, slot: Slot) -> bool {
        !self.modbus.contains_key(&slot)
    }

    pub fn sim_mut(&mut self) -> &mut SimSource {
        &mut self.sim
    }

    /// Whether the device in `slot` answers now: its last Modbus read succeeded and is
    /// fresh, or its simulated meter is not silenced. The SG's device list says
    /// `Not Detected` otherwise.
    #[must_use]
    pub fn responding(&self, slot: Slot) -> bool {
        match self.cached(slot) {
            None => !self.sim.is_silent(slot),
            Some(reading) => reading.is_ok(),
        }
    }

    /// The direction of each counter of the meter in `slot`, by SG name (`counter1nr`):
    /// from the meter's counter configuration registers over Modbus, from the model of a
    /// simulated meter. A counter whose configuration is unknown is left out.
    #[must_use]
    pub fn counter_directions(&self, slot: Slot) -> BTreeMap<String, Direction> {
        if let Some((cache, _)) = self.modbus.get(&slot) {
            let cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
            return cache.directions.clone();
        }
        let Some(meter) = self.sim.meter(slot) else {
            return BTreeMap::new();
        };
        meter
            .register_energies()
            .into_iter()
            .map(|(name, energy)| {
                let direction = if energy.is_export() {
                    Direction::Export
                } else {
                    Direction::Import
                };
                (name, direction)
            })
            .collect()
    }

    fn cached(&self, slot: Slot) -> Option<Result<Reading, ReadError>> {
        let (cache, max_age) = self.modbus.get(&slot)?;
        let cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        Some(match &cache.reading {
            Some((at, reading)) if !cache.failed && at.elapsed() <= *max_age => Ok(reading.clone()),
            _ => Err(ReadError::NotResponding),
        })
    }
}

impl MeterSource for HostSource {
    fn advance_to(&mut self, wall: NaiveDateTime) {
        self.sim.advance_to(wall);
    }

    fn read_measurements(&mut self, slot: Slot) -> Result<MeasurementValues, ReadError> {
        match self.cached(slot) {
            None => self.sim.read_measurements(slot),
            Some(Ok(Reading::Meter { measurements, .. })) => Ok(measurements),
            Some(Ok(Reading::Relay(_))) => Err(ReadError::NoDevice),
            Some(Err(error)) => Err(error),
        }
    }

    fn read_counters(&mut self, slot: Slot) -> Result<Vec<CounterValue>, ReadError> {
        match self.cached(slot) {
            None => self.sim.read_counters(slot),
            Some(Ok(Reading::Meter { counters, .. })) => Ok(counters),
            Some(Ok(Reading::Relay(_))) => Err(ReadError::NoDevice),
            Some(Err(error)) => Err(error),
        }
    }

    fn relay_state(&mut self, slot: Slot) -> Option<bool> {
        match self.cached(slot) {
            None => self.sim.relay_state(slot),
            Some(Ok(Reading::Relay(on))) => Some(on),
            Some(_) => None,
        }
    }

    fn inject_fault(&mut self, fault: &Fault) -> bool {
        self.sim.inject_fault(fault)
    }
}

/// Converts a Modbus reading into the core's values for a meter with `phases` phases; each
/// counter's unit is its configuration's ([`CounterConfig`]) where known.
#[must_use]
pub fn to_core_values(
    instant: &modbus::Instant,
    energy: &modbus::Energy,
    phases: u8,
    config: &[CounterConfig; 4],
) -> (MeasurementValues, Vec<CounterValue>) {
    let signed = |pf: modbus::PowerFactor| {
        if pf.capacitive {
            -pf.value
        } else {
            pf.value
        }
    };
    let phase = |n: usize| PhaseValues {
        u_v: instant.u[n],
        i_a: instant.i[n],
        p_w: instant.p[n],
        q_var: instant.q[n],
        s_va: instant.s[n],
        pf: signed(instant.pf[n]),
        angle_deg: instant.pa[n],
        // THD registers are not read: published as N/A.
        thd_u_pct: f64::NAN,
        thd_i_pct: f64::NAN,
    };
    let count = if phases == 1 { 1 } else { 3 };
    let measurements = MeasurementValues {
        frequency_hz: instant.frequency_hz,
        phases: (0..count).map(phase).collect(),
        total: TotalValues {
            p_w: instant.p_total,
            q_var: instant.q_total,
            s_va: instant.s_total,
            pf: signed(instant.pf_total),
            angle_deg: instant.pa_total,
        },
        temperature_c: instant.temperature_c,
        tariff: u8::try_from(energy.tariff).ok(),
    };
    let units = COUNTER_UNITS
        .iter()
        .zip(config)
        .map(|(&default, c)| c.unit.unwrap_or(default));
    let counters = (1_u8..)
        .zip(energy.counters.iter().zip(units))
        .map(|(index, (&value, unit))| CounterValue {
            name: format!("counter{index}"),
            index,
            resettable: true,
            unit,
            // Energy registers only grow; a negative reading is a meter fault, shown as 0.
            value_milli: (value * 1000.0).round().max(0.0) as i64,
            phase: None,
            tariffs: vec![1, 2, 3, 4],
        })
        .collect();
    (measurements, counters)
}

/// What a Modbus poller reads.
#[derive(Debug, Clone, Copy)]
pub enum PollTarget {
    Meter { phases: u8 },
    Relay,
}

/// Resolves a Modbus TCP server address.
///
/// # Errors
/// The host does not resolve.
pub fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host}:{port} does not resolve"))
}

/// Reads one Modbus device every `period` into `cache` until `cancel`; carries out relay
/// switches arriving on `switches` (holding register 40141) and reads the state back at once.
///
/// A failed read marks the cache failed (the next push publishes the device's `P/error`
/// line) and is logged with the device and the register: as a warning when the device stops
/// answering or fails differently, at debug level while it keeps failing the same way.
pub async fn poll_modbus(
    mut device: ModbusDevice,
    slot: Slot,
    target: PollTarget,
    period: Duration,
    cache: Arc<Mutex<Cached>>,
    mut switches: mpsc::Receiver<bool>,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The kind of the last failure, to log each change once.
    let mut failing: Option<String> = None;
    // The meter's counter configuration: read once, before its first reading.
    let mut config = ConfigState::Unknown { unanswered: 0 };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            Some(on) = switches.recv() => {
                match device.switch_relay(on).await {
                    Ok(()) => info!(?slot, %device, on, "relay switched"),
                    Err(error) => warn!(?slot, %device, %error, "cannot switch the relay"),
                }
            }
            _ = interval.tick() => {}
        }
        let reading = match target {
            PollTarget::Meter { phases } => {
                read_meter(&mut device, phases, &mut config, &slot).await
            }
            PollTarget::Relay => device.read_relay().await.map(Reading::Relay),
        };
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        match reading {
            Ok(reading) => {
                if let ConfigState::Known(counters) = &config {
                    cache.directions = directions(counters);
                }
                cache.reading = Some((Instant::now(), reading));
                cache.failed = false;
                if failing.take().is_some() {
                    info!(?slot, %device, "device answers again");
                }
            }
            // The core publishes the SG's error line when it finds the cache failed.
            Err(error) => {
                cache.failed = true;
                let kind = format!("{}", error.request) + &discriminant(&error.error);
                if failing.as_ref() == Some(&kind) {
                    debug!(?slot, %device, %error, "Modbus request failed again");
                } else {
                    warn!(?slot, %device, %error, "Modbus request failed");
                    failing = Some(kind);
                }
            }
        }
    }
}

/// Whether the device answered, only not with the registers asked for: asking again will
/// not help.
fn answered(error: &modbus::ReadError) -> bool {
    matches!(
        error,
        modbus::ReadError::Exception(_)
            | modbus::ReadError::ShortReply { .. }
            | modbus::ReadError::Malformed(_)
    )
}

/// The kind of a failure, without the details that change every time (CRC values, byte
/// counts).
fn discriminant(error: &modbus::ReadError) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What is known of a meter's counter configuration.
enum ConfigState {
    /// Not read yet: the read went unanswered so many times while the meter answered.
    Unknown {
        unanswered: u8,
    },
    Known([CounterConfig; 4]),
    /// The meter has no such registers (it answered with an exception or a short reply, or
    /// never answered them while answering its readings): the Iskra defaults, no directions.
    Absent,
}

/// Unanswered configuration reads, while the meter answers, before it counts as absent.
const CONFIG_TRIES: u8 = 3;

/// The SG names of the four Modbus counters (`counter1`..`counter4`) with their directions.
fn directions(config: &[CounterConfig; 4]) -> BTreeMap<String, Direction> {
    (1..)
        .zip(config)
        .filter_map(|(n, c)| Some((format!("counter{n}"), c.direction?)))
        .collect()
}

async fn read_meter(
    device: &mut ModbusDevice,
    phases: u8,
    config: &mut ConfigState,
    slot: &Slot,
) -> Result<Reading, modbus::RequestError> {
    // A failure other than a refusal may be a silent meter: the readings below tell.
    let mut unanswered = false;
    if matches!(config, ConfigState::Unknown { .. }) {
        match device.read_counter_config().await {
            Ok(counters) => *config = ConfigState::Known(counters),
            Err(error) if answered(&error.error) => {
                info!(?slot, %device, %error, "no counter configuration: Iskra defaults");
                *config = ConfigState::Absent;
            }
            Err(error) => {
                debug!(?slot, %device, %error, "counter configuration not read");
                unanswered = true;
            }
        }
    }
    let instant = device.read_measurements().await?;
    let energy = device.read_energy().await?;
    if let (true, ConfigState::Unknown { unanswered: n }) = (unanswered, &mut *config) {
        *n += 1;
        if *n >= CONFIG_TRIES {
            warn!(?slot, %device, "the counter configuration never answers: Iskra defaults");
            *config = ConfigState::Absent;
        }
    }
    let counters = match config {
        ConfigState::Known(counters) => *counters,
        ConfigState::Unknown { .. } | ConfigState::Absent => [CounterConfig::default(); 4],
    };
    let (measurements, counters) = to_core_values(&instant, &energy, phases, &counters);
    Ok(Reading::Meter {
        measurements,
        counters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modbus_values_become_core_values() {
        let instant = modbus::Instant {
            frequency_hz: 50.0,
            u: [230.0, 231.0, 232.0],
            p_total: 1000.0,
            pf: [
                modbus::PowerFactor {
                    value: 0.5,
                    capacitive: true,
                    export: false,
                },
                modbus::PowerFactor::default(),
                modbus::PowerFactor::default(),
            ],
            ..modbus::Instant::default()
        };
        let energy = modbus::Energy {
            counters: [184_233_125.0, 12.5, 0.0, 0.0],
            tariff: 2,
        };
        let (values, counters) = to_core_values(&instant, &energy, 1, &Default::default());
        assert_eq!(values.phases.len(), 1);
        assert!(
            (values.phases[0].pf + 0.5).abs() < 1e-12,
            "capacitive is negative"
        );
        assert_eq!(values.tariff, Some(2));
        assert_eq!(counters[0].value_milli, 184_233_125_000);
        assert_eq!(counters[1].value_milli, 12_500);
        assert_eq!(counters[2].unit, EnergyUnit::Varh);
        let (values, _) = to_core_values(&instant, &energy, 3, &Default::default());
        assert_eq!(values.phases.len(), 3);
    }
}
