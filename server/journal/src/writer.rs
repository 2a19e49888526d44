//! The writer thread: group commit, segment rolling and housekeeping.
//!
//! A plain OS thread rather than a tokio task because it spends its life in
//! blocking `write` and `fdatasync` calls, and because a runtime shutting down
//! must not cut a batch in half.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::mem;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use tracing::{error, warn};

use crate::error::{ErrorChain, IoContext};
use crate::frame;
use crate::layout::{self, segment_path, DirLock, CHECKPOINT_FILE};
use crate::shared::{lock, PendingAppend, SegmentMeta, Shared};
use crate::JournalError;

/// Buffered bytes beyond which a batch is written out before it is complete,
/// bounding the writer's memory when a large backlog arrives at once.
const MAX_WRITE: usize = 4 << 20;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: Option<ActiveSegment>,
    next_seq: u64,
    /// Frames of the current batch not yet written.
    buf: Vec<u8>,
    /// Swapped with the inbox's queue so neither is reallocated per batch.
    batch: Vec<PendingAppend>,
    /// Ledger version last persisted as the checkpoint file.
    persisted_version: u64,
    /// Held for as long as the thread runs: the directory is ours until the
    /// last byte is written.
    _lock: DirLock,
}

struct ActiveSegment {
    file: File,
    path: PathBuf,
    /// Bytes written to the file so far.
    len: u64,
}

struct Work {
    appends: bool,
    closing: bool,
}

impl Writer {
    /// `active` is the last recovered segment if appends continue in it.
    pub fn new(
        shared: Arc<Shared>,
        lock: DirLock,
        next_seq: u64,
        active: Option<(u64, u64)>,
    ) -> Result<Self, JournalError> {
        let active = active
            .map(|(first_seq, len)| {
                let path = segment_path(&shared.dir, first_seq);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .context("open segment for append", &path)?;
                Ok::<_, JournalError>(ActiveSegment { file, path, len })
            })
            .transpose()?;
        Ok(Self {
            shared,
            active,
            next_seq,
            buf: Vec::new(),
            batch: Vec::new(),
            persisted_version: 0,
            _lock: lock,
        })
    }

    /// Runs until the journal closes; returns the final housekeeping result.
    pub fn run(mut self) -> Result<(), JournalError> {
        let interval = self.shared.opts.checkpoint_interval;
        let mut checkpoint_due = Instant::now() + interval;
        loop {
            let work = self.next_work(checkpoint_due);
            if work.appends {
                self.commit();
            }
            let persist = work.closing || Instant::now() >= checkpoint_due;
            if persist {
                checkpoint_due = Instant::now() + interval;
            }
            match self.housekeep(persist) {
                Err(e) if work.closing => return Err(e),
                // Nothing is lost: the next round retries.
                Err(e) => warn!(error = %ErrorChain(&e), "journal housekeeping failed"),
                Ok(()) => {}
            }
            if work.closing {
                return Ok(());
            }
        }
    }

