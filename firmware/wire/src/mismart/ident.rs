//! `value@ident`: what a value measures (`U1`, `P`, `E1nr`, `I2%`) and which statistic of
//! the interval it is (no suffix, `_min`, `_max`, `#`).

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::message::EnergyUnit;
use crate::value::Unit;

/// Number of resettable energy registers (`E1..E16`).
pub const RESETTABLE_REGISTERS: u8 = 16;
/// Number of non-resettable energy registers (`E1nr..E4nr`).
pub const NON_RESETTABLE_REGISTERS: u8 = 4;

/// Which statistic of the averaging interval a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Statistic {
    /// No suffix: the interval average (for an energy register, its reading).
    Avg,
    /// `_min`: the interval minimum.
    Min,
    /// `_max`: the interval maximum.
    Max,
    /// `#`: the actual (instantaneous) value.
    Actual,
}

impl Statistic {
    /// The ident suffix: `""`, `"_min"`, `"_max"` or `"#"`.
    #[must_use]
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Avg => "",
            Self::Min => "_min",
            Self::Max => "_max",
            Self::Actual => "#",
        }
    }
}

/// A phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    L1,
    L2,
    L3,
}

impl Phase {
    /// 1, 2 or 3.
    #[must_use]
    pub fn number(self) -> u8 {
        match self {
            Self::L1 => 1,
            Self::L2 => 2,
            Self::L3 => 3,
        }
    }

    fn from_digit(digit: &str) -> Option<Self> {
        match digit {
            "1" => Some(Self::L1),
            "2" => Some(Self::L2),
            "3" => Some(Self::L3),
            _ => None,
        }
    }
}

/// A pair of phases for a phase-to-phase voltage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinePair {
    /// `U12`.
    L1L2,
    /// `U23`.
    L2L3,
    /// `U31`.
    L3L1,
}

/// An energy register: `E1..E16` (resettable) or `E1nr..E4nr` (non-resettable). The
/// fields are private so that every `Register` names one the gateway has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Register {
    index: u8,
    resettable: bool,
}

impl Register {
    /// `E<index>` (`1..=16`) or `E<index>nr` (`1..=4`); `None` for a register the gateway
    /// does not have.
    #[must_use]
    pub fn new(index: u8, resettable: bool) -> Option<Self> {
        let max = if resettable {
            RESETTABLE_REGISTERS
        } else {
            NON_RESETTABLE_REGISTERS
        };
        (1..=max)
            .contains(&index)
            .then_some(Self { index, resettable })
    }

    /// N in `EN` / `ENnr`.
    #[must_use]
    pub fn index(self) -> u8 {
        self.index
    }

    /// `EN` can be reset from the gateway; `ENnr` cannot.
    #[must_use]
    pub fn is_resettable(self) -> bool {
        self.resettable
    }

    /// The same register's name in the MQTT counters document: `counter1nr`, `counter12`.
    #[must_use]
    pub fn mqtt_name(self) -> String {
        let nr = if self.resettable { "" } else { "nr" };
        format!("counter{}{nr}", self.index)
    }
}

/// What a value measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    /// `f`, Hz.
    Frequency,
    /// `U1..U3`, phase-to-neutral V.
    Voltage(Phase),
    /// `U12`, `U23`, `U31`, phase-to-phase V.
    LineVoltage(LinePair),
    /// `I1..I3`, A.
    Current(Phase),
    /// `P` (`None`: the total) and `P1..P3`, W.
    ActivePower(Option<Phase>),
    /// `Q` (`None`: the total) and `Q1..Q3`, var.
    ReactivePower(Option<Phase>),
    /// `S0` (`None`: the total) and `S1..S3`, VA.
    ApparentPower(Option<Phase>),
    /// `Tint`, the meter's internal temperature, `deg` (°C).
    Temperature,
    /// `U1%..U3%`, voltage THD, %.
    VoltageThd(Phase),
    /// `I1%..I3%`, current THD, %.
    CurrentThd(Phase),
    /// `E1..E16`, `E1nr..E4nr`, in Wh, varh or VAh.
    Energy(Register),
}

