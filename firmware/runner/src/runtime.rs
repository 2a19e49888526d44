//! One running gateway: the core behind a mutex, a clock task that ticks it, one task per
//! enabled link, Modbus pollers, the REST API, and the state file.
//!
//! The core is sans-IO and every call into it is short, so a plain `std::sync::Mutex` is
//! the simplest correct sharing: no call holds it across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDateTime;
use sg_gateway_core::config::{DeviceKind, Slot};
use sg_gateway_core::sim::SimSource;
use sg_gateway_core::{Action, Event, Fault, Gateway, GatewaySnapshot, Link};
use sg_wire::topic::SgTopic;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Resolved, Source};
use crate::fault::FaultRefused;
use crate::modbus::ModbusDevice;
use crate::mqtt::{self, LinkControl, LinkSettings, Publish, Session};
use crate::rest::{self, DocError, DocRequest, Documents};
use crate::rtu::RtuBus;
use crate::source::{self, Cached, Direction, HostSource, PollTarget};
use crate::store::StateStore;

/// Counters worth watching from outside (logs, REST `/stats`, tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Readings waiting per link.
    pub queued: [usize; 2],
    /// Readings dropped because a queue was full, per link (since the state was created).
    pub dropped: [u64; 2],
    /// Messages the broker acknowledged, per link, since start.
    pub published: [u64; 2],
}

struct Shared {
    serial: String,
    gateway: Mutex<Gateway<HostSource>>,
    /// Woken when a link may have something new to publish.
    wakes: [Arc<Notify>; 2],
    actions: mpsc::UnboundedSender<Action>,
    /// The latest document per sub-topic (`measurements/ir`, …), for the REST API.
    documents: Mutex<HashMap<String, String>>,
    layouts: [sg_wire::topic::TopicLayout; 2],
    published: [AtomicU64; 2],
    epoch: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Gateway<HostSource>> {
        self.gateway.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn log_event(&self, event: Event) {
        match event {
            Event::ReadFailed { slot, error } => {
                warn!(serial = %self.serial, ?slot, %error, "device did not answer");
            }
            Event::QueueOverflow {
                link,
                dropped_total,
            } => {
                warn!(serial = %self.serial, %link, dropped_total, "queue full: oldest reading dropped")
            }
            other => info!(serial = %self.serial, event = ?other, "gateway event"),
        }
    }

    /// Logs the core's events and remembers the newest documents it queued. Called with the
    /// gateway locked, after every call that may have produced either.
    fn after_core_call(&self, gateway: &mut Gateway<HostSource>) {
        while let Some(event) = gateway.poll_event() {
            self.log_event(event);
        }
        let mut documents = self
            .documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (n, link) in Link::ALL.into_iter().enumerate() {
            for message in gateway.queue(link).iter() {
                if let Ok(topic) = self.layouts[n].parse_publish_topic(&message.topic) {
                    if matches!(topic, SgTopic::Measurements(_) | SgTopic::Counters(_)) {
                        documents.insert(topic.subtopic(), message.payload.clone());
                    }
                }
            }
        }
    }

    /// Brings the core to the present before acting on something from outside (a command, a
    /// fault, a relay switch): between pushes the clock task sleeps, and without this a reply
    /// would carry the time of the last push and the meters' energy would stop there.
    fn catch_up(&self, gateway: &mut Gateway<HostSource>) {
        gateway.tick(self.now_ms(), wall_now());
        // Catching up may have made a push that was just due.
        for wake in &self.wakes {
            wake.notify_one();
        }
    }

    /// Injects a fault now; the driver carries out what it asks for (going offline).
    fn inject(&self, fault: Fault) -> Result<(), FaultRefused> {
        let mut gateway = self.lock();
        self.catch_up(&mut gateway);
        let action = gateway.inject(fault);
        let mut refused = None;
        while let Some(event) = gateway.poll_event() {
            if event == Event::FaultIgnored(fault) {
                refused = Some(FaultRefused::NoSimulatedMeter(fault));
            } else {
                self.log_event(event);
            }
        }
        self.after_core_call(&mut gateway);
        drop(gateway);
        if let Some(refused) = refused {
            warn!(serial = %self.serial, %refused, "fault not applied");
            return Err(refused);
        }
        info!(serial = %self.serial, ?fault, "fault injected");
        if let Some(action) = action {
            let _ = self.actions.send(action);
        }
        Ok(())
    }

    fn stats(&self) -> Stats {
        let gateway = self.lock();
        let queue = |n: usize| gateway.queue(Link::ALL[n]);
        Stats {
            queued: [queue(0).len(), queue(1).len()],
            dropped: [queue(0).dropped_total(), queue(1).dropped_total()],
            published: [
                self.published[0].load(Ordering::Relaxed),
                self.published[1].load(Ordering::Relaxed),
            ],
        }
    }
}

impl Session for Shared {
    fn connected(&self, link: usize) {
        self.lock().on_connected(Link::ALL[link]);
    }