    /// Waits for appends, retired segments, closing, or the checkpoint timer.
    fn next_work(&mut self, checkpoint_due: Instant) -> Work {
        let mut inbox = lock(&self.shared.inbox);
        while inbox.appends.is_empty() && !inbox.housekeeping && !inbox.closing {
            let Some(timeout) = checkpoint_due.checked_duration_since(Instant::now()) else {
                break;
            };
            inbox = self
                .shared
                .inbox_signal
                .wait_timeout(inbox, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        inbox.housekeeping = false;
        mem::swap(&mut inbox.appends, &mut self.batch);
        Work {
            appends: !self.batch.is_empty(),
            closing: inbox.closing,
        }
    }

    /// Writes and fdatasyncs `self.batch`, then answers every waiter in it.
    fn commit(&mut self) {
        let first_seq = self.next_seq;
        let result = match self.shared.failure.get() {
            Some(cause) => Err(JournalError::Failed(Arc::clone(cause))),
            None => self.write_batch(),
        };
        match result {
            Ok(()) => {
                self.shared
                    .durable_seq
                    .store(self.next_seq - 1, Ordering::Release);
                self.shared.data_ready.notify_waiters();
                let counters = &self.shared.counters;
                let mut seq = first_seq;
                for pending in self.batch.drain(..) {
                    let count = pending.payloads.len() as u64;
                    let bytes: usize = pending.payloads.iter().map(|p| p.len()).sum();
                    counters
                        .appended_records
                        .fetch_add(count, Ordering::Relaxed);
                    counters
                        .appended_bytes
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                    // The appender may have stopped waiting; its record is
                    // durable all the same.
                    let _ = pending.done.send(Ok(seq));
                    seq += count;
                }
            }
            Err(e) => {
                if self.shared.failure.set(Arc::new(e.clone())).is_ok() {
                    error!(
                        error = %ErrorChain(&e),
                        "journal write failed; refusing appends until reopened",
                    );
                }
                for pending in self.batch.drain(..) {
                    self.shared.release(pending.reserved);
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }

    fn write_batch(&mut self) -> Result<(), JournalError> {
        let batch = mem::take(&mut self.batch);
        let result = self.write_frames(&batch);
        self.batch = batch;
        result
    }

    fn write_frames(&mut self, batch: &[PendingAppend]) -> Result<(), JournalError> {
        for payload in batch.iter().flat_map(|pending| &pending.payloads) {
            if self.must_roll(frame::frame_len(payload.len())) {
                self.roll()?;
            }
            frame::encode(&mut self.buf, self.next_seq, payload);
            self.next_seq += 1;
            if self.buf.len() >= MAX_WRITE {
                self.flush()?;
            }
        }
        self.flush()?;
        self.sync()
    }

    /// Whether the next frame belongs in a new segment. A segment always
    /// takes at least one record, whatever its size.
    fn must_roll(&self, frame_len: u64) -> bool {
        self.active.as_ref().is_none_or(|segment| {
            let len = segment.len + self.buf.len() as u64;
            len > 0 && len + frame_len > self.shared.opts.segment_bytes
        })
    }

    /// Seals the active segment (written and fdatasync'ed in full) and starts
    /// the next one, named by the seq of its first record.
    fn roll(&mut self) -> Result<(), JournalError> {
        let sealed_len = match self.active {
            Some(_) => {
                self.flush()?;
                self.sync()?;
                self.active.as_ref().map(|segment| segment.len)
            }
            None => None,
        };
        let path = segment_path(&self.shared.dir, self.next_seq);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(layout::PRIVATE_FILE)
            .open(&path)
            .context("create segment", &path)?;
        // The new name must survive a crash, or so would its records not.
        layout::sync_dir(&self.shared.dir)?;
        self.active = Some(ActiveSegment { file, path, len: 0 });

        let mut ledger = lock(&self.shared.ledger);
        if let (Some(len), Some(sealed)) = (sealed_len, ledger.segments.back_mut()) {
            sealed.bytes = len;
        }
        ledger.segments.push_back(SegmentMeta {
            first_seq: self.next_seq,
            bytes: 0,
        });
        // The sealed segment may already be fully acknowledged.
        let freed = ledger.retire_acknowledged();
        self.shared.release(freed);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let segment = self
            .active
            .as_mut()
            .expect("a segment is open once a frame is buffered");
        segment
            .file
            .write_all(&self.buf)
            .context("write", &segment.path)?;
        let written = self.buf.len() as u64;
        segment.len += written;
        self.shared
            .counters
            .disk_bytes
            .fetch_add(written, Ordering::Relaxed);
        self.buf.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        let Some(segment) = &self.active else {
            return Ok(());
        };
        let started = Instant::now();
        segment
            .file
            .sync_data()
            .context("fdatasync", &segment.path)?;
        self.shared.counters.record_fsync(started.elapsed());
        Ok(())
    }

    /// Persists the checkpoint if asked to and it changed, then deletes
    /// retired segments. Deleting first would be safe too: recovery treats
    /// everything before the oldest segment as acknowledged.
    fn housekeep(&mut self, persist: bool) -> Result<(), JournalError> {
        if persist {
            let (version, checkpoint) = {
                let ledger = lock(&self.shared.ledger);
                let changed = ledger.version != self.persisted_version;
                (ledger.version, changed.then(|| ledger.acks.encode()))
            };
            if let Some(bytes) = checkpoint {
                layout::write_atomically(&self.shared.dir, CHECKPOINT_FILE, &bytes)?;
                self.persisted_version = version;
            }
        }

        let retired = mem::take(&mut lock(&self.shared.ledger).retired);
        for (index, segment) in retired.iter().enumerate() {
            let path = segment_path(&self.shared.dir, segment.first_seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    lock(&self.shared.ledger)
                        .retired
                        .extend_from_slice(&retired[index..]);
                    return Err(e).context("remove acknowledged segment", &path);
                }
            }
            self.shared
                .counters
                .disk_bytes
                .fetch_sub(segment.bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}
