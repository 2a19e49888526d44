//! Relays: the list, one relay, the confirmation step and the command ledger pages.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use super::{check_csrf, nav, render, CsrfForm, Nav, PageError, PageResult, PageUser};
use crate::auth::Role;
use crate::relays::ledger::{self, Created, NewCommand, Status};
use crate::web::WebState;

pub struct RelayRow {
    id: i64,
    label: String,
    gateway: String,
    online: bool,
    state: &'static str,
    age: String,
    critical: bool,
    /// The command in flight: id, action, status.
    in_flight: Option<(i64, String, Status)>,
    operations: i64,
    rated: i32,
    wear_pct: f64,
}

fn relay_row(r: ledger::RelayView) -> RelayRow {
    RelayRow {
        label: r.name.clone().or(r.description.clone()).unwrap_or_else(|| {
            format!(
                "{} relay {}",
                r.port.to_uppercase(),
                if r.port == "ir" {
                    String::new()
                } else {
                    r.slot.to_string()
                }
            )
            .trim()
            .to_owned()
        }),
        id: r.id,
        gateway: r.gateway,
        online: r.gateway_online,
        state: match r.state {
            Some(1) => "ON",
            Some(0) => "OFF",
            Some(_) => "unknown",
            None => "never reported",
        },
        age: r
            .state_age_s
            .map_or(String::new(), |s| format!("{} ago", human_age(s))),
        critical: r.critical,
        in_flight: r
            .command_in_flight
            .zip(r.command_status)
            .map(|(id, status)| (id, r.command_action.unwrap_or_default(), status)),
        operations: r.operations,
        rated: r.rated_operations,
        wear_pct: r.wear_pct,
    }
}

fn human_age(s: f64) -> String {
    let s = s.max(0.0) as i64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[derive(Template)]
#[template(path = "relays.html")]
struct RelaysPage {
    title: &'static str,
    nav: Nav,
    relays: Vec<RelayRow>,
}

pub async fn relays_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
) -> PageResult {
    let relays = ledger::list_relays(&state.pool, &p.scope)
        .await?
        .into_iter()
        .map(relay_row)
        .collect();
    let (nav, set) = nav(&p, &headers);
    render(
        &RelaysPage {
            title: "Relays",
            nav,
            relays,
        },
        set,
    )
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    title: String,
    nav: Nav,
    relay: RelayRow,
    history: Vec<ledger::CommandView>,
}

pub async fn relay_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> PageResult {
    let relay = relay_row(
        ledger::get_relay(&state.pool, &p.scope, id)
            .await?
            .ok_or(PageError::NotFound)?,
    );
    let history = ledger::history(&state.pool, &p.scope, id, 50).await?;
    let (nav, set) = nav(&p, &headers);
    render(
        &RelayPage {
            title: relay.label.clone(),
            nav,
            relay,
            history,
        },
        set,
    )
}

#[derive(Template)]
#[template(path = "relay_confirm.html")]
struct ConfirmPage {
    title: String,
    nav: Nav,
    id: i64,
    label: String,
    action: String,
    /// "switch off", "switch on", "toggle".
    verb: &'static str,
    state: &'static str,
    critical: bool,
    idempotency_key: String,
    reason: String,
    /// Why the command was refused (shown beside the form, status 422).
    error: Option<String>,
}

/// What an action does, in words.
fn verb(action: &str) -> &'static str {
    match action {
        "on" => "switch on",
        "off" => "switch off",
        _ => "toggle",
    }
}

