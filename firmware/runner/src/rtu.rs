//! Modbus RTU master on the gateway's RS485 bus.
//!
//! One serial port, many devices: [`RtuBus`] owns the port and carries out one request at a
//! time (share it as [`SharedBus`]; the lock is held for one request and its reply, and
//! `tokio::sync::Mutex` hands it out in FIFO order, so every device gets its turn).
//!
//! Framing is by length, as in every practical RTU master (USB adapters deliver bytes in
//! bursts, so silence-based framing is not reliable on the read side): the reply's length
//! follows from its function code and byte count. Every reply is checked before use: CRC-16
//! (Modbus), unit id, function code, exception replies, byte count, write echoes; each failure
//! is a [`ReadError`] of its own. Between frames the line is left idle for at least 3.5
//! characters (the RTU inter-frame gap), or the configured gap if longer; stray bytes (a
//! reply that came after its timeout) are thrown away before the next request.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;
use tokio_serial::{SerialPort as _, SerialPortBuilderExt as _, SerialStream};

use crate::modbus::ReadError;

/// The bus, shared by the pollers of the devices on it.
#[derive(Debug, Clone)]
pub struct SharedBus {
    name: Arc<str>,
    bus: Arc<tokio::sync::Mutex<RtuBus>>,
}

impl SharedBus {
    /// The port's name, for logs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the bus (requests are served in the order they came).
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, RtuBus> {
        self.bus.lock().await
    }
}

/// The longest reply: address, function, byte count, 255 data bytes, CRC.
const MAX_REPLY: usize = 3 + 255 + 2;

/// Parity of the serial line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// How the serial line is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// E.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    pub baud: u32,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Modbus RTU is always 8.
    pub data_bits: u8,
}

impl Line {
    /// How long one character takes on the wire: start bit, data bits, parity bit, stop bits.
    #[must_use]
    pub fn char_time(&self) -> Duration {
        let bits = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits);
        Duration::from_secs_f64(f64::from(bits) / f64::from(self.baud.max(1)))
    }

    /// The silence that ends a frame: 3.5 characters, and 1.75 ms above 19200 Bd (the Modbus
    /// serial line specification fixes it there, as the character time gets too short to time).
    #[must_use]
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1_750)
        } else {
            self.char_time().mul_f64(3.5)
        }
    }

    fn open(&self) -> io::Result<SerialStream> {
        let data_bits = match self.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let parity = match self.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let stop_bits = if self.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        };
        tokio_serial::new(self.path.to_string_lossy(), self.baud)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
            .map_err(io::Error::from)
    }
}

/// CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF), sent low byte first.
#[must_use]
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    for &byte in bytes {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The master end of the RS485 bus.
pub struct RtuBus {
    /// For logs: the port's path.
    name: String,
    /// How to (re)open the port.
    line: Line,
    port: Option<SerialStream>,
    char_time: Duration,
    /// Idle time between the end of one frame and the start of the next request.
    gap: Duration,
    /// When the line last went quiet (end of the last frame sent or received).
    idle_since: Option<Instant>,
}

impl std::fmt::Debug for RtuBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtuBus")
            .field("name", &self.name)
            .field("line", &self.line)
            .field("open", &self.port.is_some())
            .field("gap", &self.gap)
            .finish_non_exhaustive()
    }
}

impl RtuBus {
    /// The bus on a serial port, opened on first use and reopened after an I/O error (a USB
    /// adapter unplugged and plugged back). `gap` is the idle time between frames; it is never
    /// shorter than the line's 3.5 characters.
    #[must_use]
    pub fn serial(line: Line, gap: Duration) -> Self {
        Self {
            name: line.path.display().to_string(),
            char_time: line.char_time(),
            gap: gap.max(line.frame_gap()),
            line,
            port: None,
            idle_since: None,
        }
    }

    /// The port's name, for logs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The idle time kept between frames.
    #[must_use]
    pub fn gap(&self) -> Duration {
        self.gap
    }

