//! Conflicting replays and notes on stored rows, turned into rejects of their messages (see
//! the module docs of [`super`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::ingest::normalize::{truncate, DeviceKey, RejectRow, Rows};

/// A row refused because its key holds other values: which message, and what differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub seq: i64,
    pub gateway_id: i64,
    pub what: String,
    /// For a measurement: its (seq, device, ts).
    pub measurement: Option<(i64, DeviceKey, DateTime<Utc>)>,
}

/// Something the writer found about rows it stored, reported as a partial reject of their
/// message: counter readings dated before their device's commissioning.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub seq: i64,
    pub gateway_id: i64,
    pub what: String,
}

/// The batch's rejects plus one per message with conflicting rows or notes (merged into the
/// message's own reject when it has one: rejects are keyed on the journal position).
pub(super) fn with_conflicts(
    rows: &Rows,
    conflicts: Vec<Conflict>,
    notes: Vec<Note>,
) -> Cow<'_, [RejectRow]> {
    if conflicts.is_empty() && notes.is_empty() {
        return Cow::Borrowed(&rows.rejects);
    }
    let mut by_seq: BTreeMap<i64, (i64, Vec<String>)> = BTreeMap::new();
    for c in conflicts {
        by_seq
            .entry(c.seq)
            .or_insert_with(|| (c.gateway_id, Vec::new()))
            .1
            .push(c.what);
    }
    let mut keyed: HashMap<i64, usize> = HashMap::new();
    for seq in rows
        .measurements
        .iter()
        .map(|m| m.seq)
        .chain(rows.counter_readings.iter().map(|c| c.seq))
        .chain(rows.relay_states.iter().map(|r| r.seq))
    {
        *keyed.entry(seq).or_default() += 1;
    }
    let mut rejects = rows.rejects.clone();
    for (seq, (gateway_id, whats)) in by_seq {
        // Partial: some of the message's rows were stored (or were already there, the same).
        let partial = keyed.get(&seq).copied().unwrap_or(0) > whats.len();
        let reason = format!(
            "conflicting replay: {} (the stored values are kept; this message's were not \
             stored)",
            whats.join("; ")
        );
        add_reject(&mut rejects, rows, seq, gateway_id, &reason, partial);
    }
    let mut by_seq: BTreeMap<i64, (i64, Vec<String>)> = BTreeMap::new();
    for n in notes {
        let entry = by_seq
            .entry(n.seq)
            .or_insert_with(|| (n.gateway_id, Vec::new()));
        if !entry.1.contains(&n.what) {
            entry.1.push(n.what);
        }
    }
    for (seq, (gateway_id, whats)) in by_seq {
        add_reject(&mut rejects, rows, seq, gateway_id, &whats.join("; "), true);
    }
    Cow::Owned(rejects)
}

/// Adds `reason` to message `seq`'s reject: appended to the one it has (a partial reject stays
/// partial only if this one is too), else a new reject carrying the message's record.
fn add_reject(
    rejects: &mut Vec<RejectRow>,
    rows: &Rows,
    seq: i64,
    gateway_id: i64,
    reason: &str,
    partial: bool,
) {
    if let Some(existing) = rejects.iter_mut().find(|r| r.seq == seq) {
        existing.reason = truncate(&format!("{}; {reason}", existing.reason), 4096);
        existing.partial &= partial;
    } else if let Some(record) = rows.records.get(&seq) {
        tracing::warn!(
            topic = %record.topic,
            client = %record.client,
            %reason,
            "ingest reject"
        );
        rejects.push(RejectRow {
            received_at: record.received_at,
            source: record.source.clone(),
            topic: record.topic.clone(),
            client: record.client.clone(),
            gateway_id: Some(gateway_id),
            reason: truncate(reason, 4096),
            partial,
            payload: record.payload.clone(),
            seq,
        });
    }
}

pub(super) fn device_name(key: &DeviceKey) -> String {
    format!("{} {}/{}", key.kind.as_str(), key.port, key.slot)
}

pub(super) fn at(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The reason given for counter readings of `device` dated `ts`, before its commissioning.
pub(super) fn before_commissioning(
    device: &DeviceKey,
    ts: DateTime<Utc>,
    since: DateTime<Utc>,
) -> String {
    format!(
        "counter readings of {} dated {} are before the meter's commissioning at {} \
         (devices.commissioned_at): stored but not turned into energy intervals",
        device_name(device),
        at(ts),
        at(since)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::record::{IngestRecord, RecordKind};

    fn record(n: u8) -> IngestRecord {
        IngestRecord {
            kind: RecordKind::Publish,
            received_at: "2026-12-07T09:00:00Z".parse().unwrap(),
            source: "mqtt".into(),
            client: "SG1".into(),
            topic: "sg/SG1/pub/counters/ir".into(),
            payload: bytes::Bytes::from(vec![n]),
            reason: String::new(),
        }
    }

    #[test]
    fn readings_before_commissioning_become_one_partial_reject_per_message() {
        let mut rows = Rows::default();
        rows.records.insert(1, record(1));
        rows.records.insert(2, record(2));
        rows.rejects.push(RejectRow {
            received_at: "2026-12-07T09:00:00Z".parse().unwrap(),
            source: "mqtt".into(),
            topic: "sg/SG1/pub/counters/ir".into(),
            client: "SG1".into(),
            gateway_id: Some(7),
            reason: "counter13: unreadable".into(),
            partial: true,
            payload: bytes::Bytes::from_static(&[2]),
            seq: 2,
        });
        let device = DeviceKey {
            gateway_id: 7,
            kind: crate::ingest::normalize::DeviceKind::Meter,
            port: "ir",
            slot: 0,
        };
        let ts: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let since: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let note = |seq| Note {
            seq,
            gateway_id: 7,
            what: before_commissioning(&device, ts, since),
        };
        // Two registers of message 1, one of message 2 (which has its own reject already).
        let rejects = with_conflicts(&rows, Vec::new(), vec![note(1), note(1), note(2)]);
        assert_eq!(rejects.len(), 2, "{rejects:?}");
        let own = rejects.iter().find(|r| r.seq == 2).unwrap();
        assert!(own
            .reason
            .starts_with("counter13: unreadable; counter readings of meter ir/0"));
        let new = rejects.iter().find(|r| r.seq == 1).unwrap();
        assert!(new.partial);
        assert_eq!(new.gateway_id, Some(7));
        assert_eq!(new.payload, bytes::Bytes::from_static(&[1]));
        assert_eq!(
            new.reason,
            "counter readings of meter ir/0 dated 2026-01-01T00:00:00Z are before the meter's \
             commissioning at 2026-02-01T00:00:00Z (devices.commissioned_at): stored but not \
             turned into energy intervals"
        );
    }
}
