//! Finding the PostgreSQL server binaries on this machine.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{PgEmbedError, Result};
use crate::process::run_blocking;

/// The tools a directory must hold to count as a server bindir.
const SERVER_TOOLS: [&str; 3] = ["initdb", "postgres", "pg_ctl"];

/// Where Debian and Ubuntu install server binaries, one directory per major version.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// A directory of PostgreSQL server binaries and the version they report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bindir: PathBuf,
    version: String,
}

impl PgBinaries {
    /// Finds the server binaries: `explicit_bindir`, then `PATH`, then
    /// `pg_config --bindir`, then the newest `/usr/lib/postgresql/<major>/bin`.
    ///
    /// See [`BinarySearch`] for the details of each step.
    pub fn locate(explicit_bindir: Option<&Path>) -> Result<Self> {
        BinarySearch::system(explicit_bindir).locate()
    }

    /// Uses `bindir` as is, asking its `postgres` for the version.
    pub fn from_bindir(bindir: impl Into<PathBuf>) -> Result<Self> {
        let bindir = bindir.into();
        let finished = run_blocking(Command::new(bindir.join("postgres")).arg("--version"))?;
        if !finished.success() {
            return Err(finished.failure(
                "checking the PostgreSQL version",
                "reinstall the PostgreSQL server package",
            ));
        }
        let version = parse_version(&finished.output);
        Ok(Self { bindir, version })
    }

    /// The directory holding `initdb`, `postgres`, `pg_ctl` and friends.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The version `postgres --version` reports, e.g. `15.14 (Debian 15.14-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The path of the tool `name` in [`PgBinaries::bindir`].
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The inputs of [`PgBinaries::locate`], separated so that every branch,
/// including "nothing found", can be tested on a machine that has PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct BinarySearch {
    /// A configured bindir, tried first. If it lacks the tools the search
    /// goes on (with a warning) rather than failing, so that a stale setting
    /// does not stop a machine that has PostgreSQL elsewhere.
    pub explicit: Option<PathBuf>,
    /// A `PATH`-style list searched for the tools together, and for `pg_config`.
    pub path: Option<OsString>,
    /// A directory of `<major>/bin` directories (Debian's layout).
    pub versioned_root: Option<PathBuf>,
}

impl BinarySearch {
    /// The search over this machine: the process's `PATH` and `/usr/lib/postgresql`.
    pub fn system(explicit: Option<&Path>) -> Self {
        Self {
            explicit: explicit.map(Path::to_path_buf),
            path: std::env::var_os("PATH"),
            versioned_root: Some(PathBuf::from(VERSIONED_ROOT)),
        }
    }

    /// Runs the search.
    pub fn locate(&self) -> Result<PgBinaries> {
        let bindir = self
            .find_bindir()
            .ok_or_else(|| PgEmbedError::BinariesNotFound {
                looked_in: self.describe(),
            })?;
        let binaries = PgBinaries::from_bindir(bindir)?;
        tracing::debug!(
            bindir = %binaries.bindir.display(),
            version = %binaries.version,
            "found PostgreSQL server binaries"
        );
        Ok(binaries)
    }

    fn find_bindir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.explicit {
            if has_server_tools(dir) {
                return Some(dir.clone());
            }
            tracing::warn!(
                dir = %dir.display(),
                "configured PostgreSQL bindir lacks initdb, postgres or pg_ctl; searching elsewhere"
            );
        }
        self.search_path()
            .or_else(|| self.ask_pg_config())
            .or_else(|| self.search_versioned_root())
    }

    /// The absolute directories of `path`. Empty and relative entries are
    /// skipped: they mean "the current directory", which is no place to pick
    /// up a database server from.
    fn path_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.path
            .iter()
            .flat_map(std::env::split_paths)
            .filter(|dir| dir.is_absolute())
    }

    /// The first `PATH` directory with all server tools. Symlinks (such as
    /// `/usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres`) are
    /// resolved so that the sibling client tools (`pg_isready`, `createdb`)
    /// are found next to the server.
    fn search_path(&self) -> Option<PathBuf> {
        self.path_dirs()
            .find(|dir| has_server_tools(dir))
            .map(|dir| {
                fs::canonicalize(dir.join("postgres"))
                    .ok()
                    .and_then(|real| real.parent().map(Path::to_path_buf))
                    .filter(|real| has_server_tools(real))
                    .unwrap_or(dir)
            })
    }

    /// `pg_config --bindir`, if that directory holds the server tools; on
    /// Debian `/usr/bin/pg_config` may belong to the client package and name
    /// a directory without them.
    fn ask_pg_config(&self) -> Option<PathBuf> {
        let pg_config = self
            .path_dirs()
            .map(|dir| dir.join("pg_config"))
            .find(|candidate| is_executable(candidate))?;
        let finished = run_blocking(Command::new(&pg_config).arg("--bindir")).ok()?;
        let bindir = PathBuf::from(finished.output.trim());
        (finished.success() && has_server_tools(&bindir)).then_some(bindir)
    }

    /// The highest-versioned `<root>/<version>/bin` with the server tools.
    fn search_versioned_root(&self) -> Option<PathBuf> {
        let entries = fs::read_dir(self.versioned_root.as_ref()?).ok()?;
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = parse_dir_version(entry.file_name().to_str()?)?;
                let bin = entry.path().join("bin");
                has_server_tools(&bin).then_some((version, bin))
            })
            .max_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, bin)| bin)
    }

    /// The searched places, for [`PgEmbedError::BinariesNotFound`].
    fn describe(&self) -> String {
        let mut places = Vec::new();
        if let Some(dir) = &self.explicit {
            places.push(dir.display().to_string());
        }
        if self.path.is_some() {
            places.extend(["PATH".to_owned(), "pg_config --bindir".to_owned()]);
        }
        if let Some(root) = &self.versioned_root {
            places.push(format!("{}/*/bin", root.display()));
        }
        if places.is_empty() {
            "no locations".to_owned()
        } else {
            places.join(", ")
        }
    }
}