    /// Wraps the bus for sharing between pollers.
    #[must_use]
    pub fn shared(self) -> SharedBus {
        SharedBus {
            name: self.name.as_str().into(),
            bus: Arc::new(tokio::sync::Mutex::new(self)),
        }
    }

    /// How long `bytes` characters take on the wire.
    fn wire_time(&self, bytes: usize) -> Duration {
        self.char_time
            .saturating_mul(u32::try_from(bytes).unwrap_or(u32::MAX))
    }

    /// Sends `pdu` (function code and data) to `unit` and returns the reply's PDU (function
    /// code and data) once it is checked. `timeout` is the device's response time: it runs
    /// from the end of the request on the wire, and the reply's own time on the wire is added
    /// to it once its length is known.
    ///
    /// # Errors
    /// [`ReadError::Timeout`] when nothing comes back, [`ReadError::Truncated`] when the reply
    /// stops short, [`ReadError::Crc`], [`ReadError::WrongUnit`],
    /// [`ReadError::UnexpectedFunction`], [`ReadError::Exception`], or I/O errors on the
    /// port ([`ReadError::Open`], [`ReadError::Serial`]).
    pub async fn transact(
        &mut self,
        unit: u8,
        pdu: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReadError> {
        let mut port = match self.port.take() {
            Some(port) => port,
            None => self.line.open().map_err(|source| ReadError::Open {
                path: self.name.clone(),
                source,
            })?,
        };
        let result = self.exchange(&mut port, unit, pdu, timeout).await;
        self.idle_since = Some(Instant::now());
        match &result {
            // The port is broken: drop it, the next request reopens it.
            Err(ReadError::Serial(_)) => return result,
            // Something is still talking or the reply was garbled: wait for the line to go
            // quiet so that the rest of it does not spoil the next request.
            Err(
                ReadError::Crc { .. }
                | ReadError::Truncated { .. }
                | ReadError::UnexpectedFunction { .. }
                | ReadError::WrongUnit { .. },
            ) => {
                if let Err(error) = self.settle(&mut port, timeout).await {
                    return Err(ReadError::Serial(error));
                }
            }
            _ => {}
        }
        self.port = Some(port);
        result
    }

    async fn exchange(
        &self,
        port: &mut SerialStream,
        unit: u8,
        pdu: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReadError> {
        // The inter-frame gap since the last frame on the line.
        if let Some(idle) = self.idle_since {
            tokio::time::sleep_until(idle + self.gap).await;
        }
        discard_pending(port).await.map_err(ReadError::Serial)?;

        let mut request = Vec::with_capacity(pdu.len() + 3);
        request.push(unit);
        request.extend_from_slice(pdu);
        request.extend_from_slice(&crc16(&request).to_le_bytes());
        let started = Instant::now();
        let sent_by = started + self.wire_time(request.len());
        let send = async {
            port.write_all(&request).await?;
            port.flush().await
        };
        match tokio::time::timeout_at(sent_by + timeout, send).await {
            Ok(result) => result.map_err(ReadError::Serial)?,
            Err(_) => return Err(ReadError::Timeout(timeout)),
        }
        self.receive(port, unit, pdu[0], sent_by + timeout, timeout)
            .await
    }

    /// Reads one reply to `function` from `unit`: by `first_deadline` plus its time on the wire.
    async fn receive(
        &self,
        port: &mut SerialStream,
        unit: u8,
        function: u8,
        first_deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReadError> {
        let mut frame = Vec::with_capacity(MAX_REPLY);
        let mut buf = [0_u8; MAX_REPLY];
        let mut total = None;
        let mut deadline = first_deadline;
        loop {
            if total.is_none() {
                total = reply_len(function, &frame)?;
                if let Some(total) = total {
                    deadline = first_deadline + self.wire_time(total);
                }
            }
            let want = total.unwrap_or(if frame.len() < 2 { 2 } else { 3 });
            if frame.len() >= want {
                break;
            }
            let read = port.read(&mut buf[..want - frame.len()]);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) if frame.is_empty() => return Err(ReadError::Timeout(timeout)),
                Err(_) => {
                    return Err(ReadError::Truncated {
                        got: frame.len(),
                        expected: total,
                    })
                }
                Ok(Ok(0)) => {
                    return Err(ReadError::Serial(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Ok(n)) => frame.extend_from_slice(&buf[..n]),
                Ok(Err(error)) => return Err(ReadError::Serial(error)),
            }
        }
        check_reply(unit, &frame)
    }

    /// Reads and throws away until the line has been quiet for the frame gap (bounded by
    /// `limit`, in case a device keeps babbling).
    async fn settle(&self, port: &mut SerialStream, limit: Duration) -> io::Result<()> {
        let quiet = self.gap;
        let give_up = Instant::now() + limit;
        let mut buf = [0_u8; MAX_REPLY];
        loop {
            let until = (Instant::now() + quiet).min(give_up);
            match tokio::time::timeout_at(until, port.read(&mut buf)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) if Instant::now() >= give_up => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
            }
        }
    }
}

/// Throws away bytes already waiting (a late reply to an earlier request).
async fn discard_pending(port: &mut SerialStream) -> io::Result<()> {
    port.clear(tokio_serial::ClearBuffer::Input)
        .map_err(io::Error::from)?;
    // What the driver had handed over already.
    let mut buf = [0_u8; MAX_REPLY];
    loop {
        // A zero timeout still polls the read once: it returns what is there, if anything.
        match tokio::time::timeout(Duration::ZERO, port.read(&mut buf)).await {
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
        }
    }
}

/// The whole reply's length once enough of it is in: `None` while it is not known yet.
fn reply_len(function: u8, head: &[u8]) -> Result<Option<usize>, ReadError> {
    let Some(&got) = head.get(1) else {
        return Ok(None);
    };
    if got == function | 0x80 {
        // Address, function, exception code, CRC.
        return Ok(Some(5));
    }
    if got != function {
        return Err(ReadError::UnexpectedFunction {
            expected: function,
            got,
        });
    }
    Ok(match function {
        // Address, function, byte count, data, CRC.
        0x01..=0x04 => head.get(2).map(|&count| 3 + usize::from(count) + 2),
        // Writes echo the address and the value or count.
        _ => Some(8),
    })
}

/// Checks a complete reply; returns its PDU.
fn check_reply(unit: u8, frame: &[u8]) -> Result<Vec<u8>, ReadError> {
    let (body, crc) = frame.split_at(frame.len() - 2);
    let received = u16::from_le_bytes([crc[0], crc[1]]);
    let computed = crc16(body);
    if received != computed {
        return Err(ReadError::Crc { received, computed });
    }
    if body[0] != unit {
        return Err(ReadError::WrongUnit {
            expected: unit,
            got: body[0],
        });
    }
    if body[1] & 0x80 != 0 {
        return Err(ReadError::Exception(ExceptionCode::new(body[2])));
    }
    Ok(body[1..].to_vec())
}

/// One device on the bus.
#[derive(Debug, Clone)]
pub struct RtuUnit {
    pub bus: SharedBus,
    pub unit: u8,
    pub timeout: Duration,
}

impl RtuUnit {
    /// Function 4.
    ///
    /// # Errors
    /// As [`RtuBus::transact`]; [`ReadError::ShortReply`] for fewer registers than asked,
    /// [`ReadError::Malformed`] for an odd or excessive byte count.
    pub async fn read_input_registers(
        &self,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        self.read_registers(0x04, start, count).await
    }

    /// Function 3 (a meter's settings, e.g. its counter configuration).
    ///
    /// # Errors
    /// As [`read_input_registers`](Self::read_input_registers).
    pub async fn read_holding_registers(
        &self,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        self.read_registers(0x03, start, count).await
    }

    async fn read_registers(
        &self,
        function: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let [start_hi, start_lo] = start.to_be_bytes();
        let [count_hi, count_lo] = count.to_be_bytes();
        let pdu = [function, start_hi, start_lo, count_hi, count_lo];
        let reply = self
            .bus
            .lock()
            .await
            .transact(self.unit, &pdu, self.timeout)
            .await?;
        // Function, byte count, data: the length was checked while reading.
        let data = &reply[2..];
        let expected = usize::from(count) * 2;
        if data.len() < expected {
            return Err(ReadError::ShortReply {
                expected: count,
                got: data.len() / 2,
            });
        }
        if data.len() != expected {
            return Err(ReadError::Malformed(format!(
                "{} data bytes for {count} registers",
                data.len()
            )));
        }
        Ok(data
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect())
    }

    /// Function 6; the device echoes the request.
    ///
    /// # Errors
    /// As [`RtuBus::transact`]; [`ReadError::Malformed`] when the echo differs.
    pub async fn write_single_register(&self, register: u16, value: u16) -> Result<(), ReadError> {
        let [register_hi, register_lo] = register.to_be_bytes();
        let [value_hi, value_lo] = value.to_be_bytes();
        let pdu = [0x06, register_hi, register_lo, value_hi, value_lo];
        let reply = self
            .bus
            .lock()
            .await
            .transact(self.unit, &pdu, self.timeout)
            .await?;
        if reply != pdu {
            return Err(ReadError::Malformed(format!(
                "the write was echoed as {reply:02X?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_crc16_modbus() {
        // The catalogue's check value of CRC-16/MODBUS.
        assert_eq!(crc16(b"123456789"), 0x4B37);
        // Read 1 input register at 0 from unit 1: 01 04 00 00 00 01, CRC 31 CA.
        let crc = crc16(&[0x01, 0x04, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(crc.to_le_bytes(), [0x31, 0xCA]);
    }

    #[test]
    fn reply_length_follows_function_and_byte_count() {
        assert_eq!(reply_len(4, &[1]).unwrap(), None);
        assert_eq!(reply_len(4, &[1, 4]).unwrap(), None);
        assert_eq!(reply_len(4, &[1, 4, 6]).unwrap(), Some(11));
        assert_eq!(reply_len(4, &[1, 0x84]).unwrap(), Some(5));
        assert_eq!(reply_len(6, &[1, 6]).unwrap(), Some(8));
        assert!(matches!(
            reply_len(4, &[1, 3]),
            Err(ReadError::UnexpectedFunction {
                expected: 4,
                got: 3
            })
        ));
    }

    #[test]
    fn replies_are_checked() {
        let mut frame = vec![7, 0x84, 0x02];
        frame.extend_from_slice(&crc16(&frame).to_le_bytes());
        assert!(matches!(
            check_reply(7, &frame),
            Err(ReadError::Exception(ExceptionCode::IllegalDataAddress))
        ));
        assert!(matches!(
            check_reply(8, &frame),
            Err(ReadError::WrongUnit {
                expected: 8,
                got: 7
            })
        ));
        frame[2] = 0x03;
        assert!(matches!(check_reply(7, &frame), Err(ReadError::Crc { .. })));
    }

    #[test]
    fn gap_is_three_and_a_half_characters() {
        let line = Line {
            path: "/dev/null".into(),
            baud: 9_600,
            parity: Parity::Even,
            stop_bits: 1,
            data_bits: 8,
        };
        // 11 bits a character at 9600 Bd: 1.146 ms; 3.5 of them: 4.01 ms.
        let gap = line.frame_gap().as_secs_f64();
        assert!((gap - 3.5 * 11.0 / 9600.0).abs() < 1e-8, "{gap}");
        let fast = Line {
            baud: 115_200,
            ..line
        };
        assert_eq!(fast.frame_gap(), Duration::from_micros(1_750));
    }
}
