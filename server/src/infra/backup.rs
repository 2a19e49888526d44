//! `headend backup` and `headend restore` for the embedded cluster (`docs/backup.md`).
//!
//! A backup directory holds:
//!
//! ```text
//! <dir>/pg/           pg_basebackup, plain format, WAL streamed in, its own backup_manifest
//! <dir>/journal/      the ingest journal as it was on disk just before the base backup
//! <dir>/jwt.key       the session signing key, when the data directory has one
//! <dir>/backup.json   written last: versions, time, sizes, the SHA-256 of every file
//! ```
//!
//! Consistency: the journal forgets a record only once PostgreSQL has committed it, and the
//! base backup is consistent as of its end. The journal is copied *before* the base backup, so
//! whatever the copy lacks was committed earlier, hence is in the backup; whatever the copy
//! holds that was committed too is replayed harmlessly (replays change nothing).
//!
//! Everything written is private (directories 0700, files 0600): it holds every site's data.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use headend_pgembed::{PgBinaries, PgEmbedError, RunAs};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::infra::datadir::{DataDir, DataDirError};
use crate::infra::db::{Database, DbError};

/// The manifest's name; its presence marks a finished backup.
pub const MANIFEST: &str = "backup.json";
/// The layout version this release writes and reads.
const FORMAT: u32 = 1;
const PG_DIR: &str = "pg";
const JOURNAL_DIR: &str = "journal";
const JWT_KEY: &str = "jwt.key";
/// Journal files worth copying: its identity, its checkpoint and its segments (not its lock).
const JOURNAL_FILES: [&str; 2] = ["epoch", "checkpoint"];
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "HEADEND_DATABASE_URL is set: `headend backup` and `restore` cover only the embedded \
         cluster; back up an external PostgreSQL with point-in-time recovery (pgBackRest), \
         see docs/backup.md"
    )]
    External,
    #[error(
        "{0} holds no embedded PostgreSQL cluster: nothing to back up (check HEADEND_DATA_DIR)"
    )]
    NoCluster(PathBuf),
    #[error("{path} is not empty: {what} needs a new or empty directory")]
    NotEmpty { path: PathBuf, what: &'static str },
    #[error(
        "{path} is not a complete, intact Headend backup: {reason}; restore from another backup"
    )]
    Invalid { path: PathBuf, reason: String },
    #[error("a Headend serves {0} but published no database address within 60 s")]
    NoRuntime(PathBuf),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Pg(#[from] PgEmbedError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

/// `backup.json`: what the backup is and what every file in it must be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub headend_version: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub postgresql_version: String,
    /// The data directory backed up, for the operator's information.
    pub source: PathBuf,
    pub total_bytes: u64,
    /// Every directory, relative, so that empty ones (PostgreSQL needs them) are restored too.
    pub dirs: Vec<String>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Backs up the embedded cluster of `config`'s data directory and its journal into `to`,
/// whether a `serve` runs on it (its cluster is used as is) or not (the cluster is started
/// for the backup and stopped after, holding the serve lock meanwhile).
pub async fn backup(config: &Config, to: &Path) -> Result<Manifest> {
    if config.database.url.is_some() {
        return Err(BackupError::External);
    }
    let data = DataDir::prepare(&config.data_dir)?;
    if !data.pg_dir().join("PG_VERSION").exists() {
        return Err(BackupError::NoCluster(data.root().to_path_buf()));
    }
    let binaries = PgBinaries::locate(config.database.pg_bindir.as_deref())?;
    create_empty_private_dir(to, "a backup")?;
    match data.lock() {
        Ok(lock) => {
            let db = Database::open(config, &data).await?;
            let url = db.embedded_url().unwrap_or_default().to_owned();
            let taken = take(&binaries, &url, &data, to).await;
            db.close().await;
            drop(lock);
            taken
        }
        Err(DataDirError::Busy { .. }) => {
            let url = running_url(&data).await?;
            take(&binaries, &url, &data, to).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn take(binaries: &PgBinaries, url: &str, data: &DataDir, to: &Path) -> Result<Manifest> {
    // Before the base backup: see the module documentation.
    copy_journal(&data.journal_dir(), &to.join(JOURNAL_DIR))?;
    headend_pgembed::base_backup(binaries, url, &to.join(PG_DIR)).await?;
    let key = data.jwt_key();
    if key.exists() {
        copy_private(&key, &to.join(JWT_KEY))?;
    }
    let (dirs, paths) = walk(to)?;
    let mut files = Vec::with_capacity(paths.len());
    for dir in &dirs {
        let path = to.join(dir);
        fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_DIR))
            .map_err(io_error("set permissions of", &path))?;
    }
    for relative in paths {
        let path = to.join(&relative);
        fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(io_error("set permissions of", &path))?;
        let (size, sha256) = hash_file(&path)?;
        files.push(FileEntry {
            path: relative,
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        headend_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: chrono::Utc::now(),
        postgresql_version: binaries.version().to_owned(),
        source: data.root().to_path_buf(),
        total_bytes: files.iter().map(|f| f.size).sum(),
        dirs,
        files,
    };
    write_manifest(to, &manifest)?;
    Ok(manifest)
}

/// The database URL a running `serve` publishes once its cluster is up.
async fn running_url(data: &DataDir) -> Result<String> {
    for _ in 0..600 {
        if let Some(url) = data.running().and_then(|r| r.embedded_database_url) {
            return Ok(url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BackupError::NoRuntime(data.root().to_path_buf()))
}

/// Lays the backup in `from` down as the new data directory `data_dir`, after checking every
/// file against `backup.json` and the base backup against its own manifest. `headend serve`
/// on `data_dir` then starts the cluster (PostgreSQL replays the streamed WAL to the backup's
/// consistent point) and replays the journal.
pub async fn restore(config: &Config, from: &Path, data_dir: &Path) -> Result<Manifest> {
    if config.database.url.is_some() {
        return Err(BackupError::External);
    }
    if !is_empty_or_missing(data_dir)? {
        return Err(BackupError::NotEmpty {
            path: data_dir.to_path_buf(),
            what: "a restore",
        });
    }
    let manifest = verify(from)?;
    let binaries = PgBinaries::locate(config.database.pg_bindir.as_deref())?;
    headend_pgembed::verify_backup(&binaries, &from.join(PG_DIR)).await?;
    let data = DataDir::prepare(data_dir)?;
    for dir in &manifest.dirs {
        let path = data.root().join(dir);
        fs::DirBuilder::new()
            .mode(PRIVATE_DIR)
            .create(&path)
            .map_err(io_error("create directory", &path))?;
    }
    for file in manifest.files.iter().filter(|f| !is_socket_lock(&f.path)) {
        copy_private(&from.join(&file.path), &data.root().join(&file.path))?;
    }
    let pg = data.pg_dir();
    fs::set_permissions(&pg, fs::Permissions::from_mode(PRIVATE_DIR))
        .map_err(io_error("set permissions of", &pg))?;
    headend_pgembed::hand_over(&RunAs::Auto, &pg)?;
    Ok(manifest)
}

/// `headend backup --to DIR`: backs up and says what was written.
pub async fn backup_command(config: &Config, to: &Path) -> anyhow::Result<std::process::ExitCode> {
    let manifest = backup(config, to).await?;
    println!(
        "backup written to {} ({} files, {} bytes, PostgreSQL {}); restore it with \
         `headend restore --from {} --data-dir NEW`",
        to.display(),
        manifest.files.len(),
        manifest.total_bytes,
        manifest.postgresql_version,
        to.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `headend restore --from DIR --data-dir NEW`: verifies, restores and says how to start.
pub async fn restore_command(
    config: &Config,
    from: &Path,
    data_dir: &Path,
) -> anyhow::Result<std::process::ExitCode> {
    let manifest = restore(config, from, data_dir).await?;
    println!(
        "restored the backup of {} taken {} into {}; start it with \
         `HEADEND_DATA_DIR={} headend serve`",
        manifest.source.display(),
        manifest.created_at.to_rfc3339(),
        data_dir.display(),
        data_dir.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Reads `backup.json` and checks that the directory holds exactly the files it lists, each
/// with its size and SHA-256: a partial backup (no manifest yet), a changed, missing or added
/// file are all refused.
pub fn verify(from: &Path) -> Result<Manifest> {
    let invalid = |reason: String| BackupError::Invalid {
        path: from.to_path_buf(),
        reason,
    };
    let path = from.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "{MANIFEST} is missing (a backup writes it last, so this one did not finish)"
            )))
        }
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{MANIFEST} is unreadable: {e}")))?;
    if manifest.format != FORMAT {
        return Err(invalid(format!(
            "{MANIFEST} has format {}, this release reads {FORMAT}",
            manifest.format
        )));
    }
    let listed = manifest
        .dirs
        .iter()
        .chain(manifest.files.iter().map(|f| &f.path));
    if let Some(bad) = listed.clone().find(|p| !is_plain_relative(p)) {
        return Err(invalid(format!("{MANIFEST} lists the unsafe path {bad:?}")));
    }
    if !manifest.dirs.iter().any(|d| d == PG_DIR) {
        return Err(invalid(format!("{MANIFEST} lists no {PG_DIR}/ directory")));
    }
    let (dirs, files) = walk(from)?;
    let on_disk: BTreeSet<&String> = dirs.iter().chain(files.iter()).collect();
    let expected: BTreeSet<&String> = listed.collect();
    if let Some(missing) = expected.difference(&on_disk).next() {
        return Err(invalid(format!("{missing} is missing")));
    }
    if let Some(extra) = on_disk.difference(&expected).next() {
        return Err(invalid(format!("{extra} is not in {MANIFEST}")));
    }
    for entry in &manifest.files {
        let (size, sha256) = hash_file(&from.join(&entry.path))?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(invalid(format!(
                "{} has changed ({size} bytes, SHA-256 {sha256}; the manifest says {} bytes, {})",
                entry.path, entry.size, entry.sha256
            )));
        }
    }
    Ok(manifest)
}

/// Copies the journal's identity, checkpoint and segments as they are on disk now. A segment
/// deleted meanwhile was acknowledged (committed); the last one may end torn, which the
/// journal's recovery cuts off as after a crash.
fn copy_journal(from: &Path, to: &Path) -> Result<()> {
    let mut segments = match fs::read_dir(from) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".seg"))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("read", from)(e)),
    };
    segments.sort();
    fs::DirBuilder::new()
        .mode(PRIVATE_DIR)
        .create(to)
        .map_err(io_error("create directory", to))?;
    for name in JOURNAL_FILES
        .iter()
        .copied()
        .chain(segments.iter().map(String::as_str))
    {
        match copy_private(&from.join(name), &to.join(name)) {
            Err(BackupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Copies one file into a new 0600 file and syncs it.
fn copy_private(from: &Path, to: &Path) -> Result<()> {
    let mut source = File::open(from).map_err(io_error("open", from))?;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(to)
        .map_err(io_error("create", to))?;
    io::copy(&mut source, &mut target).map_err(io_error("copy into", to))?;
    target.sync_all().map_err(io_error("sync", to))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest).map_err(|e| BackupError::Io {
        action: "encode",
        path: dir.join(MANIFEST),
        source: e.into(),
    })?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &tmp))?;
    let path = dir.join(MANIFEST);
    fs::rename(&tmp, &path).map_err(io_error("rename into place", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// Every directory and regular file under `root` (except the manifest), relative and sorted.
/// Anything else (a symbolic link, a socket) is refused: a backup holds neither.
fn walk(root: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        for entry in fs::read_dir(&dir).map_err(io_error("read", &dir))? {
            let entry = entry.map_err(io_error("read", &dir))?;
            let child = relative.join(entry.file_name());
            let name = child.to_string_lossy().into_owned();
            let kind = entry
                .file_type()
                .map_err(io_error("inspect", &entry.path()))?;
            if kind.is_dir() {
                dirs.push(name);
                pending.push(child);
            } else if kind.is_file() {
                if name != MANIFEST {
                    files.push(name);
                }
            } else {
                return Err(BackupError::Invalid {
                    path: root.to_path_buf(),
                    reason: format!("{name} is neither a file nor a directory"),
                });
            }
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher).map_err(io_error("read", path))?;
    Ok((size, format!("{:x}", hasher.finalize())))
}

/// The server's socket lock file (the socket lives in the data directory): it names the
/// source's postmaster, which may still run, and would stop the restored one from starting.
fn is_socket_lock(path: &str) -> bool {
    path.strip_prefix("pg/.s.PGSQL.")
        .is_some_and(|rest| rest.ends_with(".lock") && !rest.contains('/'))
}

fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn is_empty_or_missing(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_error("read", dir)(e)),
    }
}

/// Creates `dir` 0700 (parents as needed), or takes an existing empty one and makes it 0700.
fn create_empty_private_dir(dir: &Path, what: &'static str) -> Result<()> {
    if !is_empty_or_missing(dir)? {
        return Err(BackupError::NotEmpty {
            path: dir.to_path_buf(),
            what,
        });
    }
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR))
        .map_err(io_error("set permissions of", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> Manifest {
        fs::create_dir_all(dir.join("pg/empty")).unwrap();
        fs::write(dir.join("pg/PG_VERSION"), "16\n").unwrap();
        let (dirs, paths) = walk(dir).unwrap();
        let files = paths
            .into_iter()
            .map(|path| {
                let (size, sha256) = hash_file(&dir.join(&path)).unwrap();
                FileEntry { path, size, sha256 }
            })
            .collect();
        let manifest = Manifest {
            format: FORMAT,
            headend_version: "test".into(),
            created_at: chrono::Utc::now(),
            postgresql_version: "16".into(),
            source: PathBuf::from("/data"),
            total_bytes: 3,
            dirs,
            files,
        };
        write_manifest(dir, &manifest).unwrap();
        manifest
    }

    #[test]
    fn intact_backup_verifies_and_lists_empty_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        sample(tmp.path());
        let manifest = verify(tmp.path()).unwrap();
        assert_eq!(manifest.dirs, ["pg", "pg/empty"]);
        assert_eq!(manifest.files.len(), 1);
    }

    #[test]
    fn changed_added_missing_and_unfinished_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        sample(dir);
        fs::write(dir.join("pg/PG_VERSION"), "17\n").unwrap();
        let err = verify(dir).unwrap_err().to_string();
        assert!(err.contains("pg/PG_VERSION has changed"), "{err}");
        fs::write(dir.join("pg/PG_VERSION"), "16\n").unwrap();
        fs::write(dir.join("pg/extra"), "").unwrap();
        let err = verify(dir).unwrap_err().to_string();
        assert!(err.contains("pg/extra is not in backup.json"), "{err}");
        fs::remove_file(dir.join("pg/extra")).unwrap();
        fs::remove_dir(dir.join("pg/empty")).unwrap();
        let err = verify(dir).unwrap_err().to_string();
        assert!(err.contains("pg/empty is missing"), "{err}");
        fs::remove_file(dir.join(MANIFEST)).unwrap();
        let err = verify(dir).unwrap_err().to_string();
        assert!(err.contains("did not finish"), "{err}");
    }

    #[test]
    fn unsafe_manifest_paths_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "pg/../../x", "./pg"] {
            assert!(!is_plain_relative(bad), "{bad:?}");
        }
        assert!(is_plain_relative("pg/base/1/112"));
        assert!(is_socket_lock("pg/.s.PGSQL.5432.lock"));
        assert!(!is_socket_lock("pg/base/.s.PGSQL.5432.lock"));
    }

    #[test]
    fn journal_copy_skips_the_lock_and_tolerates_a_missing_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("journal");
        fs::create_dir(&from).unwrap();
        for name in [
            "LOCK",
            "epoch",
            "00000000000000000001.seg",
            "checkpoint.tmp",
        ] {
            fs::write(from.join(name), name).unwrap();
        }
        let to = tmp.path().join("copy");
        copy_journal(&from, &to).unwrap();
        let (_, files) = walk(&to).unwrap();
        assert_eq!(files, ["00000000000000000001.seg", "epoch"]);
        let mode = fs::metadata(to.join("epoch")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, PRIVATE_FILE);
        copy_journal(&tmp.path().join("none"), &tmp.path().join("copy2")).unwrap();
        assert!(!tmp.path().join("copy2").exists());
    }
}
