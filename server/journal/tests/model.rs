//! Property test against a model: whatever the interleaving of appends,
//! reads, acknowledgements and reopens, each reopen re-delivers exactly the
//! appended-but-unacknowledged records, in seq order, and nothing else.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use bytes::Bytes;
use headend_journal::{Batch, Journal, JournalOptions};
use proptest::prelude::*;

use common::{open, payload, small_opts};

#[derive(Debug, Clone)]
enum Op {
    /// Append this many records with one `append_many`, or one by one.
    Append {
        count: usize,
        together: bool,
    },
    /// `next_batch` with this record limit, if anything is deliverable.
    Read {
        max_records: usize,
    },
    /// Acknowledge the outstanding batch with this index (modulo).
    Ack {
        index: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..5usize, any::<bool>()).prop_map(|(count, together)| Op::Append { count, together }),
        3 => (1..6usize).prop_map(|max_records| Op::Read { max_records }),
        3 => any::<usize>().prop_map(|index| Op::Ack { index }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    appended: BTreeMap<u64, Bytes>,
    acked: BTreeSet<u64>,
    /// What the reader will hand out next, in order.
    deliverable: VecDeque<u64>,
    /// Handed out in this session, not yet acknowledged.
    outstanding: Vec<Batch>,
}

impl Model {
    fn reopened(&mut self) {
        self.outstanding.clear();
        self.deliverable = self
            .appended
            .keys()
            .copied()
            .filter(|seq| !self.acked.contains(seq))
            .collect();
    }

    fn checkpoint(&self) -> u64 {
        (1..).find(|seq| !self.acked.contains(seq)).unwrap() - 1
    }
}

async fn run(dir: &Path, opts: &JournalOptions, ops: Vec<Op>) {
    let mut journal = open(dir, opts);
    let epoch = journal.epoch();
    let mut model = Model::default();
    let mut next_tag = 0;
    for op in ops {
        match op {
            Op::Append { count, together } => {
                let payloads: Vec<Bytes> = (0..count)
                    .map(|_| {
                        next_tag += 1;
                        payload(next_tag, 8 + (next_tag as usize * 37) % 90)
                    })
                    .collect();
                let appender = journal.appender();
                let seqs: Vec<u64> = if together {
                    appender
                        .append_many(payloads.clone())
                        .await
                        .unwrap()
                        .collect()
                } else {
                    let mut seqs = Vec::new();
                    for payload in payloads.clone() {
                        seqs.push(appender.append(payload).await.unwrap());
                    }
                    seqs
                };
                let expected_first = model.appended.keys().last().map_or(1, |last| last + 1);
                assert_eq!(seqs, (expected_first..).take(count).collect::<Vec<_>>());
                model.deliverable.extend(&seqs);
                model.appended.extend(seqs.into_iter().zip(payloads));
            }
            Op::Read { max_records } => {
                if model.deliverable.is_empty() {
                    continue; // next_batch would wait for an append
                }
                let batch =
                    common::within_deadline(journal.reader().next_batch(max_records, usize::MAX))
                        .await
                        .unwrap();
                let expected: Vec<u64> = model
                    .deliverable
                    .drain(..max_records.min(model.deliverable.len()))
                    .collect();
                let got: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
                assert_eq!(got, expected);
                for record in &batch.records {
                    assert_eq!(record.payload, model.appended[&record.seq]);
                }
                model.outstanding.push(batch);
            }
            Op::Ack { index } => {
                if model.outstanding.is_empty() {
                    continue;
                }
                let batch = model
                    .outstanding
                    .swap_remove(index % model.outstanding.len());
                journal.ack(batch.seqs()).unwrap();
                model.acked.extend(batch.records.iter().map(|r| r.seq));
                assert_eq!(journal.stats().checkpoint, model.checkpoint());
            }
            Op::Reopen => {
                journal.close().await.unwrap();
                journal = open(dir, opts);
                assert_eq!(journal.epoch(), epoch);
                assert_eq!(journal.stats().checkpoint, model.checkpoint());
                model.reopened();
            }
        }
    }

    journal.close().await.unwrap();
    let journal = open(dir, opts);
    model.reopened();
    let expected: Vec<u64> = model.deliverable.iter().copied().collect();
    let got = common::read(&journal.reader(), expected.len()).await;
    assert_eq!(common::seqs(&got), expected);
    // Nothing beyond them: the last appended seq was the last one handed out.
    assert_eq!(
        journal.stats().last_seq,
        model.appended.keys().last().copied().unwrap_or(0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reopen_redelivers_exactly_the_unacknowledged(
        ops in prop::collection::vec(op(), 1..60),
        segment_bytes in 128..1024u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts(segment_bytes);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(dir.path(), &opts, ops));
    }
}

#[test]
fn opening_a_fresh_directory_twice_in_sequence_keeps_it_empty() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(1024);
    drop(Journal::open(dir.path(), opts.clone()).unwrap());
    let journal = Journal::open(dir.path(), opts).unwrap();
    assert_eq!(journal.stats().last_seq, 0);
}
