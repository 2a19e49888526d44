//! Against the real PostgreSQL server binaries of this machine.

use std::error::Error;
use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use headend_pgembed::{Cluster, ClusterConfig, PgBinaries, PgEmbedError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, Pid};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn Error>>;

/// A short-named scratch directory under /tmp (socket paths are limited to
/// 107 bytes) that the `postgres` user can enter when we run as root.
fn scratch() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pge")
        .tempdir_in("/tmp")
        .expect("create scratch directory");
    fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("open scratch directory");
    dir
}

fn config(root: &Path) -> ClusterConfig {
    ClusterConfig {
        settings: vec![
            ("shared_buffers".into(), "16MB".into()),
            ("max_connections".into(), "20".into()),
        ],
        fast_unsafe: true,
        ..ClusterConfig::new(root.join("data"), root.join("s"))
    }
}

fn cluster(root: &Path) -> Cluster {
    let binaries = PgBinaries::locate(None).expect("PostgreSQL server binaries installed");
    Cluster::new(binaries, config(root)).expect("valid configuration")
}

/// Kills (immediate shutdown) a server a failing test left running, so it
/// does not outlive the test on a deleted directory.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(pid_file) = fs::read_to_string(self.0.join("postmaster.pid")) else {
            return;
        };
        if let Some(pid) = pid_file
            .lines()
            .next()
            .and_then(|pid| pid.trim().parse().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
    }
}

async fn count_rows(url: &str) -> Result<i64, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let count = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(count)
}

#[test]
fn locate_finds_the_server_binaries() -> TestResult {
    let binaries = PgBinaries::locate(None)?;
    assert!(binaries.tool("initdb").is_file());
    assert!(
        binaries.version().starts_with(|c: char| c.is_ascii_digit()),
        "{}",
        binaries.version()
    );
    // A stale configured bindir falls back to the search.
    let fallback = PgBinaries::locate(Some(Path::new("/nonexistent/pg/bin")))?;
    assert_eq!(fallback, binaries);
    Ok(())
}

#[tokio::test]
async fn initialise_start_connect_and_restart_keeps_data() -> TestResult {
    let root = scratch();
    let _reaper = Reaper(root.path().join("data"));
    let cluster = cluster(root.path());

    assert!(cluster.ensure_initialized().await?);
    assert!(!cluster.ensure_initialized().await?);

    let running = cluster.start().await?;
    assert!(!running.was_adopted());
    running.create_database("app").await?;
    running.create_database("app").await?;
    let url = running.url("app");
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE readings (watts integer)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO readings VALUES (42)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    running.stop().await?;
    assert!(!root.path().join("data/postmaster.pid").exists());

    let running = cluster.start().await?;
    assert!(!running.was_adopted());
    assert_eq!(count_rows(&url).await?, 1);
    running.drop_database("app").await?;
    running.drop_database("app").await?;
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn start_adopts_a_server_left_running() -> TestResult {
    let root = scratch();
    let _reaper = Reaper(root.path().join("data"));
    let cluster = cluster(root.path());
    cluster.ensure_initialized().await?;

    let first = cluster.start().await?;
    first.create_database("app").await?;
    drop(first); // as if Headend had been killed: the server keeps running

    let adopted = cluster.start().await?;
    assert!(adopted.was_adopted());
    let mut conn = PgConnection::connect(&adopted.url("app")).await?;
    conn.ping().await?;
    conn.close().await?;
    adopted.stop().await?;
    Ok(())
}

#[tokio::test]
async fn start_restarts_a_server_left_running_with_other_socket_settings() -> TestResult {
    let root = scratch();
    let _reaper = Reaper(root.path().join("data"));
    let cluster = cluster(root.path());
    cluster.ensure_initialized().await?;
    drop(cluster.start().await?);

    let binaries = PgBinaries::locate(None)?;
    let moved = Cluster::new(
        binaries,
        ClusterConfig {
            port: 5433,
            ..config(root.path())
        },
    )?;
    let running = moved.start().await?;
    assert!(!running.was_adopted());
    assert!(running.socket_dir().join(".s.PGSQL.5433").exists());
    assert!(!running.socket_dir().join(".s.PGSQL.5432").exists());
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn failed_initdb_leaves_nothing_behind() -> TestResult {
    let root = scratch();
    let binaries = PgBinaries::locate(None)?;
    let bad = ClusterConfig {
        superuser: "pg_reserved".into(), // initdb refuses role names starting with pg_
        ..config(root.path())
    };
    let error = Cluster::new(binaries, bad)?
        .ensure_initialized()
        .await
        .unwrap_err();
    assert!(
        matches!(error, PgEmbedError::CommandFailed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("pg_"), "{error}");
    assert!(!root.path().join("data").exists());

    assert!(cluster(root.path()).ensure_initialized().await?);
    Ok(())
}

#[tokio::test]
async fn data_dir_behind_a_closed_directory_is_reported() -> TestResult {
    if !geteuid().is_root() {
        eprintln!("skipped: the reachability check only applies when running as root");
        return Ok(());
    }
    let root = scratch();
    let closed = root.path().join("closed");
    fs::create_dir(&closed)?;
    fs::set_permissions(&closed, Permissions::from_mode(0o700))?;
    let binaries = PgBinaries::locate(None)?;
    let config = ClusterConfig::new(closed.join("data"), root.path().join("s"));

    let error = Cluster::new(binaries, config)?
        .ensure_initialized()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, PgEmbedError::Unreachable { .. }),
        "{message}"
    );
    assert!(
        message.contains(&format!("because {} is not traversable", closed.display())),
        "{message}"
    );
    assert!(message.contains("via HEADEND_DATA_DIR"), "{message}");
    assert!(!message.contains('\n'));
    assert!(!closed.join("data").exists());
    Ok(())
}
