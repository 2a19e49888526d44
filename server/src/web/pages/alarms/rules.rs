//! The rule list and the rule editor. What a rule applies to and the relay it sheds are picked
//! from lists of the site's panels, circuits, meters and relays (never typed ids); thresholds
//! are typed in the unit of what is watched (kW, V, min) and stored in SI; a refused form comes
//! back (422) with what was typed and the message beside the field.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use chrono::NaiveTime;
use serde::Deserialize;

use super::quantities::{self, shown, to_si, unit_of, KINDS, QUANTITIES};
use super::{options, site_names, SEVERITIES};
use crate::alarms::rules::{ActiveHours, Compare, Condition};
use crate::alarms::store::{self, RuleInput, RuleView};
use crate::alarms::{Actions, AlarmError, Severity, Watch};
use crate::auth::Principal;
use crate::web::pages::form::FieldErrors;
use crate::web::pages::{
    check_csrf, nav, render, require_admin, Nav, PageError, PageResult, PageUser,
};
use crate::web::WebState;

// ---- the objects a rule can name ----------------------------------------------------------------

/// A panel, circuit, meter or relay a rule can name, with a label people recognise.
#[derive(Clone)]
pub struct Object {
    id: i64,
    site_id: i64,
    label: String,
}

/// Every object of the sites the user may see.
#[derive(Default)]
struct Objects {
    panels: Vec<Object>,
    circuits: Vec<Object>,
    meters: Vec<Object>,
    relays: Vec<Object>,
}

/// "MT1234 (gateway SG0001)" or "Main supply — MT1234 (gateway SG0001)"; a device without a
/// serial is named by its port and slot.
fn device_label(
    name: Option<String>,
    serial: &str,
    gateway: &str,
    port: &str,
    slot: i16,
    kind: &str,
) -> String {
    let what = if !serial.is_empty() {
        serial.to_owned()
    } else if port == "ir" {
        format!("IR {kind}")
    } else {
        format!("{} {kind} {slot}", port.to_uppercase())
    };
    match name.filter(|n| !n.trim().is_empty()) {
        Some(n) => format!("{} — {what} (gateway {gateway})", n.trim()),
        None => format!("{what} (gateway {gateway})"),
    }
}

type DeviceRow = (
    i64,
    i64,
    Option<String>,
    String,
    String,
    String,
    i16,
    String,
);

impl Objects {
    async fn load(state: &WebState, p: &Principal) -> Result<Self, PageError> {
        let scope = p.scope.site_ids();
        let panels: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, site_id, name FROM panels
             WHERE $1::int8[] IS NULL OR site_id = ANY($1) ORDER BY site_id, name, id",
        )
        .bind(scope)
        .fetch_all(&state.pool)
        .await?;
        let circuits: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT c.id, p.site_id, p.name, c.name, c.usage FROM circuits c
             JOIN panels p ON p.id = c.panel_id
             WHERE $1::int8[] IS NULL OR p.site_id = ANY($1) ORDER BY p.site_id, p.name, c.name, c.id",
        )
        .bind(scope)
        .fetch_all(&state.pool)
        .await?;
        let devices: Vec<DeviceRow> = sqlx::query_as(
            "SELECT d.id, g.site_id,
                    COALESCE(NULLIF(d.name, ''), NULLIF(d.description, ''), NULLIF(d.sg_description, '')),
                    d.serial, g.serial, d.port, d.slot, d.kind
             FROM devices d JOIN gateways g ON g.id = d.gateway_id
             WHERE g.site_id IS NOT NULL AND ($1::int8[] IS NULL OR g.site_id = ANY($1))
             ORDER BY g.site_id, COALESCE(d.name, d.description, d.serial), d.serial, g.serial, d.port, d.slot",
        )
        .bind(scope)
        .fetch_all(&state.pool)
        .await?;
        let mut objects = Self {
            panels: panels
                .into_iter()
                .map(|(id, site_id, label)| Object { id, site_id, label })
                .collect(),
            circuits: circuits
                .into_iter()
                .map(|(id, site_id, panel, name, usage)| Object {
                    id,
                    site_id,
                    label: format!("{panel} › {name} ({})", usage.replace('_', " ")),
                })
                .collect(),
            ..Self::default()
        };
        for (id, site_id, name, serial, gateway, port, slot, kind) in devices {
            let object = Object {
                id,
                site_id,
                label: device_label(name, &serial, &gateway, &port, slot, &kind),
            };
            if kind == "relay" {
                objects.relays.push(object);
            } else {
                objects.meters.push(object);
            }
        }
        Ok(objects)
    }

    fn label(list: &[Object], id: Option<i64>) -> Option<&str> {
        list.iter()
            .find(|o| Some(o.id) == id)
            .map(|o| o.label.as_str())
    }
}

