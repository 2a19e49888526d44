//! Several instances on one database: who this instance is, and leases for the work that must
//! have exactly one owner.
//!
//! A lease is a row in `leases` (name, owner, token, expires_at), taken or renewed in one
//! statement, with the database's clock as the only clock that decides expiry. The holder
//! renews it every third of its time to live and counts it lost, without waiting for another
//! instance, as soon as a renewal fails or its own (monotonic) deadline passes: it stops the
//! work then, before anyone else may take it. `token` grows at every change of owner, so work
//! that writes can fence a late holder with [`Leases::check`] in its own transaction.
//!
//! Why by hand: the rule is one SQL statement, and no crate does leases on PostgreSQL with
//! fencing tokens; advisory locks die with their connection, which a pool recycles.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// This instance's name among the instances sharing the database: `cluster.instance` when set,
/// otherwise made once (host name and a random suffix) and kept in the data directory, so a
/// restarted instance is the same instance (its sessions, its journal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(Arc<str>);

#[derive(Debug, thiserror::Error)]
pub enum InstanceIdError {
    #[error("instance name {0:?} is invalid: use 1 to 64 letters, digits, '.', '_' or '-'")]
    Invalid(String),
    #[error("cannot read or write the instance name in {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl InstanceId {
    pub fn parse(name: &str) -> Result<Self, InstanceIdError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.into()))
        } else {
            Err(InstanceIdError::Invalid(name.to_owned()))
        }
    }

    /// The configured name, or the one kept in `file` (created on first use, mode 0600).
    pub fn resolve(configured: Option<&str>, file: &Path) -> Result<Self, InstanceIdError> {
        if let Some(name) = configured {
            return Self::parse(name);
        }
        let io = |source| InstanceIdError::Io {
            path: file.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(file) {
            Ok(text) => return Self::parse(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let id = Self::generate();
        crate::infra::datadir::write_private(file, format!("{}\n", id.0).as_bytes()).map_err(io)?;
        Ok(id)
    }

    fn generate() -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let suffix: u32 = rand::random();
        let host = if host.is_empty() { "headend" } else { &host };
        Self(format!("{host}-{suffix:08x}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease this instance holds.
#[derive(Debug, Clone)]
pub struct Lease {
    pub name: String,
    /// Grows at every change of owner; see [`Leases::check`].
    pub token: i64,
    /// Our own deadline: the lease is ours until then at the latest (measured from before the
    /// statement that took or renewed it was sent, so never later than the database's).
    pub deadline: Instant,
}

/// Takes, renews and releases leases for one owner.
#[derive(Clone)]
pub struct Leases {
    pool: PgPool,
    owner: InstanceId,
    ttl: Duration,
}

impl Leases {
    pub fn new(pool: PgPool, owner: InstanceId, ttl: Duration) -> Self {
        Self {
            pool,
            owner,
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    pub fn owner(&self) -> &InstanceId {
        &self.owner
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes `name` when it is free or expired, renews it when it is ours; `None` while another
    /// owner holds it.
    pub async fn try_acquire(&self, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        let sent = Instant::now();
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, owner, token, acquired_at, expires_at)
             VALUES ($1, $2, 1, now(), now() + make_interval(secs => $3))
             ON CONFLICT (name) DO UPDATE SET
                 token = CASE WHEN leases.owner = EXCLUDED.owner THEN leases.token
                              ELSE leases.token + 1 END,
                 acquired_at = CASE WHEN leases.owner = EXCLUDED.owner THEN leases.acquired_at
                                    ELSE now() END,
                 owner = EXCLUDED.owner,
                 expires_at = EXCLUDED.expires_at
             WHERE leases.owner = EXCLUDED.owner OR leases.expires_at < now()
             RETURNING token",
        )
        .bind(name)
        .bind(self.owner.as_str())
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(token.map(|token| Lease {
            name: name.to_owned(),
            token,
            deadline: sent + self.ttl,
        }))
    }

    /// Extends a held lease; `false` when it is no longer ours (expired and taken).
    pub async fn renew(&self, lease: &mut Lease) -> Result<bool, sqlx::Error> {
        let sent = Instant::now();
        let renewed = sqlx::query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
             WHERE name = $1 AND owner = $2 AND token = $3",
        )
        .bind(&lease.name)
        .bind(self.owner.as_str())
        .bind(lease.token)
        .bind(self.ttl.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if renewed {
            lease.deadline = sent + self.ttl;
        }
        Ok(renewed)
    }

    /// Gives a lease up at once (a clean stop), so another instance need not wait for expiry.
    pub async fn release(&self, lease: &Lease) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE leases SET expires_at = now() - interval '1 second'
             WHERE name = $1 AND owner = $2 AND token = $3",
        )
        .bind(&lease.name)
        .bind(self.owner.as_str())
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Fencing: whether `lease` is still ours, locking the row against a takeover until the
    /// caller's transaction ends. Work that writes calls it in that transaction.
    pub async fn check(&self, conn: &mut PgConnection, lease: &Lease) -> Result<bool, sqlx::Error> {
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM leases
             WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > now()
             FOR SHARE",
        )
        .bind(&lease.name)
        .bind(self.owner.as_str())
        .bind(lease.token)
        .fetch_optional(conn)
        .await?;
        Ok(held.is_some())
    }

    /// Waits until this instance holds `name` (trying every third of the time to live), then
    /// keeps it renewed in the background. `None` when `shutdown` comes first.
    pub async fn hold(&self, name: &str, shutdown: &CancellationToken) -> Option<Held> {
        let period = self.ttl / 3;
        loop {
            match self.try_acquire(name).await {
                Ok(Some(lease)) => return Some(self.keep(lease, shutdown)),
                Ok(None) => {}
                Err(e) => tracing::warn!(lease = name, error = %e, "cannot take lease; retried"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    fn keep(&self, lease: Lease, shutdown: &CancellationToken) -> Held {
        let lost = shutdown.child_token();
        let leases = self.clone();
        let token = lease.token;
        let guard = lost.clone();
        let task = tokio::spawn(async move {
            let mut lease = lease;
            let period = leases.ttl / 3;
            loop {
                tokio::select! {
                    () = guard.cancelled() => break,
                    () = tokio::time::sleep_until(lease.deadline.into()) => {
                        tracing::warn!(lease = %lease.name, "lease not renewed in time; work stopped");
                        guard.cancel();
                        return;
                    }
                    () = tokio::time::sleep(period) => {}
                }
                // A renewal that hangs (pool starved, database away) must not outlive the
                // deadline: past it another instance may hold the lease.
                let renewed = tokio::select! {
                    () = tokio::time::sleep_until(lease.deadline.into()) => {
                        tracing::warn!(lease = %lease.name, "lease not renewed in time; work stopped");
                        guard.cancel();
                        return;
                    }
                    renewed = leases.renew(&mut lease) => renewed,
                };
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %lease.name, "lease taken by another instance; work stopped");
                        guard.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %lease.name, error = %e, "lease renewal failed; retried until its deadline");
                    }
                }
            }
            // Stopped (shutdown, or the holder let go): hand it over at once.
            if let Err(e) = leases.release(&lease).await {
                tracing::debug!(lease = %lease.name, error = %e, "lease not released; it expires");
            }
        });
        Held { token, lost, task }
    }
}

/// A lease kept renewed by a background task until it is lost, let go or shut down. Dropped
/// without [`Held::release`] (its holder aborted or panicked), it stops being renewed and
/// expires: the holder's work may not have stopped cleanly, so it is not handed over early.
pub struct Held {
    pub token: i64,
    lost: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Cancelled when the lease is lost (or at shutdown): stop the work at once.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Lets the lease go (released at once) and waits for that.
    pub async fn release(mut self) {
        self.lost.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Finished after `release`; otherwise the renewals end here (a detached renewal task
        // would keep the lease alive for a holder that no longer exists).
        self.task.abort();
        // No longer renewed: whatever still watches the token stops.
        self.lost.cancel();
    }
}

/// Runs `work` only while this instance holds `name`: waits for the lease, runs `work` with a
/// token that is cancelled when the lease is lost, and starts over (waiting again) when `work`
/// returns because of that. Returns when `shutdown` is cancelled, or with `work`'s error.
pub async fn run_while_held<F, Fut>(
    leases: &Leases,
    name: &str,
    shutdown: &CancellationToken,
    mut work: F,
) -> Result<(), String>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    loop {
        let Some(held) = leases.hold(name, shutdown).await else {
            return Ok(());
        };
        tracing::info!(
            lease = name,
            token = held.token,
            "lease taken; work started here"
        );
        let result = work(held.lost().clone()).await;
        held.release().await;
        result?;
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Keeps this instance's row in `instances` alive (every third of `ttl`) until shutdown.
pub async fn heartbeat(
    pool: PgPool,
    id: InstanceId,
    ttl: Duration,
    addrs: (Option<String>, Option<String>),
    shutdown: CancellationToken,
) -> Result<(), String> {
    let period = ttl / 3;
    loop {
        let beat = sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at, expires_at, http_addr, mqtt_addr, version)
             VALUES ($1, now(), now(), now() + make_interval(secs => $2), $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at,
                 http_addr = EXCLUDED.http_addr, mqtt_addr = EXCLUDED.mqtt_addr,
                 version = EXCLUDED.version",
        )
        .bind(id.as_str())
        .bind(ttl.as_secs_f64())
        .bind(&addrs.0)
        .bind(&addrs.1)
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&pool)
        .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, "instance heartbeat failed; retried");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_checked() {
        assert!(InstanceId::parse("node-1.example_2").is_ok());
        for bad in ["", "a b", "x/y", "é", &"a".repeat(65)] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_generated_name_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("instance");
        let first = InstanceId::resolve(None, &file).unwrap();
        assert_eq!(InstanceId::resolve(None, &file).unwrap(), first);
        assert_eq!(
            InstanceId::resolve(Some("b-1"), &file).unwrap().as_str(),
            "b-1"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
