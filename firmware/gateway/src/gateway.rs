//! The gateway state machine.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use sg_wire::command::{Command, RelayAction, RelayTarget};
use sg_wire::message::RelayState;
use sg_wire::topic::SgTopic;

use crate::backoff::Backoff;
use crate::config::{ConfigError, DeviceConfig, GatewayConfig, Slot};
use crate::document;
use crate::fault::Fault;
use crate::queue::{Queue, QueueSnapshot, QueuedMessage};
use crate::relay::RelayMachine;
use crate::rng;
use crate::schedule::Schedule;
use crate::source::{MeterSource, ReadError};

/// Events kept for [`Gateway::poll_event`] at most; older ones are dropped, so a driver
/// that never polls does not make the gateway grow.
pub const MAX_EVENTS: usize = 64;

/// One of the two push links. Its number is the suffix of the MQTT client id
/// (`SG000017-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Link {
    One,
    Two,
}

impl Link {
    pub const ALL: [Self; 2] = [Self::One, Self::Two];

    /// 1 or 2.
    #[must_use]
    pub fn number(self) -> u8 {
        match self {
            Self::One => 1,
            Self::Two => 2,
        }
    }

    fn idx(self) -> usize {
        match self {
            Self::One => 0,
            Self::Two => 1,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}", self.number())
    }
}

/// A message for the driver to publish. Call [`Gateway::on_published`] with `id` when the
/// broker acknowledged it (at QoS 0, right after sending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub id: u64,
}

/// Something the driver must carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Switch the relay on real hardware (or [`SimSource::switch_relay`](crate::sim::SimSource::switch_relay)).
    /// The gateway publishes the state read back afterwards, not the command.
    SwitchRelay { slot: Slot, on: bool },
    /// Persist [`Gateway::snapshot`] and restart.
    Reboot,
    /// Drop both links for `secs` seconds (an injected fault), then reconnect.
    GoOffline { secs: u32 },
}

/// Something worth logging; nothing here needs an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device did not answer; an error line was published instead of the reading.
    ReadFailed { slot: Slot, error: ReadError },
    /// A queue was full and dropped its oldest reading.
    QueueOverflow { link: Link, dropped_total: u64 },
    /// A relay read back differently from the command last given to it.
    RelayMismatch {
        slot: Slot,
        commanded: bool,
        actual: RelayState,
    },
    /// Headend confirmed readings up to `seq`; `released` left the queue.
    Receipt {
        link: Link,
        seq: u64,
        released: usize,
    },
    /// A device fault the source could not apply (real hardware).
    FaultIgnored(Fault),
}

/// Why a command was not carried out. Harmless: the gateway state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRejected {
    pub link: Link,
    pub reason: String,
}

impl fmt::Display for CommandRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command on {} rejected: {}", self.link, self.reason)
    }
}

impl core::error::Error for CommandRejected {}

/// What survives a restart: the queues and the receipt sequence, so that `seq` never
/// repeats for a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySnapshot {
    pub next_seq: u64,
    pub queues: [QueueSnapshot; 2],
}

/// A message outside store-and-forward: hello and status replies, meaningful only on the
/// connection they were made for.
#[derive(Debug)]
struct Control {
    message: QueuedMessage,
    in_flight: Option<u64>,
}

#[derive(Debug)]
struct LinkState {
    connected: bool,
    queue: Queue,
    control: VecDeque<Control>,
    next_id: u64,
    backoff: Backoff,
}

impl LinkState {
    fn in_flight(&self) -> usize {
        self.queue.in_flight()
            + self
                .control
                .iter()
                .filter(|c| c.in_flight.is_some())
                .count()
    }

    fn reset(&mut self) {
        self.queue.reset_delivery();
        self.control.clear();
    }
}

#[derive(Debug)]
struct Device {
    config: DeviceConfig,
    schedule: Schedule,
    relay: RelayMachine,
}

/// The gateway's clock: true time plus an offset that grows with an injected drift.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    offset_ms: i64,
    ppm: i32,
    since_ms: u64,
}

impl Clock {
    fn offset_at(&self, now_ms: u64) -> i64 {
        let elapsed = i128::from(now_ms.saturating_sub(self.since_ms));
        let drift = elapsed * i128::from(self.ppm) / 1_000_000;
        self.offset_ms
            .saturating_add(i64::try_from(drift).unwrap_or(i64::MAX))
    }
}

