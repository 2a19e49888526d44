//! Commit order: a batch commits once every earlier batch of the journal is acknowledged, so a
//! gateway's rows (and what the alarm feed and the profile worker see) follow the order it
//! sent them. Unless an earlier batch keeps failing: ordering then waits for nothing that is
//! going to happen, and a poisoned batch would stop every commit. While the checkpoint has not
//! moved for `stuck_after`, later batches commit out of order (logged once per stall, and the
//! stalled batch is still retried and keeps its records in the journal).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use headend_journal::Journal;

/// Default of [`CommitOrder::stuck_after`].
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// No stall declared.
const NONE: u64 = u64::MAX;

pub struct CommitOrder {
    journal: Arc<Journal>,
    stuck_after: Duration,
    /// The checkpoint at which ordering was suspended: it is suspended while the checkpoint is
    /// still there.
    suspended_at: AtomicU64,
}

impl CommitOrder {
    pub fn new(journal: Arc<Journal>, stuck_after: Duration) -> Self {
        Self {
            journal,
            stuck_after,
            suspended_at: AtomicU64::new(NONE),
        }
    }

    /// Resolves when the batch after journal record `before` may commit: every record up to
    /// `before` is acknowledged, or ordering is suspended (see the module), or the journal
    /// closed (a stop: nothing after this commits anyway).
    pub async fn turn(&self, before: u64) {
        loop {
            let at = self.journal.checkpoint();
            if at >= before || self.suspended_at.load(Ordering::Acquire) == at {
                return;
            }
            // (`at` is read once: a move in between makes `wait_checkpoint` return at once.)
            match tokio::time::timeout(self.stuck_after, self.journal.wait_checkpoint(at + 1)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => return,
                Err(_stalled) => {
                    if self.suspended_at.swap(at, Ordering::AcqRel) != at {
                        tracing::warn!(
                            checkpoint = at,
                            stalled_secs = self.stuck_after.as_secs(),
                            "an earlier ingest batch has not committed for a while: later \
                             batches commit out of order until it does (it stays in the journal)"
                        );
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
impl CommitOrder {
    /// Whether ordering is suspended now (the checkpoint has not moved since the stall).
    fn suspended(&self) -> bool {
        self.suspended_at.load(Ordering::Acquire) == self.journal.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headend_journal::JournalOptions;

    #[tokio::test]
    async fn a_stalled_batch_suspends_ordering_until_the_checkpoint_moves() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path(), JournalOptions::default()).unwrap());
        let appender = journal.appender();
        for n in 0..6u8 {
            appender.append(vec![n].into()).await.unwrap();
        }
        let reader = journal.reader();
        let a = reader.next_batch(2, usize::MAX).await.unwrap();
        let b = reader.next_batch(2, usize::MAX).await.unwrap();
        let c = reader.next_batch(2, usize::MAX).await.unwrap();
        let order = CommitOrder::new(journal.clone(), Duration::from_millis(50));

        // Nothing before the first batch; the second waits for it, and gives up waiting on a
        // stalled one.
        order.turn(a.first_seq - 1).await;
        order.turn(b.first_seq - 1).await;
        assert!(order.suspended());
        // While the checkpoint stays there, nobody waits.
        order.turn(c.first_seq - 1).await;
        // The stalled batch commits at last: the checkpoint moves and ordering is back.
        journal.ack(a.seqs()).unwrap();
        assert!(!order.suspended());
        let waiting = tokio::spawn({
            let journal = journal.clone();
            let before = c.first_seq - 1;
            async move {
                let order = CommitOrder::new(journal, Duration::from_secs(3600));
                order.turn(before).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b is not acknowledged yet");
        journal.ack(b.seqs()).unwrap();
        waiting.await.unwrap();
    }
}
