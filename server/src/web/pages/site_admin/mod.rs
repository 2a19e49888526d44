//! Administration of one site in the dashboard: settings, panels, circuits, meter placement
//! and supply contracts.
//!
//! Every form is admin-only and carries the CSRF token. A form the server accepts follows
//! POST-redirect-GET: the notice comes back in the redirect's query, shown as text next to the
//! form it concerns (`section`). A form it refuses is rendered again at once (422) with what
//! was typed and each message beside its field ([`Submitted`]), so nothing typed is lost.
//!
//! Parts: `panels` (panels and circuits), `meters` (placement, commissioning, moving a
//! gateway), `contract` (supply contracts: list, form and its handlers), `contract_fields`
//! (the contract form's fields and their checks), `pickers` (time zones, currencies, usages).

mod contract;
mod contract_fields;
mod meters;
mod panels;
pub(crate) mod pickers;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::form::Submitted;
use super::{AdminForm, Nav, PageError, PageResult, PageUser};
use crate::accounting::structure::{self, StructureError};
use crate::auth::Scope;
use crate::fleet::gateways;
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;
use crate::zone::TimeZone;
use pickers::{Choice, ChoiceGroup};

/// The routes of this module, merged into the page router.
pub fn routes() -> Router<WebState> {
    use contract::{contract_form, delete_contract, save_contract};
    use panels::{
        create_circuit, create_panel, delete_circuit, delete_panel, rename_panel, update_circuit,
    };
    Router::new()
        .route("/admin/sites/{id}", get(page))
        .route("/admin/sites/{id}/settings", post(settings))
        .route("/admin/sites/{id}/panels", post(create_panel))
        .route("/admin/sites/{id}/panels/{panel}", post(rename_panel))
        .route(
            "/admin/sites/{id}/panels/{panel}/delete",
            post(delete_panel),
        )
        .route("/admin/sites/{id}/circuits", post(create_circuit))
        .route("/admin/sites/{id}/circuits/{circuit}", post(update_circuit))
        .route(
            "/admin/sites/{id}/circuits/{circuit}/delete",
            post(delete_circuit),
        )
        .route(
            "/admin/sites/{id}/meters/{serial}",
            post(meters::place_meter),
        )
        .route(
            "/admin/gateways/{serial}/site",
            post(meters::assign_gateway),
        )
        .route(
            "/admin/sites/{id}/contract",
            get(contract_form).post(save_contract),
        )
        .route(
            "/admin/sites/{id}/contracts/{contract}/delete",
            post(delete_contract),
        )
}

async fn site(state: &WebState, id: i64) -> Result<sites::SiteView, PageError> {
    sites::get(&state.pool, &Scope::All, id)
        .await?
        .ok_or(PageError::NotFound)
}

/// Back to the site's admin page, with the outcome next to `section`.
fn back(site: i64, section: &str, result: Result<String, String>) -> Response {
    let (key, text) = match result {
        Ok(m) => ("message", m),
        Err(e) => ("error", e),
    };
    Redirect::to(&format!(
        "/admin/sites/{site}?section={section}&{key}={}#{section}",
        crate::web::urls::query_value(&text)
    ))
    .into_response()
}

/// The end of a delete form: back to `section` with `done`, or with why it was refused.
fn removed(site: i64, section: &str, result: Result<(), StructureError>, done: &str) -> PageResult {
    let outcome = match result {
        Ok(()) => Ok(done.to_owned()),
        Err(StructureError::Db(e)) => return Err(e.into()),
        Err(StructureError::NotFound(_)) => return Err(PageError::NotFound),
        Err(e) => Err(e.to_string()),
    };
    Ok(back(site, section, outcome))
}

/// What a form handler ends with: saved (redirect with `notice`), refused beside a field
/// (the page again, 422), or a page error.
async fn finish(
    ctx: Ctx<'_>,
    section: &str,
    result: Result<String, StructureError>,
    mut submitted: Submitted,
    field_of: impl Fn(&str) -> &'static str,
    form: &str,
) -> PageResult {
    match result {
        Ok(m) => Ok(back(ctx.site, section, Ok(m))),
        Err(StructureError::Db(e)) => Err(e.into()),
        Err(StructureError::NotFound(_)) => Err(PageError::NotFound),
        Err(e) => {
            let message = e.to_string();
            submitted.add(&format!("{form}-{}", field_of(&message)), message);
            refuse(ctx, submitted).await
        }
    }
}

