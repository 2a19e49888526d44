//! The objects a rule can name (panels, circuits, meters, relays of the user's sites, with labels
//! people recognise) and the editor's pickers built from them: targets, relays, kinds,
//! quantities, severities and comparisons.

use super::view::RuleFormView;
use crate::auth::Principal;
use crate::web::pages::alarms::quantities::{self, KINDS, QUANTITIES};
use crate::web::pages::alarms::{options, SEVERITIES};
use crate::web::pages::PageError;
use crate::web::WebState;

// ---- the objects a rule can name ----------------------------------------------------------------

/// A panel, circuit, meter or relay a rule can name, with a label people recognise.
#[derive(Clone)]
pub struct Object {
    id: i64,
    site_id: i64,
    label: String,
}

/// Every object of the sites the user may see.
#[derive(Default)]
pub(super) struct Objects {
    pub(super) panels: Vec<Object>,
    pub(super) circuits: Vec<Object>,
    pub(super) meters: Vec<Object>,
    pub(super) relays: Vec<Object>,
}

/// "MT1234 (gateway SG0001)" or "Main supply — MT1234 (gateway SG0001)"; a device without a
/// serial is named by its port and slot.
fn device_label(
    name: Option<String>,
    serial: &str,
    gateway: &str,
    port: &str,
    slot: i16,
    kind: &str,
) -> String {
    let what = if !serial.is_empty() {
        serial.to_owned()
    } else if port == "ir" {
        format!("IR {kind}")
    } else {
        format!("{} {kind} {slot}", port.to_uppercase())
    };
    match name.filter(|n| !n.trim().is_empty()) {
        Some(n) => format!("{} — {what} (gateway {gateway})", n.trim()),
        None => format!("{what} (gateway {gateway})"),
    }
}

type DeviceRow = (
    i64,
    i64,
    Option<String>,
    String,
    String,
    String,
    i16,
    String,
);

impl Objects {
    pub(super) async fn load(state: &WebState, p: &Principal) -> Result<Self, PageError> {
        let scope = p.scope.site_ids();
        let panels: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, site_id, name FROM panels
             WHERE $1::int8[] IS NULL OR site_id = ANY($1) ORDER BY site_id, name, id",
        )
        .bind(scope)
        .fetch_all(&state.pool)
        .await?;
        let circuits: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT c.id, p.site_id, p.name, c.name, c.usage FROM circuits c
             JOIN panels p ON p.id = c.panel_id
             WHERE $1::int8[] IS NULL OR p.site_id = ANY($1) ORDER BY p.site_id, p.name, c.name, c.id",
        )
        .bind(scope)
        .fetch_all(&state.pool)
        .await?;
        let devices: Vec<DeviceRow> = sqlx::query_as(
            "SELECT d.id, g.site_id,
                    COALESCE(NULLIF(d.name, ''), NULLIF(d.description, ''), NULLIF(d.sg_description, '')),
                    d.serial, g.serial, d.port, d.slot, d.kind
             FROM devices d JOIN gateways g ON g.id = d.gateway_id
             WHERE g.site_id IS NOT NULL AND ($1::int8[] IS NULL OR g.site_id = ANY($1))
             ORDER BY g.site_id, COALESCE(d.name, d.description, d.serial), d.serial, g.serial, d.port, d.slot",
        )
        .bind(scope)
        .fetch_all(&state.pool)
        .await?;
        let mut objects = Self {
            panels: panels
                .into_iter()
                .map(|(id, site_id, label)| Object { id, site_id, label })
                .collect(),
            circuits: circuits
                .into_iter()
                .map(|(id, site_id, panel, name, usage)| Object {
                    id,
                    site_id,
                    label: format!("{panel} › {name} ({})", usage.replace('_', " ")),
                })
                .collect(),
            ..Self::default()
        };
        for (id, site_id, name, serial, gateway, port, slot, kind) in devices {
            let object = Object {
                id,
                site_id,
                label: device_label(name, &serial, &gateway, &port, slot, &kind),
            };
            if kind == "relay" {
                objects.relays.push(object);
            } else {
                objects.meters.push(object);
            }
        }
        Ok(objects)
    }

    pub(super) fn label(list: &[Object], id: Option<i64>) -> Option<&str> {
        list.iter()
            .find(|o| Some(o.id) == id)
            .map(|o| o.label.as_str())
    }
}

