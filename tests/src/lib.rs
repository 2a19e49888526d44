//! Test harness: a shared PostgreSQL cluster (one database per test), Headend started on port 0,
//! a real MQTT client, and an HTTP client ([`http`]).
//!
//! Waiting is always on a condition with a deadline (`eventually`), never a fixed sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod bench;
pub mod browser;
pub mod converter;
pub mod firmware;
pub mod http;
pub mod http_receiver;
pub mod mosquitto;
pub mod smtp_sink;

use anyhow::{bail, Context};
use headend::{App, Config};
use headend_pgembed::{Cluster, ClusterConfig, PgBinaries, RunAs, RunningCluster};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub use http::{http_request, raw_request, HttpResponse};

/// The wire contracts and fixtures, kept in the repository (`tests/fixtures`, see its
/// `ORIGIN.md`).
pub fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = spec_dir().join("sg-mqtt").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

static CLUSTER: OnceCell<SharedCluster> = OnceCell::const_new();

struct SharedCluster {
    cluster: RunningCluster,
}

/// One cluster for every test process of a run: started by whichever process comes first
/// (under a file lock), adopted by the others, left running for the next run.
async fn shared_cluster() -> &'static SharedCluster {
    CLUSTER
        .get_or_init(|| async {
            let root = std::env::temp_dir().join(format!("headend-test-pg-{}", uid()));
            std::fs::create_dir_all(&root).expect("test cluster dir");
            let lock_file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(root.join("lock"))
                .expect("test cluster lock file");
            let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("test cluster lock");
            let cluster = start_cluster(&root.join("data"), true)
                .await
                .expect("shared test PostgreSQL cluster");
            // Under the lock, so two processes never drop the same database.
            drop_orphan_databases(&cluster).await;
            drop(lock);
            SharedCluster { cluster }
        })
        .await
}

/// Drops the databases of test processes that have ended (their names carry the pid), so a
/// cluster that outlives many local runs does not fill the disk.
async fn drop_orphan_databases(cluster: &RunningCluster) {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(&cluster.url("postgres")).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let _ = conn.close().await;
    for name in names {
        let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive {
            if let Err(e) = cluster.drop_database(&name).await {
                eprintln!("could not drop old test database {name}: {e}");
            }
        }
    }
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Starts (or adopts) a cluster in `dir`.
pub async fn start_cluster(dir: &Path, fast: bool) -> anyhow::Result<RunningCluster> {
    let binaries = PgBinaries::locate(None)?;
    let mut config = ClusterConfig::new(dir, dir);
    config.run_as = RunAs::Auto;
    config.fast_unsafe = fast;
    config.settings = vec![("max_connections".into(), "300".into())];
    let cluster = Cluster::new(binaries, config)?;
    cluster.ensure_initialized().await?;
    Ok(cluster.start().await?)
}

/// A fresh database on the shared cluster.
pub async fn fresh_database() -> String {
    let shared = shared_cluster().await;
    let name = format!("t_{}", uuid_like());
    shared
        .cluster
        .create_database(&name)
        .await
        .expect("create test database");
    shared.cluster.url(&name)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    )
}

/// A test configuration: its own data directory, listeners on port 0, a fresh database.
pub async fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.http.addr = ([127, 0, 0, 1], 0).into();
    config.mqtt.addr = ([127, 0, 0, 1], 0).into();
    config.database.url = Some(headend::config::Secret::new(fresh_database().await));
    config.database.max_connections = 8;
    config.log.filter = "warn".into();
    config.http.metrics_token = Some(headend::config::Secret::new(METRICS_TOKEN));
    config
}

/// The `/metrics` scraper token of test configurations.
pub const METRICS_TOKEN: &str = "test-metrics-scraper-token";

