//! A simulated RS485/IP converter: a Modbus TCP server (MBAP framing, written by hand so faults
//! can be injected byte-exactly) with RTU units behind it on one shared bus. `headend demo`
//! runs one with moving meters ([`super::modbus`]); the end-to-end tests use it through
//! `headend_e2e::converter` (a re-export) with fault injection.
//!
//! - One request at a time on the bus: concurrent TCP requests queue on a mutex, like frames
//!   on a real RS485 line. With `baud` set, each exchange holds the bus for its RTU frame time
//!   (request, response and 3.5-character gaps, from [`headend_modbus_map::bus`]).
//! - Units answer functions 3, 4, 6 and 16 from their register images; reads outside a unit's
//!   readable ranges get exception 02, unsupported functions 01, configured ranges their own
//!   exception (the spec's 83 01 for 0x4000 on unit 1).
//! - Faults per unit, settable at run time: dead (silent, or gateway exception 0B after the
//!   converter timeout, holding the bus meanwhile), exceptions 01..04 and 0A, slow, short
//!   reply, wrong unit id, wrong transaction id. Units nobody added behave as dead with 0B.
//! - [`SimConverter::requests`] counts the requests each unit received, so tests assert
//!   behaviour without timing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headend_modbus_map::bus::{self, LineSettings};
use headend_modbus_map::{CounterValue, Decoded, Function, MapLibrary, RegisterMap, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Converter settings.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Enforce the RTU line speed of the bus (8N1 at this baud rate); `None`: instant.
    pub baud: Option<u32>,
    /// How long the converter waits for a silent unit before giving up (and, for
    /// [`Fault::DeadGateway`], answering exception 0B). The bus is held meanwhile.
    pub converter_timeout: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            baud: None,
            converter_timeout: Duration::from_millis(300),
        }
    }
}

/// A fault of one unit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// No reply at all: the converter holds the bus for its timeout and sends nothing.
    Dead,
    /// The converter holds the bus for its timeout, then answers exception 0B.
    DeadGateway,
    /// Every request gets this exception code (01..04, 0A, 0B).
    Exception(u8),
    /// The unit answers after this extra delay (holding the bus).
    Slow(Duration),
    /// Read replies carry one register fewer than asked (consistent framing).
    ShortReply,
    /// Replies carry another unit id.
    WrongUnit,
    /// Replies carry another transaction id.
    WrongTransaction,
}

/// What a write to a holding register does besides storing the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// The value written to `holding` appears in input register `input` (a Bicom relay's
    /// state following its switch register).
    Mirror { holding: u16, input: u16 },
    /// Writing a value with `bit` set to `holding` zeroes `count` holding registers from
    /// `start` (a bit-per-counter reset register); the reset register then reads 0.
    ResetBits {
        holding: u16,
        bit: u16,
        start: u16,
        count: u16,
    },
}

/// Register image and behaviour of one RTU unit.
#[derive(Clone, Debug, Default)]
pub struct SimUnit {
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
    /// (function code 3/4, first, last) inclusive.
    readable: Vec<(u8, u16, u16)>,
    /// (first, last, allowed values: empty = any).
    writable: Vec<(u16, u16, Vec<u16>)>,
    /// (function code, first, last, exception code).
    exceptions: Vec<(u8, u16, u16, u8)>,
    effects: Vec<WriteEffect>,
    fault: Fault,
    requests: u64,
}

fn code(function: Function) -> u8 {
    function.code()
}

impl SimUnit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `first..=last` readable with `function`.
    pub fn readable(mut self, function: Function, first: u16, last: u16) -> Self {
        self.readable.push((code(function), first, last));
        self
    }

    pub fn holding(mut self, address: u16, words: &[u16]) -> Self {
        store(&mut self.holding, address, words);
        self
    }

    pub fn input(mut self, address: u16, words: &[u16]) -> Self {
        store(&mut self.input, address, words);
        self
    }

    /// Holding registers `first..=last` accept writes (functions 6 and 16) of `allowed`
    /// values (any when empty; others get exception 03).
    pub fn writable(mut self, first: u16, last: u16, allowed: &[u16]) -> Self {
        self.writable.push((first, last, allowed.to_vec()));
        self
    }

    /// Requests with `function_code` touching `first..=last` get exception `exception`.
    pub fn exception(mut self, function_code: u8, first: u16, last: u16, exception: u8) -> Self {
        self.exceptions
            .push((function_code, first, last, exception));
        self
    }

    pub fn effect(mut self, effect: WriteEffect) -> Self {
        self.effects.push(effect);
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
}

