//! Base backups of a running cluster, their verification, and handing a restored data
//! directory to the user the server runs as.
//!
//! The backup is taken over the cluster's own Unix socket with `pg_basebackup`: initdb's
//! `pg_hba.conf` trusts local replication connections as it trusts local ones, and the
//! defaults (`wal_level = replica`, `max_wal_senders = 10`) allow it, so nothing is changed
//! on the server. The tools run as the current user (a client needs no server account), so
//! the backup belongs to whoever asked for it.

use std::fs;
use std::path::Path;

use tokio::process::Command;

use crate::binaries::PgBinaries;
use crate::error::{PgEmbedError, Result};
use crate::identity::{Identity, RunAs};
use crate::process::run;

/// Takes a consistent base backup of the server at `url` (a libpq URL, e.g.
/// [`RunningCluster::url`](crate::RunningCluster::url)) into the new directory `target`:
/// plain format, the WAL needed to make it consistent streamed alongside (`-X stream`), an
/// immediate checkpoint, and a `backup_manifest` with SHA-256 checksums of every file.
pub async fn base_backup(binaries: &PgBinaries, url: &str, target: &Path) -> Result<()> {
    let mut cmd = tool(binaries, "pg_basebackup");
    cmd.arg("--dbname")
        .arg(url)
        .arg("--pgdata")
        .arg(target)
        .args([
            "--format=plain",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--manifest-checksums=SHA256",
            "--no-password",
        ]);
    let finished = run(&mut cmd).await?;
    if finished.success() {
        Ok(())
    } else {
        Err(finished.failure(
            "taking a base backup",
            "check that the cluster is running and that the backup directory is writable",
        ))
    }
}

/// Checks a plain base backup against its `backup_manifest` (every file's size and checksum,
/// and that the WAL it needs is present and parses) with `pg_verifybackup`.
pub async fn verify_backup(binaries: &PgBinaries, dir: &Path) -> Result<()> {
    let mut cmd = tool(binaries, "pg_verifybackup");
    cmd.arg("--quiet").arg(dir);
    let finished = run(&mut cmd).await?;
    if finished.success() {
        Ok(())
    } else {
        Err(finished.failure(
            "verifying the base backup",
            "the backup is damaged or incomplete: restore from another one",
        ))
    }
}

/// Hands the whole tree at `dir` to the user the server runs as (when Headend is root, the
/// `postgres` system user), so that a data directory laid down from a backup can be started.
pub fn hand_over(run_as: &RunAs, dir: &Path) -> Result<()> {
    let identity = Identity::resolve(run_as)?;
    if !identity.is_other() {
        return Ok(());
    }
    give_tree(&identity, dir)
}

fn give_tree(identity: &Identity, path: &Path) -> Result<()> {
    identity.give(path)?;
    let meta = fs::symlink_metadata(path).map_err(|source| io_error("inspect", path, source))?;
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|source| io_error("read", path, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| io_error("read", path, source))?;
            give_tree(identity, &entry.path())?;
        }
    }
    Ok(())
}

fn tool(binaries: &PgBinaries, name: &str) -> Command {
    let mut cmd = Command::new(binaries.tool(name));
    // English messages, and a working directory every user may enter.
    cmd.current_dir("/").env("LC_ALL", "C");
    cmd
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> PgEmbedError {
    PgEmbedError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
