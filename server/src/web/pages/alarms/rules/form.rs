//! The rule editor's form as posted: every field as text, parsed and checked into a
//! [`RuleInput`] or into [`FieldErrors`] beside the fields to fix, and the store's refusals
//! put beside their field too.

use chrono::NaiveTime;
use serde::Deserialize;

use crate::alarms::rules::{ActiveHours, Compare, Condition};
use crate::alarms::store::RuleInput;
use crate::alarms::{Actions, AlarmError, Severity, Watch};
use crate::web::pages::alarms::quantities::{self, to_si, unit_of};
use crate::web::pages::form::FieldErrors;
use crate::web::pages::PageError;

// ---- the form as posted ---------------------------------------------------------------------------

/// The editor's form (its CSRF token is checked by the extractor). Checkboxes are present only
/// when ticked; every field is text, absent ones empty, so that a wrong value comes back beside
/// its field instead of a bare 422.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RuleForm {
    pub(super) site_id: String,
    pub(super) name: String,
    pub(super) enabled: Option<String>,
    pub(super) severity: String,
    pub(super) target: String,
    /// Older forms named the object by id beside `target=panel|circuit|meter`.
    pub(super) target_id: String,
    pub(super) kind: String,
    pub(super) quantity: String,
    pub(super) window_s: String,
    pub(super) op: String,
    pub(super) threshold: String,
    pub(super) low: String,
    pub(super) high: String,
    pub(super) hysteresis: String,
    pub(super) on_delay_s: String,
    pub(super) off_delay_s: String,
    pub(super) active_from: String,
    pub(super) active_to: String,
    pub(super) active_days: String,
    pub(super) email: String,
    pub(super) escalate_to: String,
    pub(super) escalate_after_min: String,
    pub(super) webhook_url: String,
    pub(super) mqtt_topic: String,
    pub(super) notify_clear: Option<String>,
    pub(super) shed_relay: String,
    pub(super) restore_on_clear: Option<String>,
}

fn list(s: &str) -> Vec<String> {
    s.split([',', ';', ' ', '\n'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// A number typed in `field`, `None` when empty; a message beside the field when it is not one.
fn num<T: std::str::FromStr>(errors: &mut FieldErrors, field: &str, s: &str) -> Option<T> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    match s.replace(',', ".").parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.add(
                field,
                format!("“{s}” is not a number: type digits, e.g. 250 or 1.5"),
            );
            None
        }
    }
}

/// Which field a message of the rule checks is about.
fn field_of(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("hysteresis") {
        "hysteresis"
    } else if m.contains("low must be below") {
        "high"
    } else if m.contains("delay") {
        "on_delay_s"
    } else if m.contains("active days") {
        "active_days"
    } else if m.contains("active hours") {
        "active_from"
    } else if m.contains("threshold") {
        "threshold"
    } else if m.contains("low") {
        "low"
    } else if m.contains("high") {
        "high"
    } else if m.contains("quantity") {
        "quantity"
    } else if m.contains("window") {
        "window_s"
    } else if m.contains("webhook") {
        "webhook_url"
    } else if m.contains("mqtt") {
        "mqtt_topic"
    } else if m.contains("restore_on_clear") {
        "restore_on_clear"
    } else if m.contains("escalate_after_min is") {
        "escalate_after_min"
    } else if m.contains("name") {
        "name"
    } else {
        ""
    }
}

impl RuleForm {
    /// The `target` picker's value, also from an older form's `target` + `target_id`.
    pub(super) fn target_value(&self) -> String {
        let t = self.target.trim();
        match (t, self.target_id.trim()) {
            ("panel" | "circuit" | "meter", id) if !id.is_empty() => format!("{t}:{id}"),
            _ => t.to_owned(),
        }
    }

