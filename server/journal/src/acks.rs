//! Acknowledgement bookkeeping and its on-disk form, the checkpoint file.

use std::collections::BTreeMap;

/// Persisting more ranges than this is pointless: it only happens when a
/// consumer acknowledges in a pathological pattern, and dropping the excess
/// merely re-delivers those records after a restart.
const MAX_PERSISTED_RANGES: usize = 4096;

const MAGIC: &[u8; 4] = b"HJC1";

/// Which seqs are acknowledged: everything up to `checkpoint`, plus disjoint,
/// non-adjacent ranges above it (acknowledged out of order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckSet {
    checkpoint: u64,
    /// `first -> last`, all with `first > checkpoint + 1`.
    above: BTreeMap<u64, u64>,
}

impl AckSet {
    /// The highest seq such that every seq up to it is acknowledged.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// The acknowledged ranges above the checkpoint, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.above.iter().map(|(&first, &last)| (first, last))
    }

    /// Marks `first..=last` acknowledged; returns whether anything changed.
    pub fn insert(&mut self, first: u64, last: u64) -> bool {
        let first = first.max(self.checkpoint + 1);
        if first > last {
            return false;
        }
        if let Some((_, &end)) = self.above.range(..=first).next_back() {
            if end >= last {
                return false;
            }
        }
        // Absorb every stored range that overlaps or touches the new one.
        // Ranges are disjoint and sorted, so scanning down from the highest
        // candidate can stop at the first one that ends too early.
        let touching: Vec<u64> = self
            .above
            .range(..=last.saturating_add(1))
            .rev()
            .take_while(|(_, &end)| end.saturating_add(1) >= first)
            .map(|(&start, _)| start)
            .collect();
        let (mut lo, mut hi) = (first, last);
        for start in touching {
            let end = self.above.remove(&start).expect("key just listed");
            lo = lo.min(start);
            hi = hi.max(end);
        }
        if lo == self.checkpoint + 1 {
            self.checkpoint = hi;
        } else {
            self.above.insert(lo, hi);
        }
        true
    }

    /// Moves the checkpoint up to at least `seq`.
    pub fn advance_to(&mut self, seq: u64) {
        if seq > self.checkpoint {
            self.insert(self.checkpoint + 1, seq);
        }
    }

    /// Forgets acknowledgements of seqs above `last_seq` (which cannot
    /// exist: only records that were handed out can be acknowledged).
    pub fn forget_after(&mut self, last_seq: u64) {
        self.above.retain(|&first, _| first <= last_seq);
        if let Some(mut last) = self.above.last_entry() {
            let end = last.get_mut();
            *end = (*end).min(last_seq);
        }
    }

    /// Serialises to the checkpoint file format:
    /// `"HJC1" | checkpoint: u64 | n: u32 | n × (first: u64, last: u64) | crc32`.
    pub fn encode(&self) -> Vec<u8> {
        let ranges: Vec<_> = self.ranges().take(MAX_PERSISTED_RANGES).collect();
        let mut buf = Vec::with_capacity(4 + 8 + 4 + ranges.len() * 16 + 4);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&self.checkpoint.to_le_bytes());
        let count = u32::try_from(ranges.len()).expect("capped above");
        buf.extend_from_slice(&count.to_le_bytes());
        for (first, last) in ranges {
            buf.extend_from_slice(&first.to_le_bytes());
            buf.extend_from_slice(&last.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses [`encode`](Self::encode)'s output; `None` if it is damaged.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc {
            return None;
        }
        let mut fields = Fields(body.strip_prefix(MAGIC)?);
        let mut set = Self {
            checkpoint: fields.u64()?,
            above: BTreeMap::new(),
        };
        let count = fields.u32()?;
        for _ in 0..count {
            let (first, last) = (fields.u64()?, fields.u64()?);
            if first > last {
                return None;
            }
            set.insert(first, last);
        }
        fields.0.is_empty().then_some(set)
    }
}

/// Little-endian field reader over a byte slice.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(set: &AckSet) -> Vec<(u64, u64)> {
        set.ranges().collect()
    }

    #[test]
    fn checkpoint_moves_only_over_contiguous_ranges() {
        let mut set = AckSet::default();
        assert!(set.insert(3, 4));
        assert!(set.insert(7, 8));
        assert_eq!(set.checkpoint(), 0);
        assert_eq!(ranges(&set), [(3, 4), (7, 8)]);
        assert!(set.insert(1, 2));
        assert_eq!(set.checkpoint(), 4);
        assert_eq!(ranges(&set), [(7, 8)]);
        assert!(set.insert(5, 6));
        assert_eq!(set.checkpoint(), 8);
        assert!(ranges(&set).is_empty());
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let mut set = AckSet::default();
        set.insert(10, 12);
        set.insert(20, 25);
        set.insert(14, 14);
        set.insert(13, 19);
        assert_eq!(ranges(&set), [(10, 25)]);
        assert!(!set.insert(11, 24), "already covered");
        assert!(!set.insert(0, 0), "at or below the checkpoint");
        set.insert(5, 30);
        assert_eq!(ranges(&set), [(5, 30)]);
    }

    #[test]
    fn forget_after_trims() {
        let mut set = AckSet::default();
        set.insert(3, 5);
        set.insert(8, 12);
        set.forget_after(9);
        assert_eq!(ranges(&set), [(3, 5), (8, 9)]);
        set.forget_after(6);
        assert_eq!(ranges(&set), [(3, 5)]);
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_damage() {
        let mut set = AckSet::default();
        set.insert(1, 100);
        set.insert(150, 160);
        let bytes = set.encode();
        assert_eq!(AckSet::decode(&bytes), Some(set));
        for cut in 0..bytes.len() {
            assert_eq!(AckSet::decode(&bytes[..cut]), None);
        }
        let mut flipped = bytes.clone();
        flipped[6] ^= 1;
        assert_eq!(AckSet::decode(&flipped), None);
    }
}
