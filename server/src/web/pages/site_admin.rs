//! Administration of one site in the dashboard: settings, panels, circuits, meter placement
//! and supply contracts.
//!
//! Every form is admin-only, carries the CSRF token, and follows POST-redirect-GET: the
//! result comes back as a message in the redirect's query, shown as text next to the form it
//! concerns (`section`). The contract form is the exception on failure: it is shown again
//! with what was typed and the error, so a long form is not lost to a typo.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{check_csrf, nav, render, require_admin, Nav, PageError, PageResult, PageUser};
use crate::auth::Scope;
use crate::dashboard;
use crate::profiles::contracts;
use crate::profiles::structure::{self, CircuitInput, DevicePatch, PanelInput, StructureError};
use crate::sites;
use crate::web::urls::filters;
use crate::web::WebState;

/// Rows of the contract form: enough for the tariffs published in practice.
const BANDS: usize = 6;
const RULES: usize = 8;
const METER_TARIFFS: u8 = 6;
const DAYS: [&str; 8] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"];
/// Form bodies are bounded by the router's body limit; fields are bounded here.
const MAX_FIELDS: usize = 400;
const MAX_FIELD: usize = 4000;

/// The routes of this module, merged into the page router.
pub fn routes() -> Router<WebState> {
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
        .route("/admin/sites/{id}/meters/{serial}", post(place_meter))
        .route("/admin/gateways/{serial}/site", post(assign_gateway))
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

/// A refusal the person can fix goes back to the form; anything else is a page error.
fn outcome(
    site: i64,
    section: &str,
    result: Result<String, StructureError>,
) -> Result<Response, PageError> {
    match result {
        Ok(m) => Ok(back(site, section, Ok(m))),
        Err(StructureError::Db(e)) => Err(e.into()),
        Err(StructureError::NotFound(_)) => Err(PageError::NotFound),
        Err(e) => Ok(back(site, section, Err(e.to_string()))),
    }
}

pub struct PlacementOption {
    value: String,
    label: String,
}

pub struct MeterRow {
    /// The `devices` id, carried by the form (serials are not unique).
    id: i64,
    serial: String,
    gateway: String,
    model: String,
    name: String,
    placement: String,
    usage: String,
    import_register: String,
    export_register: String,
    reactive_register: String,
    registers: String,
    /// The commissioning date as a local date of the site (`YYYY-MM-DD`), or empty.
    commissioned: String,
}

pub struct ContractRow {
    id: i64,
    valid_from: NaiveDate,
    currency: String,
    bands: String,
    default_band: String,
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
    panels: Vec<structure::PanelView>,
    circuits: Vec<structure::CircuitView>,
    meters: Vec<MeterRow>,
    placements: Vec<PlacementOption>,
    contracts: Vec<ContractRow>,
    usages: &'static [&'static str],
}

