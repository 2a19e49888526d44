//! The demo's two sites as data: each is a description (its meter table, panels, public
//! holidays and supply contract) that the functions here interpret, so a site is added or
//! changed by editing its table, not by writing code. Pure (no I/O, no clock); the load
//! model the history is drawn from is [`super::load`].

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use serde_json::json;

/// The register maps of the demo's Modbus meters (as `headend-modbus-map` ships them).
pub const ISKRA_METER: &str = "iskra-meter";
pub const LEGRAND_046_77: &str = "legrand-046-77";

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
                model: LEGRAND_046_77,
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
            Source::Modbus { model, .. } => model == ISKRA_METER,
            Source::Xml { .. } => true,
        }
    }

    /// Whether the meter has an active export register (`counter2nr`).
    pub fn has_export(&self) -> bool {
        !matches!(
            self.source,
            Source::Modbus {
                model: LEGRAND_046_77,
                ..
            }
        )
    }
}

/// A public holiday of a site's contract, as a rule over the years.
#[derive(Debug, Clone, Copy)]
pub enum Holiday {
    /// The same date every year: (month, day).
    Date(u32, u32),
    /// The `n`-th such weekday of a month: (month, weekday, n).
    Nth(u32, Weekday, u8),
    /// The last Monday of a month.
    LastMonday(u32),
    /// The day after Easter Sunday.
    EasterMonday,
}

/// A schedule entry of a contract: (name, band, months (every month when empty), from,
/// to), on working days.
pub type Period = (
    &'static str,
    &'static str,
    &'static [u32],
    &'static str,
    &'static str,
);

/// A site's supply contract: time-of-use bands, their schedule, a demand charge and a
/// reactive charge ([`contract_json`] writes it as the contract API takes it).
#[derive(Debug, Clone, Copy)]
pub struct ContractSpec {
    pub currency: &'static str,
    /// (name, import price, export price), per kWh.
    pub bands: &'static [(&'static str, &'static str, &'static str)],
    pub schedule: &'static [Period],
    pub default_band: &'static str,
    pub demand_charge: &'static str,
    /// (tan φ above which reactive energy is charged, price per kvarh).
    pub reactive: (f64, &'static str),
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
    pub holidays: &'static [Holiday],
    pub contract: ContractSpec,
}

