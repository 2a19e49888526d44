//! Durable, group-committed journal between Headend's MQTT front door and its
//! PostgreSQL writers.
//!
//! The broker hands every message a gateway publishes to
//! [`Appender::append`], and acknowledges it to the gateway only once the
//! journal has it on disk. Database writers take records with
//! [`Reader::next_batch`], commit them, and [`Journal::ack`] them. While
//! PostgreSQL is slow or down the journal grows (up to
//! [`JournalOptions::max_bytes`], then appends fail with
//! [`JournalError::Full`] so the front door can push back); afterwards the
//! writers catch up in order. After a crash, everything appended but not
//! acknowledged is delivered again: delivery is at-least-once, and consumers
//! make replays harmless by keying on ([`Journal::epoch`], seq).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), headend_journal::JournalError> {
//! use headend_journal::{Journal, JournalOptions};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let journal = Journal::open(dir.path(), JournalOptions::default())?;
//! // Front door: durable once this resolves.
//! let seq = journal.appender().append("reading".into()).await?;
//! // Database writer: take a batch, commit it, acknowledge it.
//! let batch = journal.reader().next_batch(500, 1 << 20).await?;
//! assert_eq!(batch.records[0].seq, seq);
//! journal.ack(batch.seqs())?;
//! journal.close().await
//! # }
//! ```
//!
//! # Design
//!
//! - **Group commit.** Appends queue for one writer thread, which takes all
//!   that are waiting, writes them with one `write` and one `fdatasync`, and
//!   then answers every waiter. Under load, batches grow by themselves, so
//!   the cost of a sync is shared by all records that arrived during the
//!   previous one.
//! - **Segments.** Records live in append-only segment files named by their
//!   first seq. A segment is deleted once every record in it is acknowledged.
//!   Records are framed as `len | crc32(seq, payload) | seq | payload`, so
//!   recovery can tell a torn tail from data.
//! - **Readers read files.** Even live tailing reads the segment files back
//!   (from the page cache), so tailing, catch-up and replay are one code path
//!   and the journal holds no records in memory.
//! - **Checkpoint.** Acknowledgements may arrive out of order; the checkpoint
//!   is the highest seq below which everything is acknowledged. It and any
//!   out-of-order ranges are persisted periodically and on close, so a crash
//!   re-delivers at most that period's worth of acknowledged records.

#![forbid(unsafe_code)]

mod acks;
mod appender;
mod error;
mod frame;
mod layout;
mod options;
mod reader;
mod recovery;
mod shared;
mod writer;

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tracing::error;

pub use crate::appender::Appender;
pub use crate::error::JournalError;
pub use crate::options::JournalOptions;
pub use crate::reader::{Batch, Reader, Record};
pub use crate::recovery::TornTail;

use crate::error::{ErrorChain, IoContext};
use crate::layout::DirLock;
use crate::reader::Cursor;
use crate::shared::{Counters, Inbox, Shared};
use crate::writer::Writer;

/// Upper bounds of the buckets of [`Stats::fsync_histogram`]; a last bucket
/// counts the slower ones.
pub const FSYNC_BUCKETS: [Duration; 8] = [
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
    Duration::from_millis(8),
    Duration::from_millis(16),
    Duration::from_millis(64),
];

/// A snapshot of the journal's counters, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records made durable since open.
    pub appended_records: u64,
    /// Payload bytes made durable since open.
    pub appended_bytes: u64,
    /// Size of all segment files.
    pub bytes_on_disk: u64,
    /// Bytes counted against [`JournalOptions::max_bytes`].
    pub budget_used: u64,
    /// Durable records above the checkpoint.
    pub pending_records: u64,
    /// Highest durable seq (0 if none yet).
    pub last_seq: u64,
    /// Every seq up to this one is acknowledged.
    pub checkpoint: u64,
    /// `fdatasync` calls on segments since open.
    pub fsyncs: u64,
    /// Duration of the latest `fdatasync`.
    pub fsync_last: Duration,
    /// Longest `fdatasync` since open.
    pub fsync_max: Duration,
    /// Counts of fsync durations: `[i]` counts those at most
    /// [`FSYNC_BUCKETS`]`[i]` (and above the previous bound); the last entry
    /// counts the slower ones.
    pub fsync_histogram: [u64; FSYNC_BUCKETS.len() + 1],
    /// Whether a write failure has stopped appends until reopen.
    pub failed: bool,
}

/// An open journal directory. See the [crate docs](crate).
///
/// Closing it (explicitly with [`close`](Self::close), or by dropping it)
/// writes what is queued, fsyncs the checkpoint and releases the directory;
/// appenders and readers then fail with [`JournalError::Closed`].
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    reader: Reader,
    writer: Option<WriterThread>,
    torn_tail: Option<TornTail>,
}