impl Quantity {
    /// The key of the same quantity in an MQTT measurements document (`P` → `P0`, `f` →
    /// `frequency`, `U1%` → `THDUp1`); `None` for energy registers, which MQTT carries in
    /// counters documents (see [`Register::mqtt_name`]).
    #[must_use]
    pub fn mqtt_key(self) -> Option<&'static str> {
        const U: [&str; 3] = ["U1", "U2", "U3"];
        const I: [&str; 3] = ["I1", "I2", "I3"];
        const P: [&str; 4] = ["P0", "P1", "P2", "P3"];
        const Q: [&str; 4] = ["Q0", "Q1", "Q2", "Q3"];
        const S: [&str; 4] = ["S0", "S1", "S2", "S3"];
        const THD_U: [&str; 3] = ["THDUp1", "THDUp2", "THDUp3"];
        const THD_I: [&str; 3] = ["THDI1", "THDI2", "THDI3"];
        let phase = |p: Phase| usize::from(p.number() - 1);
        let total_or = |p: Option<Phase>| p.map_or(0, |p| usize::from(p.number()));
        Some(match self {
            Self::Frequency => "frequency",
            Self::Voltage(p) => U[phase(p)],
            Self::LineVoltage(LinePair::L1L2) => "U12",
            Self::LineVoltage(LinePair::L2L3) => "U23",
            Self::LineVoltage(LinePair::L3L1) => "U31",
            Self::Current(p) => I[phase(p)],
            Self::ActivePower(p) => P[total_or(p)],
            Self::ReactivePower(p) => Q[total_or(p)],
            Self::ApparentPower(p) => S[total_or(p)],
            Self::Temperature => "Tint",
            Self::VoltageThd(p) => THD_U[phase(p)],
            Self::CurrentThd(p) => THD_I[phase(p)],
            Self::Energy(_) => return None,
        })
    }

    /// Whether `unit` is a unit this quantity may be sent in.
    #[must_use]
    pub fn accepts(self, unit: Unit) -> bool {
        match self {
            Self::Frequency => unit == Unit::Hertz,
            Self::Voltage(_) | Self::LineVoltage(_) => unit == Unit::Volt,
            Self::Current(_) => unit == Unit::Ampere,
            Self::ActivePower(_) => unit == Unit::Watt,
            Self::ReactivePower(_) => unit == Unit::Var,
            Self::ApparentPower(_) => unit == Unit::VoltAmpere,
            // MiSmart writes `deg`; a meter that says °C means the same.
            Self::Temperature => matches!(unit, Unit::Degree | Unit::Celsius),
            Self::VoltageThd(_) | Self::CurrentThd(_) => unit == Unit::Percent,
            Self::Energy(_) => EnergyUnit::from_unit(unit).is_some(),
        }
    }

    /// The unit MiSmart writes for this quantity (Wh for energy, which may also be varh
    /// or VAh).
    pub(crate) fn canonical_unit(self) -> Unit {
        match self {
            Self::Frequency => Unit::Hertz,
            Self::Voltage(_) | Self::LineVoltage(_) => Unit::Volt,
            Self::Current(_) => Unit::Ampere,
            Self::ActivePower(_) => Unit::Watt,
            Self::ReactivePower(_) => Unit::Var,
            Self::ApparentPower(_) => Unit::VoltAmpere,
            Self::Temperature => Unit::Degree,
            Self::VoltageThd(_) | Self::CurrentThd(_) => Unit::Percent,
            Self::Energy(_) => Unit::WattHour,
        }
    }

    /// The accepted units, for error messages.
    #[must_use]
    pub fn expected_units(self) -> &'static str {
        match self {
            Self::Frequency => "Hz",
            Self::Voltage(_) | Self::LineVoltage(_) => "V",
            Self::Current(_) => "A",
            Self::ActivePower(_) => "W",
            Self::ReactivePower(_) => "var",
            Self::ApparentPower(_) => "VA",
            Self::Temperature => "deg",
            Self::VoltageThd(_) | Self::CurrentThd(_) => "%",
            Self::Energy(_) => "Wh, varh or VAh",
        }
    }

    fn parse(base: &str) -> Option<Self> {
        Some(match base {
            "f" => Self::Frequency,
            "U12" => Self::LineVoltage(LinePair::L1L2),
            "U23" => Self::LineVoltage(LinePair::L2L3),
            "U31" => Self::LineVoltage(LinePair::L3L1),
            "P" => Self::ActivePower(None),
            "Q" => Self::ReactivePower(None),
            "S0" => Self::ApparentPower(None),
            "Tint" => Self::Temperature,
            _ => return Self::parse_indexed(base),
        })
    }

    /// Idents made of a letter and a number: `U1`, `I3%`, `P2`, `E16`, `E4nr`.
    fn parse_indexed(base: &str) -> Option<Self> {
        if let Some(rest) = base.strip_prefix('E') {
            let (digits, resettable) = match rest.strip_suffix("nr") {
                Some(digits) => (digits, false),
                None => (rest, true),
            };
            // Canonical decimal only: `E01` is not `E1`.
            if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return Register::new(digits.parse().ok()?, resettable).map(Self::Energy);
        }
        if let Some(thd) = base.strip_suffix('%') {
            let (letter, digit) = thd.split_at_checked(1)?;
            let phase = Phase::from_digit(digit)?;
            return match letter {
                "U" => Some(Self::VoltageThd(phase)),
                "I" => Some(Self::CurrentThd(phase)),
                _ => None,
            };
        }
        let (letter, digit) = base.split_at_checked(1)?;
        let phase = Phase::from_digit(digit)?;
        match letter {
            "U" => Some(Self::Voltage(phase)),
            "I" => Some(Self::Current(phase)),
            "P" => Some(Self::ActivePower(Some(phase))),
            "Q" => Some(Self::ReactivePower(Some(phase))),
            "S" => Some(Self::ApparentPower(Some(phase))),
            _ => None,
        }
    }
}

