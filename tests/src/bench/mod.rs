//! Helpers shared by the benchmarks in `tests/benches`.

pub mod copy;
pub mod cpu;
pub mod process;

pub use cpu::{CpuSample, CpuSpan, CpuUse};

use anyhow::Context as _;
use serde_json::Value;

use std::path::PathBuf;
use std::str::FromStr;

/// Name of the load-generating clients' threads: the CPU sampler tells them from Headend's.
pub const CLIENT_THREAD: &str = "bench-client";

/// Runs a bench on its own runtime (`harness_threads` workers, or tokio's default) with a second
/// runtime for its clients (threads named [`CLIENT_THREAD`]), and prints the report it returns.
pub fn run_with_clients<F, Fut>(harness_threads: Option<usize>, bench: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::runtime::Handle) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut harness = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = harness_threads {
        harness.worker_threads(n);
    }
    let harness = harness.enable_all().build()?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    let report = harness.block_on(bench(clients.handle().clone()))?;
    clients.shutdown_background();
    print!("{report}");
    Ok(())
}

/// A benchmark parameter from the environment, or its default.
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        Err(_) => Ok(default),
    }
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Debian's Mosquitto, installed by `deploy/install-deps.sh`.
pub fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| anyhow::anyhow!("mosquitto is not installed: run deploy/install-deps.sh"))
}

/// Facts about the machine the figures come from.
pub struct Machine {
    cpus: usize,
    model: String,
    memory_gib: f64,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    (key.trim() == name).then(|| value.trim().to_owned())
                })
                .unwrap_or_default()
        };
        let mhz = field(&cpuinfo, "cpu MHz");
        let memory_kib: f64 = field(&meminfo, "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Self {
            cpus: cpus(),
            model: format!("{} ({mhz} MHz)", field(&cpuinfo, "model name")),
            memory_gib: memory_kib / (1024.0 * 1024.0),
        }
    }

    /// One line for a report; `sharing` says what runs on the machine besides the kernel.
    pub fn describe(&self, sharing: &str) -> String {
        format!(
            "Machine: {} × {}, {:.0} GiB RAM, kernel {}. {sharing}",
            self.cpus,
            self.model,
            self.memory_gib,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        )
    }
}

/// Header fields that describe the meter; both documents carry the same ones, as a gateway does.
const DEVICE_HEADER: [&str; 8] = [
    "model",
    "serial_number",
    "port",
    "modbus_addr",
    "RS485 index",
    "location",
    "description",
    "SG description",
];

/// The measurements and counters fixture documents of one RS485 meter, with the meter header
/// made identical in both: what the ingest benches push.
pub struct MeterDocuments {
    pub measurements: Value,
    pub counters: Value,
    /// Counter readings in one counters document.
    pub counters_per_message: u64,
}

impl MeterDocuments {
    pub fn load() -> anyhow::Result<Self> {
        let mut counters: Value =
            serde_json::from_slice(&crate::fixture("counters-rs485-2-wm3m4c.json"))?;
        let mut measurements: Value =
            serde_json::from_slice(&crate::fixture("measurements-rs485-manual.json"))?;
        counters["header"]["RS485 index"] = 1.into();
        for key in DEVICE_HEADER {
            measurements["header"][key] = counters["header"][key].clone();
        }
        let counters_per_message = counters["counters"]
            .as_object()
            .context("counters fixture has a counters object")?
            .len() as u64;
        Ok(Self {
            measurements,
            counters,
            counters_per_message,
        })
    }

    /// The two documents (measurements, counters) of the meter of gateway `n`, which has its
    /// own meter serial.
    pub fn for_meter(&self, n: u32) -> [Value; 2] {
        let serial = Value::from(format!("{:08}", 30_000_000 + n));
        [&self.measurements, &self.counters].map(|doc| {
            let mut doc = doc.clone();
            doc["header"]["serial_number"] = serial.clone();
            doc
        })
    }
}
