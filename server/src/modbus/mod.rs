//! Modbus TCP polling of RS485/IP converters (Legrand-style installations: meters and relays
//! on RS485 behind a converter; the head-end polls them).
//!
//! - [`config`]: `[modbus]` in the configuration, converters declared in the file.
//! - [`store`]: converters (gateway rows of kind `converter`) and their polled devices,
//!   communication state, the counter reset log.
//! - [`bus`]: one task per converter, the bus discipline (one request at a time, a gap
//!   between frames, a timeout per request, retries, backoff of failing devices, reconnects),
//!   relay writes and counter resets.
//! - [`ModbusService`]: the supervisor (task `modbus`): one bus task per enabled converter
//!   whose lease this instance holds (one instance polls each converter), restarted when its
//!   configuration changes ([`ModbusHandle::changed`]).
//! - [`remote`]: counter resets asked on another instance, carried out by the bus's owner.
//!
//! Polled values are journaled (`RecordKind::Polled`) and stored by the ingest writers like
//! everything else, so profiles, relay confirmation and dashboards need nothing new.

pub mod bus;
pub mod config;
pub mod remote;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use headend_modbus_map::{MapLibrary, RegisterMap};
use sg_wire::command::RelayAction;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::infra::cluster::Leases;
use crate::ingest::IngestSink;
use config::ModbusConfig;