pub struct TestApp {
    pub http: SocketAddr,
    pub mqtt: Option<SocketAddr>,
    pub mqtts: Option<SocketAddr>,
    /// The MiSmart XML push listener, when configured (`config.xml_push.addr`).
    pub xml_push: Option<SocketAddr>,
    pub pool: PgPool,
    pub shutdown: CancellationToken,
    /// Headend's own way to publish to gateways' command topics.
    pub commands: headend::mqtt::CommandSender,
    pub task: tokio::task::JoinHandle<Result<(), headend::app::AppError>>,
    pub data_dir: tempfile::TempDir,
    config: Config,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        // `HEADEND_TEST_LOG` (an EnvFilter, e.g. `headend=debug`) to see more of a failing test.
        let filter = std::env::var("HEADEND_TEST_LOG").unwrap_or_else(|_| "warn".into());
        headend::infra::telemetry::init(&filter, false);
        let data_dir = tempfile::Builder::new()
            .prefix("he")
            .tempdir()
            .expect("data dir");
        let mut config = test_config(data_dir.path()).await;
        adjust(&mut config);
        Self::start(config, data_dir).await
    }

    pub async fn start(config: Config, data_dir: tempfile::TempDir) -> Self {
        let app = App::build(config.clone()).await.expect("App::build");
        let (http, mqtt, mqtts, pool, shutdown, commands) = (
            app.http_addr(),
            app.mqtt_addr(),
            app.mqtts_addr(),
            app.pool(),
            app.shutdown_token(),
            app.commands(),
        );
        let xml_push = app.xml_push_addr();
        let task = tokio::spawn(app.run());
        Self {
            http,
            mqtt,
            mqtts,
            xml_push,
            pool,
            shutdown,
            commands,
            task,
            data_dir,
            config,
        }
    }

    /// Another instance on this app's database (issue 16: several instances, one truth): its own
    /// data directory, journal, listeners (port 0) and instance name, this app's configuration
    /// otherwise, then `adjust`. Tokens are shared only when `auth.jwt_secret` is configured.
    pub async fn spawn_peer(&self, adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("he")
            .tempdir()
            .expect("data dir");
        let mut config = self.config.clone();
        config.data_dir = data_dir.path().to_path_buf();
        config.http.addr = ([127, 0, 0, 1], 0).into();
        config.mqtt.addr = ([127, 0, 0, 1], 0).into();
        config.mqtt.tls_addr = ([127, 0, 0, 1], 0).into();
        if config.xml_push.addr.is_some() {
            config.xml_push.addr = Some(([127, 0, 0, 1], 0).into());
        }
        config.cluster.instance = None;
        adjust(&mut config);
        Self::start(config, data_dir).await
    }

    /// This app's configuration (as started).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The app's database, for a pool that outlives the app.
    pub fn database_url(&self) -> String {
        self.config
            .database
            .url
            .as_ref()
            .map(|u| u.expose().to_owned())
            .unwrap_or_default()
    }

    /// Stops the app and starts it again on the same configuration, database and data
    /// directory (a fixed MQTT port must be configured for clients to find it again).
    pub async fn restart(self) -> Self {
        let config = self.config.clone();
        let data_dir = self.stop().await;
        Self::start(config, data_dir).await
    }

    /// Stops the app; `resume` starts it again on the same configuration and data.
    pub async fn pause(self) -> Paused {
        let config = self.config.clone();
        Paused {
            data_dir: self.stop().await,
            config,
        }
    }

    /// Stops the app and waits for it.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.task
            .await
            .expect("app task")
            .expect("app ended with an error");
        self.data_dir
    }

    /// Registers a gateway directly in the database, returning its password.
    pub async fn gateway(&self, serial: &str, site: Option<i64>, zone: Option<&str>) -> String {
        let created = headend::fleet::gateways::create(
            &self.pool,
            headend::fleet::gateways::NewGateway {
                serial: serial.into(),
                site_id: site,
                time_zone: zone.map(|z| z.parse().expect("a known time zone")),
                ..Default::default()
            },
            headend::zone::TimeZone::UTC,
        )
        .await
        .expect("create gateway");
        created.password
    }

    pub async fn site(&self, name: &str, zone: &str) -> i64 {
        let zone = zone.parse().expect("a known time zone");
        headend::sites::create(&self.pool, name, zone)
            .await
            .expect("create site")
    }

    /// Creates a user and returns a session token for it.
    pub async fn user_token(&self, email: &str, role: &str, sites: &[i64]) -> String {
        let password = "correct horse battery staple";
        let id =
            headend::auth::users::create(&self.pool, email, role.parse().expect("role"), password)
                .await
                .expect("create user");
        for site in sites {
            headend::auth::users::grant_site(&self.pool, id, *site)
                .await
                .expect("grant");
        }
        let response = self
            .request(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(response.status, 200, "login: {}", response.body);
        response.json()["token"].as_str().expect("token").to_owned()
    }

    pub async fn get(&self, path: &str, token: &str) -> HttpResponse {
        self.request("GET", path, Some(token), None).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> HttpResponse {
        http_request(self.http, method, path, token, body)
            .await
            .expect("HTTP request")
    }

    /// An MQTT client connected as a gateway; events are driven in the background.
    pub async fn gateway_client(&self, serial: &str, password: &str) -> MqttClient {
        MqttClient::connect(
            self.mqtt.expect("embedded MQTT"),
            &format!("{serial}-1"),
            serial,
            password,
        )
        .await
        .expect("MQTT connect")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A metric's value from `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let response = http_request(self.http, "GET", "/metrics", Some(METRICS_TOKEN), None)
            .await
            .ok()?;
        response.body.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
    }

    /// Waits until every journal record up to `seq` is committed to PostgreSQL.
    pub async fn wait_journal_committed(&self, seq: u64) {
        let done = eventually(Duration::from_secs(30), || async {
            let checkpoint = self.metric("headend_journal_checkpoint").await?;
            (checkpoint >= seq as f64).then_some(())
        })
        .await;
        assert!(
            done.is_some(),
            "journal checkpoint did not reach {seq} (now {:?})",
            self.metric("headend_journal_checkpoint").await
        );
    }

    /// Waits until `sql` (a count) reaches `expected`.
    pub async fn wait_count(&self, sql: &str, expected: i64) {
        let pool = self.pool.clone();
        let sql = sql.to_owned();
        let last = eventually(Duration::from_secs(30), || {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.ok()?;
                (n >= expected).then_some(n)
            }
        })
        .await;
        match last {
            Some(n) => assert_eq!(n, expected, "{sql}"),
            None => panic!(
                "timed out waiting for {sql} to reach {expected} (now {})",
                self.count(&sql).await
            ),
        }
    }
}

