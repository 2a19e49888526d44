//! From journal records to rows: pure code, no I/O, so every rule is unit-tested here and the
//! database writer only moves rows.
//!
//! A record becomes rows, a reject, or both (a partly valid message keeps its valid part and
//! records why the rest was refused). Nothing here can fail as a whole: hostile input becomes a
//! reject row with the verbatim payload.
//!
//! `directory` resolves the sender, `publish` reads the SG MQTT JSON documents (the XML and
//! Modbus paths are `normalize_xml` and `normalize_polled`), `rows` holds what they produce and
//! `fields` the rules every path shares.

use chrono::Duration;

use super::record::{IngestRecord, RecordKind};

mod directory;
mod fields;
mod publish;
mod rows;
#[cfg(test)]
mod tests;

pub use directory::{Directory, GatewayInfo};
pub(crate) use fields::truncate;
pub(super) use fields::{beyond_horizon, bump_seen, cut_issue, measurement_values};
pub use rows::{
    CounterDef, CounterReading, DeviceAttrs, DeviceKey, DeviceKind, EventRow, GatewayUpdate, Hello,
    MeasurementRow, RejectRow, RelayStateRow, Rows,
};

/// Column names of `measurements`, in the order of [`MeasurementRow::values`] (owned by the
/// wire contract: every ingest path and the Modbus maps feed the same columns).
pub use sg_wire::message::MEASUREMENT_COLUMNS;

/// `IngestRecord::source` of messages from an external broker.
pub const EXTERNAL_SOURCE: &str = "mqtt-external";

/// Default of `energy.backlog_horizon_days`.
pub const DEFAULT_BACKLOG_HORIZON_DAYS: u32 = 400;

pub struct Normalizer<'a> {
    pub directory: &'a Directory,
    pub clock_tolerance: Duration,
    /// Counter readings dated more than this before their receive time are stored flagged
    /// [`BEYOND_HORIZON`](super::clock::BEYOND_HORIZON) (never turned into intervals) and
    /// reported in a partial reject.
    pub backlog_horizon: Duration,
}

impl Normalizer<'_> {
    /// Adds what `record` (journal sequence `seq`) says to `rows`.
    pub fn push(&self, rows: &mut Rows, seq: i64, record: IngestRecord) {
        // On an external broker Headend also sees what it publishes to gateways.
        if record.client.is_empty() && self.directory.commands.contains(&record.topic) {
            return;
        }
        let gateway = if record.client.is_empty() {
            self.directory.by_topic(&record.topic)
        } else {
            self.directory.by_serial(&record.client)
        };
        let keyed_before = rows.keyed();
        self.dispatch(rows, seq, &record, gateway);
        if rows.keyed() > keyed_before {
            rows.records.insert(seq, record);
        }
    }

    fn dispatch(
        &self,
        rows: &mut Rows,
        seq: i64,
        record: &IngestRecord,
        gateway: Option<&GatewayInfo>,
    ) {
        let mut ctx = Ctx {
            rows,
            record,
            seq,
            gateway_id: gateway.map(|g| g.id),
        };
        match record.kind {
            RecordKind::Violation => ctx.reject(record.reason.clone(), false),
            RecordKind::Connect | RecordKind::Disconnect => {
                let Some(gw) = gateway else {
                    return;
                };
                let connected = record.kind == RecordKind::Connect;
                let still_open = record.reason.parse::<usize>().unwrap_or(0);
                let update = ctx.rows.gateways.entry(gw.id).or_default();
                if update.online.is_none_or(|(at, _)| at <= record.received_at) {
                    update.online = Some((record.received_at, connected || still_open > 0));
                }
                bump_seen(update, record.received_at);
                let body = String::from_utf8_lossy(&record.payload).into_owned();
                ctx.event(
                    gw.id,
                    if connected { "connect" } else { "disconnect" },
                    body,
                );
            }
            RecordKind::Publish => match gateway {
                None => ctx.reject(
                    format!(
                        "unknown gateway: no registered gateway publishes under topic {:?}",
                        record.topic
                    ),
                    false,
                ),
                Some(gw) => self.publish(&mut ctx, gw),
            },
            RecordKind::Polled => match gateway {
                None => ctx.reject(
                    format!("unknown converter {:?}", truncate(&record.client, 64)),
                    false,
                ),
                Some(gw) => {
                    if let Some((reason, partial)) =
                        super::normalize_polled::push(ctx.rows, record, seq, gw)
                    {
                        ctx.reject(reason, partial);
                    }
                }
            },
            RecordKind::XmlPush => match gateway {
                None => ctx.reject(
                    format!("unknown gateway {:?}", truncate(&record.client, 64)),
                    false,
                ),
                Some(gw) => {
                    if let Some((reason, partial)) = super::normalize_xml::push(
                        ctx.rows,
                        record,
                        seq,
                        gw,
                        super::normalize_xml::Limits {
                            clock_tolerance: self.clock_tolerance,
                            backlog_horizon: self.backlog_horizon,
                        },
                    ) {
                        ctx.reject(reason, partial);
                    }
                }
            },
        }
    }
}

struct Ctx<'a> {
    rows: &'a mut Rows,
    record: &'a IngestRecord,
    seq: i64,
    gateway_id: Option<i64>,
}

impl Ctx<'_> {
    fn reject(&mut self, reason: String, partial: bool) {
        tracing::warn!(
            topic = %self.record.topic,
            client = %self.record.client,
            partial,
            %reason,
            "ingest reject"
        );
        self.rows.rejects.push(RejectRow {
            received_at: self.record.received_at,
            source: self.record.source.clone(),
            topic: self.record.topic.clone(),
            client: self.record.client.clone(),
            gateway_id: self.gateway_id,
            reason: truncate(&reason, 4096),
            partial,
            payload: self.record.payload.clone(),
            seq: self.seq,
        });
    }

    fn event(&mut self, gateway_id: i64, kind: &'static str, body: String) {
        self.rows.events.push(EventRow {
            gateway_id,
            kind,
            received_at: self.record.received_at,
            body,
            seq: self.seq,
        });
    }
}
