//! The rows a batch of records turns into: what the writer stores, table by table.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sg_wire::topic::Port;

use super::MEASUREMENT_COLUMNS;
use crate::ingest::record::IngestRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Meter,
    Relay,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Meter => "meter",
            Self::Relay => "relay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub gateway_id: i64,
    pub kind: DeviceKind,
    /// `ir` or `rs485`.
    pub port: &'static str,
    /// 0 for the IR port, else the RS485 settings slot.
    pub slot: i16,
}

impl DeviceKey {
    pub(super) fn new(gateway_id: i64, kind: DeviceKind, port: Port) -> Self {
        let (port, slot) = match port {
            Port::Ir => ("ir", 0),
            Port::Rs485(n) => ("rs485", i16::from(n)),
        };
        Self {
            gateway_id,
            kind,
            port,
            slot,
        }
    }
}

/// What a message says about its device. `None`: the message does not say (a counters
/// document carries no location, say), which leaves the stored value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAttrs {
    pub serial: String,
    pub model: Option<String>,
    pub modbus_addr: Option<i32>,
    pub phases: Option<i16>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub sg_description: Option<String>,
}

impl DeviceAttrs {
    /// Takes what `newer` says, keeps the rest.
    pub fn merge(&mut self, newer: &Self) {
        fn take<T: Clone>(old: &mut Option<T>, new: &Option<T>) {
            if new.is_some() {
                old.clone_from(new);
            }
        }
        self.serial.clone_from(&newer.serial);
        take(&mut self.model, &newer.model);
        take(&mut self.modbus_addr, &newer.modbus_addr);
        take(&mut self.phases, &newer.phases);
        take(&mut self.description, &newer.description);
        take(&mut self.location, &newer.location);
        take(&mut self.sg_description, &newer.sg_description);
    }

    /// Whether storing `self` over `known` would change nothing.
    pub fn changes_nothing(&self, known: &Self) -> bool {
        fn same<T: PartialEq>(new: &Option<T>, old: &Option<T>) -> bool {
            new.is_none() || new == old
        }
        self.serial == known.serial
            && same(&self.model, &known.model)
            && same(&self.modbus_addr, &known.modbus_addr)
            && same(&self.phases, &known.phases)
            && same(&self.description, &known.description)
            && same(&self.location, &known.location)
            && same(&self.sg_description, &known.sg_description)
    }
}

/// One measurements message, SI units; `values` follows [`MEASUREMENT_COLUMNS`].
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementRow {
    pub device: DeviceKey,
    /// Journal sequence of the record it came from (to attribute a conflict to it).
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub flags: i16,
    pub tariff: Option<i16>,
    pub values: [Option<f32>; MEASUREMENT_COLUMNS.len()],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDef {
    pub device: DeviceKey,
    pub name: String,
    pub idx: i16,
    pub resettable: bool,
    pub unit: &'static str,
    pub phase: Option<String>,
    pub tariffs: Vec<i16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterReading {
    pub device: DeviceKey,
    /// Journal sequence of the record it came from.
    pub seq: i64,
    pub name: String,
    pub ts: DateTime<Utc>,
    pub value_milli: i64,
    pub received_at: DateTime<Utc>,
    pub flags: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStateRow {
    pub device: DeviceKey,
    /// Journal sequence of the record it came from.
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub state: i16,
    pub received_at: DateTime<Utc>,
    pub flags: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub gateway_id: i64,
    pub kind: &'static str,
    pub received_at: DateTime<Utc>,
    pub body: String,
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectRow {
    pub received_at: DateTime<Utc>,
    pub source: String,
    pub topic: String,
    pub client: String,
    pub gateway_id: Option<i64>,
    pub reason: String,
    pub partial: bool,
    pub payload: Bytes,
    pub seq: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayUpdate {
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The newest session change in the batch: when, and whether a session is open after it.
    pub online: Option<(DateTime<Utc>, bool)>,
    pub hello: Option<Hello>,
    /// Skew observed on the newest message received (by receive time).
    pub skew: Option<(DateTime<Utc>, f64)>,
    pub clock_faults: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub at: DateTime<Utc>,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub hardware_version: Option<String>,
}

/// Everything one journal batch turns into.
#[derive(Debug, Default)]
pub struct Rows {
    pub devices: HashMap<DeviceKey, DeviceAttrs>,
    pub measurements: Vec<MeasurementRow>,
    pub counter_defs: HashMap<(DeviceKey, String), CounterDef>,
    pub counter_readings: Vec<CounterReading>,
    pub relay_states: Vec<RelayStateRow>,
    pub events: Vec<EventRow>,
    pub rejects: Vec<RejectRow>,
    pub gateways: HashMap<i64, GatewayUpdate>,
    /// Messages accepted in full or in part, by message kind, for metrics.
    pub accepted: HashMap<&'static str, u64>,
    /// Highest end-to-end receipt `seq` per gateway among the stored messages.
    pub receipts: crate::ingest::receipts::Seqs,
    /// The records that gave measurement, counter or relay rows, by journal sequence: a row
    /// that conflicts with a stored one becomes a reject carrying its record verbatim.
    pub records: HashMap<i64, IngestRecord>,
    /// The instance whose sessions this batch's connects and disconnects are (its journal's
    /// instance); `None` when unknown. Set by the ingest writer, not by normalising.
    pub session_instance: Option<String>,
}

impl Rows {
    /// Several messages of one batch may describe the same device: merge what they say.
    pub(in crate::ingest) fn add_device(&mut self, key: &DeviceKey, attrs: DeviceAttrs) {
        self.devices
            .entry(key.clone())
            .and_modify(|known| known.merge(&attrs))
            .or_insert(attrs);
    }

    /// Rows keyed on (device or counter, time), which a conflicting replay can collide with.
    pub(super) fn keyed(&self) -> usize {
        self.measurements.len() + self.counter_readings.len() + self.relay_states.len()
    }

    /// Rows that carry data (not rejects), to tell a partly accepted message from a refused one.
    pub(super) fn stored(&self) -> usize {
        self.measurements.len()
            + self.counter_readings.len()
            + self.relay_states.len()
            + self.events.len()
            + self.gateways.values().filter(|g| g.hello.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.stored() == 0 && self.rejects.is_empty() && self.gateways.is_empty()
    }
}