#[derive(Debug)]
struct WriterThread {
    handle: JoinHandle<()>,
    done: oneshot::Receiver<Result<(), JournalError>>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and recovers it:
    /// verifies every record, cuts a torn tail left by a crash, and resumes
    /// appending after the last valid record and reading after the
    /// checkpoint.
    ///
    /// Blocking: it reads the whole journal. Fails with
    /// [`JournalError::Locked`] if the directory is already open.
    pub fn open(dir: &Path, opts: JournalOptions) -> Result<Self, JournalError> {
        opts.validate()?;
        layout::create_private_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        let recovered = recovery::recover(dir)?;

        let checkpoint = recovered.ledger.acks.checkpoint();
        let torn_tail = recovered.torn_tail.clone();
        let cursor = Cursor::new(
            dir,
            recovered.read_from.seq,
            recovered.read_from.at,
            recovered.ledger.acks.ranges(),
        )?;
        let active = recovered
            .append_to_last
            .then(|| recovered.ledger.segments.back())
            .flatten()
            .map(|segment| (segment.first_seq, segment.bytes));
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            opts,
            epoch: recovered.epoch,
            inbox: Mutex::new(Inbox::default()),
            inbox_signal: Condvar::new(),
            ledger: Mutex::new(recovered.ledger),
            durable_seq: AtomicU64::new(recovered.next_seq - 1),
            data_ready: Notify::new(),
            handed_out: AtomicU64::new(checkpoint),
            checkpoint: AtomicU64::new(checkpoint),
            checkpoint_moved: Notify::new(),
            budget_used: AtomicU64::new(recovered.bytes_on_disk),
            failure: OnceLock::new(),
            closed: AtomicBool::new(false),
            counters: Counters {
                disk_bytes: AtomicU64::new(recovered.bytes_on_disk),
                ..Counters::default()
            },
        });
        let writer = Writer::new(Arc::clone(&shared), lock, recovered.next_seq, active)?;
        let (done_tx, done) = oneshot::channel();
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                let result = writer.run();
                // The writer (and with it the directory lock) is gone by now,
                // so whoever awaits this may reopen straight away.
                let _ = done_tx.send(result);
            })
            .context("spawn writer thread", dir)?;
        Ok(Self {
            reader: Reader::new(Arc::clone(&shared), cursor),
            shared,
            writer: Some(WriterThread { handle, done }),
            torn_tail,
        })
    }

    /// The journal's random identity, fixed when its directory was created.
    /// Together with a seq it identifies a record across restarts.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// The directory the journal lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The damaged end of the last segment that opening cut off, if any (also logged).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// A handle for appending; clone it freely.
    pub fn appender(&self) -> Appender {
        Appender::new(Arc::clone(&self.shared))
    }

    /// A handle on the journal's one read cursor; see [`Reader`].
    pub fn reader(&self) -> Reader {
        self.reader.clone()
    }

    /// Marks `seqs` as committed downstream. Batches may be acknowledged in
    /// any order and more than once; the checkpoint moves over contiguous
    /// acknowledged ranges, and segments entirely below it are deleted.
    ///
    /// Cheap and non-blocking: persisting and deleting happen on the writer
    /// thread, the checkpoint every
    /// [`checkpoint_interval`](JournalOptions::checkpoint_interval). Space in the [`max_bytes`](JournalOptions::max_bytes) budget
    /// is released before it returns.
    pub fn ack(&self, seqs: RangeInclusive<u64>) -> Result<(), JournalError> {
        self.shared.ack(seqs)
    }

    /// Every record up to this seq is acknowledged.
    pub fn checkpoint(&self) -> u64 {
        self.shared.checkpoint.load(Ordering::Acquire)
    }

    /// Resolves once every record up to `seq` is acknowledged (the checkpoint reached it), so
    /// a consumer can commit its batches in journal order; fails with
    /// [`JournalError::Closed`] once the journal closes.
    pub async fn wait_checkpoint(&self, seq: u64) -> Result<(), JournalError> {
        let shared = &self.shared;
        loop {
            let moved = shared.checkpoint_moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a move in between is not missed.
            moved.as_mut().enable();
            if shared.checkpoint.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if shared.closed.load(Ordering::Acquire) {
                return Err(JournalError::Closed);
            }
            moved.await;
        }
    }

    /// Current counters, for metrics.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Writes what is queued, fsyncs the checkpoint and releases the
    /// directory. Reports the final checkpoint write's failure, if any.
    pub async fn close(mut self) -> Result<(), JournalError> {
        let writer = self.writer.take().expect("only taken by close or drop");
        self.shared.begin_close();
        // A dropped sender means the writer panicked, which `join` reports.
        let result = writer.done.await.unwrap_or(Err(JournalError::Closed));
        join(writer.handle);
        result
    }
}

impl Drop for Journal {
    /// Like [`close`](Journal::close), but blocks the calling thread for the
    /// last batch and checkpoint fsync; prefer `close` in async code.
    fn drop(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            self.shared.begin_close();
            join(writer.handle);
            if let Ok(Err(e)) = writer.done.try_recv() {
                error!(error = %ErrorChain(&e), "journal close failed");
            }
        }
    }
}

fn join(handle: JoinHandle<()>) {
    if handle.join().is_err() {
        error!("journal writer thread panicked");
    }
}
