//! The deterministic load model the demo's history is drawn from: mean power per
//! quarter-hour of every meter, from the site-local time of day, the weekday, public holidays
//! and the season, with seeded noise. Pure (no I/O, no clock).

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

use super::model::{Load, MeterSpec, Place, SiteSpec};

/// One quarter-hour in milliseconds.
pub const QUARTER_MS: i64 = 900_000;

/// Splitmix64 finaliser.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Uniform in `[0, 1)` from `(seed, a, b)`.
pub fn unit(seed: u64, a: u64, b: u64) -> f64 {
    let x = mix(mix(mix(seed).wrapping_add(a)).wrapping_add(b));
    (x >> 11) as f64 / (1_u64 << 53) as f64
}

fn bump(hour: f64, mu: f64, sigma: f64) -> f64 {
    let d = (hour - mu) / sigma;
    (-0.5 * d * d).exp()
}

/// ~1 between `from` and `to` hours, ~0 outside, with half-hour ramps.
fn window(hour: f64, from: f64, to: f64) -> f64 {
    let rise = 1.0 / (1.0 + (-(hour - from) * 6.0).exp());
    let fall = 1.0 / (1.0 + ((hour - to) * 6.0).exp());
    rise * fall
}

/// The site-local calendar of one quarter-hour.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Quarter index since the Unix epoch (UTC-aligned).
    pub quarter: i64,
    /// Local hour of the quarter's middle, as a fraction.
    pub hour: f64,
    /// Monday 0 … Sunday 6; a holiday counts as Sunday.
    pub weekday: u32,
    /// Day of the year, 0-based.
    pub yday: f64,
    /// Local days since the Unix epoch (for per-day noise).
    pub day: i64,
}

impl Moment {
    pub fn new(quarter: i64, zone: Tz, holidays: &[NaiveDate]) -> Self {
        let mid = DateTime::<Utc>::from_timestamp_millis(quarter * QUARTER_MS + QUARTER_MS / 2)
            .unwrap_or_default()
            .with_timezone(&zone)
            .naive_local();
        let date = mid.date();
        let weekday = if holidays.contains(&date) {
            6
        } else {
            date.weekday().num_days_from_monday()
        };
        Self {
            quarter,
            hour: f64::from(mid.hour()) + f64::from(mid.minute()) / 60.0,
            weekday,
            yday: f64::from(date.ordinal0()),
            day: i64::from(date.num_days_from_ce()),
        }
    }

    fn working_day(&self) -> bool {
        self.weekday < 5
    }

    /// 1 in mid-January, −1 in mid-July.
    fn winter(&self) -> f64 {
        (2.0 * std::f64::consts::PI * (self.yday - 15.0) / 365.0).cos()
    }

    /// 1 at the June solstice, −1 at the December one.
    fn summer_sun(&self) -> f64 {
        (2.0 * std::f64::consts::PI * (self.yday - 80.0) / 365.0).sin()
    }
}

/// Mean power (W) of `load` in one quarter-hour; `seed` draws the meter's noise.
pub fn power_w(load: Load, m: &Moment, seed: u64) -> f64 {
    let noise = 1.0 + 0.12 * (unit(seed, 1, m.quarter as u64) - 0.5);
    let daily = 1.0 + 0.2 * (unit(seed, 2, m.day as u64) - 0.5);
    let h = m.hour;
    let kw = |k: f64, fraction: f64| 1000.0 * k * fraction.max(0.0) * noise * daily;
    match load {
        Load::Sum => 0.0,
        Load::Office(k) => {
            let f = if m.working_day() {
                0.12 + 0.8 * window(h, 7.5, 17.5) - 0.12 * bump(h, 12.5, 0.5)
            } else {
                0.1
            };
            kw(k, f)
        }
        Load::Lighting(k) => {
            let dark = 0.65 + 0.35 * m.winter();
            let f = if m.working_day() {
                0.05 + dark * window(h, 7.0, 18.5)
            } else {
                0.05
            };
            kw(k, f)
        }
        Load::Hvac(k) => {
            let heating = (m.winter() - 0.1).max(0.0);
            let cooling = (-m.winter() - 0.25).max(0.0) * (0.4 + 0.6 * bump(h, 15.0, 3.0));
            let occupied = if m.working_day() {
                window(h, 6.0, 19.0)
            } else {
                0.0
            };
            kw(k, (heating + 1.2 * cooling) * (0.35 + 0.65 * occupied))
        }
        Load::Constant(k) => kw(k, 0.8 + 0.1 * -m.winter()),
        Load::Ventilation(k) => {
            let f = if m.working_day() {
                0.15 + 0.75 * window(h, 6.5, 19.0)
            } else {
                0.15
            };
            kw(k, f)
        }
        Load::Retail(k) => {
            let open = if m.weekday == 6 {
                window(h, 11.0, 18.0)
            } else {
                window(h, 9.0, 21.0)
            };
            kw(k, 0.1 + 0.85 * open)
        }
        Load::Pv(kwp) => -pv_w(kwp, m, seed),
    }
}

/// PV output (W, ≥ 0): a half-sine between sunrise and sunset whose length and height follow
/// the season, times the day's cloudiness.
fn pv_w(kwp: f64, m: &Moment, seed: u64) -> f64 {
    let s = m.summer_sun();
    let day_length = 12.0 + 3.6 * s;
    // Solar noon on local clock time, an hour later in summer time.
    let noon = if (80.0..300.0).contains(&m.yday) {
        13.2
    } else {
        12.2
    };
    let x = (m.hour - (noon - day_length / 2.0)) / day_length;
    if !(0.0..1.0).contains(&x) {
        return 0.0;
    }
    let clear = (std::f64::consts::PI * x).sin().powf(1.4) * (0.5 + 0.35 * (1.0 + s));
    let clouds = 0.25 + 0.75 * unit(seed, 3, m.day as u64).powf(0.6);
    let flicker = 1.0 - 0.2 * unit(seed, 4, m.quarter as u64) * (1.0 - clouds);
    1000.0 * kwp * 0.85 * clear * clouds * flicker
}

