//! The private cluster: configuration, initialisation, start and stop.

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::binaries::PgBinaries;
use crate::error::{PgEmbedError, Result};
use crate::identity::{Identity, RunAs};
use crate::process::{run, tail, TAIL_LINES};

/// Default port; it only names the socket file, as nothing listens on TCP.
pub const DEFAULT_PORT: u16 = 5432;
/// Default database superuser role.
pub const DEFAULT_SUPERUSER: &str = "headend";

/// Bound on `pg_ctl`'s own waits and on our readiness polling.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Settings file in the data directory, rewritten on every start.
const SETTINGS_FILE: &str = "headend.conf";
/// The line that makes `postgresql.conf` read [`SETTINGS_FILE`].
const INCLUDE_LINE: &str = "include 'headend.conf'";
/// Longest socket path `sockaddr_un` holds: `sun_path` minus the final NUL.
const MAX_SOCKET_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// How to set up and run the private cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's data directory; created if missing.
    pub dir: PathBuf,
    /// Where the Unix socket lives. Keep it short: the whole socket path
    /// must fit in 107 bytes. Created with mode 0700 if missing.
    pub socket_dir: PathBuf,
    /// Names the socket file `.s.PGSQL.<port>`; there is no TCP listener.
    pub port: u16,
    /// The database superuser role created by `initdb`.
    pub superuser: String,
    /// The operating-system user running the server.
    pub run_as: RunAs,
    /// Extra `postgresql.conf` settings, e.g. `("shared_buffers", "64MB")`.
    /// They cannot override the socket-only setup (`listen_addresses`,
    /// `unix_socket_*`, `port`) nor the logging to [`ClusterConfig::log_file`].
    pub settings: Vec<(String, String)>,
    /// The server log.
    pub log_file: PathBuf,
    /// Trade durability for speed (`initdb --no-sync`, `fsync = off`).
    /// For tests only: a crash can corrupt such a cluster.
    pub fast_unsafe: bool,
}

impl ClusterConfig {
    /// A configuration with defaults: port 5432, superuser `headend`,
    /// [`RunAs::Auto`], and the log at `<dir>/postgresql.log`.
    pub fn new(dir: impl Into<PathBuf>, socket_dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            log_file: dir.join("postgresql.log"),
            dir,
            socket_dir: socket_dir.into(),
            port: DEFAULT_PORT,
            superuser: DEFAULT_SUPERUSER.to_owned(),
            run_as: RunAs::Auto,
            settings: Vec::new(),
            fast_unsafe: false,
        }
    }
}

/// A validated cluster configuration bound to server binaries and a run-as user.
#[derive(Debug, Clone)]
pub struct Cluster {
    binaries: PgBinaries,
    config: ClusterConfig,
    identity: Identity,
}

impl Cluster {
    /// Validates `config` (paths made absolute, socket path length, setting
    /// syntax) and resolves the run-as user, so that mistakes surface before
    /// anything is created.
    pub fn new(binaries: PgBinaries, mut config: ClusterConfig) -> Result<Self> {
        for path in [
            &mut config.dir,
            &mut config.socket_dir,
            &mut config.log_file,
        ] {
            *path = std::path::absolute(&*path).map_err(io_error("resolve", path))?;
            check_plain(path)?;
        }
        check_socket_path(&config.socket_dir, config.port)?;
        for (name, value) in &config.settings {
            check_setting(name, value)?;
        }
        let identity = Identity::resolve(&config.run_as)?;
        Ok(Self {
            binaries,
            config,
            identity,
        })
    }

    /// The (absolutised) configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The binaries the cluster runs with.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// The name of the operating-system user running the server.
    pub fn run_as_user(&self) -> &str {
        &self.identity.name
    }

    /// Runs `initdb` unless the data directory already holds a cluster;
    /// returns whether it created one.
    ///
    /// Local (socket) connections are trusted and TCP is rejected. If
    /// `initdb` fails, whatever it left is removed (the whole directory if we
    /// created it, otherwise its contents, which were empty before), so the
    /// next attempt starts clean.
    pub async fn ensure_initialized(&self) -> Result<bool> {
        let dir = &self.config.dir;
        if dir.join("PG_VERSION").exists() {
            return Ok(false);
        }
        let created_dir = self.prepare_data_dir()?;
        let locale = if c_utf8_available().await {
            "C.UTF-8"
        } else {
            tracing::info!("locale C.UTF-8 is not installed; initialising with locale C");
            "C"
        };
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(dir)
            .arg("-U")
            .arg(&self.config.superuser)
            .args(["--auth-local=trust", "--auth-host=reject", "-E", "UTF8"])
            .arg(format!("--locale={locale}"));
        if self.config.fast_unsafe {
            initdb.arg("--no-sync");
        }
        tracing::info!(
            dir = %dir.display(),
            user = %self.identity.name,
            "initialising PostgreSQL cluster"
        );
        let finished = run(&mut initdb).await?;
        if !finished.success() {
            self.discard_partial_init(created_dir).await;
            return Err(finished.failure(
                "initialising the PostgreSQL cluster",
                "fix the cause shown below and start again (the partial cluster was removed)",
            ));
        }
        Ok(true)
    }

