//! Supply contracts, time-of-use bands and exact cost.
//!
//! A site's supply contract is stored as JSON by the database layer; this module owns its
//! shape, its validation and the arithmetic. Money is exact: prices are integer
//! micro-currency ([`Price`]), energy is integer milli-units (mWh, mvarh, as stored by ingest),
//! and their product is pico-currency ([`Cost`], `i128`), so any sum of interval costs equals
//! the cost of the summed energy to the last digit. Rounding happens once, when a total is
//! shown ([`Cost::to_decimal_string`]).
//!
//! # The contract JSON
//!
//! This is what an API user writes (three bands, a winter peak, a meter tariff mapping, demand
//! and reactive charges); everything after `holidays` is optional:
//!
//! ```
//! # use headend_energy::tariff::Contract;
//! let contract: Contract = serde_json::from_str(r#"{
//!   "currency": "EUR",
//!   "bands": [
//!     { "name": "peak",  "import_price": "0.1850" },
//!     { "name": "day",   "import_price": 0.142, "export_price": "0.06" },
//!     { "name": "night", "import_price": "0.0950", "export_price": "0.06" }
//!   ],
//!   "schedule": [
//!     { "name": "winter peak", "band": "peak", "months": [11, 12, 1, 2],
//!       "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "14:00" },
//!     { "band": "day", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "06:00", "to": "22:00" }
//!   ],
//!   "default_band": "night",
//!   "holidays": ["2026-01-01", "2026-04-06", "2026-12-25"],
//!   "meter_tariff_bands": { "1": "day", "2": "night" },
//!   "demand_charge": "3.75",
//!   "reactive": { "tan_phi_max": 0.33, "price": "0.015" }
//! }"#).unwrap();
//! assert_eq!(contract.bands[1].import_price.micro(), 142_000);
//! ```
//!
//! - `currency`: ISO 4217 code, three uppercase letters.
//! - Prices (`import_price`, `export_price`, `demand_charge`, `reactive.price`) are decimal
//!   strings or JSON numbers with at most 6 decimals, never negative: currency per kWh, per kW of
//!   monthly peak, per kvarh. Strings are preferred (they are what Headend writes back); numbers
//!   are read through their shortest decimal form, so `0.142` is exactly 0.142.
//! - `schedule`: rules, the **first matching rule wins**; overlapping rules are allowed and are
//!   how exceptions are written (put the specific rule first). Nothing matches: `default_band`.
//! - A rule matches an instant by its local wall-clock time in the site's zone:
//!   - `months` (optional, the season): calendar months 1..=12 of the local date. Months rather
//!     than date-of-year ranges because that is how seasonal tariffs are published, and a month
//!     list cannot be written inside out or depend on leap years.
//!   - `days`: `mon`..`sun` and `holiday`. A date in `holidays` is not its weekday: on a holiday
//!     only rules listing `holiday` match.
//!   - `from`/`to`: local times `"HH:MM"` (or `"HH:MM:SS"`); the window is `[from, to)`. When
//!     `to <= from` the window runs through midnight (`"22:00"`..`"06:00"`), `from == to` is the
//!     whole day, and `"24:00"` is accepted for `to` as midnight. Day and month conditions apply
//!     to the date of the instant itself, so `mon`, `22:00`..`06:00` covers Monday 00:00–06:00
//!     and Monday 22:00–24:00, not Tuesday morning.
//! - `meter_tariff_bands`: when present, the tariff register the meter reported (T1..T6) picks
//!   the band, so the bill follows the meter's own clock and calendar; a reading without a
//!   tariff, or with a number not in the map, falls back to the schedule.
//! - `demand_charge`: price per kW per month of the highest 15-minute mean power of the month.
//! - `reactive`: price per kvarh of the month's reactive energy above `tan_phi_max` × active
//!   energy (`cos φ` 0.95 is `tan φ` 0.329).
//!
//! Deserialising a contract validates it ([`Contract::validate`]), so a `Contract` read from
//! JSON can be used without further checks; errors name the offending field.

use std::collections::BTreeMap;
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::calendar;

/// Decimals a price may have: prices are held in micro-currency.
pub const PRICE_DECIMALS: u32 = 6;

const MICRO: i64 = 1_000_000;

/// Decimals of a [`Cost`]: pico-currency (milli-units × micro-currency).
pub const COST_DECIMALS: u32 = 12;

/// Errors of contract parsing and validation. Messages start with the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the field, e.g. `bands[1].import_price` or `schedule[0].band`.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The text is not JSON of the contract's shape (syntax, missing or unknown field, type).
    #[error("contract JSON: {0}")]
    Json(String),
}

impl TariffError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        TariffError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a price text was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Not a plain decimal number.
    #[error("{0:?} is not a decimal number (expected e.g. \"0.1234\")")]
    Syntax(String),
    /// More than [`PRICE_DECIMALS`] significant decimals.
    #[error("{0:?} has more than 6 decimals")]
    TooManyDecimals(String),
    /// Too large for micro-currency in 64 bits.
    #[error("{0:?} is too large")]
    OutOfRange(String),
}

/// A price in micro-currency per unit: per kWh (energy), per kW per month (demand) or per
/// kvarh (reactive). `Price(123_400)` is 0.1234.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Price(pub i64);

impl Price {
    /// Zero.
    pub const ZERO: Price = Price(0);

    /// The price in micro-currency per unit.
    pub fn micro(self) -> i64 {
        self.0
    }

    /// The cost of `milli_units` (mWh, mW, mvarh) at this price, exactly.
    pub fn cost_of(self, milli_units: i64) -> Cost {
        // mWh × µcur/kWh = 1e-6 kWh × 1e-6 cur/kWh = 1e-12 cur. |i64 × i64| < 2^126: no overflow.
        Cost(i128::from(milli_units) * i128::from(self.0))
    }
}

impl FromStr for Price {
    type Err = PriceError;

    /// Parses `[-]digits[.digits]`. Trailing zeros beyond the sixth decimal are accepted since
    /// they do not change the value.
    fn from_str(s: &str) -> Result<Self, PriceError> {
        let syntax = || PriceError::Syntax(s.to_owned());
        let (negative, unsigned) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, frac),
            None => (unsigned, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || unsigned.ends_with('.') {
            return Err(syntax());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > PRICE_DECIMALS as usize {
            return Err(PriceError::TooManyDecimals(s.to_owned()));
        }
        let out_of_range = || PriceError::OutOfRange(s.to_owned());
        // Accumulated in i128 so that i64::MIN, whose magnitude exceeds i64::MAX, parses.
        let mut micro: i128 = 0;
        let padded = frac.bytes().chain(std::iter::repeat(b'0')).take(6);
        for b in int.bytes().chain(padded) {
            micro = micro
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or_else(out_of_range)?;
        }
        let micro = if negative { -micro } else { micro };
        i64::try_from(micro).map(Price).map_err(|_| out_of_range())
    }
}

impl fmt::Display for Price {
    /// Shortest exact decimal: `0.1234`, `3`, `-0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / MICRO as u64, abs % MICRO as u64);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Price {
    /// As a decimal string: exact, and what a reader can parse without floating point.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Price {
    /// From a decimal string or a JSON number (read through its shortest decimal form).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = PriceText::deserialize(deserializer)?;
        text.0.parse().map_err(serde::de::Error::custom)
    }
}