impl fmt::Display for Quantity {
    /// The MiSmart spelling of the base ident: `U1`, `P`, `S0`, `I2%`, `E3nr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total =
            |f: &mut fmt::Formatter<'_>, letter: &str, total: &str, p: Option<Phase>| match p {
                Some(p) => write!(f, "{letter}{}", p.number()),
                None => f.write_str(total),
            };
        match *self {
            Self::Frequency => f.write_str("f"),
            Self::Voltage(p) => write!(f, "U{}", p.number()),
            Self::LineVoltage(LinePair::L1L2) => f.write_str("U12"),
            Self::LineVoltage(LinePair::L2L3) => f.write_str("U23"),
            Self::LineVoltage(LinePair::L3L1) => f.write_str("U31"),
            Self::Current(p) => write!(f, "I{}", p.number()),
            Self::ActivePower(p) => total(f, "P", "P", p),
            Self::ReactivePower(p) => total(f, "Q", "Q", p),
            Self::ApparentPower(p) => total(f, "S", "S0", p),
            Self::Temperature => f.write_str("Tint"),
            Self::VoltageThd(p) => write!(f, "U{}%", p.number()),
            Self::CurrentThd(p) => write!(f, "I{}%", p.number()),
            Self::Energy(r) => {
                let nr = if r.resettable { "" } else { "nr" };
                write!(f, "E{}{nr}", r.index)
            }
        }
    }
}

/// A `value@ident`: a quantity and a statistic, e.g. `U1_max`, `E1nr`, `P#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident {
    pub quantity: Quantity,
    pub statistic: Statistic,
}

impl Ident {
    /// The interval average (no suffix) of `quantity`.
    #[must_use]
    pub fn avg(quantity: Quantity) -> Self {
        Self {
            quantity,
            statistic: Statistic::Avg,
        }
    }

    /// Parses an ident; `None` for one this crate does not know (the caller reports it).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (base, statistic) = if let Some(base) = text.strip_suffix("_min") {
            (base, Statistic::Min)
        } else if let Some(base) = text.strip_suffix("_max") {
            (base, Statistic::Max)
        } else if let Some(base) = text.strip_suffix('#') {
            (base, Statistic::Actual)
        } else {
            (text, Statistic::Avg)
        };
        Some(Self {
            quantity: Quantity::parse(base)?,
            statistic,
        })
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.quantity, self.statistic.suffix())
    }
}

