//! Panels and their circuits.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Form;
use serde::Deserialize;

use super::{back, finish, refuse, site, CsrfOnly, Ctx};
use crate::accounting::structure::{self, CircuitInput, PanelInput};
use crate::web::pages::form::Submitted;
use crate::web::pages::{check_csrf, require_admin, PageError, PageResult, PageUser};
use crate::web::WebState;

#[derive(Deserialize)]
pub struct PanelForm {
    csrf: String,
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

pub async fn create_panel(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<PanelForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    site(&state, id).await?;
    let ctx = Ctx {
        state: &state,
        p: &p,
        headers: &headers,
        site: id,
    };
    let mut s = Submitted::new();
    s.keep("new-panel-name", &form.name);
    let input = PanelInput {
        name: Some(form.name),
        description: None,
    };
    let result = structure::create_panel(&state.pool, id, &input).await;
    let done = result.map(|_| "Panel created; add its circuits below.".into());
    finish(ctx, "panels", done, s, field, "new-panel").await
}

async fn panel_of(state: &WebState, site: i64, panel: i64) -> Result<(), PageError> {
    match structure::get_panel(&state.pool, panel).await? {
        Some(p) if p.site_id == site => Ok(()),
        _ => Err(PageError::NotFound),
    }
}

pub async fn rename_panel(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, panel)): Path<(i64, i64)>,
    Form(form): Form<PanelForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    panel_of(&state, id, panel).await?;
    let ctx = Ctx {
        state: &state,
        p: &p,
        headers: &headers,
        site: id,
    };
    let form_id = format!("panel-{panel}");
    let mut s = Submitted::new();
    s.keep(&format!("{form_id}-name"), &form.name);
    let input = PanelInput {
        name: Some(form.name),
        description: None,
    };
    let result = structure::update_panel(&state.pool, panel, &input).await;
    let done = result.map(|()| "Panel renamed.".into());
    finish(ctx, "panels", done, s, field, &form_id).await
}

pub async fn delete_panel(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, panel)): Path<(i64, i64)>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    panel_of(&state, id, panel).await?;
    let result = structure::delete_panel(&state.pool, panel).await;
    state.energy_changed();
    Ok(back(
        id,
        "panels",
        match result {
            Ok(()) => Ok("Panel deleted with its circuits; its meters are not placed now.".into()),
            Err(structure::StructureError::Db(e)) => return Err(e.into()),
            Err(structure::StructureError::NotFound(_)) => return Err(PageError::NotFound),
            Err(e) => Err(e.to_string()),
        },
    ))
}

#[derive(Deserialize)]
pub struct CircuitForm {
    csrf: String,
    panel_id: Option<String>,
    name: String,
    usage: String,
}

pub async fn create_circuit(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CircuitForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    site(&state, id).await?;
    let ctx = Ctx {
        state: &state,
        p: &p,
        headers: &headers,
        site: id,
    };
    let mut s = Submitted::new();
    let panel_text = form.panel_id.clone().unwrap_or_default();
    s.keep("new-circuit-panel_id", &panel_text);
    s.keep("new-circuit-name", &form.name);
    s.keep("new-circuit-usage", &form.usage);
    // The panel must be one of this site's: another site's panel is refused like none.
    let panel = match panel_text.trim().parse::<i64>() {
        Ok(panel) => match structure::get_panel(&state.pool, panel).await? {
            Some(found) if found.site_id == id => Some(panel),
            _ => None,
        },
        Err(_) => None,
    };
    let Some(panel) = panel else {
        s.add("new-circuit-panel_id", "choose the panel the circuit is in");
        return refuse(ctx, s).await;
    };
    let input = CircuitInput {
        name: Some(form.name),
        usage: Some(form.usage),
        description: None,
    };
    let result = structure::create_circuit(&state.pool, panel, &input).await;
    let done = result.map(|_| "Circuit created; place its meter below.".into());
    finish(ctx, "circuits", done, s, field, "new-circuit").await
}

async fn circuit_of(state: &WebState, site: i64, circuit: i64) -> Result<(), PageError> {
    match structure::get_circuit(&state.pool, circuit).await? {
        Some(c) if c.site_id == site => Ok(()),
        _ => Err(PageError::NotFound),
    }
}

pub async fn update_circuit(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, circuit)): Path<(i64, i64)>,
    Form(form): Form<CircuitForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    circuit_of(&state, id, circuit).await?;
    let ctx = Ctx {
        state: &state,
        p: &p,
        headers: &headers,
        site: id,
    };
    let form_id = format!("circuit-{circuit}");
    let mut s = Submitted::new();
    s.keep(&format!("{form_id}-name"), &form.name);
    s.keep(&format!("{form_id}-usage"), &form.usage);
    let input = CircuitInput {
        name: Some(form.name),
        usage: Some(form.usage),
        description: None,
    };
    let result = structure::update_circuit(&state.pool, circuit, &input).await;
    // The usage groups of the site's consumption follow at the next query; nothing to rebuild.
    let done = result.map(|()| "Circuit saved.".into());
    finish(ctx, "circuits", done, s, field, &form_id).await
}

pub async fn delete_circuit(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, circuit)): Path<(i64, i64)>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    circuit_of(&state, id, circuit).await?;
    let result = structure::delete_circuit(&state.pool, circuit).await;
    state.energy_changed();
    Ok(back(
        id,
        "circuits",
        match result {
            Ok(()) => Ok("Circuit deleted; its meters are not placed now.".into()),
            Err(structure::StructureError::Db(e)) => return Err(e.into()),
            Err(structure::StructureError::NotFound(_)) => return Err(PageError::NotFound),
            Err(e) => Err(e.to_string()),
        },
    ))
}