#[derive(Deserialize, Default)]
pub struct Outcome {
    section: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

pub async fn page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<Outcome>,
) -> PageResult {
    require_admin(&p)?;
    let site = site(&state, id).await?;
    let panels = structure::list_panels(&state.pool, id).await?;
    let circuits = structure::list_site_circuits(&state.pool, id).await?;
    let mut placements = vec![
        PlacementOption {
            value: String::new(),
            label: "not placed".into(),
        },
        PlacementOption {
            value: "site".into(),
            label: "the whole site (main meter)".into(),
        },
    ];
    for panel in &panels {
        placements.push(PlacementOption {
            value: format!("panel:{}", panel.id),
            label: format!("panel {} (its parent meter)", panel.name),
        });
        for c in circuits.iter().filter(|c| c.panel_id == panel.id) {
            placements.push(PlacementOption {
                value: format!("circuit:{}", c.id),
                label: format!("circuit {} / {}", panel.name, c.name),
            });
        }
    }
    let commissioned = commissioned_dates(&state, id, &site.time_zone).await?;
    let meters = dashboard::meter_placements(&state.pool, id)
        .await?
        .into_iter()
        .map(|m| MeterRow {
            commissioned: commissioned.get(&m.id).cloned().unwrap_or_default(),
            placement: match (m.measures.as_deref(), m.panel_id, m.circuit_id) {
                (Some("site"), ..) => "site".into(),
                (Some("panel"), Some(p), _) => format!("panel:{p}"),
                (Some("circuit"), _, Some(c)) => format!("circuit:{c}"),
                _ => String::new(),
            },
            id: m.id,
            serial: m.serial,
            gateway: m.gateway,
            model: m.model.unwrap_or_default(),
            name: m.name.unwrap_or_default(),
            usage: m.usage.unwrap_or_default(),
            import_register: m.import_register.unwrap_or_default(),
            export_register: m.export_register.unwrap_or_default(),
            reactive_register: m.reactive_register.unwrap_or_default(),
            registers: m.registers.join(", "),
        })
        .collect();
    let contracts = contracts::list(&state.pool, id)
        .await?
        .into_iter()
        .map(|c| ContractRow {
            id: c.id,
            valid_from: c.valid_from,
            currency: text(&c.contract["currency"]),
            bands: c.contract["bands"]
                .as_array()
                .map(|bands| {
                    bands
                        .iter()
                        .map(|b| format!("{} {}", text(&b["name"]), text(&b["import_price"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            default_band: text(&c.contract["default_band"]),
        })
        .collect();
    let (nav, set) = nav(&p, &headers);
    // Messages come back through the redirect's query: shown as text, never as markup.
    let clip = |m: Option<String>| m.map(|m| m.chars().take(300).collect::<String>());
    render(
        &SiteAdminPage {
            title: format!("Administration of {}", site.name),
            nav,
            site,
            section: q.section.unwrap_or_default(),
            message: clip(q.message),
            error: clip(q.error),
            panels,
            circuits,
            meters,
            placements,
            contracts,
            usages: &structure::USAGES,
        },
        set,
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// ---- settings, panels, circuits ------------------------------------------------------------

#[derive(Deserialize)]
pub struct SettingsForm {
    csrf: String,
    name: String,
    time_zone: String,
}

pub async fn settings(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<SettingsForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let result = structure::update_site(
        &state.pool,
        id,
        Some(&form.name),
        Some(form.time_zone.trim()),
    )
    .await;
    state.gateways_changed();
    state.energy_changed();
    outcome(id, "settings", result.map(|()| "Site saved.".into()))
}

#[derive(Deserialize)]
pub struct PanelForm {
    csrf: String,
    name: String,
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
    let input = PanelInput {
        name: Some(form.name),
        description: None,
    };
    let result = structure::create_panel(&state.pool, id, &input).await;
    outcome(id, "panels", result.map(|_| "Panel created.".into()))
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
    let input = PanelInput {
        name: Some(form.name),
        description: None,
    };
    let result = structure::update_panel(&state.pool, panel, &input).await;
    outcome(id, "panels", result.map(|()| "Panel renamed.".into()))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
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
    outcome(
        id,
        "panels",
        result.map(|()| "Panel deleted with its circuits; its meters are not placed now.".into()),
    )
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
    let Some(panel) = form.panel_id.as_deref().and_then(|v| v.parse().ok()) else {
        return Ok(back(id, "circuits", Err("choose a panel".into())));
    };
    panel_of(&state, id, panel).await?;
    let input = CircuitInput {
        name: Some(form.name),
        usage: Some(form.usage),
        description: None,
    };
    let result = structure::create_circuit(&state.pool, panel, &input).await;
    outcome(id, "circuits", result.map(|_| "Circuit created.".into()))
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
    let input = CircuitInput {
        name: Some(form.name),
        usage: Some(form.usage),
        description: None,
    };
    let result = structure::update_circuit(&state.pool, circuit, &input).await;
    // The usage groups of the site's consumption follow at the next query; nothing to rebuild.
    outcome(id, "circuits", result.map(|()| "Circuit saved.".into()))
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
    outcome(
        id,
        "circuits",
        result.map(|()| "Circuit deleted; its meters are not placed now.".into()),
    )
}

// ---- meter placement -------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct PlacementForm {
    csrf: String,
    name: String,
    placement: String,
    usage: String,
    import_register: String,
    export_register: String,
    reactive_register: String,
    /// A date (`YYYY-MM-DD`, local midnight of the site); empty clears it. Absent (an older
    /// form): unchanged.
    commissioned_at: Option<String>,
}

/// The commissioning dates of the site's meters, as local dates of the site.
async fn commissioned_dates(
    state: &WebState,
    site: i64,
    zone: &str,
) -> Result<std::collections::HashMap<i64, String>, sqlx::Error> {
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let rows: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT d.id, d.commissioned_at FROM devices d JOIN gateways g ON g.id = d.gateway_id
         WHERE g.site_id = $1 AND d.kind = 'meter' AND d.commissioned_at IS NOT NULL",
    )
    .bind(site)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, at)| (id, at.with_timezone(&tz).format("%Y-%m-%d").to_string()))
        .collect())
}

fn blank_is_none(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

pub async fn place_meter(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, serial)): Path<(i64, String)>,
    Query(q): Query<crate::web::api::DeviceParam>,
    Form(form): Form<PlacementForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    // The form names the device (`?device=`); a bare serial must be unique on the site.
    let (device, serial) = match dashboard::site_meter(&state.pool, id, &serial, q.device).await? {
        crate::devices::Resolved::Found(d) => (d.id, d.serial),
        crate::devices::Resolved::NotFound => return Err(PageError::NotFound),
        crate::devices::Resolved::Ambiguous(c) => {
            return Ok(back(
                id,
                "meters",
                Err(format!(
                    "{} meters of this site report serial {serial}; use the meter's own form",
                    c.len()
                )),
            ))
        }
    };
    let id_of = |v: &str| v.parse::<i64>().ok();
    let (measures, panel_id, circuit_id) = match form.placement.split_once(':') {
        None if form.placement.is_empty() => (None, None, None),
        None if form.placement == "site" => (Some("site".to_owned()), None, None),
        Some(("panel", v)) if id_of(v).is_some() => (Some("panel".into()), id_of(v), None),
        Some(("circuit", v)) if id_of(v).is_some() => (Some("circuit".into()), None, id_of(v)),
        _ => {
            return Ok(back(
                id,
                "meters",
                Err("choose where the meter is placed".into()),
            ))
        }
    };
    // The form shows a date: the same date again leaves a commissioning instant set through
    // the API alone; another date is local midnight of the site; empty clears it.
    let commissioned_at = match form.commissioned_at.as_deref().map(str::trim) {
        None => None,
        Some(date) => {
            let zone: String = sqlx::query_scalar("SELECT time_zone FROM sites WHERE id = $1")
                .bind(id)
                .fetch_one(&state.pool)
                .await?;
            let shown = commissioned_dates(&state, id, &zone).await?;
            match shown.get(&device) {
                Some(current) if current == date => None,
                None if date.is_empty() => None,
                _ => Some(blank_is_none(date)),
            }
        }
    };
    let patch = DevicePatch {
        commissioned_at,
        name: Some(blank_is_none(&form.name)),
        measures: Some(measures),
        panel_id: Some(panel_id),
        circuit_id: Some(circuit_id),
        usage: Some(blank_is_none(&form.usage)),
        import_register: Some(blank_is_none(&form.import_register)),
        export_register: Some(blank_is_none(&form.export_register)),
        reactive_register: Some(blank_is_none(&form.reactive_register)),
    };
    let result = structure::patch_device(&state.pool, device, patch).await;
    state.energy_changed();
    outcome(
        id,
        "meters",
        result.map(|()| format!("Meter {serial} saved.")),
    )
}

// ---- gateways ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct AssignForm {
    csrf: String,
    /// Empty: off any site.
    site_id: String,
}

/// Moves a gateway (and its meters, unplaced) to a site or off any site.
pub async fn assign_gateway(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Form(form): Form<AssignForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let gateway = crate::gateways::get(&state.pool, &Scope::All, &serial)
        .await?
        .ok_or(PageError::NotFound)?;
    let site = match form.site_id.trim() {
        "" => None,
        s => match s.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => return Ok(super::admin::back_to_admin(Err("choose a site".into()))),
        },
    };
    let result = structure::assign_gateway(&state.pool, gateway.id, site).await;
    state.gateways_changed();
    state.energy_changed();
    Ok(super::admin::back_to_admin(match result {
        Ok(()) => Ok(format!(
            "Gateway {serial} moved; place its meters on the site's administration page."
        )),
        Err(StructureError::Db(e)) => return Err(e.into()),
        Err(e) => Err(e.to_string()),
    }))
}

