//! A simulated meter: load curves, instantaneous values and exactly integrated counters.

use alloc::vec;
use alloc::vec::Vec;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use sg_wire::message::EnergyUnit;

use crate::rng::{hash, signed_noise, unit};
use crate::source::{CounterValue, MeasurementValues, PhaseValues, TotalValues};

/// mW·ms in one mWh (1 mWh = 3.6 J = 3.6·10⁶ mW·ms).
const MWMS_PER_MWH: i128 = 3_600_000;

/// Milliseconds in one simulation cell; power is constant over a cell.
const CELL_MS: i64 = 1000;

/// The shape of a load over the day and the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Low base load, a morning bump and an evening peak; more at home on weekends.
    Household,
    /// Working hours on weekdays, little else.
    Office,
    /// Two shifts on weekdays (06–22), a high base load around the clock.
    Industrial,
    /// A PV inverter: generates (negative active power, counted on the export registers)
    /// between sunrise and sunset, whose times and height follow the season.
    Solar,
}

/// Which registers the meter has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterLayout {
    /// Like the WM3M4C fixture: `counter1nr` active import, `counter2nr` active export,
    /// phase "Total", all tariffs.
    Basic,
    /// Like the IE38MD fixture: `counter1nr..4nr` active import, active export, reactive
    /// import (inductive), reactive export (capacitive), all tariffs; resettable
    /// `counter1..4` the same, `counter5..8` tariff 1 only, `counter9..12` tariff 2 only.
    Full,
}

/// One register of a [`CounterLayout`].
#[derive(Debug, Clone, Copy)]
struct LayoutRegister {
    index: u8,
    resettable: bool,
    energy: Energy,
    tariffs: &'static [u8],
    phase: &'static str,
}

/// What a register integrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Energy {
    /// Total active power while positive, Wh.
    ActiveImport,
    /// Total active power while negative, Wh.
    ActiveExport,
    /// Total reactive power while positive (inductive), varh.
    ReactiveImport,
    /// Total reactive power while negative (capacitive), varh.
    ReactiveExport,
}

impl Energy {
    pub const ALL: [Self; 4] = [
        Self::ActiveImport,
        Self::ActiveExport,
        Self::ReactiveImport,
        Self::ReactiveExport,
    ];

    fn idx(self) -> usize {
        match self {
            Self::ActiveImport => 0,
            Self::ActiveExport => 1,
            Self::ReactiveImport => 2,
            Self::ReactiveExport => 3,
        }
    }

    #[must_use]
    pub fn unit(self) -> EnergyUnit {
        match self {
            Self::ActiveImport | Self::ActiveExport => EnergyUnit::Wh,
            Self::ReactiveImport | Self::ReactiveExport => EnergyUnit::Varh,
        }
    }

    /// Whether the register counts energy sent to the grid (negative power): what a real
    /// meter's counter configuration says as its direction (pyiskra's `import`/`export`).
    #[must_use]
    pub fn is_export(self) -> bool {
        matches!(self, Self::ActiveExport | Self::ReactiveExport)
    }

    /// The part of `(p, q)` (mW, mvar) this register counts.
    fn of(self, p: i64, q: i64) -> i64 {
        match self {
            Self::ActiveImport => p.max(0),
            Self::ActiveExport => (-p).max(0),
            Self::ReactiveImport => q.max(0),
            Self::ReactiveExport => (-q).max(0),
        }
    }
}

/// The tariff in force at a wall time: 1 on weekdays 06:00–22:00, else 2.
#[must_use]
pub fn tariff_at(wall: NaiveDateTime) -> u8 {
    tariff_of_cell(millis(wall).div_euclid(CELL_MS))
}

fn tariff_of_cell(cell: i64) -> u8 {
    let (weekday, hour) = calendar(cell);
    if weekday < 5 && (6.0..22.0).contains(&hour) {
        1
    } else {
        2
    }
}

/// (weekday with Monday 0, hour of day as a fraction) of a cell (a second since the epoch).
fn calendar(cell: i64) -> (i64, f64) {
    let days = cell.div_euclid(86_400);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 3).rem_euclid(7);
    let hour = cell.rem_euclid(86_400) as f64 / 3600.0;
    (weekday, hour)
}

fn millis(wall: NaiveDateTime) -> i64 {
    wall.and_utc().timestamp_millis()
}

/// A bell around `mu` hours.
fn bump(hour: f64, mu: f64, sigma: f64) -> f64 {
    let d = (hour - mu) / sigma;
    libm::exp(-0.5 * d * d)
}

