//! The demo's two sites as data, and the deterministic load model their history is drawn
//! from: mean power per quarter-hour of every meter, from the site-local time of day, the
//! weekday, public holidays and the season, with seeded noise. Pure (no I/O, no clock).

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

/// One quarter-hour in milliseconds.
pub const QUARTER_MS: i64 = 900_000;

/// Where a meter of the demo is placed in its site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The supply of the whole site (net of the PV: it exports when the PV makes more).
    Site,
    /// The incomer of a panel: its circuits plus what is not metered on their own.
    Panel(&'static str),
    /// A circuit of a panel, with its usage.
    Circuit {
        panel: &'static str,
        circuit: &'static str,
        usage: &'static str,
    },
}

/// What a circuit meter's load looks like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// The sum of what lies below (a site or panel meter).
    Sum,
    /// Desks, screens, kitchens: working hours on working days.
    Office(f64),
    /// Lights: working hours, more in the dark months.
    Lighting(f64),
    /// A heat pump or rooftop unit: heating in winter, cooling in summer, mostly when
    /// occupied.
    Hvac(f64),
    /// Round the clock, a little more in summer (server room, refrigeration).
    Constant(f64),
    /// Fans on a timer.
    Ventilation(f64),
    /// A shop: open every day 09–21 (Sundays 11–18).
    Retail(f64),
    /// A PV inverter of this many kWp: exports by day following the sun and the month;
    /// imports its standby at night.
    Pv(f64),
}

