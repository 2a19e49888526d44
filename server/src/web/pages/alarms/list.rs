//! The alarm list (filter by site, severity and state) and one alarm with its history, with the
//! acknowledge and shelve forms.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::{options, site_names, SEVERITIES};
use crate::alarms::store::{self, AlarmFilter, AlarmView, EventView};
use crate::alarms::{lifecycle, Severity};
use crate::web::pages::{CsrfForm, Nav, PageError, PageResult, PageUser};
use crate::web::WebState;

/// An alarm state as people say it.
pub(super) fn state_label(state: &str) -> &'static str {
    match state {
        "active" => "Active",
        "active_acknowledged" => "Active, acknowledged",
        "cleared_unacknowledged" => "Cleared, not acknowledged",
        "cleared" | "closed" => "Cleared",
        _ => "Other",
    }
}

/// An alarm event kind as people say it.
fn event_label(kind: &str) -> String {
    match kind {
        "raised" => "Raised".into(),
        "reraised" => "Raised again".into(),
        "cleared" => "Cleared".into(),
        "acknowledged" => "Acknowledged".into(),
        "shelved" => "Shelved".into(),
        "unshelved" => "Unshelved".into(),
        "escalated" => "Escalated".into(),
        other => other.replace('_', " "),
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
    severities: Vec<(&'static str, &'static str, bool)>,
    states: Vec<(&'static str, &'static str, bool)>,
    /// A filter narrower than "open alarms of every site" is in effect.
    filtered: bool,
}

impl AlarmsPage {
    fn state_label(&self, state: &str) -> &'static str {
        state_label(state)
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListParams {
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

pub(super) async fn alarms_page(
    State(state): State<WebState>,
    user: PageUser,
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
    let alarms = store::list_alarms(&state.pool, &user.scope, &filter).await?;
    let shown_state = filter.state.as_deref().unwrap_or("open");
    user.render(&AlarmsPage {
        title: "Alarms",
        nav: user.nav(),
        alarms,
        sites: site_names(&state, &user)
            .await?
            .into_iter()
            .map(|(id, name)| (id, name, Some(id) == site_id))
            .collect(),
        site_id,
        severities: options(&SEVERITIES, severity.as_deref().unwrap_or("")),
        states: options(
            &[
                ("open", "Open (active or not acknowledged)"),
                ("active", "Active only"),
                ("all", "All, cleared included"),
            ],
            shown_state,
        ),
        filtered: site_id.is_some() || severity.is_some() || shown_state != "open",
    })
}

#[derive(Template)]
#[template(path = "alarm.html")]
struct AlarmPage {
    title: String,
    nav: Nav,
    a: AlarmView,
    state: &'static str,
    events: Vec<EventView>,
    /// What the last action did ("Acknowledged."), after its redirect.
    notice: Option<&'static str>,
    /// The unit of the rule's watched value and its factor from SI, when the rule still exists.
    unit: (&'static str, f64),
}

impl AlarmPage {
    fn event_label(&self, kind: &str) -> String {
        event_label(kind)
    }

    /// A value of the alarm (SI) in the unit its rule is written in: "2.5 kW".
    fn value(&self, v: &f64) -> String {
        let (unit, scale) = self.unit;
        let n = super::quantities::shown(*v, scale);
        if unit.is_empty() {
            n
        } else {
            format!("{n} {unit}")
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AlarmParams {
    #[serde(default)]
    done: Option<String>,
}

pub(super) async fn alarm_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<AlarmParams>,
) -> PageResult {
    let a = store::get_alarm(&state.pool, &user.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let events = store::alarm_events(&state.pool, id).await?;
    let unit = match a.rule_id {
        Some(rule) => store::get_rule(&state.pool, &user.scope, rule)
            .await?
            .map_or(("", 1.0), |r| super::rules::unit_of_watch(&r.watch.0)),
        None => ("", 1.0),
    };
    user.render(&AlarmPage {
        title: format!("Alarm {id}: {}", a.rule_name),
        nav: user.nav(),
        state: state_label(&a.state),
        a,
        events,
        notice: match q.done.as_deref() {
            Some("acknowledge") => Some("The alarm is acknowledged."),
            Some("shelve") => Some("The alarm is shelved: no notifications until it ends."),
            Some("unshelve") => Some("The alarm is no longer shelved."),
            _ => None,
        },
        unit,
    })
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    minutes: Option<u32>,
}

/// `POST /alarms/{id}/{acknowledge|shelve|unshelve}`, then back to the alarm.
pub(super) async fn alarm_action(
    State(state): State<WebState>,
    user: PageUser,
    Path((id, action)): Path<(i64, String)>,
    CsrfForm(form): CsrfForm<ActionForm>,
) -> PageResult {
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match action.as_str() {
        "acknowledge" => lifecycle::acknowledge(&state.pool, &user, id, comment).await?,
        "shelve" => {
            let minutes = form
                .minutes
                .ok_or_else(|| PageError::Bad("choose how long to shelve".into()))?;
            let until = Utc::now() + Duration::minutes(i64::from(minutes));
            lifecycle::shelve(&state.pool, &user, id, until, comment).await?;
        }
        "unshelve" => lifecycle::unshelve(&state.pool, &user, id).await?,
        _ => return Err(PageError::NotFound),
    }
    Ok(Redirect::to(&format!("/alarms/{id}?done={action}")).into_response())
}