/// The decimal text of a price as written in JSON, kept as text so a contract can report which
/// field is wrong. A JSON number becomes its shortest round-trip decimal (Rust's `f64`
/// `Display`), so `0.1234` reads as exactly `"0.1234"`; numbers with more digits than an `f64`
/// holds cannot be represented exactly, which is why strings are preferred.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PriceText(String);

impl<'de> Deserialize<'de> for PriceText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PriceText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal price as a string (\"0.1234\") or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PriceText, E> {
                Ok(PriceText(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn parse_price(field: String, text: &PriceText) -> Result<Price, TariffError> {
    text.0
        .parse()
        .map_err(|e: PriceError| TariffError::invalid(field, e.to_string()))
}

/// An exact amount of money in pico-currency (1e-12), the unit of milli-units × micro-prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cost(pub i128);

impl Cost {
    /// Zero.
    pub const ZERO: Cost = Cost(0);

    /// The amount in pico-currency.
    pub fn pico(self) -> i128 {
        self.0
    }

    /// Decimal text with `decimals` decimals, rounded half away from zero (the rule of
    /// invoices): `Cost(1_005_000_000_000)` is `"1.01"` with 2 decimals, and a negative amount
    /// that rounds to zero is `"0.00"`, not `"-0.00"`.
    pub fn to_decimal_string(self, decimals: u32) -> String {
        let (abs, pad) = if decimals >= COST_DECIMALS {
            (self.0.unsigned_abs(), decimals - COST_DECIMALS)
        } else {
            let unit = 10u128.pow(COST_DECIMALS - decimals);
            let abs = self.0.unsigned_abs();
            let rounded = abs / unit + u128::from(abs % unit >= unit / 2);
            (rounded, 0)
        };
        let shown = decimals - pad;
        let scale = 10u128.pow(shown);
        let sign = if self.0 < 0 && abs != 0 { "-" } else { "" };
        let (int, frac) = (abs / scale, abs % scale);
        let zeros = "0".repeat(pad as usize);
        if decimals == 0 {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac:0width$}{zeros}", width = shown as usize)
        }
    }

    /// The amount in currency units as the nearest `f64`, for JSON responses.
    pub fn to_f64(self) -> f64 {
        // Through the exact decimal text: one correctly rounded conversion, not two.
        self.to_decimal_string(COST_DECIMALS)
            .parse()
            .expect("a decimal string parses as f64")
    }
}

impl fmt::Display for Cost {
    /// The exact amount with 12 decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string(COST_DECIMALS))
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        Cost(self.0 + rhs.0)
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, rhs: Cost) {
        self.0 += rhs.0;
    }
}

impl Sub for Cost {
    type Output = Cost;
    fn sub(self, rhs: Cost) -> Cost {
        Cost(self.0 - rhs.0)
    }
}

impl SubAssign for Cost {
    fn sub_assign(&mut self, rhs: Cost) {
        self.0 -= rhs.0;
    }
}

impl Neg for Cost {
    type Output = Cost;
    fn neg(self) -> Cost {
        Cost(-self.0)
    }
}

impl Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Cost> for Cost {
    fn sum<I: Iterator<Item = &'a Cost>>(iter: I) -> Cost {
        iter.copied().sum()
    }
}

/// A time-of-use band and its energy prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Band {
    /// Name referenced by rules, `default_band` and `meter_tariff_bands`.
    pub name: String,
    /// Price per kWh of imported energy.
    pub import_price: Price,
    /// Price per kWh credited for exported energy; `None`: export is not paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_price: Option<Price>,
}

/// What a rule matches besides the weekdays: `holiday` is a day kind of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    /// Monday.
    #[serde(alias = "monday")]
    Mon,
    /// Tuesday.
    #[serde(alias = "tuesday")]
    Tue,
    /// Wednesday.
    #[serde(alias = "wednesday")]
    Wed,
    /// Thursday.
    #[serde(alias = "thursday")]
    Thu,
    /// Friday.
    #[serde(alias = "friday")]
    Fri,
    /// Saturday.
    #[serde(alias = "saturday")]
    Sat,
    /// Sunday.
    #[serde(alias = "sunday")]
    Sun,
    /// A date listed in the contract's `holidays`, whatever its weekday.
    Holiday,
}

impl DayKind {
    /// Monday to Friday.
    pub const WORKDAYS: [DayKind; 5] = [
        DayKind::Mon,
        DayKind::Tue,
        DayKind::Wed,
        DayKind::Thu,
        DayKind::Fri,
    ];

    /// The kind of an ordinary (non-holiday) date.
    pub fn of_weekday(weekday: Weekday) -> DayKind {
        match weekday {
            Weekday::Mon => DayKind::Mon,
            Weekday::Tue => DayKind::Tue,
            Weekday::Wed => DayKind::Wed,
            Weekday::Thu => DayKind::Thu,
            Weekday::Fri => DayKind::Fri,
            Weekday::Sat => DayKind::Sat,
            Weekday::Sun => DayKind::Sun,
        }
    }
}

/// A schedule rule: when it matches, the instant is in `band`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Free text shown in the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Name of the band the rule selects.
    pub band: String,
    /// The season: local calendar months 1..=12; `None` is all year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<Vec<u8>>,
    /// Weekdays and/or `holiday`.
    pub days: Vec<DayKind>,
    /// Local start time, inclusive.
    #[serde(with = "hhmm")]
    pub from: NaiveTime,
    /// Local end time, exclusive; `to <= from` runs through midnight.
    #[serde(with = "hhmm_end")]
    pub to: NaiveTime,
}

impl Rule {
    /// Whether the rule covers local time `time` of a date of `kind` in `month`.
    fn matches(&self, month: u32, kind: DayKind, time: NaiveTime) -> bool {
        let in_season = self
            .months
            .as_ref()
            .is_none_or(|months| months.iter().any(|&m| u32::from(m) == month));
        let in_window = if self.from < self.to {
            self.from <= time && time < self.to
        } else {
            // Through midnight, or the whole day when from == to.
            time >= self.from || time < self.to
        };
        in_season && in_window && self.days.contains(&kind)
    }
}

