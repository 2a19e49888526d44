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

//!
//! Modules: [`model`] (the sites as data), [`load`] (the load model), [`backfill`] (the
//! history), `devices` (meters, relays, panels and circuits), [`converter`] and [`modbus`]
//! (the simulated converter), `fleet` (the live simulators).

pub mod backfill;
pub mod converter;
mod devices;
mod fleet;
pub mod load;
pub mod modbus;
pub mod model;

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::accounting::{contracts, structure};
use crate::auth::{password, users, Role, Scope};
use crate::sites;
use crate::zone::TimeZone;
use backfill::Register;
pub use devices::demo_gateway;
use devices::{devices, locate, place};
pub use fleet::start_fleet;
use model::{Source, SITES};

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
    pub zone: TimeZone,
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
            None => sites::create(pool, spec.name, spec.zone.into()).await?,
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
            let year = Utc::now().date_naive().year();
            let contract = contracts::parse(model::contract_json(spec, year))
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
                    zone: spec.zone.into(),
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
            let (profile, rated) = load::live_load(spec, meter);
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
