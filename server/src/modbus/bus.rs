//! One converter's bus: the task that owns its TCP link and polls the devices behind it.
//!
//! A converter forwards to one RS485 segment, so the discipline is the bus's: one request at
//! a time, a gap after every frame, a timeout per request. Each device has its own interval;
//! the earliest due is polled next (requests from the API and the relay dispatcher go
//! first). A device that does not answer is backed off exponentially (capped), so a dead unit
//! costs at most one timeout per backoff period and never delays the others beyond that;
//! retries are spent only on devices that answered their previous poll. After a timeout the
//! link is reopened, so a late answer cannot be taken for the next request's.
//!
//! Results leave through a queue to a writer task (journal appends and communication state),
//! so a slow fsync or database never holds the bus.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use headend_modbus_map::{BlockRead, Function, RegisterMap, Write};
use sg_wire::command::RelayAction;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_util::sync::CancellationToken;

use super::config::ModbusConfig;
use super::store::{self, BusConverter, BusDevice};
use super::{BusRequest, Maps};
use crate::infra::metrics::Metrics;
use crate::ingest::normalize_polled::{CommError, PolledCounter, Snapshot};
use crate::ingest::record::{IngestRecord, RecordKind};
use crate::ingest::IngestSink;

/// `IngestRecord::source` of polled records.
pub const SOURCE: &str = "modbus";

/// Communication state of a healthy device is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct BusSettings {
    pub timeout: Duration,
    pub gap: Duration,
    pub retries: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl BusSettings {
    pub fn from_config(c: &ModbusConfig, conv: &BusConverter) -> Self {
        let ms = |v: Option<i32>, default: u64| {
            Duration::from_millis(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        Self {
            timeout: ms(conv.timeout_ms, c.timeout_ms),
            gap: ms(conv.gap_ms, c.gap_ms),
            retries: conv
                .retries
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(c.retries),
            backoff_min: Duration::from_millis(c.backoff_min_ms),
            backoff_max: Duration::from_millis(c.backoff_max_ms),
        }
    }

    /// Backoff after `failures` consecutive failures (1 = the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .backoff_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.backoff_max)
    }
}

/// What a Modbus exception code means, for people.
pub fn exception_meaning(code: u8) -> &'static str {
    match code {
        0x01 => "function not supported",
        0x02 => "register address out of range",
        0x03 => "value not allowed",
        0x04 => "execution error in the device",
        0x05 => "acknowledged, still processing",
        0x06 => "device busy",
        0x0A => "gateway path unavailable (the converter has no route to this unit)",
        0x0B => "gateway target device failed to respond (no answer on the RS485 bus)",
        _ => "unknown exception",
    }
}

/// Gateway exceptions say the device is unreachable: a communication failure, not an answer.
fn is_gateway_exception(code: u8) -> bool {
    matches!(code, 0x0A | 0x0B)
}

#[derive(Debug)]
enum ReqError {
    /// The device answered with an exception.
    Exception(u8),
    /// No (complete) answer within the timeout.
    Timeout,
    /// An answer that is not the answer: short, another unit, another function.
    Rejected(String),
    /// The TCP link to the converter failed.
    Link(String),
}

impl ReqError {
    fn describe(&self, timeout: Duration) -> String {
        match self {
            Self::Exception(code) => format!("exception {code:02X}: {}", exception_meaning(*code)),
            Self::Timeout => format!("no reply within {} ms", timeout.as_millis()),
            Self::Rejected(why) => format!("reply rejected: {why}"),
            Self::Link(why) => format!("converter link failed: {why}"),
        }
    }
}

struct Unit {
    /// `polled_devices.id`.
    id: i64,
    unit: u8,
    model: String,
    serial: String,
    map: Option<RegisterMap>,
    plan: Vec<BlockRead>,
    interval: Duration,
    next_due: Instant,
    failures: u32,
    touched_at: Option<Instant>,
    /// Issues of the previous poll: the same ones are not journaled again each poll.
    last_issues: Vec<String>,
}