// ---- contracts -----------------------------------------------------------------------------

#[derive(Default, Clone)]
pub struct BandRow {
    name: String,
    import: String,
    export: String,
}

#[derive(Default, Clone)]
pub struct RuleRow {
    name: String,
    band: String,
    days: Vec<String>,
    from: String,
    to: String,
    months: String,
}

impl RuleRow {
    fn has(&self, day: &str) -> bool {
        self.days.iter().any(|d| d == day)
    }
}

/// The contract form's fields, as typed (text), so a refused form is shown again unchanged.
#[derive(Default)]
pub struct ContractFields {
    id: Option<i64>,
    valid_from: String,
    currency: String,
    default_band: String,
    holidays: String,
    demand_charge: String,
    tan_phi_max: String,
    reactive_price: String,
    bands: Vec<BandRow>,
    rules: Vec<RuleRow>,
    tariffs: Vec<(u8, String)>,
}

impl ContractFields {
    fn padded(mut self) -> Self {
        self.bands
            .resize(BANDS.max(self.bands.len()), BandRow::default());
        self.rules
            .resize(RULES.max(self.rules.len()), RuleRow::default());
        for n in 1..=METER_TARIFFS {
            if !self.tariffs.iter().any(|(t, _)| *t == n) {
                self.tariffs.push((n, String::new()));
            }
        }
        self.tariffs.sort();
        self
    }

