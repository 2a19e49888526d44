//! Bringing a journal directory back to a consistent state on open.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::acks::AckSet;
use crate::error::IoContext;
use crate::frame::{Header, HEADER_LEN};
use crate::layout::{self, parse_segment_name, segment_path, CHECKPOINT_FILE};
use crate::shared::{Ledger, SegmentMeta};
use crate::JournalError;

/// What `Journal::open` needs to resume.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub epoch: u64,
    pub ledger: Ledger,
    /// Seq the next append gets.
    pub next_seq: u64,
    /// Whether appends continue in the last live segment (otherwise the
    /// writer starts a new one named `next_seq`).
    pub append_to_last: bool,
    /// Where reading resumes: the seq after the checkpoint, and the segment
    /// and offset it is (or will be) at, if that segment exists yet.
    pub read_from: ReadStart,
    pub bytes_on_disk: u64,
    pub torn_tail: Option<TornTail>,
}

/// A damaged end of the last segment that [`Journal::open`](crate::Journal::open) cut off: the
/// records in it were never durable (a crash during their write), or the file was damaged since.
/// Kept so that tools can say what they did not get, not only the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment file that was truncated.
    pub segment: PathBuf,
    /// Where the valid records end, and the file now ends.
    pub offset: u64,
    /// Bytes removed.
    pub cut_bytes: u64,
    /// Why the scan stopped there, e.g. a CRC mismatch.
    pub reason: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart {
    pub seq: u64,
    pub at: Option<(u64, u64)>,
}

pub(crate) fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    layout::remove_stale_tmp_files(dir)?;
    let firsts = list_segments(dir)?;
    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let checkpoint_bytes = match fs::read(&checkpoint_path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("read", &checkpoint_path),
    };
    let epoch =
        layout::load_or_create_epoch(dir, !firsts.is_empty() || checkpoint_bytes.is_some())?;

    let mut acks = checkpoint_bytes.map_or_else(AckSet::default, |bytes| {
        AckSet::decode(&bytes).unwrap_or_else(|| {
            // Only costs replays: consumers are idempotent.
            warn!(path = %checkpoint_path.display(), "checkpoint file damaged; re-delivering from the oldest segment");
            AckSet::default()
        })
    });
    // Segments are deleted only once acknowledged, but the checkpoint that
    // said so may not have reached the disk before a crash.
    if let Some(&first) = firsts.first() {
        acks.advance_to(first - 1);
    }
    let resume_seq = acks.checkpoint() + 1;

    let mut segments = VecDeque::with_capacity(firsts.len());
    let mut read_at = None;
    let mut end_seq = None;
    let mut torn_tail = None;
    for (index, &first) in firsts.iter().enumerate() {
        let path = segment_path(dir, first);
        if let Some(expected) = end_seq.filter(|&expected| expected != first) {
            return Err(JournalError::Corrupt {
                path,
                offset: 0,
                reason: format!("segment should start at seq {expected}: a segment is missing"),
            });
        }
        let scan = scan_segment(&path, first, resume_seq)?;
        if let Some(damage) = &scan.damage {
            // Only the last segment can be torn by a crash: a segment is
            // fdatasync'ed before its successor is created.
            if index + 1 < firsts.len() {
                return Err(JournalError::Corrupt {
                    path,
                    offset: scan.valid_len,
                    reason: damage.clone(),
                });
            }
            truncate(&path, scan.valid_len)?;
            warn!(
                path = %path.display(),
                offset = scan.valid_len,
                cut_bytes = scan.file_len - scan.valid_len,
                reason = %damage,
                "truncated torn tail of the journal",
            );
            torn_tail = Some(TornTail {
                segment: path.clone(),
                offset: scan.valid_len,
                cut_bytes: scan.file_len - scan.valid_len,
                reason: damage.clone(),
            });
        }
        if let Some(offset) = scan.resume_offset {
            read_at = Some((first, offset));
        }
        end_seq = Some(scan.end_seq);
        segments.push_back(SegmentMeta {
            first_seq: first,
            bytes: scan.valid_len,
        });
    }
    if let Some(last) = segments.back() {
        // The writer may have died between write and fdatasync; what is in
        // the page cache counts as durable from here on, so make it so.
        let path = segment_path(dir, last.first_seq);
        File::open(&path)
            .and_then(|f| f.sync_data())
            .context("fdatasync", &path)?;
    }

    let last_seq = end_seq.map_or(acks.checkpoint(), |end| end - 1);
    if acks.checkpoint() > last_seq {
        warn!(
            checkpoint = acks.checkpoint(),
            last_seq, "checkpoint is past the last record; continuing after the checkpoint"
        );
    }
    acks.forget_after(last_seq);
    let next_seq = last_seq.max(acks.checkpoint()) + 1;
    let append_to_last = !segments.is_empty() && next_seq == last_seq + 1;
    if !append_to_last {
        // Everything left is acknowledged; appends start a fresh segment.
        for segment in segments.drain(..) {
            let path = segment_path(dir, segment.first_seq);
            fs::remove_file(&path).context("remove acknowledged segment", &path)?;
        }
        read_at = None;
    }
    let bytes_on_disk = segments.iter().map(|s| s.bytes).sum();
    info!(
        dir = %dir.display(),
        epoch = format_args!("{epoch:016x}"),
        segments = segments.len(),
        checkpoint = acks.checkpoint(),
        last_seq,
        bytes_on_disk,
        "journal recovered",
    );
    Ok(Recovered {
        epoch,
        ledger: Ledger {
            acks,
            segments,
            retired: Vec::new(),
            // Non-zero so the writer persists the recovered state once.
            version: 1,
        },
        next_seq,
        append_to_last,
        read_from: ReadStart {
            seq: resume_seq,
            at: read_at,
        },
        bytes_on_disk,
        torn_tail,
    })
}

