//! The SG MQTT JSON path: a gateway's publish (status, log, error, measurements, counters,
//! relay state) to rows, with the reasons for whatever part of it was refused.

use chrono::{DateTime, Utc};
use sg_wire::message as wire;
use sg_wire::topic::{Port, SgTopic};
use sg_wire::SgMessage;

use super::{
    beyond_horizon, bump_seen, cut_issue, measurement_values, truncate, CounterDef, CounterReading,
    Ctx, DeviceAttrs, DeviceKey, DeviceKind, GatewayInfo, Hello, MeasurementRow, Normalizer,
    RelayStateRow, EXTERNAL_SOURCE,
};
use crate::ingest::clock::{self, CLOCK_FAULT};

/// Longest log/error/status text kept per event.
pub(super) const MAX_EVENT_TEXT: usize = 8 * 1024;

/// Longest gateway model, firmware and hardware version kept from a hello, in characters.
const MAX_HELLO_TEXT: usize = 64;

/// The device a message is about, when it was measured, and the time flags.
type Identified = (DeviceKey, DateTime<Utc>, i16);

impl Normalizer<'_> {
    pub(super) fn publish(&self, ctx: &mut Ctx<'_>, gw: &GatewayInfo) {
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
                if let Some(meter) = self.identify_meter(ctx, gw, port, &doc.header, &mut issues) {
                    Self::measurements(ctx, meter, &doc, &mut issues);
                }
                "measurements"
            }
            SgMessage::Counters(doc) => {
                let Some(port) = port_of(topic) else { return };
                if let Some(meter) = self.identify_meter(ctx, gw, port, &doc.header, &mut issues) {
                    self.counters(ctx, meter, &doc, &mut issues);
                }
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
    ) -> Option<Identified> {
        let attrs = attrs.map_err(|e| issues.push(e)).ok()?;
        let (ts, flags) = self.time(ctx, gw, local_time, issues);
        ctx.rows.add_device(&device, attrs);
        Some((device, ts, flags))
    }

    /// [`Self::identify`] for the meter on `port` that a measurements or counters document's
    /// header describes.
    fn identify_meter(
        &self,
        ctx: &mut Ctx<'_>,
        gw: &GatewayInfo,
        port: Port,
        header: &wire::Header,
        issues: &mut Vec<String>,
    ) -> Option<Identified> {
        self.identify(
            ctx,
            gw,
            DeviceKey::new(gw.id, DeviceKind::Meter, port),
            Self::header_attrs(header, issues),
            header.local_time.as_deref(),
            issues,
        )
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

    /// The wide row of a measurements document about `meter`.
    fn measurements(
        ctx: &mut Ctx<'_>,
        (device, ts, flags): Identified,
        doc: &wire::MeasurementsDoc,
        issues: &mut Vec<String>,
    ) {
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

    /// The readings (and register definitions) of a counters document about `meter`.
    fn counters(
        &self,
        ctx: &mut Ctx<'_>,
        (device, ts, flags): Identified,
        doc: &wire::CountersDoc,
        issues: &mut Vec<String>,
    ) {
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