/// The gateway. `S` is where it reads its devices.
#[derive(Debug)]
pub struct Gateway<S> {
    config: GatewayConfig,
    source: S,
    devices: Vec<Device>,
    links: [LinkState; 2],
    start_ms: u64,
    now_ms: u64,
    /// True wall time at the last tick.
    wall: NaiveDateTime,
    clock: Clock,
    next_seq: u64,
    events: VecDeque<Event>,
    garble_next: bool,
}

impl<S: MeterSource> Gateway<S> {
    /// A gateway started at monotonic `now_ms` and true local wall time `wall`.
    ///
    /// # Errors
    /// When [`GatewayConfig::validate`] refuses the configuration.
    pub fn new(
        config: GatewayConfig,
        mut source: S,
        now_ms: u64,
        wall: NaiveDateTime,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        source.advance_to(wall);
        // Jitter differs per gateway (seeded from its serial), so a fleet spreads out.
        let serial = config
            .serial
            .bytes()
            .fold(0_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let seed = rng::hash(serial, 0, 0);
        let link = |n: usize| LinkState {
            connected: false,
            queue: Queue::new(config.links[n].queue_capacity, config.receipts),
            control: VecDeque::new(),
            next_id: 1,
            backoff: Backoff::with_seed(seed ^ n as u64),
        };
        let links = [link(0), link(1)];
        let devices = config
            .devices
            .iter()
            .map(|d| Device {
                config: d.clone(),
                schedule: Schedule::new(d.push_interval_s),
                relay: RelayMachine::new(),
            })
            .collect();
        Ok(Self {
            config,
            source,
            devices,
            links,
            start_ms: now_ms,
            now_ms,
            wall,
            clock: Clock {
                since_ms: now_ms,
                ..Clock::default()
            },
            next_seq: 1,
            events: VecDeque::new(),
            garble_next: false,
        })
    }

    // ---- connection --------------------------------------------------------------------

    /// The link is up: the hello goes out first, then everything queued, oldest first.
    pub fn on_connected(&mut self, link: Link) {
        let hello = document::to_json(&document::hello(&self.config));
        let state = &mut self.links[link.idx()];
        state.connected = true;
        state.backoff.reset();
        state.reset();
        let topic = SgTopic::Status.to_topic(&self.config.links[link.idx()].layout);
        state.control.push_back(Control {
            message: QueuedMessage {
                topic,
                payload: hello,
                qos: self.config.links[link.idx()].qos,
                seq: None,
            },
            in_flight: None,
        });
    }

    /// The link is down: readings accumulate; what was in flight is resent on reconnect.
    pub fn on_disconnected(&mut self, link: Link) {
        let state = &mut self.links[link.idx()];
        state.connected = false;
        state.reset();
    }

    /// How long to wait before reconnecting `link` (grows until [`on_connected`](Self::on_connected)).
    pub fn reconnect_delay(&mut self, link: Link) -> Duration {
        self.links[link.idx()].backoff.next_delay()
    }

    /// The MQTT client id of `link`: `<serial>-<n>`, e.g. `SG000017-1`.
    #[must_use]
    pub fn client_id(&self, link: Link) -> String {
        format!("{}-{}", self.config.serial, link.number())
    }

    /// The topic to subscribe to on `link` for commands: `<root>/<sub>`.
    #[must_use]
    pub fn command_topic(&self, link: Link) -> String {
        self.config.links[link.idx()].layout.command_topic()
    }

    #[must_use]
    pub fn is_connected(&self, link: Link) -> bool {
        self.links[link.idx()].connected
    }

    /// The next message to publish on `link`: the hello and status replies first, then the
    /// queue in order. `None` while disconnected or when the in-flight window is full.
    pub fn poll_outgoing(&mut self, link: Link) -> Option<Outgoing> {
        let max_in_flight = self.config.links[link.idx()].max_in_flight;
        let state = &mut self.links[link.idx()];
        if !state.connected || state.in_flight() >= max_in_flight {
            return None;
        }
        let id = state.next_id;
        let message =
            if let Some(control) = state.control.iter_mut().find(|c| c.in_flight.is_none()) {
                control.in_flight = Some(id);
                &control.message
            } else {
                state.queue.next_to_send(id)?
            };
        state.next_id += 1;
        let mut payload = message.payload.clone().into_bytes();
        let (topic, qos) = (message.topic.clone(), message.qos);
        if core::mem::take(&mut self.garble_next) {
            payload.truncate(payload.len() / 2);
        }
        Some(Outgoing {
            topic,
            payload,
            qos,
            id,
        })
    }

    /// The broker acknowledged message `id`. Unknown ids (from an earlier connection) are
    /// ignored.
    pub fn on_published(&mut self, link: Link, id: u64) {
        let state = &mut self.links[link.idx()];
        if let Some(at) = state.control.iter().position(|c| c.in_flight == Some(id)) {
            state.control.remove(at);
        } else {
            state.queue.on_published(id);
        }
    }

    // ---- time --------------------------------------------------------------------------

    /// Time has passed: make the pushes that are due. `now_ms` is monotonic, `wall` the
    /// true local wall time.
    pub fn tick(&mut self, now_ms: u64, wall: NaiveDateTime) {
        self.now_ms = now_ms.max(self.now_ms);
        self.wall = wall;
        self.source.advance_to(wall);
        if !self.push_allowed() {
            return;
        }
        let local = self.local_time();
        let secs = local.and_utc().timestamp();
        for i in 0..self.devices.len() {
            if self.devices[i].schedule.poll(secs) {
                self.push(i, local);
            }
        }
    }

    /// The monotonic time at which [`tick`](Self::tick) next has something to do; `None`
    /// without devices.
    #[must_use]
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        let base = self.now_ms.max(self.eligible_ms());
        let local_ms = self.local_time().and_utc().timestamp_millis()
            + i64::try_from(base - self.now_ms).unwrap_or(i64::MAX);
        let local_secs = local_ms.div_euclid(1000) + i64::from(local_ms.rem_euclid(1000) != 0);
        self.devices
            .iter()
            .map(|d| {
                let due_ms = d.schedule.next_due_from(local_secs) * 1000;
                base + u64::try_from(due_ms - local_ms).unwrap_or(0)
            })
            .min()
    }

