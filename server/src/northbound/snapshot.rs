//! What one site has to publish, read in three queries: its gateways, its meters with their
//! newest measurement and active-energy registers, and its relays with their newest
//! *reported* state (never a command's target).

use sqlx::PgPool;

use crate::accounting::roles::{role_of, Role};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Gateway {
    pub id: i64,
    pub serial: String,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub online: bool,
}

/// A meter or a relay.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Device {
    pub id: i64,
    pub gateway_id: i64,
    pub gateway_serial: String,
    pub port: String,
    pub slot: i16,
    pub serial: String,
    pub model: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// A meter's newest measurement (within two days), SI units.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Measured {
    pub p: Option<f32>,
    pub u1: Option<f32>,
    pub u2: Option<f32>,
    pub u3: Option<f32>,
    pub i1: Option<f32>,
    pub i2: Option<f32>,
    pub i3: Option<f32>,
    pub frequency: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct Meter {
    pub device: Device,
    pub measured: Measured,
    /// Active import and export registers with their newest value in mWh.
    pub energy: Vec<(Role, Option<i64>)>,
}

#[derive(Debug, Clone)]
pub struct Relay {
    pub device: Device,
    /// 1 on, 0 off, -1 unknown; `None` never reported.
    pub state: Option<i16>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub gateways: Vec<Gateway>,
    pub meters: Vec<Meter>,
    pub relays: Vec<Relay>,
}

#[derive(sqlx::FromRow)]
struct MeterRow {
    #[sqlx(flatten)]
    device: Device,
    #[sqlx(flatten)]
    measured: Measured,
}

#[derive(sqlx::FromRow)]
struct RelayRow {
    #[sqlx(flatten)]
    device: Device,
    state: Option<i16>,
}

const DEVICE_COLUMNS: &str = "d.id, d.gateway_id, g.serial AS gateway_serial, d.port, d.slot,
    d.serial, d.model, d.name, d.description";

pub async fn load(pool: &PgPool, site: i64) -> Result<Snapshot, sqlx::Error> {
    // Online as everywhere else (`ONLINE_SQL`): an XML push gateway never holds an MQTT
    // session, so the bare `online` column would mark it and every device behind it unavailable.
    let gateways: Vec<Gateway> = sqlx::query_as(&format!(
        "SELECT g.id, g.serial, g.model, g.firmware_version, {} AS online FROM gateways g
         WHERE g.site_id = $1 ORDER BY g.id",
        crate::fleet::gateways::ONLINE_SQL
    ))
    .bind(site)
    .fetch_all(pool)
    .await?;
    let meters: Vec<MeterRow> = sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS}, m.p, m.u1, m.u2, m.u3, m.i1, m.i2, m.i3, m.frequency
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN LATERAL (SELECT p, u1, u2, u3, i1, i2, i3, frequency FROM measurements
                            WHERE device_id = d.id AND ts > now() - interval '2 days'
                            ORDER BY ts DESC LIMIT 1) m ON true
         WHERE g.site_id = $1 AND d.kind = 'meter' ORDER BY d.id"
    ))
    .bind(site)
    .fetch_all(pool)
    .await?;
    let counters: Vec<(i64, String, Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT d.id, c.name, d.import_register, d.export_register, r.value_milli
             FROM counters c JOIN devices d ON d.id = c.device_id
             JOIN gateways g ON g.id = d.gateway_id
             LEFT JOIN LATERAL (SELECT value_milli FROM counter_readings WHERE counter_id = c.id
                                ORDER BY ts DESC LIMIT 1) r ON true
             WHERE g.site_id = $1 AND c.unit = 'Wh' ORDER BY c.id",
    )
    .bind(site)
    .fetch_all(pool)
    .await?;
    let relays: Vec<RelayRow> = sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS}, rs.state
         FROM devices d JOIN gateways g ON g.id = d.gateway_id
         LEFT JOIN LATERAL (SELECT state FROM relay_states WHERE device_id = d.id
                            ORDER BY ts DESC LIMIT 1) rs ON true
         WHERE g.site_id = $1 AND d.kind = 'relay' ORDER BY d.id"
    ))
    .bind(site)
    .fetch_all(pool)
    .await?;
    let meters = meters
        .into_iter()
        .map(|row| {
            let mut energy = Vec::new();
            for (device, name, import, export, value) in &counters {
                if *device != row.device.id {
                    continue;
                }
                let role = role_of(name, import.as_deref(), export.as_deref(), None);
                if matches!(role, Role::Import | Role::Export) {
                    energy.push((role, *value));
                }
            }
            Meter {
                device: row.device,
                measured: row.measured,
                energy,
            }
        })
        .collect();
    Ok(Snapshot {
        gateways,
        meters,
        relays: relays
            .into_iter()
            .map(|r| Relay {
                device: r.device,
                state: r.state,
            })
            .collect(),
    })
}
