//! RS485 Modbus RTU timing: how long the frames of a register plan occupy the line.
//!
//! A converter serialises every TCP request onto one RS485 segment, so one poll cycle of a
//! bus can never be shorter than the sum of its frame times. Device think time (the EMDX3
//! answers within 200 ms) comes on top and is not included: these are lower bounds.

use std::time::Duration;

use crate::{BlockRead, Write};

/// Serial line settings of a bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineSettings {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: bool,
    pub stop_bits: u8,
}

impl LineSettings {
    /// RTU framing (8 data bits), no parity, one stop bit.
    pub fn rtu_8n1(baud: u32) -> Self {
        Self {
            baud,
            data_bits: 8,
            parity: false,
            stop_bits: 1,
        }
    }

    /// Bits on the line per character: start bit, data bits, parity, stop bits.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits) + u32::from(self.parity) + u32::from(self.stop_bits)
    }
}

impl Default for LineSettings {
    fn default() -> Self {
        Self::rtu_8n1(19_200)
    }
}

/// RTU frame sizes of a read of `count_words` registers: request (address, function,
/// start, count, CRC = 8 bytes) and response (address, function, byte count, data, CRC =
/// 5 + 2n bytes).
pub fn read_frames_bytes(count_words: u16) -> (usize, usize) {
    (8, 5 + 2 * usize::from(count_words))
}

/// RTU frame sizes of a write: function 6 echoes its 8-byte request; function 16 sends
/// 9 + 2n bytes and gets 8 back.
pub fn write_frames_bytes(write: &Write) -> (usize, usize) {
    match write {
        Write::Single { .. } => (8, 8),
        Write::Multiple { values, .. } => (9 + 2 * values.len(), 8),
    }
}

/// Time of one character on the line.
pub fn char_time(line: &LineSettings) -> Duration {
    let baud = u64::from(line.baud.max(1));
    Duration::from_nanos(u64::from(line.bits_per_char()) * 1_000_000_000 / baud)
}

/// The silent interval that ends an RTU frame: 3.5 characters, fixed at 1.75 ms above
/// 19 200 Bd (Modbus over serial line, 2.5.1.1).
pub fn frame_gap(line: &LineSettings) -> Duration {
    if line.baud > 19_200 {
        Duration::from_micros(1_750)
    } else {
        char_time(line) * 7 / 2
    }
}

/// Time of `half_chars` / 2 characters, computed once from bits (no per-character rounding).
fn half_chars_time(line: &LineSettings, half_chars: u64) -> Duration {
    let baud = u64::from(line.baud.max(1));
    let bits = half_chars.saturating_mul(u64::from(line.bits_per_char()));
    Duration::from_nanos(bits.saturating_mul(1_000_000_000) / (2 * baud))
}

/// Line time of one exchange of RTU frames of these sizes (request, response), with the
/// 3.5-character silence after each.
pub fn frames_time(line: &LineSettings, bytes: (usize, usize)) -> Duration {
    let chars = u64::try_from(bytes.0 + bytes.1).unwrap_or(u64::MAX / 4);
    if line.baud > 19_200 {
        half_chars_time(line, 2 * chars) + frame_gap(line) * 2
    } else {
        half_chars_time(line, 2 * chars + 14)
    }
}

/// Line time of one read: request, 3.5-character gap, response, 3.5-character gap.
pub fn request_time(line: &LineSettings, block: &BlockRead) -> Duration {
    frames_time(line, read_frames_bytes(block.count))
}

/// Line time of one write and its reply.
pub fn write_time(line: &LineSettings, write: &Write) -> Duration {
    frames_time(line, write_frames_bytes(write))
}

/// Lower bound of one poll cycle of a bus: every block of every device's plan, one after
/// the other on the line.
pub fn cycle_limit(line: &LineSettings, plans: &[Vec<BlockRead>]) -> Duration {
    plans
        .iter()
        .flatten()
        .map(|block| request_time(line, block))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Function;

    #[test]
    fn frame_arithmetic() {
        let line = LineSettings::rtu_8n1(19_200);
        assert_eq!(line.bits_per_char(), 10);
        // 10 bits at 19 200 Bd: 520.833 µs.
        assert_eq!(char_time(&line), Duration::from_nanos(520_833));
        assert_eq!(read_frames_bytes(30), (8, 65));
        let block = BlockRead {
            function: Function::ReadHolding,
            start: 0xC850,
            count: 30,
        };
        // 73 characters + 7 characters of gaps = 80 characters = 800 bits at 19 200 Bd.
        assert_eq!(
            request_time(&line, &block),
            Duration::from_nanos(41_666_666)
        );
        let even = LineSettings {
            parity: true,
            ..line
        };
        assert_eq!(even.bits_per_char(), 11);
        assert_eq!(
            frame_gap(&LineSettings::rtu_8n1(38_400)),
            Duration::from_micros(1750)
        );
        assert_eq!(
            cycle_limit(&line, &[vec![block], vec![block, block]]),
            request_time(&line, &block) * 3
        );
        // Above 19 200 Bd the gaps are 1.75 ms each: 73 × 10 bits at 38 400 Bd + 3.5 ms.
        assert_eq!(
            request_time(&LineSettings::rtu_8n1(38_400), &block),
            Duration::from_nanos(19_010_416 + 3_500_000)
        );
        assert_eq!(cycle_limit(&line, &[]), Duration::ZERO);
        assert_eq!(
            write_frames_bytes(&Write::Multiple {
                address: 0xC8,
                values: vec![1]
            }),
            (11, 8)
        );
    }
}