    /// The gateway's own wall clock (true time plus any injected drift), as it stamps
    /// `local_time`.
    #[must_use]
    pub fn local_time(&self) -> NaiveDateTime {
        let offset = chrono::Duration::milliseconds(self.clock.offset_at(self.now_ms));
        self.wall.checked_add_signed(offset).unwrap_or(self.wall)
    }

    fn eligible_ms(&self) -> u64 {
        self.start_ms + u64::from(self.config.first_push_delay_s) * 1000
    }

    fn push_allowed(&self) -> bool {
        self.now_ms >= self.eligible_ms()
    }

    // ---- pushes ------------------------------------------------------------------------

    /// A periodic push: measurements then counters, or a relay's state.
    fn push(&mut self, i: usize, local: NaiveDateTime) {
        let device = &self.devices[i].config;
        let links: Vec<Link> = Link::ALL
            .into_iter()
            .filter(|l| self.config.links[l.idx()].enabled && device.push[l.idx()])
            .collect();
        if links.is_empty() {
            return;
        }
        if device.meter().is_some() {
            if self.publish_measurements(i, local, &links) {
                self.publish_counters(i, local, &links);
            }
        } else {
            self.publish_bicom(i, local, &links);
        }
    }

    /// Returns whether the meter answered.
    fn publish_measurements(&mut self, i: usize, local: NaiveDateTime, links: &[Link]) -> bool {
        let slot = self.devices[i].config.slot;
        match self.source.read_measurements(slot) {
            Ok(values) => {
                let seq = self.take_seq();
                let device = &self.devices[i].config;
                let Some(meter) = device.meter() else {
                    return false;
                };
                let doc = document::measurements(device, meter, &values, local, seq);
                let topic = SgTopic::Measurements(port(slot));
                self.enqueue(links, topic, document::to_json(&doc), seq);
                true
            }
            Err(error) => {
                self.read_failed(i, error, links);
                false
            }
        }
    }

    fn publish_counters(&mut self, i: usize, local: NaiveDateTime, links: &[Link]) {
        let slot = self.devices[i].config.slot;
        match self.source.read_counters(slot) {
            Ok(registers) => {
                let seq = self.take_seq();
                let device = &self.devices[i].config;
                let Some(meter) = device.meter() else {
                    return;
                };
                let doc = document::counters(device, meter, &registers, local, seq);
                let topic = SgTopic::Counters(port(slot));
                self.enqueue(links, topic, document::to_json(&doc), seq);
            }
            Err(error) => self.read_failed(i, error, links),
        }
    }

