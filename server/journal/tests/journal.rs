mod common;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use headend_journal::{Journal, JournalError, JournalOptions};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use common::{open, payload, read, segments, seqs, small_opts, tag};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_read_back_in_order_and_acked_segments_deleted() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(16 << 10);
    let journal = open(dir.path(), &opts);

    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let appender = journal.appender();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..PER_TASK {
                let tag = task * PER_TASK + i;
                seqs.push((
                    appender
                        .append(payload(tag, 100 + (tag % 300) as usize))
                        .await
                        .unwrap(),
                    tag,
                ));
            }
            seqs
        });
    }
    let assigned: Vec<(u64, u64)> = tasks.join_all().await.into_iter().flatten().collect();
    let total = (TASKS * PER_TASK) as usize;
    assert_eq!(
        assigned
            .iter()
            .map(|&(seq, _)| seq)
            .collect::<HashSet<_>>()
            .len(),
        total
    );

    let records = read(&journal.reader(), total).await;
    assert_eq!(seqs(&records), (1..=total as u64).collect::<Vec<_>>());
    let by_seq: std::collections::HashMap<u64, u64> = assigned.into_iter().collect();
    for record in &records {
        let tag = by_seq[&record.seq];
        assert_eq!(record.payload, payload(tag, 100 + (tag % 300) as usize));
    }
    assert!(segments(dir.path()).len() > 10, "expected many segments");

    journal.ack(1..=total as u64).unwrap();
    let stats = journal.stats();
    assert_eq!(stats.checkpoint, total as u64);
    assert_eq!(stats.pending_records, 0);
    assert_eq!(stats.appended_records, total as u64);
    assert!(stats.fsyncs > 0 && stats.fsyncs <= total as u64);
    assert_eq!(stats.fsync_histogram.iter().sum::<u64>(), stats.fsyncs);
    journal.close().await.unwrap();
    // Only the segment that was being appended to survives.
    assert_eq!(segments(dir.path()).len(), 1);

    let journal = open(dir.path(), &opts);
    assert_eq!(journal.stats().checkpoint, total as u64);
    assert_eq!(
        journal.appender().append(payload(0, 8)).await.unwrap(),
        total as u64 + 1
    );
}

#[tokio::test]
async fn torn_tail_is_cut_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(1 << 20);
    let journal = open(dir.path(), &opts);
    let epoch = journal.epoch();
    let appender = journal.appender();
    for tag in 1..=10 {
        appender.append(payload(tag, 200)).await.unwrap();
    }
    journal.close().await.unwrap();

    // A crash in the middle of writing record 10.
    let segment = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 50)
        .unwrap();

    let journal = open(dir.path(), &opts);
    assert_eq!(journal.epoch(), epoch);
    assert_eq!(journal.stats().last_seq, 9);
    assert_eq!(fs::metadata(&segment).unwrap().len(), len - 216);
    let torn = journal.torn_tail().expect("the cut is reported");
    assert_eq!(
        (&torn.segment, torn.offset, torn.cut_bytes),
        (&segment, len - 216, 166)
    );
    assert_eq!(
        journal.appender().append(payload(11, 200)).await.unwrap(),
        10
    );
    let records = read(&journal.reader(), 10).await;
    assert_eq!(
        records.iter().map(|r| tag(&r.payload)).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
    );
    journal.close().await.unwrap();

    // Garbage after the last record, and a flipped byte in it.
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[0xAB; 100]).unwrap();
    drop(file);
    let journal = open(dir.path(), &opts);
    assert_eq!(journal.stats().last_seq, 10);
    assert_eq!(journal.torn_tail().map(|t| t.cut_bytes), Some(100));
    journal.close().await.unwrap();
    let journal = open(dir.path(), &opts);
    assert_eq!(journal.torn_tail(), None, "a clean open reports no cut");
    journal.close().await.unwrap();

    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    fs::write(&segment, bytes).unwrap();
    let journal = open(dir.path(), &opts);
    assert_eq!(journal.stats().last_seq, 9);
    assert_eq!(journal.epoch(), epoch);
    assert_eq!(
        journal.appender().append(payload(12, 200)).await.unwrap(),
        10
    );
}

