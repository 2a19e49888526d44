//! Reading Iskra meters (WM, MC, IE series) and switching Bicom relays over Modbus, the way
//! the SG does over IR or RS485: input registers (function 4) in the T5/T6/T7 formats of
//! `tests/fixtures/modbus/README.md` (decoded by the server's own decoder,
//! [`headend_modbus_map::iskra`]), relays through holding register 40141 (function 6).
//!
//! The register maps are read through a [`Transport`]: Modbus TCP (tokio-modbus), or Modbus
//! RTU on the gateway's RS485 bus ([`crate::rtu`]).
//!
//! Addresses below are wire addresses (0-based): the SG's notation `30105` is input register
//! 105 on the wire.

use std::net::SocketAddr;
use std::time::Duration;

use headend_modbus_map::iskra;
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::Slave;

use crate::counter_config;
use crate::rtu::{RtuUnit, SharedBus};

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

impl From<iskra::T7> for PowerFactor {
    /// As the meter sends it: any direction or kind byte other than FF reads as import,
    /// inductive.
    fn from(t7: iskra::T7) -> Self {
        Self {
            value: t7.value(),
            capacitive: t7.capacitive(),
            export: t7.export(),
        }
    }
}

/// A big-endian (high word first) two's complement 32-bit value.
#[must_use]
pub fn decode_i32(hi: u16, lo: u16) -> i32 {
    ((u32::from(hi) << 16) | u32::from(lo)) as i32
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
        iskra::decode_t5(hi, lo).to_f64()
    };
    let t6 = |register| {
        let (hi, lo) = pair(register);
        iskra::decode_t6(hi, lo).to_f64()
    };
    let t7 = |register| {
        let (hi, lo) = pair(register);
        PowerFactor::from(iskra::decode_t7(hi, lo))
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

/// Why a request to a device failed. Each makes the device count as not responding: the
/// gateway publishes its `P/error` line for it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the Modbus TCP server: {0}")]
    Connect(std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tokio_modbus::Error),
    #[error("cannot open the serial port {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("serial port: {0}")]
    Serial(std::io::Error),
    #[error("Modbus exception {code:02X} ({0})", code = u8::from(*.0))]
    Exception(tokio_modbus::ExceptionCode),
    #[error("short reply: {got} of {expected} registers")]
    ShortReply { expected: u16, got: usize },
    #[error("{}", truncated(*.got, *.expected))]
    Truncated { got: usize, expected: Option<usize> },
    #[error("CRC error: the reply carries {received:#06X}, its bytes give {computed:#06X}")]
    Crc { received: u16, computed: u16 },
    #[error("reply from unit {got} instead of unit {expected}")]
    WrongUnit { expected: u8, got: u8 },
    #[error("reply with function code {got:#04X} to a request with function code {expected:#04X}")]
    UnexpectedFunction { expected: u8, got: u8 },
    #[error("malformed reply: {0}")]
    Malformed(String),
}

fn truncated(got: usize, expected: Option<usize>) -> String {
    match expected {
        Some(expected) => format!("incomplete reply: {got} of {expected} bytes, then silence"),
        None => format!("incomplete reply: {got} bytes, then silence"),
    }
}

/// One Modbus request, for error messages: SG register notation (30000 + wire address for
/// input registers, 40000 + wire address for holding registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Function 4.
    ReadInput { start: u16, count: u16 },
    /// Function 3.
    ReadHolding { start: u16, count: u16 },
    /// Function 6.
    WriteSingle { register: u16, value: u16 },
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::ReadInput { start, count: 1 } => {
                write!(
                    f,
                    "input register {} (function 4)",
                    30_000 + u32::from(start)
                )
            }
            Self::ReadInput { start, count } => write!(
                f,
                "input registers {}..{} (function 4)",
                30_000 + u32::from(start),
                30_000 + u32::from(start) + u32::from(count) - 1
            ),
            Self::ReadHolding { start, count } => write!(
                f,
                "holding registers {}..{} (function 3)",
                40_000 + u32::from(start),
                40_000 + u32::from(start) + u32::from(count.max(1)) - 1
            ),
            Self::WriteSingle { register, value } => write!(
                f,
                "holding register {} = {value} (function 6)",
                40_000 + u32::from(register)
            ),
        }
    }
}

/// A failed request: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{request}: {error}")]
pub struct RequestError {
    pub request: Request,
    #[source]
    pub error: ReadError,
}

/// How requests reach a device.
#[derive(Debug)]
pub enum Transport {
    /// A Modbus TCP server (a meter with Ethernet, or an RS485/IP converter).
    Tcp(TcpLink),
    /// A unit on the gateway's RS485 bus (Modbus RTU).
    Rtu(RtuUnit),
}