/// A fresh idempotency key: a double submit of the confirmation (a double click, a reload)
/// makes one command.
fn fresh_key() -> String {
    (0..12)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[derive(Deserialize)]
pub struct ConfirmParams {
    action: String,
}

pub async fn relay_confirm(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<ConfirmParams>,
) -> PageResult {
    if !matches!(p.role, Role::Admin | Role::Operator) {
        return Err(PageError::Forbidden);
    }
    if !matches!(q.action.as_str(), "on" | "off" | "toggle") {
        return Err(PageError::Bad("the action is on, off or toggle".into()));
    }
    let relay = relay_row(
        ledger::get_relay(&state.pool, &p.scope, id)
            .await?
            .ok_or(PageError::NotFound)?,
    );
    let (nav, set) = nav(&p, &headers);
    render(
        &ConfirmPage {
            title: format!("Switch {}", relay.label),
            nav,
            id,
            verb: verb(&q.action),
            label: relay.label,
            action: q.action,
            state: relay.state,
            critical: relay.critical,
            idempotency_key: fresh_key(),
            reason: String::new(),
            error: None,
        },
        set,
    )
}

#[derive(Deserialize)]
pub struct CommandForm {
    csrf: String,
    action: String,
    idempotency_key: Option<String>,
    reason: Option<String>,
}

pub async fn relay_command(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    crate::web::legacy_relays::ClientAddr(from): crate::web::legacy_relays::ClientAddr,
    Path(id): Path<i64>,
    Form(form): Form<CommandForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    let reason_typed = form.reason.clone().unwrap_or_default();
    let action = match form.action.as_str() {
        "on" => ledger::Action::On,
        "off" => ledger::Action::Off,
        "toggle" => ledger::Action::Toggle,
        _ => return Err(PageError::Bad("the action is on, off or toggle".into())),
    };
    let created = ledger::create(
        &state.pool,
        &state.command_timing,
        &p,
        from,
        id,
        NewCommand {
            action,
            idempotency_key: form.idempotency_key.filter(|k| !k.is_empty()),
            expires_at: None,
            expires_in_s: None,
            reason: form.reason.clone().filter(|r| !r.trim().is_empty()),
        },
    )
    .await;
    let created = match created {
        Ok(c) => c,
        Err(ledger::CommandError::NotFound(_)) => return Err(PageError::NotFound),
        Err(ledger::CommandError::Forbidden(_)) => return Err(PageError::Forbidden),
        Err(ledger::CommandError::Db(e)) => return Err(PageError::from(e)),
        Err(ledger::CommandError::Invalid(m) | ledger::CommandError::Refused(m)) => {
            // The confirmation again, with why and what was typed.
            let relay = relay_row(
                ledger::get_relay(&state.pool, &p.scope, id)
                    .await?
                    .ok_or(PageError::NotFound)?,
            );
            let (nav, set) = nav(&p, &headers);
            let mut response = render(
                &ConfirmPage {
                    title: format!("Switch {}", relay.label),
                    nav,
                    id,
                    verb: verb(&form.action),
                    label: relay.label,
                    action: form.action.clone(),
                    state: relay.state,
                    critical: relay.critical,
                    idempotency_key: fresh_key(),
                    reason: reason_typed,
                    error: Some(m),
                },
                set,
            )?;
            *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
    };
    state.commands_wake.notify_one();
    let command = match created {
        Created::New(c) | Created::Existing(c) => c,
    };
    Ok(Redirect::to(&format!("/commands/{command}")).into_response())
}

#[derive(Template)]
#[template(path = "command.html")]
struct CommandPage {
    title: String,
    nav: Nav,
    /// Its status in words: `c.status.describe()` (the status itself stays in `#status`).
    c: ledger::CommandView,
    done: bool,
    verb: &'static str,
    /// Why an approval or cancellation was refused (status 422).
    error: Option<String>,
}

pub async fn command_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> PageResult {
    let c = ledger::get_command(&state.pool, &p.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let done = c.status.is_finished();
    let (nav, set) = nav(&p, &headers);
    render(
        &CommandPage {
            title: format!("Command {id}"),
            nav,
            verb: verb(&c.action),
            c,
            done,
            error: None,
        },
        set,
    )
}

pub async fn command_action(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, what)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    let result = match what.as_str() {
        "approve" => ledger::approve(&state.pool, &p, id).await,
        "cancel" => ledger::cancel(&state.pool, &p, id).await,
        _ => return Err(PageError::NotFound),
    };
    match result {
        Ok(()) => {}
        Err(ledger::CommandError::NotFound(_)) => return Err(PageError::NotFound),
        Err(ledger::CommandError::Forbidden(_)) => return Err(PageError::Forbidden),
        Err(ledger::CommandError::Db(e)) => return Err(PageError::from(e)),
        Err(ledger::CommandError::Invalid(m) | ledger::CommandError::Refused(m)) => {
            // The command page again, saying why.
            let c = ledger::get_command(&state.pool, &p.scope, id)
                .await?
                .ok_or(PageError::NotFound)?;
            let done = c.status.is_finished();
            let (nav, set) = nav(&p, &headers);
            let mut response = render(
                &CommandPage {
                    title: format!("Command {id}"),
                    nav,
                    verb: verb(&c.action),
                    c,
                    done,
                    error: Some(m),
                },
                set,
            )?;
            *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
    }
    state.commands_wake.notify_one();
    Ok(Redirect::to(&format!("/commands/{id}")).into_response())
}

// ---- gateways and admin ----------------------------------------------------------------------
