//! Reading Iskra meters (WM, MC, IE series) over Modbus TCP, the way the SG reads them over
//! IR or RS485: input registers (function 4) in the T5/T6/T7 formats of
//! `shared/spec/modbus/README.md`.
//!
//! Addresses below are wire addresses (0-based): the SG's notation `30105` is input register
//! 105 on the wire.
//!
//! Modbus RTU over a serial line is not implemented: the runner has no serial port driver.
//! A device configured with an RTU source is reported as not responding on `P/error`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::Slave;

/// Instantaneous values of one meter, in SI units, as read from its input registers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Instant {
    pub frequency_hz: f64,
    /// Phase-to-neutral voltages, V.
    pub u: [f64; 3],
    /// Phase currents, A.
    pub i: [f64; 3],
    /// Active power, W: total then phases.
    pub p_total: f64,
    pub p: [f64; 3],
    /// Reactive power, var: total then phases.
    pub q_total: f64,
    pub q: [f64; 3],
    /// Apparent power, VA: total then phases.
    pub s_total: f64,
    pub s: [f64; 3],
    /// Power factor: total then phases.
    pub pf_total: PowerFactor,
    pub pf: [PowerFactor; 3],
    /// Power angle, degrees: total then phases.
    pub pa_total: f64,
    pub pa: [f64; 3],
    /// Internal temperature, °C.
    pub temperature_c: f64,
}

/// A T7 power factor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerFactor {
    /// 0..=1.
    pub value: f64,
    /// Capacitive (`Cap`) rather than inductive (`Ind`).
    pub capacitive: bool,
    /// Energy flows to the grid.
    pub export: bool,
}

/// The energy registers of one meter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Energy {
    /// The four counters in their unit (Wh, varh or VAh, from the meter's configuration).
    pub counters: [f64; 4],
    /// The active tariff.
    pub tariff: u16,
}

/// Decodes T5: top byte a signed decimal exponent, low 24 bits an unsigned mantissa.
#[must_use]
pub fn decode_t5(hi: u16, lo: u16) -> f64 {
    let raw = join(hi, lo);
    let exponent = (raw >> 24) as u8 as i8;
    let mantissa = raw & 0x00FF_FFFF;
    f64::from(mantissa) * 10f64.powi(i32::from(exponent))
}

/// Decodes T6: as T5, but the 24-bit mantissa is two's complement.
#[must_use]
pub fn decode_t6(hi: u16, lo: u16) -> f64 {
    let raw = join(hi, lo);
    let exponent = (raw >> 24) as u8 as i8;
    // Shift the 24-bit mantissa into the top of an i32 and back to sign-extend it.
    let mantissa = ((raw << 8) as i32) >> 8;
    f64::from(mantissa) * 10f64.powi(i32::from(exponent))
}

/// Decodes T7: top byte 00 import / FF export, next byte 00 inductive / FF capacitive, low
/// 16 bits the power factor × 10000.
#[must_use]
pub fn decode_t7(hi: u16, lo: u16) -> PowerFactor {
    PowerFactor {
        value: f64::from(lo) / 10_000.0,
        export: hi >> 8 == 0xFF,
        capacitive: hi & 0xFF == 0xFF,
    }
}

/// A big-endian (high word first) two's complement 32-bit value.
#[must_use]
pub fn decode_i32(hi: u16, lo: u16) -> i32 {
    join(hi, lo) as i32
}

fn join(hi: u16, lo: u16) -> u32 {
    (u32::from(hi) << 16) | u32::from(lo)
}

/// First register of the measurement block (30105, frequency) and its length up to the
/// internal temperature (30181).
const MEASUREMENTS_START: u16 = 105;
const MEASUREMENTS_LEN: u16 = 181 - 105 + 1;
/// Energy block: 30401..30404 exponents, 30405 tariff, 30406..30413 four i32 counters.
const ENERGY_START: u16 = 401;
const ENERGY_LEN: u16 = 413 - 401 + 1;
/// Bicom relay: state in input register 30101, switched through holding register 40141.
const RELAY_STATE: u16 = 101;
const RELAY_SWITCH: u16 = 141;