/// A Modbus TCP connection, opened on first use and dropped after any error, so the next
/// request reconnects.
pub struct TcpLink {
    addr: SocketAddr,
    unit: u8,
    timeout: Duration,
    context: Option<Context>,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("addr", &self.addr)
            .field("unit", &self.unit)
            .field("timeout", &self.timeout)
            .field("connected", &self.context.is_some())
            .finish()
    }
}

impl TcpLink {
    async fn context(&mut self) -> Result<&mut Context, ReadError> {
        let context = match self.context.take() {
            Some(context) => context,
            None => tcp::connect_slave(self.addr, Slave(self.unit))
                .await
                .map_err(ReadError::Connect)?,
        };
        Ok(self.context.insert(context))
    }

    /// Carries out `request` within the timeout: the registers read (none for a write).
    /// Drops the connection on failure.
    async fn call(&mut self, request: Request) -> Result<Vec<u16>, ReadError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, async {
            let context = self.context().await?;
            match request {
                Request::ReadInput { start, count } => context
                    .read_input_registers(start, count)
                    .await?
                    .map_err(ReadError::Exception),
                Request::ReadHolding { start, count } => context
                    .read_holding_registers(start, count)
                    .await?
                    .map_err(ReadError::Exception),
                Request::WriteSingle { register, value } => context
                    .write_single_register(register, value)
                    .await?
                    .map(|()| Vec::new())
                    .map_err(ReadError::Exception),
            }
        })
        .await
        .unwrap_or(Err(ReadError::Timeout(timeout)));
        if result.is_err() {
            self.context = None;
        }
        result
    }
}

impl Transport {
    async fn read_input(&mut self, start: u16, count: u16) -> Result<Vec<u16>, RequestError> {
        self.read(Request::ReadInput { start, count }).await
    }

    async fn read_holding(&mut self, start: u16, count: u16) -> Result<Vec<u16>, RequestError> {
        self.read(Request::ReadHolding { start, count }).await
    }

    /// A register read (function 3 or 4), checked for length.
    async fn read(&mut self, request: Request) -> Result<Vec<u16>, RequestError> {
        let (start, count) = match request {
            Request::ReadInput { start, count } | Request::ReadHolding { start, count } => {
                (start, count)
            }
            Request::WriteSingle { .. } => (0, 0),
        };
        let result = match (&mut *self, request) {
            (Self::Tcp(link), _) => link.call(request).await,
            (Self::Rtu(unit), Request::ReadHolding { .. }) => {
                unit.read_holding_registers(start, count).await
            }
            (Self::Rtu(unit), _) => unit.read_input_registers(start, count).await,
        };
        let words = result.map_err(|error| RequestError { request, error })?;
        // The RTU path checks the byte count itself; tokio-modbus hands over what came.
        if words.len() < usize::from(count) {
            let error = ReadError::ShortReply {
                expected: count,
                got: words.len(),
            };
            return Err(RequestError { request, error });
        }
        Ok(words)
    }

    async fn write_single(&mut self, register: u16, value: u16) -> Result<(), RequestError> {
        let request = Request::WriteSingle { register, value };
        let result = match self {
            Self::Tcp(link) => link.call(request).await.map(drop),
            Self::Rtu(unit) => unit.write_single_register(register, value).await,
        };
        result.map_err(|error| RequestError { request, error })
    }
}

/// An Iskra meter or Bicom relay over Modbus, TCP or RTU: the register maps above, read
/// through either transport.
#[derive(Debug)]
pub struct ModbusDevice {
    transport: Transport,
}

impl std::fmt::Display for ModbusDevice {
    /// `unit 12 at 10.0.0.5:502 (Modbus TCP)`, `unit 12 on /dev/ttyUSB0 (Modbus RTU)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Tcp(link) => write!(f, "unit {} at {} (Modbus TCP)", link.unit, link.addr),
            Transport::Rtu(unit) => {
                write!(f, "unit {} on {} (Modbus RTU)", unit.unit, unit.bus.name())
            }
        }
    }
}

impl ModbusDevice {
    /// A device behind a Modbus TCP server.
    #[must_use]
    pub fn tcp(addr: SocketAddr, unit: u8, timeout: Duration) -> Self {
        Self {
            transport: Transport::Tcp(TcpLink {
                addr,
                unit,
                timeout,
                context: None,
            }),
        }
    }

    /// Unit `unit` on the RS485 bus; `timeout` is its response time per request.
    #[must_use]
    pub fn rtu(bus: SharedBus, unit: u8, timeout: Duration) -> Self {
        Self {
            transport: Transport::Rtu(RtuUnit { bus, unit, timeout }),
        }
    }