/// `"HH:MM"` times in JSON, seconds only when not zero.
mod hhmm {
    use chrono::{NaiveTime, Timelike};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        if t.second() == 0 && t.nanosecond() == 0 {
            s.collect_str(&t.format("%H:%M"))
        } else {
            s.collect_str(&t.format("%H:%M:%S"))
        }
    }

    pub(super) fn parse(text: &str) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(text, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
            .ok()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a local time (expected \"HH:MM\", e.g. \"07:00\")"
            ))
        })
    }
}

/// Like [`hhmm`], and `"24:00"` reads as midnight: natural for the end of a window.
mod hhmm_end {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        super::hhmm::serialize(t, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        if text == "24:00" || text == "24:00:00" {
            return Ok(NaiveTime::MIN);
        }
        super::hhmm::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a local time (expected \"HH:MM\", e.g. \"21:00\", or \"24:00\")"
            ))
        })
    }
}

/// The reactive-energy charge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReactiveCharge {
    /// Reactive energy up to `tan_phi_max` × active energy is free (0.4 ≈ cos φ 0.93).
    /// Used to 6 decimals.
    pub tan_phi_max: f64,
    /// Price per kvarh of the excess.
    pub price: Price,
}

impl ReactiveCharge {
    /// `tan_phi_max` in millionths, the precision the charge is computed with.
    fn tan_micro(&self) -> i128 {
        // Validated finite and in range, so the cast cannot saturate.
        (self.tan_phi_max * 1e6).round() as i128
    }
}

/// A site's supply contract. Deserialising validates it; build one by hand only in code that
/// then calls [`Contract::validate`] (the band lookups expect band names to resolve).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawContract")]
pub struct Contract {
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    /// The bands, referenced by index from [`Contract::band_at`].
    pub bands: Vec<Band>,
    /// Rules in priority order: the first match wins.
    pub schedule: Vec<Rule>,
    /// The band when no rule matches.
    pub default_band: String,
    /// Local dates that count as `holiday` instead of their weekday.
    pub holidays: Vec<NaiveDate>,
    /// Meter tariff number (1..=6) → band; when present the meter's tariff register wins over
    /// the schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter_tariff_bands: Option<BTreeMap<u8, String>>,
    /// Price per kW per month of the month's highest 15-minute mean power.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand_charge: Option<Price>,
    /// Charge for reactive energy above a tan φ threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactive: Option<ReactiveCharge>,
}

/// The JSON as written, prices still text, so conversion errors can name their field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    currency: String,
    bands: Vec<RawBand>,
    #[serde(default)]
    schedule: Vec<Rule>,
    default_band: String,
    #[serde(default)]
    holidays: Vec<NaiveDate>,
    #[serde(default)]
    meter_tariff_bands: Option<BTreeMap<u8, String>>,
    #[serde(default)]
    demand_charge: Option<PriceText>,
    #[serde(default)]
    reactive: Option<RawReactive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    name: String,
    import_price: PriceText,
    #[serde(default)]
    export_price: Option<PriceText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReactive {
    tan_phi_max: f64,
    price: PriceText,
}

impl TryFrom<RawContract> for Contract {
    type Error = TariffError;

    fn try_from(raw: RawContract) -> Result<Self, TariffError> {
        let bands = raw
            .bands
            .into_iter()
            .enumerate()
            .map(|(i, band)| {
                Ok(Band {
                    import_price: parse_price(
                        format!("bands[{i}].import_price"),
                        &band.import_price,
                    )?,
                    export_price: band
                        .export_price
                        .map(|p| parse_price(format!("bands[{i}].export_price"), &p))
                        .transpose()?,
                    name: band.name,
                })
            })
            .collect::<Result<_, TariffError>>()?;
        let contract = Contract {
            currency: raw.currency,
            bands,
            schedule: raw.schedule,
            default_band: raw.default_band,
            holidays: raw.holidays,
            meter_tariff_bands: raw.meter_tariff_bands,
            demand_charge: raw
                .demand_charge
                .map(|p| parse_price("demand_charge".to_owned(), &p))
                .transpose()?,
            reactive: raw
                .reactive
                .map(|r| {
                    Ok::<_, TariffError>(ReactiveCharge {
                        tan_phi_max: r.tan_phi_max,
                        price: parse_price("reactive.price".to_owned(), &r.price)?,
                    })
                })
                .transpose()?,
        };
        contract.validate()?;
        Ok(contract)
    }
}

/// Largest accepted `tan_phi_max`: beyond it the charge could never apply (cos φ < 0.01), so a
/// larger value is a typo.
const TAN_PHI_MAX_LIMIT: f64 = 100.0;

impl Contract {
    /// Parses and validates contract JSON, keeping field errors structured
    /// ([`TariffError::Invalid`]) apart from malformed JSON ([`TariffError::Json`]).
    pub fn from_json(text: &str) -> Result<Contract, TariffError> {
        let raw: RawContract =
            serde_json::from_str(text).map_err(|e| TariffError::Json(e.to_string()))?;
        Contract::try_from(raw)
    }

    /// Like [`Contract::from_json`], for a JSON value already parsed (e.g. a `jsonb` column).
    pub fn from_value(value: serde_json::Value) -> Result<Contract, TariffError> {
        let raw: RawContract =
            serde_json::from_value(value).map_err(|e| TariffError::Json(e.to_string()))?;
        Contract::try_from(raw)
    }

