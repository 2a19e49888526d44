//! The producer side of the journal.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::frame;
use crate::shared::{lock, PendingAppend, Shared};
use crate::JournalError;

/// Appends records; cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Appender {
    shared: Arc<Shared>,
}

impl Appender {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Appends one record; resolves with its seq once it is written and
    /// fdatasync'ed.
    ///
    /// Fails at once with [`JournalError::Full`] or
    /// [`JournalError::RecordTooLarge`] without queueing anything. Dropping
    /// the future after that does not withdraw the record: it may still
    /// become durable (and be delivered) without the caller learning its seq.
    pub async fn append(&self, payload: Bytes) -> Result<u64, JournalError> {
        self.submit(vec![payload])?
            .await
            .unwrap_or(Err(JournalError::Closed))
    }

    /// Appends several records as one unit: they get consecutive seqs, are
    /// made durable together, and all fail if one is refused. Resolves with
    /// the seqs assigned (an empty range for no payloads).
    pub async fn append_many(&self, payloads: Vec<Bytes>) -> Result<Range<u64>, JournalError> {
        let count = payloads.len() as u64;
        if count == 0 {
            return Ok(0..0);
        }
        let first = self
            .submit(payloads)?
            .await
            .unwrap_or(Err(JournalError::Closed))?;
        Ok(first..first + count)
    }

    /// Checks, reserves budget and queues for the writer thread.
    fn submit(
        &self,
        payloads: Vec<Bytes>,
    ) -> Result<oneshot::Receiver<Result<u64, JournalError>>, JournalError> {
        let shared = &self.shared;
        if let Some(cause) = shared.failure.get() {
            return Err(JournalError::Failed(Arc::clone(cause)));
        }
        let max = shared.opts.max_record_bytes;
        if let Some(too_large) = payloads.iter().find(|p| p.len() > max) {
            return Err(JournalError::RecordTooLarge {
                size: too_large.len(),
                max,
            });
        }
        let reserved = payloads.iter().map(|p| frame::frame_len(p.len())).sum();
        shared.reserve(reserved)?;

        let (done, receiver) = oneshot::channel();
        let mut inbox = lock(&shared.inbox);
        if inbox.closing {
            drop(inbox);
            shared.release(reserved);
            return Err(JournalError::Closed);
        }
        let wake = inbox.appends.is_empty();
        inbox.appends.push(PendingAppend {
            payloads,
            reserved,
            done,
        });
        drop(inbox);
        // Otherwise the writer already has a wake-up pending or is busy and
        // will look at the inbox again before it sleeps.
        if wake {
            shared.inbox_signal.notify_one();
        }
        Ok(receiver)
    }
}