enum Effect {
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

enum Poll {
    /// The device answered (possibly with exceptions for some blocks).
    Answered,
    /// The device did not answer properly: backed off.
    Failed,
    /// The link to the converter failed: nobody is blamed.
    LinkDown,
}

pub struct Bus {
    conv: BusConverter,
    units: Vec<Unit>,
    settings: BusSettings,
    pool: PgPool,
    sink: IngestSink,
    metrics: Arc<Metrics>,
    link: Option<Context>,
    online: bool,
    last_frame: Option<Instant>,
    effects: Option<mpsc::Sender<Effect>>,
}

impl Bus {
    pub fn new(
        conv: BusConverter,
        devices: &[BusDevice],
        maps: &Maps,
        settings: BusSettings,
        pool: PgPool,
        sink: IngestSink,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = Instant::now();
        let units = devices
            .iter()
            .filter_map(|d| {
                let unit = u8::try_from(d.unit).ok()?;
                let map = maps.get(&d.model).cloned();
                if map.is_none() {
                    tracing::error!(converter = %conv.serial, unit, model = %d.model,
                        "no register map of this model is loaded; the device is not polled");
                }
                let plan = map.as_ref().map(RegisterMap::plan).unwrap_or_default();
                Some(Unit {
                    id: d.id,
                    unit,
                    model: d.model.clone(),
                    serial: d.serial.clone(),
                    map,
                    plan,
                    interval: Duration::from_millis(
                        u64::try_from(d.poll_interval_ms).unwrap_or(10_000),
                    ),
                    next_due: now,
                    failures: 0,
                    touched_at: None,
                    last_issues: Vec::new(),
                })
            })
            .collect();
        Self {
            conv,
            units,
            settings,
            pool,
            sink,
            metrics,
            link: None,
            online: false,
            last_frame: None,
            effects: None,
        }
    }

