//! Helpers shared by the benchmarks in `tests/benches`.

use std::path::PathBuf;
use std::str::FromStr;

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

/// CPU time counters from `/proc`, in clock ticks (`USER_HZ`): the whole machine, this process
/// (Headend and the harness when the app runs in-process) and every PostgreSQL process.
pub struct CpuSample {
    busy: u64,
    total: u64,
    process: u64,
    postgres: u64,
}

impl CpuSample {
    pub fn now() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let stat = std::fs::read_to_string("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .context("/proc/stat")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // user nice system idle iowait irq softirq steal ...
        let idle = fields[3] + fields[4];
        let busy: u64 = fields[..8].iter().sum::<u64>() - idle;
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc")? {
            let path = entry?.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                // Processes come and go while we read.
                postgres += proc_ticks(&path).unwrap_or(0);
            }
        }
        Ok(Self {
            busy,
            total: busy + idle,
            process: proc_ticks("/proc/self".as_ref())?,
            postgres,
        })
    }

    /// Cores kept busy between `before` and this sample.
    pub fn since(&self, before: &Self) -> CpuUse {
        // Wall time in ticks of one CPU.
        let wall = self.total.saturating_sub(before.total) as f64 / cpus() as f64;
        let cores = |ticks: u64| ticks as f64 / wall.max(1.0);
        let busy = self.busy.saturating_sub(before.busy);
        let process = self.process.saturating_sub(before.process);
        // PostgreSQL backends that ended between the samples are not counted: a lower bound.
        let postgres = self.postgres.saturating_sub(before.postgres);
        CpuUse {
            machine: cores(busy),
            process: cores(process),
            postgres: cores(postgres),
            other: cores(busy.saturating_sub(process + postgres)),
        }
    }
}

/// Own user + system ticks of `/proc/<pid>`.
fn proc_ticks(dir: &std::path::Path) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    // The command name may contain spaces; the fields after it (from `state`) are plain.
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field =
        |n: usize| -> anyhow::Result<u64> { Ok(fields.get(n).context("stat field")?.parse()?) };
    Ok(field(11)? + field(12)?)
}

/// Cores kept busy, on average.
pub struct CpuUse {
    pub machine: f64,
    /// This process: Headend and the harness's clients.
    pub process: f64,
    pub postgres: f64,
    /// Everything else on the machine (kernel threads, other users): a run where this
    /// exceeds 0.2 cores is repeated before it is quoted.
    pub other: f64,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} of {}: Headend and clients {:.2}, PostgreSQL {:.2}, other {:.2}",
            self.machine,
            cpus(),
            self.process,
            self.postgres,
            self.other
        )
    }
}