/// How a demo meter reaches Headend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A gateway of the simulated MQTT fleet (`gateway`, `slot`).
    Fleet,
    /// A unit behind the demo's simulated RS485/IP converter, polled over Modbus TCP, with
    /// its register map.
    Modbus { unit: u8, model: &'static str },
    /// The simulated MiSmart XML push gateway, under this meter serial (`controlUnit`).
    Xml { serial: &'static str },
}

/// One meter of the demo: which gateway and slot hold it, and what it measures.
#[derive(Debug, Clone, Copy)]
pub struct MeterSpec {
    pub source: Source,
    /// The fleet gateway's number: serial `SGF{gateway:06}` (0 for other sources).
    pub gateway: u32,
    /// 0 for the IR meter, else the RS485 slot (1 or 3, as in `sg-gateway`'s example
    /// gateway).
    pub slot: u8,
    pub name: &'static str,
    pub place: Place,
    pub load: Load,
}

impl MeterSpec {
    /// The meter serial the simulated gateway reports: the gateway serial's digits and the
    /// device's position in the example device list (IR meter 01, RS485 slot 1 03, slot 3 05).
    pub fn serial(&self) -> String {
        match self.source {
            Source::Fleet => {}
            Source::Modbus { unit, model } if model.starts_with("legrand") => {
                return format!("LG{unit:06}")
            }
            Source::Modbus { unit, .. } => return format!("{:08}", 18_230_000 + u32::from(unit)),
            Source::Xml { serial } => return serial.to_owned(),
        }
        let position = match self.slot {
            0 => 1,
            n => u32::from(n) + 2,
        };
        format!("{:06}{position:02}", self.gateway)
    }

    pub fn phases(&self) -> i16 {
        if matches!(
            self.source,
            Source::Modbus {
                model: "legrand-046-77",
                ..
            }
        ) {
            return 1;
        }
        if self.source == Source::Fleet && self.slot == 1 {
            1
        } else {
            3
        }
    }

    /// (model, Modbus address) as the example gateway's settings give them.
    pub fn model(&self) -> (&'static str, Option<i32>) {
        match self.source {
            Source::Fleet => {}
            Source::Modbus { unit, model } => return (model, Some(i32::from(unit))),
            Source::Xml { .. } => return ("IE38MD", None),
        }
        match self.slot {
            0 => ("IE38MD", Some(33)),
            1 => ("WM1-6", Some(11)),
            _ => ("WM3M4C", Some(12)),
        }
    }

    /// The IR meter's layout has reactive registers; the RS485 meters' has not. Of the
    /// others, the Iskra meter on Modbus and the XML push meter have them, the Legrand
    /// 0 046 77 has only its active import register.
    pub fn has_reactive(&self) -> bool {
        match self.source {
            Source::Fleet => self.slot == 0,
            Source::Modbus { model, .. } => model == "iskra-meter",
            Source::Xml { .. } => true,
        }
    }

    /// Whether the meter has an active export register (`counter2nr`).
    pub fn has_export(&self) -> bool {
        !matches!(
            self.source,
            Source::Modbus {
                model: "legrand-046-77",
                ..
            }
        )
    }
}

/// A site of the demo.
#[derive(Debug, Clone, Copy)]
pub struct SiteSpec {
    pub name: &'static str,
    pub zone: Tz,
    /// Fleet gateways `first..=last` belong to it.
    pub gateways: (u32, u32),
    pub panels: &'static [(&'static str, &'static str)],
    pub meters: &'static [MeterSpec],
    /// Reactive energy per active energy of the site's IR meters.
    pub tan_phi: f64,
    pub seed: u64,
}

const fn meter(gateway: u32, slot: u8, name: &'static str, place: Place, load: Load) -> MeterSpec {
    MeterSpec {
        source: Source::Fleet,
        gateway,
        slot,
        name,
        place,
        load,
    }
}

/// A meter polled over Modbus TCP from the demo's converter.
const fn modbus(
    unit: u8,
    model: &'static str,
    name: &'static str,
    place: Place,
    load: Load,
) -> MeterSpec {
    MeterSpec {
        source: Source::Modbus { unit, model },
        gateway: 0,
        slot: 0,
        name,
        place,
        load,
    }
}

/// A meter of the XML push gateway.
const fn xml(serial: &'static str, name: &'static str, place: Place, load: Load) -> MeterSpec {
    MeterSpec {
        source: Source::Xml { serial },
        gateway: 0,
        slot: 0,
        name,
        place,
        load,
    }
}

/// The demo's RS485/IP converter (its gateway serial) and the XML push gateway.
pub const CONVERTER: &str = "LJ-RS485-1";
pub const XML_GATEWAY: &str = "SGX000006";

const fn circuit(panel: &'static str, circuit: &'static str, usage: &'static str) -> Place {
    Place::Circuit {
        panel,
        circuit,
        usage,
    }
}

pub const LJUBLJANA: SiteSpec = SiteSpec {
    name: "Ljubljana office",
    zone: chrono_tz::Europe::Ljubljana,
    gateways: (1, 3),
    panels: &[
        ("Main panel", "Ground floor, plant room and roof"),
        ("First floor", "Offices and server room"),
        (
            "Annex panel",
            "Legrand panel of the annex: meters on RS485, read over Modbus TCP through a converter",
        ),
    ],
    meters: &[
        meter(1, 0, "Main supply", Place::Site, Load::Sum),
        meter(
            1,
            1,
            "Rooftop PV",
            circuit("Main panel", "PV inverter", "other"),
            Load::Pv(9.0),
        ),
        meter(
            1,
            3,
            "Main panel incomer",
            Place::Panel("Main panel"),
            Load::Sum,
        ),
        meter(
            2,
            0,
            "First floor incomer",
            Place::Panel("First floor"),
            Load::Sum,
        ),
        meter(
            2,
            1,
            "Lighting",
            circuit("Main panel", "Lighting", "lighting"),
            Load::Lighting(4.0),
        ),
        meter(
            2,
            3,
            "Heat pump",
            circuit("Main panel", "Heat pump", "heating"),
            Load::Hvac(16.0),
        ),
        meter(
            3,
            0,
            "Office sockets",
            circuit("First floor", "Sockets", "sockets"),
            Load::Office(11.0),
        ),
        meter(
            3,
            1,
            "Server room",
            circuit("First floor", "Server room", "process"),
            Load::Constant(2.5),
        ),
        meter(
            3,
            3,
            "Ventilation",
            circuit("First floor", "Ventilation", "ventilation"),
            Load::Ventilation(6.0),
        ),
        // The annex's Legrand panel, behind the RS485/IP converter: an Iskra meter on the
        // incomer, two Legrand 0 046 77 on circuits.
        modbus(
            10,
            "iskra-meter",
            "Annex incomer",
            Place::Panel("Annex panel"),
            Load::Sum,
        ),
        modbus(
            5,
            "legrand-046-77",
            "Annex kitchen",
            circuit("Annex panel", "Kitchen", "sockets"),
            Load::Office(3.0),
        ),
        modbus(
            6,
            "legrand-046-77",
            "Annex water heater",
            circuit("Annex panel", "Water heater", "hot_water"),
            Load::Office(2.0),
        ),
    ],
    tan_phi: 0.3,
    seed: 0x4C4A_4E41,
};

pub const NEW_YORK: SiteSpec = SiteSpec {
    name: "New York store",
    zone: chrono_tz::America::New_York,
    gateways: (4, 5),
    panels: &[
        ("Sales floor", "Shop, lighting and rooftop unit"),
        ("Back of house", "Cold room and tills"),
    ],
    meters: &[
        meter(4, 0, "Con Ed supply", Place::Site, Load::Sum),
        meter(
            4,
            1,
            "Store lighting",
            circuit("Sales floor", "Lighting", "lighting"),
            Load::Retail(6.0),
        ),
        meter(
            4,
            3,
            "Sales floor incomer",
            Place::Panel("Sales floor"),
            Load::Sum,
        ),
        meter(
            5,
            0,
            "Rooftop unit",
            circuit("Sales floor", "Rooftop HVAC", "cooling"),
            Load::Hvac(22.0),
        ),
        meter(
            5,
            1,
            "Refrigeration",
            circuit("Back of house", "Cold room", "process"),
            Load::Constant(7.0),
        ),
        meter(
            5,
            3,
            "Sockets and tills",
            circuit("Back of house", "Sockets and tills", "sockets"),
            Load::Retail(4.0),
        ),
        // On the older gateway that pushes MiSmart XML.
        xml(
            "X0000701",
            "Bakery oven",
            circuit("Back of house", "Bakery", "process"),
            Load::Retail(5.0),
        ),
    ],
    tan_phi: 0.45,
    seed: 0x4E59_4354,
};

pub const SITES: [SiteSpec; 2] = [LJUBLJANA, NEW_YORK];

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

/// Public holidays of the site's contract, for the years the history covers.
pub fn holidays(site: &SiteSpec, years: std::ops::RangeInclusive<i32>) -> Vec<NaiveDate> {
    let mut days = Vec::new();
    for year in years {
        let d = |m: u32, d: u32| NaiveDate::from_ymd_opt(year, m, d);
        let list: Vec<Option<NaiveDate>> = if site.zone == chrono_tz::America::New_York {
            vec![
                d(1, 1),
                nth_weekday(year, 1, chrono::Weekday::Mon, 3),
                nth_weekday(year, 2, chrono::Weekday::Mon, 3),
                last_monday(year, 5),
                d(6, 19),
                d(7, 4),
                nth_weekday(year, 9, chrono::Weekday::Mon, 1),
                nth_weekday(year, 11, chrono::Weekday::Thu, 4),
                d(12, 25),
            ]
        } else {
            let easter_monday = easter(year).and_then(|e| e.succ_opt());
            vec![
                d(1, 1),
                d(1, 2),
                d(2, 8),
                easter_monday,
                d(4, 27),
                d(5, 1),
                d(5, 2),
                d(6, 25),
                d(8, 15),
                d(10, 31),
                d(11, 1),
                d(12, 25),
                d(12, 26),
            ]
        };
        days.extend(list.into_iter().flatten());
    }
    days.sort();
    days.dedup();
    days
}

fn nth_weekday(year: i32, month: u32, weekday: chrono::Weekday, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
}

fn last_monday(year: i32, month: u32) -> Option<NaiveDate> {
    (1..=5)
        .rev()
        .find_map(|n| NaiveDate::from_weekday_of_month_opt(year, month, chrono::Weekday::Mon, n))
}

/// Easter Sunday (Gregorian, anonymous algorithm).
fn easter(year: i32) -> Option<NaiveDate> {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
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

    #[test]
    fn serials_follow_the_example_gateway() {
        assert_eq!(LJUBLJANA.meters[0].serial(), "00000101");
        assert_eq!(LJUBLJANA.meters[1].serial(), "00000103");
        assert_eq!(LJUBLJANA.meters[2].serial(), "00000105");
        assert_eq!(NEW_YORK.meters[5].serial(), "00000505");
    }

    #[test]
    fn easter_dates() {
        assert_eq!(easter(2025), NaiveDate::from_ymd_opt(2025, 4, 20));
        assert_eq!(easter(2026), NaiveDate::from_ymd_opt(2026, 4, 5));
    }

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