    fn publish_bicom(&mut self, i: usize, local: NaiveDateTime, links: &[Link]) {
        let slot = self.devices[i].config.slot;
        let actual = self.source.relay_state(slot);
        let Some(doc) = self.read_relay(i, actual, local) else {
            return;
        };
        self.enqueue(
            links,
            SgTopic::Bicom(port(slot)),
            document::to_json(&doc),
            doc.bicom.seq,
        );
    }

    /// Records a relay read and builds its state document.
    fn read_relay(
        &mut self,
        i: usize,
        actual: Option<bool>,
        local: NaiveDateTime,
    ) -> Option<sg_wire::message::BicomDoc> {
        let device = &mut self.devices[i];
        let slot = device.config.slot;
        let mismatch = device.relay.observe(actual);
        let state = device.relay.state();
        if let Some(commanded) = mismatch {
            self.event(Event::RelayMismatch {
                slot,
                commanded,
                actual: state,
            });
        }
        let seq = self.take_seq();
        let relay = self.devices[i].config.relay()?;
        Some(document::bicom(slot, relay, state, local, seq))
    }

    fn read_failed(&mut self, i: usize, error: ReadError, links: &[Link]) {
        let device = &self.devices[i].config;
        let line = document::not_responding(device);
        let slot = device.slot;
        self.event(Event::ReadFailed { slot, error });
        self.enqueue(links, SgTopic::Error, line, None);
    }

    fn take_seq(&mut self) -> Option<u64> {
        self.config.receipts.then(|| {
            let seq = self.next_seq;
            self.next_seq += 1;
            seq
        })
    }

    fn enqueue(&mut self, links: &[Link], topic: SgTopic, payload: String, seq: Option<u64>) {
        for &link in links {
            let settings = &self.config.links[link.idx()];
            let message = QueuedMessage {
                topic: topic.to_topic(&settings.layout),
                payload: payload.clone(),
                qos: settings.qos,
                seq,
            };
            let queue = &mut self.links[link.idx()].queue;
            if queue.push(message) {
                let dropped_total = queue.dropped_total();
                self.event(Event::QueueOverflow {
                    link,
                    dropped_total,
                });
            }
        }
    }

    fn control(&mut self, link: Link, payload: String) {
        let settings = &self.config.links[link.idx()];
        let message = QueuedMessage {
            topic: SgTopic::Status.to_topic(&settings.layout),
            payload,
            qos: settings.qos,
            seq: None,
        };
        self.links[link.idx()].control.push_back(Control {
            message,
            in_flight: None,
        });
    }

    // ---- commands ----------------------------------------------------------------------

    /// A payload arrived on the command topic of `link`. Replies are queued for `link`;
    /// what the driver must do is returned.
    ///
    /// # Errors
    /// [`CommandRejected`] for a payload that is not a command, an unknown command, or one
    /// naming a device the gateway does not have. Nothing changes then.
    pub fn on_command(
        &mut self,
        link: Link,
        payload: &[u8],
    ) -> Result<Option<Action>, CommandRejected> {
        let reject = |reason: String| CommandRejected { link, reason };
        let command = Command::parse(payload).map_err(|e| reject(e.to_string()))?;
        let local = self.local_time();
        match command {
            Command::Bicom { target, action } => {
                let i = self.relay_index(target).ok_or_else(|| {
                    reject(match target {
                        RelayTarget::Index(n) => format!("no relay at index {n}"),
                        RelayTarget::Addr(a) => format!("no relay with Modbus address {a}"),
                    })
                })?;
                let slot = self.devices[i].config.slot;
                match action {
                    RelayAction::On | RelayAction::Off => {
                        let on = action == RelayAction::On;
                        self.devices[i].relay.command(on);
                        return Ok(Some(Action::SwitchRelay { slot, on }));
                    }
                    RelayAction::State => self.publish_bicom(i, local, &[link]),
                }
            }
            Command::Measurements { index } => {
                let i = self
                    .meter_index(index)
                    .ok_or_else(|| reject(no_meter(index)))?;
                self.publish_measurements(i, local, &[link]);
            }
            Command::Counters { index } => {
                let i = self
                    .meter_index(index)
                    .ok_or_else(|| reject(no_meter(index)))?;
                self.publish_counters(i, local, &[link]);
            }
            Command::Status => {
                let reply = document::StatusReply {
                    cmd: "status",
                    serial_number: &self.config.serial,
                    model_type: &self.config.model,
                    sw_ver: &self.config.sw_ver,
                    hw_ver: &self.config.hw_ver,
                    local_time: sg_wire::time::format_local_time(local),
                    uptime_s: (self.now_ms - self.start_ms) / 1000,
                    queued: [self.links[0].queue.len(), self.links[1].queue.len()],
                    dropped: [
                        self.links[0].queue.dropped_total(),
                        self.links[1].queue.dropped_total(),
                    ],
                };
                let payload = document::to_json(&reply);
                self.control(link, payload);
            }
            Command::GetBicoms => {
                let mut bicoms = Vec::new();
                for i in 0..self.devices.len() {
                    if self.devices[i].config.relay().is_some() {
                        let actual = self.source.relay_state(self.devices[i].config.slot);
                        bicoms.extend(self.read_relay(i, actual, local).map(|doc| doc.bicom));
                    }
                }
                let reply = document::BicomsReply {
                    cmd: "get_bicoms",
                    bicoms,
                };
                let payload = document::to_json(&reply);
                self.control(link, payload);
            }
            Command::Reboot => return Ok(Some(Action::Reboot)),
            Command::Ack { seq } => {
                let released = self.links[link.idx()].queue.ack(seq);
                self.event(Event::Receipt {
                    link,
                    seq,
                    released,
                });
            }
        }
        Ok(None)
    }

