//! What a meter's counter registers measure, in words people understand.
//!
//! An SG counter carries no direction: its name (`counterN` resettable, `counterNnr`
//! non-resettable), its unit (Wh, varh, VAh) and, when the gateway sends them,
//! `settings.phaseN` (which phase: `"Total"`, `"L1"`...) and `settings.tariffN` (the tariffs
//! it accumulates in, e.g. `"1 2 3 4 "`) are all there is. Headend adds what the device is
//! configured with (its import, export and reactive registers, see
//! [`crate::accounting::roles`]). From that:
//!
//! - the register's role names it: "Active energy import", "Active energy export",
//!   "Reactive energy import (inductive)"; `counter4nr` in varh is "Reactive energy export
//!   (capacitive)" by the SG convention while the device keeps the conventional registers;
//!   a conventional role whose unit contradicts it (a `counter3nr` in Wh) is not trusted;
//! - a phase other than the total is added (" L1");
//! - a tariff is added when the counter accumulates in only some of the tariffs the meter's
//!   counters use (", tariff 2"); a counter of every tariff is the total and says nothing;
//! - a resettable counter says so (", resettable");
//! - anything else keeps a neutral name ("Counter 7").

use crate::accounting::roles::{self, Role};

/// A counter register as Headend stores it (`counters` row).
#[derive(Debug, Clone, Copy)]
pub struct Register<'a> {
    /// The wire name, e.g. `counter1nr`.
    pub name: &'a str,
    /// N of `counterN` / `counterNnr`.
    pub index: i16,
    pub resettable: bool,
    /// `Wh`, `varh` or `VAh`.
    pub unit: &'a str,
    /// `settings.phaseN`, when the gateway sent one.
    pub phase: Option<&'a str>,
    /// `settings.tariffN`: the tariffs the register accumulates in (empty: not known).
    pub tariffs: &'a [i16],
}

/// What Headend knows about the meter as a whole.
#[derive(Debug, Clone, Default)]
pub struct Meter<'a> {
    /// The device's configured registers (`None`: the SG convention).
    pub import: Option<&'a str>,
    pub export: Option<&'a str>,
    pub reactive: Option<&'a str>,
    /// Every tariff any of the meter's counters accumulates in.
    pub tariffs: Vec<i16>,
}

impl<'a> Meter<'a> {
    /// The meter of `registers`, with its configured registers.
    pub fn new(
        import: Option<&'a str>,
        export: Option<&'a str>,
        reactive: Option<&'a str>,
        registers: &[Register<'_>],
    ) -> Self {
        let mut tariffs: Vec<i16> = registers
            .iter()
            .flat_map(|r| r.tariffs.iter().copied())
            .collect();
        tariffs.sort_unstable();
        tariffs.dedup();
        Self {
            import,
            export,
            reactive,
            tariffs,
        }
    }

    fn conventional(&self) -> bool {
        self.import.is_none() && self.export.is_none() && self.reactive.is_none()
    }
}

/// What the register measures, before phase, tariff and reset qualifiers.
fn quantity(r: &Register<'_>, meter: &Meter<'_>) -> Option<&'static str> {
    let configured = |role: Role| match role {
        Role::Import => meter.import.is_some(),
        Role::Export => meter.export.is_some(),
        Role::Reactive => meter.reactive.is_some(),
        Role::Other => false,
    };
    let role = roles::role_of(r.name, meter.import, meter.export, meter.reactive);
    let expected_unit = match role {
        Role::Import | Role::Export => "Wh",
        Role::Reactive => "varh",
        Role::Other => "",
    };
    // A configured register is what the admin says; a conventional one must at least count in
    // the unit of its role.
    let trusted = configured(role) || r.unit == expected_unit;
    match role {
        Role::Import if trusted => Some("Active energy import"),
        Role::Export if trusted => Some("Active energy export"),
        Role::Reactive if trusted => Some("Reactive energy import (inductive)"),
        Role::Other
            if meter.conventional()
                && !r.resettable
                && r.index == 4
                && r.unit == "varh"
                && r.name == "counter4nr" =>
        {
            Some("Reactive energy export (capacitive)")
        }
        _ => None,
    }
}

