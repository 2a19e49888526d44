//! Meters: what each measures (site, panel or circuit), its usage, its registers and its
//! commissioning date; and moving a gateway to a site.

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::pickers::Choice;
use super::{back, finish, refuse, site, Ctx};
use crate::accounting::structure::{self, DevicePatch, StructureError};
use crate::auth::Scope;
use crate::dashboard;
use crate::fleet::devices::Resolved;
use crate::web::pages::admin::{back_to_admin, refused};
use crate::web::pages::form::Submitted;
use crate::web::pages::{AdminForm, PageError, PageResult, PageUser};
use crate::web::WebState;
use crate::zone::TimeZone;

pub struct MeterRow {
    /// The `devices` id, carried by the form (serials are not unique).
    pub id: i64,
    pub serial: String,
    /// "Main supply — MT1234 (gateway SG0001, IR port)".
    pub label: String,
    pub model: String,
    pub name: String,
    pub placement: String,
    pub usage: String,
    pub import_register: String,
    pub export_register: String,
    pub reactive_register: String,
    /// The registers the meter reported, and any chosen before it reported them.
    pub registers: Vec<String>,
    /// The registers the meter reported, as text.
    pub reported: String,
    /// The commissioning date as a local date of the site (`YYYY-MM-DD`), or empty.
    pub commissioned: String,
}

impl MeterRow {
    /// Whether the register pickers list `register`.
    pub fn offers(&self, register: &str) -> bool {
        self.registers.iter().any(|r| r == register)
    }

    /// The stored register of the picker `field`.
    pub fn register(&self, field: &str) -> &str {
        match field {
            "import_register" => &self.import_register,
            "export_register" => &self.export_register,
            _ => &self.reactive_register,
        }
    }
}

/// Where a meter can be placed: the site, a panel, one of its circuits, in the page's order.
pub(super) fn placement_choices(
    panels: &[structure::PanelView],
    circuits: &[structure::CircuitView],
) -> Vec<Choice> {
    let mut list = vec![
        Choice {
            value: String::new(),
            label: "Not placed yet".into(),
        },
        Choice {
            value: "site".into(),
            label: "The whole site (main supply meter)".into(),
        },
    ];
    for panel in panels {
        list.push(Choice {
            value: format!("panel:{}", panel.id),
            label: format!("{} (the whole panel)", panel.name),
        });
        for c in circuits.iter().filter(|c| c.panel_id == panel.id) {
            list.push(Choice {
                value: format!("circuit:{}", c.id),
                label: format!(
                    "{} › {} ({})",
                    panel.name,
                    c.name,
                    super::pickers::usage_label(&c.usage).to_lowercase()
                ),
            });
        }
    }
    list
}

fn port_label(port: &str, slot: i16) -> String {
    match port {
        "ir" => "IR port".into(),
        "rs485" => format!("RS485 port {slot}"),
        "modbus" => format!("Modbus unit {slot}"),
        "xml" => "XML push".into(),
        other => format!("{other} {slot}"),
    }
}

/// The site's meters as the forms show them: not placed first, then placed.
pub(super) async fn rows(
    state: &WebState,
    site: i64,
    zone: TimeZone,
) -> Result<(Vec<MeterRow>, Vec<MeterRow>), PageError> {
    let tz = zone.tz();
    let (mut unplaced, mut placed) = (Vec::new(), Vec::new());
    for m in dashboard::meter_placements(&state.pool, site).await? {
        let placement = match (m.measures.as_deref(), m.panel_id, m.circuit_id) {
            (Some("site"), ..) => "site".into(),
            (Some("panel"), Some(p), _) => format!("panel:{p}"),
            (Some("circuit"), _, Some(c)) => format!("circuit:{c}"),
            _ => String::new(),
        };
        let name = m.name.unwrap_or_default();
        let port = format!(", {}", port_label(&m.port, m.slot));
        let label = if name.is_empty() {
            format!("{} (gateway {}{port})", m.serial, m.gateway)
        } else {
            format!("{name} — {} (gateway {}{port})", m.serial, m.gateway)
        };
        let (import_register, export_register, reactive_register) = (
            m.import_register.unwrap_or_default(),
            m.export_register.unwrap_or_default(),
            m.reactive_register.unwrap_or_default(),
        );
        let reported = m.registers.join(", ");
        let mut registers = m.registers;
        for r in [&import_register, &export_register, &reactive_register] {
            if !r.is_empty() && !registers.contains(r) {
                registers.push(r.clone());
            }
        }
        registers.sort();
        let row = MeterRow {
            commissioned: m
                .commissioned_at
                .map(|at| local_date(at, tz))
                .unwrap_or_default(),
            id: m.id,
            serial: m.serial,
            label,
            model: m.model.unwrap_or_default(),
            name,
            usage: m.usage.unwrap_or_default(),
            import_register,
            export_register,
            reactive_register,
            registers,
            reported,
            placement,
        };
        if row.placement.is_empty() {
            unplaced.push(row);
        } else {
            placed.push(row);
        }
    }
    Ok((unplaced, placed))
}

