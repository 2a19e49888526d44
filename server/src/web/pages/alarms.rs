//! Alarm pages: the alarm list (active first, filter by site and severity) with acknowledge and
//! shelve forms, an alarm's history, the rule list and the rule editor. Same conventions as
//! `pages`: session cookie, a CSRF token in every form, askama templates.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use chrono::{Duration, NaiveTime, Utc};
use serde::Deserialize;

use super::{check_csrf, nav, render, Nav, PageError, PageResult, PageUser};
use crate::alarms::rules::{ActiveHours, Compare, Condition};
use crate::alarms::store::{self, AlarmFilter, AlarmView, EventView, RuleInput, RuleView};
use crate::alarms::{lifecycle, Actions, AlarmError, Severity, Watch};
use crate::sites;
use crate::web::WebState;

impl From<AlarmError> for PageError {
    fn from(e: AlarmError) -> Self {
        match e {
            AlarmError::Invalid(m) | AlarmError::Conflict(m) => Self::Bad(m),
            AlarmError::NotFound(_) => Self::NotFound,
            AlarmError::Forbidden(_) => Self::Forbidden,
            AlarmError::Db(e) => Self::from(e),
        }
    }
}

#[derive(Template)]
#[template(path = "alarms.html")]
struct AlarmsPage {
    title: &'static str,
    nav: Nav,
    alarms: Vec<AlarmView>,
    /// (id, name, selected)
    sites: Vec<(i64, String, bool)>,
    site_id: Option<i64>,
    severities: Vec<(&'static str, bool)>,
    states: Vec<(&'static str, bool)>,
}

/// `<option>`s: each value with whether it is the selected one.
fn options(values: &[&'static str], selected: &str) -> Vec<(&'static str, bool)> {
    values.iter().map(|v| (*v, *v == selected)).collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

async fn site_names(
    state: &WebState,
    p: &crate::auth::Principal,
) -> Result<Vec<(i64, String)>, PageError> {
    Ok(sites::list(&state.pool, &p.scope)
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect())
}

pub async fn alarms_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Query(q): Query<ListParams>,
) -> PageResult {
    let site_id = q.site_id.as_deref().and_then(|s| s.parse().ok());
    let severity = q.severity.filter(|s| Severity::parse(s).is_some());
    let filter = AlarmFilter {
        site_id,
        severity: severity.clone(),
        state: q
            .state
            .clone()
            .filter(|s| matches!(s.as_str(), "open" | "active" | "all")),
        limit: Some(1000),
    };
    let alarms = store::list_alarms(&state.pool, &p.scope, &filter).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &AlarmsPage {
            title: "Alarms",
            nav,
            alarms,
            sites: site_names(&state, &p)
                .await?
                .into_iter()
                .map(|(id, name)| (id, name, Some(id) == site_id))
                .collect(),
            site_id,
            severities: options(
                &["critical", "warning", "info"],
                severity.as_deref().unwrap_or(""),
            ),
            states: options(
                &["open", "active", "all"],
                filter.state.as_deref().unwrap_or("open"),
            ),
        },
        set,
    )
}

#[derive(Template)]
#[template(path = "alarm.html")]
struct AlarmPage {
    title: String,
    nav: Nav,
    a: AlarmView,
    events: Vec<EventView>,
}

pub async fn alarm_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> PageResult {
    let a = store::get_alarm(&state.pool, &p.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let events = store::alarm_events(&state.pool, id).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &AlarmPage {
            title: format!("Alarm {id}"),
            nav,
            a,
            events,
        },
        set,
    )
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    minutes: Option<u32>,
}

/// `POST /alarms/{id}/{acknowledge|shelve|unshelve}`, then back to the alarm.
pub async fn alarm_action(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match action.as_str() {
        "acknowledge" => lifecycle::acknowledge(&state.pool, &p, id, comment).await?,
        "shelve" => {
            let minutes = form
                .minutes
                .ok_or_else(|| PageError::Bad("choose how long to shelve".into()))?;
            let until = Utc::now() + Duration::minutes(i64::from(minutes));
            lifecycle::shelve(&state.pool, &p, id, until, comment).await?;
        }
        "unshelve" => lifecycle::unshelve(&state.pool, &p, id).await?,
        _ => return Err(PageError::NotFound),
    }
    Ok(Redirect::to(&format!("/alarms/{id}")).into_response())
}

/// A rule as the editor shows it: every field as text.
#[derive(Default)]
struct RuleFormView {
    id: Option<i64>,
    site_id: i64,
    name: String,
    enabled: bool,
    severity: String,
    target: String,
    target_id: String,
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
    fn new_rule() -> Self {
        Self {
            enabled: true,
            severity: "warning".into(),
            target: "site".into(),
            kind: "measurement".into(),
            quantity: "u1".into(),
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
        let (op, threshold, low, high) = match c.compare {
            Compare::Above { threshold } => ("above", Some(threshold), None, None),
            Compare::Below { threshold } => ("below", Some(threshold), None, None),
            Compare::Outside { low, high } => ("outside", None, Some(low), Some(high)),
        };
        let (kind, quantity, window) = match &r.watch.0 {
            Watch::Measurement { quantity } => ("measurement", quantity.clone(), None),
            Watch::GatewayOffline => ("gateway_offline", String::new(), None),
            Watch::NoData => ("no_data", String::new(), None),
            Watch::NotAnswering => ("not_answering", String::new(), None),
            Watch::ClockSkew => ("clock_skew", String::new(), None),
            Watch::Rejects { window_s } => ("rejects", String::new(), Some(*window_s)),
            Watch::Energy15 => ("energy_15min", String::new(), None),
            Watch::MeanPower15 => ("mean_power_15min", String::new(), None),
            Watch::PeakDemand => ("peak_demand", String::new(), None),
        };
        Self {
            id: Some(r.id),
            site_id: r.site_id,
            name: r.name.clone(),
            enabled: r.enabled,
            severity: r.severity.clone(),
            target: r.target.clone(),
            target_id: text(r.panel_id.or(r.circuit_id).or(r.device_id)),
            kind: kind.into(),
            quantity,
            window_s: text(window),
            op: op.into(),
            threshold: text(threshold),
            low: text(low),
            high: text(high),
            hysteresis: c.hysteresis.to_string(),
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
}

#[derive(Template)]
#[template(path = "alarm_rules.html")]
struct RulesPage {
    title: &'static str,
    nav: Nav,
    rules: Vec<RuleView>,
    form: RuleFormView,
    choices: Choices,
}

/// The editor's `<option>`s with the rule's value selected.
struct Choices {
    sites: Vec<(i64, String, bool)>,
    severities: Vec<(&'static str, bool)>,
    targets: Vec<(&'static str, bool)>,
    kinds: Vec<(&'static str, bool)>,
    quantities: Vec<(&'static str, bool)>,
    ops: Vec<(&'static str, bool)>,
}

impl Choices {
    fn new(form: &RuleFormView, sites: &[(i64, String)]) -> Self {
        Self {
            sites: sites
                .iter()
                .map(|(id, name)| (*id, name.clone(), *id == form.site_id))
                .collect(),
            severities: options(&["info", "warning", "critical"], &form.severity),
            targets: options(&["site", "panel", "circuit", "meter"], &form.target),
            kinds: options(
                &[
                    "measurement",
                    "gateway_offline",
                    "no_data",
                    "not_answering",
                    "clock_skew",
                    "rejects",
                    "energy_15min",
                    "mean_power_15min",
                    "peak_demand",
                ],
                &form.kind,
            ),
            quantities: options(
                &crate::ingest::normalize::MEASUREMENT_COLUMNS,
                &form.quantity,
            ),
            ops: options(&["above", "below", "outside"], &form.op),
        }
    }
}

pub async fn rules_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let rules = store::list_rules(&state.pool, &p.scope, None).await?;
    let sites = site_names(&state, &p).await?;
    let form = RuleFormView::new_rule();
    let (nav, set) = nav(&p, &headers);
    render(
        &RulesPage {
            title: "Alarm rules",
            nav,
            rules,
            choices: Choices::new(&form, &sites),
            form,
        },
        set,
    )
}

pub async fn rule_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> PageResult {
    let rule = store::get_rule(&state.pool, &p.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let sites = site_names(&state, &p).await?;
    let form = RuleFormView::from_rule(&rule);
    let (nav, set) = nav(&p, &headers);
    render(
        &RulesPage {
            title: "Alarm rules",
            nav,
            rules: vec![],
            choices: Choices::new(&form, &sites),
            form,
        },
        set,
    )
}

/// The editor's form. Checkboxes are present only when ticked.
#[derive(Deserialize)]
pub struct RuleForm {
    csrf: String,
    site_id: i64,
    name: String,
    #[serde(default)]
    enabled: Option<String>,
    severity: String,
    target: String,
    #[serde(default)]
    target_id: String,
    kind: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    window_s: String,
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

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<Option<T>, PageError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| PageError::Bad(format!("{what}: {s:?} is not a number")))
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

impl RuleForm {
    fn input(&self) -> Result<RuleInput, PageError> {
        let need = |v: Option<f64>, what: &str| {
            v.ok_or_else(|| PageError::Bad(format!("{what} is required")))
        };
        let compare = match self.op.as_str() {
            "above" => Compare::Above {
                threshold: need(num(&self.threshold, "threshold")?, "threshold")?,
            },
            "below" => Compare::Below {
                threshold: need(num(&self.threshold, "threshold")?, "threshold")?,
            },
            "outside" => Compare::Outside {
                low: need(num(&self.low, "low")?, "low")?,
                high: need(num(&self.high, "high")?, "high")?,
            },
            _ => {
                return Err(PageError::Bad(
                    "condition is above, below or outside".into(),
                ))
            }
        };
        let time = |s: &str, what: &str| -> Result<Option<NaiveTime>, PageError> {
            opt(s)
                .map(|t| {
                    NaiveTime::parse_from_str(&t, "%H:%M")
                        .map_err(|_| PageError::Bad(format!("{what}: use HH:MM")))
                })
                .transpose()
        };
        let active_hours = match (
            time(&self.active_from, "active from")?,
            time(&self.active_to, "active to")?,
        ) {
            (Some(from), Some(to)) => Some(ActiveHours {
                from,
                to,
                days: list(&self.active_days)
                    .iter()
                    .map(|d| {
                        d.parse()
                            .map_err(|_| PageError::Bad("active days are 1 to 7".into()))
                    })
                    .collect::<Result<_, _>>()?,
            }),
            (None, None) => None,
            _ => {
                return Err(PageError::Bad(
                    "give both active hours (from and to) or neither".into(),
                ))
            }
        };
        let watch = match self.kind.as_str() {
            "measurement" => Watch::Measurement {
                quantity: self.quantity.trim().to_owned(),
            },
            "gateway_offline" => Watch::GatewayOffline,
            "no_data" => Watch::NoData,
            "not_answering" => Watch::NotAnswering,
            "clock_skew" => Watch::ClockSkew,
            "energy_15min" => Watch::Energy15,
            "mean_power_15min" => Watch::MeanPower15,
            "peak_demand" => Watch::PeakDemand,
            "rejects" => Watch::Rejects {
                window_s: num(&self.window_s, "window")?.unwrap_or(900),
            },
            _ => return Err(PageError::Bad("unknown kind of rule".into())),
        };
        let target_id: Option<i64> = num(&self.target_id, "target id")?;
        let id_for = |t: &str| if self.target == t { target_id } else { None };
        Ok(RuleInput {
            site_id: self.site_id,
            name: self.name.clone(),
            enabled: self.enabled.is_some(),
            severity: Severity::parse(&self.severity)
                .ok_or_else(|| PageError::Bad("severity is info, warning or critical".into()))?,
            target: self.target.clone(),
            panel_id: id_for("panel"),
            circuit_id: id_for("circuit"),
            device_id: id_for("meter"),
            watch,
            condition: Condition {
                compare,
                hysteresis: num(&self.hysteresis, "hysteresis")?.unwrap_or(0.0),
                on_delay_s: num(&self.on_delay_s, "on-delay")?.unwrap_or(0),
                off_delay_s: num(&self.off_delay_s, "off-delay")?.unwrap_or(0),
                active_hours,
            },
            actions: Actions {
                email: list(&self.email),
                escalate_to: list(&self.escalate_to),
                escalate_after_min: num(&self.escalate_after_min, "escalate after")?,
                webhook_url: opt(&self.webhook_url),
                mqtt_topic: opt(&self.mqtt_topic),
                notify_clear: self.notify_clear.is_some(),
                shed_relay: num(&self.shed_relay, "relay")?,
                restore_on_clear: self.restore_on_clear.is_some(),
            },
        })
    }
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
    p: crate::auth::Principal,
    headers: HeaderMap,
    id: Option<i64>,
    form: RuleForm,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    super::require_admin(&p)?;
    let input = form.input()?;
    let id = match id {
        Some(id) => {
            store::update_rule(&state.pool, &p.scope, id, &input).await?;
            id
        }
        None => store::create_rule(&state.pool, &p.scope, p.user_id, &input).await?,
    };
    state
        .alarms
        .rules_changed_and_loaded(std::time::Duration::from_secs(5))
        .await;
    Ok(Redirect::to(&format!("/alarm-rules/{id}")).into_response())
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
    super::require_admin(&p)?;
    store::delete_rule(&state.pool, &p.scope, id).await?;
    state
        .alarms
        .rules_changed_and_loaded(std::time::Duration::from_secs(5))
        .await;
    Ok(Redirect::to("/alarm-rules").into_response())
}
