//! Handing durable records out to consumers, in disjoint batches.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::error::IoContext;
use crate::frame::{Header, HEADER_LEN};
use crate::layout::segment_path;
use crate::shared::Shared;
use crate::JournalError;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Bytes,
}

/// Records handed out by one [`Reader::next_batch`] call, in seq order.
///
/// Acknowledge with `journal.ack(batch.seqs())` once committed downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Seq of the first record.
    pub first_seq: u64,
    /// Seq of the last record.
    pub last_seq: u64,
    /// Never empty. Usually `first_seq..=last_seq` without gaps; after a
    /// reopen, records that had been acknowledged out of order are left out.
    pub records: Vec<Record>,
}

impl Batch {
    /// `first_seq..=last_seq`, as [`Journal::ack`](crate::Journal::ack) takes it.
    pub fn seqs(&self) -> RangeInclusive<u64> {
        self.first_seq..=self.last_seq
    }
}

/// The consumer side of the journal.
///
/// All clones (and all readers of one `Journal`) share a single cursor: each
/// [`next_batch`](Self::next_batch) call, from whichever task, hands out the
/// next disjoint run of records. That is how several database writers split
/// the work without coordinating.
#[derive(Debug, Clone)]
pub struct Reader {
    shared: Arc<Shared>,
    cursor: Arc<tokio::sync::Mutex<Cursor>>,
}

/// Where the next record to hand out is.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    next_seq: u64,
    /// The segment holding `next_seq`; `None` means the one named `next_seq`,
    /// which is opened when that record is durable.
    segment: Option<OpenSegment>,
    offset: u64,
    /// Ranges acknowledged out of order before the last reopen: skipped.
    skip: VecDeque<(u64, u64)>,
    /// The open segment was entered by `relocate`: records before `next_seq` are passed over.
    relocated: bool,
}

#[derive(Debug, Clone)]
struct OpenSegment {
    file: Arc<File>,
    path: PathBuf,
}

impl OpenSegment {
    fn open(dir: &Path, first_seq: u64) -> Result<Self, JournalError> {
        let path = segment_path(dir, first_seq);
        let file = File::open(&path).context("open segment for reading", &path)?;
        Ok(Self {
            file: Arc::new(file),
            path,
        })
    }
}