/// ~1 between `from` and `to` hours, ~0 outside, with half-hour ramps.
fn window(hour: f64, from: f64, to: f64) -> f64 {
    let rise = 1.0 / (1.0 + libm::exp(-(hour - from) * 6.0));
    let fall = 1.0 / (1.0 + libm::exp((hour - to) * 6.0));
    rise * fall
}

impl Profile {
    /// The mean load, as a fraction of the rating.
    fn load(self, weekday: i64, hour: f64) -> f64 {
        let weekend = weekday >= 5;
        match self {
            Self::Household => {
                let at_home = if weekend {
                    0.35 * bump(hour, 12.5, 2.5)
                } else {
                    0.1 * bump(hour, 13.0, 2.0)
                };
                0.08 + 0.35 * bump(hour, 7.3, 0.8) + 0.85 * bump(hour, 19.5, 1.8) + at_home
            }
            Self::Office if weekend => 0.08,
            Self::Office => 0.1 + 0.75 * window(hour, 7.5, 18.0) - 0.15 * bump(hour, 12.5, 0.5),
            Self::Industrial if weekend => 0.3,
            Self::Industrial => 0.35 + 0.55 * window(hour, 6.0, 22.0),
            // Needs the date: see `solar`.
            Self::Solar => 0.0,
        }
    }

    /// Per-phase rating (W) and nominal power factor range.
    fn ranges(self) -> ((f64, f64), (f64, f64)) {
        match self {
            Self::Household => ((1500.0, 3500.0), (0.95, 0.99)),
            Self::Office => ((3000.0, 8000.0), (0.90, 0.97)),
            Self::Industrial => ((15_000.0, 40_000.0), (0.85, 0.95)),
            Self::Solar => ((1000.0, 5000.0), (0.97, 0.99)),
        }
    }
}

/// The share of its rating a PV inverter generates in a cell (a second since the epoch of
/// the wall clock): a half-sine from sunrise to sunset (mid-latitudes, clock time), longer and
/// higher in summer.
fn solar(cell: i64) -> f64 {
    let days = cell.div_euclid(86_400) as f64;
    let hour = cell.rem_euclid(86_400) as f64 / 3600.0;
    // `f64::rem_euclid` needs std; libm keeps this `no_std`.
    let year_day = libm::fmod(libm::fmod(days, 365.2425) + 365.2425, 365.2425);
    let season = libm::sin(2.0 * core::f64::consts::PI * (year_day - 80.0) / 365.2425);
    let day_length = 12.0 + 3.6 * season;
    let noon = if season > 0.0 { 13.2 } else { 12.2 };
    let x = (hour - (noon - day_length / 2.0)) / day_length;
    if !(0.0..1.0).contains(&x) {
        return 0.0;
    }
    libm::pow(libm::sin(core::f64::consts::PI * x), 1.4) * (0.5 + 0.35 * (1.0 + season))
}

/// Noise streams, so that different quantities draw independent noise.
#[derive(Clone, Copy)]
enum Stream {
    LoadSlow = 1,
    LoadFast,
    PowerFactor,
    Voltage,
    VoltageFast,
    Frequency,
    ThdU,
    ThdI,
    Temperature,
}

/// Per-phase power of one cell in mW and mvar; phases the meter lacks are 0.
#[derive(Debug, Clone, Copy, Default)]
struct CellPower {
    p: [i64; 3],
    q: [i64; 3],
    load: f64,
}

impl CellPower {
    fn p_total(&self) -> i64 {
        self.p.iter().sum()
    }

    fn q_total(&self) -> i64 {
        self.q.iter().sum()
    }
}

/// A simulated meter. See the [module docs](super).
#[derive(Debug, Clone, PartialEq)]
pub struct SimMeter {
    seed: u64,
    phases: u8,
    profile: Profile,
    layout: CounterLayout,
    /// Per-phase rating, W.
    rated_w: f64,
    imbalance: [f64; 3],
    /// Signed nominal power factor per phase (negative capacitive).
    pf_nominal: [f64; 3],
    /// Non-resettable registers' values when the simulation starts, mWh.
    initial_mwh: [i64; 4],
    /// When the simulation started (first [`advance_to`](Self::advance_to)), ms.
    origin_ms: Option<i64>,
    /// Integrated up to here, ms.
    at_ms: i64,
    /// Energy per [`Energy`] and tariff (1, 2), mW·ms.
    acc: [[i128; 2]; 4],
    /// `acc` at the last reset of the resettable registers.
    reset_base: [[i128; 2]; 4],
    connected_at_origin: bool,
    /// Load connections and disconnections: (ms, connected), in time order.
    switches: Vec<(i64, bool)>,
}