fn store(image: &mut BTreeMap<u16, u16>, address: u16, words: &[u16]) {
    for (n, w) in words.iter().enumerate() {
        image.insert(address.wrapping_add(n as u16), *w);
    }
}

/// A unit following `map`, holding `values` (see [`RegisterMap::encode`]); readable ranges
/// are the map's (or its planned blocks where it declares none). Relay maps get a writable
/// switch register whose value the state register follows; resettable counters get a
/// working reset register.
///
/// # Panics
/// When `values` cannot be encoded with `map` (a test bug).
pub fn unit_from_map(map: &RegisterMap, values: &Decoded) -> SimUnit {
    let mut unit = SimUnit::new();
    for (function, first, last) in map.readable() {
        unit = unit.readable(*function, *first, *last);
    }
    for block in map.plan() {
        let declared = map.readable().iter().any(|(f, _, _)| *f == block.function);
        if !declared {
            unit = unit.readable(block.function, block.start, block.start + block.count - 1);
        }
        // Every planned register exists (zero unless a value says otherwise).
        let zeros = vec![0u16; usize::from(block.count)];
        unit = match block.function {
            Function::ReadHolding => unit.holding(block.start, &zeros),
            Function::ReadInput => unit.input(block.start, &zeros),
        };
    }
    let registers = map
        .encode(values)
        .unwrap_or_else(|e| panic!("unit_from_map({}): {e}", map.model));
    for (function, address, word) in registers {
        unit = match function {
            Function::ReadHolding => unit.holding(address, &[word]),
            Function::ReadInput => unit.input(address, &[word]),
        };
    }
    if let (Some(Write::Single { address, .. } | Write::Multiple { address, .. }), Some(state)) =
        (map.relay_write(true), map.relay_state_read())
    {
        let on = map.relay_write(true).map(|w| first_value(&w)).unwrap_or(1);
        let off = map.relay_write(false).map(|w| first_value(&w)).unwrap_or(0);
        unit = unit.writable(address, address, &[on, off]);
        if state.function == Function::ReadInput {
            unit = unit.effect(WriteEffect::Mirror {
                holding: address,
                input: state.start,
            });
        }
    }
    for counter in map.counters() {
        let Some(reset) = map.counter_reset(&counter.name) else {
            continue;
        };
        let Some(counter_block) = map.counter_registers(&counter.name) else {
            continue;
        };
        let address = reset.address();
        unit = unit
            .writable(address, address, &[])
            .effect(WriteEffect::ResetBits {
                holding: address,
                bit: first_value(&reset),
                start: counter_block.start,
                count: counter_block.count,
            });
    }
    unit
}

fn first_value(write: &Write) -> u16 {
    match write {
        Write::Single { value, .. } => *value,
        Write::Multiple { values, .. } => values.first().copied().unwrap_or(0),
    }
}

struct State {
    units: HashMap<u8, SimUnit>,
    options: SimOptions,
}