    #[tracing::instrument(name = "modbus_bus", skip_all, fields(converter = %self.conv.serial))]
    pub async fn run(mut self, mut requests: mpsc::Receiver<BusRequest>, stop: CancellationToken) {
        let (tx, rx) = mpsc::channel(1024);
        self.effects = Some(tx);
        let writer = tokio::spawn(write_effects(
            self.pool.clone(),
            self.sink.clone(),
            self.conv.clone(),
            rx,
        ));
        let mut link_backoff = self.settings.backoff_min;
        'bus: loop {
            if stop.is_cancelled() {
                break;
            }
            if self.link.is_none() {
                match self.connect().await {
                    Ok(()) => {
                        link_backoff = self.settings.backoff_min;
                        if !self.online {
                            self.online = true;
                            tracing::info!(host = %self.conv.host, port = self.conv.port, "converter link up");
                            self.session(RecordKind::Connect).await;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(host = %self.conv.host, port = self.conv.port, %error,
                            retry_in_ms = link_backoff.as_millis() as u64, "converter unreachable");
                        self.effect(Effect::LinkFailed {
                            at: Utc::now(),
                            error: error.clone(),
                        })
                        .await;
                        if self.online {
                            self.online = false;
                            self.session(RecordKind::Disconnect).await;
                        }
                        let until = Instant::now() + link_backoff;
                        loop {
                            tokio::select! {
                                () = stop.cancelled() => break 'bus,
                                () = tokio::time::sleep_until(until) => break,
                                request = requests.recv() => match request {
                                    Some(r) => refuse(r, &format!("converter unreachable: {error}")),
                                    None => break 'bus,
                                },
                            }
                        }
                        link_backoff = (link_backoff * 2).min(self.settings.backoff_max);
                        continue;
                    }
                }
            }
            let next = self
                .units
                .iter()
                .enumerate()
                .filter(|(_, u)| u.map.is_some())
                .min_by_key(|(_, u)| u.next_due)
                .map(|(i, u)| (i, u.next_due));
            // A busy bus goes straight on to the next due device (a timer would add up to a
            // millisecond per request); requests and the stop signal still come first.
            if let Some((i, _)) = next.filter(|(_, at)| *at <= Instant::now()) {
                if stop.is_cancelled() {
                    break;
                }
                match requests.try_recv() {
                    Ok(r) => self.request(r).await,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.poll(i).await;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
                continue;
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                request = requests.recv() => match request {
                    Some(r) => self.request(r).await,
                    None => break,
                },
                () = sleep_until(next.map(|n| n.1)) => {
                    if let Some((i, _)) = next {
                        self.poll(i).await;
                    }
                }
            }
        }
        if self.online {
            self.session(RecordKind::Disconnect).await;
        }
        if let Some(link) = self.link.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(1), link.disconnect()).await;
        }
        // Closing the queue ends the writer once it has written everything.
        drop(self.effects.take());
        if tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .is_err()
        {
            tracing::warn!("converter results not all written at stop");
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let limit = self.settings.timeout.max(Duration::from_secs(2));
        let port = u16::try_from(self.conv.port).map_err(|_| "bad port".to_owned())?;
        let stream = tokio::time::timeout(
            limit,
            tokio::net::TcpStream::connect((self.conv.host.as_str(), port)),
        )
        .await
        .map_err(|_| format!("no TCP connection within {} ms", limit.as_millis()))?
        .map_err(|e| format!("TCP connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        self.link = Some(tokio_modbus::client::tcp::attach(stream));
        self.last_frame = None;
        Ok(())
    }

    async fn session(&mut self, kind: RecordKind) {
        let open = kind == RecordKind::Connect;
        let record = IngestRecord {
            kind,
            received_at: Utc::now(),
            source: SOURCE.into(),
            client: self.conv.serial.clone(),
            topic: String::new(),
            payload: format!(
                "Modbus TCP link to {}:{} {}",
                self.conv.host,
                self.conv.port,
                if open { "up" } else { "down" }
            )
            .into_bytes()
            .into(),
            reason: if open { "1" } else { "0" }.into(),
        };
        self.effect(Effect::Append(record)).await;
    }

    async fn effect(&mut self, effect: Effect) {
        if let Some(tx) = &self.effects {
            // Waits when the writer is behind: the bus slows down rather than losing results.
            let _ = tx.send(effect).await;
        }
    }

    /// One request, alone on the bus: after the gap, within the timeout.
    async fn call(&mut self, unit: u8, request: Request<'static>) -> Result<Response, ReqError> {
        if self.link.is_none() {
            self.connect().await.map_err(ReqError::Link)?;
        }
        if let Some(last) = self.last_frame {
            // A timer costs up to a millisecond of its own: none when the gap has passed.
            let quiet_until = last + self.settings.gap;
            if quiet_until > Instant::now() {
                tokio::time::sleep_until(quiet_until).await;
            }
        }
        let Some(link) = self.link.as_mut() else {
            return Err(ReqError::Link("not connected".into()));
        };
        link.set_slave(Slave(unit));
        let outcome = tokio::time::timeout(self.settings.timeout, link.call(request)).await;
        self.last_frame = Some(Instant::now());
        match outcome {
            Err(_) => {
                // A late answer would be read as the next request's: start a fresh link.
                self.link = None;
                Err(ReqError::Timeout)
            }
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(exception))) => Err(ReqError::Exception(exception_code(exception))),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                self.link = None;
                Err(ReqError::Rejected(protocol_reason(&e)))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                self.link = None;
                // A frame the codec cannot parse (a short or malformed reply) is the device's
                // fault, not the link's.
                if e.kind() == std::io::ErrorKind::InvalidData {
                    Err(ReqError::Rejected(format!("malformed reply: {e}")))
                } else {
                    Err(ReqError::Link(e.to_string()))
                }
            }
        }
    }

    /// A request, retried `retries` times when it timed out or was rejected.
    async fn call_with_retries(
        &mut self,
        unit: u8,
        request: Request<'static>,
        retries: u32,
    ) -> Result<Response, ReqError> {
        let mut attempt = 0;
        loop {
            match self.call(unit, request.clone()).await {
                Err(ReqError::Timeout | ReqError::Rejected(_)) if attempt < retries => {
                    attempt += 1;
                    tokio::time::sleep(self.settings.gap * 2 * attempt).await;
                }
                other => return other,
            }
        }
    }

