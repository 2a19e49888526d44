//! State shared by the journal handle, appenders, readers and the writer
//! thread.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::acks::AckSet;
use crate::{JournalError, JournalOptions, Stats, FSYNC_BUCKETS};

/// Locks `mutex`, ignoring poisoning: every critical section in this crate
/// leaves its data consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: JournalOptions,
    pub epoch: u64,
    /// Appends waiting for the writer thread, plus its other wake-up reasons.
    pub inbox: Mutex<Inbox>,
    pub inbox_signal: Condvar,
    pub ledger: Mutex<Ledger>,
    /// Highest seq written *and* fdatasync'ed. Readers never go past it.
    pub durable_seq: AtomicU64,
    /// Woken whenever `durable_seq` moves or the journal closes.
    pub data_ready: Notify,
    /// Highest seq a reader has handed out; acknowledging beyond it is a bug.
    pub handed_out: AtomicU64,
    /// Mirror of the ledger's checkpoint for lock-free stats.
    pub checkpoint: AtomicU64,
    /// Woken whenever `checkpoint` moves or the journal closes.
    pub checkpoint_moved: Notify,
    /// Bytes charged against `max_bytes`: live segments plus queued appends.
    /// Appenders reserve before queueing, so `Full` is decided up front.
    pub budget_used: AtomicU64,
    /// Set by the first write failure; from then on appends are refused.
    pub failure: OnceLock<Arc<JournalError>>,
    pub closed: AtomicBool,
    pub counters: Counters,
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub appends: Vec<PendingAppend>,
    /// Segments were retired: delete them.
    pub housekeeping: bool,
    pub closing: bool,
}

/// One `append`/`append_many` call waiting for its records to be durable.
pub(crate) struct PendingAppend {
    pub payloads: Vec<Bytes>,
    /// Bytes reserved in `budget_used`, returned if the write fails.
    pub reserved: u64,
    /// Receives the first seq assigned to `payloads`.
    pub done: oneshot::Sender<Result<u64, JournalError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub first_seq: u64,
    /// Size on disk. For the segment being appended to, only up to date once
    /// it is sealed (which is the only time anyone needs it).
    pub bytes: u64,
}

/// What is acknowledged and which segments that makes deletable.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub acks: AckSet,
    /// Live segments, oldest first; the last one is being appended to.
    pub segments: VecDeque<SegmentMeta>,
    /// Fully acknowledged segments awaiting deletion by the writer thread.
    pub retired: Vec<SegmentMeta>,
    /// Bumped on every change to `acks`, so the writer knows to persist it.
    pub version: u64,
}

impl Ledger {
    /// Moves sealed segments whose records are all acknowledged to
    /// `retired`; returns the bytes that frees from the budget.
    pub fn retire_acknowledged(&mut self) -> u64 {
        let checkpoint = self.acks.checkpoint();
        let mut freed = 0;
        // A segment's last seq is its successor's first seq minus one; the
        // last segment has no successor and is never retired here.
        while self
            .segments
            .get(1)
            .is_some_and(|next| next.first_seq - 1 <= checkpoint)
        {
            let segment = self.segments.pop_front().expect("checked above");
            freed += segment.bytes;
            self.retired.push(segment);
        }
        freed
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_last_us: AtomicU64,
    pub fsync_max_us: AtomicU64,
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
}

impl Counters {
    pub fn record_fsync(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_last_us.store(us, Ordering::Relaxed);
        self.fsync_max_us.fetch_max(us, Ordering::Relaxed);
        let bucket = FSYNC_BUCKETS
            .iter()
            .position(|&bound| took <= bound)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .field("epoch", &format_args!("{:016x}", self.epoch))
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn ack(&self, seqs: RangeInclusive<u64>) -> Result<(), JournalError> {
        let (first, last) = seqs.into_inner();
        let invalid = |reason| JournalError::InvalidAck {
            first,
            last,
            reason,
        };
        if first == 0 || first > last {
            return Err(invalid("empty range or seq 0"));
        }
        if last > self.handed_out.load(Ordering::Acquire) {
            return Err(invalid("not handed out by a reader yet"));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        {
            let mut ledger = lock(&self.ledger);
            if !ledger.acks.insert(first, last) {
                return Ok(());
            }
            ledger.version += 1;
            let checkpoint = ledger.acks.checkpoint();
            if self.checkpoint.swap(checkpoint, Ordering::AcqRel) != checkpoint {
                self.checkpoint_moved.notify_waiters();
            }
            // Freed now, not when the writer gets round to unlinking, so an
            // appender that just saw `Full` can retry as soon as ack returns.
            let freed = ledger.retire_acknowledged();
            self.budget_used.fetch_sub(freed, Ordering::AcqRel);
            if ledger.retired.is_empty() {
                return Ok(());
            }
        }
        lock(&self.inbox).housekeeping = true;
        self.inbox_signal.notify_one();
        Ok(())
    }

    /// Reserves `bytes` of the disk budget, or reports `Full`.
    pub fn reserve(&self, bytes: u64) -> Result<(), JournalError> {
        let max = self.opts.max_bytes;
        self.budget_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= max)
            })
            .map(drop)
            .map_err(|used| JournalError::Full { used, max })
    }

    pub fn release(&self, bytes: u64) {
        self.budget_used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Stops accepting appends and wakes everyone who waits on the journal.
    /// Appends already queued are still written by the writer thread.
    pub fn begin_close(&self) {
        lock(&self.inbox).closing = true;
        self.inbox_signal.notify_one();
        self.closed.store(true, Ordering::Release);
        self.data_ready.notify_waiters();
        self.checkpoint_moved.notify_waiters();
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let last_seq = self.durable_seq.load(Ordering::Acquire);
        let checkpoint = self.checkpoint.load(Ordering::Acquire);
        Stats {
            appended_records: c.appended_records.load(Ordering::Relaxed),
            appended_bytes: c.appended_bytes.load(Ordering::Relaxed),
            bytes_on_disk: c.disk_bytes.load(Ordering::Relaxed),
            budget_used: self.budget_used.load(Ordering::Relaxed),
            pending_records: last_seq.saturating_sub(checkpoint),
            last_seq,
            checkpoint,
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_last: Duration::from_micros(c.fsync_last_us.load(Ordering::Relaxed)),
            fsync_max: Duration::from_micros(c.fsync_max_us.load(Ordering::Relaxed)),
            fsync_histogram: c
                .fsync_buckets
                .each_ref()
                .map(|n| n.load(Ordering::Relaxed)),
            failed: self.failure.get().is_some(),
        }
    }
}
