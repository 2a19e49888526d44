//! The converters page: Modbus converters, the devices polled behind them and their
//! communication state; admins add converters and devices (site and register map picked from
//! lists), switch polling on and off, and remove devices. A refused form comes back (422) with
//! what was typed and the message beside the field; a change that worked redirects with a
//! notice. Same conventions as `pages`: session cookie, CSRF token on every form, askama
//! escaping.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::form::FieldErrors;
use super::{AdminForm, Nav, PageError, PageResult, PageUser};
use crate::modbus::store::{self, ConverterPatch, ConverterView, NewConverter, NewPolledDevice};
use crate::modbus::ModbusError;
use crate::sites;
use crate::web::WebState;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/converters", get(converters_page).post(create_converter))
        .route("/converters/{id}/devices", post(add_device))
        .route(
            "/converters/{id}/devices/{unit}/remove",
            post(remove_device),
        )
        .route("/converters/{id}/enabled", post(set_enabled))
}

/// The "add a converter" form as typed.
#[derive(Default)]
struct ConverterFormView {
    name: String,
    host: String,
    port: String,
    site_id: String,
}

/// The "add a device" form of one converter, as typed.
#[derive(Default)]
struct DeviceFormView {
    unit: String,
    model: String,
    kind: String,
    poll_interval_ms: String,
    serial: String,
}

#[derive(Template)]
#[template(path = "converters.html")]
struct ConvertersPage {
    title: &'static str,
    nav: Nav,
    message: Option<String>,
    error: Option<String>,
    converters: Vec<ConverterView>,
    /// (id, name) of the sites the user may see.
    sites: Vec<(i64, String)>,
    /// Register maps: (name, what it reads).
    models: Vec<(String, String)>,
    /// Messages of the refused form, beside its fields.
    errors: FieldErrors,
    converter_form: ConverterFormView,
    /// The converter whose device form was refused (0: none).
    device_for: i64,
    device_form: DeviceFormView,
}

