//! Files in a journal directory:
//!
//! - `LOCK`: held with `flock(LOCK_EX)` while the journal is open;
//! - `epoch`: the journal's random identity, 16 hex digits;
//! - `checkpoint`: the [`AckSet`](crate::acks::AckSet), replaced by rename;
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, named by their first seq
//!   (zero-padded so that names sort like numbers).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::IoContext;
use crate::JournalError;

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const LOCK_FILE: &str = "LOCK";
const EPOCH_FILE: &str = "epoch";
const SEGMENT_SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".tmp";

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// The first seq of a segment file, or `None` if `name` is not one.
pub(crate) fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Exclusive advisory lock on the directory, released on drop.
///
/// `flock` locks belong to the open file description, so a second `open` of
/// the same directory fails even within one process.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_FILE)
            .open(&path)
            .context("open lock file", &path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(JournalError::Locked {
                dir: dir.to_owned(),
            }),
            Err((_, errno)) => Err(io::Error::from(errno)).context("flock", &path),
        }
    }
}

/// Reads the epoch, creating it if this is a new journal.
///
/// A directory that holds journal data but no epoch is refused rather than
/// given a fresh one: consumers key idempotency on (epoch, seq), so a new
/// epoch would make every replayed record look new.
pub(crate) fn load_or_create_epoch(dir: &Path, has_data: bool) -> Result<u64, JournalError> {
    let path = dir.join(EPOCH_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|_| JournalError::Corrupt {
            path,
            offset: 0,
            reason: format!("epoch file holds {text:?}, not 16 hex digits"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !has_data => {
            let epoch = rand::random::<u64>();
            write_atomically(dir, EPOCH_FILE, format!("{epoch:016x}\n").as_bytes())?;
            Ok(epoch)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(JournalError::Corrupt {
            path,
            offset: 0,
            reason: "the directory holds journal data but no epoch file".into(),
        }),
        Err(e) => Err(e).context("read", &path),
    }
}

/// Durably replaces `dir/name` with `contents` via a temporary file and
/// rename, so that after a crash it holds either the old or the new contents.
pub(crate) fn write_atomically(
    dir: &Path,
    name: &str,
    contents: &[u8],
) -> Result<(), JournalError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(&tmp)
        .context("create", &tmp)?;
    file.write_all(contents).context("write", &tmp)?;
    file.sync_data().context("fdatasync", &tmp)?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).context("rename into place", &path)?;
    sync_dir(dir)
}

/// Journal files hold every site's raw readings: only Headend's own user may read them.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and missing parents) readable by its owner only, and tightens an existing
/// one: a journal left by an older release with a looser mode is closed to other users too
/// (its files then cannot be reached whatever their own mode).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .context("create directory", dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR))
        .context("restrict the directory's permissions", dir)
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("fsync directory", dir)
}

/// Removes temporary files a crash may have left behind.
pub(crate) fn remove_stale_tmp_files(dir: &Path) -> Result<(), JournalError> {
    for entry in fs::read_dir(dir).context("list", dir)? {
        let path = entry.context("list", dir)?.path();
        if path.to_str().is_some_and(|p| p.ends_with(TMP_SUFFIX)) {
            fs::remove_file(&path).context("remove stale", &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let path = segment_path(Path::new("/j"), 1);
        assert_eq!(path, Path::new("/j/00000000000000000001.seg"));
        assert_eq!(parse_segment_name(path.file_name().unwrap()), Some(1));
        assert_eq!(parse_segment_name(OsStr::new("1.seg")), None);
        assert_eq!(parse_segment_name(OsStr::new("checkpoint")), None);
        assert_eq!(
            parse_segment_name(OsStr::new("0000000000000000000a.seg")),
            None
        );
    }
}