#[derive(Deserialize)]
pub(super) struct PlacementForm {
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

/// A commissioning instant as the form shows it: the local date of the site.
fn local_date(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

fn blank_is_none(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A register name as `structure` accepts it (`counter1nr`), checked here to name the field.
fn register_ok(r: &str) -> bool {
    let r = r.trim();
    r.is_empty() || (r.len() <= 32 && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// The field of the meter form a refusal from `structure` is about.
fn meter_field(message: &str) -> &'static str {
    if message.contains("usage") {
        "usage"
    } else if message.contains("commission") {
        "commissioned_at"
    } else if message.contains("register") {
        "import_register"
    } else if message.contains("meter name") {
        "name"
    } else {
        "placement"
    }
}

pub(super) async fn place_meter(
    State(state): State<WebState>,
    user: PageUser,
    Path((id, serial)): Path<(i64, String)>,
    Query(q): Query<crate::web::api::access::DeviceParam>,
    AdminForm(form): AdminForm<PlacementForm>,
) -> PageResult {
    // The form names the device (`?device=`); a bare serial must be unique on the site.
    let (device, serial, commissioned) =
        match dashboard::site_meter(&state.pool, id, &serial, q.device).await? {
            Resolved::Found(d) => (d.id, d.serial, d.commissioned_at),
            Resolved::NotFound => return Err(PageError::NotFound),
            Resolved::Ambiguous(c) => {
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
    let ctx = Ctx::new(&state, &user, id);
    let key = |field: &str| format!("meter-{device}-{field}");
    let mut s = Submitted::new();
    for (field, value) in [
        ("name", &form.name),
        ("placement", &form.placement),
        ("usage", &form.usage),
        ("import_register", &form.import_register),
        ("export_register", &form.export_register),
        ("reactive_register", &form.reactive_register),
    ] {
        s.keep(&key(field), value);
    }
    if let Some(date) = &form.commissioned_at {
        s.keep(&key("commissioned_at"), date);
    }
    let id_of = |v: &str| v.parse::<i64>().ok();
    let placement = match form.placement.split_once(':') {
        None if form.placement.is_empty() => Some((None, None, None)),
        None if form.placement == "site" => Some((Some("site".to_owned()), None, None)),
        Some(("panel", v)) if id_of(v).is_some() => Some((Some("panel".into()), id_of(v), None)),
        Some(("circuit", v)) if id_of(v).is_some() => {
            Some((Some("circuit".into()), None, id_of(v)))
        }
        _ => None,
    };
    if placement.is_none() {
        s.add(&key("placement"), "choose what the meter measures");
    }
    for (field, value) in [
        ("import_register", &form.import_register),
        ("export_register", &form.export_register),
        ("reactive_register", &form.reactive_register),
    ] {
        if !register_ok(value) {
            s.add(
                &key(field),
                format!(
                    "{:?} is not a counter name such as counter1nr",
                    crate::ingest::normalize::truncate(value.trim(), 40)
                ),
            );
        }
    }
    // The form shows a date: the same date again leaves a commissioning instant set through
    // the API alone; another date is local midnight of the site; empty clears it.
    let commissioned_at = match form.commissioned_at.as_deref().map(str::trim) {
        None => None,
        Some(date) => {
            let zone = site(&state, id).await?.time_zone;
            let shown = commissioned.map(|at| local_date(at, zone.tz()));
            match shown {
                Some(current) if current == date => None,
                None if date.is_empty() => None,
                _ if date.is_empty() => Some(None),
                _ => {
                    let checked = structure::parse_commissioned_at(date, zone, Utc::now());
                    if checked.is_err() {
                        s.add(
                            &key("commissioned_at"),
                            "the commissioning date is a date between 1990-01-01 and today",
                        );
                    }
                    Some(Some(date.to_owned()))
                }
            }
        }
    };
    let Some((measures, panel_id, circuit_id)) = placement.filter(|_| s.is_empty()) else {
        return refuse(ctx, s).await;
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
    if result.is_ok() {
        state.energy_changed();
    }
    let done = result.map(|()| format!("Meter {serial} saved."));
    finish(
        ctx,
        "meters",
        done,
        s,
        meter_field,
        &format!("meter-{device}"),
    )
    .await
}

// ---- gateways ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct AssignForm {
    /// Empty: off any site.
    site_id: String,
}

/// Moves a gateway (and its meters, unplaced) to a site or off any site.
pub(super) async fn assign_gateway(
    State(state): State<WebState>,
    user: PageUser,
    Path(serial): Path<String>,
    AdminForm(form): AdminForm<AssignForm>,
) -> PageResult {
    let gateway = crate::fleet::gateways::get(&state.pool, &Scope::All, &serial)
        .await?
        .ok_or(PageError::NotFound)?;
    let key = format!("move-{}-site_id", gateway.id);
    let mut s = Submitted::new();
    s.keep(&key, &form.site_id);
    let site = match form.site_id.trim() {
        "" => None,
        text => match text.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                s.add(&key, "choose a site from the list");
                return refused(&state, &user, s).await;
            }
        },
    };
    let result = structure::assign_gateway(&state.pool, gateway.id, site).await;
    match result {
        Ok(()) => {
            state.gateways_changed();
            state.energy_changed();
            Ok(back_to_admin(Ok(format!(
                "Gateway {serial} moved; place its meters on the site's administration page."
            ))))
        }
        Err(StructureError::Db(e)) => Err(e.into()),
        Err(e) => {
            s.add(&key, e.to_string());
            refused(&state, &user, s).await
        }
    }
}