    /// Checks the contract; the error names the first offending field.
    ///
    /// Overlapping rules are not an error: the first match wins, which is how exceptions
    /// (a winter peak inside the day band) are expressed.
    pub fn validate(&self) -> Result<(), TariffError> {
        let c = &self.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(TariffError::invalid(
                "currency",
                format!("{c:?} is not an ISO 4217 code (three uppercase letters, e.g. \"EUR\")"),
            ));
        }
        if self.bands.is_empty() {
            return Err(TariffError::invalid(
                "bands",
                "at least one band is required",
            ));
        }
        for (i, band) in self.bands.iter().enumerate() {
            if band.name.trim().is_empty() {
                return Err(TariffError::invalid(
                    format!("bands[{i}].name"),
                    "must not be empty",
                ));
            }
            if let Some(first) = self.bands[..i].iter().position(|b| b.name == band.name) {
                return Err(TariffError::invalid(
                    format!("bands[{i}].name"),
                    format!("duplicate band {:?} (also bands[{first}])", band.name),
                ));
            }
            non_negative(format!("bands[{i}].import_price"), band.import_price)?;
            if let Some(price) = band.export_price {
                non_negative(format!("bands[{i}].export_price"), price)?;
            }
        }
        for (i, rule) in self.schedule.iter().enumerate() {
            self.known_band(format!("schedule[{i}].band"), &rule.band)?;
            if let Some(months) = &rule.months {
                if months.is_empty() {
                    return Err(TariffError::invalid(
                        format!("schedule[{i}].months"),
                        "must list at least one month (omit it for all year)",
                    ));
                }
                if let Some(m) = months.iter().find(|m| !(1..=12).contains(*m)) {
                    return Err(TariffError::invalid(
                        format!("schedule[{i}].months"),
                        format!("{m} is not a month (1..=12)"),
                    ));
                }
            }
            if rule.days.is_empty() {
                return Err(TariffError::invalid(
                    format!("schedule[{i}].days"),
                    "must list at least one of mon, tue, wed, thu, fri, sat, sun, holiday",
                ));
            }
        }
        self.known_band("default_band".to_owned(), &self.default_band)?;
        if let Some(map) = &self.meter_tariff_bands {
            for (number, band) in map {
                if !(1..=6).contains(number) {
                    return Err(TariffError::invalid(
                        "meter_tariff_bands",
                        format!(
                            "tariff number {number} is out of range (1..=6, the meter's T1..T6)"
                        ),
                    ));
                }
                self.known_band(format!("meter_tariff_bands.{number}"), band)?;
            }
        }
        if let Some(price) = self.demand_charge {
            non_negative("demand_charge".to_owned(), price)?;
        }
        if let Some(reactive) = &self.reactive {
            let tan = reactive.tan_phi_max;
            if !(tan.is_finite() && (0.0..=TAN_PHI_MAX_LIMIT).contains(&tan)) {
                return Err(TariffError::invalid(
                    "reactive.tan_phi_max",
                    format!("{tan} is out of range (0 to {TAN_PHI_MAX_LIMIT}, e.g. 0.4)"),
                ));
            }
            non_negative("reactive.price".to_owned(), reactive.price)?;
        }
        Ok(())
    }

    fn known_band(&self, field: String, name: &str) -> Result<(), TariffError> {
        if self.band_index(name).is_some() {
            return Ok(());
        }
        let names: Vec<&str> = self.bands.iter().map(|b| b.name.as_str()).collect();
        Err(TariffError::invalid(
            field,
            format!("unknown band {name:?} (bands are: {})", names.join(", ")),
        ))
    }

    /// The index of the band called `name`.
    pub fn band_index(&self, name: &str) -> Option<usize> {
        self.bands.iter().position(|b| b.name == name)
    }

    /// The band of the quarter-hour starting at `start_utc` for a site in `tz`, as an index
    /// into [`Contract::bands`]: the meter's tariff when the contract maps it, else the
    /// schedule at the local wall-clock time of the interval start.
    ///
    /// On a contract that failed validation, rules naming unknown bands are skipped and an
    /// unknown default band gives 0, so this never panics; deserialised contracts are valid.
    pub fn band_at(&self, start_utc: DateTime<Utc>, tz: Tz, meter_tariff: Option<u8>) -> usize {
        let by_meter = self
            .meter_tariff_bands
            .as_ref()
            .zip(meter_tariff)
            .and_then(|(map, number)| map.get(&number))
            .and_then(|name| self.band_index(name));
        by_meter.unwrap_or_else(|| self.band_at_local(calendar::local_datetime(start_utc, tz)))
    }

    /// The scheduled band at a local wall-clock time (holidays, season, weekday, window).
    pub fn band_at_local(&self, local: NaiveDateTime) -> usize {
        let date = local.date();
        let kind = if self.holidays.contains(&date) {
            DayKind::Holiday
        } else {
            DayKind::of_weekday(date.weekday())
        };
        self.schedule
            .iter()
            .filter(|rule| rule.matches(date.month(), kind, local.time()))
            .find_map(|rule| self.band_index(&rule.band))
            .or_else(|| self.band_index(&self.default_band))
            .unwrap_or(0)
    }

    /// The cost of `import_mwh` milliwatt-hours imported in band `band`, exactly. Linear, so
    /// corrections (negative amounts) and sums compose. Panics if `band` is not a band index.
    pub fn energy_cost(&self, band: usize, import_mwh: i64) -> Cost {
        self.bands[band].import_price.cost_of(import_mwh)
    }

    /// The credit for `export_mwh` exported in band `band`, as a positive amount to subtract
    /// from the bill; zero when the band does not pay for export.
    pub fn export_credit(&self, band: usize, export_mwh: i64) -> Cost {
        self.bands[band]
            .export_price
            .map_or(Cost::ZERO, |price| price.cost_of(export_mwh))
    }

    /// The month's demand charge for a peak 15-minute mean power of `peak_mw` milliwatts
    /// (see [`mean_power_mw`]); zero without a demand charge or for a peak of zero or less.
    pub fn demand_cost(&self, peak_mw: i64) -> Cost {
        self.demand_charge
            .map_or(Cost::ZERO, |price| price.cost_of(peak_mw.max(0)))
    }

    /// The month's reactive-energy charge: `reactive_mvarh` (the billed reactive energy,
    /// usually inductive import) above `tan_phi_max` × `active_mwh`, at the reactive price.
    /// Zero without a reactive charge or without excess.
    ///
    /// The threshold is used to 6 decimals and the result is rounded to the nearest
    /// pico-currency (half away from zero): the only rounding in this module, once a month.
    pub fn reactive_cost(&self, active_mwh: i64, reactive_mvarh: i64) -> Cost {
        let Some(reactive) = &self.reactive else {
            return Cost::ZERO;
        };
        // In millionths of a mvarh, where the threshold is exact.
        let allowed = i128::from(active_mwh.max(0)) * reactive.tan_micro();
        let excess = i128::from(reactive_mvarh) * i128::from(MICRO) - allowed;
        if excess <= 0 {
            return Cost::ZERO;
        }
        let scaled = excess * i128::from(reactive.price.micro());
        let micro = i128::from(MICRO);
        Cost(scaled / micro + i128::from(scaled % micro >= micro / 2))
    }

    /// A two-band EUR contract for docs and demos: `day` 06:00–22:00 Monday to Friday, `night`
    /// otherwise, including weekends and the Slovenian public holidays of 2026; export paid;
    /// a demand charge and a reactive charge above tan φ 0.4.
    pub fn example_eur() -> Contract {
        let price = |text: &str| text.parse::<Price>().expect("valid example price");
        let holidays = [
            (1, 1),
            (1, 2),
            (2, 8),
            (4, 5),
            (4, 6),
            (4, 27),
            (5, 1),
            (5, 2),
            (5, 24),
            (6, 25),
            (8, 15),
            (10, 31),
            (11, 1),
            (12, 25),
            (12, 26),
        ]
        .into_iter()
        .map(|(m, d)| NaiveDate::from_ymd_opt(2026, m, d).expect("valid example date"))
        .collect();
        Contract {
            currency: "EUR".to_owned(),
            bands: vec![
                Band {
                    name: "day".to_owned(),
                    import_price: price("0.1420"),
                    export_price: Some(price("0.0600")),
                },
                Band {
                    name: "night".to_owned(),
                    import_price: price("0.0950"),
                    export_price: Some(price("0.0600")),
                },
            ],
            schedule: vec![Rule {
                name: Some("workday".to_owned()),
                band: "day".to_owned(),
                months: None,
                days: DayKind::WORKDAYS.to_vec(),
                from: NaiveTime::from_hms_opt(6, 0, 0).expect("valid time"),
                to: NaiveTime::from_hms_opt(22, 0, 0).expect("valid time"),
            }],
            default_band: "night".to_owned(),
            holidays,
            meter_tariff_bands: None,
            demand_charge: Some(price("3.75")),
            reactive: Some(ReactiveCharge {
                tan_phi_max: 0.4,
                price: price("0.0150"),
            }),
        }
    }
}

