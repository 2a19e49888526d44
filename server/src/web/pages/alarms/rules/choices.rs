//! The editor's pickers, built from the objects a rule can name (`dashboard::objects`: panels,
//! circuits, meters, relays of the user's sites, with labels people recognise): targets, relays,
//! kinds, quantities, severities and comparisons.

use super::view::RuleFormView;
pub(super) use crate::dashboard::objects::{Object, Objects};
use crate::web::pages::alarms::quantities::{self, KINDS, QUANTITIES};
use crate::web::pages::alarms::{options, SEVERITIES};

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
                .map(|(id, name)| (*id, name.clone(), id.to_string() == form.f.site_id))
                .collect(),
            site_filter: sites
                .iter()
                .map(|(id, name)| (*id, name.clone(), site_filter == Some(*id)))
                .collect(),
            severities: options(&SEVERITIES, &form.f.severity),
            targets: groups(
                &listed,
                &[
                    ("Panels", "panel", &objects.panels),
                    ("Circuits", "circuit", &objects.circuits),
                    ("Meters", "meter", &objects.meters),
                ],
                &form.f.target,
            ),
            relays: groups(
                &listed,
                &[("Relays", "", &objects.relays)],
                &form.f.shed_relay,
            ),
            kinds: KINDS
                .iter()
                .map(|k| {
                    let label = if k.unit.is_empty() {
                        k.name.to_owned()
                    } else {
                        format!("{} ({})", k.name, k.unit)
                    };
                    (k.value, label, k.value == form.f.kind)
                })
                .collect(),
            quantities: QUANTITIES
                .iter()
                .map(|q| {
                    (
                        q.value,
                        quantities::describe("measurement", q.value),
                        q.value == form.f.quantity,
                    )
                })
                .collect(),
            ops: options(
                &[
                    ("above", "Above the threshold"),
                    ("below", "Below the threshold"),
                    ("outside", "Outside the band (low … high)"),
                ],
                &form.f.op,
            ),
        }
    }
}