/// Decodes the measurement block read from [`MEASUREMENTS_START`].
///
/// # Errors
/// [`ReadError::ShortReply`] when the block is shorter than asked for.
pub fn decode_measurements(words: &[u16]) -> Result<Instant, ReadError> {
    if words.len() < usize::from(MEASUREMENTS_LEN) {
        return Err(ReadError::ShortReply {
            expected: MEASUREMENTS_LEN,
            got: words.len(),
        });
    }
    // `at(30xxx)` is the word of that SG register; the length check above covers them all.
    let at = |register: u16| usize::from(register - 30_000 - MEASUREMENTS_START);
    let pair = |register: u16| (words[at(register)], words[at(register) + 1]);
    let t5 = |register| {
        let (hi, lo) = pair(register);
        decode_t5(hi, lo)
    };
    let t6 = |register| {
        let (hi, lo) = pair(register);
        decode_t6(hi, lo)
    };
    let t7 = |register| {
        let (hi, lo) = pair(register);
        decode_t7(hi, lo)
    };
    let angle = |register| f64::from(words[at(register)] as i16) / 100.0;
    Ok(Instant {
        frequency_hz: t5(30_105),
        u: [t5(30_107), t5(30_109), t5(30_111)],
        i: [t5(30_126), t5(30_128), t5(30_130)],
        p_total: t6(30_140),
        p: [t6(30_142), t6(30_144), t6(30_146)],
        q_total: t6(30_148),
        q: [t6(30_150), t6(30_152), t6(30_154)],
        s_total: t5(30_156),
        s: [t5(30_158), t5(30_160), t5(30_162)],
        pf_total: t7(30_164),
        pf: [t7(30_166), t7(30_168), t7(30_170)],
        pa_total: angle(30_172),
        pa: [angle(30_173), angle(30_174), angle(30_175)],
        temperature_c: f64::from(words[at(30_181)]) / 100.0,
    })
}

/// Decodes the energy block read from [`ENERGY_START`].
///
/// # Errors
/// [`ReadError::ShortReply`] when the block is shorter than asked for.
pub fn decode_energy(words: &[u16]) -> Result<Energy, ReadError> {
    if words.len() < usize::from(ENERGY_LEN) {
        return Err(ReadError::ShortReply {
            expected: ENERGY_LEN,
            got: words.len(),
        });
    }
    let mut counters = [0.0; 4];
    for (n, counter) in counters.iter_mut().enumerate() {
        let exponent = words[n] as i16;
        let value = decode_i32(words[5 + 2 * n], words[6 + 2 * n]);
        *counter = f64::from(value) * 10f64.powi(i32::from(exponent));
    }
    Ok(Energy {
        counters,
        tariff: words[4],
    })
}

/// Why a meter could not be read. Each becomes a `P/error` line.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the Modbus TCP server: {0}")]
    Connect(std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tokio_modbus::Error),
    #[error("Modbus exception {0}")]
    Exception(tokio_modbus::ExceptionCode),
    #[error("short reply: {got} of {expected} registers")]
    ShortReply { expected: u16, got: usize },
}

/// A meter behind a Modbus TCP server (a meter with Ethernet, or an RS485/IP converter).
/// The connection is opened on first use and dropped after any error, so the next read
/// reconnects.
pub struct ModbusTcpMeter {
    addr: SocketAddr,
    unit: u8,
    timeout: Duration,
    context: Option<Context>,
}

impl ModbusTcpMeter {
    #[must_use]
    pub fn new(addr: SocketAddr, unit: u8, timeout: Duration) -> Self {
        Self {
            addr,
            unit,
            timeout,
            context: None,
        }
    }

    /// Reads the instantaneous values.
    ///
    /// # Errors
    /// Any [`ReadError`]; the connection is dropped.
    pub async fn read_measurements(&mut self) -> Result<Instant, ReadError> {
        let words = self
            .read_input(MEASUREMENTS_START, MEASUREMENTS_LEN)
            .await?;
        decode_measurements(&words)
    }

    /// Reads the energy counters.
    ///
    /// # Errors
    /// Any [`ReadError`]; the connection is dropped.
    pub async fn read_energy(&mut self) -> Result<Energy, ReadError> {
        let words = self.read_input(ENERGY_START, ENERGY_LEN).await?;
        decode_energy(&words)
    }

    /// Reads a Bicom relay's state (input register 30101: 0 off, 1 on).
    ///
    /// # Errors
    /// Any [`ReadError`]; the connection is dropped.
    pub async fn read_relay(&mut self) -> Result<bool, ReadError> {
        let words = self.read_input(RELAY_STATE, 1).await?;
        words.first().map(|&w| w != 0).ok_or(ReadError::ShortReply {
            expected: 1,
            got: 0,
        })
    }