    /// Index 0 or address 0 is the IR relay; an index is an RS485 slot, an address a
    /// relay's Modbus address.
    fn relay_index(&self, target: RelayTarget) -> Option<usize> {
        self.devices.iter().position(|d| {
            d.config.relay().is_some()
                && match target {
                    RelayTarget::Index(n) => d.config.slot.index() == n,
                    RelayTarget::Addr(a) => d.config.modbus_addr() == a,
                }
        })
    }

    fn meter_index(&self, index: u8) -> Option<usize> {
        self.devices
            .iter()
            .position(|d| d.config.meter().is_some() && d.config.slot.index() == index)
    }

    // ---- faults, state, persistence ----------------------------------------------------

    /// Injects a fault. Device faults go to the source (an [`Event::FaultIgnored`] if it
    /// cannot apply them); [`Fault::GoOffline`] is returned as an action for the driver.
    pub fn inject(&mut self, fault: Fault) -> Option<Action> {
        match fault {
            Fault::CounterReset { .. } | Fault::MeterSilent { .. } | Fault::RelayStuck { .. } => {
                if !self.source.inject_fault(&fault) {
                    self.event(Event::FaultIgnored(fault));
                }
                None
            }
            Fault::ClockDrift { ppm } => {
                self.clock = Clock {
                    offset_ms: self.clock.offset_at(self.now_ms),
                    ppm,
                    since_ms: self.now_ms,
                };
                None
            }
            Fault::GoOffline { secs } => Some(Action::GoOffline { secs }),
            Fault::Garble => {
                self.garble_next = true;
                None
            }
        }
    }

    /// The next event to log, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The persistent state: write it to disk on shutdown or reboot, or periodically.
    #[must_use]
    pub fn snapshot(&self) -> GatewaySnapshot {
        GatewaySnapshot {
            next_seq: self.next_seq,
            queues: [
                self.links[0].queue.snapshot(),
                self.links[1].queue.snapshot(),
            ],
        }
    }

    /// Restores the persistent state after a restart (before connecting). `seq` never goes
    /// back, even for an older snapshot.
    pub fn restore(&mut self, snapshot: GatewaySnapshot) {
        self.next_seq = self.next_seq.max(snapshot.next_seq);
        let [first, second] = snapshot.queues;
        self.links[0].queue.restore(first);
        self.links[1].queue.restore(second);
    }

    #[must_use]
    pub fn queue(&self, link: Link) -> &Queue {
        &self.links[link.idx()].queue
    }

    /// The gateway's view of the relay in `slot`.
    #[must_use]
    pub fn relay(&self, slot: Slot) -> Option<&RelayMachine> {
        self.devices
            .iter()
            .find(|d| d.config.slot == slot && d.config.relay().is_some())
            .map(|d| &d.relay)
    }

    #[must_use]
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    #[must_use]
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The source, e.g. to carry out [`Action::SwitchRelay`] on a simulator.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The receipt sequence the next reading will carry.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

fn no_meter(index: u8) -> String {
    format!("no meter at index {index}")
}

/// Slots of a validated configuration always have a port; the fallback is unreachable.
fn port(slot: Slot) -> sg_wire::topic::Port {
    slot.port().unwrap_or(sg_wire::topic::Port::Ir)
}
