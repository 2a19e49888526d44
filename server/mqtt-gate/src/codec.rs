//! Just enough MQTT 3.1.1 to police a connection.
//!
//! The gate frames every packet by its fixed header and parses only the bodies
//! it has to judge or rewrite (CONNECT, PUBLISH, SUBSCRIBE, SUBACK, PUBREL);
//! everything else is relayed as the raw bytes it arrived as. The parsers
//! work on a frame that is already complete and bounded, never trust a length
//! field further than the bytes actually present, and never panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest value the 4-byte remaining-length varint can carry.
pub(crate) const MAX_REMAINING_LEN: usize = 268_435_455;

/// Socket reads ask for at least this much spare buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Control packet types (the high nibble of the first byte).
pub(crate) mod kind {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const DISCONNECT: u8 = 14;
}

/// SUBACK return code for a refused filter.
pub(crate) const SUBACK_FAILURE: u8 = 0x80;

/// A complete packet: fixed header plus body, exactly as read from the wire.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    raw: Bytes,
    header_len: usize,
}

impl Frame {
    pub(crate) fn kind(&self) -> u8 {
        self.raw[0] >> 4
    }

    pub(crate) fn flags(&self) -> u8 {
        self.raw[0] & 0x0F
    }

    /// Variable header and payload.
    pub(crate) fn body(&self) -> Bytes {
        self.raw.slice(self.header_len..)
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.raw
    }
}

/// Why a byte stream could not be cut into frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("peer closed the connection in the middle of a packet")]
    Truncated,
    #[error("remaining length is not a valid 1 to 4 byte variable integer")]
    BadLength,
    #[error("packet declares {declared} bytes, limit is {limit}")]
    Oversized { declared: usize, limit: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Cuts an [`AsyncRead`] into [`Frame`]s, refusing oversized ones from their
/// header alone so a hostile peer cannot make the gate buffer its body.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `limit` bounds a whole packet, fixed header included.
    pub(crate) fn new(io: R, limit: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            limit,
        }
    }

    /// Changes the bound on the next packets (e.g. once the client has
    /// authenticated); bytes already buffered are judged by the new bound.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The next frame, or `None` when the peer closed cleanly between packets.
    ///
    /// Cancel safe: bytes already read stay buffered for the next call.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.try_frame()? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    fn try_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        let Some((header_len, remaining_len)) = fixed_header(&self.buf)? else {
            return Ok(None);
        };
        let total = header_len + remaining_len;
        if total > self.limit {
            return Err(ReadError::Oversized {
                declared: total,
                limit: self.limit,
            });
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let raw = self.buf.split_to(total).freeze();
        Ok(Some(Frame { raw, header_len }))
    }
}

/// Decodes the fixed header at the start of `buf`: `(header length,
/// remaining length)`, or `None` when more bytes are needed.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, ReadError> {
    let mut remaining_len = 0;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining_len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((i + 2, remaining_len)));
        }
    }
    if buf.len() >= 5 {
        Err(ReadError::BadLength)
    } else {
        Ok(None)
    }
}

/// A packet body that breaks the MQTT 3.1.1 rules; the text says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

/// Bounds-checked cursor over a packet body.
struct Body(Bytes);

impl Body {
    fn u8(&mut self) -> Result<u8, Malformed> {
        if self.0.is_empty() {
            return Err(Malformed("packet ends early"));
        }
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        if self.0.len() < 2 {
            return Err(Malformed("packet ends early"));
        }
        Ok(self.0.get_u16())
    }

    fn packet_id(&mut self) -> Result<u16, Malformed> {
        match self.u16()? {
            0 => Err(Malformed("packet identifier 0")),
            id => Ok(id),
        }
    }

    /// Two-byte length prefixed binary data.
    fn binary(&mut self) -> Result<Bytes, Malformed> {
        let len = usize::from(self.u16()?);
        if self.0.len() < len {
            return Err(Malformed("length prefix runs past the packet"));
        }
        Ok(self.0.split_to(len))
    }

    /// Two-byte length prefixed UTF-8 string without U+0000 (MQTT-1.5.3-2).
    fn string(&mut self) -> Result<String, Malformed> {
        let raw = self.binary()?;
        let text = std::str::from_utf8(&raw).map_err(|_| Malformed("string is not UTF-8"))?;
        if text.contains('\0') {
            return Err(Malformed("string contains U+0000"));
        }
        Ok(text.to_owned())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn end(self) -> Result<(), Malformed> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Malformed("trailing bytes after the packet's last field"))
        }
    }
}