#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The converter could not carry out a write (not polled, link down, device error).
    #[error("{0}")]
    Bus(String),
    #[error("register maps: {0}")]
    Maps(#[from] headend_modbus_map::MapError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The register maps Headend knows: built in, plus `modbus.maps_dir`.
#[derive(Clone)]
pub struct Maps(Arc<MapLibrary>);

impl Maps {
    pub fn load(config: &ModbusConfig) -> Result<Self, ModbusError> {
        let mut library = MapLibrary::builtin();
        if let Some(dir) = &config.maps_dir {
            let n = library.load_dir(dir)?;
            tracing::info!(dir = %dir.display(), maps = n, "Modbus register maps loaded");
        }
        Ok(Self(Arc::new(library)))
    }

    pub fn builtin() -> Self {
        Self(Arc::new(MapLibrary::builtin()))
    }

    pub fn get(&self, model: &str) -> Option<&RegisterMap> {
        self.0.get(model)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.models().into_iter().map(str::to_owned).collect()
    }
}

/// A request for a converter's bus task, executed between polls.
#[derive(Debug)]
pub enum BusRequest {
    /// Switch a relay (then read its state back), or just read its state.
    Relay { unit: u8, action: RelayAction },
    /// Write a counter's reset register, then read the device.
    ResetCounter {
        unit: u8,
        counter: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// How long a counter reset is waited for, here or through another instance.
pub const RESET_WITHIN: Duration = Duration::from_secs(30);

/// Shared with the API and the relay dispatcher: the maps, the settings, the running buses.
#[derive(Clone)]
pub struct ModbusHandle {
    maps: Maps,
    settings: Arc<ModbusConfig>,
    buses: Arc<RwLock<HashMap<i64, mpsc::Sender<BusRequest>>>>,
    reload: Arc<Notify>,
    /// Reaches the other instances' buses ([`remote`]); without it only local buses are.
    pool: Option<PgPool>,
}

impl ModbusHandle {
    pub fn new(maps: Maps, settings: ModbusConfig) -> Self {
        Self {
            maps,
            settings: Arc::new(settings),
            buses: Arc::default(),
            reload: Arc::default(),
            pool: None,
        }
    }

    /// Counter resets of converters polled by another instance are asked through `pool`.
    #[must_use]
    pub fn with_pool(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// A handle with the built-in maps and default settings that reaches no bus (tests of
    /// the web layer).
    pub fn detached() -> Self {
        Self::new(Maps::builtin(), ModbusConfig::default())
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn settings(&self) -> &ModbusConfig {
        &self.settings
    }

    /// Converters or their devices changed: the supervisor reloads them.
    pub fn changed(&self) {
        self.reload.notify_one();
    }

    /// This instance polls `converter` from now on (it holds its lease).
    fn attach(&self, converter: i64, bus: mpsc::Sender<BusRequest>) {
        self.buses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(converter, bus);
    }

    fn detach(&self, converter: i64) {
        self.buses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&converter);
    }

    fn bus(&self, converter: i64) -> Option<mpsc::Sender<BusRequest>> {
        self.buses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&converter)
            .cloned()
    }

    /// The converters whose bus runs here.
    fn attached(&self) -> Vec<i64> {
        self.buses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Queues a relay action on a converter's bus; false when the converter is not polled by
    /// this instance (another instance holds its lease: the command stays queued, and that
    /// instance's dispatcher sends it through its bus) or its queue is full (the dispatcher
    /// tries again on its next tick). So a relay is only ever switched by the instance
    /// polling its converter.
    pub fn relay(&self, converter: i64, unit: i16, action: RelayAction) -> bool {
        let (Some(bus), Ok(unit)) = (self.bus(converter), u8::try_from(unit)) else {
            return false;
        };
        bus.try_send(BusRequest::Relay { unit, action }).is_ok()
    }

    /// Writes a counter's reset register through the converter's bus and waits for the
    /// outcome (at most [`RESET_WITHIN`]): through the local bus when this instance polls the
    /// converter, otherwise asked of the instance that does ([`remote`]).
    pub async fn reset_counter(
        &self,
        converter: i64,
        unit: i16,
        counter: &str,
    ) -> Result<(), ModbusError> {
        u8::try_from(unit).map_err(|_| ModbusError::Invalid("unit id".into()))?;
        match (&self.pool, self.bus(converter)) {
            (Some(pool), None) => {
                remote::ask_reset(pool, converter, unit, counter, RESET_WITHIN).await
            }
            _ => {
                self.reset_here(converter, unit, counter, RESET_WITHIN)
                    .await
            }
        }
    }

    /// A counter reset through this instance's bus of `converter`, waited for at most `within`.
    /// A request still queued when the wait ends is dropped by the bus, never written later.
    async fn reset_here(
        &self,
        converter: i64,
        unit: i16,
        counter: &str,
        within: Duration,
    ) -> Result<(), ModbusError> {
        let bus = self
            .bus(converter)
            .ok_or_else(|| ModbusError::Bus("the converter is not being polled".into()))?;
        let unit = u8::try_from(unit).map_err(|_| ModbusError::Invalid("unit id".into()))?;
        let asked = async {
            let (reply, answer) = oneshot::channel();
            bus.send(BusRequest::ResetCounter {
                unit,
                counter: counter.to_owned(),
                reply,
            })
            .await
            .map_err(|_| ModbusError::Bus("the converter's bus stopped".into()))?;
            match answer.await {
                Ok(result) => result.map_err(ModbusError::Bus),
                Err(_) => Err(ModbusError::Bus("the converter's bus stopped".into())),
            }
        };
        tokio::time::timeout(within, asked)
            .await
            .unwrap_or_else(|_| {
                Err(ModbusError::Bus(format!(
                    "the converter's bus did not carry out the reset within {} s",
                    within.as_secs()
                )))
            })
    }
}

/// The `modbus` task: keeps one bus task per enabled converter, as configured in the database,
/// for the converters whose lease this instance holds.
///
/// Several instances share the database, and a converter answers one request at a time: each
/// converter is polled by the one instance holding lease `modbus:converter:<id>`. Every pass
/// (a third of the lease's time to live) the supervisor looks for converters whose lease is
/// free or expired and starts an owner task for each: it takes the lease, keeps it renewed
/// ([`Leases::hold`]), runs the bus while it holds it and stops it at once when it is lost.
/// A clean stop releases the lease, so a rolling restart hands the converter over within one
/// pass; a dead instance's converters are taken over once their lease expires.
pub struct ModbusService {
    pool: PgPool,
    leases: Leases,
    ctx: BusContext,
}

/// What an owner task needs to build and run its bus.
#[derive(Clone)]
struct BusContext {
    pool: PgPool,
    sink: IngestSink,
    handle: ModbusHandle,
    metrics: Arc<crate::infra::metrics::Metrics>,
}

type BusConfig = (store::BusConverter, Vec<store::BusDevice>);

/// An owner task of this instance (waiting for the lease, or running the bus).
struct Running {
    config: BusConfig,
    /// A changed configuration restarts the bus under the same lease.
    update: watch::Sender<BusConfig>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    /// The supervisor dropped without stopping (its task aborted): the bus must not outlive it.
    /// The lease is then not released but expires (see [`crate::infra::cluster::Held`]).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Configuration is re-read this often even without a change notice (another instance, or a
/// direct database edit).
const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// The lease that makes an instance the one polling converter `id`.
pub fn converter_lease(id: i64) -> String {
    format!("modbus:converter:{id}")
}

impl ModbusService {
    pub fn new(
        pool: PgPool,
        sink: IngestSink,
        handle: ModbusHandle,
        metrics: Arc<crate::infra::metrics::Metrics>,
        leases: Leases,
    ) -> Self {
        Self {
            pool: pool.clone(),
            leases,
            ctx: BusContext {
                pool,
                sink,
                handle,
                metrics,
            },
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let mut running: HashMap<i64, Running> = HashMap::new();
        let mut wanted: HashMap<i64, BusConfig> = HashMap::new();
        // Leases are renewed every third of their time to live; converters are looked at as
        // often, so a released or expired one is taken within that.
        let pass = (self.leases.ttl() / 3).min(RELOAD_EVERY);
        let mut reload_due = Instant::now();
        // Counter resets asked on other instances, for the buses running here (stopped with
        // the supervisor, even when it is dropped).
        let remote_stop = shutdown.child_token();
        let _remote_guard = remote_stop.clone().drop_guard();
        let remote = tokio::spawn(remote::serve(
            self.pool.clone(),
            self.ctx.handle.clone(),
            self.leases.owner().as_str().to_owned(),
            remote_stop,
        ));
        loop {
            if Instant::now() >= reload_due {
                match store::load_buses(&self.pool).await {
                    Ok(w) => {
                        wanted = w.into_iter().map(|w| (w.0.id, w)).collect();
                        reload_due = Instant::now() + RELOAD_EVERY;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot load Modbus converters; retried"),
                }
            }
            self.apply(&mut running, &wanted, &shutdown).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.ctx.handle.reload.notified() => reload_due = Instant::now(),
                () = tokio::time::sleep(pass) => {}
            }
        }
        for r in running.values() {
            r.stop.cancel();
        }
        for (_, mut r) in running.drain() {
            let _ = (&mut r.task).await;
        }
        let _ = remote.await;
        Ok(())
    }

    async fn apply(
        &self,
        running: &mut HashMap<i64, Running>,
        wanted: &HashMap<i64, BusConfig>,
        shutdown: &CancellationToken,
    ) {
        let stale: Vec<i64> = running
            .iter()
            .filter(|(id, r)| !wanted.contains_key(id) || r.task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(mut r) = running.remove(&id) {
                r.stop.cancel();
                let _ = (&mut r.task).await;
            }
        }
        for (id, r) in running.iter_mut() {
            if let Some(config) = wanted.get(id).filter(|c| **c != r.config) {
                r.config = config.clone();
                r.update.send_replace(config.clone());
            }
        }
        let candidates: Vec<String> = wanted
            .keys()
            .filter(|id| !running.contains_key(id))
            .map(|id| converter_lease(*id))
            .collect();
        if candidates.is_empty() {
            return;
        }
        // One query for all: owner tasks are started only for converters no other instance
        // holds, so a fleet of converters polled elsewhere costs one statement per pass.
        let elsewhere: Vec<String> = match sqlx::query_scalar(
            "SELECT name FROM leases
             WHERE name = ANY($1) AND owner <> $2 AND expires_at > now()",
        )
        .bind(&candidates)
        .bind(self.leases.owner().as_str())
        .fetch_all(&self.pool)
        .await
        {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read converter leases; retried");
                return;
            }
        };
        for (id, config) in wanted {
            if running.contains_key(id) || elsewhere.contains(&converter_lease(*id)) {
                continue;
            }
            let (update, updates) = watch::channel(config.clone());
            let stop = shutdown.child_token();
            let task = tokio::spawn(own(
                self.ctx.clone(),
                self.leases.clone(),
                *id,
                updates,
                stop.clone(),
            ));
            running.insert(
                *id,
                Running {
                    config: config.clone(),
                    update,
                    stop,
                    task,
                },
            );
        }
    }
}

/// Why a bus run ended.
enum Ended {
    /// The bus returned by itself.
    Itself,
    /// The lease was lost, or the supervisor stopped this owner.
    Lost,
    /// The configuration changed: run the bus again under the same lease.
    Changed,
}

/// One converter's owner task: takes its lease (waiting while another instance holds it), runs
/// the bus while holding it, restarts the bus on a configuration change, and lets the lease go
/// when stopped.
async fn own(
    ctx: BusContext,
    leases: Leases,
    id: i64,
    mut config: watch::Receiver<BusConfig>,
    stop: CancellationToken,
) {
    let name = converter_lease(id);
    let Some(held) = leases.hold(&name, &stop).await else {
        return;
    };
    tracing::info!(
        converter = id,
        token = held.token,
        "converter lease taken; polled here"
    );
    let lost = held.lost().clone();
    loop {
        let current = config.borrow_and_update().clone();
        let (tx, rx) = mpsc::channel(64);
        let bus = bus::Bus::new(
            current.0.clone(),
            &current.1,
            &ctx.handle.maps,
            bus::BusSettings::from_config(&ctx.handle.settings, &current.0),
            ctx.pool.clone(),
            ctx.sink.clone(),
            ctx.metrics.clone(),
        );
        let bus_stop = lost.child_token();
        let run = bus.run(rx, bus_stop.clone());
        tokio::pin!(run);
        ctx.handle.attach(id, tx);
        let ended = tokio::select! {
            () = &mut run => Ended::Itself,
            () = lost.cancelled() => Ended::Lost,
            changed = config.changed() => match changed {
                Ok(()) => Ended::Changed,
                Err(_) => Ended::Lost,
            },
        };
        // Requests go nowhere from now on (a relay command stays queued for the next owner).
        ctx.handle.detach(id);
        bus_stop.cancel();
        if !matches!(ended, Ended::Itself) {
            run.await;
        }
        if !matches!(ended, Ended::Changed) {
            break;
        }
    }
    if lost.is_cancelled() && !stop.is_cancelled() {
        tracing::warn!(converter = id, "converter lease lost; polling stopped here");
    }
    held.release().await;
}