impl SimMeter {
    /// A meter with `phases` phases (1, else 3) whose rating, imbalance, power factors and
    /// starting counters are drawn from `seed`. Counters use [`CounterLayout::Full`] for a
    /// 3-phase meter and [`CounterLayout::Basic`] for a single-phase one.
    #[must_use]
    pub fn new(seed: u64, phases: u8, profile: Profile) -> Self {
        let phases = if phases == 1 { 1 } else { 3 };
        let draw = |n: u64| unit(hash(seed, 0xD1CE, n));
        let ((w_lo, w_hi), (pf_lo, pf_hi)) = profile.ranges();
        let rated_w = w_lo + (w_hi - w_lo) * draw(0);
        let imbalance = [0, 1, 2].map(|i| 0.8 + 0.4 * draw(1 + i));
        let pf_nominal = [0, 1, 2].map(|i| {
            let pf = pf_lo + (pf_hi - pf_lo) * draw(4 + i);
            // Offices have capacitive phases now and then (PC power supplies, LED drivers).
            let capacitive = profile == Profile::Office && draw(7 + i) < 0.3;
            if capacitive {
                -pf
            } else {
                pf
            }
        });
        let base = 1_000_000 + (draw(10) * 200_000_000_000.0) as i64;
        let initial_mwh = [
            base,
            (draw(11) * 50_000.0) as i64,
            base / 10,
            (draw(12) * 1_000_000.0) as i64,
        ];
        Self {
            seed,
            phases,
            profile,
            layout: if phases == 3 {
                CounterLayout::Full
            } else {
                CounterLayout::Basic
            },
            rated_w,
            imbalance,
            pf_nominal,
            initial_mwh,
            origin_ms: None,
            at_ms: 0,
            acc: [[0; 2]; 4],
            reset_base: [[0; 2]; 4],
            connected_at_origin: true,
            switches: Vec::new(),
        }
    }

    /// Sets what the non-resettable register of `energy` shows when the simulation starts
    /// (mWh or mvarh): a meter that continues a known history, e.g. the demo's backfill.
    pub fn set_initial_mwh(&mut self, energy: Energy, mwh: i64) {
        self.initial_mwh[energy.idx()] = mwh;
    }

    /// Replaces the load shape and the per-phase rating (W) drawn from the seed, before the
    /// simulation starts (e.g. a demo meter whose live load continues a known history).
    pub fn set_load(&mut self, profile: Profile, rated_w: f64) {
        self.profile = profile;
        self.rated_w = if rated_w.is_finite() {
            rated_w.max(0.0)
        } else {
            0.0
        };
    }

    #[must_use]
    pub fn with_layout(mut self, layout: CounterLayout) -> Self {
        self.layout = layout;
        self
    }

    #[must_use]
    pub fn phases(&self) -> u8 {
        self.phases
    }

    #[must_use]
    pub fn profile(&self) -> Profile {
        self.profile
    }

    #[must_use]
    pub fn layout(&self) -> CounterLayout {
        self.layout
    }

    /// Integrates energy up to `wall`. The first call starts the simulation; a time before
    /// the last one is ignored (energy does not flow backwards).
    pub fn advance_to(&mut self, wall: NaiveDateTime) {
        let target = millis(wall);
        if self.origin_ms.is_none() {
            self.origin_ms = Some(target);
            self.at_ms = target;
            return;
        }
        // Switches are only ever recorded at `at_ms` (see `set_connected`), so the load's
        // state is constant over the whole advance.
        let connected = self.connected_at(self.at_ms);
        let mut at = self.at_ms;
        while at < target {
            let cell = at.div_euclid(CELL_MS);
            let end = ((cell + 1) * CELL_MS).min(target);
            let power = self.cell_power(cell, connected);
            let tariff = usize::from(tariff_of_cell(cell) - 1);
            let dt = i128::from(end - at);
            let (p, q) = (power.p_total(), power.q_total());
            for energy in Energy::ALL {
                self.acc[energy.idx()][tariff] += i128::from(energy.of(p, q)) * dt;
            }
            at = end;
        }
        self.at_ms = self.at_ms.max(target);
    }