    fn disconnected(&self, link: usize) {
        self.lock().on_disconnected(Link::ALL[link]);
    }

    fn command(&self, link: usize, payload: &[u8]) {
        let mut gateway = self.lock();
        self.catch_up(&mut gateway);
        match gateway.on_command(Link::ALL[link], payload) {
            Ok(Some(action)) => {
                let _ = self.actions.send(action);
            }
            Ok(None) => {}
            Err(rejected) => warn!(serial = %self.serial, %rejected, "command rejected"),
        }
        self.after_core_call(&mut gateway);
    }

    fn next_publish(&self, link: usize) -> Option<Publish> {
        self.lock()
            .poll_outgoing(Link::ALL[link])
            .map(|out| Publish {
                topic: out.topic,
                payload: out.payload,
                qos: out.qos,
                id: out.id,
            })
    }

    fn published(&self, link: usize, id: u64) {
        self.lock().on_published(Link::ALL[link], id);
        self.published[link].fetch_add(1, Ordering::Relaxed);
    }
}

impl Documents for Shared {
    /// The newest document the gateway produced for that meter (the REST API answers with
    /// what the gateway last read, as pushed; before the first push, or for a meter pushed
    /// on no link, there is none). The core builds documents only as it queues them, so
    /// this is the one way to serve the exact MQTT document without a second builder.
    fn document(&self, request: DocRequest) -> Result<String, DocError> {
        let (index, counters) = match request {
            DocRequest::Measurements(index) => (index, false),
            DocRequest::Counters(index) => (index, true),
        };
        let slot = if index == 0 {
            Slot::IrMeter
        } else {
            Slot::Rs485(index)
        };
        let has_meter = self
            .lock()
            .config()
            .device(slot)
            .is_some_and(|d| matches!(d.kind, DeviceKind::Meter(_)));
        if !has_meter {
            return Err(DocError::NoDevice);
        }
        let port = slot.port().map_err(|_| DocError::NoDevice)?;
        let topic = if counters {
            SgTopic::Counters(port)
        } else {
            SgTopic::Measurements(port)
        };
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&topic.subtopic())
            .cloned()
            .ok_or_else(|| DocError::NotResponding("no reading yet".into()))
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(Shared::stats(self)).unwrap_or_default()
    }

    fn gateway_info(&self) -> rest::GatewayInfo {
        rest::api::gateway_info(self.lock().config())
    }

    /// A meter counts as detected once it has been read (its measurements pushed) and while
    /// it answers; a relay while it answers.
    fn positions(&self) -> Vec<rest::Position> {
        let gateway = self.lock();
        let documents = self
            .documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        rest::api::positions(gateway.config(), |device| {
            let read = device.meter().is_none()
                || device.slot.port().is_ok_and(|port| {
                    documents.contains_key(&SgTopic::Measurements(port).subtopic())
                });
            read && gateway.source().responding(device.slot)
        })
    }