/// Energy (mWh) of a quarter-hour at `power_w`: exact integers from here on.
pub fn quarter_mwh(power_w: f64) -> i64 {
    (power_w.max(0.0) * 250.0).round() as i64
}

/// Quarter-hour energies (mWh) of every meter of `site` in one quarter: `(import, export)`
/// per meter in `site.meters` order. Panel meters add their circuits and 4 % plus a small
/// base of their own; the site meter adds everything, 5 % and 2 kW more, and nets the PV.
pub fn quarter(site: &SiteSpec, m: &Moment) -> Vec<(i64, i64)> {
    let n = site.meters.len();
    let mut out = vec![(0_i64, 0_i64); n];
    let mut loads = 0.0;
    let mut pv = 0.0;
    let mut panel_sums: Vec<(&str, f64)> = Vec::new();
    for (i, spec) in site.meters.iter().enumerate() {
        if spec.load == Load::Sum {
            continue;
        }
        let seed = site.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9);
        let p = power_w(spec.load, m, seed);
        let import = if let Load::Pv(_) = spec.load {
            let export = (-p).max(0.0);
            pv += export;
            // Inverter standby at night.
            let standby = if export > 0.0 { 0.0 } else { 12.0 };
            out[i] = (quarter_mwh(standby), quarter_mwh(export));
            standby
        } else {
            out[i] = (quarter_mwh(p), 0);
            p.max(0.0)
        };
        loads += import;
        if let Place::Circuit { panel, .. } = spec.place {
            match panel_sums.iter_mut().find(|(name, _)| *name == panel) {
                Some((_, sum)) => *sum += import,
                None => panel_sums.push((panel, import)),
            }
        }
    }
    // Building services on no circuit meter: lifts, corridors, the boiler room.
    let site_loads = loads * 1.05 + 2000.0;
    for (i, spec) in site.meters.iter().enumerate() {
        match spec.place {
            Place::Panel(panel) => {
                let sum = panel_sums
                    .iter()
                    .find(|(name, _)| *name == panel)
                    .map_or(0.0, |(_, s)| *s);
                out[i] = (quarter_mwh(sum * 1.04 + 150.0), 0);
            }
            Place::Site => {
                let net = site_loads - pv;
                out[i] = (quarter_mwh(net), quarter_mwh(-net));
            }
            Place::Circuit { .. } => {}
        }
    }
    out
}

/// The live simulator's load for a meter, so that today's live data continues the history
/// at about its level: `(profile, rated W per phase)` for `sg-gateway fleet
/// --start-counters`.
pub fn live_load(site: &SiteSpec, spec: &MeterSpec) -> (&'static str, f64) {
    let phases = f64::from(spec.phases());
    let per_phase = |kw: f64, full: f64| 1000.0 * kw / full / phases;
    match spec.load {
        Load::Office(k) | Load::Ventilation(k) | Load::Lighting(k) => {
            ("office", per_phase(k, 0.85))
        }
        Load::Retail(k) | Load::Hvac(k) => ("office", per_phase(k * 0.6, 0.85)),
        Load::Constant(k) => ("industrial", per_phase(k, 1.0)),
        Load::Pv(kwp) => ("solar", 1000.0 * kwp * 0.85 * 0.6 / phases),
        Load::Sum => {
            let below: f64 = site
                .meters
                .iter()
                .filter(|m| match (spec.place, m.place) {
                    (Place::Site, Place::Circuit { .. }) => true,
                    (Place::Panel(p), Place::Circuit { panel, .. }) => p == panel,
                    _ => false,
                })
                .map(|m| match m.load {
                    Load::Office(k)
                    | Load::Ventilation(k)
                    | Load::Lighting(k)
                    | Load::Constant(k) => k,
                    Load::Retail(k) | Load::Hvac(k) => k * 0.6,
                    Load::Pv(_) | Load::Sum => 0.0,
                })
                .sum();
            // An industrial shape (high base) 20 % above its circuits' ratings keeps the
            // parent's remainder positive day and night.
            ("industrial", 1.2 * per_phase(below.max(1.0), 0.9))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::model::{holidays, LJUBLJANA};

    #[test]
    fn site_meters_add_up_and_pv_exports_by_day() {
        let holidays = holidays(&LJUBLJANA, 2026..=2026);
        // 2026-06-17 11:00 UTC, a Wednesday: sunny hours in Ljubljana.
        let noon = 1_781_694_000_000 / QUARTER_MS;
        let m = Moment::new(noon, LJUBLJANA.zone, &holidays);
        let q = quarter(&LJUBLJANA, &m);
        assert!(q[1].1 > 0, "PV exports at noon in June: {q:?}");
        let night = Moment::new(noon - 48, LJUBLJANA.zone, &holidays);
        let q = quarter(&LJUBLJANA, &night);
        assert_eq!(q[1].1, 0, "no PV at night");
        let circuits: i64 = LJUBLJANA
            .meters
            .iter()
            .zip(&q)
            .filter(|(s, _)| matches!(s.place, Place::Circuit { .. }))
            .map(|(_, e)| e.0)
            .sum();
        assert!(q[0].0 >= circuits, "site {} < circuits {circuits}", q[0].0);
    }
}
