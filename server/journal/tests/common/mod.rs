#![allow(dead_code)] // Each test binary uses a different subset.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use headend_journal::{Journal, JournalOptions, Reader, Record};

/// Small segments so tests cross segment boundaries; records up to 1 KiB,
/// or as much as fits a segment.
pub fn small_opts(segment_bytes: u64) -> JournalOptions {
    JournalOptions {
        max_record_bytes: (segment_bytes as usize - 16).min(1024),
        segment_bytes,
        max_bytes: 1 << 30,
        ..JournalOptions::default()
    }
}

pub fn open(dir: &Path, opts: &JournalOptions) -> Journal {
    Journal::open(dir, opts.clone()).expect("open journal")
}

/// A payload that tells which record it belongs to.
pub fn payload(tag: u64, len: usize) -> Bytes {
    let mut bytes = tag.to_le_bytes().repeat(len.div_ceil(8));
    bytes.truncate(len.max(8));
    Bytes::from(bytes)
}

pub fn tag(payload: &Bytes) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().unwrap())
}

/// Turns a hang (a record that never comes) into a failure. Not a means of
/// synchronisation: the awaited records are durable before anyone waits.
pub async fn within_deadline<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the journal stopped delivering")
}

/// Reads exactly `count` records (which must be durable already).
pub async fn read(reader: &Reader, count: usize) -> Vec<Record> {
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        let batch = within_deadline(reader.next_batch(count - records.len(), usize::MAX))
            .await
            .expect("next_batch");
        assert_eq!(batch.first_seq, batch.records[0].seq);
        assert_eq!(batch.last_seq, batch.records.last().unwrap().seq);
        records.extend(batch.records);
    }
    records
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
}

pub fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}