/// The running converter; stops when dropped.
pub struct SimConverter {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for SimConverter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Unit ids of [`SimConverter::spec`].
pub const SPEC_EMDX3_UNIT: u8 = 1;
pub const SPEC_046_77_UNIT: u8 = 6;
pub const SPEC_ISKRA_UNIT: u8 = 10;
pub const SPEC_BICOM_UNIT: u8 = 20;

/// The values the units of [`SimConverter::spec`] hold, as the map decodes them.
pub fn spec_values(unit: u8) -> Decoded {
    let counter = |name: &str, unit: &'static str, resettable, value_milli| CounterValue {
        name: name.to_string(),
        unit,
        resettable,
        value_milli,
    };
    match unit {
        SPEC_EMDX3_UNIT => Decoded {
            measurements: vec![
                ("u12", 400.12),
                ("u23", 399.87),
                ("u31", 401.05),
                ("u1", 230.81),
                ("u2", 231.02),
                ("u3", 229.64),
                ("frequency", 49.98),
                ("i1", 12.345),
                ("i2", 11.002),
                ("i3", 13.7),
                // The spec's FF FF FF ED at 0.01 kW: a CT wired backwards.
                ("p", -190.0),
                ("q", 1250.0),
                ("s", 8420.0),
            ],
            ..Decoded::default()
        },
        SPEC_046_77_UNIT => Decoded {
            measurements: vec![
                // 00 03 99 18 mV and 00 52 from the catalogue's dialogue example.
                ("u1", 235.8),
                ("i1", 4.12),
                ("p", 797.0),
                ("frequency", 50.01),
                ("pf", 0.82),
            ],
            counters: vec![
                counter("counter1nr", "Wh", false, 1_234_560_000),
                // 00 00 00 02 from the catalogue's reset example: 0.02 kWh.
                counter("counter1", "Wh", true, 20_000),
            ],
            ..Decoded::default()
        },
        SPEC_ISKRA_UNIT => Decoded {
            measurements: vec![
                ("frequency", 50.0),
                ("u1", 229.572),
                ("u2", 230.1),
                ("u3", 231.4),
                ("i1", 5.123),
                ("i2", 4.9),
                ("i3", 5.002),
                ("p", 2815.0),
                ("p1", 1000.0),
                ("p2", 900.0),
                ("p3", 915.0),
                ("q", -120.5),
                ("q1", -40.5),
                ("q2", -50.0),
                ("q3", -30.0),
                ("s", 2900.0),
                ("s1", 1020.0),
                ("s2", 960.0),
                ("s3", 930.0),
                ("pf", 0.97),
                ("pf1", 0.98),
                ("pf2", -0.8984),
                ("pf3", 0.9839),
                ("pa", 14.07),
                ("pa1", 11.48),
                ("pa2", -26.06),
                ("pa3", 10.3),
                ("temperature", 31.5),
            ],
            counters: vec![
                counter("counter1nr", "Wh", false, 12_345_678_000),
                counter("counter2nr", "Wh", false, 1_500_250),
                counter("counter3nr", "varh", false, 98_765_000),
                counter("counter4nr", "varh", false, 0),
            ],
            tariff: Some(1),
            info: vec![
                ("model".to_string(), "WM3M4C".to_string()),
                ("serial".to_string(), "18230001".to_string()),
            ],
            ..Decoded::default()
        },
        SPEC_BICOM_UNIT => Decoded {
            relay_state: Some(false),
            ..Decoded::default()
        },
        _ => Decoded::default(),
    }
}