/// The protocol a CONNECT asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectVersion {
    /// MQTT 3.1 ("MQIsdp", level 3).
    V31,
    /// MQTT 3.1.1 ("MQTT", level 4).
    V311,
    /// Any other level under a known protocol name, MQTT 5 included.
    Unsupported(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Connect {
    pub(crate) version: ConnectVersion,
    pub(crate) clean_session: bool,
    pub(crate) keep_alive: u16,
    pub(crate) client_id: String,
    pub(crate) will: Option<Will>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Bytes>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("version", &self.version)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Parses a CONNECT body. For an unsupported protocol level only `version`
/// is meaningful: the rest of such a packet (MQTT 5 properties, say) is not
/// read, so the caller can still answer with CONNACK 0x01.
pub(crate) fn parse_connect(body: Bytes) -> Result<Connect, Malformed> {
    let mut body = Body(body);
    let name = body.binary()?;
    let level = body.u8()?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => ConnectVersion::V311,
        (b"MQIsdp", 3) => ConnectVersion::V31,
        (b"MQTT" | b"MQIsdp", other) => ConnectVersion::Unsupported(other),
        _ => return Err(Malformed("unknown protocol name")),
    };
    if let ConnectVersion::Unsupported(_) = version {
        return Ok(Connect {
            version,
            clean_session: true,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
        });
    }

    let flags = body.u8()?;
    if flags & 0x01 != 0 {
        return Err(Malformed("reserved CONNECT flag set"));
    }
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(Malformed("will QoS 3"));
    }
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(Malformed("will QoS or retain set without a will"));
    }
    if has_password && !has_username {
        return Err(Malformed("password flag without username flag"));
    }
    let keep_alive = body.u16()?;
    let client_id = body.string()?;
    let will = if has_will {
        Some(Will {
            topic: body.string()?,
            payload: body.binary()?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = has_username.then(|| body.string()).transpose()?;
    let password = has_password.then(|| body.binary()).transpose()?;
    body.end()?;

    Ok(Connect {
        version,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

impl Connect {
    /// Encodes the CONNECT as MQTT 3.1.1, whatever version the client spoke:
    /// the upstream broker only speaks 3.1.1.
    pub(crate) fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        put_binary(&mut body, b"MQTT");
        body.put_u8(4);
        let mut flags = 0u8;
        if self.clean_session {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.put_u8(flags);
        body.put_u16(self.keep_alive);
        put_binary(&mut body, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            put_binary(&mut body, will.topic.as_bytes());
            put_binary(&mut body, &will.payload);
        }
        if let Some(username) = &self.username {
            put_binary(&mut body, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_binary(&mut body, password);
        }
        packet(kind::CONNECT << 4, &body)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) topic: String,
    /// Present iff `qos > 0`.
    pub(crate) packet_id: Option<u16>,
    pub(crate) payload: Bytes,
}

pub(crate) fn parse_publish(flags: u8, body: Bytes) -> Result<Publish, Malformed> {
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err(Malformed("PUBLISH with QoS 3"));
    }
    let mut body = Body(body);
    let topic = body.string()?;
    if topic.is_empty() {
        return Err(Malformed("PUBLISH with an empty topic"));
    }
    let packet_id = if qos > 0 {
        Some(body.packet_id()?)
    } else {
        None
    };
    Ok(Publish {
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        payload: body.0,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscribe {
    pub(crate) packet_id: u16,
    /// `(filter, requested QoS)` in packet order.
    pub(crate) filters: Vec<(String, u8)>,
}

pub(crate) fn parse_subscribe(body: Bytes) -> Result<Subscribe, Malformed> {
    let mut body = Body(body);
    let packet_id = body.packet_id()?;
    let mut filters = Vec::new();
    while !body.is_empty() {
        let filter = body.string()?;
        if filter.is_empty() {
            return Err(Malformed("empty topic filter"));
        }
        let qos = body.u8()?;
        if qos > 2 {
            return Err(Malformed("invalid requested QoS"));
        }
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(Malformed("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, filters })
}

pub(crate) fn encode_subscribe(packet_id: u16, filters: &[(String, u8)]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(packet_id);
    for (filter, qos) in filters {
        put_binary(&mut body, filter.as_bytes());
        body.put_u8(*qos);
    }
    packet((kind::SUBSCRIBE << 4) | 0x02, &body)
}

/// `(packet id, return codes)` of a SUBACK body.
pub(crate) fn parse_suback(body: Bytes) -> Result<(u16, Bytes), Malformed> {
    let mut body = Body(body);
    let packet_id = body.u16()?;
    Ok((packet_id, body.0))
}

pub(crate) fn encode_suback(packet_id: u16, codes: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(2 + codes.len());
    body.put_u16(packet_id);
    body.put_slice(codes);
    packet(kind::SUBACK << 4, &body)
}

/// Packet identifier of a PUBACK, PUBREC, PUBREL or PUBCOMP body.
pub(crate) fn parse_ack(body: Bytes) -> Result<u16, Malformed> {
    let mut body = Body(body);
    let id = body.packet_id()?;
    body.end()?;
    Ok(id)
}

/// PUBACK, PUBREC or PUBCOMP (all with zero flags) for `packet_id`.
pub(crate) fn encode_ack(packet_kind: u8, packet_id: u16) -> Bytes {
    let [hi, lo] = packet_id.to_be_bytes();
    Bytes::copy_from_slice(&[packet_kind << 4, 2, hi, lo])
}

pub(crate) fn encode_connack(session_present: bool, code: u8) -> Bytes {
    Bytes::copy_from_slice(&[kind::CONNACK << 4, 2, u8::from(session_present), code])
}

/// `(session present, return code)` of a CONNACK body.
pub(crate) fn parse_connack(body: Bytes) -> Result<(bool, u8), Malformed> {
    let mut body = Body(body);
    let ack_flags = body.u8()?;
    let code = body.u8()?;
    body.end()?;
    Ok((ack_flags & 0x01 != 0, code))
}

/// Checks the fixed-header flags and fixed body sizes that MQTT 3.1.1 pins
/// for packets a client may send after CONNECT, so that only well-formed
/// packets are relayed byte for byte.
pub(crate) fn check_client_frame(frame: &Frame) -> Result<(), Malformed> {
    let required_flags = match frame.kind() {
        kind::PUBLISH => return Ok(()),
        kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => 0x02,
        kind::CONNECT
        | kind::PUBACK
        | kind::PUBREC
        | kind::PUBCOMP
        | kind::PINGREQ
        | kind::DISCONNECT => 0,
        _ => return Err(Malformed("packet type a client may not send")),
    };
    if frame.flags() != required_flags {
        return Err(Malformed("invalid fixed header flags"));
    }
    let body_len = frame.raw.len() - frame.header_len;
    let fixed_len = match frame.kind() {
        kind::PUBACK | kind::PUBREC | kind::PUBREL | kind::PUBCOMP => Some(2),
        kind::PINGREQ | kind::DISCONNECT => Some(0),
        _ => None,
    };
    match fixed_len {
        Some(len) if len != body_len => Err(Malformed("invalid remaining length")),
        _ => Ok(()),
    }
}

fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    // Every caller passes a string or payload that was itself read with a
    // u16 length prefix or is configuration text well under 64 KiB.
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&data[..usize::from(len)]);
}

fn packet(first_byte: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(first_byte);
    let mut len = body.len().min(MAX_REMAINING_LEN);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    buf.put_slice(body);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(bytes: &[u8], limit: usize) -> Result<Vec<Frame>, ReadError> {
        let mut reader = FrameReader::new(bytes, limit);
        let mut out = Vec::new();
        while let Some(frame) = reader.next().await? {
            out.push(frame);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn frames_split_a_stream() {
        let stream = [0xC0, 0x00, 0x40, 0x02, 0x00, 0x07, 0xE0, 0x00];
        let frames = frames(&stream, 64).await.unwrap();
        let kinds: Vec<u8> = frames.iter().map(Frame::kind).collect();
        assert_eq!(kinds, [kind::PINGREQ, kind::PUBACK, kind::DISCONNECT]);
        assert_eq!(&frames[1].body()[..], [0x00, 0x07]);
    }

    #[tokio::test]
    async fn five_byte_length_is_rejected() {
        let stream = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(matches!(
            frames(&stream, usize::MAX).await,
            Err(ReadError::BadLength)
        ));
    }

    #[tokio::test]
    async fn oversized_is_rejected_from_the_header() {
        // Declares 2 MiB but carries none of it.
        let stream = [0x30, 0x80, 0x80, 0x80, 0x01];
        assert!(matches!(
            frames(&stream, 1024).await,
            Err(ReadError::Oversized {
                declared: 2_097_157,
                limit: 1024
            })
        ));
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error() {
        assert!(matches!(
            frames(&[0x30, 0x05, 0x00], 64).await,
            Err(ReadError::Truncated)
        ));
    }

    #[test]
    fn remaining_length_round_trips() {
        for len in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let encoded = packet(0x30, &vec![0; len]);
            let (header_len, decoded) = fixed_header(&encoded).unwrap().unwrap();
            assert_eq!(decoded, len);
            assert_eq!(header_len + len, encoded.len());
        }
    }

    fn sample_connect() -> Connect {
        Connect {
            version: ConnectVersion::V311,
            clean_session: true,
            keep_alive: 30,
            client_id: "SG000017-1".into(),
            will: Some(Will {
                topic: "sg/SG000017/pub/status".into(),
                payload: Bytes::from_static(b"offline"),
                qos: 1,
                retain: true,
            }),
            username: Some("SG000017".into()),
            password: Some(Bytes::from_static(b"secret")),
        }
    }

    #[test]
    fn connect_round_trips() {
        let connect = sample_connect();
        let encoded = connect.encode();
        let parsed = parse_connect(encoded.slice(2..)).unwrap();
        assert_eq!(parsed, connect);
        assert!(!format!("{parsed:?}").contains("secret"));
    }

    #[test]
    fn connect_v31_and_v5_are_told_apart() {
        let mut v31 = BytesMut::new();
        put_binary(&mut v31, b"MQIsdp");
        v31.put_slice(&[3, 0x02, 0, 10]);
        put_binary(&mut v31, b"c");
        assert_eq!(
            parse_connect(v31.freeze()).unwrap().version,
            ConnectVersion::V31
        );

        let mut v5 = BytesMut::new();
        put_binary(&mut v5, b"MQTT");
        v5.put_slice(&[5, 0x02, 0, 10, 0]);
        assert_eq!(
            parse_connect(v5.freeze()).unwrap().version,
            ConnectVersion::Unsupported(5)
        );
    }

    #[test]
    fn connect_rejects_bad_flags_and_lengths() {
        let good = sample_connect().encode().slice(2..);
        // Reserved flag (the flags byte follows the 6-byte name and the level).
        let mut reserved = BytesMut::from(&good[..]);
        reserved[7] |= 0x01;
        assert!(parse_connect(reserved.freeze()).is_err());
        // Every truncation is an error, never a panic.
        for cut in 0..good.len() {
            assert!(parse_connect(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut trailing = BytesMut::from(&good[..]);
        trailing.put_u8(0);
        assert!(parse_connect(trailing.freeze()).is_err());
    }

    #[test]
    fn publish_parses_qos_and_packet_id() {
        let mut body = BytesMut::new();
        put_binary(&mut body, b"a/b");
        body.put_u16(9);
        body.put_slice(b"payload");
        let publish = parse_publish(0b0011, body.freeze()).unwrap();
        assert_eq!(publish.qos, 1);
        assert!(publish.retain);
        assert_eq!(publish.packet_id, Some(9));
        assert_eq!(&publish.payload[..], b"payload");
        assert!(parse_publish(0b0110, Bytes::new()).is_err());
    }

    #[test]
    fn subscribe_round_trips() {
        let filters = vec![("a/b".to_owned(), 1), ("c/#".to_owned(), 0)];
        let encoded = encode_subscribe(3, &filters);
        assert_eq!(encoded[0], 0x82);
        let parsed = parse_subscribe(encoded.slice(2..)).unwrap();
        assert_eq!(parsed.packet_id, 3);
        assert_eq!(parsed.filters, filters);
        assert!(parse_subscribe(Bytes::from_static(&[0, 3])).is_err());
    }

    #[tokio::test]
    async fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz over the framer and every parser.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let len = (next() % 40) as usize;
            let bytes: Bytes = (0..len).map(|_| next() as u8).collect();
            let flags = (next() % 16) as u8;
            let _ = parse_connect(bytes.clone());
            let _ = parse_publish(flags, bytes.clone());
            let _ = parse_subscribe(bytes.clone());
            let _ = parse_suback(bytes.clone());
            let _ = parse_connack(bytes.clone());
            let _ = parse_ack(bytes.clone());
            let mut reader = FrameReader::new(&bytes[..], 32);
            while let Ok(Some(frame)) = reader.next().await {
                let _ = check_client_frame(&frame);
            }
        }
    }
}