    async fn read(
        &mut self,
        unit: u8,
        block: BlockRead,
        retries: u32,
    ) -> Result<Vec<u16>, ReqError> {
        let request = match block.function {
            Function::ReadHolding => Request::ReadHoldingRegisters(block.start, block.count),
            Function::ReadInput => Request::ReadInputRegisters(block.start, block.count),
        };
        let words = match self.call_with_retries(unit, request, retries).await? {
            Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => words,
            other => return Err(ReqError::Rejected(format!("unexpected reply {other:?}"))),
        };
        if words.len() != usize::from(block.count) {
            return Err(ReqError::Rejected(format!(
                "short reply: {} of {} registers",
                words.len(),
                block.count
            )));
        }
        Ok(words)
    }

    async fn write(&mut self, unit: u8, write: &Write, retries: u32) -> Result<(), ReqError> {
        let request = match write {
            Write::Single { address, value } => Request::WriteSingleRegister(*address, *value),
            Write::Multiple { address, values } => {
                Request::WriteMultipleRegisters(*address, Cow::Owned(values.clone()))
            }
        };
        match self.call_with_retries(unit, request, retries).await? {
            Response::WriteSingleRegister(..) | Response::WriteMultipleRegisters(..) => Ok(()),
            other => Err(ReqError::Rejected(format!("unexpected reply {other:?}"))),
        }
    }

