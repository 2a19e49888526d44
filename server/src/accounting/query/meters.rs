//! The site's meters as a consumption query sees them (placement, labels, billing
//! registers), their per-bucket sums, and how they group into rows that add up to the site.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;

use super::super::roles::{self, Role};
use super::super::topology::{self, Placement};
use super::views::{Completeness, Group, GroupView};
use super::{money, wh};

/// A meter of the site with its labels and billing registers.
#[derive(Debug, Clone)]
pub(super) struct Meter {
    pub(super) placement: Placement,
    pub(super) serial: String,
    pub(super) name: String,
    pub(super) usage: String,
    pub(super) circuit: Option<(i64, String)>,
    pub(super) panel: Option<(i64, String)>,
    pub(super) import: Option<i64>,
    pub(super) export: Option<i64>,
    pub(super) reactive: Option<i64>,
}

/// Sums of one register over one bucket.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Sums {
    pub(super) energy: i64,
    pub(super) measured: i64,
    pub(super) estimated: i64,
    pub(super) cost_nano: i128,
    pub(super) priced: bool,
    pub(super) peak: i64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct MeterBucket {
    pub(super) import: Sums,
    pub(super) export: Sums,
    pub(super) reactive: Sums,
}

/// Rows that add up to the site total: leaves, plus each counted parent meter's remainder.
pub(super) fn group_rows(
    group: Group,
    meters: &[Meter],
    per_meter: &[(usize, MeterBucket)],
    top: &std::collections::HashSet<i64>,
    expected: u64,
) -> Vec<GroupView> {
    let placements: Vec<Placement> = meters.iter().map(|m| m.placement.clone()).collect();
    let children = topology::children(&placements);
    // A meter's key is its serial, unless the serial does not name one meter of the site
    // (serials are not unique, see `devices::Resolved`): then `device:{id}`, so that two
    // meters are never merged into one row.
    let mut serials: HashMap<&str, usize> = HashMap::new();
    for m in meters {
        *serials.entry(m.serial.as_str()).or_default() += 1;
    }
    let meter_key = |m: &Meter| {
        if m.serial.is_empty() || serials.get(m.serial.as_str()).copied().unwrap_or(0) > 1 {
            format!("device:{}", m.placement.device_id)
        } else {
            m.serial.clone()
        }
    };
    let by_id: HashMap<i64, (&Meter, &MeterBucket)> = per_meter
        .iter()
        .map(|(i, b)| (meters[*i].placement.device_id, (&meters[*i], b)))
        .collect();
    let cost = |b: &MeterBucket| -> Option<i128> {
        b.import.priced.then_some(
            b.import.cost_nano
                - if b.export.priced {
                    b.export.cost_nano
                } else {
                    0
                },
        )
    };

    if group == Group::Meter {
        return meters
            .iter()
            .zip(per_meter)
            .filter(|(m, _)| m.import.is_some())
            .map(|(m, (_, b))| GroupView {
                key: meter_key(m),
                name: m.name.clone(),
                import_wh: wh(b.import.energy),
                export_wh: wh(b.export.energy),
                energy_cost: cost(b).map(money),
                peak_w: Some(wh(b.import.peak) * 4.0),
                completeness: Some(Completeness::new(
                    expected,
                    b.import.measured as u64,
                    b.import.estimated as u64,
                )),
            })
            .collect();
    }

    // Accumulate (key, name) -> (import, export, cost).
    let mut acc: BTreeMap<String, (String, i64, i64, Option<i128>)> = BTreeMap::new();
    let mut add = |key: String, name: String, import: i64, export: i64, c: Option<i128>| {
        let e = acc.entry(key).or_insert((name, 0, 0, Some(0)));
        e.1 += import;
        e.2 += export;
        e.3 = match (e.3, c) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    };
    // Walk down from the counted meters: a parent contributes its remainder, its children
    // themselves (recursively).
    let mut stack: Vec<i64> = top.iter().copied().collect();
    stack.sort_unstable();
    while let Some(id) = stack.pop() {
        let Some((m, b)) = by_id.get(&id) else {
            continue;
        };
        let kids = children.get(&id).cloned().unwrap_or_default();
        let (mut imp, mut exp, mut c) = (b.import.energy, b.export.energy, cost(b));
        for k in &kids {
            if let Some((_, kb)) = by_id.get(k) {
                imp -= kb.import.energy;
                exp -= kb.export.energy;
                c = match (c, cost(kb)) {
                    (Some(a), Some(kc)) => Some(a - kc),
                    _ => None,
                };
            }
            stack.push(*k);
        }
        let (key, name) = match group {
            Group::Usage => (m.usage.clone(), m.usage.clone()),
            Group::Circuit => match (&m.circuit, &m.panel, kids.is_empty()) {
                (Some((cid, cname)), Some((_, pname)), _) => {
                    (format!("circuit:{cid}"), format!("{pname} / {cname}"))
                }
                (_, Some((pid, pname)), false) => (
                    format!("panel:{pid}:rest"),
                    format!("{pname} (not submetered)"),
                ),
                (_, Some((pid, pname)), true) => (format!("panel:{pid}"), pname.clone()),
                (_, None, false) if m.placement.measures.as_deref() == Some("site") => {
                    ("site:rest".into(), "Site (not submetered)".into())
                }
                _ => (
                    format!("meter:{}", meter_key(m)),
                    format!("Unplaced: {}", m.name),
                ),
            },
            Group::Panel => match (&m.panel, m.placement.measures.as_deref()) {
                (Some((pid, pname)), _) => (format!("panel:{pid}"), pname.clone()),
                (None, Some("site")) => ("site:rest".into(), "Site (no panel)".into()),
                _ => (
                    format!("meter:{}", meter_key(m)),
                    format!("Unplaced: {}", m.name),
                ),
            },
            Group::Meter => unreachable!("handled above"),
        };
        add(key, name, imp, exp, c);
    }
    acc.into_iter()
        .map(|(key, (name, imp, exp, c))| GroupView {
            key,
            name,
            import_wh: wh(imp),
            export_wh: wh(exp),
            energy_cost: c.map(money),
            peak_w: None,
            completeness: None,
        })
        .collect()
}