    fn directions(&self, slot: Slot) -> BTreeMap<String, Direction> {
        self.lock().source().counter_directions(slot)
    }

    fn inject(&self, fault: Fault) -> Result<(), String> {
        Shared::inject(self, fault).map_err(|refused| refused.to_string())
    }
}

/// A started gateway.
pub struct RunningGateway {
    shared: Arc<Shared>,
    store: StateStore,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// Where the REST API listens, if on.
    pub rest_addr: Option<std::net::SocketAddr>,
}

fn wall_now() -> NaiveDateTime {
    chrono::Local::now().naive_local()
}

impl RunningGateway {
    /// Restores the state, then starts every task. `seed` seeds the simulated meters.
    ///
    /// # Errors
    /// The state directory, a TLS file, a Modbus address or the REST address is unusable.
    pub async fn start(resolved: Resolved, seed: u64) -> anyhow::Result<Self> {
        let sim = SimSource::for_config(&resolved.gateway, seed);
        Self::start_with_sim(resolved, sim).await
    }

    /// As [`start`](Self::start), with the simulated devices given (e.g. meters whose
    /// registers continue a known history, see `sg-gateway fleet --start-counters`).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with_sim(resolved: Resolved, sim: SimSource) -> anyhow::Result<Self> {
        let config = resolved.gateway.clone();
        let serial = config.serial.clone();
        let store = StateStore::open(&resolved.state_dir)
            .with_context(|| format!("state directory {}", resolved.state_dir.display()))?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let mut host = HostSource::new(sim);
        let mut relay_switches = HashMap::new();
        // The RS485 bus, shared by the pollers of the devices on it (one request at a time).
        let on_bus = resolved
            .sources
            .iter()
            .filter(|(_, source)| matches!(source, Source::ModbusRtu { .. }))
            .count();
        let bus = resolved.rs485.as_ref().filter(|_| on_bus > 0).map(|rs485| {
            let bus = RtuBus::serial(rs485.line(), Duration::from_millis(rs485.gap_ms));
            info!(%serial, path = %rs485.path.display(), baud = rs485.baud,
                parity = ?rs485.parity, stop_bits = rs485.stop_bits, devices = on_bus,
                gap = ?bus.gap(), "RS485 bus: Modbus RTU");
            (bus.shared(), rs485)
        });
        for (slot, source) in &resolved.sources {
            let device = config.device(*slot).context("device of a source")?;
            let period = Duration::from_secs(u64::from(device.push_interval_s.clamp(1, 10)));
            let (modbus, max_age) = match source {
                Source::Sim => continue,
                Source::ModbusRtu { unit, timeout_ms } => {
                    let (bus, rs485) = bus.as_ref().context("a device on the RS485 bus")?;
                    let unit = unit.unwrap_or(device.modbus_addr());
                    let timeout = Duration::from_millis(timeout_ms.unwrap_or(rs485.timeout_ms));
                    // The bus serves one request at a time: a round of every device on it,
                    // each silent (two requests a meter), must not make a reading stale.
                    let round = (timeout + Duration::from_millis(rs485.gap_ms))
                        * u32::try_from(2 * on_bus).unwrap_or(u32::MAX);
                    (
                        ModbusDevice::rtu(bus.clone(), unit, timeout),
                        period * 3 + round,
                    )
                }
                Source::ModbusTcp {
                    host: server,
                    port,
                    unit,
                    timeout_ms,
                } => {
                    let addr = source::resolve(server, *port)?;
                    let unit = unit.unwrap_or(device.modbus_addr());
                    let timeout = Duration::from_millis(*timeout_ms);
                    (ModbusDevice::tcp(addr, unit, timeout), period * 3)
                }
            };
            let target = match &device.kind {
                DeviceKind::Meter(m) => PollTarget::Meter { phases: m.phases },
                DeviceKind::Relay(_) => PollTarget::Relay,
            };
            let cache = Arc::new(Mutex::new(Cached::default()));
            host.add_modbus(*slot, cache.clone(), max_age);
            let (switch_tx, switch_rx) = mpsc::channel(8);
            relay_switches.insert(*slot, switch_tx);
            tasks.spawn(source::poll_modbus(
                modbus,
                *slot,
                target,
                period,
                cache,
                switch_rx,
                cancel.child_token(),
            ));
        }

