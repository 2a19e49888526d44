//! What the ingest journal holds: one record per thing a gateway did, exactly as received.
//!
//! Records are encoded by hand (not serde) because the format is on disk across versions and
//! must be cheap on the hot path: a tag byte, the receive time, then length-prefixed fields.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};

const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A PUBLISH from a gateway.
    Publish = 1,
    /// Something refused before it became a publish (oversized, denied topic, bad CONNECT).
    Violation = 2,
    /// A gateway's MQTT session opened.
    Connect = 3,
    /// A gateway's MQTT session closed.
    Disconnect = 4,
    /// A snapshot polled from a device behind a Modbus converter (see `normalize_polled`).
    Polled = 5,
    /// A MiSmart XML document pushed over TCP or HTTP (see `normalize_xml`): `client` is the
    /// gateway serial, `topic` the device (`xml/<port>/<slot>`), `reason` the peer address.
    XmlPush = 6,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Publish,
            2 => Self::Violation,
            3 => Self::Connect,
            4 => Self::Disconnect,
            5 => Self::Polled,
            6 => Self::XmlPush,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    pub kind: RecordKind,
    pub received_at: DateTime<Utc>,
    /// Where it came from: `mqtt`, `mqtt-external`.
    pub source: String,
    /// The authenticated MQTT user (a gateway serial), empty when unknown.
    pub client: String,
    pub topic: String,
    /// Verbatim payload (for violations: whatever of it was read).
    pub payload: Bytes,
    /// Violations: why it was refused. Connect and Disconnect: how many sessions of this
    /// gateway are open afterwards (an SG has two push links).
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("journal record is truncated")]
    Truncated,
    #[error("journal record has unknown version {0}")]
    Version(u8),
    #[error("journal record has unknown kind {0}")]
    Kind(u8),
    #[error("journal record field is not UTF-8")]
    Utf8,
    #[error("journal record has an impossible timestamp")]
    Time,
}

impl IngestRecord {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(
            16 + self.source.len()
                + self.client.len()
                + self.topic.len()
                + self.reason.len()
                + self.payload.len()
                + 16,
        );
        buf.put_u8(VERSION);
        buf.put_u8(self.kind as u8);
        buf.put_i64(self.received_at.timestamp_micros());
        for field in [&self.source, &self.client, &self.topic, &self.reason] {
            put_str(&mut buf, field);
        }
        buf.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    pub fn decode(mut bytes: Bytes) -> Result<Self, RecordError> {
        if bytes.remaining() < 10 {
            return Err(RecordError::Truncated);
        }
        let version = bytes.get_u8();
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let kind_byte = bytes.get_u8();
        let kind = RecordKind::from_u8(kind_byte).ok_or(RecordError::Kind(kind_byte))?;
        let micros = bytes.get_i64();
        let received_at = DateTime::from_timestamp_micros(micros).ok_or(RecordError::Time)?;
        let source = get_str(&mut bytes)?;
        let client = get_str(&mut bytes)?;
        let topic = get_str(&mut bytes)?;
        let reason = get_str(&mut bytes)?;
        if bytes.remaining() < 4 {
            return Err(RecordError::Truncated);
        }
        let len = bytes.get_u32() as usize;
        if bytes.remaining() < len {
            return Err(RecordError::Truncated);
        }
        let payload = bytes.split_to(len);
        Ok(Self {
            kind,
            received_at,
            source,
            client,
            topic,
            payload,
            reason,
        })
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Fields are bounded upstream (topics by MQTT, reasons by us); clamp defensively.
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

fn get_str(bytes: &mut Bytes) -> Result<String, RecordError> {
    if bytes.remaining() < 2 {
        return Err(RecordError::Truncated);
    }
    let len = bytes.get_u16() as usize;
    if bytes.remaining() < len {
        return Err(RecordError::Truncated);
    }
    let raw = bytes.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| RecordError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IngestRecord {
        IngestRecord {
            kind: RecordKind::Publish,
            received_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            source: "mqtt".into(),
            client: "SG000017".into(),
            topic: "sg/SG000017/pub/measurements/ir".into(),
            payload: Bytes::from_static(b"{\"x\":1}"),
            reason: String::new(),
        }
    }

    #[test]
    fn round_trip() {
        let record = sample();
        assert_eq!(IngestRecord::decode(record.encode()).unwrap(), record);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let encoded = sample().encode();
        for cut in 0..encoded.len() {
            assert!(
                IngestRecord::decode(encoded.slice(..cut)).is_err(),
                "cut {cut}"
            );
        }
    }
}