/// The unit symbol MiSmart writes (`deg` where the SG's JSON writes `°`). Every symbol
/// here is read back to the same [`Unit`] by [`Unit::from_symbol`].
pub(crate) fn unit_symbol(unit: Unit) -> &'static str {
    match unit {
        Unit::Degree => "deg",
        Unit::Celsius => "degC",
        other => other.symbol(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// Every ident the contract lists, with every suffix.
    fn all_idents() -> Vec<String> {
        let mut bases: Vec<String> = ["f", "U12", "U23", "U31", "P", "Q", "S0", "Tint"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for n in 1..=3 {
            for letter in ["U", "I", "P", "Q", "S"] {
                bases.push(format!("{letter}{n}"));
            }
            bases.push(format!("U{n}%"));
            bases.push(format!("I{n}%"));
        }
        bases.extend((1..=16).map(|n| format!("E{n}")));
        bases.extend((1..=4).map(|n| format!("E{n}nr")));
        bases
            .iter()
            .flat_map(|b| ["", "_min", "_max", "#"].map(|s| format!("{b}{s}")))
            .collect()
    }

    #[test]
    fn every_listed_ident_parses_and_displays_back() {
        let idents = all_idents();
        assert_eq!(idents.len(), (8 + 3 * 7 + 20) * 4);
        for text in idents {
            let ident = Ident::parse(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(ident.to_string(), text);
        }
    }

    #[test]
    fn unknown_idents_are_none() {
        for text in [
            "",
            "U",
            "U0",
            "U4",
            "U13",
            "P0",
            "Q0",
            "S",
            "S4",
            "E0",
            "E17",
            "E5nr",
            "E01",
            "E1NR",
            "Enr",
            "E+1",
            "U1%%",
            "X1%",
            "I1_avg",
            "f_min_max",
            "u1",
            "PF1",
            "THDI1",
            "Tint2",
        ] {
            assert_eq!(Ident::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn statistics_and_registers() {
        let ident = Ident::parse("E4nr#").unwrap();
        let Quantity::Energy(register) = ident.quantity else {
            panic!()
        };
        assert_eq!(ident.statistic, Statistic::Actual);
        assert_eq!((register.index(), register.is_resettable()), (4, false));
        assert_eq!(register.mqtt_name(), "counter4nr");
        assert_eq!(Register::new(16, true).unwrap().mqtt_name(), "counter16");
        assert_eq!(Register::new(5, false), None);
        assert_eq!(Ident::parse("U2%_min").unwrap().statistic, Statistic::Min);
        assert_eq!(
            Ident::parse("S0_max").unwrap().quantity,
            Quantity::ApparentPower(None)
        );
    }

    #[test]
    fn mqtt_keys_match_the_json_documents() {
        let key = |text: &str| Ident::parse(text).unwrap().quantity.mqtt_key();
        assert_eq!(key("f"), Some("frequency"));
        assert_eq!(key("P"), Some("P0"));
        assert_eq!(key("Q3"), Some("Q3"));
        assert_eq!(key("S0"), Some("S0"));
        assert_eq!(key("U31"), Some("U31"));
        assert_eq!(key("U2%"), Some("THDUp2"));
        assert_eq!(key("I3%"), Some("THDI3"));
        assert_eq!(key("Tint"), Some("Tint"));
        assert_eq!(key("E1"), None);
    }

    #[test]
    fn unit_symbols_read_back() {
        for unit in [
            Unit::Volt,
            Unit::Ampere,
            Unit::Watt,
            Unit::Var,
            Unit::VoltAmpere,
            Unit::Hertz,
            Unit::WattHour,
            Unit::VarHour,
            Unit::VoltAmpereHour,
            Unit::Percent,
            Unit::Celsius,
            Unit::Degree,
        ] {
            assert_eq!(Unit::from_symbol(unit_symbol(unit)), Some(unit), "{unit:?}");
        }
    }
}
