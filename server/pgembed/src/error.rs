//! The crate's error type. Every message ends with what to do about it, because
//! these errors surface to operators at start-up, not to programmers.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = PgEmbedError> = std::result::Result<T, E>;

/// Why locating, initialising, starting or stopping the private cluster failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgEmbedError {
    /// No directory holding `initdb`, `postgres` and `pg_ctl` was found.
    #[error(
        "PostgreSQL server binaries not found (looked in {looked_in}): install them with \
         `apt-get install postgresql` or set HEADEND_DATABASE_URL to use an existing server"
    )]
    BinariesNotFound {
        /// The places searched, in order, for the message.
        looked_in: String,
    },

    /// The account PostgreSQL should run as does not exist.
    #[error(
        "user `{user}` (to run PostgreSQL as, since it refuses to run as root) does not exist: \
         create it (`apt-get install postgresql` creates `postgres`) or run Headend as an \
         unprivileged user"
    )]
    UserNotFound {
        /// The missing account.
        user: String,
    },

    /// The account database could not be queried.
    #[error(
        "looking up user `{user}` failed: {source}; check /etc/passwd and the NSS configuration"
    )]
    UserLookup {
        /// The account being looked up.
        user: String,
        /// The underlying error.
        source: nix::Error,
    },

    /// The configuration asks PostgreSQL to run as root, which it refuses.
    #[error(
        "PostgreSQL refuses to run as root: use RunAs::Auto (runs it as the `postgres` system \
         user) or start Headend as an unprivileged user"
    )]
    RunAsRoot,

    /// Running as another user needs root, and we are not root.
    #[error(
        "cannot run PostgreSQL as `{user}`: switching users requires root; start Headend as \
         `{user}` or use RunAs::CurrentUser"
    )]
    CannotSwitchUser {
        /// The requested account.
        user: String,
    },

    /// A directory on the way to `path` cannot be traversed by the run-as user.
    #[error(
        "{path} is not reachable by user `{user}` because {blocker} is not traversable for it: \
         choose a data directory the {user} user can reach, e.g. /var/lib/headend, via \
         HEADEND_DATA_DIR"
    )]
    Unreachable {
        /// The path PostgreSQL needs.
        path: PathBuf,
        /// The first ancestor lacking search permission for `user`.
        blocker: PathBuf,
        /// The run-as user.
        user: String,
    },

    /// The socket path would not fit into `sockaddr_un`.
    #[error(
        "Unix socket path {path} is {len} bytes, over the {max}-byte limit of Unix socket \
         paths: choose a shorter socket directory"
    )]
    SocketPathTooLong {
        /// The full socket file path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The platform's limit.
        max: usize,
    },

    /// A path contains characters that `pg_ctl`'s shell command line cannot carry.
    #[error(
        "path {path:?} is unusable for PostgreSQL's tools (it is not UTF-8 or contains a quote, \
         backslash, `$`, backtick or control character): choose a plainer path"
    )]
    UnsafePath {
        /// The offending path.
        path: PathBuf,
    },

    /// A configured server setting cannot be written to a configuration file.
    #[error("invalid PostgreSQL setting `{name}`: {reason}; fix the setting")]
    InvalidSetting {
        /// The setting's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The data directory holds something other than a cluster.
    #[error(
        "data directory {dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): \
         empty it or choose another directory via HEADEND_DATA_DIR"
    )]
    DataDirNotEmpty {
        /// The data directory.
        dir: PathBuf,
    },

    /// `start` was called before `ensure_initialized`.
    #[error(
        "data directory {dir} holds no PostgreSQL cluster: call Cluster::ensure_initialized \
         before Cluster::start"
    )]
    NotInitialized {
        /// The data directory.
        dir: PathBuf,
    },

    /// A filesystem operation failed.
    #[error("could not {action} {path}: {source}; check the path's ownership and permissions")]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// An external program could not be started at all.
    #[error(
        "could not run {program}: {source}; check the PostgreSQL installation \
         (`apt-get install postgresql`)"
    )]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// An external program ran and failed.
    #[error("{step} failed (`{command}` {status}): {fix}{}", with_details(.output))]
    CommandFailed {
        /// What we were trying to do, e.g. "initialising the cluster".
        step: &'static str,
        /// The command line, for reproducing by hand.
        command: String,
        /// How it ended, e.g. "exit status: 1".
        status: String,
        /// What to do about it.
        fix: &'static str,
        /// The tail of its output (and of the server log where relevant).
        output: String,
    },

    /// The server did not come up in time.
    #[error(
        "PostgreSQL did not accept connections on {socket} within {waited:?}: see the server \
         log {log_file}{}",
        with_details(.log_tail)
    )]
    NotReady {
        /// The socket polled.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The server log.
        log_file: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
}

/// Appends captured output on its own lines, keeping one-line errors one line.
fn with_details(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!("\n{}", output.trim_end())
    }
}