    /// Connects or disconnects the load (a relay in front of it switched), from the time
    /// the meter was last advanced to.
    pub fn set_connected(&mut self, connected: bool) {
        if self.origin_ms.is_none() {
            self.connected_at_origin = connected;
        } else if self.connected_at(self.at_ms) != connected {
            self.switches.push((self.at_ms, connected));
        }
    }

    /// Whether the load is connected now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.switches
            .last()
            .map_or(self.connected_at_origin, |&(_, c)| c)
    }

    /// Whether the load was connected at `ms` (a switch at `ms` is already in effect).
    fn connected_at(&self, ms: i64) -> bool {
        self.switches
            .iter()
            .take_while(|&&(at, _)| at <= ms)
            .last()
            .map_or(self.connected_at_origin, |&(_, c)| c)
    }

    /// The power drawn over one cell.
    fn cell_power(&self, cell: i64, connected: bool) -> CellPower {
        let mut power = CellPower::default();
        let (weekday, hour) = calendar(cell);
        power.load = match self.profile {
            Profile::Solar => solar(cell),
            profile => profile.load(weekday, hour),
        }
        .max(0.0);
        if !connected {
            return power;
        }
        // An inverter feeds in: its active power is negative.
        let sign = if self.profile == Profile::Solar {
            -1
        } else {
            1
        };
        for phase in 0..usize::from(self.phases) {
            let slow = self.smooth_noise(Stream::LoadSlow, phase, cell, 300);
            let fast = self.noise(Stream::LoadFast, phase, cell);
            let p_w = (self.rated_w * power.load * self.imbalance[phase])
                * (1.0 + 0.15 * slow)
                * (1.0 + 0.03 * fast);
            let nominal = self.pf_nominal[phase];
            let pf = (libm::fabs(nominal)
                + 0.02 * self.smooth_noise(Stream::PowerFactor, phase, cell, 600))
            .clamp(0.5, 0.999);
            let q_var = libm::copysign(p_w * libm::sqrt(1.0 - pf * pf) / pf, nominal);
            power.p[phase] = sign * libm::round(p_w.max(0.0) * 1000.0) as i64;
            power.q[phase] = libm::round(q_var * 1000.0) as i64;
        }
        power
    }

    /// Uniform noise in `[-1, 1)` for one cell.
    fn noise(&self, stream: Stream, phase: usize, cell: i64) -> f64 {
        signed_noise(self.seed, (stream as u64) << 8 | phase as u64, cell as u64)
    }

    /// Noise in `[-1, 1)` that moves smoothly: interpolated between draws every `period`
    /// cells.
    fn smooth_noise(&self, stream: Stream, phase: usize, cell: i64, period: i64) -> f64 {
        let block = cell.div_euclid(period);
        let frac = cell.rem_euclid(period) as f64 / period as f64;
        let key = (stream as u64) << 8 | phase as u64 | 0x80;
        let a = signed_noise(self.seed, key, block as u64);
        let b = signed_noise(self.seed, key, (block + 1) as u64);
        a + (b - a) * frac
    }

    /// The instantaneous values at `wall`: those of the second it falls in, consistent
    /// with the energy integrated over that second.
    #[must_use]
    pub fn measurements_at(&self, wall: NaiveDateTime) -> MeasurementValues {
        let ms = millis(wall);
        let cell = ms.div_euclid(CELL_MS);
        let power = self.cell_power(cell, self.connected_at(ms));
        let phases = (0..usize::from(self.phases))
            .map(|phase| {
                let u_v = 230.0
                    + 3.0 * self.smooth_noise(Stream::Voltage, phase, cell, 120)
                    + 0.3 * self.noise(Stream::VoltageFast, phase, cell);
                let (p_w, q_var) = (
                    power.p[phase] as f64 / 1000.0,
                    power.q[phase] as f64 / 1000.0,
                );
                let (s_va, pf, angle_deg) = triangle(p_w, q_var);
                let i_a = s_va / u_v;
                let thd_i_pct = if i_a > 0.0 {
                    5.0 + 15.0 * (1.0 - power.load.min(1.0))
                        + 2.0 * self.smooth_noise(Stream::ThdI, phase, cell, 60)
                } else {
                    0.0
                };
                PhaseValues {
                    u_v,
                    i_a,
                    p_w,
                    q_var,
                    s_va,
                    pf,
                    angle_deg,
                    thd_u_pct: 2.0 + 0.8 * self.smooth_noise(Stream::ThdU, phase, cell, 300),
                    thd_i_pct,
                }
            })
            .collect();
        let (p_w, q_var) = (
            power.p_total() as f64 / 1000.0,
            power.q_total() as f64 / 1000.0,
        );
        let (s_va, pf, angle_deg) = triangle(p_w, q_var);
        MeasurementValues {
            frequency_hz: 50.0
                + 0.03 * self.smooth_noise(Stream::Frequency, 0, cell, 30)
                + 0.005 * self.noise(Stream::Frequency, 1, cell),
            phases,
            total: TotalValues {
                p_w,
                q_var,
                s_va,
                pf,
                angle_deg,
            },
            temperature_c: 25.0
                + 10.0 * power.load.min(1.2)
                + 0.5 * self.smooth_noise(Stream::Temperature, 0, cell, 3600),
            tariff: Some(tariff_of_cell(cell)),
        }
    }

    /// The registers of the meter's [`CounterLayout`], non-resettable first.
    #[must_use]
    pub fn counters(&self) -> Vec<CounterValue> {
        self.layout_registers()
            .into_iter()
            .map(|r| self.register(r.index, r.resettable, r.energy, r.tariffs, r.phase))
            .collect()
    }

    /// What each register of the meter's layout integrates, by its SG name (`counter1nr`,
    /// `counter5`, …), in [`counters`](Self::counters) order: the model behind the direction
    /// (import or export) the gateway reports for each counter.
    #[must_use]
    pub fn register_energies(&self) -> Vec<(alloc::string::String, Energy)> {
        self.layout_registers()
            .into_iter()
            .map(|r| {
                let suffix = if r.resettable { "" } else { "nr" };
                (alloc::format!("counter{}{suffix}", r.index), r.energy)
            })
            .collect()
    }

    /// The layout's registers, non-resettable first: one list for values and directions.
    fn layout_registers(&self) -> Vec<LayoutRegister> {
        const ALL: &[u8] = &[1, 2, 3, 4];
        let at = |index, resettable, energy, tariffs, phase| LayoutRegister {
            index,
            resettable,
            energy,
            tariffs,
            phase,
        };
        match self.layout {
            CounterLayout::Basic => vec![
                at(1, false, Energy::ActiveImport, ALL, "Total"),
                at(2, false, Energy::ActiveExport, ALL, "Total"),
            ],
            CounterLayout::Full => {
                let mut registers: Vec<_> = (1..)
                    .zip(Energy::ALL)
                    .map(|(index, energy)| at(index, false, energy, ALL, ""))
                    .collect();
                for (group, tariffs) in [ALL, &[1], &[2]].into_iter().enumerate() {
                    for (offset, energy) in (1..).zip(Energy::ALL) {
                        let index = 4 * group as u8 + offset;
                        registers.push(at(index, true, energy, tariffs, ""));
                    }
                }
                registers
            }
        }
    }

    fn register(
        &self,
        index: u8,
        resettable: bool,
        energy: Energy,
        tariffs: &[u8],
        phase: &str,
    ) -> CounterValue {
        let suffix = if resettable { "" } else { "nr" };
        CounterValue {
            name: alloc::format!("counter{index}{suffix}"),
            index,
            resettable,
            unit: energy.unit(),
            value_milli: self.register_mwh(energy, tariffs, resettable),
            phase: (!phase.is_empty()).then(|| phase.into()),
            tariffs: tariffs.to_vec(),
        }
    }

    /// A register's value in mWh (or mvarh): the energy integrated while one of `tariffs`
    /// (1, 2; others never occur) was in force, since the last reset for a resettable
    /// register, plus the starting value for a non-resettable one.
    #[must_use]
    pub fn register_mwh(&self, energy: Energy, tariffs: &[u8], resettable: bool) -> i64 {
        let e = energy.idx();
        let mut total = 0_i128;
        for tariff in [1_u8, 2] {
            if tariffs.contains(&tariff) {
                let t = usize::from(tariff - 1);
                total += self.acc[e][t];
                if resettable {
                    total -= self.reset_base[e][t];
                }
            }
        }
        let integrated = i64::try_from(total.div_euclid(MWMS_PER_MWH)).unwrap_or(i64::MAX);
        if resettable {
            integrated
        } else {
            self.initial_mwh[e].saturating_add(integrated)
        }
    }

    /// Sets the resettable registers to 0 (the non-resettable ones go on).
    pub fn reset_counters(&mut self) {
        self.reset_base = self.acc;
    }

    /// The energy between `t1` and `t2` as a non-resettable register (all tariffs) shows
    /// it, mWh: recomputed from the power model and the load's switch history, independent
    /// of how the meter was advanced. Equals `register(t2) − register(t1)` exactly; times
    /// before the start of the simulation count from its start.
    #[must_use]
    pub fn energy_truth_mwh(&self, energy: Energy, t1: NaiveDateTime, t2: NaiveDateTime) -> i64 {
        let to = |t| {
            self.energy_since_origin(energy, millis(t))
                .div_euclid(MWMS_PER_MWH)
        };
        i64::try_from(to(t2) - to(t1)).unwrap_or(i64::MAX)
    }

    /// mW·ms of `energy` from the origin to `ms`, summed cell by cell.
    fn energy_since_origin(&self, energy: Energy, ms: i64) -> i128 {
        let Some(origin) = self.origin_ms else {
            return 0;
        };
        let mut total = 0_i128;
        let mut at = origin;
        while at < ms {
            let cell = at.div_euclid(CELL_MS);
            let mut end = ((cell + 1) * CELL_MS).min(ms);
            // Split a cell where the load was switched.
            if let Some(&(switch, _)) = self.switches.iter().find(|&&(s, _)| s > at && s < end) {
                end = switch;
            }
            let power = self.cell_power(cell, self.connected_at(at));
            total += i128::from(energy.of(power.p_total(), power.q_total())) * i128::from(end - at);
            at = end;
        }
        total
    }
}