        let epoch = Instant::now();
        let mut gateway = Gateway::new(config.clone(), host, 0, wall_now())
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        match store.load::<GatewaySnapshot>() {
            Ok(Some(snapshot)) => {
                let queued: usize = snapshot.queues.iter().map(|q| q.messages.len()).sum();
                info!(%serial, queued, "restored the store-and-forward queues");
                gateway.restore(snapshot);
            }
            Ok(None) => {}
            Err(error) => {
                error!(%serial, %error, path = %store.path().display(),
                    "cannot read the saved state; starting with empty queues");
            }
        }

        let (actions_tx, actions_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            serial: serial.clone(),
            gateway: Mutex::new(gateway),
            wakes: [Arc::new(Notify::new()), Arc::new(Notify::new())],
            actions: actions_tx,
            documents: Mutex::new(HashMap::new()),
            layouts: [
                config.links[0].layout.clone(),
                config.links[1].layout.clone(),
            ],
            published: [AtomicU64::new(0), AtomicU64::new(0)],
            epoch,
        });

        let mut controls = Vec::new();
        for (n, link) in resolved.links.iter().enumerate() {
            if !link.enabled {
                continue;
            }
            let settings = LinkSettings::new(&serial, n, link)?;
            let (control_tx, control_rx) = mpsc::channel(4);
            controls.push(control_tx);
            tasks.spawn(mqtt::run_link(
                settings,
                shared.clone(),
                shared.wakes[n].clone(),
                control_rx,
                cancel.child_token(),
            ));
        }

        tasks.spawn(clock(shared.clone(), store.clone(), cancel.child_token()));
        tasks.spawn(carry_out(
            shared.clone(),
            store.clone(),
            actions_rx,
            controls,
            relay_switches,
            cancel.child_token(),
        ));

        let rest_addr = match resolved.rest_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("REST API on {addr}"))?;
                let local = listener.local_addr()?;
                let router = rest::router(shared.clone(), resolved.rest_login.clone());
                let stop = cancel.child_token();
                tasks.spawn(async move {
                    let serve = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { stop.cancelled().await });
                    if let Err(error) = serve.await {
                        error!(%error, "REST API failed");
                    }
                });
                info!(%serial, addr = %local, "REST API listening");
                Some(local)
            }
            None => None,
        };
        info!(%serial, state = %store.path().display(), "gateway started");
        Ok(Self {
            shared,
            store,
            cancel,
            tasks,
            rest_addr,
        })
    }

    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Carries out a core action as if a command had asked for it (tests, fault injection).
    pub fn act(&self, action: Action) {
        let _ = self.shared.actions.send(action);
    }

    /// Injects a fault now (what `POST /faults` does).
    ///
    /// # Errors
    /// A device fault for a slot without a simulated meter; nothing changes then.
    pub fn inject(&self, fault: Fault) -> Result<(), FaultRefused> {
        self.shared.inject(fault)
    }

    /// Injects `fault` once `after` has passed (`--fault-after`); a refused fault is logged.
    pub fn inject_after(&mut self, after: Duration, fault: Fault) {
        let shared = self.shared.clone();
        let cancel = self.cancel.child_token();
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(after) => {
                    // Refusals are logged by `inject`.
                    let _ = shared.inject(fault);
                }
            }
        });
    }

    /// Runs a closure on the core (tests: injecting faults, inspecting relays).
    pub fn with_core<T>(&self, f: impl FnOnce(&mut Gateway<HostSource>) -> T) -> T {
        let mut gateway = self.shared.lock();
        let result = f(&mut gateway);
        self.shared.after_core_call(&mut gateway);
        result
    }

    /// Stops every task, disconnects cleanly and saves the queues.
    ///
    /// # Errors
    /// The state cannot be saved.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        while let Some(result) = self.tasks.join_next().await {
            if let Err(error) = result {
                if error.is_panic() {
                    error!(%error, "a gateway task panicked");
                }
            }
        }
        let snapshot = self.shared.lock().snapshot();
        save(&self.store, snapshot).await?;
        info!(serial = %self.shared.serial, "gateway stopped, state saved");
        Ok(())
    }
}

