//! From journal records to rows: pure code, no I/O, so every rule is unit-tested here and the
//! database writer only moves rows.
//!
//! A record becomes rows, a reject, or both (a partly valid message keeps its valid part and
//! records why the rest was refused). Nothing here can fail as a whole: hostile input becomes a
//! reject row with the verbatim payload.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use sg_wire::message as wire;
use sg_wire::topic::{Port, SgTopic, TopicLayout};
use sg_wire::SgMessage;

use super::clock::{self, BEYOND_HORIZON, CLOCK_FAULT};
use super::record::{IngestRecord, RecordKind};

/// What the normaliser needs to know about a registered gateway.
#[derive(Debug, Clone)]
pub struct GatewayInfo {
    pub id: i64,
    pub serial: String,
    pub layout: TopicLayout,
    pub zone: Tz,
}

/// Registered gateways, by serial and by publish base (the external broker gives no identity).
#[derive(Debug, Default, Clone)]
pub struct Directory {
    by_serial: HashMap<String, GatewayInfo>,
    by_base: HashMap<String, String>,
    commands: std::collections::HashSet<String>,
    by_id: HashMap<i64, String>,
}

impl Directory {
    pub fn new(gateways: impl IntoIterator<Item = GatewayInfo>) -> Self {
        let mut dir = Self::default();
        for gw in gateways {
            dir.by_base
                .insert(gw.layout.publish_base(), gw.serial.clone());
            dir.commands.insert(gw.layout.command_topic());
            dir.by_id.insert(gw.id, gw.serial.clone());
            dir.by_serial.insert(gw.serial.clone(), gw);
        }
        dir
    }

    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }

    pub fn by_id(&self, id: i64) -> Option<&GatewayInfo> {
        self.by_id
            .get(&id)
            .and_then(|serial| self.by_serial.get(serial))
    }

    pub fn by_serial(&self, serial: &str) -> Option<&GatewayInfo> {
        self.by_serial.get(serial)
    }

    /// The gateway whose publish base is a prefix of `topic` (at a `/` boundary).
    pub fn by_topic(&self, topic: &str) -> Option<&GatewayInfo> {
        topic
            .match_indices('/')
            .map(|(i, _)| &topic[..i])
            .find_map(|prefix| self.by_base.get(prefix))
            .and_then(|serial| self.by_serial.get(serial))
    }
}

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
    fn new(gateway_id: i64, kind: DeviceKind, port: Port) -> Self {
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

/// Column names of `measurements`, in the order of [`MeasurementRow::values`].
pub const MEASUREMENT_COLUMNS: [&str; 39] = [
    "frequency",
    "u1",
    "u2",
    "u3",
    "u12",
    "u23",
    "u31",
    "i1",
    "i2",
    "i3",
    "i_n",
    "p",
    "p1",
    "p2",
    "p3",
    "q",
    "q1",
    "q2",
    "q3",
    "s",
    "s1",
    "s2",
    "s3",
    "pf",
    "pf1",
    "pf2",
    "pf3",
    "pa",
    "pa1",
    "pa2",
    "pa3",
    "temperature",
    "thd_i1",
    "thd_i2",
    "thd_i3",
    "thd_u1",
    "thd_u2",
    "thd_u3",
    // Reserved position kept last so the array length documents the schema width.
    "_reserved",
];

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
    pub receipts: super::receipts::Seqs,
    /// The records that gave measurement, counter or relay rows, by journal sequence: a row
    /// that conflicts with a stored one becomes a reject carrying its record verbatim.
    pub records: HashMap<i64, IngestRecord>,
}

impl Rows {
    /// Several messages of one batch may describe the same device: merge what they say.
    pub(super) fn add_device(&mut self, key: &DeviceKey, attrs: DeviceAttrs) {
        self.devices
            .entry(key.clone())
            .and_modify(|known| known.merge(&attrs))
            .or_insert(attrs);
    }

    /// Rows keyed on (device or counter, time), which a conflicting replay can collide with.
    fn keyed(&self) -> usize {
        self.measurements.len() + self.counter_readings.len() + self.relay_states.len()
    }