/// A stopped [`TestApp`].
pub struct Paused {
    data_dir: tempfile::TempDir,
    config: Config,
}

impl Paused {
    pub async fn resume(self) -> TestApp {
        TestApp::start(self.config, self.data_dir).await
    }
}

/// Polls `check` until it returns `Some`, or the deadline passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut delay = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// A rumqttc client whose event loop runs in the background; acknowledgements are counted.
pub struct MqttClient {
    pub client: AsyncClient,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttClient {
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        Self::connect_with(Self::options(addr, client_id, username, password)).await
    }

    /// Options as `connect` uses them, to adjust (e.g. TLS) before `connect_with`.
    pub fn options(
        addr: SocketAddr,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_credentials(username, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        options.set_inflight(100);
        options
    }

    pub async fn connect_with(options: MqttOptions) -> anyhow::Result<Self> {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        match first_packet(&mut eventloop).await? {
            Packet::ConnAck(ack) if ack.code == rumqttc::ConnectReturnCode::Success => {}
            Packet::ConnAck(ack) => bail!("connection refused: {:?}", ack.code),
            other => bail!("unexpected first packet {other:?}"),
        }
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(packet).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Self {
            client,
            events,
            task,
        })
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// Waits for `n` PUBACKs.
    pub async fn wait_acks(&mut self, n: usize) {
        let mut seen = 0;
        while seen < n {
            match tokio::time::timeout(Duration::from_secs(30), self.events.recv()).await {
                Ok(Some(Packet::PubAck(_))) => seen += 1,
                Ok(Some(_)) => {}
                Ok(None) => panic!("MQTT connection closed after {seen} of {n} acks"),
                Err(_) => panic!("timed out after {seen} of {n} acks"),
            }
        }
    }

    /// The next packet of a kind the predicate accepts.
    pub async fn wait_for(&mut self, mut want: impl FnMut(&Packet) -> bool) -> Option<Packet> {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.events.recv()).await {
                Ok(Some(p)) if want(&p) => return Some(p),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Whether the broker closed the connection (the event stream ends).
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.events.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn first_packet(eventloop: &mut EventLoop) -> anyhow::Result<Packet> {
    let poll = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => return Ok(p),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    bail!("connection refused: {code:?}")
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .context("no CONNACK within 30 s")?
}

/// The path of the `headend` binary built alongside the tests.
pub fn headend_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("headend");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p headend` (cargo test --workspace does)",
        bin.display()
    );
    bin
}