/// A line of a site's meter table: where its values come from, its name, where it is
/// placed and its load.
type MeterRow = (Source, &'static str, Place, Load);

/// A meter of the simulated MQTT fleet (its gateway and slot follow from its line).
const FLEET: Source = Source::Fleet;

/// A unit behind the demo's RS485/IP converter, polled over Modbus TCP.
const fn modbus(unit: u8, model: &'static str) -> Source {
    Source::Modbus { unit, model }
}

/// A meter of the XML push gateway.
const fn xml(serial: &'static str) -> Source {
    Source::Xml { serial }
}

const fn panel(name: &'static str) -> Place {
    Place::Panel(name)
}

const fn circuit(panel: &'static str, circuit: &'static str, usage: &'static str) -> Place {
    Place::Circuit {
        panel,
        circuit,
        usage,
    }
}

/// The slots of the example gateway's meters: the IR meter, then RS485 slots 1 and 3.
const FLEET_SLOTS: [u8; 3] = [0, 1, 3];

/// A site's meter table as its meters, in table order: the fleet's fill the site's gateways
/// from `first` on, three a gateway in [`FLEET_SLOTS`] order.
const fn meters<const N: usize>(first: u32, rows: [MeterRow; N]) -> [MeterSpec; N] {
    let mut out = [MeterSpec {
        source: FLEET,
        gateway: 0,
        slot: 0,
        name: "",
        place: Place::Site,
        load: Load::Sum,
    }; N];
    let (mut i, mut fleet) = (0, 0);
    while i < N {
        let (source, name, place, load) = rows[i];
        let (gateway, slot) = match source {
            Source::Fleet => {
                fleet += 1;
                (
                    first + (fleet - 1) / 3,
                    FLEET_SLOTS[(fleet - 1) as usize % 3],
                )
            }
            Source::Modbus { .. } | Source::Xml { .. } => (0, 0),
        };
        out[i] = MeterSpec {
            source,
            gateway,
            slot,
            name,
            place,
            load,
        };
        i += 1;
    }
    out
}

/// The fleet gateways a site's meters are on: `(first, last)`.
const fn gateways(meters: &[MeterSpec]) -> (u32, u32) {
    let (mut first, mut last, mut i) = (u32::MAX, 0, 0);
    while i < meters.len() {
        if matches!(meters[i].source, Source::Fleet) {
            if meters[i].gateway < first {
                first = meters[i].gateway;
            }
            if meters[i].gateway > last {
                last = meters[i].gateway;
            }
        }
        i += 1;
    }
    (first, last)
}

/// The demo's RS485/IP converter (its gateway serial) and the XML push gateway.
pub const CONVERTER: &str = "LJ-RS485-1";
pub const XML_GATEWAY: &str = "SGX000006";

const WORKING_DAYS: [&str; 5] = ["mon", "tue", "wed", "thu", "fri"];

#[rustfmt::skip]
const LJUBLJANA_METERS: [MeterSpec; 12] = meters(1, [
    (FLEET, "Main supply", Place::Site, Load::Sum),
    (FLEET, "Rooftop PV", circuit("Main panel", "PV inverter", "other"), Load::Pv(9.0)),
    (FLEET, "Main panel incomer", panel("Main panel"), Load::Sum),
    (FLEET, "First floor incomer", panel("First floor"), Load::Sum),
    (FLEET, "Lighting", circuit("Main panel", "Lighting", "lighting"), Load::Lighting(4.0)),
    (FLEET, "Heat pump", circuit("Main panel", "Heat pump", "heating"), Load::Hvac(16.0)),
    (FLEET, "Office sockets", circuit("First floor", "Sockets", "sockets"), Load::Office(11.0)),
    (FLEET, "Server room", circuit("First floor", "Server room", "process"), Load::Constant(2.5)),
    (FLEET, "Ventilation", circuit("First floor", "Ventilation", "ventilation"), Load::Ventilation(6.0)),
    // The annex's Legrand panel, behind the RS485/IP converter: an Iskra meter on the
    // incomer, two Legrand 0 046 77 on circuits.
    (modbus(10, ISKRA_METER), "Annex incomer", panel("Annex panel"), Load::Sum),
    (modbus(5, LEGRAND_046_77), "Annex kitchen", circuit("Annex panel", "Kitchen", "sockets"), Load::Office(3.0)),
    (modbus(6, LEGRAND_046_77), "Annex water heater", circuit("Annex panel", "Water heater", "hot_water"), Load::Office(2.0)),
]);

pub const LJUBLJANA: SiteSpec = SiteSpec {
    name: "Ljubljana office",
    zone: chrono_tz::Europe::Ljubljana,
    gateways: gateways(&LJUBLJANA_METERS),
    panels: &[
        ("Main panel", "Ground floor, plant room and roof"),
        ("First floor", "Offices and server room"),
        (
            "Annex panel",
            "Legrand panel of the annex: meters on RS485, read over Modbus TCP through a converter",
        ),
    ],
    meters: &LJUBLJANA_METERS,
    tan_phi: 0.3,
    seed: 0x4C4A_4E41,
    holidays: &[
        Holiday::Date(1, 1),
        Holiday::Date(1, 2),
        Holiday::Date(2, 8),
        Holiday::EasterMonday,
        Holiday::Date(4, 27),
        Holiday::Date(5, 1),
        Holiday::Date(5, 2),
        Holiday::Date(6, 25),
        Holiday::Date(8, 15),
        Holiday::Date(10, 31),
        Holiday::Date(11, 1),
        Holiday::Date(12, 25),
        Holiday::Date(12, 26),
    ],
    contract: ContractSpec {
        currency: "EUR",
        bands: &[
            ("peak", "0.1680", "0.0600"),
            ("day", "0.1420", "0.0600"),
            ("night", "0.0950", "0.0600"),
        ],
        schedule: &[
            ("winter peak", "peak", &[11, 12, 1, 2], "07:00", "14:00"),
            ("working days", "day", &[], "06:00", "22:00"),
        ],
        default_band: "night",
        demand_charge: "3.75",
        reactive: (0.4, "0.0150"),
    },
};

#[rustfmt::skip]
const NEW_YORK_METERS: [MeterSpec; 7] = meters(4, [
    (FLEET, "Con Ed supply", Place::Site, Load::Sum),
    (FLEET, "Store lighting", circuit("Sales floor", "Lighting", "lighting"), Load::Retail(6.0)),
    (FLEET, "Sales floor incomer", panel("Sales floor"), Load::Sum),
    (FLEET, "Rooftop unit", circuit("Sales floor", "Rooftop HVAC", "cooling"), Load::Hvac(22.0)),
    (FLEET, "Refrigeration", circuit("Back of house", "Cold room", "process"), Load::Constant(7.0)),
    (FLEET, "Sockets and tills", circuit("Back of house", "Sockets and tills", "sockets"), Load::Retail(4.0)),
    // On the older gateway that pushes MiSmart XML.
    (xml("X0000701"), "Bakery oven", circuit("Back of house", "Bakery", "process"), Load::Retail(5.0)),
]);

pub const NEW_YORK: SiteSpec = SiteSpec {
    name: "New York store",
    zone: chrono_tz::America::New_York,
    gateways: gateways(&NEW_YORK_METERS),
    panels: &[
        ("Sales floor", "Shop, lighting and rooftop unit"),
        ("Back of house", "Cold room and tills"),
    ],
    meters: &NEW_YORK_METERS,
    tan_phi: 0.45,
    seed: 0x4E59_4354,
    holidays: &[
        Holiday::Date(1, 1),
        Holiday::Nth(1, Weekday::Mon, 3),
        Holiday::Nth(2, Weekday::Mon, 3),
        Holiday::LastMonday(5),
        Holiday::Date(6, 19),
        Holiday::Date(7, 4),
        Holiday::Nth(9, Weekday::Mon, 1),
        Holiday::Nth(11, Weekday::Thu, 4),
        Holiday::Date(12, 25),
    ],
    contract: ContractSpec {
        currency: "USD",
        bands: &[
            ("on-peak", "0.2480", "0.0700"),
            ("mid-peak", "0.1630", "0.0700"),
            ("off-peak", "0.1090", "0.0700"),
        ],
        schedule: &[
            (
                "summer afternoons",
                "on-peak",
                &[6, 7, 8, 9],
                "12:00",
                "20:00",
            ),
            ("working days", "mid-peak", &[], "08:00", "22:00"),
        ],
        default_band: "off-peak",
        demand_charge: "18.50",
        reactive: (0.4, "0.0120"),
    },
};

pub const SITES: [SiteSpec; 2] = [LJUBLJANA, NEW_YORK];

/// Public holidays of the site's contract, for the years the history covers.
pub fn holidays(site: &SiteSpec, years: std::ops::RangeInclusive<i32>) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = years
        .flat_map(|year| {
            site.holidays.iter().filter_map(move |h| match *h {
                Holiday::Date(month, day) => NaiveDate::from_ymd_opt(year, month, day),
                Holiday::Nth(month, weekday, n) => {
                    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
                }
                Holiday::LastMonday(month) => last_monday(year, month),
                Holiday::EasterMonday => easter(year).and_then(|e| e.succ_opt()),
            })
        })
        .collect();
    days.sort();
    days.dedup();
    days
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

/// The site's supply contract as the contract API takes it, with the public holidays of
/// `year - 2 ..= year + 1` (the history's years and the next).
pub fn contract_json(site: &SiteSpec, year: i32) -> serde_json::Value {
    let c = &site.contract;
    let holidays: Vec<String> = holidays(site, year - 2..=year + 1)
        .iter()
        .map(ToString::to_string)
        .collect();
    let bands: Vec<_> = c
        .bands
        .iter()
        .map(|(name, import, export)| {
            json!({"name": name, "import_price": import, "export_price": export})
        })
        .collect();
    let schedule: Vec<_> = c
        .schedule
        .iter()
        .map(|(name, band, months, from, to)| {
            let mut period = json!({"name": name, "band": band});
            if !months.is_empty() {
                period["months"] = json!(months);
            }
            period["days"] = json!(WORKING_DAYS);
            period["from"] = json!(from);
            period["to"] = json!(to);
            period
        })
        .collect();
    json!({
        "currency": c.currency,
        "bands": bands,
        "schedule": schedule,
        "default_band": c.default_band,
        "holidays": holidays,
        "demand_charge": c.demand_charge,
        "reactive": {"tan_phi_max": c.reactive.0, "price": c.reactive.1}
    })
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
    fn fleet_meters_fill_their_gateways_in_order() {
        let slots: Vec<(u32, u8)> = LJUBLJANA.meters[..9]
            .iter()
            .map(|m| (m.gateway, m.slot))
            .collect();
        assert_eq!(
            slots,
            [
                (1, 0),
                (1, 1),
                (1, 3),
                (2, 0),
                (2, 1),
                (2, 3),
                (3, 0),
                (3, 1),
                (3, 3)
            ]
        );
        assert_eq!(LJUBLJANA.gateways, (1, 3));
        assert_eq!(NEW_YORK.gateways, (4, 5));
        assert_eq!(LJUBLJANA.meters[9].gateway, 0);
    }
}
