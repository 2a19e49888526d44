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

pub use form::RuleForm;
pub(super) use view::unit_of_watch;

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use self::choices::{Choices, Objects};
use self::form::store_errors;
use self::view::{rule_row, RuleFormView, RuleRow};
use super::site_names;
use crate::alarms::store;
use crate::alarms::AlarmError;
use crate::auth::Principal;
use crate::web::pages::form::FieldErrors;
use crate::web::pages::{
    check_csrf, nav, render, require_admin, Nav, PageError, PageResult, PageUser,
};
use crate::web::WebState;

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
