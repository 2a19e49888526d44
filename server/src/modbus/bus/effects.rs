//! The bus's results on their way out: journal appends and communication state are written
//! by a task of their own, so a slow fsync or database never holds the bus.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::ingest::record::IngestRecord;
use crate::ingest::IngestSink;
use crate::modbus::store::{self, BusConverter};

pub(super) enum Effect {
    Append(IngestRecord),
    CommOk {
        id: i64,
        at: DateTime<Utc>,
    },
    CommFailed {
        id: i64,
        at: DateTime<Utc>,
        error: String,
        failures: u32,
        backoff_until: Option<DateTime<Utc>>,
    },
    LinkFailed {
        at: DateTime<Utc>,
        error: String,
    },
}

pub(super) async fn write_effects(
    pool: PgPool,
    sink: IngestSink,
    conv: BusConverter,
    mut rx: mpsc::Receiver<Effect>,
) {
    while let Some(effect) = rx.recv().await {
        let result = match effect {
            Effect::Append(record) => sink
                .append(&record)
                .await
                .map_err(|e| format!("journal append: {e}")),
            Effect::CommOk { id, at } => store::comm_ok(&pool, id, at)
                .await
                .map_err(|e| format!("device state: {e}")),
            Effect::CommFailed {
                id,
                at,
                error,
                failures,
                backoff_until,
            } => store::comm_failed(&pool, id, at, &error, failures, backoff_until)
                .await
                .map_err(|e| format!("device state: {e}")),
            Effect::LinkFailed { at, error } => store::link_failed(&pool, conv.id, at, &error)
                .await
                .map_err(|e| format!("converter state: {e}")),
        };
        if let Err(error) = result {
            tracing::warn!(converter = %conv.serial, %error, "converter result not written");
        }
    }
}
