use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong in the journal.
///
/// The type is `Clone` because one failed `fdatasync` has to be reported to
/// every appender whose record was in that batch; I/O errors are therefore
/// held in an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A filesystem operation failed (ENOSPC, EIO, ...).
    #[error("journal: {op} {path}")]
    Io {
        /// What the journal was doing, e.g. `"fdatasync"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// Another `Journal` (in this or another process) holds the directory.
    #[error("journal directory {dir} is already open elsewhere (lock held on its LOCK file)")]
    Locked { dir: PathBuf },
    /// The payload is larger than [`JournalOptions::max_record_bytes`](crate::JournalOptions::max_record_bytes).
    #[error("record of {size} bytes exceeds the journal's limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// Unacknowledged data would exceed [`JournalOptions::max_bytes`](crate::JournalOptions::max_bytes):
    /// the caller should apply backpressure and retry once consumers catch up.
    #[error("journal is full: {used} of {max} bytes hold unacknowledged records")]
    Full { used: u64, max: u64 },
    /// An earlier write or fdatasync failed; nothing written after that point
    /// can be trusted, so the journal refuses appends until it is reopened.
    #[error("journal refuses appends after an earlier write failure; reopen it to recover")]
    Failed(#[source] Arc<JournalError>),
    /// The journal has been closed (or dropped).
    #[error("journal is closed")]
    Closed,
    /// Data that was once durable does not read back as written.
    #[error("journal data corrupt in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// `ack` was given a range that is empty or was never handed out.
    #[error("invalid acknowledgement {first}..={last}: {reason}")]
    InvalidAck {
        first: u64,
        last: u64,
        reason: &'static str,
    },
    /// [`JournalOptions`](crate::JournalOptions) are inconsistent.
    #[error("invalid journal options: {0}")]
    InvalidOptions(&'static str),
}

/// Attaches "what and where" to an [`io::Error`].
pub(crate) trait IoContext<T> {
    fn context(self, op: &'static str, path: &Path) -> Result<T, JournalError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, op: &'static str, path: &Path) -> Result<T, JournalError> {
        self.map_err(|source| JournalError::Io {
            op,
            path: path.to_owned(),
            source: Arc::new(source),
        })
    }
}

/// Displays an error with all its sources, `outer: inner: innermost`, for logs.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
