//! A site's Home Assistant publishing (`/admin/sites/{id}/home-assistant`, admins only): pick
//! one of the configured brokers, the discovery prefix and base topic, and see whether the
//! link is up (or why not). Same rules as the API (`web/api/northbound.rs`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::admin::percent;
use super::{AdminForm, Nav, PageError, PageResult, PageUser};
use crate::northbound::settings::{self, SettingsError, SettingsInput, SiteSettings};
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new().route("/admin/sites/{id}/home-assistant", get(page).post(save))
}

#[derive(Template)]
#[template(path = "northbound.html")]
struct NorthboundPage {
    title: &'static str,
    nav: Nav,
    site_id: i64,
    site_name: String,
    brokers: Vec<String>,
    settings: Option<SiteSettings>,
    broker: String,
    discovery_prefix: String,
    base_topic: String,
    enabled: bool,
    commands: bool,
    message: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Shown {
    message: Option<String>,
}

#[derive(Deserialize)]
struct Form {
    broker: String,
    discovery_prefix: String,
    base_topic: String,
    /// Checkboxes: present when ticked.
    enabled: Option<String>,
    commands: Option<String>,
}

async fn site_name(state: &WebState, site: i64) -> Result<String, PageError> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM sites WHERE id = $1")
        .bind(site)
        .fetch_optional(&state.pool)
        .await?;
    name.ok_or(PageError::NotFound)
}

async fn view(
    state: &WebState,
    user: &PageUser,
    site: i64,
    form: Option<Form>,
    message: Option<String>,
    error: Option<String>,
) -> PageResult {
    let site_name = site_name(state, site).await?;
    let saved = settings::get(&state.pool, site).await?;
    let brokers: Vec<String> = state
        .northbound
        .brokers
        .iter()
        .map(|b| b.name.clone())
        .collect();
    let (broker, discovery_prefix, base_topic, enabled, commands) = match (&form, &saved) {
        (Some(f), _) => (
            f.broker.clone(),
            f.discovery_prefix.clone(),
            f.base_topic.clone(),
            f.enabled.is_some(),
            f.commands.is_some(),
        ),
        (None, Some(s)) => (
            s.broker.clone(),
            s.discovery_prefix.clone(),
            s.base_topic.clone(),
            s.enabled,
            s.commands,
        ),
        (None, None) => (
            brokers.first().cloned().unwrap_or_default(),
            "homeassistant".into(),
            settings::default_base(&site_name),
            true,
            true,
        ),
    };
    user.render(&NorthboundPage {
        title: "Home Assistant",
        nav: user.nav(),
        site_id: site,
        site_name,
        brokers,
        settings: saved,
        broker,
        discovery_prefix,
        base_topic,
        enabled,
        commands,
        message: message.map(|m| m.chars().take(200).collect()),
        error,
    })
}

async fn page(
    State(state): State<WebState>,
    user: PageUser,
    Path(site): Path<i64>,
    Query(shown): Query<Shown>,
) -> PageResult {
    user.require_admin()?;
    view(&state, &user, site, None, shown.message, None).await
}

async fn save(
    State(state): State<WebState>,
    user: PageUser,
    Path(site): Path<i64>,
    AdminForm(form): AdminForm<Form>,
) -> PageResult {
    let input = SettingsInput {
        enabled: form.enabled.is_some(),
        broker: form.broker.clone(),
        discovery_prefix: Some(form.discovery_prefix.clone()),
        base_topic: Some(form.base_topic.clone()),
        commands: form.commands.is_some(),
    };
    match settings::put(&state.pool, &state.northbound, site, input, &user.email).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/admin/sites/{site}/home-assistant?message={}",
            percent("Saved: the publisher applies it within its interval.")
        ))
        .into_response()),
        Err(SettingsError::NoSite) => Err(PageError::NotFound),
        Err(SettingsError::Db(e)) => Err(e.into()),
        Err(SettingsError::Invalid(e)) => {
            // Refused, as every admin form: the page again with what was typed, 422.
            let mut refused = view(&state, &user, site, Some(form), None, Some(e)).await?;
            *refused.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(refused)
        }
    }
}