/// One `<option>` of a picker; `site` for a script that narrows the list to the chosen site.
pub struct Opt {
    value: String,
    label: String,
    site: i64,
    selected: bool,
}

/// One `<optgroup>`.
pub struct Group {
    label: String,
    options: Vec<Opt>,
}

/// Groups of `(heading, objects)` per site, the site named when more than one is listed.
fn groups(
    sites: &[(i64, String)],
    lists: &[(&str, &str, &[Object])],
    selected: &str,
) -> Vec<Group> {
    let named = sites.len() > 1;
    let mut out = Vec::new();
    for (site_id, site) in sites {
        for (heading, prefix, list) in lists {
            let options: Vec<Opt> = list
                .iter()
                .filter(|o| o.site_id == *site_id)
                .map(|o| {
                    let value = if prefix.is_empty() {
                        o.id.to_string()
                    } else {
                        format!("{prefix}:{}", o.id)
                    };
                    Opt {
                        selected: value == selected,
                        value,
                        label: o.label.clone(),
                        site: *site_id,
                    }
                })
                .collect();
            if !options.is_empty() {
                out.push(Group {
                    label: if named {
                        format!("{site} · {heading}")
                    } else {
                        (*heading).to_owned()
                    },
                    options,
                });
            }
        }
    }
    out
}

// ---- the form as shown ----------------------------------------------------------------------------

/// A rule as the editor shows it: every field as text, numbers in the unit shown.
#[derive(Default)]
struct RuleFormView {
    id: Option<i64>,
    site_id: String,
    name: String,
    enabled: bool,
    severity: String,
    /// `site`, `panel:<id>`, `circuit:<id>` or `meter:<id>`.
    target: String,
    kind: String,
    quantity: String,
    window_s: String,
    op: String,
    threshold: String,
    low: String,
    high: String,
    hysteresis: String,
    on_delay_s: String,
    off_delay_s: String,
    active_from: String,
    active_to: String,
    active_days: String,
    email: String,
    escalate_to: String,
    escalate_after_min: String,
    webhook_url: String,
    mqtt_topic: String,
    notify_clear: bool,
    shed_relay: String,
    restore_on_clear: bool,
}