    /// Polls unit `i` now: every block of its plan, then the decoded snapshot is journaled.
    async fn poll(&mut self, i: usize) -> Poll {
        let (unit, plan, retries) = {
            let u = &self.units[i];
            let retries = if u.failures == 0 {
                self.settings.retries
            } else {
                0
            };
            (u.unit, u.plan.clone(), retries)
        };
        let mut blocks = Vec::with_capacity(plan.len());
        let mut exceptions = Vec::new();
        let mut failure = None;
        for block in plan {
            match self.read(unit, block, retries).await {
                Ok(words) => blocks.push((block, words)),
                Err(ReqError::Exception(code)) if !is_gateway_exception(code) => {
                    // Logged below, when the set of refused registers changes.
                    exceptions.push(self.describe(
                        "read",
                        block.function.code(),
                        block.start,
                        &ReqError::Exception(code),
                    ));
                }
                Err(ReqError::Link(why)) => {
                    tracing::warn!(unit, error = %why, "converter link lost during a poll");
                    self.units[i].next_due = Instant::now();
                    return Poll::LinkDown;
                }
                Err(e) => {
                    failure =
                        Some(self.log_error(i, "read", block.function.code(), block.start, &e));
                    break;
                }
            }
        }
        let now = Instant::now();
        let at = Utc::now();
        self.metrics.modbus_exceptions.add(exceptions.len() as u64);
        if let Some(error) = failure {
            self.metrics.modbus_poll_failures.inc();
            self.failed(i, error, now, at).await;
            return Poll::Failed;
        }
        self.metrics.modbus_polls.inc();
        let u = &mut self.units[i];
        u.next_due = next_due(u.next_due, u.interval, now);
        let recovered = u.failures > 0;
        u.failures = 0;
        let Some(map) = &u.map else {
            return Poll::Answered;
        };
        let decoded = map.decode(&blocks);
        let mut snapshot = Snapshot::new(unit, &u.model, &u.serial);
        // JSON has no NaN or infinity: such a value would void the whole record.
        snapshot.m = decoded
            .measurements
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(c, v)| ((*c).to_owned(), *v))
            .collect();
        snapshot.c = decoded
            .counters
            .iter()
            .map(|c| PolledCounter {
                name: c.name.clone(),
                unit: c.unit.to_owned(),
                resettable: c.resettable,
                value_milli: c.value_milli,
            })
            .collect();
        snapshot.relay = decoded.relay_state.map(i16::from);
        snapshot.tariff = decoded.tariff;
        let mut issues = exceptions.clone();
        issues.extend(decoded.issues.iter().map(|issue| {
            format!(
                "{} (register {}): {}",
                issue.quantity, issue.register, issue.message
            )
        }));
        // The same issues every poll (a map that names a register the device refuses) are
        // journaled once, not at every poll; the log and the device's state keep showing them.
        if issues != u.last_issues {
            for exception in &exceptions {
                tracing::warn!(
                    converter = %self.conv.serial,
                    unit,
                    model = %u.model,
                    error = %exception,
                    "Modbus exception reply (logged again when it changes)"
                );
            }
            snapshot.issues.clone_from(&issues);
            u.last_issues = issues;
        }
        let touch = recovered
            || !exceptions.is_empty()
            || u.touched_at
                .is_none_or(|t| now.duration_since(t) >= TOUCH_EVERY);
        let id = u.id;
        if touch {
            u.touched_at = Some(now);
        }
        if recovered {
            tracing::info!(unit, model = %u.model, "device answers again");
        }
        let stored = !snapshot.m.is_empty() || !snapshot.c.is_empty() || snapshot.relay.is_some();
        if stored || !snapshot.issues.is_empty() {
            let record = IngestRecord {
                kind: RecordKind::Polled,
                received_at: at,
                source: SOURCE.into(),
                client: self.conv.serial.clone(),
                topic: Snapshot::topic(unit),
                payload: serde_json::to_vec(&snapshot).unwrap_or_default().into(),
                reason: String::new(),
            };
            self.effect(Effect::Append(record)).await;
        }
        if touch {
            self.effect(Effect::CommOk { id, at }).await;
            if let Some(error) = exceptions.first() {
                self.effect(Effect::CommFailed {
                    id,
                    at,
                    error: error.clone(),
                    failures: 0,
                    backoff_until: None,
                })
                .await;
            }
        }
        Poll::Answered
    }

    fn describe(&self, op: &str, function: u8, register: u16, e: &ReqError) -> String {
        format!(
            "{op} function {function} register {register} (0x{register:04X}): {}",
            e.describe(self.settings.timeout)
        )
    }

    /// One log line naming everything an operator needs; returns the same text.
    fn log_error(&self, i: usize, op: &str, function: u8, register: u16, e: &ReqError) -> String {
        let u = &self.units[i];
        let text = self.describe(op, function, register, e);
        tracing::warn!(
            converter = %self.conv.serial,
            unit = u.unit,
            model = %u.model,
            function,
            register,
            error = %e.describe(self.settings.timeout),
            "Modbus {op} failed"
        );
        text
    }

    async fn failed(&mut self, i: usize, error: String, now: Instant, at: DateTime<Utc>) {
        let u = &mut self.units[i];
        u.failures = u.failures.saturating_add(1);
        let backoff = self.settings.backoff(u.failures).max(u.interval);
        u.next_due = now + backoff;
        u.touched_at = None;
        let (id, unit, failures) = (u.id, u.unit, u.failures);
        if failures == 1 {
            tracing::warn!(unit, model = %u.model, %error, "device communication lost; backed off");
            let record = IngestRecord {
                kind: RecordKind::Polled,
                received_at: at,
                source: SOURCE.into(),
                client: self.conv.serial.clone(),
                topic: CommError::topic(unit),
                payload: serde_json::to_vec(&CommError::new(unit, error.clone()))
                    .unwrap_or_default()
                    .into(),
                reason: String::new(),
            };
            self.effect(Effect::Append(record)).await;
        }
        let backoff_until =
            at + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::seconds(60));
        self.effect(Effect::CommFailed {
            id,
            at,
            error,
            failures,
            backoff_until: Some(backoff_until),
        })
        .await;
    }

    async fn request(&mut self, request: BusRequest) {
        match request {
            BusRequest::Relay { unit, action } => self.relay(unit, action).await,
            BusRequest::ResetCounter {
                unit,
                counter,
                reply,
            } => {
                let result = self.reset(unit, &counter).await;
                let _ = reply.send(result);
            }
        }
    }

    fn unit_index(&self, unit: u8) -> Option<usize> {
        self.units
            .iter()
            .position(|u| u.unit == unit && u.map.is_some())
    }

    async fn relay(&mut self, unit: u8, action: RelayAction) {
        let Some(i) = self.unit_index(unit) else {
            tracing::warn!(
                unit,
                "relay command for a unit this converter does not poll"
            );
            return;
        };
        let on = match action {
            RelayAction::On => true,
            RelayAction::Off => false,
            RelayAction::State => {
                self.poll(i).await;
                return;
            }
        };
        let Some(write) = self.units[i].map.as_ref().and_then(|m| m.relay_write(on)) else {
            tracing::warn!(unit, model = %self.units[i].model, "relay command for a model without a relay");
            return;
        };
        let retries = self.settings.retries;
        match self.write(unit, &write, retries).await {
            Ok(()) => tracing::info!(unit, on, "relay switched; reading its state back"),
            Err(e) => {
                let error = self.log_error(i, "write", write.function_code(), write.address(), &e);
                if !matches!(e, ReqError::Exception(c) if !is_gateway_exception(c)) {
                    self.failed(i, error, Instant::now(), Utc::now()).await;
                }
                return;
            }
        }
        // The state read back arrives through the journal and confirms the command.
        self.poll(i).await;
    }

    async fn reset(&mut self, unit: u8, counter: &str) -> Result<(), String> {
        let i = self
            .unit_index(unit)
            .ok_or_else(|| format!("unit {unit} is not polled on this converter"))?;
        let write = self.units[i]
            .map
            .as_ref()
            .and_then(|m| m.counter_reset(counter))
            .ok_or_else(|| {
                format!(
                    "counter {counter:?} of model {:?} has no reset register",
                    self.units[i].model
                )
            })?;
        let retries = self.settings.retries;
        if let Err(e) = self.write(unit, &write, retries).await {
            return Err(self.log_error(
                i,
                "counter reset write",
                write.function_code(),
                write.address(),
                &e,
            ));
        }
        tracing::info!(unit, counter, "counter reset written; reading the device");
        self.poll(i).await;
        Ok(())
    }
}