impl ConvertersPage {
    fn site_name(&self, id: &Option<i64>) -> String {
        id.and_then(|id| self.sites.iter().find(|(s, _)| *s == id))
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
struct Params {
    message: Option<String>,
    error: Option<String>,
}

/// The page, with a refused form's values and messages when there is one.
async fn show(
    state: &WebState,
    user: &PageUser,
    (message, error): (Option<String>, Option<String>),
    errors: FieldErrors,
    converter_form: ConverterFormView,
    (device_for, device_form): (i64, DeviceFormView),
) -> PageResult {
    let converters = store::list(&state.pool, &user.scope).await?;
    let sites = sites::list(&state.pool, &user.scope)
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let maps = state.modbus.maps();
    let models = maps
        .names()
        .into_iter()
        .map(|name| {
            let what = maps.get(&name).map_or_else(String::new, |m| {
                let about = m.description.split(':').next().unwrap_or("").trim();
                let about: String = about.chars().take(80).collect();
                if m.has_relay() && !about.to_ascii_lowercase().contains("relay") {
                    format!("{about} (with a relay)")
                } else {
                    about
                }
            });
            (name, what)
        })
        .collect();
    let bounded = |s: Option<String>| s.map(|s| s.chars().take(500).collect());
    let refused = !errors.is_empty();
    let mut response = user.render(&ConvertersPage {
        title: "Converters",
        nav: user.nav(),
        message: bounded(message),
        error: bounded(error),
        converters,
        sites,
        models,
        errors,
        converter_form,
        device_for,
        device_form,
    })?;
    if refused {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

/// The "add a converter" form as first shown: Modbus TCP's port.
fn new_converter() -> ConverterFormView {
    ConverterFormView {
        port: "502".into(),
        ..ConverterFormView::default()
    }
}

async fn converters_page(
    State(state): State<WebState>,
    user: PageUser,
    Query(q): Query<Params>,
) -> PageResult {
    let no_device = (0, DeviceFormView::default());
    let notes = (q.message, q.error);
    show(
        &state,
        &user,
        notes,
        FieldErrors::new(),
        new_converter(),
        no_device,
    )
    .await
}

/// Back to the page with a notice (a change that worked) or an error (one that has no field).
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

fn optional<T: std::str::FromStr>(
    errors: &mut FieldErrors,
    field: &str,
    value: &str,
    message: &str,
) -> Option<T> {
    match value.trim() {
        "" => None,
        s => match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                errors.add(field, message);
                None
            }
        },
    }
}

/// The field a refusal of the converter store is about.
fn field_of(message: &str, fields: &[&'static str]) -> &'static str {
    let m = message.to_ascii_lowercase();
    let pick = |f: &'static str| fields.contains(&f).then_some(f);
    let found = if m.contains("serial number") {
        pick("serial")
    } else if m.contains("host") {
        pick("host")
    } else if m.contains("port") {
        pick("port")
    } else if m.contains("site") {
        pick("site_id")
    } else if m.contains("unit") {
        pick("unit")
    } else if m.contains("model") || m.contains("relay register") {
        pick("model")
    } else if m.contains("kind") {
        pick("kind")
    } else if m.contains("poll_interval") {
        pick("poll_interval_ms")
    } else if m.contains("gateway serial") || m.contains("named") || m.contains("name") {
        pick("name")
    } else {
        None
    };
    found.unwrap_or("")
}

/// User errors beside their field; database failures are a 500.
fn refusal(e: ModbusError, fields: &[&'static str]) -> Result<FieldErrors, PageError> {
    let message = match e {
        ModbusError::Db(e) => return Err(e.into()),
        ModbusError::NotFound(_) => return Err(PageError::NotFound),
        other => other.to_string(),
    };
    let mut errors = FieldErrors::new();
    let message = message
        .replace("poll_interval_ms", "the interval (ms)")
        .replace("gateway serial", "the name");
    errors.add(field_of(&message, fields), capitalised(&message));
    Ok(errors)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[derive(Deserialize)]
struct NewConverterForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    host: String,
    port: Option<String>,
    site_id: Option<String>,
}

const CONVERTER_FIELDS: &[&str] = &["name", "host", "port", "site_id"];

async fn create_converter(
    State(state): State<WebState>,
    user: PageUser,
    AdminForm(form): AdminForm<NewConverterForm>,
) -> PageResult {
    let typed = ConverterFormView {
        name: form.name.clone(),
        host: form.host.clone(),
        port: form.port.clone().unwrap_or_default(),
        site_id: form.site_id.clone().unwrap_or_default(),
    };
    let mut errors = FieldErrors::new();
    if form.name.trim().is_empty() {
        errors.add("name", "Give the converter a name, e.g. plant-rs485-1.");
    }
    if form.host.trim().is_empty() {
        errors.add(
            "host",
            "Type the converter's IP address or host name, e.g. 192.168.1.50.",
        );
    }
    let port = optional::<u16>(
        &mut errors,
        "port",
        &typed.port,
        "The port is a number from 1 to 65535 (Modbus TCP: 502).",
    );
    let site_id = optional::<i64>(
        &mut errors,
        "site_id",
        &typed.site_id,
        "Choose a site from the list.",
    );
    if let Some(site) = site_id {
        let visible = sites::list(&state.pool, &user.scope)
            .await?
            .iter()
            .any(|s| s.id == site);
        if !visible {
            errors.add("site_id", "Choose a site from the list.");
        }
    }
    let errors = if errors.is_empty() {
        let name = form.name.trim().to_owned();
        let created = store::create(
            &state.pool,
            state.modbus.maps(),
            state.modbus.settings(),
            NewConverter {
                name: name.clone(),
                host: form.host.trim().to_owned(),
                port,
                site_id,
                gap_ms: None,
                timeout_ms: None,
                retries: None,
                enabled: Some(true),
                devices: Vec::new(),
            },
            state.default_time_zone,
            "api",
        )
        .await;
        match created {
            Ok(_) => {
                state.modbus.changed();
                state.gateways_changed();
                return Ok(back(Ok(format!(
                    "Converter {name} added: add the devices behind it below."
                ))));
            }
            Err(e) => refusal(e, CONVERTER_FIELDS)?,
        }
    } else {
        errors
    };
    let no_device = (0, DeviceFormView::default());
    show(&state, &user, (None, None), errors, typed, no_device).await
}

async fn visible(state: &WebState, user: &PageUser, id: i64) -> Result<(), PageError> {
    store::get(&state.pool, &user.scope, id)
        .await?
        .map(|_| ())
        .ok_or(PageError::NotFound)
}

#[derive(Deserialize)]
struct NewDeviceForm {
    #[serde(default)]
    unit: String,
    #[serde(default)]
    model: String,
    kind: Option<String>,
    poll_interval_ms: Option<String>,
    serial: Option<String>,
}

const DEVICE_FIELDS: &[&str] = &["unit", "model", "kind", "poll_interval_ms", "serial"];

async fn add_device(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<NewDeviceForm>,
) -> PageResult {
    visible(&state, &user, id).await?;
    let typed = DeviceFormView {
        unit: form.unit.clone(),
        model: form.model.clone(),
        kind: form.kind.clone().unwrap_or_default(),
        poll_interval_ms: form.poll_interval_ms.clone().unwrap_or_default(),
        serial: form.serial.clone().unwrap_or_default(),
    };
    let mut errors = FieldErrors::new();
    let unit = match form.unit.trim().parse::<i64>() {
        Ok(u) if (1..=247).contains(&u) => Some(u),
        _ => {
            errors.add(
                "unit",
                "The unit id is a number from 1 to 247 (set on the meter).",
            );
            None
        }
    };
    let interval = optional::<u32>(
        &mut errors,
        "poll_interval_ms",
        &typed.poll_interval_ms,
        "The interval is a number of milliseconds, e.g. 5000.",
    );
    if let Some(unit) = unit.filter(|_| errors.is_empty()) {
        let added = store::add_device(
            &state.pool,
            state.modbus.maps(),
            state.modbus.settings(),
            id,
            &NewPolledDevice {
                unit,
                model: form.model.clone(),
                kind: form.kind.clone().filter(|k| !k.is_empty()),
                poll_interval_ms: interval,
                serial: form.serial.as_ref().map(|s| s.trim().to_owned()),
                enabled: Some(true),
            },
        )
        .await;
        match added {
            Ok(()) => {
                state.modbus.changed();
                return Ok(back(Ok(format!(
                    "Unit {unit} added: it is polled from now on."
                ))));
            }
            Err(e) => errors = refusal(e, DEVICE_FIELDS)?,
        }
    }
    show(
        &state,
        &user,
        (None, None),
        errors,
        new_converter(),
        (id, typed),
    )
    .await
}

/// User errors go back to the page; database failures are a 500.
fn outcome(result: Result<String, ModbusError>) -> Result<Result<String, String>, PageError> {
    match result {
        Ok(m) => Ok(Ok(m)),
        Err(ModbusError::Db(e)) => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

async fn remove_device(
    State(state): State<WebState>,
    user: PageUser,
    Path((id, unit)): Path<(i64, i16)>,
    _: AdminForm,
) -> PageResult {
    visible(&state, &user, id).await?;
    let removed = store::delete_device(&state.pool, id, unit).await;
    state.modbus.changed();
    Ok(back(outcome(removed.map(|()| {
        format!("Unit {unit} is no longer polled; its data stay")
    }))?))
}

#[derive(Deserialize)]
struct EnableForm {
    enabled: String,
}

async fn set_enabled(
    State(state): State<WebState>,
    user: PageUser,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm<EnableForm>,
) -> PageResult {
    visible(&state, &user, id).await?;
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