fn text(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl RuleFormView {
    fn new_rule(site_id: Option<i64>) -> Self {
        Self {
            site_id: text(site_id),
            enabled: true,
            severity: "warning".into(),
            target: "site".into(),
            kind: "measurement".into(),
            quantity: "p".into(),
            op: "above".into(),
            hysteresis: "0".into(),
            on_delay_s: "0".into(),
            off_delay_s: "0".into(),
            notify_clear: true,
            ..Self::default()
        }
    }

    fn from_rule(r: &RuleView) -> Self {
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
        Self {
            id: Some(r.id),
            site_id: r.site_id.to_string(),
            name: r.name.clone(),
            enabled: r.enabled,
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
            active_from: text(c.active_hours.as_ref().map(|h| h.from.format("%H:%M"))),
            active_to: text(c.active_hours.as_ref().map(|h| h.to.format("%H:%M"))),
            active_days: c
                .active_hours
                .as_ref()
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
            notify_clear: a.notify_clear,
            shed_relay: text(a.shed_relay),
            restore_on_clear: a.restore_on_clear,
        }
    }

    /// What was typed, for the form shown again.
    fn from_form(id: Option<i64>, f: &RuleForm) -> Self {
        Self {
            id,
            site_id: f.site_id.clone(),
            name: f.name.clone(),
            enabled: f.enabled.is_some(),
            severity: f.severity.clone(),
            target: f.target_value(),
            kind: f.kind.clone(),
            quantity: f.quantity.clone(),
            window_s: f.window_s.clone(),
            op: f.op.clone(),
            threshold: f.threshold.clone(),
            low: f.low.clone(),
            high: f.high.clone(),
            hysteresis: f.hysteresis.clone(),
            on_delay_s: f.on_delay_s.clone(),
            off_delay_s: f.off_delay_s.clone(),
            active_from: f.active_from.clone(),
            active_to: f.active_to.clone(),
            active_days: f.active_days.clone(),
            email: f.email.clone(),
            escalate_to: f.escalate_to.clone(),
            escalate_after_min: f.escalate_after_min.clone(),
            webhook_url: f.webhook_url.clone(),
            mqtt_topic: f.mqtt_topic.clone(),
            notify_clear: f.notify_clear.is_some(),
            shed_relay: f.shed_relay.clone(),
            restore_on_clear: f.restore_on_clear.is_some(),
        }
    }

    /// The unit thresholds are typed in, for the hint beside them.
    fn unit(&self) -> &'static str {
        unit_of(&self.kind, &self.quantity).0
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
pub(super) fn unit_of_watch(w: &Watch) -> (&'static str, f64) {
    let (kind, quantity, _) = watch_parts(w);
    unit_of(kind, &quantity)
}

/// A rule in the list, in words.
pub struct RuleRow {
    id: i64,
    name: String,
    site: String,
    severity: String,
    applies_to: String,
    watches: String,
    condition: String,
    enabled: bool,
}

fn rule_row(r: &RuleView, sites: &HashMap<i64, String>, objects: &Objects) -> RuleRow {
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

#[derive(Template)]
#[template(path = "alarm_rules.html")]
struct RulesPage {
    title: String,
    nav: Nav,
    rules: Vec<RuleRow>,
    /// The list is shown (the new-rule page), not one rule.
    listing: bool,
    notice: Option<&'static str>,
    errors: FieldErrors,
    form: RuleFormView,
    choices: Choices,
}

/// The editor's `<option>`s with the rule's value selected.
struct Choices {
    sites: Vec<(i64, String, bool)>,
    /// The "list the objects of" choice: (id, name, chosen); the pickers then list only the
    /// chosen site's objects (`?site_id=`).
    site_filter: Vec<(i64, String, bool)>,
    severities: Vec<(&'static str, &'static str, bool)>,
    targets: Vec<Group>,
    relays: Vec<Group>,
    kinds: Vec<(&'static str, String, bool)>,
    quantities: Vec<(&'static str, String, bool)>,
    ops: Vec<(&'static str, &'static str, bool)>,
}

impl Choices {
    fn new(
        form: &RuleFormView,
        sites: &[(i64, String)],
        objects: &Objects,
        site_filter: Option<i64>,
    ) -> Self {
        let listed: Vec<(i64, String)> = sites
            .iter()
            .filter(|(id, _)| site_filter.is_none_or(|f| f == *id))
            .cloned()
            .collect();
        Self {
            sites: sites
                .iter()
                .map(|(id, name)| (*id, name.clone(), id.to_string() == form.site_id))
                .collect(),
            site_filter: sites
                .iter()
                .map(|(id, name)| (*id, name.clone(), site_filter == Some(*id)))
                .collect(),
            severities: options(&SEVERITIES, &form.severity),
            targets: groups(
                &listed,
                &[
                    ("Panels", "panel", &objects.panels),
                    ("Circuits", "circuit", &objects.circuits),
                    ("Meters", "meter", &objects.meters),
                ],
                &form.target,
            ),
            relays: groups(
                &listed,
                &[("Relays", "", &objects.relays)],
                &form.shed_relay,
            ),
            kinds: KINDS
                .iter()
                .map(|k| {
                    let label = if k.unit.is_empty() {
                        k.name.to_owned()
                    } else {
                        format!("{} ({})", k.name, k.unit)
                    };
                    (k.value, label, k.value == form.kind)
                })
                .collect(),
            quantities: QUANTITIES
                .iter()
                .map(|q| {
                    (
                        q.value,
                        quantities::describe("measurement", q.value),
                        q.value == form.quantity,
                    )
                })
                .collect(),
            ops: options(
                &[
                    ("above", "Above the threshold"),
                    ("below", "Below the threshold"),
                    ("outside", "Outside the band (low … high)"),
                ],
                &form.op,
            ),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct RulesParams {
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    saved: Option<String>,
    #[serde(default)]
    deleted: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn show(
    state: &WebState,
    p: &Principal,
    headers: &HeaderMap,
    listing: bool,
    form: RuleFormView,
    errors: FieldErrors,
    notice: Option<&'static str>,
    site_filter: Option<i64>,
) -> PageResult {
    let sites = site_names(state, p).await?;
    let objects = Objects::load(state, p).await?;
    let rules = if listing {
        let names: HashMap<i64, String> = sites.iter().cloned().collect();
        store::list_rules(&state.pool, &p.scope, None)
            .await?
            .iter()
            .map(|r| rule_row(r, &names, &objects))
            .collect()
    } else {
        Vec::new()
    };
    let site_filter = site_filter.filter(|f| sites.iter().any(|(id, _)| id == f));
    let (nav, set) = nav(p, headers);
    let title = match form.id {
        Some(_) => format!("Alarm rule: {}", form.name),
        None => "Alarm rules".to_owned(),
    };
    let refused = !errors.is_empty();
    let mut response = render(
        &RulesPage {
            title,
            nav,
            rules,
            listing,
            notice,
            errors,
            choices: Choices::new(&form, &sites, &objects, site_filter),
            form,
        },
        set,
    )?;
    if refused {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn rules_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Query(q): Query<RulesParams>,
) -> PageResult {
    let site_filter = q.site_id.as_deref().and_then(|s| s.parse().ok());
    let notice = q.deleted.map(|_| "The rule was deleted.");
    show(
        &state,
        &p,
        &headers,
        true,
        RuleFormView::new_rule(site_filter),
        FieldErrors::new(),
        notice,
        site_filter,
    )
    .await
}

pub async fn rule_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<RulesParams>,
) -> PageResult {
    let rule = store::get_rule(&state.pool, &p.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let notice = q.saved.map(|_| "The rule was saved.");
    show(
        &state,
        &p,
        &headers,
        false,
        RuleFormView::from_rule(&rule),
        FieldErrors::new(),
        notice,
        None,
    )
    .await
}

// ---- the form as posted ---------------------------------------------------------------------------

/// The editor's form. Checkboxes are present only when ticked; every field is text so that a
/// wrong value comes back beside its field instead of a bare 422.
#[derive(Deserialize)]
pub struct RuleForm {
    csrf: String,
    #[serde(default)]
    site_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    target: String,
    /// Older forms named the object by id beside `target=panel|circuit|meter`.
    #[serde(default)]
    target_id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    window_s: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    threshold: String,
    #[serde(default)]
    low: String,
    #[serde(default)]
    high: String,
    #[serde(default)]
    hysteresis: String,
    #[serde(default)]
    on_delay_s: String,
    #[serde(default)]
    off_delay_s: String,
    #[serde(default)]
    active_from: String,
    #[serde(default)]
    active_to: String,
    #[serde(default)]
    active_days: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    escalate_to: String,
    #[serde(default)]
    escalate_after_min: String,
    #[serde(default)]
    webhook_url: String,
    #[serde(default)]
    mqtt_topic: String,
    #[serde(default)]
    notify_clear: Option<String>,
    #[serde(default)]
    shed_relay: String,
    #[serde(default)]
    restore_on_clear: Option<String>,
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
    fn target_value(&self) -> String {
        let t = self.target.trim();
        match (t, self.target_id.trim()) {
            ("panel" | "circuit" | "meter", id) if !id.is_empty() => format!("{t}:{id}"),
            _ => t.to_owned(),
        }
    }

    /// The rule, or every field that needs fixing.
    fn input(&self) -> Result<RuleInput, FieldErrors> {
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
fn store_errors(e: AlarmError) -> Result<FieldErrors, PageError> {
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

/// `POST /alarm-rules`: a new rule (admins).
pub async fn create_rule(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<RuleForm>,
) -> PageResult {
    save_rule(state, p, headers, None, form).await
}

/// `POST /alarm-rules/{id}`: the rule replaced (admins).
pub async fn update_rule(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<RuleForm>,
) -> PageResult {
    save_rule(state, p, headers, Some(id), form).await
}

async fn save_rule(
    state: WebState,
    p: Principal,
    headers: HeaderMap,
    id: Option<i64>,
    form: RuleForm,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    if let Some(id) = id {
        // A rule of another site is a 404 whatever the form says.
        store::get_rule(&state.pool, &p.scope, id)
            .await?
            .ok_or(PageError::NotFound)?;
    }
    let saved = match form.input() {
        Err(errors) => Err(errors),
        Ok(input) => {
            let result = match id {
                Some(id) => store::update_rule(&state.pool, &p.scope, id, &input)
                    .await
                    .map(|()| id),
                None => store::create_rule(&state.pool, &p.scope, p.user_id, &input).await,
            };
            match result {
                Ok(id) => Ok(id),
                Err(AlarmError::NotFound("alarm rule")) => return Err(PageError::NotFound),
                Err(e) => Err(store_errors(e)?),
            }
        }
    };
    match saved {
        Ok(id) => {
            state
                .alarms
                .rules_changed_and_loaded(std::time::Duration::from_secs(5))
                .await;
            Ok(Redirect::to(&format!("/alarm-rules/{id}?saved=1")).into_response())
        }
        Err(errors) => {
            show(
                &state,
                &p,
                &headers,
                id.is_none(),
                RuleFormView::from_form(id, &form),
                errors,
                None,
                None,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

pub async fn delete_rule(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    store::delete_rule(&state.pool, &p.scope, id).await?;
    state
        .alarms
        .rules_changed_and_loaded(std::time::Duration::from_secs(5))
        .await;
    Ok(Redirect::to("/alarm-rules?deleted=1").into_response())
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
