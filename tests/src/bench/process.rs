//! A benchmarked process apart from the harness: its release binary and its resident memory
//! (`/proc/<pid>/status`), so a benchmark measures Headend's memory, not its own.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};

/// `target/release/<name>`, next to the running benchmark's `deps` directory.
pub fn release_binary(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory")?
        .join(name);
    ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p {package}` first",
        bin.display()
    );
    Ok(bin)
}

/// Resident memory of a process, bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resident {
    /// `VmRSS`: now.
    pub rss: u64,
    /// `VmHWM`: the peak since the process started or since [`reset_peak`].
    pub peak: u64,
}

impl Resident {
    /// Reads `/proc/<pid>/status`; zeros for a process that is gone.
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |k| k * 1024)
        };
        Self {
            rss: kib("VmRSS:"),
            peak: kib("VmHWM:"),
        }
    }
}

/// Restarts the `VmHWM` peak of `pid` at its current RSS (`clear_refs` 5, Linux ≥ 4.0).
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// Mebibytes, for reports.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