    /// The rule, or every field that needs fixing.
    pub(super) fn input(&self) -> Result<RuleInput, FieldErrors> {
        let mut e = FieldErrors::new();
        let site_id = self.site_id.trim().parse::<i64>().ok();
        if site_id.is_none() {
            e.add("site_id", "Choose the site the rule watches.");
        }
        let name = self.name.trim();
        if name.is_empty() {
            e.add("name", "Give the rule a name, e.g. “Main supply overload”.");
        } else if name.chars().count() > 200 {
            e.add("name", "A name is at most 200 characters.");
        }
        let severity = Severity::parse(&self.severity);
        if severity.is_none() {
            e.add("severity", "Choose critical, warning or information.");
        }
        let target = self.target_value();
        let (target_kind, target_id) = match target.split_once(':') {
            None if target == "site" => ("site", None),
            Some((k @ ("panel" | "circuit" | "meter"), id)) => match id.parse::<i64>() {
                Ok(id) => (k, Some(id)),
                Err(_) => {
                    e.add("target", "Choose a panel, circuit or meter from the list.");
                    ("site", None)
                }
            },
            _ => {
                e.add(
                    "target",
                    "Choose the whole site, or a panel, circuit or meter from the list.",
                );
                ("site", None)
            }
        };
        let id_for = |t: &str| if target_kind == t { target_id } else { None };

        let kind = self.kind.as_str();
        let scale = unit_of(kind, self.quantity.trim()).1;
        let watch = match kind {
            "measurement" => {
                let quantity = self.quantity.trim().to_owned();
                if quantities::quantity(&quantity).is_none() {
                    e.add("quantity", "Choose the measured quantity from the list.");
                }
                Some(Watch::Measurement { quantity })
            }
            "gateway_offline" => Some(Watch::GatewayOffline),
            "no_data" => Some(Watch::NoData),
            "not_answering" => Some(Watch::NotAnswering),
            "clock_skew" => Some(Watch::ClockSkew),
            "energy_15min" => Some(Watch::Energy15),
            "mean_power_15min" => Some(Watch::MeanPower15),
            "peak_demand" => Some(Watch::PeakDemand),
            "rejects" => {
                let window = num(&mut e, "window_s", &self.window_s).unwrap_or(900);
                if !(60..=86_400).contains(&window) {
                    e.add("window_s", "The window is 60 to 86400 seconds (a day).");
                }
                Some(Watch::Rejects { window_s: window })
            }
            _ => {
                e.add("kind", "Choose what the rule watches from the list.");
                None
            }
        };

        let need = |e: &mut FieldErrors, field: &str, what: &str| -> f64 {
            let typed = self_field(self, field);
            match num::<f64>(e, field, typed) {
                Some(v) if v.is_finite() => to_si(v, scale),
                Some(_) => {
                    e.add(field, format!("The {what} must be a finite number."));
                    0.0
                }
                None => {
                    if typed.trim().is_empty() {
                        e.add(field, format!("Type the {what}, e.g. 250."));
                    }
                    0.0
                }
            }
        };
        let compare = match self.op.as_str() {
            "above" => Some(Compare::Above {
                threshold: need(&mut e, "threshold", "threshold"),
            }),
            "below" => Some(Compare::Below {
                threshold: need(&mut e, "threshold", "threshold"),
            }),
            "outside" => Some(Compare::Outside {
                low: need(&mut e, "low", "low end of the band"),
                high: need(&mut e, "high", "high end of the band"),
            }),
            _ => {
                e.add("op", "Choose above, below or outside a band.");
                None
            }
        };
        let hysteresis = num::<f64>(&mut e, "hysteresis", &self.hysteresis)
            .map(|h| to_si(h, scale))
            .unwrap_or(0.0);
        let on_delay_s = num(&mut e, "on_delay_s", &self.on_delay_s).unwrap_or(0);
        let off_delay_s = num(&mut e, "off_delay_s", &self.off_delay_s).unwrap_or(0);
        let time = |e: &mut FieldErrors, field: &str, s: &str| -> Option<NaiveTime> {
            let t = opt(s)?;
            match NaiveTime::parse_from_str(&t, "%H:%M") {
                Ok(t) => Some(t),
                Err(_) => {
                    e.add(field, "Use hours and minutes, e.g. 07:30.");
                    None
                }
            }
        };
        let from = time(&mut e, "active_from", &self.active_from);
        let to = time(&mut e, "active_to", &self.active_to);
        let days: Vec<u8> = list(&self.active_days)
            .iter()
            .filter_map(|d| match d.parse::<u8>() {
                Ok(d) if (1..=7).contains(&d) => Some(d),
                _ => {
                    e.add(
                        "active_days",
                        "Days are 1 (Monday) to 7 (Sunday), e.g. 1,2,3,4,5.",
                    );
                    None
                }
            })
            .collect();
        let active_hours = match (from, to) {
            (Some(from), Some(to)) => Some(ActiveHours { from, to, days }),
            (None, None) => None,
            (Some(_), None) if !e.has("active_to") => {
                e.add(
                    "active_to",
                    "Give both ends of the active hours, or neither.",
                );
                None
            }
            (None, Some(_)) if !e.has("active_from") => {
                e.add(
                    "active_from",
                    "Give both ends of the active hours, or neither.",
                );
                None
            }
            _ => None,
        };
        let shed_relay = num::<i64>(&mut e, "shed_relay", &self.shed_relay);
        let actions = Actions {
            email: list(&self.email),
            escalate_to: list(&self.escalate_to),
            escalate_after_min: num(&mut e, "escalate_after_min", &self.escalate_after_min),
            webhook_url: opt(&self.webhook_url),
            mqtt_topic: opt(&self.mqtt_topic),
            notify_clear: self.notify_clear.is_some(),
            shed_relay,
            restore_on_clear: self.restore_on_clear.is_some(),
        };
        if let Err(m) = (Actions {
            email: actions.email.clone(),
            ..Actions::default()
        })
        .validate()
        {
            e.add("email", m);
        }
        if let Err(m) = actions.validate() {
            if m.contains("e-mail address") || m.contains("recipients") {
                e.add("escalate_to", m);
            } else if m.contains("go together") {
                if actions.escalate_to.is_empty() {
                    e.add(
                        "escalate_to",
                        "Name who to escalate to, or leave “Escalate after” empty.",
                    );
                } else {
                    e.add(
                        "escalate_after_min",
                        "Say after how many minutes to escalate.",
                    );
                }
            } else if m.contains("restore_on_clear") {
                e.add("restore_on_clear", "Choose a relay to shed first.");
            } else {
                e.add(field_of(&m), m);
            }
        }
        let condition = compare.map(|compare| Condition {
            compare,
            hysteresis,
            on_delay_s,
            off_delay_s,
            active_hours,
        });
        if let Some(c) = &condition {
            if e.is_empty() {
                if let Err(m) = c.validate() {
                    e.add(field_of(&m), m);
                }
            }
        }
        if let Some(w) = &watch {
            if let Err(m) = w.validate() {
                e.add(field_of(&m), m);
            }
        }
        match (site_id, severity, watch, condition) {
            (Some(site_id), Some(severity), Some(watch), Some(condition)) if e.is_empty() => {
                Ok(RuleInput {
                    site_id,
                    name: name.to_owned(),
                    enabled: self.enabled.is_some(),
                    severity,
                    target: target_kind.to_owned(),
                    panel_id: id_for("panel"),
                    circuit_id: id_for("circuit"),
                    device_id: id_for("meter"),
                    watch,
                    condition,
                    actions,
                })
            }
            _ => {
                if e.is_empty() {
                    e.add("", "The rule could not be read; check the fields.");
                }
                Err(e)
            }
        }
    }
}

