//! The demo's RS485/IP converter: the simulated converter ([`super::converter`]) on a
//! loopback port, with one unit per Modbus meter of the demo, following the register maps
//! Headend ships (`iskra-meter`, `legrand-046-77`). Their values move with the load model
//! the history was drawn from ([`super::load::quarter`]): the counters start at the
//! backfilled values (rounded up to the register's resolution, so never below) and grow
//! with the current quarter-hour's power; voltages, currents, power and power factor follow.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use headend_modbus_map::{CounterValue, Decoded, MapLibrary, RegisterMap};

use super::backfill::Register;
use super::converter::{unit_from_map, SimConverter, SimHandle, SimOptions};
use super::load::{self, Moment, QUARTER_MS};
use super::model::{self, SiteSpec, Source};

/// How often the simulated meters' registers move.
const TICK: Duration = Duration::from_secs(1);

/// The smallest step of a model's energy register, mWh: the 0 046 77 counts 0.01 kWh; the
/// Iskra map's exponent register allows Wh for the values the demo reaches.
fn step(model: &str) -> i64 {
    if model == "legrand-046-77" {
        10_000
    } else {
        1_000
    }
}

/// One simulated unit and where its counters stand.
struct Meter {
    /// Index in the site's meters.
    index: usize,
    unit: u8,
    map: RegisterMap,
    serial: String,
    step: i64,
    /// Active import, export and reactive import, exact mWh (mvarh), and the remainders
    /// (mWh × ms) carried between ticks.
    energy: [i64; 3],
    carry: [i64; 3],
}

impl Meter {
    fn values(&self, site: &SiteSpec, power_w: f64, draw: f64) -> Decoded {
        let quantised = |v: i64| v.div_euclid(self.step) * self.step;
        let counter = |name: &str, unit: &'static str, v: i64| CounterValue {
            name: name.to_owned(),
            unit,
            resettable: false,
            value_milli: quantised(v),
        };
        let p = power_w.max(0.0);
        let spec = &site.meters[self.index];
        let tan_phi = if spec.has_reactive() {
            site.tan_phi
        } else {
            0.25
        };
        let q = p * tan_phi;
        let s = (p * p + q * q).sqrt();
        let pf = if s > 0.0 { p / s } else { 1.0 };
        let u = 229.0 + 4.0 * draw;
        let round = |v: f64, digits: i32| {
            let f = 10f64.powi(digits);
            ((v * f).round() / f) as f32
        };
        if spec.phases() == 1 {
            return Decoded {
                measurements: vec![
                    ("u1", round(u, 3)),
                    ("i1", round(s / u, 3)),
                    ("p", round(p, 0)),
                    ("frequency", round(49.98 + 0.04 * draw, 2)),
                    ("pf", round(pf, 2)),
                ],
                counters: vec![counter(Register::Import.name(), "Wh", self.energy[0])],
                ..Decoded::default()
            };
        }
        let mut measurements = vec![
            ("frequency", round(49.98 + 0.04 * draw, 2)),
            ("p", round(p, 0)),
            ("q", round(q, 0)),
            ("s", round(s, 0)),
            ("pf", round(pf, 3)),
        ];
        for (k, (uk, ik, pk)) in [("u1", "i1", "p1"), ("u2", "i2", "p2"), ("u3", "i3", "p3")]
            .into_iter()
            .enumerate()
        {
            let u = u + 0.7 * k as f64;
            measurements.push((uk, round(u, 2)));
            measurements.push((ik, round(s / 3.0 / u, 3)));
            measurements.push((pk, round(p / 3.0, 0)));
        }
        Decoded {
            measurements,
            counters: vec![
                counter("counter1nr", "Wh", self.energy[0]),
                counter("counter2nr", "Wh", self.energy[1]),
                counter("counter3nr", "varh", self.energy[2]),
                counter("counter4nr", "varh", 0),
            ],
            tariff: Some(1),
            info: vec![
                ("model".to_owned(), "WM3M4C".to_owned()),
                ("serial".to_owned(), self.serial.clone()),
            ],
            ..Decoded::default()
        }
    }
}

/// The running demo converter.
pub struct DemoConverter {
    pub handle: SimHandle,
    /// (unit, model, meter name).
    pub units: Vec<(u8, &'static str, &'static str)>,
}

