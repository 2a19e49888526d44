//! The rule list and the rule editor. What a rule applies to and the relay it sheds are picked
//! from lists of the site's panels, circuits, meters and relays (never typed ids); thresholds
//! are typed in the unit of what is watched (kW, V, min) and stored in SI; a refused form comes
//! back (422) with what was typed and the message beside the field.
//!
//! This module owns the handlers and the page. Parts: `choices` (the objects a rule can name
//! and the editor's pickers), `view` (a stored rule as the editor and the list show it), `form`
//! (the form as posted: parsing and checks into `FieldErrors`).

mod choices;
mod form;
mod view;

use form::RuleForm;
pub(super) use view::unit_of_watch;

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use self::choices::{Choices, Objects};
use self::form::store_errors;
use self::view::{rule_row, RuleFormView, RuleRow};
use super::site_names;
use crate::alarms::store;
use crate::alarms::AlarmError;
use crate::web::pages::form::FieldErrors;
use crate::web::pages::{AdminForm, Nav, PageError, PageResult, PageUser};
use crate::web::WebState;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/alarm-rules", get(rules_page).post(create_rule))
        .route("/alarm-rules/{id}", get(rule_page).post(update_rule))
        .route("/alarm-rules/{id}/delete", post(delete_rule))
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

#[derive(Deserialize, Default)]
struct RulesParams {
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    saved: Option<String>,
    #[serde(default)]
    deleted: Option<String>,
}

/// The editor: the new-rule form with the list of rules (`listing`), or one rule; a refused
/// form comes back with its messages (422).
async fn show(
    state: &WebState,
    user: &PageUser,
    listing: bool,
    (form, errors): (RuleFormView, FieldErrors),
    notice: Option<&'static str>,
    site_filter: Option<i64>,
) -> PageResult {
    let sites = site_names(state, user).await?;
    let objects = Objects::load(&state.pool, &user.scope).await?;
    let rules = if listing {
        let names: HashMap<i64, String> = sites.iter().cloned().collect();
        store::list_rules(&state.pool, &user.scope, None)
            .await?
            .iter()
            .map(|r| rule_row(r, &names, &objects))
            .collect()
    } else {
        Vec::new()
    };
    let site_filter = site_filter.filter(|f| sites.iter().any(|(id, _)| id == f));
    let title = match form.id {
        Some(_) => format!("Alarm rule: {}", form.f.name),
        None => "Alarm rules".to_owned(),
    };
    let refused = !errors.is_empty();
    let mut response = user.render(&RulesPage {
        title,
        nav: user.nav(),
        rules,
        listing,
        notice,
        errors,
        choices: Choices::new(&form, &sites, &objects, site_filter),
        form,
    })?;
    if refused {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

async fn rules_page(
    State(state): State<WebState>,
    user: PageUser,
    Query(q): Query<RulesParams>,
) -> PageResult {
    let site_filter = q.site_id.as_deref().and_then(|s| s.parse().ok());
    let notice = q.deleted.map(|_| "The rule was deleted.");
    let form = (RuleFormView::new_rule(site_filter), FieldErrors::new());
    show(&state, &user, true, form, notice, site_filter).await
}

async fn rule_page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<RulesParams>,
) -> PageResult {
    let rule = store::get_rule(&state.pool, &user.scope, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let notice = q.saved.map(|_| "The rule was saved.");
    let form = (RuleFormView::from_rule(&rule), FieldErrors::new());
    show(&state, &user, false, form, notice, None).await
}

/// `POST /alarm-rules`: a new rule (admins).
async fn create_rule(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(form): AdminForm<RuleForm>,
) -> PageResult {
    save_rule(state, user, None, form).await
}

/// `POST /alarm-rules/{id}`: the rule replaced (admins).
async fn update_rule(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<RuleForm>,
) -> PageResult {
    save_rule(state, user, Some(id), form).await
}

async fn save_rule(state: WebState, user: PageUser, id: Option<i64>, form: RuleForm) -> PageResult {
    if let Some(id) = id {
        // A rule of another site is a 404 whatever the form says.
        store::get_rule(&state.pool, &user.scope, id)
            .await?
            .ok_or(PageError::NotFound)?;
    }
    let saved = match form.input() {
        Err(errors) => Err(errors),
        Ok(input) => {
            let result = match id {
                Some(id) => store::update_rule(&state.pool, &user.scope, id, &input)
                    .await
                    .map(|()| id),
                None => store::create_rule(&state.pool, &user.scope, user.user_id, &input).await,
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
            let form = (RuleFormView::from_form(id, form), errors);
            show(&state, &user, id.is_none(), form, None, None).await
        }
    }
}

async fn delete_rule(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    _: AdminForm,
) -> PageResult {
    store::delete_rule(&state.pool, &user.scope, id).await?;
    state
        .alarms
        .rules_changed_and_loaded(std::time::Duration::from_secs(5))
        .await;
    Ok(Redirect::to("/alarm-rules?deleted=1").into_response())
}