/// A numeric field of the form by name (for the threshold and band).
fn self_field<'a>(f: &'a RuleForm, field: &str) -> &'a str {
    match field {
        "threshold" => &f.threshold,
        "low" => &f.low,
        "high" => &f.high,
        _ => "",
    }
}

/// The store's refusal, beside the field it is about.
pub(super) fn store_errors(e: AlarmError) -> Result<FieldErrors, PageError> {
    let mut errors = FieldErrors::new();
    match e {
        AlarmError::NotFound("site") => errors.add("site_id", "Choose one of your sites."),
        AlarmError::NotFound(what) if what.starts_with("target") => errors.add(
            "target",
            "This panel, circuit or meter is not on the chosen site: choose one of the site's.",
        ),
        AlarmError::NotFound(what) if what.starts_with("shed_relay") => errors.add(
            "shed_relay",
            "This relay is not on the chosen site: choose one of the site's relays.",
        ),
        AlarmError::Invalid(m) => errors.add(field_of(&m), m),
        AlarmError::Conflict(m) => errors.add("", m),
        other => return Err(other.into()),
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(threshold: &str) -> RuleForm {
        serde_json::from_value(serde_json::json!({
            "csrf": "x", "site_id": "1", "name": "Overload", "severity": "critical",
            "target": "meter:7", "kind": "measurement", "quantity": "p", "op": "above",
            "threshold": threshold, "enabled": "1",
        }))
        .unwrap()
    }

    #[test]
    fn a_threshold_in_kilowatts_is_stored_in_watts() {
        let input = form("2.5").input().unwrap();
        assert_eq!(
            input.condition.compare,
            Compare::Above { threshold: 2500.0 }
        );
        assert_eq!((input.target.as_str(), input.device_id), ("meter", Some(7)));
    }

    #[test]
    fn a_bad_threshold_is_reported_beside_its_field() {
        let errors = form("lots").input().unwrap_err();
        assert!(errors.get("threshold").unwrap().contains("not a number"));
        assert!(!errors.has("name"));
        let errors = form("").input().unwrap_err();
        assert!(errors.has("threshold"));
    }
}
