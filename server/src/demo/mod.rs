//! `headend demo`: two sites with a year of history and a live simulated fleet.
//!
//! [`setup`] builds, deterministically and idempotently (running it again on the same data
//! directory changes passwords and fills only the time since the last run):
//!
//! - two sites in different zones (Europe/Ljubljana, America/New_York) with panels, circuits
//!   and usages, every meter placed (site, panel and circuit meters, a PV inverter), and a
//!   supply contract each with time-of-use bands, holidays, a demand and a reactive charge;
//! - 13 months of 15-minute counter readings for every meter ([`backfill`], from the load
//!   model in [`model`]), accounted by the profile worker like live data;
//! - an admin, an operator and a viewer with fresh passwords;
//! - an alarm rule the live data crosses within the first minute, with MQTT and e-mail
//!   notifications (the e-mail stays in the outbox: the demo has no SMTP server), and a
//!   critical relay (switching it off needs a second operator).
//!
//! - a Legrand-style panel whose meters are polled over Modbus TCP from a simulated RS485/IP
//!   converter ([`converter`], run in this process by [`modbus`]), and a meter on an older
//!   gateway that pushes MiSmart XML, both continuing their backfilled history.
//!
//! [`start_fleet`] then starts the companion firmware's simulator (`sg-gateway fleet`), one
//! process per zone, its meters continuing the backfilled counters, and the XML push
//! gateway (`sg-gateway xml-push`) when the XML push listener is on.

pub mod backfill;
pub mod converter;
pub mod modbus;
pub mod model;

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::accounting::{contracts, structure};
use crate::auth::{password, users, Role, Scope};
use crate::{fleet::gateways, sites};
use backfill::{CounterRef, Register};
use model::{Place, SiteSpec, Source, SITES};

/// Serial prefix of the simulated gateways: `SGF000001` …
pub const FLEET_PREFIX: &str = "SGF";
/// The gateway whose credentials are printed for `mosquitto_pub`.
pub const SAMPLE_GATEWAY: &str = "SG000017";
/// Days of history: 13 months, inside ingest's default backlog horizon (400 days).
pub const HISTORY_DAYS: i64 = 395;
pub const ALARM_RULE: &str = "Main supply demand above 10 kW";

/// A demo login.
#[derive(Debug, Clone)]
pub struct Login {
    pub email: &'static str,
    pub role: Role,
    pub password: String,
    pub sites: Vec<&'static str>,
}

/// What [`setup`] made, for printing and for the fleet.
#[derive(Debug)]
pub struct Demo {
    pub sites: Vec<(&'static str, i64)>,
    pub logins: Vec<Login>,
    pub sample_password: String,
    /// `serial password` lines for `sg-gateway fleet --password-file`.
    pub fleet_passwords: String,
    /// `--start-counters` lines, per site (one fleet process per zone).
    pub start_counters: Vec<String>,
    pub readings: u64,
    pub history_from: NaiveDate,
    /// The simulated RS485/IP converter: its address and (unit, model, meter name).
    pub converter: Option<(std::net::SocketAddr, Vec<(u8, &'static str, &'static str)>)>,
    /// The XML push gateway's meters, continuing the history.
    pub xml_meters: Vec<XmlMeterStart>,
}

/// A meter of the simulated XML push gateway: `sg-gateway xml-push --meter` and its zone.
#[derive(Debug, Clone)]
pub struct XmlMeterStart {
    pub serial: String,
    pub name: &'static str,
    /// Mean power while the shop is open, W.
    pub power_w: f64,
    pub tan_phi: f64,
    /// `E1nr`, `E2nr`, `E3nr` at the end of the history, milli-units.
    pub start: [i64; 3],
    pub zone: &'static str,
}

fn site_zone_name(site: &SiteSpec) -> &'static str {
    site.zone.name()
}

fn fleet_serial(n: u32) -> String {
    format!("{FLEET_PREFIX}{n:06}")
}

