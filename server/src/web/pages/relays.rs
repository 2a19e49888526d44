//! Relays: the list, one relay, the confirmation step and the command ledger pages.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use super::{check_csrf, nav, render, CsrfForm, Nav, PageError, PageResult, PageUser};
use crate::auth::Role;
use crate::commands::ledger::{self, Created, NewCommand};
use crate::web::WebState;

pub struct RelayRow {
    id: i64,
    label: String,
    gateway: String,
    online: bool,
    state: &'static str,
    age: String,
    critical: bool,
    in_flight: Option<(i64, String, String)>,
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
        in_flight: r.command_in_flight.map(|id| {
            (
                id,
                r.command_action.unwrap_or_default(),
                r.command_status.unwrap_or_default(),
            )
        }),
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
    state: &'static str,
    idempotency_key: String,
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
    // A double submit of the confirmation (a double click, a reload) makes one command.
    let key: String = (0..12)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    render(
        &ConfirmPage {
            title: format!("Switch {}", relay.label),
            nav,
            id,
            label: relay.label,
            action: q.action,
            state: relay.state,
            idempotency_key: key,
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
    crate::web::relays::ClientAddr(from): crate::web::relays::ClientAddr,
    Path(id): Path<i64>,
    Form(form): Form<CommandForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
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
            reason: form.reason.filter(|r| !r.trim().is_empty()),
        },
    )
    .await
    .map_err(|e| match e {
        ledger::CommandError::NotFound(_) => PageError::NotFound,
        ledger::CommandError::Forbidden(_) => PageError::Forbidden,
        ledger::CommandError::Invalid(m) | ledger::CommandError::Refused(m) => PageError::Bad(m),
        ledger::CommandError::Db(e) => PageError::from(e),
    })?;
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
    c: ledger::CommandView,
    done: bool,
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
    let done = matches!(
        c.status.as_str(),
        "confirmed" | "failed" | "expired" | "cancelled"
    );
    let (nav, set) = nav(&p, &headers);
    render(
        &CommandPage {
            title: format!("Command {id}"),
            nav,
            c,
            done,
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
    result.map_err(|e| match e {
        ledger::CommandError::NotFound(_) => PageError::NotFound,
        ledger::CommandError::Forbidden(_) => PageError::Forbidden,
        ledger::CommandError::Invalid(m) | ledger::CommandError::Refused(m) => PageError::Bad(m),
        ledger::CommandError::Db(e) => PageError::from(e),
    })?;
    state.commands_wake.notify_one();
    Ok(Redirect::to(&format!("/commands/{id}")).into_response())
}

// ---- gateways and admin ----------------------------------------------------------------------