fn refuse(request: BusRequest, why: &str) {
    match request {
        BusRequest::ResetCounter { reply, .. } => {
            let _ = reply.send(Err(why.to_owned()));
        }
        BusRequest::Relay { unit, .. } => {
            tracing::warn!(unit, reason = why, "relay request not carried out");
        }
    }
}

fn exception_code(e: ExceptionCode) -> u8 {
    u8::from(e)
}

fn protocol_reason(e: &tokio_modbus::ProtocolError) -> String {
    match e {
        tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => {
            format!("header mismatch (another unit or transaction answered): {message}")
        }
        tokio_modbus::ProtocolError::FunctionCodeMismatch { request, .. } => {
            format!("the reply is not for function {request:?}")
        }
    }
}

/// The next due time: one interval after the previous one, or now when the bus is late (a
/// saturated bus then goes round the devices in turn rather than bursting to catch up).
fn next_due(previous: Instant, interval: Duration, now: Instant) -> Instant {
    let next = previous + interval;
    if next < now {
        now
    } else {
        next
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write_effects(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BusSettings {
        BusSettings {
            timeout: Duration::from_millis(200),
            gap: Duration::from_millis(5),
            retries: 1,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = settings();
        assert_eq!(s.backoff(1), Duration::from_secs(1));
        assert_eq!(s.backoff(2), Duration::from_secs(2));
        assert_eq!(s.backoff(4), Duration::from_secs(8));
        assert_eq!(s.backoff(7), Duration::from_secs(60));
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn a_late_bus_goes_round_instead_of_bursting() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(next_due(t0, second, t0), t0 + second);
        assert_eq!(next_due(t0, second, t0 + second * 5), t0 + second * 5);
    }

    #[test]
    fn exceptions_are_named() {
        assert_eq!(exception_meaning(0x01), "function not supported");
        assert_eq!(exception_meaning(0x02), "register address out of range");
        assert!(exception_meaning(0x0B).contains("failed to respond"));
        assert!(is_gateway_exception(0x0A) && !is_gateway_exception(0x04));
        assert!(ReqError::Exception(1)
            .describe(Duration::from_millis(200))
            .contains("exception 01"));
    }
}