/// Everything but the live fleet. `now` ends the history.
pub async fn setup(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<Demo> {
    let history_start = now - Duration::days(HISTORY_DAYS);
    let commissioned = history_start - Duration::days(1);

    let mut site_ids = Vec::new();
    for spec in &SITES {
        let id = match sites::id_by_name(pool, spec.name).await? {
            Some(id) => id,
            None => sites::create(pool, spec.name, site_zone_name(spec)).await?,
        };
        site_ids.push((spec.name, id));
    }
    let site_id = |name: &str| {
        site_ids
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| *id)
            .unwrap_or_default()
    };

    let logins = vec![
        Login {
            email: "admin@demo.local",
            role: Role::Admin,
            password: password::generate(),
            sites: SITES.iter().map(|s| s.name).collect(),
        },
        Login {
            email: "operator@demo.local",
            role: Role::Operator,
            password: password::generate(),
            sites: vec![model::LJUBLJANA.name],
        },
        Login {
            email: "viewer@demo.local",
            role: Role::Viewer,
            password: password::generate(),
            sites: vec![model::NEW_YORK.name],
        },
    ];
    let mut admin_id = 0;
    for login in &logins {
        let hash = password::hash(login.password.clone()).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3)
             ON CONFLICT (lower(email)) DO UPDATE
                 SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role
             RETURNING id",
        )
        .bind(login.email)
        .bind(&hash)
        .bind(login.role.as_str())
        .fetch_one(pool)
        .await?;
        if login.role == Role::Admin {
            admin_id = id;
        }
        for name in &login.sites {
            users::grant_site(pool, id, site_id(name)).await?;
        }
    }

    let sample_password =
        demo_gateway(pool, SAMPLE_GATEWAY, site_id(model::LJUBLJANA.name)).await?;
    let mut fleet_passwords = String::new();
    let mut gateway_ids: HashMap<u32, i64> = HashMap::new();
    for spec in &SITES {
        for n in spec.gateways.0..=spec.gateways.1 {
            let serial = fleet_serial(n);
            let secret = demo_gateway(pool, &serial, site_id(spec.name)).await?;
            fleet_passwords.push_str(&format!("{serial} {secret}\n"));
            let id: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE serial = $1")
                .bind(&serial)
                .fetch_one(pool)
                .await?;
            // A gateway moved here by an older demo keeps nothing of its old site.
            structure::assign_gateway(pool, id, Some(site_id(spec.name)))
                .await
                .map_err(|e| anyhow::anyhow!("demo gateway {serial}: {e}"))?;
            gateway_ids.insert(n, id);
        }
    }
    // Installed before the history starts.
    sqlx::query("UPDATE gateways SET created_at = $2 WHERE id = ANY($1) AND created_at > $2")
        .bind(gateway_ids.values().copied().collect::<Vec<_>>())
        .bind(commissioned)
        .execute(pool)
        .await?;

    let mut readings = 0;
    let mut start_counters = Vec::new();
    let mut converter = None;
    let mut xml_meters = Vec::new();
    for spec in &SITES {
        let site = site_id(spec.name);
        let locations = locate(pool, spec, site, &gateway_ids).await?;
        // The converter and the XML push gateway were installed before the history too.
        sqlx::query(
            "UPDATE gateways SET created_at = $2 WHERE serial = ANY($1) AND created_at > $2",
        )
        .bind(&[model::CONVERTER, model::XML_GATEWAY][..])
        .bind(commissioned)
        .execute(pool)
        .await?;
        let (meters, counters) =
            devices(pool, spec, &locations, &gateway_ids, commissioned).await?;
        place(pool, spec, site, &meters).await?;
        if contracts::list(pool, site).await?.is_empty() {
            let contract = contracts::parse(contract_json(spec))
                .map_err(|e| anyhow::anyhow!("demo contract: {e}"))?;
            let from = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
            contracts::create(pool, site, from, &contract)
                .await
                .map_err(|e| anyhow::anyhow!("demo contract: {e}"))?;
        }
        let filled = backfill::fill(pool, spec, &meters, &counters, history_start, now).await?;
        readings += filled.readings;
        let mut ends: HashMap<usize, [i64; 3]> = HashMap::new();
        for c in &counters {
            if let Some(&v) = filled.end_values.get(&c.id) {
                let k = match c.register {
                    Register::Import => 0,
                    Register::Export => 1,
                    Register::Reactive => 2,
                };
                ends.entry(c.meter).or_default()[k] = v;
            }
        }
        if let Some(started) = modbus::start(spec, &ends, now)? {
            let addr = started.handle.addr();
            // The converter's address is new at every start: the same update as its page's.
            let id = converter_id(pool).await?.unwrap_or_default();
            crate::modbus::store::update(
                pool,
                id,
                &crate::modbus::store::ConverterPatch {
                    host: Some(addr.ip().to_string()),
                    port: Some(addr.port()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo converter: {e}"))?;
            converter = Some((addr, started.units));
        }
        for (i, meter) in spec.meters.iter().enumerate() {
            if let Source::Xml { serial } = meter.source {
                // The push simulator's shop day (open 09–21) at the model's level.
                let profile_kw = match meter.load {
                    model::Load::Retail(k) => k,
                    _ => 2.0,
                };
                xml_meters.push(XmlMeterStart {
                    serial: serial.to_owned(),
                    name: meter.name,
                    power_w: profile_kw * 1000.0 * 0.95,
                    tan_phi: spec.tan_phi,
                    start: ends.get(&i).copied().unwrap_or_default(),
                    zone: site_zone_name(spec),
                });
            }
        }
        let mut lines = String::new();
        for (i, meter) in spec.meters.iter().enumerate() {
            if meter.source != Source::Fleet {
                continue;
            }
            let serial = meter.serial();
            for c in counters.iter().filter(|c| c.meter == i) {
                if let Some(v) = filled.end_values.get(&c.id) {
                    lines.push_str(&format!("{serial} {} {v}\n", c.register.name()));
                }
            }
            let (profile, rated) = model::live_load(spec, meter);
            lines.push_str(&format!("{serial} profile {profile} {rated:.0}\n"));
        }
        start_counters.push(lines);
    }

    relays_and_alarms(pool, admin_id, &gateway_ids).await?;

    Ok(Demo {
        sites: site_ids,
        logins,
        sample_password,
        fleet_passwords,
        start_counters,
        readings,
        history_from: history_start.date_naive(),
        converter,
        xml_meters,
    })
}

/// The demo converter's gateway id, if it exists.
async fn converter_id(pool: &PgPool) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT g.id FROM gateways g JOIN converters c ON c.gateway_id = g.id WHERE g.serial = $1",
    )
    .bind(model::CONVERTER)
    .fetch_optional(pool)
    .await?)
}