    /// Starts the server on its Unix socket and waits until it accepts connections.
    ///
    /// A server already running for this data directory (say, left behind
    /// when a previous Headend was killed) is adopted if it serves the
    /// configured socket, and restarted otherwise. An adopted server keeps
    /// the settings it was started with.
    pub async fn start(&self) -> Result<RunningCluster> {
        let dir = &self.config.dir;
        if !dir.join("PG_VERSION").exists() {
            return Err(PgEmbedError::NotInitialized { dir: dir.clone() });
        }
        self.create_private_dir(&self.config.socket_dir)?;
        self.prepare_log_file()?;
        self.write_settings()?;

        let adopted = match self.running_postmaster().await? {
            Some(pid_file) if pid_file.serves(&self.config.socket_dir, self.config.port) => {
                tracing::info!(
                    dir = %dir.display(),
                    "adopting the PostgreSQL server already running"
                );
                true
            }
            Some(_) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "restarting the PostgreSQL server already running with other socket settings"
                );
                self.pg_ctl_stop().await?;
                self.pg_ctl_start().await?;
                false
            }
            None => {
                self.pg_ctl_start().await?;
                false
            }
        };
        self.wait_until_ready().await?;
        Ok(RunningCluster {
            cluster: self.clone(),
            adopted,
        })
    }

    /// Creates the data directory, or takes over an existing empty one.
    /// Returns whether it was created.
    fn prepare_data_dir(&self) -> Result<bool> {
        let dir = &self.config.dir;
        if self.create_private_dir(dir)? {
            return Ok(true);
        }
        let mut entries = fs::read_dir(dir).map_err(io_error("read directory", dir))?;
        if entries.next().is_some() {
            return Err(PgEmbedError::DataDirNotEmpty { dir: dir.clone() });
        }
        self.identity.give(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error("set permissions of", dir))?;
        Ok(false)
    }

    /// Creates `dir` (mode 0700, owned by the run-as user) and missing
    /// parents (mode 0755, so the run-as user can pass through), after
    /// checking that the run-as user can reach it. An existing `dir` is left
    /// as it is: it may be shared, like `/tmp`. Returns whether it was created.
    fn create_private_dir(&self, dir: &Path) -> Result<bool> {
        if let Some(parent) = dir.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_error("create directory", parent))?;
        }
        self.identity.check_reachable(dir)?;
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => self.identity.give(dir).map(|()| true),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(io_error("create directory", dir)(error)),
        }
    }

    /// Creates the log file for the run-as user, so that `pg_ctl` (running
    /// as that user) can append to it wherever its directory is.
    fn prepare_log_file(&self) -> Result<()> {
        let log_file = &self.config.log_file;
        if let Some(parent) = log_file.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_error("create directory", parent))?;
        }
        self.identity.check_reachable(log_file)?;
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(log_file)
            .map_err(io_error("create log file", log_file))?;
        self.identity.give(log_file)
    }

    /// Writes [`SETTINGS_FILE`] and makes `postgresql.conf` include it.
    ///
    /// A file rather than `pg_ctl -o "-c ..."`: `pg_ctl` pastes `-o` into a
    /// shell command line truncated at 1024 bytes, and a file needs no shell
    /// quoting. It is included at the end of `postgresql.conf`, so it
    /// overrides that file; only `ALTER SYSTEM`, which needs a superuser,
    /// overrides it in turn.
    fn write_settings(&self) -> Result<()> {
        let dir = &self.config.dir;
        let conf = dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf).map_err(io_error("read", &conf))?;
        if !text.lines().any(|line| line.trim() == INCLUDE_LINE) {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&conf)
                .map_err(io_error("open", &conf))?;
            writeln!(
                file,
                "\n# Added by Headend: its settings, rewritten on every start.\n{INCLUDE_LINE}"
            )
            .map_err(io_error("append to", &conf))?;
        }

        let mut body =
            String::from("# Written by Headend on every start; edits are overwritten.\n");
        for (name, value) in self.server_settings() {
            let value = value.replace('\\', "\\\\").replace('\'', "''");
            let _ = writeln!(body, "{name} = '{value}'");
        }
        let path = dir.join(SETTINGS_FILE);
        fs::write(&path, body).map_err(io_error("write", &path))?;
        self.identity.give(&path)
    }

    /// All server settings, later entries overriding earlier ones.
    ///
    /// The socket-only setup comes last so configuration cannot weaken it.
    /// Authentication on the socket is `trust`, so the socket's permissions
    /// (0700: the run-as user and root only) are the security boundary.
    fn server_settings(&self) -> Vec<(String, String)> {
        let config = &self.config;
        let mut settings = Vec::new();
        if config.fast_unsafe {
            settings.push(("fsync".to_owned(), "off".to_owned()));
        }
        settings.extend(config.settings.iter().cloned());
        let socket_dir = config.socket_dir.display();
        let enforced = [
            ("listen_addresses", String::new()),
            // Double quotes: the value is a comma-separated list.
            ("unix_socket_directories", format!("\"{socket_dir}\"")),
            ("unix_socket_permissions", "0700".to_owned()),
            ("port", config.port.to_string()),
            ("logging_collector", "off".to_owned()),
            ("log_destination", "stderr".to_owned()),
        ];
        settings.extend(enforced.map(|(name, value)| (name.to_owned(), value)));
        settings
    }

    /// `postmaster.pid` of a live server for this data directory, if any.
    async fn running_postmaster(&self) -> Result<Option<PidFile>> {
        let path = self.config.dir.join("postmaster.pid");
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("read", &path)(error)),
        };
        // A stale file (the server died with its machine) is `pg_ctl start`'s business.
        let mut status = self.command("pg_ctl");
        status.arg("status").arg("-D").arg(&self.config.dir);
        let running = run(&mut status).await?.success();
        Ok(running.then(|| PidFile::parse(&text)))
    }

    async fn pg_ctl_start(&self) -> Result<()> {
        let mut start = self.command("pg_ctl");
        start
            .args(["start", "-w", "-t", &TIMEOUT.as_secs().to_string(), "-D"])
            .arg(&self.config.dir)
            .arg("-l")
            .arg(&self.config.log_file);
        tracing::info!(dir = %self.config.dir.display(), "starting PostgreSQL");
        let finished = run(&mut start).await?;
        if finished.success() {
            Ok(())
        } else {
            Err(finished.failure_with(
                "starting PostgreSQL",
                "see the output and server log below",
                &self.log_tail(),
            ))
        }
    }

    async fn pg_ctl_stop(&self) -> Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.args([
            "stop",
            "-m",
            "fast",
            "-w",
            "-t",
            &TIMEOUT.as_secs().to_string(),
            "-D",
        ])
        .arg(&self.config.dir);
        tracing::info!(dir = %self.config.dir.display(), "stopping PostgreSQL");
        let finished = run(&mut stop).await?;
        if finished.success() {
            Ok(())
        } else {
            Err(finished.failure_with(
                "stopping PostgreSQL",
                "see the output below; retry, or run the command by hand as the server's user",
                &self.log_tail(),
            ))
        }
    }

    /// Polls with `pg_isready`, backing off up to a second, for at most [`TIMEOUT`].
    async fn wait_until_ready(&self) -> Result<()> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let mut ping = self.client("pg_isready");
            ping.args(["-q", "-t", "5", "-d", "postgres"]);
            let finished = run(&mut ping).await?;
            match finished.status.code() {
                Some(0) => return Ok(()),
                // 3: no attempt made, i.e. bad arguments; waiting will not help.
                Some(3) => {
                    return Err(finished.failure(
                        "checking whether PostgreSQL is ready",
                        "check the socket directory and port settings",
                    ))
                }
                _ => {}
            }
            if started.elapsed() + delay > TIMEOUT {
                return Err(PgEmbedError::NotReady {
                    socket: self.socket_path(),
                    waited: started.elapsed(),
                    log_file: self.config.log_file.clone(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn discard_partial_init(&self, created_dir: bool) {
        let dir = &self.config.dir;
        let removed = if created_dir {
            tokio::fs::remove_dir_all(dir).await
        } else {
            remove_contents(dir).await
        };
        if let Err(error) = removed {
            tracing::warn!(
                dir = %dir.display(),
                %error,
                "could not remove the partial cluster; empty the directory before the next start"
            );
        }
    }

    /// A PostgreSQL tool running as the run-as user.
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.binaries.tool(tool));
        // `/`: our working directory may be closed to the run-as user.
        // `LC_ALL=C`: English tool output, which `create_database` matches
        // on; the server's own locale settings come from its configuration.
        cmd.current_dir("/").env("LC_ALL", "C");
        self.identity.apply(&mut cmd);
        cmd
    }

    /// A client tool, pointed at our socket as the superuser.
    fn client(&self, tool: &str) -> Command {
        let mut cmd = self.command(tool);
        cmd.arg("-h")
            .arg(&self.config.socket_dir)
            .arg("-p")
            .arg(self.config.port.to_string())
            .arg("-U")
            .arg(&self.config.superuser);
        cmd
    }

    fn socket_path(&self) -> PathBuf {
        socket_path(&self.config.socket_dir, self.config.port)
    }

    fn log_tail(&self) -> String {
        match fs::read(&self.config.log_file) {
            Ok(log) => format!(
                "server log {}:\n{}",
                self.config.log_file.display(),
                tail(&String::from_utf8_lossy(&log), TAIL_LINES)
            ),
            Err(error) => format!(
                "(server log {} unreadable: {error})",
                self.config.log_file.display()
            ),
        }
    }
}

/// A started (or adopted) server.
///
/// Dropping this handle leaves the server running: it is a separate process
/// tree, and the next [`Cluster::start`] adopts it. Call
/// [`RunningCluster::stop`] for an orderly shutdown.
#[derive(Debug)]
pub struct RunningCluster {
    cluster: Cluster,
    adopted: bool,
}

impl RunningCluster {
    /// A libpq- and sqlx-compatible URL for `database` over the Unix socket,
    /// e.g. `postgres://headend@localhost/app?host=/run/headend&port=5432`.
    /// The `host` parameter overrides `localhost`; both libpq and sqlx take
    /// a value starting with `/` as a socket directory.
    pub fn url(&self, database: &str) -> String {
        let config = &self.cluster.config;
        format!(
            "postgres://{}@localhost/{}?host={}&port={}",
            percent_encode(&config.superuser, b""),
            percent_encode(database, b""),
            // UTF-8 was checked in `Cluster::new`.
            percent_encode(&config.socket_dir.to_string_lossy(), b"/"),
            config.port,
        )
    }

    /// The directory holding the socket.
    pub fn socket_dir(&self) -> &Path {
        &self.cluster.config.socket_dir
    }

    /// The port naming the socket file.
    pub fn port(&self) -> u16 {
        self.cluster.config.port
    }

    /// The database superuser role.
    pub fn superuser(&self) -> &str {
        &self.cluster.config.superuser
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.cluster.config.dir
    }

    /// Whether [`Cluster::start`] found this server already running.
    pub fn was_adopted(&self) -> bool {
        self.adopted
    }

    /// Creates database `name`; Ok if it already exists.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let mut createdb = self.cluster.client("createdb");
        createdb.arg("--").arg(name);
        let finished = run(&mut createdb).await?;
        if finished.success() || finished.output.contains("already exists") {
            Ok(())
        } else {
            Err(finished.failure(
                "creating a database",
                "check the database name and the server log",
            ))
        }
    }

    /// Drops database `name`; Ok if it does not exist. Fails while sessions
    /// are connected to it.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let mut dropdb = self.cluster.client("dropdb");
        dropdb.args(["--if-exists", "--"]).arg(name);
        let finished = run(&mut dropdb).await?;
        if finished.success() {
            Ok(())
        } else {
            Err(finished.failure(
                "dropping a database",
                "close the sessions connected to it and retry",
            ))
        }
    }

    /// Shuts the server down (fast mode: sessions are disconnected, work
    /// in progress is rolled back) and waits for it to exit. Ok if it had
    /// already stopped.
    pub async fn stop(self) -> Result<()> {
        if !self.cluster.config.dir.join("postmaster.pid").exists() {
            tracing::debug!("PostgreSQL already stopped");
            return Ok(());
        }
        self.cluster.pg_ctl_stop().await
    }
}