fn has_server_tools(dir: &Path) -> bool {
    SERVER_TOOLS
        .iter()
        .all(|tool| is_executable(&dir.join(tool)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `"9.6"` -> `[9, 6]`, `"15"` -> `[15]`; anything else is not a version directory.
fn parse_dir_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// `postgres (PostgreSQL) 15.14 (Debian ...)` -> `15.14 (Debian ...)`.
fn parse_version(output: &str) -> String {
    let line = output.lines().next().unwrap_or_default().trim();
    line.strip_prefix("postgres (PostgreSQL)")
        .unwrap_or(line)
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_found_names_the_fix_on_one_line() {
        let search = BinarySearch {
            explicit: Some("/nonexistent/pg/bin".into()),
            ..BinarySearch::default()
        };
        let message = search.locate().unwrap_err().to_string();
        assert_eq!(
            message,
            "PostgreSQL server binaries not found (looked in /nonexistent/pg/bin): install them \
             with `apt-get install postgresql` or set HEADEND_DATABASE_URL to use an existing \
             server"
        );
    }

    #[test]
    fn nothing_found_lists_every_searched_place() {
        let empty = tempfile::tempdir().unwrap();
        let search = BinarySearch {
            explicit: None,
            path: Some(OsString::new()),
            versioned_root: Some(empty.path().to_path_buf()),
        };
        let message = search.locate().unwrap_err().to_string();
        let expected = format!(
            "(looked in PATH, pg_config --bindir, {}/*/bin): install",
            empty.path().display()
        );
        assert!(message.contains(&expected), "{message}");
        assert!(!message.contains('\n'));
    }

    /// Creates empty executables named `tools` in `dir`.
    fn fake_tools(dir: &Path, tools: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for tool in tools {
            let path = dir.join(tool);
            fs::write(&path, "").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn path_symlinks_resolve_to_the_real_bindir() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("lib/pg/bin");
        fake_tools(&real, &SERVER_TOOLS);
        let client_only = root.path().join("client");
        fake_tools(&client_only, &["pg_ctl"]);
        let links = root.path().join("links");
        fs::create_dir(&links).unwrap();
        for tool in SERVER_TOOLS {
            std::os::unix::fs::symlink(real.join(tool), links.join(tool)).unwrap();
        }
        let search = BinarySearch {
            path: Some(
                std::env::join_paths(["relative".as_ref(), client_only.as_path(), &links]).unwrap(),
            ),
            ..BinarySearch::default()
        };
        let expected = fs::canonicalize(&real).unwrap();
        assert_eq!(search.search_path(), Some(expected));
    }

    #[test]
    fn versioned_root_prefers_the_highest_major() {
        let root = tempfile::tempdir().unwrap();
        fake_tools(&root.path().join("9.6/bin"), &SERVER_TOOLS);
        fake_tools(&root.path().join("15/bin"), &SERVER_TOOLS);
        fake_tools(&root.path().join("notes/bin"), &SERVER_TOOLS);
        // 16 is incomplete, so 15 must win.
        fake_tools(&root.path().join("16/bin"), &["initdb"]);
        let search = BinarySearch {
            versioned_root: Some(root.path().to_path_buf()),
            ..BinarySearch::default()
        };
        assert_eq!(
            search.search_versioned_root(),
            Some(root.path().join("15/bin"))
        );
    }

    #[test]
    fn version_line_is_trimmed() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            "15.14 (Debian 15.14-0+deb12u1)"
        );
        assert_eq!(parse_dir_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_dir_version("15"), Some(vec![15]));
        assert_eq!(parse_dir_version("main"), None);
    }
}
