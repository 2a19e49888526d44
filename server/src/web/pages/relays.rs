//! Relays: the list, one relay, the confirmation step and the command ledger pages.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{CsrfForm, Nav, PageError, PageResult, PageUser};
use crate::relays::ledger::{self, CommandError, Created, NewCommand, Status};
use crate::web::session::ClientAddr;
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/relays", get(relays_page))
        .route("/relays/{id}", get(relay_page))
        .route("/relays/{id}/confirm", get(relay_confirm))
        .route("/relays/{id}/command", post(relay_command))
        .route("/commands/{id}", get(command_page))
        .route("/commands/{id}/{action}", post(command_action))
}

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

async fn relays_page(State(state): State<WebState>, user: PageUser) -> PageResult {
    let relays = ledger::list_relays(&state.pool, &user.scope)
        .await?
        .into_iter()
        .map(relay_row)
        .collect();
    user.render(&RelaysPage {
        title: "Relays",
        nav: user.nav(),
        relays,
    })
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    title: String,
    nav: Nav,
    relay: RelayRow,
    history: Vec<ledger::CommandView>,
}

/// A relay the user may see, as shown.
async fn visible_relay(state: &WebState, user: &PageUser, id: i64) -> Result<RelayRow, PageError> {
    Ok(relay_row(
        ledger::get_relay(&state.pool, &user.scope, id)
            .await?
            .ok_or(PageError::NotFound)?,
    ))
}

async fn relay_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
) -> PageResult {
    let relay = visible_relay(&state, &user, id).await?;
    let history = ledger::history(&state.pool, &user.scope, id, 50).await?;
    user.render(&RelayPage {
        title: relay.label.clone(),
        nav: user.nav(),
        relay,
        history,
    })
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
struct ConfirmParams {
    action: String,
}

async fn relay_confirm(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<ConfirmParams>,
) -> PageResult {
    user.require_operator()?;
    if !matches!(q.action.as_str(), "on" | "off" | "toggle") {
        return Err(PageError::Bad("the action is on, off or toggle".into()));
    }
    confirmation(&state, &user, id, q.action, String::new(), None).await
}

/// The confirmation step of `action` on relay `id`, with a fresh idempotency key; after a
/// refusal, with why (422) and the reason that was typed.
async fn confirmation(
    state: &WebState,
    user: &PageUser,
    id: i64,
    action: String,
    reason: String,
    error: Option<String>,
) -> PageResult {
    let relay = visible_relay(state, user, id).await?;
    let refused = error.is_some();
    let mut response = user.render(&ConfirmPage {
        title: format!("Switch {}", relay.label),
        nav: user.nav(),
        id,
        verb: verb(&action),
        label: relay.label,
        action,
        state: relay.state,
        critical: relay.critical,
        idempotency_key: fresh_key(),
        reason,
        error,
    })?;
    if refused {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

/// What the ledger's refusal of a command or of an action on one shows beside the form; the
/// other errors are the page's.
fn refusal(e: CommandError) -> Result<String, PageError> {
    match e {
        CommandError::NotFound(_) => Err(PageError::NotFound),
        CommandError::Forbidden(_) => Err(PageError::Forbidden),
        CommandError::Db(e) => Err(PageError::from(e)),
        CommandError::Invalid(m) | CommandError::Refused(m) => Ok(m),
    }
}

#[derive(Deserialize)]
struct CommandForm {
    action: String,
    idempotency_key: Option<String>,
    reason: Option<String>,
}

async fn relay_command(
    State(state): State<WebState>,
    user: PageUser,
    ClientAddr(from): ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<CommandForm>,
) -> PageResult {
    let action = match form.action.as_str() {
        "on" => ledger::Action::On,
        "off" => ledger::Action::Off,
        "toggle" => ledger::Action::Toggle,
        _ => return Err(PageError::Bad("the action is on, off or toggle".into())),
    };
    let created = ledger::create(
        &state.pool,
        &state.command_timing,
        &user,
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
    let command = match created {
        Ok(Created::New(c) | Created::Existing(c)) => c,
        Err(e) => {
            // The confirmation again, with why and what was typed.
            let why = refusal(e)?;
            let typed = form.reason.unwrap_or_default();
            return confirmation(&state, &user, id, form.action, typed, Some(why)).await;
        }
    };
    state.commands_wake.notify_one();
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

async fn command_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
) -> PageResult {
    command_view(&state, &user, id, None).await
}

/// A command of the ledger; after a refused approval or cancellation, with why (422).
async fn command_view(
    state: &WebState,
    user: &PageUser,
    id: i64,
    error: Option<String>,
) -> PageResult {
    let c = ledger::get_command(&state.pool, &user.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let refused = error.is_some();
    let mut response = user.render(&CommandPage {
        title: format!("Command {id}"),
        nav: user.nav(),
        verb: verb(&c.action),
        done: c.status.is_finished(),
        c,
        error,
    })?;
    if refused {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

async fn command_action(
    State(state): State<WebState>,
    user: PageUser,
    Path((id, what)): Path<(i64, String)>,
    _: CsrfForm,
) -> PageResult {
    let result = match what.as_str() {
        "approve" => ledger::approve(&state.pool, &user, id).await,
        "cancel" => ledger::cancel(&state.pool, &user, id).await,
        _ => return Err(PageError::NotFound),
    };
    if let Err(e) = result {
        // The command page again, saying why.
        return command_view(&state, &user, id, Some(refusal(e)?)).await;
    }
    state.commands_wake.notify_one();
    Ok(Redirect::to(&format!("/commands/{id}")).into_response())
}
