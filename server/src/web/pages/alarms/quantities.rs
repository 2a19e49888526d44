//! What a rule watches, as people read it: human names, the unit a threshold is typed in, and
//! the factor from that unit to the SI value the rule stores (kW → W, min → s).

/// One choice: the wire value, its name, the unit shown and the factor to SI.
pub(super) struct Unit {
    pub value: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub scale: f64,
}

const fn u(value: &'static str, name: &'static str, unit: &'static str, scale: f64) -> Unit {
    Unit {
        value,
        name,
        unit,
        scale,
    }
}

/// Measured quantities (`measurements` columns), in the order people look for them.
pub(super) const QUANTITIES: &[Unit] = &[
    u("p", "Active power", "kW", 1000.0),
    u("p1", "Active power L1", "kW", 1000.0),
    u("p2", "Active power L2", "kW", 1000.0),
    u("p3", "Active power L3", "kW", 1000.0),
    u("u1", "Voltage L1", "V", 1.0),
    u("u2", "Voltage L2", "V", 1.0),
    u("u3", "Voltage L3", "V", 1.0),
    u("u12", "Voltage L1–L2", "V", 1.0),
    u("u23", "Voltage L2–L3", "V", 1.0),
    u("u31", "Voltage L3–L1", "V", 1.0),
    u("i1", "Current L1", "A", 1.0),
    u("i2", "Current L2", "A", 1.0),
    u("i3", "Current L3", "A", 1.0),
    u("i_n", "Neutral current", "A", 1.0),
    u("q", "Reactive power", "kvar", 1000.0),
    u("q1", "Reactive power L1", "kvar", 1000.0),
    u("q2", "Reactive power L2", "kvar", 1000.0),
    u("q3", "Reactive power L3", "kvar", 1000.0),
    u("s", "Apparent power", "kVA", 1000.0),
    u("s1", "Apparent power L1", "kVA", 1000.0),
    u("s2", "Apparent power L2", "kVA", 1000.0),
    u("s3", "Apparent power L3", "kVA", 1000.0),
    u("pf", "Power factor", "", 1.0),
    u("pf1", "Power factor L1", "", 1.0),
    u("pf2", "Power factor L2", "", 1.0),
    u("pf3", "Power factor L3", "", 1.0),
    u("pa", "Phase angle", "°", 1.0),
    u("pa1", "Phase angle L1", "°", 1.0),
    u("pa2", "Phase angle L2", "°", 1.0),
    u("pa3", "Phase angle L3", "°", 1.0),
    u("frequency", "Frequency", "Hz", 1.0),
    u("temperature", "Temperature", "°C", 1.0),
    u("thd_u1", "Voltage distortion (THD) L1", "%", 1.0),
    u("thd_u2", "Voltage distortion (THD) L2", "%", 1.0),
    u("thd_u3", "Voltage distortion (THD) L3", "%", 1.0),
    u("thd_i1", "Current distortion (THD) L1", "%", 1.0),
    u("thd_i2", "Current distortion (THD) L2", "%", 1.0),
    u("thd_i3", "Current distortion (THD) L3", "%", 1.0),
];

/// Kinds of rule; `measurement` takes its unit from the quantity.
pub(super) const KINDS: &[Unit] = &[
    u(
        "measurement",
        "A measured value (choose the quantity)",
        "",
        1.0,
    ),
    u(
        "mean_power_15min",
        "Mean power over a quarter-hour",
        "kW",
        1000.0,
    ),
    u("energy_15min", "Energy in a quarter-hour", "kWh", 1000.0),
    u(
        "peak_demand",
        "Site demand (quarter-hour mean)",
        "kW",
        1000.0,
    ),
    u("gateway_offline", "Gateway offline for", "min", 60.0),
    u("no_data", "No data from the meter for", "min", 60.0),
    u(
        "not_answering",
        "Modbus meter not answering for",
        "min",
        60.0,
    ),
    u("clock_skew", "Gateway clock off by", "s", 1.0),
    u(
        "rejects",
        "Rejected messages from the gateway",
        "messages",
        1.0,
    ),
];

pub(super) fn quantity(value: &str) -> Option<&'static Unit> {
    QUANTITIES.iter().find(|q| q.value == value)
}

pub(super) fn kind(value: &str) -> Option<&'static Unit> {
    KINDS.iter().find(|k| k.value == value)
}

/// The unit and factor of what a rule of `kind` (and `quantity` for measurements) watches.
pub(super) fn unit_of(kind_value: &str, quantity_value: &str) -> (&'static str, f64) {
    match kind_value {
        "measurement" => quantity(quantity_value).map_or(("", 1.0), |q| (q.unit, q.scale)),
        other => kind(other).map_or(("", 1.0), |k| (k.unit, k.scale)),
    }
}

/// What a rule watches, in words: "Active power (kW)".
pub(super) fn describe(kind_value: &str, quantity_value: &str) -> String {
    let name = match kind_value {
        "measurement" => quantity(quantity_value).map_or(quantity_value, |q| q.name),
        other => kind(other).map_or(other, |k| k.name),
    };
    match unit_of(kind_value, quantity_value).0 {
        "" => name.to_owned(),
        unit => format!("{name} ({unit})"),
    }
}

/// An SI value in the shown unit, as typed text (no float noise: `0.30000000000000004` is 0.3).
pub(super) fn shown(si: f64, scale: f64) -> String {
    let v = si / scale;
    let rounded = (v * 1e9).round() / 1e9;
    format!("{rounded}")
}

/// A typed value in the shown unit back to SI.
pub(super) fn to_si(typed: f64, scale: f64) -> f64 {
    if scale == 1.0 {
        typed
    } else {
        (typed * scale * 1e6).round() / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quantity_is_a_measurement_column_and_round_trips() {
        for q in QUANTITIES {
            assert!(
                crate::alarms::measurement_column(q.value).is_some(),
                "{}",
                q.value
            );
        }
        assert_eq!(describe("measurement", "p"), "Active power (kW)");
        assert_eq!(describe("measurement", "u1"), "Voltage L1 (V)");
        assert_eq!(describe("gateway_offline", ""), "Gateway offline for (min)");
        assert_eq!(to_si(0.3, 1000.0), 300.0);
        assert_eq!(shown(300.0, 1000.0), "0.3");
        assert_eq!(shown(250.0, 1.0), "250");
        assert_eq!(unit_of("measurement", "pf"), ("", 1.0));
    }
}
