//! A rule as it is shown: the editor's fields as text in the unit shown ([`RuleFormView`]) and
//! a rule of the list in words ([`RuleRow`]).

use std::collections::HashMap;

use super::choices::Objects;
use super::form::RuleForm;
use crate::alarms::rules::Compare;
use crate::alarms::store::RuleView;
use crate::alarms::Watch;
use crate::web::pages::alarms::quantities::{self, shown, unit_of};
use crate::web::pages::alarms::SEVERITIES;

// ---- the form as shown ----------------------------------------------------------------------------

/// A rule as the editor shows it: the form's fields as text, numbers in the unit shown (`f`,
/// whose `target` names the object and whose checkboxes are the flags here), `id` for a stored
/// rule.
#[derive(Default)]
pub(super) struct RuleFormView {
    pub(super) id: Option<i64>,
    pub(super) enabled: bool,
    pub(super) notify_clear: bool,
    pub(super) restore_on_clear: bool,
    pub(super) f: RuleForm,
}

fn text(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl RuleFormView {
    pub(super) fn new_rule(site_id: Option<i64>) -> Self {
        Self {
            enabled: true,
            notify_clear: true,
            f: RuleForm {
                site_id: text(site_id),
                severity: "warning".into(),
                target: "site".into(),
                kind: "measurement".into(),
                quantity: "p".into(),
                op: "above".into(),
                hysteresis: "0".into(),
                on_delay_s: "0".into(),
                off_delay_s: "0".into(),
                ..RuleForm::default()
            },
            ..Self::default()
        }
    }

    pub(super) fn from_rule(r: &RuleView) -> Self {
        let c = &r.condition.0;
        let a = &r.actions.0;
        let (kind, quantity, window) = watch_parts(&r.watch.0);
        let scale = unit_of(kind, &quantity).1;
        let (op, threshold, low, high) = match c.compare {
            Compare::Above { threshold } => ("above", Some(threshold), None, None),
            Compare::Below { threshold } => ("below", Some(threshold), None, None),
            Compare::Outside { low, high } => ("outside", None, Some(low), Some(high)),
        };
        let num = |v: Option<f64>| v.map(|v| shown(v, scale)).unwrap_or_default();
        let target = match (r.target.as_str(), r.panel_id, r.circuit_id, r.device_id) {
            ("panel", Some(id), _, _) => format!("panel:{id}"),
            ("circuit", _, Some(id), _) => format!("circuit:{id}"),
            ("meter", _, _, Some(id)) => format!("meter:{id}"),
            _ => "site".into(),
        };
        let hours = c.active_hours.as_ref();
        let f = RuleForm {
            site_id: r.site_id.to_string(),
            name: r.name.clone(),
            severity: r.severity.clone(),
            target,
            kind: kind.into(),
            quantity,
            window_s: text(window),
            op: op.into(),
            threshold: num(threshold),
            low: num(low),
            high: num(high),
            hysteresis: shown(c.hysteresis, scale),
            on_delay_s: c.on_delay_s.to_string(),
            off_delay_s: c.off_delay_s.to_string(),
            active_from: text(hours.map(|h| h.from.format("%H:%M"))),
            active_to: text(hours.map(|h| h.to.format("%H:%M"))),
            active_days: hours
                .map(|h| {
                    h.days
                        .iter()
                        .map(u8::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            email: a.email.join(", "),
            escalate_to: a.escalate_to.join(", "),
            escalate_after_min: text(a.escalate_after_min),
            webhook_url: a.webhook_url.clone().unwrap_or_default(),
            mqtt_topic: a.mqtt_topic.clone().unwrap_or_default(),
            shed_relay: text(a.shed_relay),
            ..RuleForm::default()
        };
        Self {
            id: Some(r.id),
            enabled: r.enabled,
            notify_clear: a.notify_clear,
            restore_on_clear: a.restore_on_clear,
            f,
        }
    }

    /// What was typed, for the form shown again.
    pub(super) fn from_form(id: Option<i64>, f: RuleForm) -> Self {
        Self {
            id,
            enabled: f.enabled.is_some(),
            notify_clear: f.notify_clear.is_some(),
            restore_on_clear: f.restore_on_clear.is_some(),
            f: RuleForm {
                target: f.target_value(),
                target_id: String::new(),
                ..f
            },
        }
    }

    /// The unit thresholds are typed in, for the hint beside them.
    pub(super) fn unit(&self) -> &'static str {
        unit_of(&self.f.kind, &self.f.quantity).0
    }
}

/// (kind, quantity, rejects window) of a watch.
fn watch_parts(w: &Watch) -> (&'static str, String, Option<u32>) {
    match w {
        Watch::Measurement { quantity } => ("measurement", quantity.clone(), None),
        Watch::GatewayOffline => ("gateway_offline", String::new(), None),
        Watch::NoData => ("no_data", String::new(), None),
        Watch::NotAnswering => ("not_answering", String::new(), None),
        Watch::ClockSkew => ("clock_skew", String::new(), None),
        Watch::Rejects { window_s } => ("rejects", String::new(), Some(*window_s)),
        Watch::Energy15 => ("energy_15min", String::new(), None),
        Watch::MeanPower15 => ("mean_power_15min", String::new(), None),
        Watch::PeakDemand => ("peak_demand", String::new(), None),
    }
}

/// The unit a rule's values are shown in, and its factor from SI.
pub(in crate::web::pages::alarms) fn unit_of_watch(w: &Watch) -> (&'static str, f64) {
    let (kind, quantity, _) = watch_parts(w);
    unit_of(kind, &quantity)
}

/// A rule in the list, in words.
pub struct RuleRow {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) site: String,
    pub(super) severity: String,
    pub(super) applies_to: String,
    pub(super) watches: String,
    pub(super) condition: String,
    pub(super) enabled: bool,
}

pub(super) fn rule_row(r: &RuleView, sites: &HashMap<i64, String>, objects: &Objects) -> RuleRow {
    let (kind, quantity, window) = watch_parts(&r.watch.0);
    let (unit, scale) = unit_of(kind, &quantity);
    let v = |x: f64| {
        let n = shown(x, scale);
        if unit.is_empty() {
            n
        } else {
            format!("{n} {unit}")
        }
    };
    let c = &r.condition.0;
    let mut condition = match c.compare {
        Compare::Above { threshold } => format!("above {}", v(threshold)),
        Compare::Below { threshold } => format!("below {}", v(threshold)),
        Compare::Outside { low, high } => format!("outside {} … {}", v(low), v(high)),
    };
    if c.on_delay_s > 0 {
        condition.push_str(&format!(" for {} s", c.on_delay_s));
    }
    let named = |label: Option<&str>, what: &str| {
        label.map_or_else(|| format!("{what} (removed)"), str::to_owned)
    };
    let applies_to = match r.target.as_str() {
        "panel" => named(Objects::label(&objects.panels, r.panel_id), "a panel"),
        "circuit" => named(Objects::label(&objects.circuits, r.circuit_id), "a circuit"),
        "meter" => named(Objects::label(&objects.meters, r.device_id), "a meter"),
        _ => "the whole site".into(),
    };
    let mut watches = quantities::describe(kind, &quantity);
    if let Some(w) = window {
        watches.push_str(&format!(" in {w} s"));
    }
    RuleRow {
        id: r.id,
        name: r.name.clone(),
        site: sites.get(&r.site_id).cloned().unwrap_or_default(),
        severity: SEVERITIES
            .iter()
            .find(|(v, _)| *v == r.severity)
            .map_or(r.severity.clone(), |(_, l)| (*l).to_owned()),
        applies_to,
        watches,
        condition,
        enabled: r.enabled,
    }
}