/// Starts the converter for `site`'s Modbus meters, their counters continuing `end_values`
/// (per meter index: import, export, reactive at `now`, mWh); `None` when the site has none.
/// Runs for the rest of the process.
///
/// # Errors
/// A meter whose values its map cannot encode.
pub fn start(
    site: &'static SiteSpec,
    end_values: &HashMap<usize, [i64; 3]>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DemoConverter>> {
    let library = MapLibrary::builtin();
    let mut meters = Vec::new();
    let mut units = Vec::new();
    for (index, spec) in site.meters.iter().enumerate() {
        let Source::Modbus { unit, model } = spec.source else {
            continue;
        };
        let map = library
            .get(model)
            .ok_or_else(|| anyhow::anyhow!("demo converter: no map {model}"))?
            .clone();
        let step = step(model);
        let start = end_values.get(&index).copied().unwrap_or_default();
        // Rounded up: the first polled value is never below the history's last.
        let energy = start.map(|v| (v + step - 1).div_euclid(step) * step);
        meters.push(Meter {
            index,
            unit,
            map,
            serial: spec.serial(),
            step,
            energy,
            carry: [0; 3],
        });
        units.push((unit, model, spec.name));
    }
    if meters.is_empty() {
        return Ok(None);
    }
    let converter = SimConverter::start(SimOptions::default());
    let holidays = year_holidays(site, now);
    let quarter = now.timestamp_millis().div_euclid(QUARTER_MS);
    let energies = load::quarter(site, &Moment::new(quarter, site.zone, &holidays));
    for meter in &meters {
        let power = energies[meter.index].0 as f64 / 250.0;
        let values = meter.values(site, power, 0.5);
        // Every planned register exists; then the values.
        converter.add_unit(meter.unit, unit_from_map(&meter.map, &Decoded::default()));
        converter
            .set_values(meter.unit, &meter.map, &values)
            .map_err(|e| anyhow::anyhow!("demo converter unit {}: {e}", meter.unit))?;
    }
    let handle = converter.detach();
    tokio::spawn(tick(site, meters, handle.clone(), now));
    Ok(Some(DemoConverter { handle, units }))
}

fn year_holidays(site: &SiteSpec, now: DateTime<Utc>) -> Vec<NaiveDate> {
    let year = chrono::Datelike::year(&now.date_naive());
    model::holidays(site, year - 1..=year + 1)
}

/// Moves the registers every [`TICK`]: each counter by its share of the current quarter's
/// energy (exact integers, remainders carried), the instantaneous values to the quarter's
/// mean power with a little noise.
async fn tick(
    site: &'static SiteSpec,
    mut meters: Vec<Meter>,
    handle: SimHandle,
    start: DateTime<Utc>,
) {
    let holidays = year_holidays(site, start);
    let mut at_ms = start.timestamp_millis();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now_ms = Utc::now().timestamp_millis().max(at_ms);
        let quarter = now_ms.div_euclid(QUARTER_MS);
        let energies = load::quarter(site, &Moment::new(quarter, site.zone, &holidays));
        let dt = now_ms - at_ms;
        at_ms = now_ms;
        for meter in &mut meters {
            let (import, export) = energies[meter.index];
            let reactive = (import as f64 * site.tan_phi).round() as i64;
            for (k, per_quarter) in [import, export, reactive].into_iter().enumerate() {
                let total = per_quarter * dt + meter.carry[k];
                meter.energy[k] += total / QUARTER_MS;
                meter.carry[k] = total % QUARTER_MS;
            }
            let draw = load::unit(
                site.seed ^ 0xC0DE,
                u64::from(meter.unit),
                now_ms as u64 / 5000,
            );
            let power = (import - export) as f64 / 250.0 * (0.95 + 0.1 * draw);
            let values = meter.values(site, power, draw);
            if let Err(e) = handle.set_values(meter.unit, &meter.map, &values) {
                tracing::warn!(unit = meter.unit, error = %e, "demo converter: values not encodable");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_units_encode_and_start_at_the_backfilled_counters() {
        let site = &model::LJUBLJANA;
        let mut ends = HashMap::new();
        for (i, spec) in site.meters.iter().enumerate() {
            if matches!(spec.source, Source::Modbus { .. }) {
                ends.insert(i, [12_345_678_901, 0, 3_456_789_012]);
            }
        }
        let now = DateTime::<Utc>::from_timestamp(1_781_694_000, 0).unwrap();
        let demo = start(site, &ends, now).unwrap().unwrap();
        assert_eq!(demo.units.len(), 3);
        // Legrand unit 5: counter1nr at 0x2008, u32 in 0.01 kWh, rounded up.
        let words = demo.handle.holding(5, 0x2008, 2);
        let raw = (u32::from(words[0]) << 16) | u32::from(words[1]);
        assert_eq!(i64::from(raw) * 10_000, 12_345_680_000);
    }
}
