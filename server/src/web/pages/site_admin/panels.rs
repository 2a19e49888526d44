//! Panels and their circuits.

use axum::extract::{Path, State};
use serde::Deserialize;

use super::{finish, refuse, removed, site, Ctx};
use crate::accounting::structure::{self, CircuitInput, PanelInput};
use crate::web::pages::form::Submitted;
use crate::web::pages::{AdminForm, PageError, PageResult, PageUser};
use crate::web::WebState;

#[derive(Deserialize)]
pub(super) struct PanelForm {
    name: String,
}

/// The field a panel or circuit refusal is about.
fn field(message: &str) -> &'static str {
    if message.contains("usage") {
        "usage"
    } else {
        "name"
    }
}

pub(super) async fn create_panel(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<PanelForm>,
) -> PageResult {
    site(&state, id).await?;
    save_panel(Ctx::new(&state, &user, id), None, form).await
}

pub(super) async fn rename_panel(
    State(state): State<WebState>,
    user: PageUser,
    Path((id, panel)): Path<(i64, i64)>,
    AdminForm(form): AdminForm<PanelForm>,
) -> PageResult {
    on_site(id, site_of_panel(&state, panel).await?)?;
    save_panel(Ctx::new(&state, &user, id), Some(panel), form).await
}

/// A new panel of the site (`panel` `None`) or one renamed.
async fn save_panel(ctx: Ctx<'_>, panel: Option<i64>, form: PanelForm) -> PageResult {
    let form_id = panel.map_or_else(|| "new-panel".to_owned(), |p| format!("panel-{p}"));
    let mut s = Submitted::new();
    s.keep(&format!("{form_id}-name"), &form.name);
    let input = PanelInput {
        name: Some(form.name),
        description: None,
    };
    let pool = &ctx.state.pool;
    let done = match panel {
        None => structure::create_panel(pool, ctx.site, &input)
            .await
            .map(|_| "Panel created; add its circuits below.".into()),
        Some(panel) => structure::update_panel(pool, panel, &input)
            .await
            .map(|()| "Panel renamed.".into()),
    };
    finish(ctx, "panels", done, s, field, &form_id).await
}

/// The site of panel `panel`, if it exists.
async fn site_of_panel(state: &WebState, panel: i64) -> Result<Option<i64>, PageError> {
    Ok(structure::get_panel(&state.pool, panel)
        .await?
        .map(|p| p.site_id))
}

/// A panel or circuit of `site` (`of`: the site it is on, if it exists); another site's is
/// not found.
fn on_site(site: i64, of: Option<i64>) -> Result<(), PageError> {
    (of == Some(site)).then_some(()).ok_or(PageError::NotFound)
}

pub(super) async fn delete_panel(
    State(state): State<WebState>,
    _user: PageUser,
    Path((id, panel)): Path<(i64, i64)>,
    _: AdminForm,
) -> PageResult {
    on_site(id, site_of_panel(&state, panel).await?)?;
    let result = structure::delete_panel(&state.pool, panel).await;
    state.energy_changed();
    let done = "Panel deleted with its circuits; its meters are not placed now.";
    removed(id, "panels", result, done)
}

#[derive(Deserialize)]
pub(super) struct CircuitForm {
    panel_id: Option<String>,
    name: String,
    usage: String,
}

/// What a circuit form typed, kept under `form_id` for a refusal.
fn typed(form_id: &str, form: &CircuitForm) -> Submitted {
    let mut s = Submitted::new();
    s.keep(&format!("{form_id}-name"), &form.name);
    s.keep(&format!("{form_id}-usage"), &form.usage);
    s
}

pub(super) async fn create_circuit(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<CircuitForm>,
) -> PageResult {
    site(&state, id).await?;
    let ctx = Ctx::new(&state, &user, id);
    let mut s = typed("new-circuit", &form);
    let panel_text = form.panel_id.clone().unwrap_or_default();
    s.keep("new-circuit-panel_id", &panel_text);
    // The panel must be one of this site's: another site's panel is refused like none.
    let panel = match panel_text.trim().parse::<i64>() {
        Ok(panel) => on_site(id, site_of_panel(&state, panel).await?)
            .ok()
            .map(|()| panel),
        Err(_) => None,
    };
    let Some(panel) = panel else {
        s.add("new-circuit-panel_id", "choose the panel the circuit is in");
        return refuse(ctx, s).await;
    };
    let input = input(form);
    let result = structure::create_circuit(&state.pool, panel, &input).await;
    let done = result.map(|_| "Circuit created; place its meter below.".into());
    finish(ctx, "circuits", done, s, field, "new-circuit").await
}

fn input(form: CircuitForm) -> CircuitInput {
    CircuitInput {
        name: Some(form.name),
        usage: Some(form.usage),
        description: None,
    }
}

pub(super) async fn update_circuit(
    State(state): State<WebState>,
    user: PageUser,
    Path((id, circuit)): Path<(i64, i64)>,
    AdminForm(form): AdminForm<CircuitForm>,
) -> PageResult {
    circuit_of(&state, id, circuit).await?;
    let form_id = format!("circuit-{circuit}");
    let s = typed(&form_id, &form);
    let result = structure::update_circuit(&state.pool, circuit, &input(form)).await;
    // The usage groups of the site's consumption follow at the next query; nothing to rebuild.
    let done = result.map(|()| "Circuit saved.".into());
    finish(
        Ctx::new(&state, &user, id),
        "circuits",
        done,
        s,
        field,
        &form_id,
    )
    .await
}

/// Circuit `circuit` is one of `site`'s.
async fn circuit_of(state: &WebState, site: i64, circuit: i64) -> Result<(), PageError> {
    let of = structure::get_circuit(&state.pool, circuit).await?;
    on_site(site, of.map(|c| c.site_id))
}

pub(super) async fn delete_circuit(
    State(state): State<WebState>,
    _user: PageUser,
    Path((id, circuit)): Path<(i64, i64)>,
    _: AdminForm,
) -> PageResult {
    circuit_of(&state, id, circuit).await?;
    let result = structure::delete_circuit(&state.pool, circuit).await;
    state.energy_changed();
    removed(
        id,
        "circuits",
        result,
        "Circuit deleted; its meters are not placed now.",
    )
}
