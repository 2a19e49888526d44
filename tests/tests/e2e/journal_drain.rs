//! `headend journal drain --dir PATH`: the journal an instance left on disk is committed by the
//! real binary, exactly once, through the ingest writers; a journal a running Headend holds is
//! refused; a torn tail is reported and what precedes it committed.
//!
//! The journals are written as the MQTT tap writes them (`IngestRecord`s appended to a
//! `headend_journal` directory), then left with nothing committed: an instance that died before
//! its writers committed anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use headend::ingest::drain::{Journal, JournalOptions};
use headend::ingest::record::{IngestRecord, RecordKind};
use headend_e2e::{fixture, headend_binary, TestApp};

const SERIAL: &str = "SGD";

fn record(kind: RecordKind, topic: &str, payload: Vec<u8>) -> Bytes {
    IngestRecord {
        kind,
        received_at: chrono::Utc::now(),
        source: "mqtt".into(),
        client: SERIAL.into(),
        topic: topic.into(),
        payload: payload.into(),
        reason: if kind == RecordKind::Connect {
            "1".into()
        } else {
            String::new()
        },
    }
    .encode()
}

/// A fixture at a distinct local time per `i`, so every message is its own row.
fn at(name: &str, i: usize) -> Vec<u8> {
    let mut doc: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
    let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::minutes(i as i64);
    doc["header"]["local_time"] = t.format("%d.%m.%Y %H:%M:%S").to_string().into();
    serde_json::to_vec(&doc).unwrap()
}

fn measurements(i: usize) -> Bytes {
    record(
        RecordKind::Publish,
        &format!("sg/{SERIAL}/pub/measurements/ir"),
        at("measurements-ir.json", i),
    )
}

/// Appends `records` to a new journal in `dir` and closes it, nothing acknowledged.
async fn write_journal(dir: &Path, records: &[Bytes]) {
    let journal = Journal::open(dir, JournalOptions::default()).unwrap();
    let appender = journal.appender();
    for r in records {
        appender.append(r.clone()).await.unwrap();
    }
    journal.close().await.unwrap();
}

/// The `headend` binary's `journal drain`, against the app's database.
fn drain(app: &TestApp, dir: &Path) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    Command::new(headend_binary())
        .args(["journal", "drain", "--dir"])
        .arg(dir)
        .env("HEADEND_DATABASE_URL", app.database_url())
        .env("HEADEND_DATA_DIR", scratch.path())
        .env("HEADEND_LOG", "warn")
        .output()
        .expect("run headend journal drain")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn drained(app: &TestApp, dir: &Path) -> String {
    let out = drain(app, dir);
    assert!(
        out.status.success(),
        "drain failed: {}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Row counts: measurements, counter readings, gateway events, rejects.
async fn counts(app: &TestApp) -> [i64; 4] {
    [
        app.count("SELECT count(*) FROM measurements").await,
        app.count("SELECT count(*) FROM counter_readings").await,
        app.count("SELECT count(*) FROM gateway_events").await,
        app.count("SELECT count(*) FROM ingest_rejects").await,
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn journal_dir(parent: &tempfile::TempDir) -> PathBuf {
    parent.path().join("journal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_commits_a_dead_instances_journal_exactly_once() {
    const N: usize = 40;
    let app = TestApp::spawn().await;
    app.gateway(SERIAL, None, None).await;
    let mut records = vec![record(RecordKind::Connect, "", Vec::new())];
    for i in 0..N {
        records.push(measurements(i));
        records.push(record(
            RecordKind::Publish,
            &format!("sg/{SERIAL}/pub/counters/ir"),
            at("counters-ir-manual.json", i),
        ));
    }
    for i in 0..3 {
        records.push(record(
            RecordKind::Publish,
            &format!("sg/{SERIAL}/pub/log"),
            format!("log line {i}").into_bytes(),
        ));
    }
    records.push(record(
        RecordKind::Publish,
        &format!("sg/{SERIAL}/pub/measurements/ir"),
        b"{not json".to_vec(),
    ));
    let parent = tempfile::tempdir().unwrap();
    let dir = journal_dir(&parent);
    write_journal(&dir, &records).await;
    // The same journal as it was before anything was committed: a crash after the commits and
    // before the checkpoint reached the disk leaves exactly this.
    let stale = parent.path().join("stale");
    copy_dir(&dir, &stale);

    assert_eq!(counts(&app).await, [0, 0, 0, 0]);
    let first = drained(&app, &dir);
    let after = counts(&app).await;
    assert_eq!(after[0], N as i64, "one measurement row per message");
    assert!(
        after[1] >= N as i64,
        "counter readings of every message: {after:?}"
    );
    assert_eq!(after[2], 4, "the session start and three log lines");
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects WHERE NOT partial")
            .await,
        1,
        "the bad message is a kept reject"
    );
    assert!(
        first.contains(&format!("drained {} records", records.len())),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "committed: {} measurements, {} counter readings, 0 relay states, 4 events, {} rejects",
            after[0], after[1], after[3]
        )),
        "{first}"
    );
    assert!(first.contains("receipts: not sent"), "{first}");
    let online: bool = sqlx::query_scalar("SELECT online FROM gateways WHERE serial = $1")
        .bind(SERIAL)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(online, "the journaled session start is applied");

    // Drained again: nothing left.
    let again = drained(&app, &dir);
    assert!(again.contains("nothing to drain"), "{again}");
    assert_eq!(counts(&app).await, after);

    // The stale copy replays every record: the inserts are idempotent, nothing is added.
    let replay = drained(&app, &stale);
    assert!(
        replay.contains(&format!("drained {} records", records.len())),
        "{replay}"
    );
    assert!(
        replay.contains(
            "committed: 0 measurements, 0 counter readings, 0 relay states, 0 events, 0 rejects"
        ),
        "{replay}"
    );
    assert_eq!(counts(&app).await, after);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_held_by_a_running_headend_is_refused() {
    let app = TestApp::spawn().await;
    let dir = app.data_dir.path().join("journal");
    let out = drain(&app, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr.contains("is held by a running Headend"), "{stderr}");

    // Not a journal at all: refused, and nothing is created there.
    let empty = tempfile::tempdir().unwrap();
    let out = drain(&app, empty.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a journal directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_reported_and_the_records_before_it_are_committed() {
    const N: usize = 5;
    let app = TestApp::spawn().await;
    app.gateway(SERIAL, None, None).await;
    let mut records: Vec<Bytes> = (0..N).map(measurements).collect();
    // Records this build cannot read: an unknown kind, and a truncated one.
    let mut unknown = measurements(N).to_vec();
    unknown[1] = 99;
    records.push(unknown.into());
    records.push(Bytes::from_static(b"\x01\x01"));
    records.push(measurements(N + 1));
    let parent = tempfile::tempdir().unwrap();
    let dir = journal_dir(&parent);
    write_journal(&dir, &records).await;
    // A crash in the middle of writing the next record.
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[0xAB; 30])
        .unwrap();

    let out = drained(&app, &dir);
    assert!(out.contains("torn tail: 30 bytes cut"), "{out}");
    assert!(out.contains("unreadable records: 2"), "{out}");
    assert!(out.contains("drained 8 records"), "{out}");
    assert_eq!(
        app.count("SELECT count(*) FROM measurements").await,
        N as i64 + 1,
        "every readable record before the tail is committed"
    );
    let again = drained(&app, &dir);
    assert!(again.contains("nothing to drain"), "{again}");
    assert!(
        !again.contains("torn tail"),
        "the cut was made once: {again}"
    );
    app.stop().await;
}