/// First seqs of all segment files, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).context("list", dir)? {
        let entry = entry.context("list", dir)?;
        if let Some(first) = parse_segment_name(&entry.file_name()) {
            if first == 0 {
                return Err(JournalError::Corrupt {
                    path: entry.path(),
                    offset: 0,
                    reason: "seqs start at 1".into(),
                });
            }
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

#[derive(Debug)]
struct Scan {
    file_len: u64,
    /// Length of the prefix of whole, valid records.
    valid_len: u64,
    /// Seq after the last valid record.
    end_seq: u64,
    /// Offset of the record `resume_seq` (or where it would go), if it falls
    /// in this segment.
    resume_offset: Option<u64>,
    /// Why the scan stopped before `file_len`.
    damage: Option<String>,
}

/// Reads and verifies every record of a segment.
fn scan_segment(path: &Path, first_seq: u64, resume_seq: u64) -> Result<Scan, JournalError> {
    let file = File::open(path).context("open segment", path)?;
    let file_len = file.metadata().context("stat", path)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan = Scan {
        file_len,
        valid_len: 0,
        end_seq: first_seq,
        resume_offset: None,
        damage: None,
    };
    let mut payload = Vec::new();
    loop {
        if scan.end_seq == resume_seq {
            scan.resume_offset = Some(scan.valid_len);
        }
        let remaining = file_len - scan.valid_len;
        if remaining == 0 {
            break;
        }
        let mut header = [0; HEADER_LEN];
        if remaining < HEADER_LEN as u64 {
            scan.damage = Some(format!("{remaining} bytes: too short for a record header"));
            break;
        }
        reader
            .read_exact(&mut header)
            .context("read segment", path)?;
        let header = Header::parse(&header);
        if header.seq != scan.end_seq {
            scan.damage = Some(format!(
                "expected seq {}, found {}",
                scan.end_seq, header.seq
            ));
            break;
        }
        if header.frame_len() > remaining {
            scan.damage = Some(format!(
                "record of {} bytes extends past the end of the file",
                header.len
            ));
            break;
        }
        payload.resize(header.payload_len(), 0);
        reader
            .read_exact(&mut payload)
            .context("read segment", path)?;
        if !header.matches(&payload) {
            scan.damage = Some(format!("CRC mismatch in seq {}", header.seq));
            break;
        }
        scan.valid_len += header.frame_len();
        scan.end_seq += 1;
    }
    Ok(scan)
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .context("open for truncation", path)?;
    file.set_len(len).context("truncate", path)?;
    file.sync_all().context("fsync", path)
}