impl Cursor {
    /// `at` is the segment (by first seq) and offset of `next_seq`, if that
    /// segment exists.
    pub fn new(
        dir: &Path,
        next_seq: u64,
        at: Option<(u64, u64)>,
        skip: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, JournalError> {
        let (segment, offset) = match at {
            Some((first_seq, offset)) => (Some(OpenSegment::open(dir, first_seq)?), offset),
            None => (None, 0),
        };
        Ok(Self {
            next_seq,
            segment,
            offset,
            skip: skip.into_iter().collect(),
            relocated: false,
        })
    }

    fn skips(&mut self, seq: u64) -> bool {
        while self.skip.front().is_some_and(|&(_, last)| last < seq) {
            self.skip.pop_front();
        }
        self.skip.front().is_some_and(|&(first, _)| first <= seq)
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, cursor: Cursor) -> Self {
        Self {
            shared,
            cursor: Arc::new(tokio::sync::Mutex::new(cursor)),
        }
    }

    /// Waits until at least one durable record past everything handed out so
    /// far exists, then returns up to `max_records` records holding up to
    /// `max_bytes` of payload (always at least one record, however large).
    ///
    /// Cancel-safe: the cursor only moves when the batch is returned, so a
    /// dropped call hands nothing out. Reading is done on tokio's blocking
    /// pool from the segment files; freshly written data is served from the
    /// page cache, and the same path serves catch-up and replay.
    ///
    /// Fails with [`JournalError::Closed`] once the journal is closed.
    pub async fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Batch, JournalError> {
        self.next_batch_within(max_records, max_bytes, Duration::ZERO)
            .await
    }

    /// [`next_batch`](Self::next_batch), except that a batch short of `max_records` waits up to
    /// `linger` after its first durable record for more to become durable.
    ///
    /// Why: a consumer whose cost is mostly per batch (a database transaction) would otherwise
    /// take the few records of every group commit at a moderate rate and spend its time on
    /// batches, not records. Records arriving faster than `max_records` per `linger` never wait.
    /// Cancel-safe like `next_batch`, and the wait holds the shared cursor: other readers could
    /// only have taken the same records.
    pub async fn next_batch_within(
        &self,
        max_records: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> Result<Batch, JournalError> {
        let limits = Limits {
            max_records: max_records.max(1),
            max_bytes,
        };
        let mut cursor = self.cursor.lock().await;
        loop {
            let mut durable = self.wait_for(cursor.next_seq).await?;
            let full = cursor
                .next_seq
                .saturating_add(limits.max_records as u64 - 1);
            if !linger.is_zero() && durable < full {
                // A closed journal ends the wait; the next call reports it.
                if let Ok(Ok(more)) = tokio::time::timeout(linger, self.wait_for(full)).await {
                    durable = more;
                } else {
                    durable = self.shared.durable_seq.load(Ordering::Acquire).max(durable);
                }
            }
            let dir = self.shared.dir.clone();
            let start = cursor.clone();
            let (records, end) =
                tokio::task::spawn_blocking(move || read_batch(&dir, start, durable, limits))
                    .await
                    .map_err(|e| match e.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        // Only happens while the runtime shuts down.
                        Err(_) => JournalError::Closed,
                    })??;
            *cursor = end;
            if let (Some(first), Some(last)) = (records.first(), records.last()) {
                let batch = Batch {
                    first_seq: first.seq,
                    last_seq: last.seq,
                    records,
                };
                self.shared
                    .handed_out
                    .fetch_max(batch.last_seq, Ordering::AcqRel);
                return Ok(batch);
            }
            // Everything durable was skipped as already acknowledged.
        }
    }

    /// Acknowledges a batch; the same as [`Journal::ack`](crate::Journal::ack).
    pub fn ack(&self, seqs: RangeInclusive<u64>) -> Result<(), JournalError> {
        self.shared.ack(seqs)
    }

    /// Waits until `seq` is durable; returns the highest durable seq.
    async fn wait_for(&self, seq: u64) -> Result<u64, JournalError> {
        loop {
            // Register interest before checking, or a notification between
            // the check and the await would be lost.
            let mut notified = pin!(self.shared.data_ready.notified());
            notified.as_mut().enable();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(JournalError::Closed);
            }
            let durable = self.shared.durable_seq.load(Ordering::Acquire);
            if durable >= seq {
                return Ok(durable);
            }
            notified.await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_records: usize,
    max_bytes: usize,
}

/// Reads records from `cursor` up to `durable` within `limits`; returns them
/// with the cursor moved past them. Blocking.
fn read_batch(
    dir: &Path,
    mut cursor: Cursor,
    durable: u64,
    limits: Limits,
) -> Result<(Vec<Record>, Cursor), JournalError> {
    // Enough for the whole batch in one read if records are small.
    let chunk = limits
        .max_bytes
        .saturating_add(limits.max_records.saturating_mul(HEADER_LEN))
        .clamp(4 << 10, 1 << 20);
    let mut records = Vec::new();
    let mut payload_bytes = 0;
    // Holds the current segment's bytes from `cursor.offset` on.
    let mut buf = BytesMut::new();
    while cursor.next_seq <= durable && records.len() < limits.max_records {
        let segment = match &cursor.segment {
            Some(segment) => segment.clone(),
            None => {
                let segment = match OpenSegment::open(dir, cursor.next_seq) {
                    Ok(segment) => segment,
                    Err(JournalError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        relocate(dir, &mut cursor)?
                    }
                    Err(e) => return Err(e),
                };
                cursor.segment = Some(segment.clone());
                cursor.offset = 0;
                if cursor.next_seq > durable {
                    // Relocated to a record that is not durable yet.
                    break;
                }
                segment
            }
        };
        let corrupt = |offset, reason: String| JournalError::Corrupt {
            path: segment.path.clone(),
            offset,
            reason,
        };
        if buf.len() < HEADER_LEN {
            fill(&segment, &mut buf, cursor.offset, chunk)?;
            if buf.is_empty() {
                // End of segment: the next record starts the next one.
                cursor.segment = None;
                continue;
            }
            if buf.len() < HEADER_LEN {
                return Err(corrupt(cursor.offset, "truncated record header".into()));
            }
        }
        let header = Header::parse(buf[..HEADER_LEN].try_into().expect("length checked"));
        if cursor.relocated && header.seq < cursor.next_seq {
            // Scanning a segment entered in the middle (see `relocate`) up to `next_seq`.
            let frame_len = (HEADER_LEN + header.payload_len()) as u64;
            cursor.offset += frame_len;
            buf.clear();
            continue;
        }
        cursor.relocated = false;
        if header.seq != cursor.next_seq {
            return Err(corrupt(
                cursor.offset,
                format!("expected seq {}, found {}", cursor.next_seq, header.seq),
            ));
        }
        let frame_len = HEADER_LEN + header.payload_len();
        if buf.len() < frame_len {
            fill(&segment, &mut buf, cursor.offset, chunk.max(frame_len))?;
            if buf.len() < frame_len {
                return Err(corrupt(cursor.offset, "truncated record".into()));
            }
        }
        let skipped = cursor.skips(header.seq);
        if !skipped
            && !records.is_empty()
            && payload_bytes + header.payload_len() > limits.max_bytes
        {
            break;
        }
        let payload = buf.split_to(frame_len).freeze().slice(HEADER_LEN..);
        if !header.matches(&payload) {
            return Err(corrupt(
                cursor.offset,
                format!("CRC mismatch in seq {}", header.seq),
            ));
        }
        cursor.offset += frame_len as u64;
        cursor.next_seq += 1;
        if !skipped {
            payload_bytes += payload.len();
            records.push(Record {
                seq: header.seq,
                payload,
            });
        }
    }
    Ok((records, cursor))
}

/// The segment named `next_seq` is gone: the records up to some point past it were all
/// acknowledged and their segments retired (an acknowledgement can reach past what this reader
/// handed out, e.g. of a batch handed out before a reopen). Continues in the segment holding
/// `next_seq`, or, when every segment starts after it, at the first record still on disk.
fn relocate(dir: &Path, cursor: &mut Cursor) -> Result<OpenSegment, JournalError> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)
        .context("list segments", dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| crate::layout::parse_segment_name(&entry.file_name()))
        .collect();
    firsts.sort_unstable();
    let first = match firsts.iter().rev().find(|&&first| first <= cursor.next_seq) {
        Some(&first) => first,
        None => match firsts.first() {
            Some(&first) => {
                cursor.next_seq = first;
                first
            }
            None => {
                return Err(JournalError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: 0,
                    reason: format!("no segment holds seq {}", cursor.next_seq),
                })
            }
        },
    };
    cursor.relocated = first < cursor.next_seq;
    OpenSegment::open(dir, first)
}

/// Tops `buf` (the segment's bytes from `offset` on) up to `want` bytes, or
/// to the end of the file.
fn fill(
    segment: &OpenSegment,
    buf: &mut BytesMut,
    offset: u64,
    want: usize,
) -> Result<(), JournalError> {
    let mut filled = buf.len();
    if filled >= want {
        return Ok(());
    }
    buf.resize(want, 0);
    while filled < want {
        match segment
            .file
            .read_at(&mut buf[filled..], offset + filled as u64)
        {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return Err(e).context("read segment", &segment.path);
            }
        }
    }
    buf.truncate(filled);
    Ok(())
}
