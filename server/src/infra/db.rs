//! The database adapter: an external PostgreSQL by URL, or Headend's own embedded cluster.

use std::str::FromStr;
use std::time::Duration;

use headend_pgembed::{Cluster, ClusterConfig, PgBinaries, RunAs, RunningCluster};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{FromRow, PgPool, Row};

use crate::config::Config;
use crate::infra::datadir::DataDir;

/// Name of Headend's database inside the embedded cluster.
pub const EMBEDDED_DATABASE: &str = "headend";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("embedded PostgreSQL: {0}")]
    Embedded(#[from] headend_pgembed::PgEmbedError),
    #[error("database URL is not valid: {0}")]
    Url(#[source] sqlx::Error),
    #[error("cannot connect to PostgreSQL: {0}; check HEADEND_DATABASE_URL (or unset it to use the embedded cluster)")]
    Connect(#[source] sqlx::Error),
    #[error("cannot connect to the read replica: {0}; check HEADEND_DATABASE_READ_URL (or unset it to read from the primary)")]
    ReadConnect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub struct Database {
    /// The primary: every write, and every read that must see its own write.
    pub pool: PgPool,
    /// Dashboards and CSV exports: the replica of `database.read_url` when set (never
    /// migrated: it follows the primary), else a clone of `pool`.
    pub read_pool: PgPool,
    cluster: Option<RunningCluster>,
    /// Set for the embedded cluster: a password-less Unix socket URL that admin commands use.
    embedded_url: Option<String>,
}

impl Database {
    /// Connects (starting the embedded cluster when no URL is configured) and migrates.
    pub async fn open(config: &Config, data: &DataDir) -> Result<Self, DbError> {
        let (url, cluster) = match &config.database.url {
            Some(url) => (url.expose().to_owned(), None),
            None => {
                let cluster = start_embedded(config, data).await?;
                cluster.create_database(EMBEDDED_DATABASE).await?;
                (cluster.url(EMBEDDED_DATABASE), Some(cluster))
            }
        };
        let embedded_url = cluster.as_ref().map(|_| url.clone());
        let pool = connect(&url, config.database.max_connections).await?;
        MIGRATOR.run(&pool).await?;
        let read_pool = match &config.database.read_url {
            Some(read_url) => connect(read_url.expose(), config.database.max_connections)
                .await
                .map_err(|e| match e {
                    DbError::Url(e) | DbError::Connect(e) => DbError::ReadConnect(e),
                    other => other,
                })?,
            None => pool.clone(),
        };
        Ok(Self {
            pool,
            read_pool,
            cluster,
            embedded_url,
        })
    }

    /// Connects to the database of the `serve` running on this data directory.
    pub async fn attach(url: &str) -> Result<Self, DbError> {
        let pool = connect(url, 2).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            read_pool: pool.clone(),
            pool,
            cluster: None,
            embedded_url: None,
        })
    }

    pub fn embedded_url(&self) -> Option<&str> {
        self.embedded_url.as_deref()
    }

    /// Closes the pool and stops the embedded cluster, if Headend started it.
    pub async fn close(self) {
        self.read_pool.close().await;
        self.pool.close().await;
        if let Some(cluster) = self.cluster {
            if let Err(e) = cluster.stop().await {
                tracing::warn!(error = %e, "embedded PostgreSQL did not stop cleanly");
            }
        }
    }
}

async fn start_embedded(config: &Config, data: &DataDir) -> Result<RunningCluster, DbError> {
    let binaries = PgBinaries::locate(config.database.pg_bindir.as_deref())?;
    let dir = data.pg_dir();
    let mut cluster_config = ClusterConfig::new(&dir, &dir);
    cluster_config.run_as = RunAs::Auto;
    cluster_config.fast_unsafe = config.database.embedded_unsafe_fast;
    // synchronous_commit stays on: the journal forgets a batch once PostgreSQL says it is
    // committed, so that commit must be durable. Batching keeps the flushes few.
    cluster_config.settings = vec![("max_connections".into(), "100".into())];
    cluster_config
        .settings
        .extend(config.database.embedded_settings.iter().cloned());
    let cluster = Cluster::new(binaries, cluster_config)?;
    if cluster.ensure_initialized().await? {
        tracing::info!(dir = %dir.display(), "initialised embedded PostgreSQL cluster");
    }
    let running = cluster.start().await?;
    tracing::info!(
        socket = %running.socket_dir().display(),
        adopted = running.was_adopted(),
        "embedded PostgreSQL running"
    );
    Ok(running)
}

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbError::Url)?
        .application_name("headend")
        // No JIT compilation: the planner's estimates for the ingest's array inserts and the
        // profile worker's queries pass `jit_above_cost`, and compiling each (tens of ms of
        // LLVM) took over a third of PostgreSQL's CPU at 10 000 msg/s for statements that run
        // in a few ms (issue 17, docs/benchmarks/ingest.md). A setting of our sessions only.
        .options([("jit", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out: a round trip more for each query, half
        // of a small request's database time (issue 17). A connection that sat idle for
        // longer than a second is still pinged, so one broken while idle (a PostgreSQL
        // restart or failover) is replaced unseen; one broken under use fails its query,
        // which it would have done with the ping too.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// Every row that decodes as `T`. One that does not (a stored time zone this build no longer
/// knows) is left out with an error naming `what` and its `id`, so that one bad row does not
/// stop everything the others feed (ingest's gateway directory, the alarm rules).
pub fn decodable<T>(rows: &[PgRow], what: &'static str) -> Vec<T>
where
    T: for<'r> FromRow<'r, PgRow>,
{
    rows.iter()
        .filter_map(|row| {
            T::from_row(row)
                .map_err(|e| {
                    let id = row.try_get::<i64, _>("id").ok();
                    tracing::error!(what, id = ?id, error = %e, "stored row left out");
                })
                .ok()
        })
        .collect()
}