/// The fields of `postmaster.pid` telling where a running server listens.
#[derive(Debug, Default, PartialEq, Eq)]
struct PidFile {
    port: Option<u16>,
    socket_dir: Option<PathBuf>,
    listen_addresses: Option<String>,
}

impl PidFile {
    /// Lines 4, 5 and 6 of the file hold the port, the first socket
    /// directory and the TCP listen address (empty for none).
    fn parse(text: &str) -> Self {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        Self {
            port: lines.get(3).and_then(|port| port.parse().ok()),
            socket_dir: lines.get(4).map(PathBuf::from),
            listen_addresses: lines.get(5).map(|&listen| listen.to_owned()),
        }
    }

    /// Whether the server serves `socket_dir`/`port` and nothing else.
    /// Fields not written yet (a server still starting) count as matching.
    fn serves(&self, socket_dir: &Path, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && self
                .socket_dir
                .as_deref()
                .is_none_or(|dir| dir == socket_dir)
            && self.listen_addresses.as_deref().is_none_or(str::is_empty)
    }
}

/// Whether the C.UTF-8 locale is installed. Without a `locale` tool (e.g.
/// on musl, which accepts any name) we assume so and let `initdb` judge.
async fn c_utf8_available() -> bool {
    match Command::new("locale").arg("-a").output().await {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).lines().any(|name| {
                name.eq_ignore_ascii_case("c.utf8") || name.eq_ignore_ascii_case("c.utf-8")
            })
        }
        _ => true,
    }
}

