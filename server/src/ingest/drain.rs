//! `headend journal drain --dir PATH`: commits the journal of an instance that is gone for good.
//!
//! Every PUBACK an instance gave is backed by its journal, and the journal forgets only what
//! PostgreSQL committed; an instance that dies for good therefore leaves acknowledged readings
//! on its disk. The drain opens that journal (refusing one a running Headend holds: the journal's
//! own `LOCK` file, which `serve` keeps locked for its whole life), and runs every record after
//! its checkpoint through the same [`Ingest`] writers, normaliser and idempotent inserts as
//! `serve`, acking each batch as it commits, until the checkpoint reaches the last record.
//!
//! Exactly once comes from the ingest invariants, not from anything here: rows are keyed on
//! (device or counter, time) and events and rejects on (journal epoch, seq), and the epoch is the
//! journal's own, so a record committed before the crash (or by an earlier drain of a copy)
//! adds nothing when drained again.
//!
//! What `serve` does around ingest, and what the drain does about it:
//! - sessions: the connects and disconnects are written as the dead instance's (its name from
//!   the data directory's `instance` file next to the journal), so they change only gateways
//!   whose session it still owns;
//! - receipts to gateways are not sent: the gateway's session was on the instance that is gone
//!   (a gateway that numbers its readings resends the unconfirmed ones to the instance it
//!   reconnects to, and those replays change nothing);
//! - alarms: drained measurements are handed to the alarm evaluator after each commit, as in
//!   `serve`, and the evaluator is let finish before the drain exits;
//! - energy and relay commands: the ingest transaction queues the new counter readings in
//!   `energy_dirty`, and relay states are in the database, so the profile worker and the command
//!   dispatcher of any running instance (or the next one started) pick them up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use headend_journal::{Journal, JournalError, JournalOptions, TornTail};

use super::{Ingest, IngestError, IngestSettings};
use crate::alarms::{engine, AlarmsHandle};
use crate::config::Config;
use crate::infra::cluster::InstanceId;
use crate::infra::datadir::INSTANCE_FILE;
use crate::infra::metrics::Metrics;

/// `headend journal ...`.
#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Commit what the journal of a stopped Headend holds, then exit (docs/operations.md).
    Drain {
        /// The journal directory (`<data_dir>/journal` of the instance that is gone).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("{0} is not a journal directory (no epoch file and no segments); give the `journal` directory inside the instance's data directory")]
    NotAJournal(PathBuf),
    #[error("journal {0} is held by a running Headend (its LOCK file is locked): a running instance commits its own journal; stop it first if it must be drained from here")]
    Held(PathBuf),
    #[error("cannot open journal {dir}: {source}")]
    Open { dir: PathBuf, source: JournalError },
    #[error("opening the journal failed: {0}")]
    OpenTask(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("the ingest writers stopped: {0}")]
    Writers(String),
    #[error("interrupted: records up to seq {checkpoint} are committed and the journal keeps the rest; run the drain again to finish")]
    Interrupted { checkpoint: u64 },
}

/// Opens the journal at `dir` for draining: recovers it (cutting a torn tail, reported in the
/// [`Report`]) and holds its lock, so no `serve` can open it meanwhile. Never creates one.
pub async fn open(dir: &Path) -> Result<Journal, DrainError> {
    if !looks_like_journal(dir) {
        return Err(DrainError::NotAJournal(dir.to_owned()));
    }
    let path = dir.to_owned();
    let opened =
        tokio::task::spawn_blocking(move || Journal::open(&path, JournalOptions::default()))
            .await
            .map_err(|e| DrainError::OpenTask(e.to_string()))?;
    opened.map_err(|source| match source {
        JournalError::Locked { dir } => DrainError::Held(dir),
        source => DrainError::Open {
            dir: dir.to_owned(),
            source,
        },
    })
}

/// A journal has its epoch file from its first open on; segments without one are for
/// [`Journal::open`] to refuse with its own reason.
fn looks_like_journal(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name == "epoch" || name.ends_with(".seg")
    })
}

/// What a drain committed, printed by the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub dir: PathBuf,
    pub epoch: u64,
    /// Records after the checkpoint when the drain started: seqs `first..=last`.
    pub first: u64,
    pub last: u64,
    pub measurements: u64,
    pub counter_readings: u64,
    pub relay_states: u64,
    pub events: u64,
    pub rejects: u64,
    pub partial_rejects: u64,
    /// Records this build could not read (logged with their seq, as `serve` does).
    pub unreadable: u64,
    pub torn_tail: Option<TornTail>,
}

impl Report {
    fn records(&self) -> u64 {
        (self.last + 1).saturating_sub(self.first)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "journal {} (epoch {:016x})",
            self.dir.display(),
            self.epoch
        )?;
        if let Some(torn) = &self.torn_tail {
            writeln!(
                f,
                "  torn tail: {} bytes cut from {} at offset {} ({}); records in it were never durable and are not committed",
                torn.cut_bytes,
                torn.segment.display(),
                torn.offset,
                torn.reason
            )?;
        }
        if self.records() == 0 {
            return writeln!(f, "  nothing to drain: every record is committed");
        }
        writeln!(
            f,
            "  drained {} records (seq {}..={})",
            self.records(),
            self.first,
            self.last
        )?;
        writeln!(
            f,
            "  committed: {} measurements, {} counter readings, {} relay states, {} events, {} rejects ({} partial)",
            self.measurements,
            self.counter_readings,
            self.relay_states,
            self.events,
            self.rejects,
            self.partial_rejects
        )?;
        writeln!(
            f,
            "  unreadable records: {} (logged with their seq)",
            self.unreadable
        )?;
        writeln!(
            f,
            "  receipts: not sent, the gateways' sessions were on the instance that is gone (they resend unconfirmed readings; replays change nothing)"
        )?;
        writeln!(f, "  alarms: drained measurements evaluated")?;
        write!(
            f,
            "  energy and relay commands: left to the profile worker and dispatcher of a running instance"
        )
    }
}

