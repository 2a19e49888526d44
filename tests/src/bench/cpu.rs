//! CPU time from `/proc`, shared by every benchmark: a [`CpuSample`] is a snapshot of the tick
//! counters (the machine, every process, this process's threads); two of them make a
//! [`CpuSpan`], from which each benchmark reads the parts it reports (Headend, PostgreSQL, a
//! child process, client threads) and "other": the CPU taken by work that is not the
//! benchmark's, which must stay under 0.2 cores for a figure to be quoted.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use super::cpus;

/// Clock ticks per second of `/proc` (`USER_HZ`, 100 on every Linux this runs on).
pub const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Copy, Debug)]
struct ProcTicks {
    parent: u32,
    /// User + system ticks of the process (all its threads).
    own: u64,
    /// Ticks of the children it waited for.
    children: u64,
}

/// One snapshot of the tick counters.
pub struct CpuSample {
    at: Instant,
    /// Whole machine, over all CPUs: busy, and busy + idle + iowait.
    busy: u64,
    total: u64,
    /// Every process, by pid (processes come and go while they are read: a missing one is 0).
    procs: HashMap<u32, ProcTicks>,
    /// This process's threads: (name, own ticks).
    threads: Vec<(String, u64)>,
    comms: HashMap<u32, String>,
    me: u32,
}

impl CpuSample {
    pub fn now() -> anyhow::Result<Self> {
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
        let mut procs = HashMap::new();
        let mut comms = HashMap::new();
        for entry in std::fs::read_dir("/proc")? {
            let path = entry?.path();
            let pid: Option<u32> = path.file_name().and_then(|n| n.to_str()?.parse().ok());
            if let (Some(pid), Ok(ticks)) = (pid, proc_ticks(&path)) {
                procs.insert(pid, ticks);
                if let Ok(comm) = std::fs::read_to_string(path.join("comm")) {
                    comms.insert(pid, comm.trim().to_owned());
                }
            }
        }
        let mut threads = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?.path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if let Ok(t) = proc_ticks(&task) {
                threads.push((comm.trim().to_owned(), t.own));
            }
        }
        Ok(Self {
            at: Instant::now(),
            busy,
            total: busy + idle,
            procs,
            threads,
            comms,
            me: std::process::id(),
        })
    }

    /// When the sample was taken.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The span from `before` to this sample.
    pub fn since<'a>(&'a self, before: &'a Self) -> CpuSpan<'a> {
        CpuSpan {
            before,
            after: self,
        }
    }

    fn own(&self, pid: u32) -> u64 {
        self.procs.get(&pid).map_or(0, |t| t.own)
    }

    /// `pid` with the children it reaped, plus its live children.
    fn tree(&self, pid: u32) -> u64 {
        let root = self.procs.get(&pid).map_or(0, |t| t.own + t.children);
        let children: u64 = self
            .procs
            .iter()
            .filter(|(&child, t)| t.parent == pid && child != pid)
            .map(|(_, t)| t.own)
            .sum();
        root + children
    }

    fn named(&self, comm: &str) -> u64 {
        self.comms
            .iter()
            .filter(|(_, c)| c.as_str() == comm)
            .map(|(pid, _)| self.own(*pid))
            .sum()
    }

    fn threads(&self, prefix: &str) -> u64 {
        self.threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, t)| t)
            .sum()
    }
}

/// CPU used between two samples; every figure in seconds of one CPU (divide by
/// [`CpuSpan::wall`] for cores).
pub struct CpuSpan<'a> {
    before: &'a CpuSample,
    after: &'a CpuSample,
}

impl CpuSpan<'_> {
    fn seconds(ticks_after: u64, ticks_before: u64) -> f64 {
        ticks_after.saturating_sub(ticks_before) as f64 / TICKS_PER_SECOND
    }

    /// Wall-clock seconds.
    pub fn wall(&self) -> f64 {
        (self.after.at - self.before.at).as_secs_f64()
    }

    /// Wall-clock seconds as the kernel counts them (total ticks over the CPUs): the base of
    /// [`CpuSpan::cores`] so that rounding of the tick counters cancels.
    fn wall_ticks(&self) -> f64 {
        Self::seconds(self.after.total, self.before.total) / cpus() as f64
    }

    /// Average cores kept busy by `seconds` of CPU over the span.
    pub fn cores(&self, seconds: f64) -> f64 {
        seconds / self.wall_ticks().max(1.0 / TICKS_PER_SECOND)
    }

    /// The whole machine.
    pub fn machine(&self) -> f64 {
        Self::seconds(self.after.busy, self.before.busy)
    }

    /// This process (Headend in process, the harness and its clients).
    pub fn this_process(&self) -> f64 {
        Self::seconds(
            self.after.own(self.after.me),
            self.before.own(self.before.me),
        )
    }

    /// One process, all its threads.
    pub fn process(&self, pid: u32) -> f64 {
        Self::seconds(self.after.own(pid), self.before.own(pid))
    }

    /// A process and its children (a PostgreSQL postmaster and its backends, including those
    /// that ended during the span and were reaped).
    pub fn tree(&self, pid: u32) -> f64 {
        Self::seconds(self.after.tree(pid), self.before.tree(pid))
    }

    /// Every process with this command name that is alive at both samples (a lower bound:
    /// processes that ended in between are not counted).
    pub fn named(&self, comm: &str) -> f64 {
        Self::seconds(self.after.named(comm), self.before.named(comm))
    }

    /// This process's threads whose name starts with `prefix` (a client runtime's workers).
    pub fn threads(&self, prefix: &str) -> f64 {
        Self::seconds(self.after.threads(prefix), self.before.threads(prefix))
    }

    /// The machine's CPU not in `accounted` (seconds): the work that is not the benchmark's.
    pub fn other(&self, accounted: f64) -> f64 {
        (self.machine() - accounted).max(0.0)
    }
}

/// Ticks of `/proc/<pid>` or `/proc/<pid>/task/<tid>`.
fn proc_ticks(dir: &Path) -> anyhow::Result<ProcTicks> {
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    // The command name may contain spaces; the fields after it (from `state`) are plain.
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field =
        |n: usize| -> anyhow::Result<u64> { Ok(fields.get(n).context("stat field")?.parse()?) };
    Ok(ProcTicks {
        parent: u32::try_from(field(1)?)?,
        own: field(11)? + field(12)?,
        children: field(13)? + field(14)?,
    })
}

/// Cores kept busy, on average, by the usual parts of an in-process benchmark.
pub struct CpuUse {
    pub machine: f64,
    /// This process: Headend and the harness's clients.
    pub process: f64,
    pub postgres: f64,
    /// Everything else on the machine (kernel threads, other users): a run where this
    /// exceeds 0.2 cores is repeated before it is quoted.
    pub other: f64,
}

impl CpuUse {
    /// Headend in this process, PostgreSQL as every `postgres` process.
    pub fn of(span: &CpuSpan<'_>) -> Self {
        let process = span.this_process();
        let postgres = span.named("postgres");
        Self {
            machine: span.cores(span.machine()),
            process: span.cores(process),
            postgres: span.cores(postgres),
            other: span.cores(span.other(process + postgres)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_counted_in_this_process_and_not_in_other() {
        let before = CpuSample::now().unwrap();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = CpuSample::now().unwrap();
        let span = after.since(&before);
        assert!(span.this_process() > 0.1, "{}", span.this_process());
        assert!(span.process(std::process::id()) > 0.1);
        assert!(span.machine() >= span.this_process() - 0.02);
        assert!(span.cores(span.this_process()) <= cpus() as f64 + 0.1);
    }
}
