//! End-to-end receipts: a gateway that numbers its readings (`seq` in the header, an extension
//! of our firmware; real SGs send none) drops them from its store-and-forward queue only when
//! Headend confirms, with `{"data":{"cmd":"ack","seq":N}}` on its command topic, that
//! everything up to N is committed.
//!
//! Writers commit journal batches concurrently and out of order, so a batch's sequence numbers
//! are confirmed only once the journal checkpoint has passed the batch: then every earlier
//! record, whichever writer had it, is committed too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Gateway id to the highest `seq` it sent in a batch.
pub type Seqs = HashMap<i64, u64>;

#[derive(Default)]
pub struct Receipts {
    /// Committed batches not yet covered by the checkpoint, by their last journal seq.
    pending: Mutex<BTreeMap<u64, Seqs>>,
}

impl Receipts {
    /// Records that the batch ending at journal seq `last` is committed; returns what may be
    /// confirmed now that the journal checkpoint is `checkpoint`.
    pub fn committed(&self, last: u64, seqs: Seqs, checkpoint: u64) -> Seqs {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !seqs.is_empty() {
            pending.entry(last).or_default().extend(seqs);
        }
        let later = pending.split_off(&(checkpoint + 1));
        let ready = std::mem::replace(&mut *pending, later);
        let mut confirm = Seqs::new();
        for seqs in ready.into_values() {
            for (gateway, seq) in seqs {
                let max = confirm.entry(gateway).or_default();
                *max = (*max).max(seq);
            }
        }
        confirm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_confirmed_only_once_everything_before_it_is_committed() {
        let receipts = Receipts::default();
        // Batch 11..=20 commits first while 1..=10 is still in flight: checkpoint stays 0.
        assert!(receipts.committed(20, Seqs::from([(7, 205)]), 0).is_empty());
        // Batch 1..=10 commits: the checkpoint passes both; the highest seq per gateway wins.
        let confirm = receipts.committed(10, Seqs::from([(7, 104), (8, 3)]), 20);
        assert_eq!(confirm, Seqs::from([(7, 205), (8, 3)]));
        assert!(receipts.committed(30, Seqs::new(), 30).is_empty());
    }
}
