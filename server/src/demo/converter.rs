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
//!
//! `unit` holds a unit's registers and executes its requests; `server` the TCP side.

mod server;
mod unit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headend_modbus_map::{CounterValue, Decoded, MapLibrary, RegisterMap};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use server::accept_loop;
use unit::{read_image, store, write_registers};
pub use unit::{unit_from_map, SimUnit, WriteEffect};

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
