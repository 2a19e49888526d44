//! The converters page: Modbus converters, the devices polled behind them and their
//! communication state; admins add converters and devices, switch polling on and off, and
//! remove devices. Same conventions as `pages`: session cookie, CSRF token on every form,
//! askama escaping.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use super::{check_csrf, nav, render, require_admin, Nav, PageError, PageResult, PageUser};
use crate::auth::Principal;
use crate::modbus::store::{self, ConverterPatch, ConverterView, NewConverter, NewPolledDevice};
use crate::modbus::ModbusError;
use crate::sites;
use crate::web::WebState;

#[derive(Template)]
#[template(path = "converters.html")]
struct ConvertersPage {
    title: &'static str,
    nav: Nav,
    message: Option<String>,
    error: Option<String>,
    converters: Vec<ConverterView>,
    models: Vec<String>,
    sites: Vec<(i64, String)>,
}

#[derive(Deserialize, Default)]
pub struct Params {
    message: Option<String>,
    error: Option<String>,
}

pub async fn converters_page(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> PageResult {
    let converters = store::list(&state.pool, &p.scope).await?;
    let sites = sites::list(&state.pool, &p.scope)
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let (nav, set) = nav(&p, &headers);
    let bounded = |s: Option<String>| s.map(|s| s.chars().take(500).collect());
    render(
        &ConvertersPage {
            title: "Converters",
            nav,
            message: bounded(q.message),
            error: bounded(q.error),
            converters,
            models: state.modbus.maps().names(),
            sites,
        },
        set,
    )
}

fn back(result: Result<String, String>) -> axum::response::Response {
    let (key, text) = match result {
        Ok(m) => ("message", m),
        Err(e) => ("error", e),
    };
    let mut url = String::from("/converters?");
    url.push_str(key);
    url.push('=');
    url.push_str(&crate::web::urls::query_value(
        &text.chars().take(400).collect::<String>(),
    ));
    Redirect::to(&url).into_response()
}

fn optional<T: std::str::FromStr>(value: Option<&str>, what: &str) -> Result<Option<T>, String> {
    match value.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{what} must be a number")),
    }
}

#[derive(Deserialize)]
pub struct NewConverterForm {
    csrf: String,
    name: String,
    host: String,
    port: Option<String>,
    site_id: Option<String>,
}

pub async fn create_converter(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Form(form): Form<NewConverterForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    let parsed = (|| {
        Ok::<_, String>((
            optional::<u16>(form.port.as_deref(), "the port")?,
            optional::<i64>(form.site_id.as_deref(), "the site")?,
        ))
    })();
    let (port, site_id) = match parsed {
        Ok(v) => v,
        Err(e) => return Ok(back(Err(e))),
    };
    let created = store::create(
        &state.pool,
        state.modbus.maps(),
        state.modbus.settings(),
        NewConverter {
            name: form.name.trim().to_owned(),
            host: form.host.trim().to_owned(),
            port,
            site_id,
            gap_ms: None,
            timeout_ms: None,
            retries: None,
            enabled: Some(true),
            devices: Vec::new(),
        },
        &state.default_time_zone,
        "api",
    )
    .await;
    state.modbus.changed();
    state.gateways_changed();
    Ok(back(outcome(
        created.map(|_| "Converter added".to_owned()),
    )?))
}

/// User errors go back to the page; database failures are a 500.
fn outcome(result: Result<String, ModbusError>) -> Result<Result<String, String>, PageError> {
    match result {
        Ok(m) => Ok(Ok(m)),
        Err(ModbusError::Db(e)) => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

async fn visible(state: &WebState, p: &Principal, id: i64) -> Result<(), PageError> {
    store::get(&state.pool, &p.scope, id)
        .await?
        .map(|_| ())
        .ok_or(PageError::NotFound)
}

#[derive(Deserialize)]
pub struct NewDeviceForm {
    csrf: String,
    unit: String,
    model: String,
    kind: Option<String>,
    poll_interval_ms: Option<String>,
    serial: Option<String>,
}

pub async fn add_device(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<NewDeviceForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    visible(&state, &p, id).await?;
    let Ok(unit) = form.unit.trim().parse::<i64>() else {
        return Ok(back(Err("the unit id is a number from 1 to 247".into())));
    };
    let interval = match optional::<u32>(form.poll_interval_ms.as_deref(), "the poll interval") {
        Ok(v) => v,
        Err(e) => return Ok(back(Err(e))),
    };
    let added = store::add_device(
        &state.pool,
        state.modbus.maps(),
        state.modbus.settings(),
        id,
        &NewPolledDevice {
            unit,
            model: form.model,
            kind: form.kind,
            poll_interval_ms: interval,
            serial: form.serial.map(|s| s.trim().to_owned()),
            enabled: Some(true),
        },
    )
    .await;
    state.modbus.changed();
    Ok(back(outcome(added.map(|()| format!("Unit {unit} added")))?))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn remove_device(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path((id, unit)): Path<(i64, i16)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    visible(&state, &p, id).await?;
    let removed = store::delete_device(&state.pool, id, unit).await;
    state.modbus.changed();
    Ok(back(outcome(removed.map(|()| {
        format!("Unit {unit} is no longer polled; its data stay")
    }))?))
}

#[derive(Deserialize)]
pub struct EnableForm {
    csrf: String,
    enabled: String,
}

pub async fn set_enabled(
    State(state): State<WebState>,
    PageUser(p): PageUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<EnableForm>,
) -> PageResult {
    check_csrf(&headers, &form.csrf)?;
    require_admin(&p)?;
    visible(&state, &p, id).await?;
    let enabled = form.enabled == "true";
    let updated = store::update(
        &state.pool,
        id,
        &ConverterPatch {
            enabled: Some(enabled),
            ..ConverterPatch::default()
        },
    )
    .await;
    state.modbus.changed();
    Ok(back(outcome(updated.map(|()| {
        if enabled {
            "Polling resumed".to_owned()
        } else {
            "Polling paused".to_owned()
        }
    }))?))
}