impl SimConverter {
    /// Starts an empty converter on 127.0.0.1:0. Must be called inside a tokio runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(options: SimOptions) -> SimConverter {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the simulated converter");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        let state = Arc::new(Mutex::new(State {
            units: HashMap::new(),
            options,
        }));
        let stop = CancellationToken::new();
        let bus = Arc::new(tokio::sync::Mutex::new(()));
        tokio::spawn(accept_loop(listener, state.clone(), bus, stop.clone()));
        SimConverter { addr, state, stop }
    }

    /// The converter of `tests/fixtures/modbus/README.md`: EMDX3 at unit 1 (FF FF FF ED on its
    /// active power, 83 01 for 0x4000), the 0 046 77 meter at unit 6 (235.8 V, PF 0.82,
    /// partial energy 00 00 00 02 reset through 0x00C8), an Iskra meter at unit 10 and a
    /// Bicom relay at unit 20 (off; its state follows writes to holding register 141).
    pub fn spec(options: SimOptions) -> SimConverter {
        let converter = Self::start(options);
        let library = MapLibrary::builtin();
        let map = |m: &str| library.get(m).unwrap_or_else(|| panic!("map {m}")).clone();
        converter.add_unit(
            SPEC_EMDX3_UNIT,
            unit_from_map(&map("legrand-emdx3"), &spec_values(SPEC_EMDX3_UNIT))
                .exception(3, 0x4000, 0x4000, 0x01),
        );
        converter.add_unit(
            SPEC_046_77_UNIT,
            unit_from_map(&map("legrand-046-77"), &spec_values(SPEC_046_77_UNIT)),
        );
        converter.add_unit(
            SPEC_ISKRA_UNIT,
            unit_from_map(&map("iskra-meter"), &spec_values(SPEC_ISKRA_UNIT)),
        );
        converter.add_unit(
            SPEC_BICOM_UNIT,
            unit_from_map(&map("iskra-bicom"), &spec_values(SPEC_BICOM_UNIT)),
        );
        converter
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keeps the converter running for the rest of the process (dropping the returned
    /// handle no longer stops it): the demo's converter lives as long as `headend demo`.
    pub fn detach(self) -> SimHandle {
        let handle = SimHandle {
            addr: self.addr,
            state: self.state.clone(),
        };
        // Without the drop, the stop token is never cancelled.
        std::mem::forget(self);
        handle
    }

    /// Writes `values` into `unit`'s registers through `map` (as [`unit_from_map`] does),
    /// keeping everything else of the unit (faults, request counts, other registers).
    ///
    /// # Errors
    /// When `values` cannot be encoded with `map` (e.g. a counter finer than its register).
    pub fn set_values(&self, unit: u8, map: &RegisterMap, values: &Decoded) -> Result<(), String> {
        let registers = map.encode(values)?;
        self.with_unit(unit, |u| write_registers(u, &registers));
        Ok(())
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    fn with_unit<R>(&self, unit: u8, f: impl FnOnce(&mut SimUnit) -> R) -> R {
        self.with(|s| f(s.units.entry(unit).or_default()))
    }

    /// Adds (or replaces) a unit.
    pub fn add_unit(&self, unit: u8, image: SimUnit) {
        self.with(|s| s.units.insert(unit, image));
    }

    /// Removes a unit: it then behaves as absent from the bus (0B after the timeout).
    pub fn remove_unit(&self, unit: u8) {
        self.with(|s| s.units.remove(&unit));
    }

    /// Sets holding registers (creating an empty unit, with nothing readable, if absent).
    pub fn set_holding(&self, unit: u8, address: u16, words: &[u16]) {
        self.with_unit(unit, |u| store(&mut u.holding, address, words));
    }

    /// Sets input registers (creating an empty unit, with nothing readable, if absent).
    pub fn set_input(&self, unit: u8, address: u16, words: &[u16]) {
        self.with_unit(unit, |u| store(&mut u.input, address, words));
    }

    /// Holding registers as the unit holds them now (missing ones read 0).
    pub fn holding(&self, unit: u8, address: u16, count: u16) -> Vec<u16> {
        self.with_unit(unit, |u| read_image(&u.holding, address, count))
    }

    /// Input registers as the unit holds them now (missing ones read 0).
    pub fn input(&self, unit: u8, address: u16, count: u16) -> Vec<u16> {
        self.with_unit(unit, |u| read_image(&u.input, address, count))
    }

    /// Sets the fault of a unit from now on (creating an empty unit if absent).
    pub fn set_fault(&self, unit: u8, fault: Fault) {
        self.with_unit(unit, |u| u.fault = fault);
    }

    /// Requests addressed to `unit` so far (whatever the answer).
    pub fn requests(&self, unit: u8) -> u64 {
        self.with(|s| s.units.get(&unit).map_or(0, |u| u.requests))
    }

    /// Changes the line speed enforcement at run time.
    pub fn set_baud(&self, baud: Option<u32>) {
        self.with(|s| s.options.baud = baud);
    }
}

/// A detached converter (see [`SimConverter::detach`]): its address, and its registers to
/// move.
#[derive(Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// See [`SimConverter::set_values`].
    ///
    /// # Errors
    /// When `values` cannot be encoded with `map`.
    pub fn set_values(&self, unit: u8, map: &RegisterMap, values: &Decoded) -> Result<(), String> {
        let registers = map.encode(values)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        write_registers(state.units.entry(unit).or_default(), &registers);
        Ok(())
    }

    /// Holding registers as the unit holds them now (missing ones read 0).
    pub fn holding(&self, unit: u8, address: u16, count: u16) -> Vec<u16> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.units.get(&unit).map_or_else(
            || vec![0; usize::from(count)],
            |u| read_image(&u.holding, address, count),
        )
    }
}

fn write_registers(unit: &mut SimUnit, registers: &[(Function, u16, u16)]) {
    for (function, address, word) in registers {
        match function {
            Function::ReadHolding => unit.holding.insert(*address, *word),
            Function::ReadInput => unit.input.insert(*address, *word),
        };
    }
}

fn read_image(image: &BTreeMap<u16, u16>, address: u16, count: u16) -> Vec<u16> {
    (0..count)
        .map(|n| image.get(&address.wrapping_add(n)).copied().unwrap_or(0))
        .collect()
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    bus: Arc<tokio::sync::Mutex<()>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (state, bus, stop) = (state.clone(), bus.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = serve(stream, state, bus) => {}
                    }
                });
            }
        }
    }
}