#[tokio::test]
async fn damage_before_the_last_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(1024);
    let journal = open(dir.path(), &opts);
    let appender = journal.appender();
    for tag in 1..=20 {
        appender.append(payload(tag, 300)).await.unwrap();
    }
    journal.close().await.unwrap();
    let first = &segments(dir.path())[0];
    let mut bytes = fs::read(first).unwrap();
    bytes[40] ^= 1;
    fs::write(first, bytes).unwrap();

    let err = Journal::open(dir.path(), opts).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { ref path, .. } if path == first),
        "{err:?}"
    );
}

#[tokio::test]
async fn out_of_order_acks_move_the_checkpoint_over_contiguous_ranges_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(1 << 20);
    let journal = open(dir.path(), &opts);
    let epoch = journal.epoch();
    let appender = journal.appender();
    for tag in 1..=10 {
        appender.append(payload(tag, 64)).await.unwrap();
    }
    let reader = journal.reader();
    let mut batches = Vec::new();
    for _ in 0..5 {
        batches.push(reader.next_batch(2, usize::MAX).await.unwrap());
    }
    assert_eq!(
        batches.iter().map(|b| b.seqs()).collect::<Vec<_>>(),
        [1..=2, 3..=4, 5..=6, 7..=8, 9..=10]
    );

    journal.ack(batches[1].seqs()).unwrap();
    journal.ack(batches[3].seqs()).unwrap();
    assert_eq!(journal.stats().checkpoint, 0);
    journal.ack(batches[0].seqs()).unwrap();
    assert_eq!(journal.stats().checkpoint, 4);
    // Acknowledging twice is harmless.
    journal.ack(batches[1].seqs()).unwrap();
    assert_eq!(journal.stats().checkpoint, 4);
    journal.close().await.unwrap();

    let journal = open(dir.path(), &opts);
    assert_eq!(journal.epoch(), epoch);
    assert_eq!(journal.stats().checkpoint, 4);
    let reader = journal.reader();
    let redelivered = read(&reader, 4).await;
    // 7..=8 were acknowledged out of order before the reopen.
    assert_eq!(seqs(&redelivered), [5, 6, 9, 10]);
    for record in &redelivered {
        assert_eq!(tag(&record.payload), record.seq);
    }
    journal.ack(5..=6).unwrap();
    journal.ack(9..=10).unwrap();
    assert_eq!(journal.stats().checkpoint, 10);
}

/// A consumer that commits in journal order waits on the checkpoint: it resolves only once
/// every earlier record is acknowledged, whatever order the acks came in.
#[tokio::test]
async fn wait_checkpoint_resolves_once_everything_before_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(open(dir.path(), &small_opts(1 << 20)));
    let appender = journal.appender();
    for tag in 1..=6 {
        appender.append(payload(tag, 64)).await.unwrap();
    }
    let reader = journal.reader();
    let (a, b, c) = (
        reader.next_batch(2, usize::MAX).await.unwrap(),
        reader.next_batch(2, usize::MAX).await.unwrap(),
        reader.next_batch(2, usize::MAX).await.unwrap(),
    );
    // Nothing precedes the first batch.
    journal.wait_checkpoint(a.first_seq - 1).await.unwrap();
    let third = tokio::spawn({
        let journal = journal.clone();
        async move { journal.wait_checkpoint(c.first_seq - 1).await }
    });
    journal.ack(b.seqs()).unwrap();
    tokio::task::yield_now().await;
    assert!(!third.is_finished(), "batch b acknowledged, a still open");
    journal.ack(a.seqs()).unwrap();
    third.await.unwrap().unwrap();

    Arc::into_inner(journal).unwrap().close().await.unwrap();
}

#[tokio::test]
async fn ack_rejects_ranges_not_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), &small_opts(1 << 20));
    journal.appender().append(payload(1, 8)).await.unwrap();
    assert!(matches!(
        journal.ack(1..=1),
        Err(JournalError::InvalidAck { .. })
    ));
    read(&journal.reader(), 1).await;
    journal.ack(1..=1).unwrap();
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 2..=1;
    assert!(matches!(
        journal.ack(empty),
        Err(JournalError::InvalidAck { .. })
    ));
}