/// " L1" for a phase label, nothing for the total.
fn phase_suffix(phase: Option<&str>) -> String {
    let Some(p) = phase.map(str::trim).filter(|p| !p.is_empty()) else {
        return String::new();
    };
    let lower = p.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "total" | "all" | "sum" | "l1+l2+l3" | "l1l2l3" | "3-phase"
    ) {
        return String::new();
    }
    let number = lower
        .strip_prefix("phase")
        .or_else(|| lower.strip_prefix('l'))
        .unwrap_or(&lower)
        .trim();
    match number {
        "1" | "2" | "3" => format!(" L{number}"),
        _ => format!(", phase {p}"),
    }
}

/// ", tariff 2" when the register counts in some of the meter's tariffs only.
fn tariff_suffix(r: &Register<'_>, meter: &Meter<'_>) -> String {
    let mut own: Vec<i16> = r.tariffs.to_vec();
    own.sort_unstable();
    own.dedup();
    if own.is_empty() || own == meter.tariffs {
        return String::new();
    }
    let list = own
        .iter()
        .map(i16::to_string)
        .collect::<Vec<_>>()
        .join(" and ");
    if own.len() == 1 {
        format!(", tariff {list}")
    } else {
        format!(", tariffs {list}")
    }
}

/// The name people read for a counter register.
pub fn human_name(r: &Register<'_>, meter: &Meter<'_>) -> String {
    let base = match quantity(r, meter) {
        Some(q) => q.to_owned(),
        None => format!("Counter {}", r.index),
    };
    let reset = if r.resettable { ", resettable" } else { "" };
    format!(
        "{base}{}{}{reset}",
        phase_suffix(r.phase),
        tariff_suffix(r, meter)
    )
}

/// The page's text for a counter value given exactly in the counter's unit (`value_milli`
/// milli-units): kWh or MWh (kvarh or Mvarh; kVAh or MVAh).
pub fn value_text(unit: &str, value_milli: i64) -> String {
    let k = value_milli as f64 / 1_000_000.0;
    match unit {
        "Wh" => crate::dashboard::units::energy_kwh(k).to_string(),
        "varh" => crate::dashboard::units::reactive_kvarh(k).to_string(),
        other => {
            // VAh (and anything else): the same scale with its own symbol.
            let scaled = crate::dashboard::units::energy_kwh(k);
            let prefix = scaled.unit.trim_end_matches("Wh");
            format!(
                "{} {prefix}{other}",
                crate::dashboard::units::digits(scaled.value)
            )
        }
    }
}

