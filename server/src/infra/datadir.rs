//! The data directory: its layout, the lock that keeps a second `serve` out, and the runtime
//! file through which admin commands find the database of a running `serve`.
//!
//! ```text
//! <data_dir>/headend.lock   flock held by `serve` for its whole life
//! <data_dir>/runtime.json   written by `serve` once it runs: pid, database URL, listeners
//! <data_dir>/pg/            the embedded PostgreSQL cluster (and its Unix socket)
//! <data_dir>/journal/       the ingest journal
//! <data_dir>/jwt.key        session signing key (0600), unless configured
//! <data_dir>/instance       this instance's name among those sharing the database (0600)
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Creates `path` (which must not exist) readable by its owner only, with `bytes`, synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The instance name file, when not configured (see `infra::cluster::InstanceId`).
pub const INSTANCE_FILE: &str = "instance";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {source}; choose another with HEADEND_DATA_DIR")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another Headend is already serving data directory {path} (pid {pid}); stop it first, or use another data directory with HEADEND_DATA_DIR")]
    Busy { path: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory if needed. It must be traversable by the PostgreSQL system user
    /// when Headend runs as root, hence 0711 rather than 0700; its secrets are 0600 files.
    pub fn prepare(root: &Path) -> Result<Self, DataDirError> {
        use std::os::unix::fs::PermissionsExt;
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| DataDirError::Create {
                    path: root.to_path_buf(),
                    source,
                })?
                .join(root)
        };
        let existed = root.exists();
        std::fs::create_dir_all(&root).map_err(|source| DataDirError::Create {
            path: root.clone(),
            source,
        })?;
        if !existed {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).map_err(
                |source| DataDirError::Create {
                    path: root.clone(),
                    source,
                },
            )?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn pg_dir(&self) -> PathBuf {
        self.root.join("pg")
    }
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }
    pub fn instance_file(&self) -> PathBuf {
        self.root.join(INSTANCE_FILE)
    }
    pub fn jwt_key(&self) -> PathBuf {
        self.root.join("jwt.key")
    }
    fn lock_path(&self) -> PathBuf {
        self.root.join("headend.lock")
    }
    fn runtime_path(&self) -> PathBuf {
        self.root.join("runtime.json")
    }

    /// Takes the serve lock, or says who holds it.
    pub fn lock(&self) -> Result<ServeLock, DataDirError> {
        let path = self.lock_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| DataDirError::Lock {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = writeln!(&mut *lock, "{}", std::process::id());
                Ok(ServeLock {
                    _lock: lock,
                    runtime: self.runtime_path(),
                })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(DataDirError::Busy {
                path: self.root.clone(),
                pid: self
                    .running()
                    .map_or_else(|| "unknown".into(), |r| r.pid.to_string()),
            }),
            Err((_, errno)) => Err(DataDirError::Lock {
                path,
                source: errno.into(),
            }),
        }
    }

    /// Whether a `serve` holds the lock right now, without taking it.
    pub fn is_served(&self) -> bool {
        match self.lock() {
            Ok(_lock) => false,
            Err(DataDirError::Busy { .. }) => true,
            Err(_) => false,
        }
    }

    /// What the running `serve` published, if any.
    pub fn running(&self) -> Option<Runtime> {
        let text = std::fs::read_to_string(self.runtime_path()).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// What a running `serve` tells admin commands on the same data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runtime {
    pub pid: u32,
    /// Only for the embedded cluster: a Unix-socket URL without password. An external
    /// database's URL is in the configuration already and is not copied here.
    pub embedded_database_url: Option<String>,
    pub http_addr: String,
    pub mqtt_addr: Option<String>,
}

/// Held for as long as `serve` runs; removes the runtime file on drop.
#[derive(Debug)]
pub struct ServeLock {
    _lock: Flock<File>,
    runtime: PathBuf,
}

impl ServeLock {
    pub fn publish(&self, runtime: &Runtime) -> Result<(), DataDirError> {
        let tmp = self.runtime.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(
                serde_json::to_string_pretty(runtime)
                    .unwrap_or_default()
                    .as_bytes(),
            )?;
            std::fs::rename(&tmp, &self.runtime)
        };
        write().map_err(|source| DataDirError::Write {
            path: self.runtime.clone(),
            source,
        })
    }
}

impl Drop for ServeLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.runtime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::prepare(dir.path()).unwrap();
        let lock = data.lock().unwrap();
        lock.publish(&Runtime {
            pid: 4242,
            embedded_database_url: None,
            http_addr: "127.0.0.1:1".into(),
            mqtt_addr: None,
        })
        .unwrap();
        let err = data.lock().unwrap_err().to_string();
        assert!(
            err.contains("already serving") && err.contains("4242"),
            "{err}"
        );
        assert!(data.is_served());
        drop(lock);
        assert!(!data.is_served());
        assert!(
            data.running().is_none(),
            "runtime file removed with the lock"
        );
        data.lock().unwrap();
    }
}
