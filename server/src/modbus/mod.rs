//! Modbus TCP polling of RS485/IP converters (Legrand-style installations: meters and relays
//! on RS485 behind a converter; the head-end polls them).
//!
//! - [`config`]: `[modbus]` in the configuration, converters declared in the file.
//! - [`store`]: converters (gateway rows of kind `converter`) and their polled devices,
//!   communication state, the counter reset log.
//! - [`bus`]: one task per converter, the bus discipline (one request at a time, a gap
//!   between frames, a timeout per request, retries, backoff of failing devices, reconnects),
//!   relay writes and counter resets.
//! - [`ModbusService`]: the supervisor (task `modbus`): one bus task per enabled converter,
//!   restarted when its configuration changes ([`ModbusHandle::changed`]).
//!
//! Polled values are journaled (`RecordKind::Polled`) and stored by the ingest writers like
//! everything else, so profiles, relay confirmation and dashboards need nothing new.

pub mod bus;
pub mod config;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use headend_modbus_map::{MapLibrary, RegisterMap};
use sg_wire::command::RelayAction;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

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

/// Shared with the API and the relay dispatcher: the maps, the settings, the running buses.
#[derive(Clone)]
pub struct ModbusHandle {
    maps: Maps,
    settings: Arc<ModbusConfig>,
    buses: Arc<RwLock<HashMap<i64, mpsc::Sender<BusRequest>>>>,
    reload: Arc<Notify>,
}

impl ModbusHandle {
    pub fn new(maps: Maps, settings: ModbusConfig) -> Self {
        Self {
            maps,
            settings: Arc::new(settings),
            buses: Arc::default(),
            reload: Arc::default(),
        }
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

    fn bus(&self, converter: i64) -> Option<mpsc::Sender<BusRequest>> {
        self.buses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&converter)
            .cloned()
    }

    /// Queues a relay action on a converter's bus; false when the converter is not polled or
    /// its queue is full (the dispatcher tries again on its next tick).
    pub fn relay(&self, converter: i64, unit: i16, action: RelayAction) -> bool {
        let (Some(bus), Ok(unit)) = (self.bus(converter), u8::try_from(unit)) else {
            return false;
        };
        bus.try_send(BusRequest::Relay { unit, action }).is_ok()
    }

    /// Writes a counter's reset register through the converter's bus and waits for the
    /// outcome.
    pub async fn reset_counter(
        &self,
        converter: i64,
        unit: i16,
        counter: &str,
    ) -> Result<(), ModbusError> {
        let bus = self
            .bus(converter)
            .ok_or_else(|| ModbusError::Bus("the converter is not being polled".into()))?;
        let unit = u8::try_from(unit).map_err(|_| ModbusError::Invalid("unit id".into()))?;
        let (reply, answer) = oneshot::channel();
        bus.send(BusRequest::ResetCounter {
            unit,
            counter: counter.to_owned(),
            reply,
        })
        .await
        .map_err(|_| ModbusError::Bus("the converter's bus stopped".into()))?;
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(result)) => result.map_err(ModbusError::Bus),
            Ok(Err(_)) => Err(ModbusError::Bus("the converter's bus stopped".into())),
            Err(_) => Err(ModbusError::Bus(
                "the converter's bus did not carry out the reset within 30 s".into(),
            )),
        }
    }
}

/// The `modbus` task: keeps one bus task per enabled converter, as configured in the database.
pub struct ModbusService {
    pool: PgPool,
    sink: IngestSink,
    handle: ModbusHandle,
    metrics: Arc<crate::infra::metrics::Metrics>,
}

struct Running {
    config: (store::BusConverter, Vec<store::BusDevice>),
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Configuration is re-read this often even without a change notice (another instance, or a
/// direct database edit).
const RELOAD_EVERY: Duration = Duration::from_secs(60);

impl ModbusService {
    pub fn new(
        pool: PgPool,
        sink: IngestSink,
        handle: ModbusHandle,
        metrics: Arc<crate::infra::metrics::Metrics>,
    ) -> Self {
        Self {
            pool,
            sink,
            handle,
            metrics,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let mut running: HashMap<i64, Running> = HashMap::new();
        loop {
            match store::load_buses(&self.pool).await {
                Ok(wanted) => self.apply(&mut running, wanted, &shutdown).await,
                Err(e) => tracing::warn!(error = %e, "cannot load Modbus converters; retried"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.handle.reload.notified() => {}
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
        }
        for (_, r) in running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
        Ok(())
    }

    async fn apply(
        &self,
        running: &mut HashMap<i64, Running>,
        wanted: Vec<(store::BusConverter, Vec<store::BusDevice>)>,
        shutdown: &CancellationToken,
    ) {
        let wanted: HashMap<i64, _> = wanted.into_iter().map(|w| (w.0.id, w)).collect();
        let stale: Vec<i64> = running
            .iter()
            .filter(|(id, r)| wanted.get(id) != Some(&r.config) || r.task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(r) = running.remove(&id) {
                self.handle
                    .buses
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                r.stop.cancel();
                let _ = r.task.await;
            }
        }
        for (id, config) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(64);
            let stop = shutdown.child_token();
            let bus = bus::Bus::new(
                config.0.clone(),
                &config.1,
                &self.handle.maps,
                bus::BusSettings::from_config(&self.handle.settings, &config.0),
                self.pool.clone(),
                self.sink.clone(),
                self.metrics.clone(),
            );
            let task = tokio::spawn(bus.run(rx, stop.clone()));
            self.handle
                .buses
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            running.insert(id, Running { config, stop, task });
        }
    }
}