/// How often the drain looks whether the checkpoint has reached the end.
const POLL: Duration = Duration::from_millis(20);

/// Drains `journal` into `pool` with `serve`'s ingest writers, then closes it.
pub async fn drain(journal: Journal, pool: PgPool, config: &Config) -> Result<Report, DrainError> {
    let stats = journal.stats();
    let mut report = Report {
        dir: journal.dir().to_owned(),
        epoch: journal.epoch(),
        first: stats.checkpoint + 1,
        last: stats.last_seq,
        measurements: 0,
        counter_readings: 0,
        relay_states: 0,
        events: 0,
        rejects: 0,
        partial_rejects: 0,
        unreadable: 0,
        torn_tail: journal.torn_tail().cloned(),
    };
    if report.records() == 0 {
        close(Arc::new(journal)).await;
        return Ok(report);
    }
    let metrics = Arc::new(Metrics::default());
    let settings = IngestSettings {
        writers: config.ingest.writers.max(1),
        batch_max_messages: config.ingest.batch_max_messages,
        // Everything to drain is durable already: nothing to wait for.
        batch_linger: Duration::ZERO,
        clock_tolerance: chrono::Duration::seconds(
            i64::try_from(config.ingest.clock_tolerance_secs).unwrap_or(i64::MAX / 4),
        ),
    };
    // The sessions in this journal were the dead instance's: its connects and disconnects are
    // written as its own (so they never override a session another instance holds now).
    let instance = dead_instance(journal.dir());
    // No command sender: receipts cannot reach a gateway whose session died with its instance.
    let ingest = Arc::new(
        Ingest::new(journal, pool.clone(), metrics.clone(), settings, None)
            .await?
            .with_energy_limits(&config.energy)
            .with_instance(instance),
    );
    let journal = ingest.journal();

    // The evaluator first, its rules loaded, so that no drained sample passes it unseen.
    let handle = AlarmsHandle::default();
    let (feed, evaluator) = engine::channel(pool, handle.clone(), metrics.clone());
    let evaluator = tokio::spawn(evaluator.run(CancellationToken::new()));
    handle
        .rules_changed_and_loaded(Duration::from_secs(30))
        .await;
    ingest.attach_alarms(feed);

    let stop = CancellationToken::new();
    let mut writers = tokio::spawn(ingest.clone().run(stop.clone()));
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    let mut outcome = Ok(());
    loop {
        if journal.stats().checkpoint >= report.last {
            break;
        }
        tokio::select! {
            _ = &mut interrupt => {
                outcome = Err(DrainError::Interrupted { checkpoint: journal.stats().checkpoint });
                break;
            }
            ended = &mut writers => {
                // Writers stop on their own only on a journal error.
                let reason = match ended {
                    Ok(Ok(())) => "stopped early".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                outcome = Err(DrainError::Writers(reason));
                break;
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
    stop.cancel();
    if !writers.is_finished() {
        if let Ok(Err(e)) = writers.await {
            tracing::warn!(error = %e, "ingest writer stopped with an error");
        }
    }
    // Dropping the last `Ingest` drops the evaluator's only feed: it evaluates what it was
    // handed, then ends.
    drop(ingest);
    if let Ok(Err(e)) = evaluator.await {
        tracing::warn!(error = %e, "alarm evaluator stopped with an error");
    }
    if let Err(DrainError::Interrupted { checkpoint }) = &mut outcome {
        *checkpoint = journal.stats().checkpoint;
    }
    close(journal).await;
    outcome?;
    report.measurements = metrics.ingest_measurements.get();
    report.counter_readings = metrics.ingest_counter_readings.get();
    report.relay_states = metrics.ingest_relay_states.get();
    report.events = metrics.ingest_events.get();
    report.rejects = metrics.ingest_rejects.get();
    report.partial_rejects = metrics.ingest_rejects_partial.get();
    report.unreadable = metrics.journal_unreadable.get();
    Ok(report)
}

/// The name of the instance whose journal `dir` is, from the `instance` file of its data
/// directory (the journal's parent) when it is there and valid. Without it, the drained
/// session events change only gateways no instance owns.
fn dead_instance(dir: &Path) -> Option<InstanceId> {
    let file = dir.parent()?.join(INSTANCE_FILE);
    let text = std::fs::read_to_string(&file).ok()?;
    match InstanceId::parse(text.trim()) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "instance name not usable; drained sessions change only unowned gateways");
            None
        }
    }
}

/// Persists the checkpoint and releases the directory.
async fn close(journal: Arc<Journal>) {
    match Arc::try_unwrap(journal) {
        Ok(journal) => {
            if let Err(e) = journal.close().await {
                tracing::warn!(error = %e, "journal did not close cleanly; the next drain replays the last batches, which changes nothing");
            }
        }
        // Closed on drop instead.
        Err(_) => tracing::debug!("journal still referenced after the drain"),
    }
}