async fn remove_contents(dir: &Path) -> io::Result<()> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_dir() {
            tokio::fs::remove_dir_all(entry.path()).await?;
        } else {
            tokio::fs::remove_file(entry.path()).await?;
        }
    }
    Ok(())
}

fn socket_path(socket_dir: &Path, port: u16) -> PathBuf {
    socket_dir.join(format!(".s.PGSQL.{port}"))
}

fn check_socket_path(socket_dir: &Path, port: u16) -> Result<()> {
    let path = socket_path(socket_dir, port);
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(PgEmbedError::SocketPathTooLong {
            path,
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// Rejects paths that `pg_ctl` cannot pass through the double-quoted shell
/// command line it builds (`exec postgres -D "<dir>" >> "<log>"`).
fn check_plain(path: &Path) -> Result<()> {
    let plain = path.to_str().is_some_and(|text| {
        !text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '$' | '`') || c.is_control())
    });
    if plain {
        Ok(())
    } else {
        Err(PgEmbedError::UnsafePath {
            path: path.to_path_buf(),
        })
    }
}

fn check_setting(name: &str, value: &str) -> Result<()> {
    let invalid = |reason| PgEmbedError::InvalidSetting {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(invalid("names consist of letters, digits, `_` and `.`"));
    }
    if value.chars().any(|c| matches!(c, '\n' | '\r' | '\0')) {
        return Err(invalid("values cannot contain line breaks or NUL"));
    }
    Ok(())
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PgEmbedError {
    let path = path.to_path_buf();
    move |source| PgEmbedError::Io {
        action,
        path,
        source,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `keep`.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_length_is_checked() {
        // "/tmp/" + dir + "/.s.PGSQL.5432" is 19 bytes plus the name.
        let fits = PathBuf::from(format!("/tmp/{}", "d".repeat(88)));
        assert!(check_socket_path(&fits, 5432).is_ok());
        let long = PathBuf::from(format!("/tmp/{}", "d".repeat(89)));
        let message = check_socket_path(&long, 5432).unwrap_err().to_string();
        assert!(
            message.contains("108 bytes, over the 107-byte limit"),
            "{message}"
        );
        assert!(
            message.ends_with("choose a shorter socket directory"),
            "{message}"
        );
    }

    #[test]
    fn shell_hostile_paths_are_rejected() {
        assert!(check_plain(Path::new("/var/lib/headend data/pg")).is_ok());
        for bad in [
            "/tmp/a\"b",
            "/tmp/$HOME",
            "/tmp/a`b`",
            "/tmp/a\\b",
            "/tmp/a\nb",
        ] {
            assert!(check_plain(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_are_validated() {
        assert!(check_setting("shared_buffers", "64MB").is_ok());
        assert!(check_setting("auto_explain.log_min_duration", "1s").is_ok());
        assert!(check_setting("bad name", "x").is_err());
        assert!(check_setting("work_mem", "1\n2").is_err());
    }

    #[test]
    fn url_encodes_socket_dir_and_names() {
        assert_eq!(percent_encode("/tmp/a b+c", b"/"), "/tmp/a%20b%2Bc");
        assert_eq!(percent_encode("my db", b""), "my%20db");
    }

    #[test]
    fn pid_file_fields_are_compared() {
        let text = "1234\n/var/lib/headend/pg\n1700000000\n5432\n/run/headend\n\n  1 2\nready   \n";
        let pid_file = PidFile::parse(text);
        assert_eq!(pid_file.port, Some(5432));
        assert!(pid_file.serves(Path::new("/run/headend/"), 5432));
        assert!(!pid_file.serves(Path::new("/run/headend"), 5433));
        assert!(!pid_file.serves(Path::new("/tmp"), 5432));
        let tcp = PidFile::parse(&text.replace("\n\n", "\n*\n"));
        assert!(!tcp.serves(Path::new("/run/headend"), 5432));
        assert!(PidFile::parse("1234\n").serves(Path::new("/x"), 1));
    }
}