/// Where each of the site's meters is (gateway id, port, slot), in `spec.meters` order:
/// the fleet's on their gateways; the Modbus meters on the demo converter, created (with
/// its polled units) through the converters' own code path; the XML meters on the XML push
/// gateway, registered with its source (loopback) and meter serials as the admin API does.
async fn locate(
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
                site_zone_name(spec),
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
            "Europe/Ljubljana",
        )
        .await?;
    }
    Ok(secret)
}

/// The meters (and relays) of the site's gateways as the simulator will report them, and
/// their counters, created ahead of the first push with a commissioning time before the
/// history. Returns the meters' device ids (in `spec.meters` order) and the counters.
async fn devices(
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
async fn place(pool: &PgPool, spec: &SiteSpec, site: i64, meters: &[i64]) -> anyhow::Result<()> {
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

/// The site's supply contract: time-of-use bands, the public holidays of the history's
/// years, a demand charge and a reactive charge.
fn contract_json(spec: &SiteSpec) -> serde_json::Value {
    let today = Utc::now().date_naive();
    let year = chrono::Datelike::year(&today);
    let holidays: Vec<String> = model::holidays(spec, year - 2..=year + 1)
        .iter()
        .map(ToString::to_string)
        .collect();
    if spec.zone == chrono_tz::America::New_York {
        json!({
            "currency": "USD",
            "bands": [
                {"name": "on-peak", "import_price": "0.2480", "export_price": "0.0700"},
                {"name": "mid-peak", "import_price": "0.1630", "export_price": "0.0700"},
                {"name": "off-peak", "import_price": "0.1090", "export_price": "0.0700"}
            ],
            "schedule": [
                {"name": "summer afternoons", "band": "on-peak", "months": [6, 7, 8, 9],
                 "days": ["mon", "tue", "wed", "thu", "fri"], "from": "12:00", "to": "20:00"},
                {"name": "working days", "band": "mid-peak",
                 "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "22:00"}
            ],
            "default_band": "off-peak",
            "holidays": holidays,
            "demand_charge": "18.50",
            "reactive": {"tan_phi_max": 0.4, "price": "0.0120"}
        })
    } else {
        json!({
            "currency": "EUR",
            "bands": [
                {"name": "peak", "import_price": "0.1680", "export_price": "0.0600"},
                {"name": "day", "import_price": "0.1420", "export_price": "0.0600"},
                {"name": "night", "import_price": "0.0950", "export_price": "0.0600"}
            ],
            "schedule": [
                {"name": "winter peak", "band": "peak", "months": [11, 12, 1, 2],
                 "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "14:00"},
                {"name": "working days", "band": "day",
                 "days": ["mon", "tue", "wed", "thu", "fri"], "from": "06:00", "to": "22:00"}
            ],
            "default_band": "night",
            "holidays": holidays,
            "demand_charge": "3.75",
            "reactive": {"tan_phi_max": 0.4, "price": "0.0150"}
        })
    }
}

/// A critical relay (four-eyes) and an alarm rule that the live data crosses at once.
async fn relays_and_alarms(
    pool: &PgPool,
    admin: i64,
    gateways: &HashMap<u32, i64>,
) -> anyhow::Result<()> {
    let first = model::LJUBLJANA.gateways.0;
    let gateway = gateways.get(&first).copied().unwrap_or_default();
    sqlx::query(
        "UPDATE devices SET critical = true, description = 'Server room cooling (critical)'
         WHERE gateway_id = $1 AND kind = 'relay' AND port = 'rs485' AND slot = 2",
    )
    .bind(gateway)
    .execute(pool)
    .await?;
    let site = sites::id_by_name(pool, model::LJUBLJANA.name)
        .await?
        .unwrap_or_default();
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM alarm_rules WHERE site_id = $1 AND name = $2)",
    )
    .bind(site)
    .bind(ALARM_RULE)
    .fetch_one(pool)
    .await?;
    if exists {
        return Ok(());
    }
    let meter: i64 = sqlx::query_scalar(
        "SELECT id FROM devices WHERE gateway_id = $1 AND kind = 'meter' AND port = 'ir'",
    )
    .bind(gateway)
    .fetch_one(pool)
    .await?;
    let input: crate::alarms::store::RuleInput = serde_json::from_value(json!({
        "site_id": site,
        "name": ALARM_RULE,
        "severity": "warning",
        "target": "meter",
        "device_id": meter,
        "watch": {"kind": "measurement", "quantity": "p"},
        "condition": {"op": "above", "threshold": 10000.0, "hysteresis": 500.0, "on_delay_s": 20},
        "actions": {
            "email": ["facility@demo.local"],
            "mqtt_topic": "demo/alarms",
            "notify_clear": true
        }
    }))?;
    crate::alarms::store::create_rule(pool, &Scope::All, admin, &input)
        .await
        .map_err(|e| anyhow::anyhow!("demo alarm rule: {e}"))?;
    Ok(())
}

/// Starts the simulated fleet: one `sg-gateway fleet` per site (each with its site's zone
/// as the gateways' clock), its meters continuing the backfilled counters. The children
/// are killed when dropped.
pub fn start_fleet(
    binary: &Path,
    demo: &Demo,
    mqtt_port: u16,
    xml_push: Option<std::net::SocketAddr>,
    data_dir: &Path,
) -> anyhow::Result<Vec<tokio::process::Child>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = data_dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(text.as_bytes())?;
        Ok(path)
    };
    let passwords = write("demo-fleet.passwords", &demo.fleet_passwords)?;
    // The history was extended to now: readings the gateways still held from an earlier run
    // would contradict it, so their queues start empty.
    let state = data_dir.join("demo-fleet");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let mut children = Vec::new();
    for (spec, counters) in SITES.iter().zip(&demo.start_counters) {
        let (first, last) = spec.gateways;
        let start = write(
            &format!("demo-fleet-{first}.counters"),
            &format!(
                "# meter-serial register value (milli-units) | meter-serial profile NAME W\n{counters}"
            ),
        )?;
        let child = tokio::process::Command::new(binary)
            .args(["fleet", "--serial-prefix", FLEET_PREFIX])
            .args(["--first", &first.to_string()])
            .args(["--count", &(last - first + 1).to_string()])
            .arg("--password-file")
            .arg(&passwords)
            .arg("--start-counters")
            .arg(&start)
            .args(["--broker", &format!("127.0.0.1:{mqtt_port}")])
            .args([
                "--push-interval",
                "15",
                "--first-push-delay",
                "2",
                "--receipts",
                "--simulate",
            ])
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "warn")
            // The simulated gateways' clocks show their site's local time, as an SG's does.
            .env("TZ", site_zone_name(spec))
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
    }
    if let Some((addr, units)) = &demo.converter {
        let units: Vec<String> = units
            .iter()
            .map(|(unit, model, name)| format!("unit {unit} {model} ({name})"))
            .collect();
        println!(
            "Simulated RS485/IP converter {name} (Modbus TCP) at {addr}: {units}; polled every \
             5 s, continuing the history: see /converters.",
            name = model::CONVERTER,
            units = units.join(", ")
        );
    }
    if !demo.xml_meters.is_empty() {
        match xml_push.map(loopback) {
            Some(to) => {
                let mut command = tokio::process::Command::new(binary);
                command.args(["xml-push", "--to", &to.to_string()]).args([
                    "--interval",
                    "15",
                    "--first-push-delay",
                    "2",
                ]);
                let mut zone = "UTC";
                for m in &demo.xml_meters {
                    command.arg("--meter").arg(format!(
                        "{}:{:.0}:{}:{}:{}",
                        m.serial, m.power_w, m.start[0], m.start[1], m.start[2]
                    ));
                    zone = m.zone;
                    command.args(["--tan-phi", &format!("{}", m.tan_phi)]);
                }
                let child = command
                    .env("RUST_LOG", "warn")
                    .env("TZ", zone)
                    .kill_on_drop(true)
                    .spawn()?;
                children.push(child);
                let meters: Vec<String> = demo
                    .xml_meters
                    .iter()
                    .map(|m| format!("{} ({})", m.serial, m.name))
                    .collect();
                println!(
                    "Simulated XML push gateway {gateway} pushes MiSmart XML to {to} every 15 s: \
                     meter {meters}, continuing the history.",
                    gateway = model::XML_GATEWAY,
                    meters = meters.join(", ")
                );
            }
            None => println!(
                "No XML push gateway: the XML push listener is off (set \
                 HEADEND_XML_PUSH_ADDR=127.0.0.1:5100, as deploy/demo.sh does)."
            ),
        }
    }
    Ok(children)
}

/// Where a local client reaches a listener bound to `addr` (an unspecified address is reached
/// on loopback).
fn loopback(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}