/// One parsed MBAP request.
struct Request {
    transaction: u16,
    unit: u8,
    pdu: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).await.ok()?;
    let transaction = u16::from_be_bytes([header[0], header[1]]);
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    // The length counts the unit id and the PDU (at most 253 bytes).
    if protocol != 0 || !(2..=254).contains(&length) {
        return None;
    }
    let mut pdu = vec![0u8; length - 1];
    stream.read_exact(&mut pdu).await.ok()?;
    Some(Request {
        transaction,
        unit: header[6],
        pdu,
    })
}

fn frame(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + pdu.len());
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    out.push(unit);
    out.extend_from_slice(pdu);
    out
}

/// What the unit does with one request.
enum Outcome {
    /// Reply with this PDU after holding the bus for the frame time plus `extra`.
    Reply { pdu: Vec<u8>, extra: Duration },
    /// Hold the bus for `hold`, then reply (gateway exception) or stay silent.
    Timeout {
        hold: Duration,
        reply: Option<Vec<u8>>,
    },
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, bus: Arc<tokio::sync::Mutex<()>>) {
    while let Some(request) = read_request(&mut stream).await {
        let function = request.pdu.first().copied().unwrap_or(0);
        // The bus is taken before looking at the unit: requests queue like frames on RS485.
        let guard = bus.lock().await;
        let (outcome, fault, line) = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let line = s.options.baud.map(LineSettings::rtu_8n1);
            let timeout = s.options.converter_timeout;
            match s.units.get_mut(&request.unit) {
                None => (
                    Outcome::Timeout {
                        hold: timeout,
                        reply: Some(vec![function | 0x80, 0x0B]),
                    },
                    Fault::None,
                    line,
                ),
                Some(unit) => {
                    unit.requests += 1;
                    let fault = unit.fault.clone();
                    let outcome = match &fault {
                        Fault::Dead => Outcome::Timeout {
                            hold: timeout,
                            reply: None,
                        },
                        Fault::DeadGateway => Outcome::Timeout {
                            hold: timeout,
                            reply: Some(vec![function | 0x80, 0x0B]),
                        },
                        Fault::Exception(code) => Outcome::Reply {
                            pdu: vec![function | 0x80, *code],
                            extra: Duration::ZERO,
                        },
                        Fault::Slow(delay) => Outcome::Reply {
                            pdu: execute(unit, &request.pdu),
                            extra: *delay,
                        },
                        _ => Outcome::Reply {
                            pdu: execute(unit, &request.pdu),
                            extra: Duration::ZERO,
                        },
                    };
                    (outcome, fault, line)
                }
            }
        };
        let (pdu, hold) = match outcome {
            Outcome::Reply { pdu, extra } => {
                let frames = line.map_or(Duration::ZERO, |line| {
                    rtu_time(&line, request.pdu.len(), pdu.len())
                });
                (Some(pdu), frames + extra)
            }
            Outcome::Timeout { hold, reply } => (reply, hold),
        };
        if !hold.is_zero() {
            // Simulated line occupation: the bus stays taken for the time the RTU frames
            // (or the converter's wait for a silent unit) would take.
            tokio::time::sleep(hold).await;
        }
        drop(guard);
        let Some(mut pdu) = pdu else { continue };
        let mut transaction = request.transaction;
        let mut unit = request.unit;
        match fault {
            Fault::ShortReply if matches!(pdu.first(), Some(3 | 4)) && pdu.len() >= 4 => {
                pdu.truncate(pdu.len() - 2);
                pdu[1] = pdu[1].saturating_sub(2);
            }
            Fault::WrongUnit => unit = unit.wrapping_add(1),
            Fault::WrongTransaction => transaction = transaction.wrapping_add(1),
            _ => {}
        }
        if stream
            .write_all(&frame(transaction, unit, &pdu))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// RTU line time of an exchange whose TCP PDUs have these lengths: RTU adds the address
/// byte and a 2-byte CRC to each, so reads cost exactly `bus::request_time`.
fn rtu_time(line: &LineSettings, request_pdu: usize, response_pdu: usize) -> Duration {
    bus::frames_time(line, (request_pdu + 3, response_pdu + 3))
}

fn be16(pdu: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*pdu.get(at)?, *pdu.get(at + 1)?]))
}