/// One `<option>` of a picker; `site` for a script that narrows the list to the chosen site.
pub struct Opt {
    pub(super) value: String,
    pub(super) label: String,
    pub(super) site: i64,
    pub(super) selected: bool,
}

/// One `<optgroup>`.
pub struct Group {
    pub(super) label: String,
    pub(super) options: Vec<Opt>,
}

/// Groups of `(heading, objects)` per site, the site named when more than one is listed.
fn groups(
    sites: &[(i64, String)],
    lists: &[(&str, &str, &[Object])],
    selected: &str,
) -> Vec<Group> {
    let named = sites.len() > 1;
    let mut out = Vec::new();
    for (site_id, site) in sites {
        for (heading, prefix, list) in lists {
            let options: Vec<Opt> = list
                .iter()
                .filter(|o| o.site_id == *site_id)
                .map(|o| {
                    let value = if prefix.is_empty() {
                        o.id.to_string()
                    } else {
                        format!("{prefix}:{}", o.id)
                    };
                    Opt {
                        selected: value == selected,
                        value,
                        label: o.label.clone(),
                        site: *site_id,
                    }
                })
                .collect();
            if !options.is_empty() {
                out.push(Group {
                    label: if named {
                        format!("{site} · {heading}")
                    } else {
                        (*heading).to_owned()
                    },
                    options,
                });
            }
        }
    }
    out
}

/// The editor's `<option>`s with the rule's value selected.
pub(super) struct Choices {
    pub(super) sites: Vec<(i64, String, bool)>,
    /// The "list the objects of" choice: (id, name, chosen); the pickers then list only the
    /// chosen site's objects (`?site_id=`).
    pub(super) site_filter: Vec<(i64, String, bool)>,
    pub(super) severities: Vec<(&'static str, &'static str, bool)>,
    pub(super) targets: Vec<Group>,
    pub(super) relays: Vec<Group>,
    pub(super) kinds: Vec<(&'static str, String, bool)>,
    pub(super) quantities: Vec<(&'static str, String, bool)>,
    pub(super) ops: Vec<(&'static str, &'static str, bool)>,
}

impl Choices {
    pub(super) fn new(
        form: &RuleFormView,
        sites: &[(i64, String)],
        objects: &Objects,
        site_filter: Option<i64>,
    ) -> Self {
        let listed: Vec<(i64, String)> = sites
            .iter()
            .filter(|(id, _)| site_filter.is_none_or(|f| f == *id))
            .cloned()
            .collect();
        Self {
            sites: sites
                .iter()
                .map(|(id, name)| (*id, name.clone(), id.to_string() == form.site_id))
                .collect(),
            site_filter: sites
                .iter()
                .map(|(id, name)| (*id, name.clone(), site_filter == Some(*id)))
                .collect(),
            severities: options(&SEVERITIES, &form.severity),
            targets: groups(
                &listed,
                &[
                    ("Panels", "panel", &objects.panels),
                    ("Circuits", "circuit", &objects.circuits),
                    ("Meters", "meter", &objects.meters),
                ],
                &form.target,
            ),
            relays: groups(
                &listed,
                &[("Relays", "", &objects.relays)],
                &form.shed_relay,
            ),
            kinds: KINDS
                .iter()
                .map(|k| {
                    let label = if k.unit.is_empty() {
                        k.name.to_owned()
                    } else {
                        format!("{} ({})", k.name, k.unit)
                    };
                    (k.value, label, k.value == form.kind)
                })
                .collect(),
            quantities: QUANTITIES
                .iter()
                .map(|q| {
                    (
                        q.value,
                        quantities::describe("measurement", q.value),
                        q.value == form.quantity,
                    )
                })
                .collect(),
            ops: options(
                &[
                    ("above", "Above the threshold"),
                    ("below", "Below the threshold"),
                    ("outside", "Outside the band (low … high)"),
                ],
                &form.op,
            ),
        }
    }
}