/// The exact register in kilo-units, as meters display it: `184233.125 kWh`.
pub fn exact_text(unit: &str, value_milli: i64) -> String {
    let sign = if value_milli < 0 { "-" } else { "" };
    let v = value_milli.unsigned_abs();
    let (int, frac) = (v / 1_000_000, v % 1_000_000);
    let frac = format!("{frac:06}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{int} k{unit}")
    } else {
        format!("{sign}{int}.{frac} k{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg<'a>(name: &'a str, unit: &'a str, phase: Option<&'a str>, t: &'a [i16]) -> Register<'a> {
        let resettable = !name.ends_with("nr");
        let index = name
            .trim_start_matches("counter")
            .trim_end_matches("nr")
            .parse()
            .unwrap();
        Register {
            name,
            index,
            resettable,
            unit,
            phase,
            tariffs: t,
        }
    }

    const ALL: &[i16] = &[1, 2, 3, 4];

    #[test]
    fn the_sg_convention_names_the_four_non_resettable_registers() {
        let regs = [
            reg("counter1nr", "Wh", Some("Total"), ALL),
            reg("counter2nr", "Wh", Some("Total"), ALL),
            reg("counter3nr", "varh", None, ALL),
            reg("counter4nr", "varh", None, ALL),
        ];
        let meter = Meter::new(None, None, None, &regs);
        let names: Vec<String> = regs.iter().map(|r| human_name(r, &meter)).collect();
        assert_eq!(
            names,
            [
                "Active energy import",
                "Active energy export",
                "Reactive energy import (inductive)",
                "Reactive energy export (capacitive)",
            ]
        );
    }

    #[test]
    fn unknown_and_resettable_registers_keep_neutral_names() {
        let regs = [
            reg("counter1nr", "Wh", None, ALL),
            reg("counter7", "varh", None, ALL),
            reg("counter5nr", "Wh", None, &[]),
            reg("counter1", "Wh", None, ALL),
        ];
        assert_eq!(
            names_of(&regs)[1..],
            [
                "Counter 7, resettable",
                "Counter 5",
                "Counter 1, resettable"
            ]
        );
    }

    /// The names of a meter's registers, without configured roles.
    fn names_of(regs: &[Register<'_>]) -> Vec<String> {
        let meter = Meter::new(None, None, None, regs);
        regs.iter().map(|r| human_name(r, &meter)).collect()
    }

    #[test]
    fn a_conventional_role_in_the_wrong_unit_is_not_trusted() {
        let regs = [
            reg("counter3nr", "Wh", None, &[]),
            reg("counter4nr", "Wh", None, &[]),
            reg("counter2nr", "VAh", None, &[]),
        ];
        assert_eq!(names_of(&regs), ["Counter 3", "Counter 4", "Counter 2"]);
    }

    #[test]
    fn configured_registers_win_over_the_convention() {
        let regs = [
            reg("counter1nr", "Wh", None, &[]),
            reg("counter5", "Wh", None, &[]),
            reg("counter6", "Wh", None, &[]),
            reg("counter4nr", "varh", None, &[]),
        ];
        let meter = Meter::new(Some("counter5"), Some("counter6"), None, &regs);
        assert_eq!(human_name(&regs[0], &meter), "Counter 1");
        assert_eq!(
            human_name(&regs[1], &meter),
            "Active energy import, resettable"
        );
        assert_eq!(
            human_name(&regs[2], &meter),
            "Active energy export, resettable"
        );
        // Not the conventional meter any more: counter4nr is not assumed.
        assert_eq!(human_name(&regs[3], &meter), "Counter 4");
    }

    #[test]
    fn tariffs_and_phases_qualify_the_name() {
        let regs = [
            reg("counter1nr", "Wh", Some("Total"), ALL),
            reg("counter5", "Wh", Some("L1"), &[1]),
            reg("counter6", "Wh", Some("L2 "), &[2]),
            reg("counter7", "Wh", Some("phase 3"), &[3, 4]),
            reg("counter8", "Wh", Some("N"), &[4, 3, 2, 1]),
        ];
        let meter = Meter::new(Some("counter1nr"), Some("counter5"), None, &regs);
        assert_eq!(human_name(&regs[0], &meter), "Active energy import");
        assert_eq!(
            human_name(&regs[1], &meter),
            "Active energy export L1, tariff 1, resettable"
        );
        assert_eq!(
            human_name(&regs[2], &meter),
            "Counter 6 L2, tariff 2, resettable"
        );
        assert_eq!(
            human_name(&regs[3], &meter),
            "Counter 7 L3, tariffs 3 and 4, resettable"
        );
        assert_eq!(
            human_name(&regs[4], &meter),
            "Counter 8, phase N, resettable"
        );
        // A meter with a single tariff: no tariff in the names.
        let one = [reg("counter2nr", "Wh", None, &[1])];
        let meter = Meter::new(None, None, None, &one);
        assert_eq!(human_name(&one[0], &meter), "Active energy export");
        // Per-tariff registers of the import.
        let per = [
            reg("counter1nr", "Wh", None, ALL),
            reg("counter1nr", "Wh", None, &[2]),
        ];
        let meter = Meter::new(None, None, None, &per);
        assert_eq!(
            human_name(&per[1], &meter),
            "Active energy import, tariff 2"
        );
    }

    #[test]
    fn the_fixture_counters_get_names() {
        // tests/fixtures/sg-mqtt/counters-rs485-2-wm3m4c.json
        let regs = [
            reg("counter1nr", "Wh", Some("Total"), ALL),
            reg("counter2nr", "Wh", Some("Total"), ALL),
        ];
        let meter = Meter::new(None, None, None, &regs);
        assert_eq!(human_name(&regs[0], &meter), "Active energy import");
        assert_eq!(human_name(&regs[1], &meter), "Active energy export");
    }

    #[test]
    fn values_read_in_kwh_or_mwh() {
        assert_eq!(value_text("Wh", 184_233_125_000), "184 MWh");
        assert_eq!(value_text("Wh", 12_500), "12.5 Wh");
        assert_eq!(value_text("Wh", 200_000), "200 Wh");
        assert_eq!(value_text("Wh", 1_234_567), "1.23 kWh");
        assert_eq!(value_text("varh", 20_000_000_000), "20.0 Mvarh");
        assert_eq!(value_text("VAh", 5_000_000), "5.00 kVAh");
        assert_eq!(value_text("Wh", 0), "0.00 kWh");
        assert_eq!(exact_text("Wh", 184_233_125_000), "184233.125 kWh");
        assert_eq!(exact_text("Wh", 12_500), "0.0125 kWh");
        assert_eq!(exact_text("varh", 2_000_000), "2 kvarh");
    }
}
