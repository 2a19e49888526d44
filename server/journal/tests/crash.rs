//! A process that dies without closing its journal loses nothing that was
//! reported durable, and the next open re-delivers everything not covered by
//! a persisted checkpoint.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use headend_journal::JournalOptions;

use common::{open, payload, read, seqs, small_opts, tag};

const CHILD_DIR_ENV: &str = "HEADEND_JOURNAL_CRASH_DIR";

fn opts() -> JournalOptions {
    JournalOptions {
        checkpoint_interval: Duration::from_millis(1),
        ..small_opts(4096)
    }
}

/// The child: appends, acknowledges half, and exits with appends in flight.
#[tokio::test]
#[ignore = "run as a child process by killed_process_keeps_every_durable_record"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let journal = open(Path::new(&dir), &opts());
    let appender = journal.appender();
    for tag in 1..=1000 {
        appender.append(payload(tag, 100)).await.unwrap();
    }
    read(&journal.reader(), 500).await;
    journal.ack(1..=500).unwrap();
    for tag in 1001..=1100 {
        let appender = appender.clone();
        tokio::spawn(async move { appender.append(payload(tag, 100)).await });
    }
    tokio::task::yield_now().await;
    // No destructors, no close: as good as being killed.
    std::process::exit(0);
}

#[tokio::test]
async fn killed_process_keeps_every_durable_record() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--quiet"])
        .env(CHILD_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "child failed: {status}");

    let journal = open(dir.path(), &opts());
    let stats = journal.stats();
    assert!(stats.last_seq >= 1000, "{stats:?}");
    assert!(stats.checkpoint <= 500, "{stats:?}");
    let records = read(
        &journal.reader(),
        (stats.last_seq - stats.checkpoint) as usize,
    )
    .await;
    assert_eq!(
        seqs(&records),
        (stats.checkpoint + 1..=stats.last_seq).collect::<Vec<_>>()
    );
    let (durable, in_flight): (Vec<_>, Vec<_>) = records.iter().partition(|r| r.seq <= 1000);
    assert!(durable.iter().all(|r| tag(&r.payload) == r.seq));
    let in_flight: BTreeSet<u64> = in_flight.iter().map(|r| tag(&r.payload)).collect();
    assert!(in_flight.iter().all(|tag| (1001..=1100).contains(tag)));
}
