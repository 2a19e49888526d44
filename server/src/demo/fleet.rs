//! The live part of the demo: the simulated MQTT fleet (`sg-gateway fleet`, one process per
//! site) and the XML push gateway (`sg-gateway xml-push`), started as child processes.

use std::path::Path;

use super::model::{self, SITES};
use super::{Demo, FLEET_PREFIX};
use crate::zone::TimeZone;

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
            .env("TZ", spec.zone.name())
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
                let mut zone = TimeZone::UTC;
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
                    .env("TZ", zone.name())
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