/// Executes one request PDU on a unit; returns the response PDU (possibly an exception).
fn execute(unit: &mut SimUnit, pdu: &[u8]) -> Vec<u8> {
    let function = pdu.first().copied().unwrap_or(0);
    let exception = |code: u8| vec![function | 0x80, code];
    match function {
        3 | 4 => {
            let (Some(start), Some(count), 5) = (be16(pdu, 1), be16(pdu, 3), pdu.len()) else {
                return exception(0x03);
            };
            if !(1..=125).contains(&count) {
                return exception(0x03);
            }
            let last = u32::from(start) + u32::from(count) - 1;
            if let Some(code) = configured_exception(unit, function, start, last) {
                return exception(code);
            }
            let readable = unit.readable.iter().any(|(f, a, b)| {
                *f == function && u32::from(*a) <= u32::from(start) && last <= u32::from(*b)
            });
            if !readable {
                return exception(0x02);
            }
            let image = if function == 3 {
                &unit.holding
            } else {
                &unit.input
            };
            let words = read_image(image, start, count);
            let mut out = vec![function, (2 * count) as u8];
            for w in words {
                out.extend_from_slice(&w.to_be_bytes());
            }
            out
        }
        6 => {
            let (Some(address), Some(value), 5) = (be16(pdu, 1), be16(pdu, 3), pdu.len()) else {
                return exception(0x03);
            };
            if let Some(code) = configured_exception(unit, 6, address, u32::from(address)) {
                return exception(code);
            }
            match write(unit, address, &[value]) {
                Ok(()) => pdu.to_vec(),
                Err(code) => exception(code),
            }
        }
        16 => {
            let (Some(address), Some(count), Some(&bytes)) =
                (be16(pdu, 1), be16(pdu, 3), pdu.get(5))
            else {
                return exception(0x03);
            };
            if !(1..=123).contains(&count)
                || usize::from(bytes) != 2 * usize::from(count)
                || pdu.len() != 6 + usize::from(bytes)
            {
                return exception(0x03);
            }
            let last = u32::from(address) + u32::from(count) - 1;
            if let Some(code) = configured_exception(unit, 16, address, last) {
                return exception(code);
            }
            let values: Vec<u16> = (0..usize::from(count))
                .filter_map(|n| be16(pdu, 6 + 2 * n))
                .collect();
            match write(unit, address, &values) {
                Ok(()) => pdu[..5].to_vec(),
                Err(code) => exception(code),
            }
        }
        _ => exception(0x01),
    }
}

fn configured_exception(unit: &SimUnit, function: u8, first: u16, last: u32) -> Option<u8> {
    unit.exceptions
        .iter()
        .find(|(f, a, b, _)| *f == function && u32::from(*a) <= last && first <= *b)
        .map(|(_, _, _, code)| *code)
}

/// Stores a write after checking every register is writable with that value.
fn write(unit: &mut SimUnit, address: u16, values: &[u16]) -> Result<(), u8> {
    for (n, value) in values.iter().enumerate() {
        let a = address.checked_add(n as u16).ok_or(0x02)?;
        let range = unit
            .writable
            .iter()
            .find(|(first, last, _)| *first <= a && a <= *last)
            .ok_or(0x02u8)?;
        if !range.2.is_empty() && !range.2.contains(value) {
            return Err(0x03);
        }
    }
    store(&mut unit.holding, address, values);
    for effect in unit.effects.clone() {
        match effect {
            WriteEffect::Mirror { holding, input } => {
                if let Some(v) = unit.holding.get(&holding).copied() {
                    if written(address, values.len(), holding) {
                        unit.input.insert(input, v);
                    }
                }
            }
            WriteEffect::ResetBits {
                holding,
                bit,
                start,
                count,
            } => {
                if written(address, values.len(), holding) {
                    let v = unit.holding.get(&holding).copied().unwrap_or(0);
                    if v & bit != 0 {
                        store(&mut unit.holding, start, &vec![0; usize::from(count)]);
                    }
                    unit.holding.insert(holding, 0);
                }
            }
        }
    }
    Ok(())
}

fn written(address: u16, len: usize, register: u16) -> bool {
    register >= address && usize::from(register - address) < len
}