fn non_negative(field: String, price: Price) -> Result<(), TariffError> {
    if price.0 < 0 {
        Err(TariffError::invalid(
            field,
            format!("must not be negative (got {price})"),
        ))
    } else {
        Ok(())
    }
}

/// Mean power in milliwatts over a quarter-hour in which `quarter_mwh` milliwatt-hours flowed:
/// energy / 0.25 h, exact in integers. The monthly peak for [`Contract::demand_cost`] is the
/// largest of these over the month's quarter-hours.
pub fn mean_power_mw(quarter_mwh: i64) -> i64 {
    quarter_mwh.saturating_mul(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Ljubljana;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn time(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn band(name: &str, price: &str) -> Band {
        Band {
            name: name.to_owned(),
            import_price: price.parse().unwrap(),
            export_price: None,
        }
    }

    fn rule(band: &str, days: &[DayKind], from: NaiveTime, to: NaiveTime) -> Rule {
        Rule {
            name: None,
            band: band.to_owned(),
            months: None,
            days: days.to_vec(),
            from,
            to,
        }
    }

    const ALL_DAYS: [DayKind; 7] = [
        DayKind::Mon,
        DayKind::Tue,
        DayKind::Wed,
        DayKind::Thu,
        DayKind::Fri,
        DayKind::Sat,
        DayKind::Sun,
    ];

    /// A contract with the given bands and rules, default band `bands[0]`.
    fn contract(bands: Vec<Band>, schedule: Vec<Rule>) -> Contract {
        let contract = Contract {
            currency: "EUR".to_owned(),
            default_band: bands[0].name.clone(),
            bands,
            schedule,
            holidays: Vec::new(),
            meter_tariff_bands: None,
            demand_charge: None,
            reactive: None,
        };
        contract.validate().unwrap();
        contract
    }

    fn band_name(c: &Contract, ts: &str) -> String {
        c.bands[c.band_at(utc(ts), Ljubljana, None)].name.clone()
    }

    #[test]
    fn example_day_band_edges_before_and_after_spring_forward() {
        let c = Contract::example_eur();
        // Friday 2026-03-27, CET (+01:00): day starts 06:00 local = 05:00Z, ends 22:00 = 21:00Z.
        assert_eq!(band_name(&c, "2026-03-27T04:45:00Z"), "night");
        assert_eq!(band_name(&c, "2026-03-27T05:00:00Z"), "day");
        assert_eq!(band_name(&c, "2026-03-27T20:45:00Z"), "day");
        assert_eq!(band_name(&c, "2026-03-27T21:00:00Z"), "night");
        // Monday 2026-03-30, CEST (+02:00): the same local edges are an hour earlier in UTC.
        assert_eq!(band_name(&c, "2026-03-30T03:45:00Z"), "night");
        assert_eq!(band_name(&c, "2026-03-30T04:00:00Z"), "day");
        assert_eq!(band_name(&c, "2026-03-30T19:45:00Z"), "day");
        assert_eq!(band_name(&c, "2026-03-30T20:00:00Z"), "night");
        // Sunday: weekend is night all day.
        assert_eq!(band_name(&c, "2026-03-29T10:00:00Z"), "night");
    }

    #[test]
    fn example_day_band_edges_after_fall_back() {
        let c = Contract::example_eur();
        // Friday 2026-10-23 in CEST, Monday 2026-10-26 in CET.
        assert_eq!(band_name(&c, "2026-10-23T03:45:00Z"), "night");
        assert_eq!(band_name(&c, "2026-10-23T04:00:00Z"), "day");
        assert_eq!(band_name(&c, "2026-10-26T04:45:00Z"), "night");
        assert_eq!(band_name(&c, "2026-10-26T05:00:00Z"), "day");
        assert_eq!(band_name(&c, "2026-10-26T20:45:00Z"), "day");
        assert_eq!(band_name(&c, "2026-10-26T21:00:00Z"), "night");
    }

    /// Quarter-hours of the local day `date` in band `name` for a Ljubljana site.
    fn quarters_in_band(c: &Contract, date: NaiveDate, name: &str) -> usize {
        let (start, end) = calendar::period_bounds(Ljubljana, date, calendar::Period::Day);
        calendar::quarter_starts(start, end)
            .filter(|&q| c.bands[c.band_at(q, Ljubljana, None)].name == name)
            .count()
    }

    #[test]
    fn band_in_the_skipped_and_repeated_hour() {
        // Sunday 02:00–03:00 local is "peak": it does not exist on the spring-forward day and
        // happens twice on the fall-back day; both passes are billed by their wall-clock time.
        let c = contract(
            vec![band("base", "0.10"), band("peak", "0.30")],
            vec![rule("peak", &[DayKind::Sun], time(2, 0), time(3, 0))],
        );
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let fall = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        let ordinary = NaiveDate::from_ymd_opt(2026, 10, 18).unwrap();
        assert_eq!(quarters_in_band(&c, spring, "peak"), 0);
        assert_eq!(quarters_in_band(&c, fall, "peak"), 8);
        assert_eq!(quarters_in_band(&c, ordinary, "peak"), 4);
        assert_eq!(band_name(&c, "2026-03-29T00:45:00Z"), "base"); // 01:45 CET
        assert_eq!(band_name(&c, "2026-03-29T01:00:00Z"), "base"); // 03:00 CEST
        assert_eq!(band_name(&c, "2026-10-25T00:00:00Z"), "peak"); // 02:00 CEST
        assert_eq!(band_name(&c, "2026-10-25T01:45:00Z"), "peak"); // 02:45 CET
        assert_eq!(band_name(&c, "2026-10-25T02:00:00Z"), "base"); // 03:00 CET
    }

    #[test]
    fn night_band_through_midnight() {
        let c = contract(
            vec![band("day", "0.14"), band("night", "0.09")],
            vec![rule("night", &ALL_DAYS, time(22, 0), time(6, 0))],
        );
        let at = |h, m| {
            let local = NaiveDate::from_ymd_opt(2026, 5, 12)
                .unwrap()
                .and_time(time(h, m));
            c.bands[c.band_at_local(local)].name.as_str()
        };
        assert_eq!(at(21, 45), "day");
        assert_eq!(at(22, 0), "night");
        assert_eq!(at(23, 45), "night");
        assert_eq!(at(0, 0), "night");
        assert_eq!(at(5, 45), "night");
        assert_eq!(at(6, 0), "day");
        // The same through UTC on a CEST date: 22:00 local is 20:00Z.
        assert_eq!(band_name(&c, "2026-05-12T19:45:00Z"), "day");
        assert_eq!(band_name(&c, "2026-05-12T20:00:00Z"), "night");
        // 96 quarters a day, 32 of them at night.
        let day = NaiveDate::from_ymd_opt(2026, 5, 12).unwrap();
        assert_eq!(quarters_in_band(&c, day, "night"), 32);
    }

    #[test]
    fn whole_day_rule_and_end_of_day() {
        let whole = rule("b", &ALL_DAYS, time(0, 0), time(0, 0));
        let c = contract(vec![band("a", "0.1"), band("b", "0.2")], vec![whole]);
        assert_eq!(band_name(&c, "2026-05-12T12:00:00Z"), "b");
        assert_eq!(band_name(&c, "2026-05-12T22:00:00Z"), "b");
        let json = r#"{"band": "b", "days": ["sat"], "from": "21:00", "to": "24:00"}"#;
        let r: Rule = serde_json::from_str(json).unwrap();
        assert_eq!((r.from, r.to), (time(21, 0), time(0, 0)));
        assert!(r.matches(5, DayKind::Sat, time(23, 45)));
        assert!(!r.matches(5, DayKind::Sat, time(20, 45)));
        assert!(!r.matches(5, DayKind::Sun, time(0, 0)));
    }

    #[test]
    fn holiday_is_not_its_weekday() {
        let c = Contract::example_eur();
        // Friday 2026-12-25 at 10:00 local: a holiday, so the workday rule does not match.
        assert_eq!(band_name(&c, "2026-12-25T09:00:00Z"), "night");
        assert_eq!(band_name(&c, "2026-12-24T09:00:00Z"), "day");
        // A holiday rule matches only holidays.
        let mut c = contract(
            vec![band("normal", "0.1"), band("festive", "0.05")],
            vec![rule("festive", &[DayKind::Holiday], time(0, 0), time(0, 0))],
        );
        c.holidays = vec![NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()];
        assert_eq!(band_name(&c, "2026-12-25T09:00:00Z"), "festive");
        // The holiday is the local date: 23:00Z on the 24th is already the 25th in Ljubljana.
        assert_eq!(band_name(&c, "2026-12-24T23:00:00Z"), "festive");
        assert_eq!(band_name(&c, "2026-12-24T22:45:00Z"), "normal");
        assert_eq!(band_name(&c, "2026-12-26T09:00:00Z"), "normal");
    }

    #[test]
    fn season_switch_at_local_month_start() {
        let mut summer = rule("summer", &ALL_DAYS, time(0, 0), time(0, 0));
        summer.months = Some(vec![6, 7, 8]);
        let mut winter_peak = rule("peak", &DayKind::WORKDAYS, time(7, 0), time(14, 0));
        winter_peak.months = Some(vec![11, 12, 1, 2]);
        let c = contract(
            vec![
                band("base", "0.1"),
                band("summer", "0.08"),
                band("peak", "0.2"),
            ],
            vec![summer, winter_peak],
        );
        // June starts at 22:00Z on May 31 in Ljubljana (CEST).
        assert_eq!(band_name(&c, "2026-05-31T21:45:00Z"), "base");
        assert_eq!(band_name(&c, "2026-05-31T22:00:00Z"), "summer");
        assert_eq!(band_name(&c, "2026-08-31T21:45:00Z"), "summer");
        assert_eq!(band_name(&c, "2026-08-31T22:00:00Z"), "base");
        // Friday Feb 27 08:00 CET is winter peak; Monday Mar 2 08:00 is not.
        assert_eq!(band_name(&c, "2026-02-27T07:00:00Z"), "peak");
        assert_eq!(band_name(&c, "2026-03-02T07:00:00Z"), "base");
    }

    #[test]
    fn first_matching_rule_wins() {
        let c = contract(
            vec![
                band("night", "0.09"),
                band("day", "0.14"),
                band("peak", "0.2"),
            ],
            vec![
                rule("peak", &DayKind::WORKDAYS, time(7, 0), time(14, 0)),
                rule("day", &DayKind::WORKDAYS, time(6, 0), time(22, 0)),
            ],
        );
        assert_eq!(band_name(&c, "2026-05-12T04:30:00Z"), "day"); // 06:30
        assert_eq!(band_name(&c, "2026-05-12T05:00:00Z"), "peak"); // 07:00
        assert_eq!(band_name(&c, "2026-05-12T12:00:00Z"), "day"); // 14:00
    }

    #[test]
    fn meter_tariff_mapping() {
        let mut c = Contract::example_eur();
        let weekday_noon = utc("2026-05-12T10:00:00Z");
        let weekday_night = utc("2026-05-12T23:00:00Z");
        // Without a mapping the meter's tariff is ignored.
        assert_eq!(c.band_at(weekday_noon, Ljubljana, Some(2)), 0);
        c.meter_tariff_bands = Some(BTreeMap::from([(1, "day".into()), (2, "night".into())]));
        c.validate().unwrap();
        assert_eq!(c.band_at(weekday_noon, Ljubljana, Some(2)), 1);
        assert_eq!(c.band_at(weekday_night, Ljubljana, Some(1)), 0);
        // No tariff reported, or an unmapped one: the schedule decides.
        assert_eq!(c.band_at(weekday_noon, Ljubljana, None), 0);
        assert_eq!(c.band_at(weekday_night, Ljubljana, None), 1);
        assert_eq!(c.band_at(weekday_noon, Ljubljana, Some(5)), 0);
    }

    #[test]
    fn cost_sums_are_exact() {
        let c = Contract::example_eur();
        let price = c.bands[0].import_price;
        // A year of quarter-hours with uneven energy: the sum of the interval costs is the cost
        // of the summed energy to the pico.
        let energy: Vec<i64> = (0..35_040i64).map(|i| (i * 7_919) % 250_001).collect();
        let per_interval: Cost = energy.iter().map(|&e| c.energy_cost(0, e)).sum();
        let total: i64 = energy.iter().sum();
        assert_eq!(per_interval, price.cost_of(total));
        assert_eq!(per_interval.pico(), i128::from(total) * 142_000);
        // 35040 quarters of 1 kWh at 0.1420 is exactly 4975.68.
        let flat: Cost = (0..35_040).map(|_| c.energy_cost(0, 1_000_000)).sum();
        assert_eq!(flat.to_decimal_string(2), "4975.68");
        assert_eq!(flat.to_decimal_string(12), "4975.680000000000");
        // A price with six decimals and odd energy stays exact too.
        let odd: Price = "0.123457".parse().unwrap();
        let cost: Cost = (0..35_040).map(|_| odd.cost_of(333)).sum();
        assert_eq!(cost.pico(), 35_040 * 333 * 123_457);
        assert_eq!(cost.to_decimal_string(12), "1.440535782240");
    }

    #[test]
    fn export_demand_and_reactive_costs() {
        let c = Contract::example_eur();
        assert_eq!(c.export_credit(1, 2_000_000).to_decimal_string(2), "0.12");
        let no_export = contract(vec![band("a", "0.1")], vec![]);
        assert_eq!(no_export.export_credit(0, 2_000_000), Cost::ZERO);
        assert_eq!(no_export.demand_cost(1_000_000), Cost::ZERO);
        assert_eq!(no_export.reactive_cost(1_000, 1_000), Cost::ZERO);
        // Peak quarter of 30 kWh = 120 kW mean; at 3.75/kW that is 450.
        let peak = mean_power_mw(30_000_000);
        assert_eq!(peak, 120_000_000);
        assert_eq!(c.demand_cost(peak).to_decimal_string(2), "450.00");
        assert_eq!(c.demand_cost(-5), Cost::ZERO);
        // 10 MWh active allows 4000 kvarh at tan φ 0.4; 5000 kvarh leaves 1000 at 0.015 = 15.
        let cost = c.reactive_cost(10_000_000_000, 5_000_000_000);
        assert_eq!(cost.to_decimal_string(12), "15.000000000000");
        assert_eq!(c.reactive_cost(10_000_000_000, 4_000_000_000), Cost::ZERO);
        assert_eq!(c.reactive_cost(-1_000, 0), Cost::ZERO);
        // Rounded to the pico: 1 mvarh of excess at 0.015/kvarh is 1.5e-8.
        assert_eq!(c.reactive_cost(0, 1).pico(), 15_000);
    }

    #[test]
    fn decimal_string_rounds_half_away_from_zero() {
        let pico = 1_000_000_000_000i128;
        assert_eq!(Cost(1_005 * pico / 1000).to_decimal_string(2), "1.01");
        assert_eq!(Cost(1_005 * pico / 1000 - 1).to_decimal_string(2), "1.00");
        assert_eq!(Cost(-1_005 * pico / 1000).to_decimal_string(2), "-1.01");
        assert_eq!(Cost(-4 * pico / 1000).to_decimal_string(2), "0.00");
        assert_eq!(Cost(-5 * pico / 1000).to_decimal_string(2), "-0.01");
        assert_eq!(Cost(pico / 2).to_decimal_string(0), "1");
        assert_eq!(Cost(pico / 2 - 1).to_decimal_string(0), "0");
        assert_eq!(Cost(123).to_decimal_string(12), "0.000000000123");
        assert_eq!(Cost(123).to_decimal_string(14), "0.00000000012300");
        assert_eq!(Cost(-123).to_string(), "-0.000000000123");
        assert_eq!(Cost(12_345_678 * pico).to_decimal_string(3), "12345678.000");
        assert_eq!(Cost(i128::MAX).to_decimal_string(0).len(), 27);
        assert_eq!(Cost(1_234_500_000_000).to_f64(), 1.2345);
        assert_eq!(Cost(-pico / 4).to_f64(), -0.25);
    }

    #[test]
    fn price_parsing() {
        let p = |s: &str| s.parse::<Price>();
        assert_eq!(p("0.1234"), Ok(Price(123_400)));
        assert_eq!(p("12"), Ok(Price(12_000_000)));
        assert_eq!(p("0.000001"), Ok(Price(1)));
        assert_eq!(p("0.12340000"), Ok(Price(123_400)));
        assert_eq!(p("-0.05"), Ok(Price(-50_000)));
        for bad in ["", ".5", "1.", "1e-3", " 1", "0x10", "1.2.3", "--1", "+1"] {
            assert_eq!(p(bad), Err(PriceError::Syntax(bad.to_owned())), "{bad:?}");
        }
        assert_eq!(
            p("0.1234567").unwrap_err().to_string(),
            "\"0.1234567\" has more than 6 decimals"
        );
        assert!(matches!(
            p("99999999999999"),
            Err(PriceError::OutOfRange(_))
        ));
        assert_eq!(Price(123_400).to_string(), "0.1234");
        assert_eq!(Price(3_000_000).to_string(), "3");
        assert_eq!(Price(-50_000).to_string(), "-0.05");
        // JSON: strings and numbers.
        assert_eq!(
            serde_json::from_str::<Price>("0.1234").unwrap(),
            Price(123_400)
        );
        assert_eq!(
            serde_json::from_str::<Price>("\"0.1234\"").unwrap(),
            Price(123_400)
        );
        assert_eq!(
            serde_json::from_str::<Price>("2").unwrap(),
            Price(2_000_000)
        );
        assert!(serde_json::from_str::<Price>("0.0000001").is_err());
        assert_eq!(
            serde_json::to_string(&Price(123_400)).unwrap(),
            "\"0.1234\""
        );
    }

    fn error_of(json: serde_json::Value) -> String {
        Contract::from_value(json).unwrap_err().to_string()
    }

    /// The example as JSON, with the field at `pointer` set (added when absent).
    fn example_with(pointer: &str, value: serde_json::Value) -> serde_json::Value {
        let mut json = serde_json::to_value(Contract::example_eur()).unwrap();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match json.pointer_mut(parent).unwrap() {
            serde_json::Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            serde_json::Value::Object(fields) => {
                fields.insert(key.to_owned(), value);
            }
            other => panic!("{parent} is {other}"),
        }
        json
    }

    #[test]
    fn validation_messages_name_the_field() {
        use serde_json::json;
        let cases = [
            (
                example_with("/currency", json!("eur")),
                "currency: \"eur\" is not an ISO 4217 code (three uppercase letters, e.g. \"EUR\")",
            ),
            (
                example_with("/bands", json!([])),
                "bands: at least one band is required",
            ),
            (
                example_with("/bands/1/name", json!("day")),
                "bands[1].name: duplicate band \"day\" (also bands[0])",
            ),
            (
                example_with("/bands/0/name", json!(" ")),
                "bands[0].name: must not be empty",
            ),
            (
                example_with("/bands/1/import_price", json!("0.1234567")),
                "bands[1].import_price: \"0.1234567\" has more than 6 decimals",
            ),
            (
                example_with("/bands/0/export_price", json!(-0.05)),
                "bands[0].export_price: must not be negative (got -0.05)",
            ),
            (
                example_with("/bands/0/import_price", json!("cheap")),
                "bands[0].import_price: \"cheap\" is not a decimal number (expected e.g. \"0.1234\")",
            ),
            (
                example_with("/schedule/0/band", json!("peak")),
                "schedule[0].band: unknown band \"peak\" (bands are: day, night)",
            ),
            (
                example_with("/default_band", json!("offpeak")),
                "default_band: unknown band \"offpeak\" (bands are: day, night)",
            ),
            (
                example_with("/schedule/0/months", json!([6, 13])),
                "schedule[0].months: 13 is not a month (1..=12)",
            ),
            (
                example_with("/schedule/0/months", json!([])),
                "schedule[0].months: must list at least one month (omit it for all year)",
            ),
            (
                example_with("/schedule/0/days", json!([])),
                "schedule[0].days: must list at least one of mon, tue, wed, thu, fri, sat, sun, holiday",
            ),
            (
                example_with("/demand_charge", json!("-3")),
                "demand_charge: must not be negative (got -3)",
            ),
            (
                example_with("/reactive/tan_phi_max", json!(-0.1)),
                "reactive.tan_phi_max: -0.1 is out of range (0 to 100, e.g. 0.4)",
            ),
            (
                example_with("/reactive/price", json!("0.00000001")),
                "reactive.price: \"0.00000001\" has more than 6 decimals",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(error_of(json), expected);
        }
        let mut json = serde_json::to_value(Contract::example_eur()).unwrap();
        json["meter_tariff_bands"] = json!({"7": "day"});
        assert_eq!(
            error_of(json.clone()),
            "meter_tariff_bands: tariff number 7 is out of range (1..=6, the meter's T1..T6)"
        );
        json["meter_tariff_bands"] = json!({"1": "day", "2": "peak"});
        assert_eq!(
            error_of(json),
            "meter_tariff_bands.2: unknown band \"peak\" (bands are: day, night)"
        );
    }

    #[test]
    fn malformed_json_is_reported_as_json() {
        let err = Contract::from_json(r#"{"currency": "EUR"}"#).unwrap_err();
        assert!(matches!(err, TariffError::Json(_)), "{err}");
        assert!(err.to_string().contains("missing field `bands`"), "{err}");
        let mut json = serde_json::to_value(Contract::example_eur()).unwrap();
        json["schedule"][0]["month"] = serde_json::json!([1]);
        let err = Contract::from_value(json).unwrap_err().to_string();
        assert!(err.contains("unknown field `month`"), "{err}");
        let json = example_with("/schedule/0/from", serde_json::json!("7am"));
        let err = Contract::from_value(json).unwrap_err().to_string();
        assert!(err.contains("\"7am\" is not a local time"), "{err}");
        // Plain serde also validates, with the same message.
        let json = example_with("/default_band", serde_json::json!("x"));
        let err = serde_json::from_value::<Contract>(json)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("default_band: unknown band \"x\""), "{err}");
    }

    #[test]
    fn example_serde_round_trip() {
        let example = Contract::example_eur();
        example.validate().unwrap();
        let text = serde_json::to_string_pretty(&example).unwrap();
        assert!(text.contains("\"import_price\": \"0.142\""), "{text}");
        assert!(text.contains("\"from\": \"06:00\""), "{text}");
        assert!(text.contains("\"mon\""), "{text}");
        assert!(!text.contains("meter_tariff_bands"), "{text}");
        assert_eq!(serde_json::from_str::<Contract>(&text).unwrap(), example);
        assert_eq!(Contract::from_json(&text).unwrap(), example);
    }

    /// The sample of the module docs, as an API user writes it.
    const API_SAMPLE: &str = r#"{
      "currency": "EUR",
      "bands": [
        { "name": "peak",  "import_price": "0.1850" },
        { "name": "day",   "import_price": 0.142, "export_price": "0.06" },
        { "name": "night", "import_price": "0.0950", "export_price": "0.06" }
      ],
      "schedule": [
        { "name": "winter peak", "band": "peak", "months": [11, 12, 1, 2],
          "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "14:00" },
        { "band": "day", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "06:00", "to": "22:00" }
      ],
      "default_band": "night",
      "holidays": ["2026-01-01", "2026-04-06", "2026-12-25"],
      "meter_tariff_bands": { "1": "day", "2": "night" },
      "demand_charge": "3.75",
      "reactive": { "tan_phi_max": 0.33, "price": "0.015" }
    }"#;

    #[test]
    fn api_sample_parses_and_round_trips() {
        let c = Contract::from_json(API_SAMPLE).unwrap();
        assert_eq!(c.bands.len(), 3);
        assert_eq!(c.bands[0].import_price, Price(185_000));
        assert_eq!(c.bands[1].import_price, Price(142_000));
        assert_eq!(c.bands[2].export_price, Some(Price(60_000)));
        assert_eq!(c.schedule[0].months, Some(vec![11, 12, 1, 2]));
        assert_eq!(c.schedule[1].name, None);
        assert_eq!(c.demand_charge, Some(Price(3_750_000)));
        assert_eq!(c.reactive.as_ref().unwrap().tan_phi_max, 0.33);
        assert_eq!(
            c.meter_tariff_bands
                .as_ref()
                .unwrap()
                .get(&2)
                .map(String::as_str),
            Some("night")
        );
        // Winter workday 08:00 CET: peak; Easter Monday: night; the meter's T1: day.
        assert_eq!(c.band_at(utc("2026-01-13T07:00:00Z"), Ljubljana, None), 0);
        assert_eq!(c.band_at(utc("2026-04-06T08:00:00Z"), Ljubljana, None), 2);
        assert_eq!(
            c.band_at(utc("2026-01-13T07:00:00Z"), Ljubljana, Some(1)),
            1
        );
        let again = serde_json::to_string(&c).unwrap();
        assert_eq!(Contract::from_json(&again).unwrap(), c);
    }

    proptest! {
        #[test]
        fn price_text_round_trips(micro in any::<i64>()) {
            let price = Price(micro);
            prop_assert_eq!(price.to_string().parse::<Price>(), Ok(price));
        }

        #[test]
        fn band_is_always_an_index(
            secs in 0i64..4_102_444_800,
            tariff in proptest::option::of(0u8..9),
        ) {
            let ts = DateTime::from_timestamp(secs, 0).unwrap();
            let mut c = Contract::example_eur();
            c.meter_tariff_bands = Some(BTreeMap::from([(2, "day".to_owned())]));
            prop_assert!(c.band_at(ts, Ljubljana, tariff) < c.bands.len());
        }

        #[test]
        fn rounding_is_within_half_a_unit(pico in any::<i64>(), decimals in 0u32..12) {
            let cost = Cost(i128::from(pico) * 1_000);
            let text = cost.to_decimal_string(decimals);
            let shown = parse_cost(&text);
            let unit = 10i128.pow(COST_DECIMALS - decimals);
            prop_assert!((shown - cost.0).abs() * 2 <= unit, "{} vs {}", text, cost);
        }
    }

    /// Parses `to_decimal_string` output back to pico-currency.
    fn parse_cost(text: &str) -> i128 {
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let value = int.parse::<i128>().unwrap() * 1_000_000_000_000
            + format!("{frac:0<12}").parse::<i128>().unwrap();
        if negative {
            -value
        } else {
            value
        }
    }
}