    /// The fields of a stored contract.
    fn of_stored(id: i64, valid_from: NaiveDate, c: &Value) -> Self {
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default()
        };
        Self {
            id: Some(id),
            valid_from: valid_from.to_string(),
            currency: text(&c["currency"]),
            default_band: text(&c["default_band"]),
            holidays: list(&c["holidays"]).join("\n"),
            demand_charge: text(&c["demand_charge"]),
            tan_phi_max: text(&c["reactive"]["tan_phi_max"]),
            reactive_price: text(&c["reactive"]["price"]),
            bands: c["bands"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| BandRow {
                            name: text(&b["name"]),
                            import: text(&b["import_price"]),
                            export: text(&b["export_price"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            rules: c["schedule"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| RuleRow {
                            name: text(&r["name"]),
                            band: text(&r["band"]),
                            days: list(&r["days"]),
                            from: text(&r["from"]),
                            to: text(&r["to"]),
                            months: list(&r["months"]).join(", "),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            tariffs: c["meter_tariff_bands"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.parse().ok()?, text(v))))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The fields of a submitted form (`band3_name`, `rule2_days` repeated, `tariff1`, ...).
    fn of_form(pairs: &[(String, String)]) -> Self {
        let mut f = Self {
            bands: vec![BandRow::default(); BANDS],
            rules: vec![RuleRow::default(); RULES],
            ..Self::default()
        };
        let row = |key: &str, prefix: &str| -> Option<(usize, String)> {
            let rest = key.strip_prefix(prefix)?;
            let (n, field) = rest.split_once('_')?;
            Some((n.parse().ok()?, field.to_owned()))
        };
        for (key, value) in pairs {
            let value = value.clone();
            match key.as_str() {
                "contract_id" => f.id = value.parse().ok(),
                "valid_from" => f.valid_from = value,
                "currency" => f.currency = value,
                "default_band" => f.default_band = value,
                "holidays" => f.holidays = value,
                "demand_charge" => f.demand_charge = value,
                "tan_phi_max" => f.tan_phi_max = value,
                "reactive_price" => f.reactive_price = value,
                k => {
                    if let Some((i, field)) = row(k, "band").filter(|(i, _)| *i < BANDS) {
                        let b = &mut f.bands[i];
                        match field.as_str() {
                            "name" => b.name = value,
                            "import" => b.import = value,
                            "export" => b.export = value,
                            _ => {}
                        }
                    } else if let Some((i, field)) = row(k, "rule").filter(|(i, _)| *i < RULES) {
                        let r = &mut f.rules[i];
                        match field.as_str() {
                            "name" => r.name = value,
                            "band" => r.band = value,
                            "days" if DAYS.contains(&value.as_str()) => r.days.push(value),
                            "from" => r.from = value,
                            "to" => r.to = value,
                            "months" => r.months = value,
                            _ => {}
                        }
                    } else if let Some(n) = k
                        .strip_prefix("tariff")
                        .and_then(|n| n.parse::<u8>().ok())
                        .filter(|n| (1..=METER_TARIFFS).contains(n))
                    {
                        f.tariffs.push((n, value));
                    }
                }
            }
        }
        f
    }

    /// The contract JSON the API takes; errors are worded for the form.
    fn to_json(&self) -> Result<(NaiveDate, Value), String> {
        let valid_from: NaiveDate = self
            .valid_from
            .trim()
            .parse()
            .map_err(|_| "“valid from” is a date (YYYY-MM-DD)".to_owned())?;
        let mut bands = Vec::new();
        for (i, b) in self.bands.iter().enumerate() {
            if b.name.trim().is_empty() && b.import.trim().is_empty() {
                continue;
            }
            let mut band = json!({ "name": b.name.trim(), "import_price": b.import.trim() });
            if !b.export.trim().is_empty() {
                band["export_price"] = json!(b.export.trim());
            }
            if b.name.trim().is_empty() || b.import.trim().is_empty() {
                return Err(format!("band {}: give a name and an import price", i + 1));
            }
            bands.push(band);
        }
        let mut schedule = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.band.trim().is_empty() {
                continue;
            }
            if r.days.is_empty() {
                return Err(format!("rule {}: tick at least one day", i + 1));
            }
            let mut rule = json!({
                "band": r.band.trim(), "days": r.days, "from": r.from.trim(), "to": r.to.trim()
            });
            if !r.name.trim().is_empty() {
                rule["name"] = json!(r.name.trim());
            }
            if !r.months.trim().is_empty() {
                let months: Result<Vec<u8>, _> = r
                    .months
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|m| !m.is_empty())
                    .map(str::parse::<u8>)
                    .collect();
                rule["months"] = json!(months.map_err(|_| format!(
                    "rule {}: months are numbers 1 to 12 separated by commas",
                    i + 1
                ))?);
            }
            schedule.push(rule);
        }
        let holidays: Vec<&str> = self
            .holidays
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|d| !d.is_empty())
            .collect();
        for d in &holidays {
            d.parse::<NaiveDate>()
                .map_err(|_| format!("holiday {d:?} is not a date (YYYY-MM-DD)"))?;
        }
        let mut contract = Map::new();
        contract.insert("currency".into(), json!(self.currency.trim()));
        contract.insert("bands".into(), json!(bands));
        contract.insert("schedule".into(), json!(schedule));
        contract.insert("default_band".into(), json!(self.default_band.trim()));
        contract.insert("holidays".into(), json!(holidays));
        let tariffs: Map<String, Value> = self
            .tariffs
            .iter()
            .filter(|(_, band)| !band.trim().is_empty())
            .map(|(n, band)| (n.to_string(), json!(band.trim())))
            .collect();
        if !tariffs.is_empty() {
            contract.insert("meter_tariff_bands".into(), Value::Object(tariffs));
        }
        if !self.demand_charge.trim().is_empty() {
            contract.insert("demand_charge".into(), json!(self.demand_charge.trim()));
        }
        match (self.tan_phi_max.trim(), self.reactive_price.trim()) {
            ("", "") => {}
            (tan, price) if !tan.is_empty() && !price.is_empty() => {
                let tan: f64 = tan
                    .parse()
                    .map_err(|_| "tan φ max is a number such as 0.33".to_owned())?;
                contract.insert(
                    "reactive".into(),
                    json!({ "tan_phi_max": tan, "price": price }),
                );
            }
            _ => {
                return Err(
                    "a reactive charge needs both tan φ max and a price per kvarh".to_owned(),
                )
            }
        }
        Ok((valid_from, Value::Object(contract)))
    }
}

#[derive(Template)]
#[template(path = "admin_contract.html")]
struct ContractPage {
    title: String,
    nav: Nav,
    site: sites::SiteView,
    error: Option<String>,
    f: ContractFields,
    days: [&'static str; 8],
}

#[derive(Deserialize)]
pub struct ContractParams {
    id: Option<i64>,
}

pub async fn contract_form(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<ContractParams>,
) -> PageResult {
    require_admin(&p)?;
    let site = site(&state, id).await?;
    let f = match q.id {
        Some(cid) => {
            let c = contracts::get(&state.pool, cid)
                .await?
                .filter(|c| c.site_id == id)
                .ok_or(PageError::NotFound)?;
            ContractFields::of_stored(c.id, c.valid_from, &c.contract)
        }
        None => ContractFields {
            currency: "EUR".into(),
            ..ContractFields::default()
        },
    };
    let (nav, set) = nav(&p, &headers);
    render(
        &ContractPage {
            title: format!("Contract of {}", site.name),
            nav,
            site,
            error: None,
            f: f.padded(),
            days: DAYS,
        },
        set,
    )
}

pub async fn save_contract(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let token = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    check_csrf(&headers, token)?;
    require_admin(&p)?;
    if pairs.len() > MAX_FIELDS || pairs.iter().any(|(_, v)| v.len() > MAX_FIELD) {
        return Err(PageError::Bad("the form is too large".into()));
    }
    let site = site(&state, id).await?;
    let f = ContractFields::of_form(&pairs);
    if let Some(cid) = f.id {
        contracts::get(&state.pool, cid)
            .await?
            .filter(|c| c.site_id == id)
            .ok_or(PageError::NotFound)?;
    }
    let saved = match f.to_json() {
        Err(m) => Err(m),
        Ok((valid_from, body)) => match contracts::parse(body) {
            Err(e) => Err(e.to_string()),
            Ok(contract) => {
                let result = match f.id {
                    Some(cid) => contracts::replace(&state.pool, cid, Some(valid_from), &contract)
                        .await
                        .map(|()| cid),
                    None => contracts::create(&state.pool, id, valid_from, &contract).await,
                };
                match result {
                    Ok(cid) => Ok(cid),
                    Err(StructureError::Db(e)) => return Err(e.into()),
                    Err(StructureError::NotFound(_)) => return Err(PageError::NotFound),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    };
    match saved {
        Ok(cid) => {
            state.energy_changed();
            Ok(back(
                id,
                "contracts",
                Ok(format!("Contract {cid} saved; costs are being recomputed.")),
            ))
        }
        Err(message) => {
            let (nav, set) = nav(&p, &headers);
            let mut r = render(
                &ContractPage {
                    title: format!("Contract of {}", site.name),
                    nav,
                    site,
                    error: Some(message.chars().take(500).collect()),
                    f: f.padded(),
                    days: DAYS,
                },
                set,
            )?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
    }
}

pub async fn delete_contract(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, cid)): Path<(i64, i64)>,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    contracts::get(&state.pool, cid)
        .await?
        .filter(|c| c.site_id == id)
        .ok_or(PageError::NotFound)?;
    let result = contracts::delete(&state.pool, cid).await;
    state.energy_changed();
    outcome(
        id,
        "contracts",
        result.map(|()| "Contract deleted; costs are being recomputed.".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_filled_form_makes_a_valid_contract_and_reads_back_the_same() {
        let form = pairs(&[
            ("valid_from", "2026-01-01"),
            ("currency", "EUR"),
            ("default_band", "night"),
            ("band0_name", "day"),
            ("band0_import", "0.142"),
            ("band0_export", "0.06"),
            ("band1_name", "night"),
            ("band1_import", "0.095"),
            ("rule0_band", "day"),
            ("rule0_days", "mon"),
            ("rule0_days", "fri"),
            ("rule0_from", "06:00"),
            ("rule0_to", "22:00"),
            ("rule0_months", "11, 12,1"),
            ("holidays", "2026-01-01\n2026-12-25"),
            ("tariff1", "day"),
            ("demand_charge", "3.75"),
            ("tan_phi_max", "0.33"),
            ("reactive_price", "0.015"),
        ]);
        let f = ContractFields::of_form(&form);
        let (from, body) = f.to_json().unwrap();
        assert_eq!(from, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        let contract = contracts::parse(body).unwrap();
        assert_eq!(contract.bands[0].import_price.micro(), 142_000);
        assert_eq!(contract.schedule[0].months, Some(vec![11, 12, 1]));
        assert_eq!(contract.holidays.len(), 2);
        // Stored and shown again: the same fields.
        let stored = serde_json::to_value(&contract).unwrap();
        let again = ContractFields::of_stored(1, from, &stored);
        let (_, body) = again.padded().to_json().unwrap();
        assert_eq!(contracts::parse(body).unwrap(), contract);
    }

    #[test]
    fn mistakes_are_named_for_the_person() {
        let base = [
            ("valid_from", "2026-01-01"),
            ("currency", "EUR"),
            ("default_band", "day"),
            ("band0_name", "day"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut all = pairs(&base);
            all.extend(pairs(extra));
            ContractFields::of_form(&all).to_json()
        };
        assert!(with(&[]).unwrap_err().contains("band 1"));
        assert!(with(&[("band0_import", "0.1"), ("rule2_band", "day")])
            .unwrap_err()
            .contains("rule 3"));
        assert!(with(&[("band0_import", "0.1"), ("holidays", "25.12.2026")])
            .unwrap_err()
            .contains("25.12.2026"));
        assert!(with(&[("band0_import", "0.1"), ("tan_phi_max", "0.3")])
            .unwrap_err()
            .contains("reactive"));
        // Validation of the contract itself (an unknown band) comes from the tariff module.
        let (_, body) = with(&[("band0_import", "0.1"), ("tariff2", "night")]).unwrap();
        assert!(contracts::parse(body).is_err());
    }
}