    /// Switches a Bicom relay (holding register 40141, function 6).
    ///
    /// # Errors
    /// Any [`ReadError`]; the connection is dropped.
    pub async fn switch_relay(&mut self, on: bool) -> Result<(), ReadError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, async {
            self.context()
                .await?
                .write_single_register(RELAY_SWITCH, u16::from(on))
                .await?
                .map_err(ReadError::Exception)
        })
        .await
        .unwrap_or(Err(ReadError::Timeout(timeout)));
        if result.is_err() {
            self.context = None;
        }
        result
    }

    async fn context(&mut self) -> Result<&mut Context, ReadError> {
        let context = match self.context.take() {
            Some(context) => context,
            None => tcp::connect_slave(self.addr, Slave(self.unit))
                .await
                .map_err(ReadError::Connect)?,
        };
        Ok(self.context.insert(context))
    }

    async fn read_input(&mut self, start: u16, count: u16) -> Result<Vec<u16>, ReadError> {
        let result = tokio::time::timeout(self.timeout, self.read_input_inner(start, count))
            .await
            .unwrap_or(Err(ReadError::Timeout(self.timeout)));
        if result.is_err() {
            self.context = None;
        }
        result
    }

    async fn read_input_inner(&mut self, start: u16, count: u16) -> Result<Vec<u16>, ReadError> {
        self.context()
            .await?
            .read_input_registers(start, count)
            .await?
            .map_err(ReadError::Exception)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn t5_is_mantissa_times_ten_to_the_exponent() {
        // FD 03 80 C4: exponent -3, mantissa 229572 → 229.572 (a voltage).
        assert!(close(decode_t5(0xFD03, 0x80C4), 229.572));
        // 02 00 00 07: 7 × 10² = 700.
        assert!(close(decode_t5(0x0200, 0x0007), 700.0));
        // The mantissa is unsigned in T5: FF FF FF ED is 16777197 × 10⁻¹.
        assert!(close(decode_t5(0xFFFF, 0xFFED), 1_677_719.7));
    }

    #[test]
    fn t6_mantissa_is_twos_complement() {
        // The README's FF FF FF ED, read as T6: exponent -1, mantissa -19 → -1.9.
        assert!(close(decode_t6(0xFFFF, 0xFFED), -1.9));
        // 00 00 00 13: +19.
        assert!(close(decode_t6(0x0000, 0x0013), 19.0));
        // FE 00 03 E8: 1000 × 10⁻² = 10 (positive mantissa, negative exponent).
        assert!(close(decode_t6(0xFE00, 0x03E8), 10.0));
        // FD 80 00 00: the most negative mantissa.
        assert!(close(decode_t6(0xFD80, 0x0000), -8_388.608));
    }

    #[test]
    fn t7_carries_direction_character_and_value() {
        // A power factor of 0.82 (the README's 00 52 is 82 hundredths; T7 is ten-thousandths).
        let pf = decode_t7(0x0000, 8200);
        assert_eq!(
            pf,
            PowerFactor {
                value: 0.82,
                capacitive: false,
                export: false
            }
        );
        let pf = decode_t7(0xFFFF, 2124);
        assert!(pf.export && pf.capacitive && close(pf.value, 0.2124));
        let pf = decode_t7(0x00FF, 10_000);
        assert!(!pf.export && pf.capacitive && close(pf.value, 1.0));
    }

    #[test]
    fn i32_is_high_word_first_twos_complement() {
        assert_eq!(decode_i32(0xFFFF, 0xFFED), -19);
        assert_eq!(decode_i32(0x0003, 0x9918), 235_800);
    }

    #[test]
    fn measurement_block_maps_registers() {
        let mut words = vec![0_u16; usize::from(MEASUREMENTS_LEN)];
        let mut put = |register: u16, hi: u16, lo: u16| {
            let at = usize::from(register - 30_000 - MEASUREMENTS_START);
            words[at] = hi;
            words[at + 1] = lo;
        };
        put(30_105, 0xFE00, 4999); // 49.99 Hz
        put(30_109, 0xFF00, 2306); // U2 230.6 V
        put(30_130, 0xFD00, 5021); // I3 5.021 A
        put(30_140, 0x00FF, 0xF4D5); // P total: mantissa FFF4D5 = -2859 W
        put(30_166, 0x00FF, 8984); // PF1 0.8984 Cap
        let mut block = words;
        block[usize::from(30_173 - 30_000 - MEASUREMENTS_START)] = (-2607_i16) as u16;
        block[usize::from(181 - MEASUREMENTS_START)] = 3070;
        let m = decode_measurements(&block).unwrap();
        assert!(close(m.frequency_hz, 49.99));
        assert!(close(m.u[1], 230.6));
        assert!(close(m.i[2], 5.021));
        assert!(close(m.p_total, -2859.0));
        assert!(m.pf[0].capacitive && close(m.pf[0].value, 0.8984));
        assert!(close(m.pa[0], -26.07));
        assert!(close(m.temperature_c, 30.7));

        let short = decode_measurements(&block[..10]).unwrap_err();
        assert!(matches!(short, ReadError::ShortReply { got: 10, .. }));
    }

    #[test]
    fn energy_block_applies_exponents() {
        let mut words = vec![0_u16; usize::from(ENERGY_LEN)];
        words[0] = (-3_i16) as u16; // counter 1 in 10⁻³ Wh
        words[1] = 1; // counter 2 in 10 Wh
        words[4] = 2; // tariff
        words[5] = 0x0003; // counter 1: 235800 × 10⁻³ = 235.8 Wh
        words[6] = 0x9918;
        words[8] = 12; // counter 2: 12 × 10 = 120 Wh
        let energy = decode_energy(&words).unwrap();
        assert!(close(energy.counters[0], 235.8));
        assert!(close(energy.counters[1], 120.0));
        assert_eq!(energy.tariff, 2);
        assert!(decode_energy(&words[..12]).is_err());
    }
}
