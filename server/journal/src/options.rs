use std::time::Duration;

use crate::frame::HEADER_LEN;
use crate::JournalError;

/// Tuning knobs for [`Journal::open`](crate::Journal::open).
///
/// Construct with struct-update syntax:
/// `JournalOptions { max_bytes: 1 << 30, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// Largest accepted payload. Default 1 MiB.
    pub max_record_bytes: usize,
    /// A segment file is rolled once the next record would take it past this
    /// size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Disk budget for unacknowledged data; appends beyond it fail with
    /// [`JournalError::Full`]. Default 4 GiB.
    ///
    /// Space comes back a whole segment at a time (when every record in it is
    /// acknowledged), so this must be at least two segments.
    pub max_bytes: u64,
    /// How often the checkpoint is persisted (written, fsynced, renamed into
    /// place) when acknowledgements have moved it; also on close. A crash
    /// loses at most this much acknowledgement progress, which only means
    /// re-delivering records that idempotent consumers have already seen.
    /// Persisting on every ack instead would add a file creation and rename
    /// to the filesystem journal commit of nearly every fdatasync.
    /// Default 1 s.
    pub checkpoint_interval: Duration,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            max_record_bytes: 1 << 20,
            segment_bytes: 64 << 20,
            max_bytes: 4 << 30,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

impl JournalOptions {
    pub(crate) fn validate(&self) -> Result<(), JournalError> {
        let max_frame = u64::try_from(self.max_record_bytes)
            .ok()
            .filter(|&n| n <= u64::from(u32::MAX))
            .map(|n| n + HEADER_LEN as u64)
            .ok_or(JournalError::InvalidOptions(
                "max_record_bytes must fit in 32 bits",
            ))?;
        if self.max_record_bytes == 0 {
            return Err(JournalError::InvalidOptions(
                "max_record_bytes must be positive",
            ));
        }
        if self.segment_bytes < max_frame {
            return Err(JournalError::InvalidOptions(
                "segment_bytes must hold at least one record of max_record_bytes",
            ));
        }
        if self.max_bytes / 2 < self.segment_bytes {
            return Err(JournalError::InvalidOptions(
                "max_bytes must be at least twice segment_bytes",
            ));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(JournalError::InvalidOptions(
                "checkpoint_interval must be positive",
            ));
        }
        Ok(())
    }
}
