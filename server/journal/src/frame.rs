//! On-disk record framing: `len: u32 | crc: u32 | seq: u64 | payload`,
//! little-endian, no padding.
//!
//! The CRC covers `seq` as well as the payload, so an intact record that sits
//! at the wrong place (say, stale bytes behind a torn write) is rejected too.

/// Bytes in front of every payload.
pub(crate) const HEADER_LEN: usize = 16;

/// Bytes a payload of `payload_len` occupies on disk.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

pub(crate) fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the framed record to `buf`.
///
/// `payload.len()` must fit in `u32`; appenders check it against
/// `max_record_bytes`, which options validation caps at `u32::MAX`.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length is validated at append");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
}

impl Header {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let (len, rest) = bytes.split_at(4);
        let (crc, seq) = rest.split_at(4);
        Self {
            len: u32::from_le_bytes(len.try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(crc.try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(seq.try_into().expect("8 bytes")),
        }
    }

    pub fn payload_len(&self) -> usize {
        self.len as usize
    }

    pub fn frame_len(&self) -> u64 {
        frame_len(self.payload_len())
    }

    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.payload_len() && checksum(self.seq, payload) == self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, b"hello");
        assert_eq!(buf.len() as u64, frame_len(5));
        let header = Header::parse(buf[..HEADER_LEN].try_into().unwrap());
        assert_eq!(header.seq, 42);
        assert_eq!(header.len, 5);
        assert!(header.matches(&buf[HEADER_LEN..]));
        // Same bytes claimed by another seq must not verify.
        let moved = Header { seq: 43, ..header };
        assert!(!moved.matches(&buf[HEADER_LEN..]));
    }
}
