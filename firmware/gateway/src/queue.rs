//! Store and forward: a bounded queue of readings per link.
//!
//! A reading enters when it is taken and leaves when it is safe to forget: when the broker
//! acknowledged it (PUBACK), or — with receipts — when Headend confirmed with `ack{seq}`
//! that it committed it, which survives a broker that acknowledged and then lost it. Until
//! then it is resent after every reconnect; Headend is idempotent, duplicates are harmless.
//!
//! When the queue is full the *oldest* reading is dropped: after a long outage recent data
//! is worth more, and the count is kept so that the loss is visible, not silent.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The full topic.
    pub topic: String,
    /// The JSON document or text line.
    pub payload: String,
    pub qos: u8,
    /// The reading's receipt sequence, when receipts are on; `None` for error lines.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// A queue's persistent state: what a host runner writes to disk and restores after a
/// restart. Delivery progress is not part of it: after a restart everything is resent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Oldest first.
    pub messages: Vec<QueuedMessage>,
    pub dropped_total: u64,
}

/// Where a queued message is in its delivery over the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Not yet handed to the driver on this connection.
    Pending,
    /// Handed to the driver with this id, no PUBACK yet.
    InFlight(u64),
    /// Acknowledged by the broker, waiting for Headend's receipt.
    Published,
}

#[derive(Debug, Clone)]
struct Entry {
    message: QueuedMessage,
    delivery: Delivery,
}

/// A bounded, ordered queue of readings.
#[derive(Debug, Clone)]
pub struct Queue {
    entries: VecDeque<Entry>,
    capacity: usize,
    dropped_total: u64,
    receipts: bool,
}

impl Queue {
    /// A queue of at most `capacity` messages (at least 1). With `receipts`, a message with
    /// a `seq` leaves only on [`ack`](Self::ack); otherwise on [`on_published`](Self::on_published).
    #[must_use]
    pub fn new(capacity: usize, receipts: bool) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            dropped_total: 0,
            receipts,
        }
    }

    /// Appends a message, dropping the oldest if the queue is full. Returns whether one was
    /// dropped.
    pub fn push(&mut self, message: QueuedMessage) -> bool {
        let dropped = self.entries.len() >= self.capacity;
        if dropped {
            self.entries.pop_front();
            self.dropped_total += 1;
        }
        self.entries.push_back(Entry {
            message,
            delivery: Delivery::Pending,
        });
        dropped
    }

    /// The oldest message not yet handed out on this connection, now marked in flight
    /// under `id`.
    pub fn next_to_send(&mut self, id: u64) -> Option<&QueuedMessage> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.delivery == Delivery::Pending)?;
        entry.delivery = Delivery::InFlight(id);
        Some(&entry.message)
    }

    /// Messages handed out and not yet acknowledged by the broker.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.delivery, Delivery::InFlight(_)))
            .count()
    }

    /// The broker acknowledged message `id`. Returns whether `id` was in flight here.
    pub fn on_published(&mut self, id: u64) -> bool {
        let Some(at) = self
            .entries
            .iter()
            .position(|e| e.delivery == Delivery::InFlight(id))
        else {
            return false;
        };
        let awaits_receipt = self.receipts && self.entries[at].message.seq.is_some();
        if awaits_receipt {
            self.entries[at].delivery = Delivery::Published;
        } else {
            self.entries.remove(at);
        }
        true
    }

    /// Headend committed everything up to and including `seq`: those readings leave,
    /// whatever their delivery state. Returns how many left.
    pub fn ack(&mut self, seq: u64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|e| !matches!(e.message.seq, Some(s) if s <= seq));
        before - self.entries.len()
    }

    /// The connection dropped: whatever was handed out but not released is sent again on
    /// the next one.
    pub fn reset_delivery(&mut self) {
        for entry in &mut self.entries {
            entry.delivery = Delivery::Pending;
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Messages dropped because the queue was full, since it was created (or restored).
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// The waiting messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.entries.iter().map(|e| &e.message)
    }

    #[must_use]
    pub fn snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            messages: self.iter().cloned().collect(),
            dropped_total: self.dropped_total,
        }
    }

    /// Replaces the contents with a snapshot, all to be sent again. A snapshot larger than
    /// the capacity (the capacity was lowered) keeps its newest messages and counts the
    /// rest as dropped.
    pub fn restore(&mut self, snapshot: QueueSnapshot) {
        let excess = snapshot.messages.len().saturating_sub(self.capacity);
        self.dropped_total = snapshot.dropped_total + excess as u64;
        self.entries = snapshot
            .messages
            .into_iter()
            .skip(excess)
            .map(|message| Entry {
                message,
                delivery: Delivery::Pending,
            })
            .collect();
    }
}