pub(super) async fn site_meters(
    conn: &mut PgConnection,
    site: i64,
) -> Result<Vec<Meter>, sqlx::Error> {
    type Row = (
        i64,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Vec<i64>,
        Vec<String>,
    );
    // One statement: the meters with their counters (id, name) as two arrays.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.id, d.measures, d.panel_id, d.circuit_id, c.panel_id, d.serial,
                COALESCE(d.name, NULLIF(d.description, ''), NULLIF(d.sg_description, '')),
                COALESCE(d.usage, c.usage), c.name, p.name,
                d.import_register, d.export_register, d.reactive_register, d.model,
                COALESCE(k.ids, '{}'), COALESCE(k.names, '{}')
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN circuits c ON c.id = d.circuit_id
         LEFT JOIN panels p ON p.id = COALESCE(c.panel_id, d.panel_id)
         LEFT JOIN LATERAL (SELECT array_agg(x.id ORDER BY x.id) AS ids,
                                   array_agg(x.name ORDER BY x.id) AS names
                            FROM counters x WHERE x.device_id = d.id) k ON true
         WHERE g.site_id = $1 AND d.kind = 'meter'
         ORDER BY d.id",
    )
    .bind(site)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                measures,
                panel_id,
                circuit_id,
                circuit_panel,
                serial,
                name,
                usage,
                cname,
                pname,
                imp,
                exp,
                reac,
                model,
                counter_ids,
                counter_names,
            )| {
                let find = |role: Role| {
                    counter_ids
                        .iter()
                        .zip(&counter_names)
                        .find(|(_, n)| {
                            roles::role_of(n, imp.as_deref(), exp.as_deref(), reac.as_deref())
                                == role
                        })
                        .map(|(c, _)| *c)
                };
                let panel_id_eff = circuit_panel.or(panel_id);
                Meter {
                    placement: Placement {
                        device_id: id,
                        measures,
                        panel_id,
                        circuit_id,
                        circuit_panel_id: circuit_panel,
                    },
                    name: name.unwrap_or_else(|| {
                        format!("{} {}", model.unwrap_or_default(), serial)
                            .trim()
                            .to_owned()
                    }),
                    serial,
                    usage: usage.unwrap_or_else(|| "other".into()),
                    circuit: circuit_id.zip(cname),
                    panel: panel_id_eff.zip(pname),
                    import: find(Role::Import),
                    export: find(Role::Export),
                    reactive: find(Role::Reactive),
                }
            },
        )
        .collect())
}
