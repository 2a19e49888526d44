//! The panels, circuits, meters and relays of the sites a user may see, each named so that
//! people recognise it: what an alarm rule can apply to and the relay it can shed (the rule
//! editor's pickers, the rule list's names).

use sqlx::PgPool;

use super::DashboardError;
use crate::auth::Scope;

/// A panel, circuit, meter or relay a rule can name, with a label people recognise.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: i64,
    pub site_id: i64,
    pub label: String,
}

/// Every object of the sites a scope may see.
#[derive(Debug, Default)]
pub struct Objects {
    pub panels: Vec<Object>,
    pub circuits: Vec<Object>,
    pub meters: Vec<Object>,
    pub relays: Vec<Object>,
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
    pub async fn load(pool: &PgPool, scope: &Scope) -> Result<Self, DashboardError> {
        let scope = scope.site_ids();
        let panels: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, site_id, name FROM panels
             WHERE $1::int8[] IS NULL OR site_id = ANY($1) ORDER BY site_id, name, id",
        )
        .bind(scope)
        .fetch_all(pool)
        .await?;
        let circuits: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT c.id, p.site_id, p.name, c.name, c.usage FROM circuits c
             JOIN panels p ON p.id = c.panel_id
             WHERE $1::int8[] IS NULL OR p.site_id = ANY($1) ORDER BY p.site_id, p.name, c.name, c.id",
        )
        .bind(scope)
        .fetch_all(pool)
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
        .fetch_all(pool)
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

    /// The label of `id` in `list`.
    pub fn label(list: &[Object], id: Option<i64>) -> Option<&str> {
        list.iter()
            .find(|o| Some(o.id) == id)
            .map(|o| o.label.as_str())
    }
}