    /// The unit id.
    #[must_use]
    pub fn unit(&self) -> u8 {
        match &self.transport {
            Transport::Tcp(link) => link.unit,
            Transport::Rtu(unit) => unit.unit,
        }
    }

    /// Reads the instantaneous values.
    ///
    /// # Errors
    /// The request and why it failed.
    pub async fn read_measurements(&mut self) -> Result<Instant, RequestError> {
        let words = self
            .transport
            .read_input(MEASUREMENTS_START, MEASUREMENTS_LEN)
            .await?;
        decode_measurements(&words).map_err(|error| RequestError {
            request: Request::ReadInput {
                start: MEASUREMENTS_START,
                count: MEASUREMENTS_LEN,
            },
            error,
        })
    }

    /// Reads the energy counters.
    ///
    /// # Errors
    /// The request and why it failed.
    pub async fn read_energy(&mut self) -> Result<Energy, RequestError> {
        let words = self.transport.read_input(ENERGY_START, ENERGY_LEN).await?;
        decode_energy(&words).map_err(|error| RequestError {
            request: Request::ReadInput {
                start: ENERGY_START,
                count: ENERGY_LEN,
            },
            error,
        })
    }

    /// Reads the counters' configuration (units and directions, see [`counter_config`]).
    ///
    /// # Errors
    /// The request and why it failed; a meter without these registers answers with a Modbus
    /// exception.
    pub async fn read_counter_config(
        &mut self,
    ) -> Result<[counter_config::CounterConfig; 4], RequestError> {
        let connection = self
            .transport
            .read_holding(counter_config::CONNECTION, 1)
            .await?;
        let words = self
            .transport
            .read_holding(counter_config::START, counter_config::LEN)
            .await?;
        Ok(counter_config::decode(connection[0], &words))
    }

    /// Reads a Bicom relay's state (input register 30101: 0 off, 1 on).
    ///
    /// # Errors
    /// The request and why it failed.
    pub async fn read_relay(&mut self) -> Result<bool, RequestError> {
        let words = self.transport.read_input(RELAY_STATE, 1).await?;
        Ok(words[0] != 0)
    }

    /// Switches a Bicom relay (holding register 40141, function 6).
    ///
    /// # Errors
    /// The request and why it failed.
    pub async fn switch_relay(&mut self, on: bool) -> Result<(), RequestError> {
        self.transport
            .write_single(RELAY_SWITCH, u16::from(on))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    /// The shared decoder's values, as the floats the gateway's SG documents carry.
    #[test]
    fn t5_is_mantissa_times_ten_to_the_exponent() {
        // FD 03 80 C4: exponent -3, mantissa 229572 → 229.572 (a voltage).
        assert!(close(iskra::decode_t5(0xFD03, 0x80C4).to_f64(), 229.572));
        // 02 00 00 07: 7 × 10² = 700.
        assert!(close(iskra::decode_t5(0x0200, 0x0007).to_f64(), 700.0));
        // The mantissa is unsigned in T5: FF FF FF ED is 16777197 × 10⁻¹.
        assert!(close(
            iskra::decode_t5(0xFFFF, 0xFFED).to_f64(),
            1_677_719.7
        ));
    }

    #[test]
    fn t6_mantissa_is_twos_complement() {
        // The README's FF FF FF ED, read as T6: exponent -1, mantissa -19 → -1.9.
        assert!(close(iskra::decode_t6(0xFFFF, 0xFFED).to_f64(), -1.9));
        // 00 00 00 13: +19.
        assert!(close(iskra::decode_t6(0x0000, 0x0013).to_f64(), 19.0));
        // FE 00 03 E8: 1000 × 10⁻² = 10 (positive mantissa, negative exponent).
        assert!(close(iskra::decode_t6(0xFE00, 0x03E8).to_f64(), 10.0));
        // FD 80 00 00: the most negative mantissa.
        assert!(close(iskra::decode_t6(0xFD80, 0x0000).to_f64(), -8_388.608));
    }

    #[test]
    fn t7_carries_direction_character_and_value() {
        // A power factor of 0.82 (the README's 00 52 is 82 hundredths; T7 is ten-thousandths).
        let pf = PowerFactor::from(iskra::decode_t7(0x0000, 8200));
        assert_eq!(
            pf,
            PowerFactor {
                value: 0.82,
                capacitive: false,
                export: false
            }
        );
        let pf = PowerFactor::from(iskra::decode_t7(0xFFFF, 2124));
        assert!(pf.export && pf.capacitive && close(pf.value, 0.2124));
        let pf = PowerFactor::from(iskra::decode_t7(0x00FF, 10_000));
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
