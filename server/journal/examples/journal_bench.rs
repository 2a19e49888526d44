//! Append throughput and latency, measured against the disk's own speed.
//!
//! ```text
//! cargo run --release -p headend-journal --example journal_bench -- [RECORDS] [DIR]
//! ```
//!
//! 64 tasks append 1 KiB records while a consumer reads and acknowledges
//! them, as the ingest pipeline does. Then, as a reference, the same bytes
//! are written to a plain file with one `write` + `fdatasync` per MiB, and
//! single 1 KiB appends are fdatasync'ed one at a time (the floor for any
//! commit's latency). DIR defaults to a temporary directory; point it at the
//! disk the journal will live on.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use headend_journal::{Journal, JournalError, JournalOptions};
use tokio::task::JoinSet;

const TASKS: usize = 64;
const RECORD_BYTES: usize = 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map_or(Ok(200_000), |n| n.parse())?;
    let tmp = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };

    let journal = bench_journal(&tmp.path().join("journal"), records).await?;
    let raw = raw_write_fdatasync(&tmp.path().join("raw"), records * RECORD_BYTES)?;
    let floor = small_fdatasync_latency(&tmp.path().join("small"), 500)?;

    let journal_mib_s = mib_per_s(records * RECORD_BYTES, journal.elapsed);
    println!(
        "journal: {records} x {RECORD_BYTES} B from {TASKS} tasks in {:.2?}: {:.0} appends/s, {journal_mib_s:.1} MiB/s",
        journal.elapsed,
        records as f64 / journal.elapsed.as_secs_f64(),
    );
    println!(
        "  append->durable latency: p50 {:.2?}  p99 {:.2?}  p99.9 {:.2?}  max {:.2?}",
        journal.latencies.quantile(0.50),
        journal.latencies.quantile(0.99),
        journal.latencies.quantile(0.999),
        journal.latencies.quantile(1.0),
    );
    println!(
        "  {} fdatasyncs ({:.1} records each), max fdatasync {:.2?}",
        journal.fsyncs,
        records as f64 / journal.fsyncs as f64,
        journal.fsync_max,
    );
    let raw_mib_s = mib_per_s(records * RECORD_BYTES, raw);
    println!("reference: write + fdatasync per 1 MiB, same bytes: {raw:.2?}, {raw_mib_s:.1} MiB/s");
    println!(
        "reference: 1 KiB write + fdatasync, one at a time: p50 {:.2?}  p99 {:.2?}",
        floor.quantile(0.50),
        floor.quantile(0.99),
    );
    println!(
        "journal throughput = {:.2} x raw sequential; journal p50 = {:.1} x a lone fdatasync",
        journal_mib_s / raw_mib_s,
        journal.latencies.quantile(0.50).as_secs_f64() / floor.quantile(0.50).as_secs_f64(),
    );
    Ok(())
}

struct JournalRun {
    elapsed: Duration,
    latencies: Latencies,
    fsyncs: u64,
    fsync_max: Duration,
}

async fn bench_journal(dir: &Path, records: usize) -> Result<JournalRun, JournalError> {
    let journal = Arc::new(Journal::open(dir, JournalOptions::default())?);
    let consumer = tokio::spawn({
        let reader = journal.reader();
        async move {
            let mut read = 0;
            while read < records {
                let batch = reader.next_batch(1024, 1 << 20).await?;
                read += batch.records.len();
                reader.ack(batch.seqs())?;
            }
            Ok::<_, JournalError>(())
        }
    });

    let payload = Bytes::from(vec![0x5A; RECORD_BYTES]);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let appender = journal.appender();
        let payload = payload.clone();
        let count = records / TASKS + usize::from(task < records % TASKS);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let sent = Instant::now();
                appender.append(payload.clone()).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, JournalError>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(records);
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result.expect("append task panicked")?);
    }
    let elapsed = started.elapsed();
    consumer.await.expect("consumer panicked")?;

    let stats = journal.stats();
    Arc::into_inner(journal)
        .expect("all handles dropped")
        .close()
        .await?;
    Ok(JournalRun {
        elapsed,
        latencies: Latencies::new(latencies),
        fsyncs: stats.fsyncs,
        fsync_max: stats.fsync_max,
    })
}

fn raw_write_fdatasync(path: &Path, bytes: usize) -> std::io::Result<Duration> {
    let chunk = vec![0x5A; 1 << 20];
    let mut file = File::create(path)?;
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])?;
        file.sync_data()?;
        left -= n;
    }
    Ok(started.elapsed())
}

fn small_fdatasync_latency(path: &Path, count: usize) -> std::io::Result<Latencies> {
    let record = vec![0x5A; RECORD_BYTES];
    let mut file = File::create(path)?;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        latencies.push(started.elapsed());
    }
    Ok(Latencies::new(latencies))
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    fn quantile(&self, q: f64) -> Duration {
        let index = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[index]
    }
}