/// The request a handler answers, for rendering the page again.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    state: &'a WebState,
    user: &'a PageUser,
    site: i64,
}

impl<'a> Ctx<'a> {
    fn new(state: &'a WebState, user: &'a PageUser, site: i64) -> Self {
        Self { state, user, site }
    }
}

/// The site's page again with the refused form's messages and values: 422.
async fn refuse(ctx: Ctx<'_>, submitted: Submitted) -> PageResult {
    let mut r = show(ctx, Outcome::default(), submitted).await?;
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

#[derive(Template)]
#[template(path = "admin_site.html")]
struct SiteAdminPage {
    title: String,
    nav: Nav,
    site: sites::SiteView,
    section: String,
    message: Option<String>,
    error: Option<String>,
    /// A refused form: its values and messages.
    s: Submitted,
    zones: Vec<ChoiceGroup>,
    panels: Vec<structure::PanelView>,
    circuits: Vec<structure::CircuitView>,
    /// Meters not placed yet, then the placed ones.
    unplaced: Vec<meters::MeterRow>,
    placed: Vec<meters::MeterRow>,
    /// Whether any gateway is on the site (to explain an empty meter list).
    gateways: i64,
    placements: Vec<Choice>,
    contracts: Vec<contract::ContractRow>,
    usages: Vec<Choice>,
}

impl SiteAdminPage {
    fn panel_name(&self, panel: &i64) -> &str {
        self.panels
            .iter()
            .find(|p| p.id == *panel)
            .map_or("", |p| p.name.as_str())
    }
}

#[derive(Deserialize, Default)]
struct Outcome {
    section: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

async fn page(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    Query(q): Query<Outcome>,
) -> PageResult {
    user.require_admin()?;
    show(Ctx::new(&state, &user, id), q, Submitted::new()).await
}

async fn show(ctx: Ctx<'_>, q: Outcome, s: Submitted) -> PageResult {
    let (state, id) = (ctx.state, ctx.site);
    let site = site(state, id).await?;
    let panels = structure::list_panels(&state.pool, id).await?;
    let circuits = structure::list_site_circuits(&state.pool, id).await?;
    let placements = meters::placement_choices(&panels, &circuits);
    let (unplaced, placed) = meters::rows(state, id, site.time_zone).await?;
    let gateways = gateways::count_on_site(&state.pool, id).await?;
    let contracts = contract::rows(state, id).await?;
    // Messages come back through the redirect's query: shown as text, never as markup.
    let clip = |m: Option<String>| m.map(|m| m.chars().take(300).collect::<String>());
    ctx.user.render(&SiteAdminPage {
        title: format!("Administration of {}", site.name),
        nav: ctx.user.nav(),
        zones: pickers::zone_groups(s.value("site-time_zone", site.time_zone.name())),
        site,
        section: q.section.unwrap_or_default(),
        message: clip(q.message),
        error: clip(q.error),
        s,
        panels,
        circuits,
        unplaced,
        placed,
        gateways,
        placements,
        contracts,
        usages: pickers::usages(),
    })
}

// ---- settings --------------------------------------------------------------------------------

#[derive(Deserialize)]
struct SettingsForm {
    name: String,
    time_zone: String,
}

async fn settings(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<SettingsForm>,
) -> PageResult {
    let mut s = Submitted::new();
    s.keep("site-name", &form.name);
    s.keep("site-time_zone", &form.time_zone);
    let ctx = Ctx::new(&state, &user, id);
    let zone = match form.time_zone.parse::<TimeZone>() {
        Ok(zone) => zone,
        Err(e) => {
            s.add("site-time_zone", e.to_string());
            return refuse(ctx, s).await;
        }
    };
    let result = structure::update_site(&state.pool, id, Some(&form.name), Some(zone)).await;
    if result.is_ok() {
        state.gateways_changed();
        state.energy_changed();
    }
    let done = result.map(|()| "Site saved.".into());
    finish(ctx, "settings", done, s, |_| "name", "site").await
}
