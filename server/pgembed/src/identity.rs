//! Which operating-system user PostgreSQL runs as, and what that user can reach.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{getegid, geteuid, Gid, Uid, User};

use crate::error::{PgEmbedError, Result};

/// The system account [`RunAs::Auto`] uses when Headend runs as root.
const SYSTEM_USER: &str = "postgres";

/// Which operating-system user runs the PostgreSQL server and its tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RunAs {
    /// `postgres` when running as root (PostgreSQL refuses to run as root),
    /// otherwise the current user.
    #[default]
    Auto,
    /// The current user; an error when that is root.
    CurrentUser,
    /// A named user; switching to it requires running as root.
    User(String),
}

/// A resolved run-as user.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub name: String,
    uid: Uid,
    gid: Gid,
}

impl Identity {
    pub fn resolve(run_as: &RunAs) -> Result<Self> {
        let euid = geteuid();
        let identity = match run_as {
            RunAs::Auto if euid.is_root() => Self::by_name(SYSTEM_USER)?,
            RunAs::Auto | RunAs::CurrentUser => Self::current(euid)?,
            RunAs::User(name) => Self::by_name(name)?,
        };
        if identity.uid.is_root() {
            return Err(PgEmbedError::RunAsRoot);
        }
        if identity.uid != euid && !euid.is_root() {
            return Err(PgEmbedError::CannotSwitchUser {
                user: identity.name,
            });
        }
        Ok(identity)
    }

    fn by_name(name: &str) -> Result<Self> {
        let user = User::from_name(name)
            .map_err(|source| PgEmbedError::UserLookup {
                user: name.to_owned(),
                source,
            })?
            .ok_or_else(|| PgEmbedError::UserNotFound {
                user: name.to_owned(),
            })?;
        Ok(Self::from(user))
    }

    fn current(euid: Uid) -> Result<Self> {
        let user = User::from_uid(euid).map_err(|source| PgEmbedError::UserLookup {
            user: euid.to_string(),
            source,
        })?;
        // An unnamed uid (common in containers) is still a fine owner.
        Ok(user.map_or_else(
            || Self {
                name: euid.to_string(),
                uid: euid,
                gid: getegid(),
            },
            Self::from,
        ))
    }

    /// Whether commands must switch to this user, i.e. we are root and it is not.
    pub fn is_other(&self) -> bool {
        self.uid != geteuid()
    }

    /// Makes `cmd` run as this user.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        if self.is_other() {
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
    }

    /// Hands `path` to this user, when that is someone else.
    pub fn give(&self, path: &Path) -> Result<()> {
        if !self.is_other() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw())).map_err(
            |source| PgEmbedError::Io {
                action: "change the owner of",
                path: path.to_path_buf(),
                source,
            },
        )
    }

    /// Checks that this user may traverse every existing ancestor of `path`.
    ///
    /// Only needed when switching users: as ourselves, the operations fail
    /// with a plain permission error anyway. The check reads only the owner,
    /// primary group and mode bits: the standard library drops supplementary
    /// groups when switching uid, so those are exactly what the child gets.
    /// (ACLs are ignored; they are rare on the directories in question.)
    pub fn check_reachable(&self, path: &Path) -> Result<()> {
        if !self.is_other() {
            return Ok(());
        }
        for ancestor in path.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            if !self.can_traverse(&meta) {
                return Err(PgEmbedError::Unreachable {
                    path: path.to_path_buf(),
                    blocker: ancestor.to_path_buf(),
                    user: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    fn can_traverse(&self, meta: &std::fs::Metadata) -> bool {
        let search_bit = if meta.uid() == self.uid.as_raw() {
            0o100
        } else if meta.gid() == self.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        meta.mode() & search_bit != 0
    }
}

impl From<User> for Identity {
    fn from(user: User) -> Self {
        Self {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_resolves_to_root() {
        match Identity::resolve(&RunAs::Auto) {
            Ok(identity) => assert!(!identity.uid.is_root()),
            Err(error) => assert!(matches!(error, PgEmbedError::UserNotFound { .. })),
        }
    }

    #[test]
    fn missing_user_is_named() {
        let error = Identity::resolve(&RunAs::User("no-such-user-hdnd".into())).unwrap_err();
        assert!(
            error.to_string().starts_with("user `no-such-user-hdnd` "),
            "{error}"
        );
    }

    #[test]
    fn current_user_as_root_is_refused() {
        if geteuid().is_root() {
            assert!(matches!(
                Identity::resolve(&RunAs::CurrentUser),
                Err(PgEmbedError::RunAsRoot)
            ));
        }
    }
}