    /// Rows that carry data (not rejects), to tell a partly accepted message from a refused one.
    fn stored(&self) -> usize {
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

/// `IngestRecord::source` of messages from an external broker.
pub const EXTERNAL_SOURCE: &str = "mqtt-external";

/// Longest log/error/status text kept per event.
const MAX_EVENT_TEXT: usize = 8 * 1024;

/// Longest gateway model, firmware and hardware version kept from a hello, in characters.
const MAX_HELLO_TEXT: usize = 64;

/// Default of `energy.backlog_horizon_days`.
pub const DEFAULT_BACKLOG_HORIZON_DAYS: u32 = 400;

pub struct Normalizer<'a> {
    pub directory: &'a Directory,
    pub clock_tolerance: Duration,
    /// Counter readings dated more than this before their receive time are stored flagged
    /// [`BEYOND_HORIZON`] (never turned into intervals) and reported in a partial reject.
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

    fn publish(&self, ctx: &mut Ctx<'_>, gw: &GatewayInfo) {
        let record = ctx.record;
        let topic = match gw.layout.parse_publish_topic(&record.topic) {
            Ok(topic) => topic,
            Err(e) => return ctx.reject(format!("topic {:?}: {e}", record.topic), false),
        };
        let message = match sg_wire::parse_message(topic, &record.payload) {
            Ok(message) => message,
            Err(e) => return ctx.reject(e.to_string(), false),
        };
        bump_seen(
            ctx.rows.gateways.entry(gw.id).or_default(),
            record.received_at,
        );
        let mut issues = Vec::new();
        let stored_before = ctx.rows.stored();
        let seq = match &message {
            SgMessage::Measurements(doc) => doc.header.seq,
            SgMessage::Counters(doc) => doc.header.seq,
            SgMessage::Bicom(doc) => doc.bicom.seq,
            _ => None,
        };
        let kind = match message {
            SgMessage::Status(doc) => {
                self.status(ctx, gw, doc, &mut issues);
                "status"
            }
            SgMessage::Log(text) => {
                ctx.event(gw.id, "log", bounded("log line", text, &mut issues));
                "log"
            }
            SgMessage::Error(text) => {
                ctx.event(gw.id, "error", bounded("error line", text, &mut issues));
                "error"
            }
            SgMessage::Measurements(doc) => {
                let Some(port) = port_of(topic) else { return };
                self.measurements(ctx, gw, port, &doc, &mut issues);
                "measurements"
            }
            SgMessage::Counters(doc) => {
                let Some(port) = port_of(topic) else { return };
                self.counters(ctx, gw, port, &doc, &mut issues);
                "counters"
            }
            SgMessage::Bicom(doc) => {
                let Some(port) = port_of(topic) else { return };
                self.bicom(ctx, gw, port, &doc, &mut issues);
                "bicom"
            }
        };
        let stored = ctx.rows.stored() > stored_before;
        if stored {
            *ctx.rows.accepted.entry(kind).or_default() += 1;
            if let Some(seq) = seq {
                let max = ctx.rows.receipts.entry(gw.id).or_default();
                *max = (*max).max(seq);
            }
        }
        if !issues.is_empty() {
            ctx.reject(issues.join("; "), stored);
        }
    }

    fn status(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        doc: wire::StatusDoc,
        issues: &mut Vec<String>,
    ) {
        let body = String::from_utf8_lossy(&ctx.record.payload).into_owned();
        match doc {
            wire::StatusDoc::Hello(hello) => {
                if hello.serial_number != gw.serial {
                    issues.push(format!(
                        "hello names serial {:?} but comes from gateway {:?}",
                        truncate(&hello.serial_number, 64),
                        gw.serial
                    ));
                }
                let update = ctx.rows.gateways.entry(gw.id).or_default();
                // Through an external broker Headend sees no sessions: a hello is the sign of life.
                if ctx.record.source == EXTERNAL_SOURCE {
                    update.online = Some((ctx.record.received_at, true));
                }
                let model = hello
                    .model_type
                    .as_deref()
                    .map(|s| clean_text("hello model_type", s, MAX_HELLO_TEXT, issues));
                let firmware_version = hello
                    .sw_ver
                    .as_ref()
                    .map(|v| clean_text("hello sw_ver", &v.to_string(), MAX_HELLO_TEXT, issues));
                let hardware_version = hello
                    .hw_ver
                    .as_ref()
                    .map(|v| clean_text("hello hw_ver", &v.to_string(), MAX_HELLO_TEXT, issues));
                update.hello = Some(Hello {
                    at: ctx.record.received_at,
                    model,
                    firmware_version,
                    hardware_version,
                });
                ctx.event(gw.id, "hello", bounded("hello", body, issues));
            }
            wire::StatusDoc::Other(_) => {
                ctx.event(gw.id, "status", bounded("status", body, issues));
            }
        }
    }

    fn header_attrs(
        header: &wire::Header,
        issues: &mut Vec<String>,
    ) -> Result<DeviceAttrs, String> {
        let clean = header
            .sanitized()
            .map_err(|e| match &header.serial_number {
                Some(serial) if !matches!(e, wire::HeaderError::MissingSerial) => {
                    format!("{e} (got {:?})", truncate(serial, 40))
                }
                _ => e.to_string(),
            })?;
        Ok(Self::attrs(
            clean.serial_number,
            clean.labels,
            header.modbus_addr,
            header.phases,
            issues,
        ))
    }

    fn attrs(
        serial: String,
        labels: wire::Labels,
        modbus_addr: Option<u16>,
        phases: Option<u8>,
        issues: &mut Vec<String>,
    ) -> DeviceAttrs {
        issues.extend(labels.issues.iter().map(ToString::to_string));
        DeviceAttrs {
            serial,
            model: labels.model,
            modbus_addr: modbus_addr.map(i32::from),
            phases: phases.map(i16::from),
            description: labels.description,
            location: labels.location,
            sg_description: labels.sg_description,
        }
    }

    /// The device a message is about and when it was measured; `None` (with the reason in
    /// `issues`) when the device cannot be identified.
    fn identify(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        device: DeviceKey,
        attrs: Result<DeviceAttrs, String>,
        local_time: Option<&str>,
        issues: &mut Vec<String>,
    ) -> Option<(DeviceKey, DateTime<Utc>, i16)> {
        let attrs = attrs.map_err(|e| issues.push(e)).ok()?;
        let (ts, flags) = self.time(ctx, gw, local_time, issues);
        ctx.rows.add_device(&device, attrs);
        Some((device, ts, flags))
    }

    fn time(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        local_time: Option<&str>,
        issues: &mut Vec<String>,
    ) -> (DateTime<Utc>, i16) {
        let received_at = ctx.record.received_at;
        let resolved = clock::resolve(local_time, gw.zone, received_at, self.clock_tolerance);
        let update = ctx.rows.gateways.entry(gw.id).or_default();
        if let Some(skew) = resolved.skew_s {
            if update.skew.is_none_or(|(at, _)| at <= received_at) {
                update.skew = Some((received_at, skew));
            }
        }
        if resolved.flags & CLOCK_FAULT != 0 {
            update.clock_faults += 1;
        }
        if let Some(fault) = resolved.fault {
            issues.push(format!("clock fault, receive time used: {fault}"));
        }
        (resolved.ts, resolved.flags)
    }

    fn measurements(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        port: Port,
        doc: &wire::MeasurementsDoc,
        issues: &mut Vec<String>,
    ) {
        let Some((device, ts, flags)) = self.identify(
            ctx,
            gw,
            DeviceKey::new(gw.id, DeviceKind::Meter, port),
            Self::header_attrs(&doc.header, issues),
            doc.header.local_time.as_deref(),
            issues,
        ) else {
            return;
        };
        let (m, field_issues) = wire::normalize_measurements(doc);
        issues.extend(field_issues.iter().map(ToString::to_string));
        let values = measurement_values(&m);
        ctx.rows.measurements.push(MeasurementRow {
            device,
            seq: ctx.seq,
            ts,
            received_at: ctx.record.received_at,
            flags,
            tariff: m.tariff,
            values,
        });
    }

    fn counters(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        port: Port,
        doc: &wire::CountersDoc,
        issues: &mut Vec<String>,
    ) {
        let Some((device, ts, flags)) = self.identify(
            ctx,
            gw,
            DeviceKey::new(gw.id, DeviceKind::Meter, port),
            Self::header_attrs(&doc.header, issues),
            doc.header.local_time.as_deref(),
            issues,
        ) else {
            return;
        };
        let (counters, field_issues) = wire::normalize_counters(doc);
        issues.extend(field_issues.iter().map(ToString::to_string));
        let flags = flags
            | beyond_horizon(
                ts,
                ctx.record.received_at,
                self.backlog_horizon,
                !counters.is_empty(),
                issues,
            );
        for c in counters {
            ctx.rows.counter_readings.push(CounterReading {
                device: device.clone(),
                seq: ctx.seq,
                name: c.name.clone(),
                ts,
                value_milli: c.value_milli,
                received_at: ctx.record.received_at,
                flags,
            });
            ctx.rows.counter_defs.insert(
                (device.clone(), c.name.clone()),
                CounterDef {
                    device: device.clone(),
                    idx: i16::from(c.index),
                    resettable: c.resettable,
                    unit: c.unit.symbol(),
                    phase: c.phase,
                    tariffs: c.tariffs.into_iter().map(i16::from).collect(),
                    name: c.name,
                },
            );
        }
    }

    fn bicom(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        port: Port,
        doc: &wire::BicomDoc,
        issues: &mut Vec<String>,
    ) {
        let attrs = doc
            .bicom
            .serial()
            .map(|serial| {
                Self::attrs(
                    serial.unwrap_or_default().to_owned(),
                    doc.bicom.labels(),
                    doc.bicom.modbus_addr,
                    None,
                    issues,
                )
            })
            .map_err(|e| {
                let serial = doc.bicom.serial_number.as_deref().unwrap_or_default();
                format!("{e} (got {:?})", truncate(serial, 40))
            });
        let Some((device, ts, flags)) = self.identify(
            ctx,
            gw,
            DeviceKey::new(gw.id, DeviceKind::Relay, port),
            attrs,
            doc.bicom.local_time.as_deref(),
            issues,
        ) else {
            return;
        };
        let state = match doc.bicom.state {
            1 => 1,
            0 => 0,
            -1 => -1,
            other => {
                issues.push(format!(
                    "relay state {other} is not 1, 0 or -1; stored as unknown"
                ));
                -1
            }
        };
        ctx.rows.relay_states.push(RelayStateRow {
            device,
            seq: ctx.seq,
            ts,
            state,
            received_at: ctx.record.received_at,
            flags,
        });
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

/// Normalised measurements as the `measurements` row's values, in the order of
/// [`MEASUREMENT_COLUMNS`] (shared by every ingest path that carries SG measurements).
pub(super) fn measurement_values(
    m: &wire::Measurements,
) -> [Option<f32>; MEASUREMENT_COLUMNS.len()] {
    let v = |x: Option<f64>| x.map(|x| x as f32);
    [
        v(m.frequency_hz),
        v(m.u1),
        v(m.u2),
        v(m.u3),
        v(m.u12),
        v(m.u23),
        v(m.u31),
        v(m.i1),
        v(m.i2),
        v(m.i3),
        v(m.i_n),
        v(m.p_total),
        v(m.p1),
        v(m.p2),
        v(m.p3),
        v(m.q_total),
        v(m.q1),
        v(m.q2),
        v(m.q3),
        v(m.s_total),
        v(m.s1),
        v(m.s2),
        v(m.s3),
        v(m.pf_total),
        v(m.pf1),
        v(m.pf2),
        v(m.pf3),
        v(m.pa_total),
        v(m.pa1),
        v(m.pa2),
        v(m.pa3),
        v(m.temperature_c),
        v(m.thd_i1),
        v(m.thd_i2),
        v(m.thd_i3),
        v(m.thd_u1),
        v(m.thd_u2),
        v(m.thd_u3),
        None,
    ]
}

/// [`BEYOND_HORIZON`] when counter readings dated `ts` lie more than `horizon` before their
/// receive time (else 0), with the reason in `issues` when `any` reading is concerned.
///
/// Decided from the record alone (its receive time, not the clock of the writer), so a replay
/// flags exactly the same readings. Such a reading is kept (it is what the meter said) but the
/// profile worker never turns it into intervals: a reading dated 1900 would otherwise make the
/// engine fill 126 years of quarter-hours.
pub(super) fn beyond_horizon(
    ts: DateTime<Utc>,
    received_at: DateTime<Utc>,
    horizon: Duration,
    any: bool,
    issues: &mut Vec<String>,
) -> i16 {
    let Some(limit) = received_at.checked_sub_signed(horizon) else {
        return 0;
    };
    if ts >= limit {
        return 0;
    }
    if any {
        issues.push(format!(
            "counter readings dated {} are more than {} days before the receive time {} \
             (energy.backlog_horizon_days): stored with flag {BEYOND_HORIZON} and not turned \
             into energy intervals",
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            horizon.num_days(),
            received_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    BEYOND_HORIZON
}

pub(super) fn bump_seen(update: &mut GatewayUpdate, at: DateTime<Utc>) {
    if update.last_seen_at.is_none_or(|seen| seen < at) {
        update.last_seen_at = Some(at);
    }
}

fn port_of(topic: SgTopic) -> Option<Port> {
    match topic {
        SgTopic::Measurements(p) | SgTopic::Counters(p) | SgTopic::Bicom(p) => Some(p),
        SgTopic::Status | SgTopic::Log | SgTopic::Error => None,
    }
}

/// `text` bounded to [`MAX_EVENT_TEXT`]; a cut is recorded in `issues` (the message then gets
/// a partial reject, which keeps the whole payload verbatim).
fn bounded(what: &str, text: String, issues: &mut Vec<String>) -> String {
    if text.len() <= MAX_EVENT_TEXT {
        return text;
    }
    issues.push(cut_issue(what, text.len(), MAX_EVENT_TEXT));
    truncate(&text, MAX_EVENT_TEXT)
}

/// Text from a gateway shown to people: control characters removed, length bounded; both
/// recorded in `issues`.
fn clean_text(field: &str, s: &str, max: usize, issues: &mut Vec<String>) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).collect();
    if cleaned.len() != s.len() {
        issues.push(format!("{field}: control characters removed"));
    }
    if cleaned.len() > max {
        issues.push(cut_issue(field, cleaned.len(), max));
    }
    truncate(&cleaned, max)
}

/// The reason recorded when a text is cut to fit: the stored value is the cut one, the
/// original is the reject's verbatim payload.
pub(super) fn cut_issue(field: &str, len: usize, max: usize) -> String {
    format!(
        "{field}: cut from {len} to {max} bytes to fit (stored cut; the original is this \
         reject's payload)"
    )
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Bytes {
        let path = format!(
            "{}/../tests/fixtures/sg-mqtt/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    fn directory() -> Directory {
        Directory::new([
            GatewayInfo {
                id: 1,
                serial: "SG1".into(),
                layout: TopicLayout::default_for("SG1").unwrap(),
                zone: chrono_tz::Europe::Ljubljana,
            },
            GatewayInfo {
                id: 2,
                serial: "SG2".into(),
                layout: TopicLayout::new("site/x/SG2", "up", "down").unwrap(),
                zone: chrono_tz::UTC,
            },
        ])
    }

    fn record(kind: RecordKind, client: &str, topic: &str, payload: Bytes) -> IngestRecord {
        IngestRecord {
            kind,
            received_at: "2026-11-21T10:00:00Z".parse().unwrap(),
            source: "mqtt".into(),
            client: client.into(),
            topic: topic.into(),
            payload,
            reason: String::new(),
        }
    }

    fn run(records: Vec<IngestRecord>) -> Rows {
        let dir = directory();
        let normalizer = Normalizer {
            directory: &dir,
            clock_tolerance: Duration::seconds(300),
            backlog_horizon: Duration::days(i64::from(DEFAULT_BACKLOG_HORIZON_DAYS)),
        };
        let mut rows = Rows::default();
        for (seq, r) in records.into_iter().enumerate() {
            normalizer.push(&mut rows, seq as i64 + 1, r);
        }
        rows
    }

    #[test]
    fn gateways_are_found_by_serial_or_by_publish_base() {
        let dir = directory();
        assert_eq!(dir.by_topic("site/x/SG2/up/status").map(|g| g.id), Some(2));
        assert_eq!(
            dir.by_topic("sg/SG1/pub/measurements/ir").map(|g| g.id),
            Some(1)
        );
        assert!(dir.by_topic("sg/SG9/pub/status").is_none());
        assert!(dir.by_topic("site/x/SG2/upx/status").is_none());
    }

    #[test]
    fn a_measurement_becomes_one_wide_row_in_si_units() {
        let rows = run(vec![record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/measurements/ir",
            fixture("measurements-ir.json"),
        )]);
        assert!(rows.rejects.is_empty(), "{:?}", rows.rejects);
        let m = &rows.measurements[0];
        let col =
            |name: &str| m.values[MEASUREMENT_COLUMNS.iter().position(|c| *c == name).unwrap()];
        assert_eq!(col("p"), Some(2815.0));
        assert_eq!(col("pf2"), Some(-0.8984));
        assert_eq!(col("u12"), None);
        assert_eq!(m.tariff, Some(1));
        assert_eq!(m.ts.to_rfc3339(), "2020-04-14T15:45:30+00:00");
        let device = rows.devices.get(&m.device).unwrap();
        assert_eq!(device.serial, "X0000124");
        assert_eq!(device.location.as_deref(), Some("Panel B, floor 2"));
        assert_eq!(rows.accepted.get("measurements"), Some(&1));
    }

    #[test]
    fn refused_parts_are_a_partial_reject_and_refused_wholes_are_not() {
        let rows = run(vec![
            record(
                RecordKind::Publish,
                "SG1",
                "sg/SG1/pub/counters/ir",
                fixture("counters-ir-manual.json"),
            ),
            record(
                RecordKind::Publish,
                "SG1",
                "sg/SG1/pub/measurements/ir",
                Bytes::from_static(
                    br#"{"header":{"local_time":"01.01.2026 00:00:00"},"measurements":{}}"#,
                ),
            ),
            record(
                RecordKind::Publish,
                "SG1",
                "sg/SG1/pub/status",
                Bytes::from_static(b"{"),
            ),
        ]);
        assert_eq!(rows.counter_readings.len(), 16);
        assert_eq!(rows.rejects.len(), 3);
        assert!(rows.rejects[0].partial && rows.rejects[0].reason.contains("counter13"));
        assert!(!rows.rejects[1].partial, "no serial: nothing stored");
        assert!(
            rows.rejects[1].reason.contains("serial"),
            "{}",
            rows.rejects[1].reason
        );
        assert!(!rows.rejects[2].partial);
        assert_eq!(rows.rejects[2].seq, 3);
        assert_eq!(rows.rejects[2].payload, Bytes::from_static(b"{"));
    }

    #[test]
    fn unknown_gateways_and_command_echoes() {
        let mut external = record(
            RecordKind::Publish,
            "",
            "sg/SG9/pub/status",
            fixture("status-hello.json"),
        );
        external.source = EXTERNAL_SOURCE.into();
        let mut echo = external.clone();
        echo.topic = "site/x/SG2/down".into();
        let mut hello = external.clone();
        hello.topic = "site/x/SG2/up/status".into();
        let rows = run(vec![external, echo, hello]);
        assert_eq!(rows.rejects.len(), 2, "{:?}", rows.rejects);
        assert!(rows.rejects[0].reason.contains("unknown gateway"));
        // The hello names SG000017 but comes from SG2: stored, and the mismatch recorded.
        assert!(rows.rejects[1].partial && rows.rejects[1].reason.contains("SG000017"));
        let update = &rows.gateways[&2];
        assert_eq!(
            update.hello.as_ref().unwrap().firmware_version.as_deref(),
            Some("0.51")
        );
        assert_eq!(
            update.online.map(|(_, o)| o),
            Some(true),
            "external hello = online"
        );
    }

    #[test]
    fn sessions_set_online_state_newest_first() {
        let mut open = record(
            RecordKind::Connect,
            "SG1",
            "",
            Bytes::from_static(b"opened"),
        );
        open.reason = "1".into();
        let mut second_closed = record(
            RecordKind::Disconnect,
            "SG1",
            "",
            Bytes::from_static(b"closed"),
        );
        second_closed.received_at += Duration::seconds(1);
        second_closed.reason = "1".into();
        let rows = run(vec![open.clone(), second_closed]);
        assert_eq!(
            rows.gateways[&1].online.map(|(_, o)| o),
            Some(true),
            "one link still open"
        );
        let mut closed = record(
            RecordKind::Disconnect,
            "SG1",
            "",
            Bytes::from_static(b"closed"),
        );
        closed.received_at += Duration::seconds(2);
        closed.reason = "0".into();
        // Out of order within a batch: the newest change wins.
        let rows = run(vec![closed, open]);
        assert_eq!(rows.gateways[&1].online.map(|(_, o)| o), Some(false));
        assert_eq!(
            rows.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            ["disconnect", "connect"]
        );
    }

    #[test]
    fn hostile_serials_refuse_the_message_and_name_the_field() {
        let doc = |serial: &str| {
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({
                    "header": { "serial_number": serial, "local_time": "21.11.2026 09:00:00" },
                    "measurements": { "U1": "230 V" }
                }))
                .unwrap(),
            )
        };
        let hostile = ["X1<b>", "../x", "X 1", "-x", ".", "a\u{202E}b"];
        let rows = run(hostile
            .iter()
            .map(|s| {
                record(
                    RecordKind::Publish,
                    "SG1",
                    "sg/SG1/pub/measurements/ir",
                    doc(s),
                )
            })
            .collect());
        assert!(rows.measurements.is_empty() && rows.devices.is_empty());
        assert_eq!(rows.rejects.len(), hostile.len());
        for (reject, serial) in rows.rejects.iter().zip(hostile) {
            assert!(!reject.partial);
            assert!(
                reject.reason.contains("`serial_number`"),
                "{}",
                reject.reason
            );
            assert!(
                reject.reason.contains(&format!("{serial:?}")),
                "{}",
                reject.reason
            );
        }
        let rows = run(vec![record(
            RecordKind::Publish,
            "SG1",
            "sg/SG1/pub/measurements/ir",
            doc("X0000124"),
        )]);
        assert!(rows.rejects.is_empty(), "{:?}", rows.rejects);
    }

    #[test]
    fn counter_readings_beyond_the_horizon_are_flagged_and_reported() {
        let doc = |local_time: &str| {
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({
                    "header": { "serial_number": "X1", "local_time": local_time },
                    "counters": { "counter1nr": "1 kWh" }
                }))
                .unwrap(),
            )
        };
        let topic = "sg/SG1/pub/counters/ir";
        let rows = run(vec![
            record(
                RecordKind::Publish,
                "SG1",
                topic,
                doc("01.01.1900 00:00:00"),
            ),
            record(
                RecordKind::Publish,
                "SG1",
                topic,
                doc("21.11.2026 09:00:00"),
            ),
            // 399 days before the receive time: a backlog, accounted.
            record(
                RecordKind::Publish,
                "SG1",
                topic,
                doc("18.10.2025 12:00:00"),
            ),
        ]);
        let flags: Vec<i16> = rows.counter_readings.iter().map(|c| c.flags).collect();
        assert_eq!(flags, [BEYOND_HORIZON, 0, 0]);
        assert_eq!(rows.rejects.len(), 1);
        assert!(rows.rejects[0].partial);
        assert_eq!(rows.rejects[0].seq, 1);
        assert!(
            rows.rejects[0].reason.contains("backlog_horizon_days"),
            "{}",
            rows.rejects[0].reason
        );
        // Every record that gave keyed rows is kept for conflict rejects.
        assert_eq!(rows.records.len(), 3);
    }

