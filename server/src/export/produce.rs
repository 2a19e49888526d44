//! Writing an export: one task per download reads row streams and sends CSV chunks.
//!
//! This module holds the task, the header and the chunked sink; each kind of file has its
//! rows in a module of its own: [`intervals`], [`periods`] (days and months), [`raw`]
//! (readings and measurements), [`completeness`].

mod completeness;
mod intervals;
mod periods;
mod raw;

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use sqlx::PgPool;
use tokio::sync::mpsc;

use super::csv::{Csv, BOM};
use super::{Export, ExportError, Kind, Meter, CHUNK};
use completeness::completeness;
use intervals::intervals;
use periods::{daily, monthly};
use raw::{measurements, readings};

/// How long a client may read nothing before the export gives up on it.
const CLIENT_STALL: StdDuration = StdDuration::from_secs(120);

const HEADER: [&str; 13] = [
    "start_local",
    "end_local",
    "start_utc",
    "site",
    "meter",
    "meter_name",
    "register",
    "value",
    "unit",
    "quality",
    "band",
    "cost",
    "currency",
];

const COMPLETENESS_HEADER: [&str; 16] = [
    "from_local",
    "to_local",
    "from_utc",
    "site",
    "meter",
    "meter_name",
    "register",
    "unit",
    "expected",
    "measured",
    "estimated",
    "missing",
    "measured_percent",
    "estimated_percent",
    "missing_percent",
    "energy",
];

/// Why writing stopped early.
enum Stop {
    /// The client went away (the body was dropped): nothing to report to anyone.
    Closed,
    /// The client read nothing for [`CLIENT_STALL`]: the database connection and snapshot
    /// are given back rather than held for a reader that may never come back.
    Stalled,
    Failed(ExportError),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(ExportError::Db(e))
    }
}

struct Sink {
    tx: mpsc::Sender<Bytes>,
    csv: Csv,
    rows: u64,
}

impl Sink {
    /// Ends a row; true when a chunk is full and should be sent.
    fn end_row(&mut self) -> bool {
        self.csv.end_row();
        self.rows += 1;
        self.csv.len() >= CHUNK
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.csv.is_empty() {
            return Ok(());
        }
        let chunk = self.csv.take();
        match tokio::time::timeout(CLIENT_STALL, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => Err(Stop::Stalled),
        }
    }
}

/// The task behind [`Export::stream`]: sends the file's chunks, and sets `complete` after
/// the last one. Whatever ends it early (an error, a stall, a panic) drops `tx` without
/// `complete`, and the stream then ends with an error: a truncated download, never a
/// complete-looking short file.
pub(super) async fn run(
    export: Export,
    pool: PgPool,
    tx: mpsc::Sender<Bytes>,
    complete: Arc<AtomicBool>,
) {
    let started = std::time::Instant::now();
    let mut sink = Sink {
        tx,
        csv: Csv::new(export.format, CHUNK + 4096),
        rows: 0,
    };
    match write(&export, &pool, &mut sink).await {
        Ok(()) => {
            complete.store(true, Ordering::Release);
            tracing::debug!(
                file = %export.filename,
                rows = sink.rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "export written"
            )
        }
        Err(Stop::Closed) => tracing::info!(
            file = %export.filename,
            rows = sink.rows,
            "export: the client went away before the end"
        ),
        Err(Stop::Stalled) => tracing::warn!(
            file = %export.filename,
            rows = sink.rows,
            stall_s = CLIENT_STALL.as_secs(),
            "export: the client stopped reading; the download is cut"
        ),
        // The status line is gone: the stream ends with an error, so the server closes the
        // connection without the final chunk and the client sees a broken download.
        Err(Stop::Failed(error)) => tracing::error!(
            file = %export.filename,
            rows = sink.rows,
            error = %error,
            "export failed after the download started; the file is truncated"
        ),
    }
}

async fn write(export: &Export, pool: &PgPool, sink: &mut Sink) -> Result<(), Stop> {
    if export.format.bom {
        sink.csv.preamble(BOM);
    }
    let header: &[&str] = match export.kind {
        Kind::Completeness => &COMPLETENESS_HEADER,
        _ => &HEADER,
    };
    for name in header {
        match (*name, export.kind) {
            ("register", Kind::Measurements) => sink.csv.plain("quantity"),
            _ => sink.csv.plain(name),
        }
    }
    sink.csv.end_row();
    // The download starts now, whatever the queries take.
    sink.flush().await?;

    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    match export.kind {
        Kind::Intervals => intervals(export, &mut tx, sink).await?,
        Kind::Daily => daily(export, &mut tx, sink).await?,
        Kind::Monthly => monthly(export, &mut tx, sink).await?,
        Kind::Readings => readings(export, &mut tx, sink).await?,
        Kind::Measurements => measurements(export, &mut tx, sink).await?,
        Kind::Completeness => completeness(export, &mut tx, sink).await?,
    }
    tx.rollback().await?;
    sink.flush().await
}

/// The fields that are the same on every row of a register (or, for measurements, of a
/// meter), encoded once: site, meter, meter name and, when given, the register.
fn fixed_fields(export: &Export, meter: &Meter, register: Option<&str>) -> Bytes {
    let mut csv = Csv::new(export.format, 256);
    csv.text(&export.site_name);
    csv.text(&meter.serial);
    csv.text(&meter.name);
    if let Some(r) = register {
        csv.text(r);
    }
    csv.take()
}
