//! `App::build` binds every listener and starts every dependency; `App::run` supervises the
//! named tasks until shutdown, and one task failing stops them all.

use std::net::SocketAddr;
use std::sync::Arc;

use headend_journal::{Journal, JournalOptions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::accounting::worker::ProfileWorker;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::infra::cluster::{InstanceId, Leases};
use crate::infra::datadir::{DataDir, Runtime, ServeLock};
use crate::infra::db::Database;
use crate::infra::metrics::{Gauges, Metrics};
use crate::ingest::{Ingest, IngestSettings};
use crate::mqtt::{EmbeddedMqtt, GatewayPolicy, JournalTap};
use crate::{fleet::gateways, web};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    DataDir(#[from] crate::infra::datadir::DataDirError),
    #[error(transparent)]
    Db(#[from] crate::infra::db::DbError),
    #[error("{0}")]
    Journal(#[from] headend_journal::JournalError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error(transparent)]
    Keys(#[from] crate::auth::token::KeyError),
    #[error("cannot listen for HTTP on {addr}: {source}; set HEADEND_HTTP_ADDR to a free address")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("task {name} failed: {message}")]
    Task { name: &'static str, message: String },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("modbus: {0}")]
    Modbus(#[from] crate::modbus::ModbusError),
    #[error(transparent)]
    XmlPush(#[from] crate::xml_push::XmlPushError),
    #[error(transparent)]
    Instance(#[from] crate::infra::cluster::InstanceIdError),
}

pub struct App {
    config: Config,
    lock: ServeLock,
    db: Database,
    journal: Arc<Journal>,
    ingest: Arc<Ingest>,
    http: tokio::net::TcpListener,
    http_addr: SocketAddr,
    mqtt: Option<EmbeddedMqtt>,
    /// For the external broker's client; the embedded broker took its queue at start.
    command_queue: Option<crate::mqtt::CommandQueue>,
    commands: crate::mqtt::CommandSender,
    tap: Arc<JournalTap>,
    web: web::WebState,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// MiSmart XML push: the TCP listener (when configured) and the document handler.
    xml_push: Option<crate::xml_push::listener::XmlPushListener>,
    xml_push_handler: Arc<crate::xml_push::XmlPush>,
    /// This instance among those sharing the database, and its leases.
    instance: InstanceId,
    leases: Leases,
}

impl App {
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let data = DataDir::prepare(&config.data_dir)?;
        let lock = data.lock()?;
        let keys = match &config.auth.jwt_secret {
            Some(secret) => TokenKeys::new(secret.expose().as_bytes(), config.auth.token_ttl_secs),
            None => TokenKeys::load_or_generate(&data.jwt_key(), config.auth.token_ttl_secs)?,
        };
        let instance =
            InstanceId::resolve(config.cluster.instance.as_deref(), &data.instance_file())?;
        let db = Database::open(&config, &data).await?;
        let leases = Leases::new(
            db.pool.clone(),
            instance.clone(),
            config.cluster.lease_ttl(),
        );
        // Month partitions due exist before the first ingest batch (docs/retention.md).
        crate::retention::ensure_partitions(&db.pool, &config.retention).await?;
        // Our previous process's sessions died with it; other instances' sessions are theirs
        // (those of dead instances: the `sessions` reaper below).
        gateways::mark_own_offline(&db.pool, &instance).await?;
        let metrics = Arc::new(Metrics::default());

        let journal = Journal::open(
            &data.journal_dir(),
            JournalOptions {
                max_bytes: config.ingest.journal_max_bytes,
                ..JournalOptions::default()
            },
        )?;
        let (commands, command_queue) = crate::mqtt::CommandSender::channel();
        let ingest = Arc::new(
            Ingest::new(
                journal,
                db.pool.clone(),
                metrics.clone(),
                IngestSettings {
                    writers: config.ingest.writers,
                    batch_max_messages: config.ingest.batch_max_messages,
                    batch_linger: std::time::Duration::from_millis(config.ingest.batch_linger_ms),
                    clock_tolerance: chrono::Duration::seconds(
                        i64::try_from(config.ingest.clock_tolerance_secs).unwrap_or(i64::MAX / 4),
                    ),
                },
                Some(commands.clone()),
            )
            .await?
            .with_energy_limits(&config.energy)
            .with_instance(Some(instance.clone())),
        );
        let journal = ingest.journal();

        let (mqtt, command_queue) = match &config.mqtt.external_url {
            Some(_) => (None, Some(command_queue)),
            None => (
                Some(EmbeddedMqtt::start(&config.mqtt, command_queue).await?),
                None,
            ),
        };
        let http = tokio::net::TcpListener::bind(config.http.addr)
            .await
            .map_err(|source| AppError::HttpBind {
                addr: config.http.addr,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| AppError::HttpBind {
            addr: config.http.addr,
            source,
        })?;

        let tap = JournalTap::new(ingest.sink(), "mqtt");
        let xml_push_handler =
            crate::xml_push::XmlPush::new(db.pool.clone(), ingest.sink(), metrics.clone());
        let xml_push = match config.xml_push.addr {
            Some(addr) => Some(
                crate::xml_push::listener::XmlPushListener::bind(
                    crate::xml_push::listener::ListenerSettings::from_config(
                        addr,
                        &config.xml_push,
                    ),
                )
                .await?,
            ),
            None => None,
        };
        let gauges = {
            let journal = journal.clone();
            let tap = tap.clone();
            let gate_stats = mqtt.as_ref().map(EmbeddedMqtt::stats).unwrap_or_default();
            let pool = db.pool.clone();
            Arc::new(move || {
                let j = journal.stats();
                let gates: Vec<_> = gate_stats.iter().map(|s| s.snapshot()).collect();
                Gauges {
                    journal_pending_records: j.pending_records,
                    journal_bytes: j.bytes_on_disk,
                    journal_last_seq: j.last_seq,
                    journal_checkpoint: j.checkpoint,
                    mqtt_connections: gates.iter().map(|g| g.connections_active).sum(),
                    mqtt_publishes_denied: gates.iter().map(|g| g.publishes_denied).sum(),
                    mqtt_violations_not_journaled: tap.violations_dropped(),
                    db_pool_size: u64::from(pool.size()),
                    db_pool_idle: pool.num_idle() as u64,
                }
            })
        };
        let on_gateways_changed = {
            let ingest = ingest.clone();
            Arc::new(move || {
                let ingest = ingest.clone();
                tokio::spawn(async move {
                    ingest.reload_directory().await;
                });
            })
        };
        let modbus = crate::modbus::ModbusHandle::new(
            crate::modbus::Maps::load(&config.modbus)?,
            config.modbus.clone(),
        )
        .with_pool(db.pool.clone());
        // Converters declared in the file are upserted at every start.
        crate::modbus::store::apply_config(
            &db.pool,
            modbus.maps(),
            &config.modbus,
            config.ingest.default_time_zone,
        )
        .await?;
        let web = web::WebState {
            pool: db.pool.clone(),
            read_pool: db.read_pool.clone(),
            keys,
            metrics: metrics.clone(),
            gauges,
            default_time_zone: config.ingest.default_time_zone,
            secure_cookies: config.http.secure_cookies,
            on_gateways_changed,
            energy_wake: ingest.energy_wake(),
            commands_wake: ingest.commands_wake(),
            command_timing: config.commands.timing(),
            alarms: crate::alarms::AlarmsHandle::default(),
            modbus,
            metrics_token: config.http.metrics_token.clone(),
            login_throttle: Arc::new(crate::auth::throttle::Throttle::new(
                crate::auth::throttle::Limits::LOGIN,
            )),
            northbound: Arc::new(config.northbound.clone()),
        };

        lock.publish(&Runtime {
            pid: std::process::id(),
            embedded_database_url: db.embedded_url().map(str::to_owned),
            http_addr: http_addr.to_string(),
            mqtt_addr: mqtt.as_ref().map(|m| m.plain.local_addr().to_string()),
        })?;

        Ok(Self {
            config,
            lock,
            db,
            journal,
            ingest,
            http,
            http_addr,
            mqtt,
            command_queue,
            commands,
            tap,
            web,
            metrics,
            shutdown: CancellationToken::new(),
            xml_push,
            xml_push_handler,
            instance,
            leases,
        })
    }

    /// This instance's name among those sharing the database.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The plain MQTT listener of the embedded broker (none with an external broker).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().map(|m| m.plain.local_addr())
    }

    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.mqtt
            .as_ref()
            .and_then(|m| m.tls.as_ref().map(|g| g.local_addr()))
    }

    /// The MiSmart XML push listener, when configured.
    pub fn xml_push_addr(&self) -> Option<SocketAddr> {
        self.xml_push.as_ref().map(|l| l.local_addr())
    }

    pub fn pool(&self) -> sqlx::PgPool {
        self.db.pool.clone()
    }

    /// Publishes to gateways' command topics (through the embedded broker or the external one).
    pub fn commands(&self) -> crate::mqtt::CommandSender {
        self.commands.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Cancelling this token stops the app (what SIGTERM does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled or a task fails, then stops every task,
    /// flushes the journal and stops the embedded database.
    pub async fn run(self) -> Result<(), AppError> {
        let Self {
            config,
            lock,
            db,
            journal,
            ingest,
            http,
            http_addr,
            mqtt,
            command_queue,
            commands,
            tap,
            web,
            metrics,
            shutdown,
            xml_push,
            xml_push_handler,
            instance,
            leases,
        } = self;
        let mut tasks: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();
        {
            let heartbeat = crate::infra::cluster::heartbeat(
                db.pool.clone(),
                instance.clone(),
                leases.ttl(),
                (
                    Some(http_addr.to_string()),
                    mqtt.as_ref().map(|m| m.plain.local_addr().to_string()),
                ),
                shutdown.clone(),
            );
            tasks.spawn(async move { ("instance-heartbeat", heartbeat.await) });
        }
        {
            // What another instance (or an admin command) changed reloads here at once.
            use crate::infra::changes::Change;
            let web = web.clone();
            let on_change: crate::infra::changes::OnChange = Arc::new(move |change| match change {
                Change::Gateways => web.gateways_changed(),
                Change::Converters => web.modbus.changed(),
                Change::AlarmRules => web.alarms.rules_changed.notify_one(),
            });
            let listen =
                crate::infra::changes::listen(db.pool.clone(), on_change, shutdown.clone());
            tasks.spawn(async move { ("change-notices", listen.await) });
        }
        {
            // Partitions ahead, raw measurements downsampled and dropped: one instance, daily.
            let retention = crate::retention::run(
                db.pool.clone(),
                config.retention.clone(),
                leases.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move { ("retention", retention.await) });
        }
        {
            // Gateways left online by instances that died without closing their sessions.
            let reaper =
                crate::fleet::sessions::run(db.pool.clone(), leases.clone(), shutdown.clone());
            tasks.spawn(async move { ("sessions-reaper", reaper.await) });
        }

        {
            let shutdown = shutdown.clone();
            let ingest = ingest.clone();
            tasks.spawn(async move {
                (
                    "ingest",
                    ingest.run(shutdown).await.map_err(|e| e.to_string()),
                )
            });
        }
        // The alarm evaluator's feed: ingest hands it measurements, the profile worker its
        // quarter-hours, the timers their observations.
        let (feed, engine) =
            crate::alarms::engine::channel(db.pool.clone(), web.alarms.clone(), metrics.clone());
        {
            let worker = ProfileWorker::new(
                db.pool.clone(),
                headend_energy::engine::Params {
                    tolerance_ms: i64::try_from(config.energy.interval_tolerance_secs)
                        .unwrap_or(3600)
                        .saturating_mul(1000),
                },
                ingest.energy_wake(),
                metrics.clone(),
            )
            .with_energy_limits(&config.energy)
            .with_listener({
                let feed = feed.clone();
                Arc::new(move |changed| feed.energy_changed(changed))
            });
            let (shutdown, leases) = (shutdown.clone(), leases.clone());
            tasks.spawn(async move { ("profiles", worker.run(&leases, shutdown).await) });
        }
        {
            let dispatcher = crate::relays::dispatcher::Dispatcher::new(
                db.pool.clone(),
                commands.clone(),
                config.commands.timing(),
                ingest.commands_wake(),
            )
            .with_converters(web.modbus.clone())
            // The embedded broker's sessions are this instance's; an external broker's anyone's.
            .with_instance(config.mqtt.external_url.is_none().then(|| instance.clone()));
            let shutdown = shutdown.clone();
            tasks.spawn(async move { ("relay-commands", dispatcher.run(shutdown).await) });
        }
        {
            // Alarms: the evaluator (fed by ingest after each commit), the timer rules and
            // escalation, and the outbox sender.
            let handle = web.alarms.clone();
            ingest.attach_alarms(feed.clone());
            let s = shutdown.clone();
            tasks.spawn(async move { ("alarms", engine.run(s).await) });
            let timers = crate::alarms::timers::Timers {
                pool: db.pool.clone(),
                feed,
                period: std::time::Duration::from_secs(config.alarms.timer_period_secs.max(1)),
                handle: handle.clone(),
                leases: leases.clone(),
            };
            let s = shutdown.clone();
            tasks.spawn(async move { ("alarm-timers", timers.run(s).await) });
            let outbox = crate::alarms::outbox::settings(&config.alarms).map(|settings| {
                crate::alarms::outbox::OutboxSender {
                    pool: db.pool.clone(),
                    settings,
                    mqtt: commands.clone(),
                    timing: config.commands.timing(),
                    wake: handle.outbox_wake.clone(),
                    commands_wake: ingest.commands_wake(),
                    metrics: metrics.clone(),
                }
            });
            let s = shutdown.clone();
            tasks.spawn(async move {
                match outbox {
                    Ok(outbox) => ("alarm-outbox", outbox.run(s).await),
                    Err(e) => ("alarm-outbox", Err(e)),
                }
            });
        }
        {
            // Home Assistant MQTT discovery on external brokers (idle without brokers).
            let northbound = crate::northbound::run(
                db.pool.clone(),
                config.northbound.clone(),
                config.commands.timing(),
                ingest.commands_wake(),
                leases.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move { ("northbound", northbound.await) });
        }
        if config.modbus.enabled {
            let service = crate::modbus::ModbusService::new(
                db.pool.clone(),
                ingest.sink(),
                web.modbus.clone(),
                metrics.clone(),
                leases.clone(),
            );
            let shutdown = shutdown.clone();
            tasks.spawn(async move { ("modbus", service.run(shutdown).await) });
        }
        // One authenticator for MQTT and the XML HTTP push: one throttle allowance and one
        // verified-credential cache per gateway, whichever way it comes in.
        let gateway_auth = gateways::GatewayAuthenticator::with_key_file(
            db.pool.clone(),
            &config.data_dir.join(crate::fleet::credentials::KEY_FILE),
        )
        .await;
        {
            // The security headers wrap the merged router, so the XML push route has them too.
            let router = web::security_headers(
                web::router(web.clone(), config.http.max_body_bytes).merge(web::xml_push::router(
                    xml_push_handler.clone(),
                    gateway_auth.clone(),
                    metrics.clone(),
                )),
            );
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let served = axum::serve(
                    http,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
                ("http", served.map_err(|e| e.to_string()))
            });
        }
        match mqtt {
            Some(mqtt) => {
                let policy = Arc::new(GatewayPolicy {
                    auth: gateway_auth.clone(),
                    metrics: metrics.clone(),
                });
                for (name, gate) in
                    std::iter::once(("mqtt", mqtt.plain)).chain(mqtt.tls.map(|g| ("mqtts", g)))
                {
                    let (policy, tap, shutdown) = (policy.clone(), tap.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        gate.serve(policy, tap, shutdown).await;
                        (name, Ok(()))
                    });
                }
            }
            None => {
                let url = config
                    .mqtt
                    .external_url
                    .as_ref()
                    .map(|u| u.expose().to_owned())
                    .unwrap_or_default();
                let filter = config.mqtt.external_filter.clone();
                let (sink, shutdown) = (ingest.sink(), shutdown.clone());
                let commands =
                    command_queue.unwrap_or_else(|| crate::mqtt::CommandSender::channel().1);
                tasks.spawn(async move {
                    let result =
                        crate::mqtt::run_external(&url, &filter, sink, commands, shutdown).await;
                    ("mqtt-external", result.map_err(|e| e.to_string()))
                });
            }
        }
        if let Some(listener) = xml_push {
            let (handler, shutdown) = (xml_push_handler.clone(), shutdown.clone());
            tasks.spawn(async move {
                listener.serve(handler, shutdown).await;
                ("xml-push", Ok(()))
            });
        }
        drop(xml_push_handler);
        tracing::info!(http = %http_addr, "Headend running");

        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            let (name, result) = match joined {
                Ok(done) => done,
                Err(e) => ("unknown", Err(format!("panicked: {e}"))),
            };
            if !shutdown.is_cancelled() {
                // A task ending on its own, even cleanly, is a failure of the whole.
                let message = result
                    .err()
                    .unwrap_or_else(|| "stopped unexpectedly".into());
                tracing::error!(task = name, %message, "task ended; stopping Headend");
                failure.get_or_insert(AppError::Task { name, message });
                shutdown.cancel();
            } else if let Err(message) = result {
                tracing::warn!(task = name, %message, "task failed during shutdown");
            }
        }
        drop(web);
        drop(ingest);
        match Arc::try_unwrap(journal) {
            Ok(journal) => {
                if let Err(e) = journal.close().await {
                    tracing::warn!(error = %e, "journal did not close cleanly");
                }
            }
            Err(_) => tracing::debug!("journal still referenced at shutdown; closed on drop"),
        }
        db.close().await;
        drop(lock);
        tracing::info!("Headend stopped");
        failure.map_or(Ok(()), Err)
    }
}