async fn save(store: &StateStore, snapshot: GatewaySnapshot) -> anyhow::Result<()> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.save(&snapshot))
        .await
        .context("state writer")?
        .context("cannot save the state")
}

/// Ticks the core when it has something due and saves the queues after every push cycle.
async fn clock(shared: Arc<Shared>, store: StateStore, cancel: CancellationToken) {
    let mut saved = None;
    loop {
        let next = shared.lock().next_wakeup_ms();
        // At least 1 ms apart: a push due at a wall second the clock has not reached yet
        // would otherwise be retried in a busy loop.
        let at = next.map_or(u64::MAX / 2, |ms| ms.max(shared.now_ms() + 1));
        let deadline = shared.epoch + Duration::from_millis(at);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
        let snapshot = {
            let mut gateway = shared.lock();
            gateway.tick(shared.now_ms(), wall_now());
            shared.after_core_call(&mut gateway);
            gateway.snapshot()
        };
        for wake in &shared.wakes {
            wake.notify_one();
        }
        if saved.as_ref() != Some(&snapshot) {
            if let Err(error) = save(&store, snapshot.clone()).await {
                error!(serial = %shared.serial, error = format!("{error:#}"), "cannot save the queues");
            }
            saved = Some(snapshot);
        }
    }
}

/// Carries out what the core asks for.
async fn carry_out(
    shared: Arc<Shared>,
    store: StateStore,
    mut actions: mpsc::UnboundedReceiver<Action>,
    links: Vec<mpsc::Sender<LinkControl>>,
    relay_switches: HashMap<Slot, mpsc::Sender<bool>>,
    cancel: CancellationToken,
) {
    let offline = |duration: Duration| {
        for link in &links {
            let _ = link.try_send(LinkControl::Offline(duration));
        }
    };
    loop {
        let action = tokio::select! {
            () = cancel.cancelled() => return,
            Some(action) = actions.recv() => action,
        };
        match action {
            Action::SwitchRelay { slot, on } => {
                info!(serial = %shared.serial, ?slot, on, "switching relay");
                if let Some(switch) = relay_switches.get(&slot) {
                    let _ = switch.send(on).await;
                } else {
                    // The load switches now, not at the last push: advance the meters first.
                    let mut gateway = shared.lock();
                    shared.catch_up(&mut gateway);
                    gateway.source_mut().sim_mut().switch_relay(slot, on);
                    shared.after_core_call(&mut gateway);
                }
            }
            Action::GoOffline { secs } => offline(Duration::from_secs(secs.into())),
            Action::Reboot => {
                // The process stays up (the simulated meters keep their energy); the SG's
                // reboot is visible as saved state, dropped links and a fresh hello.
                info!(serial = %shared.serial, "reboot: saving state and reconnecting");
                let snapshot = shared.lock().snapshot();
                if let Err(error) = save(&store, snapshot).await {
                    error!(error = format!("{error:#}"), "cannot save the queues");
                }
                offline(Duration::from_secs(1));
            }
        }
        for wake in &shared.wakes {
            wake.notify_one();
        }
    }
}