/// `(S, signed PF, angle)` of `(P, Q)`: `S = √(P² + Q²)`, `PF = P/S` (capacitive negative,
/// 1 with no load), angle `atan2(Q, P)` in degrees.
fn triangle(p: f64, q: f64) -> (f64, f64, f64) {
    let s = libm::sqrt(p * p + q * q);
    if s == 0.0 {
        return (0.0, 1.0, 0.0);
    }
    let pf = libm::fabs(p) / s;
    let pf = if q < 0.0 { -pf } else { pf };
    let angle = libm::atan2(q, p).to_degrees();
    (s, pf, angle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .expect("valid time")
    }

    #[test]
    fn every_register_has_its_energy_and_direction_in_counters_order() {
        for layout in [CounterLayout::Basic, CounterLayout::Full] {
            let meter = SimMeter::new(5, 3, Profile::Office).with_layout(layout);
            let names: Vec<_> = meter.counters().into_iter().map(|c| c.name).collect();
            let energies = meter.register_energies();
            assert_eq!(
                energies.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                names
            );
            assert!(!energies[0].1.is_export(), "counter1nr counts import");
            assert!(energies[1].1.is_export(), "counter2nr counts export");
        }
        let full = SimMeter::new(5, 3, Profile::Office).with_layout(CounterLayout::Full);
        let energies = full.register_energies();
        assert_eq!(energies[7], ("counter4".into(), Energy::ReactiveExport));
        assert_eq!(energies[12], ("counter9".into(), Energy::ActiveImport));
    }

    #[test]
    fn a_solar_meter_exports_by_day_only_and_continues_given_registers() {
        let mut meter = SimMeter::new(5, 1, Profile::Office);
        meter.set_load(Profile::Solar, 4000.0);
        meter.set_initial_mwh(Energy::ActiveImport, 7_000);
        meter.set_initial_mwh(Energy::ActiveExport, 1_000_000);
        meter.advance_to(at(2026, 6, 17, 0));
        assert_eq!(
            meter.register_mwh(Energy::ActiveExport, &[1, 2], false),
            1_000_000
        );
        meter.advance_to(at(2026, 6, 17, 4));
        assert_eq!(
            meter.register_mwh(Energy::ActiveExport, &[1, 2], false),
            1_000_000
        );
        meter.advance_to(at(2026, 6, 17, 20));
        let exported = meter.register_mwh(Energy::ActiveExport, &[1, 2], false) - 1_000_000;
        assert!(exported > 10_000_000, "a June day of 4 kW: {exported} mWh");
        assert_eq!(
            meter.register_mwh(Energy::ActiveImport, &[1, 2], false),
            7_000
        );
        assert!(meter.measurements_at(at(2026, 6, 17, 13)).total.p_w < 0.0);
        assert_eq!(meter.measurements_at(at(2026, 6, 17, 23)).total.p_w, 0.0);
    }
}