#[tokio::test]
async fn full_journal_refuses_appends_until_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        max_record_bytes: 100,
        segment_bytes: 1000,
        max_bytes: 2500,
        ..JournalOptions::default()
    };
    let journal = open(dir.path(), &opts);
    let appender = journal.appender();
    let mut appended = 0;
    let used = loop {
        match appender.append(payload(appended + 1, 84)).await {
            Ok(seq) => appended = seq,
            Err(JournalError::Full { used, max }) => {
                assert_eq!(max, 2500);
                break used;
            }
            Err(e) => panic!("{e}"),
        }
    };
    // 100-byte frames: 25 fit the budget exactly.
    assert_eq!((appended, used), (25, 2500));
    assert!(matches!(
        appender.append(payload(0, 84)).await,
        Err(JournalError::Full { .. })
    ));

    let records = read(&journal.reader(), 25).await;
    journal.ack(1..=records.len() as u64).unwrap();
    // Two sealed segments were freed; the live one still counts.
    assert_eq!(journal.stats().budget_used, 500);
    assert_eq!(appender.append(payload(26, 84)).await.unwrap(), 26);
}

#[tokio::test]
async fn oversized_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), &small_opts(1 << 20));
    let err = journal
        .appender()
        .append(Bytes::from(vec![0; 1025]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        JournalError::RecordTooLarge {
            size: 1025,
            max: 1024
        }
    ));
    let err = journal
        .appender()
        .append_many(vec![payload(1, 8), Bytes::from(vec![0; 2000])])
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::RecordTooLarge { .. }));
    assert_eq!(journal.appender().append(payload(1, 8)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_directory_opens_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(1 << 20);
    let journal = open(dir.path(), &opts);
    let err = Journal::open(dir.path(), opts.clone()).unwrap_err();
    assert!(matches!(err, JournalError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("already open"), "{err}");
    journal.close().await.unwrap();
    open(dir.path(), &opts);
}

#[tokio::test]
async fn reads_cross_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(512);
    let journal = open(dir.path(), &opts);
    let appender = journal.appender();
    let first = appender
        .append_many((1..=50).map(|tag| payload(tag, 8 * tag as usize)).collect())
        .await
        .unwrap();
    assert_eq!(first, 1..51);
    assert!(segments(dir.path()).len() >= 10);

    // Batches of all shapes, limited by bytes rather than count.
    let reader = journal.reader();
    let mut records = Vec::new();
    while records.len() < 50 {
        let batch = reader.next_batch(1000, 300).await.unwrap();
        let bytes: usize = batch.records.iter().map(|r| r.payload.len()).sum();
        assert!(batch.records.len() == 1 || bytes <= 300);
        records.extend(batch.records);
    }
    assert_eq!(seqs(&records), (1..=50).collect::<Vec<_>>());
    for record in &records {
        assert_eq!(record.payload, payload(record.seq, 8 * record.seq as usize));
    }
    journal.close().await.unwrap();

    // And again from disk after reopening.
    let journal = open(dir.path(), &opts);
    let again = read(&journal.reader(), 50).await;
    assert_eq!(again, records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_get_disjoint_batches() {
    const TOTAL: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), &small_opts(8 << 10));
    let delivered = Arc::new(AtomicU64::new(0));
    let all_read = Arc::new(Notify::new());

    let mut readers = JoinSet::new();
    for _ in 0..4 {
        let reader = journal.reader();
        let delivered = Arc::clone(&delivered);
        let all_read = Arc::clone(&all_read);
        readers.spawn(async move {
            let mut seen = Vec::new();
            loop {
                match reader.next_batch(7, usize::MAX).await {
                    Ok(batch) => {
                        reader.ack(batch.seqs()).unwrap();
                        seen.extend(batch.records.iter().map(|r| r.seq));
                        let count = batch.records.len() as u64;
                        if delivered.fetch_add(count, Ordering::AcqRel) + count == TOTAL {
                            all_read.notify_one();
                        }
                    }
                    Err(JournalError::Closed) => return seen,
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    let appender = journal.appender();
    for tag in 1..=TOTAL {
        appender.append(payload(tag, 32)).await.unwrap();
    }
    all_read.notified().await;
    assert_eq!(journal.stats().checkpoint, TOTAL);
    journal.close().await.unwrap();

    let per_reader = readers.join_all().await;
    for seen in &per_reader {
        assert!(seen.is_sorted(), "each reader sees increasing seqs");
    }
    let mut seen: Vec<u64> = per_reader.into_iter().flatten().collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test]
async fn next_batch_is_cancel_safe() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), &small_opts(1 << 20));
    let reader = journal.reader();
    tokio::select! {
        biased;
        _ = reader.next_batch(10, usize::MAX) => panic!("nothing appended yet"),
        () = std::future::ready(()) => {}
    }
    journal.appender().append(payload(1, 8)).await.unwrap();
    let batch = reader.next_batch(10, usize::MAX).await.unwrap();
    assert_eq!(batch.seqs(), 1..=1);
}

#[tokio::test]
async fn a_short_batch_lingers_for_more_records_until_full_or_the_linger_ends() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), &small_opts(1 << 20));
    let reader = journal.reader();
    let appender = journal.appender();
    appender.append(payload(1, 8)).await.unwrap();
    // A batch that fills up returns at once: the hour of linger is never waited.
    let filling = tokio::spawn({
        let reader = reader.clone();
        async move {
            reader
                .next_batch_within(3, usize::MAX, Duration::from_secs(3600))
                .await
        }
    });
    appender.append(payload(2, 8)).await.unwrap();
    appender.append(payload(3, 8)).await.unwrap();
    let batch = common::within_deadline(filling).await.unwrap().unwrap();
    assert_eq!(batch.seqs(), 1..=3);

    // One that does not fill up takes what is there once the linger ends.
    appender.append(payload(4, 8)).await.unwrap();
    let linger = Duration::from_millis(20);
    let started = Instant::now();
    let batch = reader
        .next_batch_within(3, usize::MAX, linger)
        .await
        .unwrap();
    assert_eq!(batch.seqs(), 4..=4);
    assert!(started.elapsed() >= linger, "returned before its linger");
}

