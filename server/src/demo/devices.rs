//! The demo's installation: where each meter is (fleet gateways, the converter, the XML push
//! gateway), the meters and relays with their counters, and the panels and circuits they are
//! placed in, each through the same code path as the API and the admin pages.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::backfill::{CounterRef, Register};
use super::converter_id;
use super::model::{self, Place, SiteSpec, Source};
use crate::accounting::structure;
use crate::auth::{password, Scope};
use crate::fleet::gateways;

/// Where each of the site's meters is (gateway id, port, slot), in `spec.meters` order:
/// the fleet's on their gateways; the Modbus meters on the demo converter, created (with
/// its polled units) through the converters' own code path; the XML meters on the XML push
/// gateway, registered with its source (loopback) and meter serials as the admin API does.
pub(super) async fn locate(
    pool: &PgPool,
    spec: &SiteSpec,
    site: i64,
    gateways: &HashMap<u32, i64>,
) -> anyhow::Result<Vec<(i64, &'static str, i16)>> {
    let modbus: Vec<_> = spec
        .meters
        .iter()
        .filter_map(|m| match m.source {
            Source::Modbus { unit, model } => Some((unit, model, m.serial())),
            _ => None,
        })
        .collect();
    let mut converter = 0;
    if !modbus.is_empty() {
        converter = match converter_id(pool).await? {
            Some(id) => id,
            None => crate::modbus::store::create(
                pool,
                &crate::modbus::Maps::builtin(),
                &crate::modbus::config::ModbusConfig::default(),
                crate::modbus::store::NewConverter {
                    name: model::CONVERTER.into(),
                    // The simulated converter's port is set once it listens.
                    host: "127.0.0.1".into(),
                    port: Some(502),
                    site_id: Some(site),
                    gap_ms: None,
                    timeout_ms: None,
                    retries: None,
                    enabled: Some(true),
                    devices: modbus
                        .iter()
                        .map(
                            |(unit, model, serial)| crate::modbus::store::NewPolledDevice {
                                unit: i64::from(*unit),
                                model: (*model).into(),
                                kind: Some("meter".into()),
                                poll_interval_ms: Some(5_000),
                                serial: Some(serial.clone()),
                                enabled: Some(true),
                            },
                        )
                        .collect(),
                },
                spec.zone.into(),
                "api",
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo converter: {e}"))?,
        };
    }
    let xml: Vec<String> = spec
        .meters
        .iter()
        .filter_map(|m| match m.source {
            Source::Xml { serial } => Some(serial.to_owned()),
            _ => None,
        })
        .collect();
    let mut xml_slots: HashMap<String, (i64, i16)> = HashMap::new();
    if !xml.is_empty() {
        // Its MQTT password is never used: it identifies by its source address.
        demo_gateway(pool, model::XML_GATEWAY, site).await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE serial = $1")
            .bind(model::XML_GATEWAY)
            .fetch_one(pool)
            .await?;
        let view = crate::xml_push::registry::set(
            pool,
            &Scope::All,
            model::XML_GATEWAY,
            &crate::xml_push::registry::XmlPushSettings {
                sources: vec!["127.0.0.1".into(), "::1".into()],
                meters: xml,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo XML push gateway: {e}"))?;
        for m in view.meters {
            xml_slots.insert(m.serial, (id, m.slot));
        }
    }
    let mut out = Vec::new();
    for meter in spec.meters {
        out.push(match meter.source {
            Source::Fleet => {
                let gateway = gateways.get(&meter.gateway).copied().unwrap_or_default();
                if meter.slot == 0 {
                    (gateway, "ir", 0)
                } else {
                    (gateway, "rs485", i16::from(meter.slot))
                }
            }
            Source::Modbus { unit, .. } => (converter, "modbus", i16::from(unit)),
            Source::Xml { serial } => {
                let (id, slot) = xml_slots.get(serial).copied().unwrap_or_default();
                (id, "xml", slot)
            }
        });
    }
    Ok(out)
}

/// Registers a demo gateway on `site`, or gives an existing one a fresh password (demo data
/// only: passwords are printed, so they are new on every start); returns the password.
pub async fn demo_gateway(pool: &PgPool, serial: &str, site: i64) -> anyhow::Result<String> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    let updated = sqlx::query("UPDATE gateways SET password_hash = $2 WHERE serial = $1")
        .bind(serial)
        .bind(&hash)
        .execute(pool)
        .await?
        .rows_affected();
    if updated == 0 {
        gateways::create(
            pool,
            gateways::NewGateway {
                serial: serial.into(),
                password: Some(secret.clone()),
                site_id: Some(site),
                ..Default::default()
            },
            chrono_tz::Europe::Ljubljana.into(),
        )
        .await?;
    }
    Ok(secret)
}

/// The meters (and relays) of the site's gateways as the simulator will report them, and
/// their counters, created ahead of the first push with a commissioning time before the
/// history. Returns the meters' device ids (in `spec.meters` order) and the counters.
pub(super) async fn devices(
    pool: &PgPool,
    spec: &SiteSpec,
    locations: &[(i64, &'static str, i16)],
    gateways: &HashMap<u32, i64>,
    commissioned: DateTime<Utc>,
) -> anyhow::Result<(Vec<i64>, Vec<CounterRef>)> {
    let mut meters = Vec::new();
    let mut counters = Vec::new();
    for (i, (meter, &(gateway, port, slot))) in spec.meters.iter().zip(locations).enumerate() {
        let (model, addr) = meter.model();
        let id = upsert_device(
            pool,
            gateway,
            ("meter", port, slot),
            &meter.serial(),
            model,
            addr,
            Some(meter.phases()),
            meter.name,
            commissioned,
        )
        .await?;
        meters.push(id);
        let mut registers = vec![(Register::Import, 1_i16, "Wh")];
        if meter.has_export() {
            registers.push((Register::Export, 2, "Wh"));
        }
        if meter.has_reactive() {
            registers.push((Register::Reactive, 3, "varh"));
        }
        for (register, idx, unit) in registers {
            let phase = (!meter.has_reactive()).then_some("Total");
            let counter: i64 = sqlx::query_scalar(
                "INSERT INTO counters AS c (device_id, name, idx, resettable, unit, phase, tariffs)
                 VALUES ($1, $2, $3, false, $4, $5, '{1,2,3,4}')
                 ON CONFLICT (device_id, name) DO UPDATE SET idx = c.idx
                 RETURNING id",
            )
            .bind(id)
            .bind(register.name())
            .bind(idx)
            .bind(unit)
            .bind(phase)
            .fetch_one(pool)
            .await?;
            counters.push(CounterRef {
                id: counter,
                meter: i,
                register,
            });
        }
    }
    // The example gateway's relays: the IR one and a Bicom in RS485 slot 2.
    for n in spec.gateways.0..=spec.gateways.1 {
        let gateway = gateways.get(&n).copied().unwrap_or_default();
        upsert_device(
            pool,
            gateway,
            ("relay", "ir", 0),
            "",
            "IR Bicom",
            None,
            None,
            "Water heater",
            commissioned,
        )
        .await?;
        upsert_device(
            pool,
            gateway,
            ("relay", "rs485", 2),
            &format!("{n:06}04"),
            "Bicom",
            Some(40),
            None,
            "Lighting group 2",
            commissioned,
        )
        .await?;
    }
    Ok((meters, counters))
}

#[allow(clippy::too_many_arguments)]
async fn upsert_device(
    pool: &PgPool,
    gateway: i64,
    (kind, port, slot): (&str, &str, i16),
    serial: &str,
    model: &str,
    addr: Option<i32>,
    phases: Option<i16>,
    description: &str,
    commissioned: DateTime<Utc>,
) -> anyhow::Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO devices AS d (gateway_id, kind, port, slot, serial, model, modbus_addr, phases,
                                   description, location, sg_description, first_seen_at,
                                   commissioned_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'Basement', $9, $10, $10)
         ON CONFLICT (gateway_id, kind, port, slot) DO UPDATE
             SET serial = EXCLUDED.serial, first_seen_at = LEAST(d.first_seen_at, EXCLUDED.first_seen_at),
                 commissioned_at = LEAST(d.commissioned_at, EXCLUDED.commissioned_at)
         RETURNING id",
    )
    .bind(gateway)
    .bind(kind)
    .bind(port)
    .bind(slot)
    .bind(serial)
    .bind(model)
    .bind(addr)
    .bind(phases)
    .bind(description)
    .bind(commissioned)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Panels, circuits and where each meter is: through the same functions as the admin pages.
pub(super) async fn place(
    pool: &PgPool,
    spec: &SiteSpec,
    site: i64,
    meters: &[i64],
) -> anyhow::Result<()> {
    let err = |e: structure::StructureError| anyhow::anyhow!("demo structure: {e}");
    let mut panels: HashMap<&str, i64> = HashMap::new();
    let existing = structure::list_panels(pool, site).await?;
    for (name, description) in spec.panels {
        let id = match existing.iter().find(|p| p.name == *name) {
            Some(p) => p.id,
            None => structure::create_panel(
                pool,
                site,
                &structure::PanelInput {
                    name: Some((*name).into()),
                    description: Some((*description).into()),
                },
            )
            .await
            .map_err(err)?,
        };
        panels.insert(name, id);
    }
    let mut circuits: HashMap<(&str, &str), i64> = HashMap::new();
    let existing = structure::list_site_circuits(pool, site).await?;
    for meter in spec.meters {
        if let Place::Circuit {
            panel,
            circuit,
            usage,
        } = meter.place
        {
            let panel_id = panels.get(panel).copied().unwrap_or_default();
            let id = match existing
                .iter()
                .find(|c| c.panel_id == panel_id && c.name == circuit)
            {
                Some(c) => c.id,
                None => structure::create_circuit(
                    pool,
                    panel_id,
                    &structure::CircuitInput {
                        name: Some(circuit.into()),
                        usage: Some(usage.into()),
                        description: None,
                    },
                )
                .await
                .map_err(err)?,
            };
            circuits.insert((panel, circuit), id);
        }
    }
    for (meter, &device) in spec.meters.iter().zip(meters) {
        let mut patch = structure::DevicePatch {
            name: Some(Some(meter.name.into())),
            ..Default::default()
        };
        match meter.place {
            Place::Site => patch.measures = Some(Some("site".into())),
            Place::Panel(panel) => {
                patch.measures = Some(Some("panel".into()));
                patch.panel_id = Some(panels.get(panel).copied());
            }
            Place::Circuit {
                panel,
                circuit,
                usage,
            } => {
                patch.measures = Some(Some("circuit".into()));
                patch.circuit_id = Some(circuits.get(&(panel, circuit)).copied());
                patch.usage = Some(Some(usage.into()));
            }
        }
        structure::patch_device(pool, device, patch)
            .await
            .map_err(err)?;
    }
    Ok(())
}
