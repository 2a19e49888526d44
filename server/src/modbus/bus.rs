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
//!
//! - `request`: one request on the bus (gap, timeout, retries) and its errors.
//! - `commands`: relay writes and counter resets asked for by the API and the dispatcher.
//! - `effects`: the writer task.

mod commands;
mod effects;
mod request;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use headend_modbus_map::{BlockRead, RegisterMap};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_util::sync::CancellationToken;

use super::config::ModbusConfig;
use super::store::{BusConverter, BusDevice};
use super::{BusRequest, Maps};
use crate::infra::backoff;
use crate::infra::metrics::Metrics;
use crate::ingest::normalize_polled::{CommError, PolledCounter, Snapshot};
use crate::ingest::record::{IngestRecord, RecordKind};
use crate::ingest::IngestSink;
use commands::refuse;
use effects::{write_effects, Effect};
pub use request::exception_meaning;
use request::{is_gateway_exception, ReqError};

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
        backoff::delay(self.backoff_min, self.backoff_max, failures)
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
        let mut link_failures = 0_u32;
        'bus: loop {
            if stop.is_cancelled() {
                break;
            }
            if self.link.is_none() {
                match self.connect().await {
                    Ok(()) => {
                        link_failures = 0;
                        if !self.online {
                            self.online = true;
                            tracing::info!(host = %self.conv.host, port = self.conv.port, "converter link up");
                            self.session(RecordKind::Connect).await;
                        }
                    }
                    Err(error) => {
                        link_failures = link_failures.saturating_add(1);
                        let link_backoff = self.settings.backoff(link_failures);
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
            self.metrics.record_modbus_poll(&self.conv.serial, false);
            self.failed(i, error, now, at).await;
            return Poll::Failed;
        }
        self.metrics.record_modbus_poll(&self.conv.serial, true);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_bus_goes_round_instead_of_bursting() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(next_due(t0, second, t0), t0 + second);
        assert_eq!(next_due(t0, second, t0 + second * 5), t0 + second * 5);
    }
}