#[tokio::test]
async fn waiting_reader_wakes_on_append_and_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), &small_opts(1 << 20));
    let reader = journal.reader();
    let waiting = tokio::spawn({
        let reader = reader.clone();
        async move { reader.next_batch(10, usize::MAX).await }
    });
    journal.appender().append(payload(1, 8)).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().seqs(), 1..=1);

    let waiting = tokio::spawn(async move { reader.next_batch(10, usize::MAX).await });
    let appender = journal.appender();
    journal.close().await.unwrap();
    assert!(matches!(waiting.await.unwrap(), Err(JournalError::Closed)));
    assert!(matches!(
        appender.append(payload(2, 8)).await,
        Err(JournalError::Closed)
    ));
}

#[tokio::test]
async fn write_failure_is_reported_and_sticks_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    let opts = small_opts(256);
    let journal = open(&journal_dir, &opts);
    let appender = journal.appender();
    appender.append(payload(1, 200)).await.unwrap();
    // The next record needs a new segment, and its directory is gone.
    fs::remove_dir_all(&journal_dir).unwrap();
    let err = appender.append(payload(2, 200)).await.unwrap_err();
    let JournalError::Io { op, path, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*op, "create segment");
    assert!(path.starts_with(&journal_dir));
    assert!(journal.stats().failed);
    let err = appender.append(payload(3, 8)).await.unwrap_err();
    assert!(matches!(err, JournalError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("reopen"));
}

#[tokio::test]
async fn epoch_persists_and_differs_between_journals() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let opts = small_opts(1 << 20);
    let first = open(one.path(), &opts);
    let epoch = first.epoch();
    assert_ne!(open(two.path(), &opts).epoch(), epoch);
    first.close().await.unwrap();
    assert_eq!(open(one.path(), &opts).epoch(), epoch);
}

#[test]
fn inconsistent_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_bytes: 1 << 20,
        max_bytes: 1 << 20,
        ..JournalOptions::default()
    };
    assert!(matches!(
        Journal::open(dir.path(), opts),
        Err(JournalError::InvalidOptions(_))
    ));
}

/// The journal holds every site's raw readings: no other local user may read them.
#[tokio::test]
async fn the_journal_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("journal");
    // A directory left by an older release with a loose mode is tightened at open.
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let opts = small_opts(4 << 10);
    let journal = open(&dir, &opts);
    let appender = journal.appender();
    for tag in 0..40 {
        appender.append(payload(tag, 300)).await.unwrap();
    }
    journal.close().await.unwrap();
    let mode = |path: &std::path::Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.len() > 2,
        "segments, checkpoint and lock expected: {files:?}"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