    #[test]
    fn text_cut_to_fit_is_recorded() {
        let long = "x".repeat(MAX_EVENT_TEXT + 10);
        let hello = serde_json::json!({
            "hello": "hello world", "serial number": "SG1", "model_type": "M".repeat(70)
        });
        let rows = run(vec![
            record(
                RecordKind::Publish,
                "SG1",
                "sg/SG1/pub/log",
                Bytes::from(long.clone()),
            ),
            record(
                RecordKind::Publish,
                "SG1",
                "sg/SG1/pub/status",
                Bytes::from(serde_json::to_vec(&hello).unwrap()),
            ),
        ]);
        assert_eq!(rows.events[0].body.len(), MAX_EVENT_TEXT);
        assert_eq!(rows.rejects.len(), 2, "{:?}", rows.rejects);
        assert!(rows.rejects[0].partial);
        assert!(rows.rejects[0]
            .reason
            .contains("log line: cut from 8202 to 8192 bytes"));
        assert_eq!(rows.rejects[0].payload, Bytes::from(long));
        assert!(rows.rejects[1]
            .reason
            .contains("hello model_type: cut from 70 to 64"));
        let model = rows.gateways[&1].hello.as_ref().unwrap().model.clone();
        assert_eq!(model, Some("M".repeat(64)));
    }

    #[test]
    fn violations_are_rejects_attributed_to_their_gateway() {
        let mut v = record(
            RecordKind::Violation,
            "SG1",
            "sg/SG2/pub/status",
            Bytes::from_static(b"{}"),
        );
        v.reason = "publish refused".into();
        let rows = run(vec![v]);
        assert_eq!(rows.rejects[0].gateway_id, Some(1));
        assert_eq!(rows.rejects[0].reason, "publish refused");
    }
}
