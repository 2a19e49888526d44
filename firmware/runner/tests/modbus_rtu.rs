//! Modbus RTU on the RS485 bus without hardware: a pseudo-terminal pair stands in for the
//! serial line. The runner opens the terminal's slave end by its path, as it opens
//! `/dev/ttyUSB0`; on the master end answers either tokio-modbus's RTU server (another
//! implementation of the protocol) serving Iskra meters and a Bicom relay, or a hand-written
//! responder that sends the bad replies a real bus produces.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sg_gateway::config::Config;
use sg_gateway::modbus::{ModbusDevice, ReadError, Request, RequestError};
use sg_gateway::rtu::{Line, Parity, RtuBus, SharedBus};
use sg_gateway::source::Direction;
use sg_gateway::RunningGateway;
use sg_gateway_core::{Action, Link, MeterSource, Slot};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::{timeout, Instant};
use tokio_modbus::server::rtu::Server;
use tokio_modbus::{ExceptionCode, SlaveRequest};
use tokio_serial::{SerialPort as _, SerialStream};

const WAIT: Duration = Duration::from_secs(30);

/// A pseudo-terminal: the master end, the slave end (kept open so that the master does not
/// see a hang-up between the runner's opens), and the slave's path.
fn pty() -> (SerialStream, SerialStream, String) {
    let (master, slave) = SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the slave end has a path");
    (master, slave, path)
}

/// The bus on the slave end, opened by path like a real port.
fn bus_at(path: &str) -> SharedBus {
    let line = Line {
        path: path.into(),
        baud: 19_200,
        parity: Parity::Even,
        stop_bits: 1,
        data_bits: 8,
    };
    RtuBus::serial(line, Duration::from_millis(2)).shared()
}

/// Input registers of an Iskra meter (measurement block 30105..30181, energy block
/// 30401..30413) and of a Bicom relay (state in 30101).
fn meter_registers() -> HashMap<u16, u16> {
    let mut input: HashMap<u16, u16> = (105..=181).chain(401..=413).map(|r| (r, 0)).collect();
    let mut pair = |register: u16, hi: u16, lo: u16| {
        input.insert(register - 30_000, hi);
        input.insert(register - 30_000 + 1, lo);
    };
    pair(30_105, 0xFE00, 4_999); // 49.99 Hz
    pair(30_107, 0xFD03, 0x80C4); // U1 229.572 V
    pair(30_109, 0xFF00, 2_306); // U2 230.6 V
    pair(30_126, 0xFD00, 5_021); // I1 5.021 A
    pair(30_140, 0x00FF, 0xF4D5); // P total -2859 W (T6)
    pair(30_164, 0x00FF, 8_984); // PF total 0.8984 capacitive
    pair(30_406, 0x0003, 0x9918); // counter 1: 235800 …
    pair(30_408, 0, 12); // counter 2: 12 …
    input.insert(401, (-3_i16) as u16); // … × 10⁻³: 235.8 Wh
    input.insert(402, 1); // … × 10: 120 Wh
    input.insert(405, 2); // tariff 2
    input.insert(181, 3_070); // 30.7 °C
    input
}

/// Where the test server keeps holding register `n`: beside the input registers, at 40000 + n.
const HOLDING: u16 = 40_000;

/// An Iskra meter's counter configuration (holding 40151, 40421.. as pyiskra reads them):
/// counter 1 Wh import, 2 Wh export, 3 VAh import, 4 varh export; not wired in reverse.
fn with_counter_config(mut registers: HashMap<u16, u16>) -> HashMap<u16, u16> {
    registers.insert(HOLDING + 151, 0);
    for r in 421..=452 {
        registers.insert(HOLDING + r, 0);
    }
    for (k, (unit, quadrants)) in [(1, 6), (1, 9), (3, 12), (2, 3)].into_iter().enumerate() {
        registers.insert(HOLDING + 421 + 10 * k as u16, unit);
        registers.insert(HOLDING + 422 + 10 * k as u16, quadrants);
    }
    registers
}

fn relay_registers() -> HashMap<u16, u16> {
    HashMap::from([(101, 0)])
}

/// Units on the simulated bus: unit id → input registers. A unit that is not there stays
/// silent; a register that is not there is answered with exception 02.
#[derive(Clone, Default)]
struct Units(Arc<Mutex<HashMap<u8, HashMap<u16, u16>>>>);

impl Units {
    fn with(self, unit: u8, registers: HashMap<u16, u16>) -> Self {
        self.0.lock().unwrap().insert(unit, registers);
        self
    }

    fn input(&self, unit: u8, register: u16) -> Option<u16> {
        self.0.lock().unwrap().get(&unit)?.get(&register).copied()
    }
}

impl tokio_modbus::server::Service for Units {
    type Request = SlaveRequest<'static>;
    type Response = Option<tokio_modbus::Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut units = self.0.lock().unwrap();
        let Some(input) = units.get_mut(&req.slave) else {
            return ready(Ok(None));
        };
        ready(match req.request {
            tokio_modbus::Request::ReadInputRegisters(start, count) => (start..start + count)
                .map(|r| input.get(&r).copied())
                .collect::<Option<Vec<u16>>>()
                .map(|words| Some(tokio_modbus::Response::ReadInputRegisters(words)))
                .ok_or(ExceptionCode::IllegalDataAddress),
            tokio_modbus::Request::ReadHoldingRegisters(start, count) => (start..start + count)
                .map(|r| input.get(&(HOLDING + r)).copied())
                .collect::<Option<Vec<u16>>>()
                .map(|words| Some(tokio_modbus::Response::ReadHoldingRegisters(words)))
                .ok_or(ExceptionCode::IllegalDataAddress),
            // The Bicom: holding register 40141 switches, input register 30101 tells.
            tokio_modbus::Request::WriteSingleRegister(141, value) if input.contains_key(&101) => {
                input.insert(101, value);
                Ok(Some(tokio_modbus::Response::WriteSingleRegister(
                    141, value,
                )))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// tokio-modbus's RTU server on `master`, until the test ends.
fn serve(master: SerialStream, units: Units) {
    tokio::spawn(async move {
        let _ = Server::new(master).serve_forever(units).await;
    });
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[tokio::test]
async fn meters_and_relays_are_read_and_switched_over_rtu() {
    let (master, _slave, path) = pty();
    let units = Units::default()
        .with(11, meter_registers())
        .with(40, relay_registers());
    serve(master, units.clone());
    let bus = bus_at(&path);
    let timeout = Duration::from_millis(500);

    let mut meter = ModbusDevice::rtu(bus.clone(), 11, timeout);
    let m = meter.read_measurements().await.unwrap();
    assert!(close(m.frequency_hz, 49.99), "{}", m.frequency_hz);
    assert!(close(m.u[0], 229.572) && close(m.u[1], 230.6));
    assert!(close(m.i[0], 5.021));
    assert!(close(m.p_total, -2_859.0));
    assert!(m.pf_total.capacitive && close(m.pf_total.value, 0.8984));
    assert!(close(m.temperature_c, 30.7));
    let energy = meter.read_energy().await.unwrap();
    assert!(close(energy.counters[0], 235.8) && close(energy.counters[1], 120.0));
    assert_eq!(energy.tariff, 2);
    assert!(
        meter.to_string().contains(&format!("unit 11 on {path}")),
        "{meter}"
    );

    // A meter without counter configuration registers answers with an exception.
    let error = meter.read_counter_config().await.unwrap_err();
    assert!(
        matches!(error.error, ReadError::Exception(_)),
        "{error}: {:?}",
        error.error
    );
    assert!(
        error
            .to_string()
            .contains("holding registers 40151..40151 (function 3)"),
        "{error}"
    );

    let mut relay = ModbusDevice::rtu(bus.clone(), 40, timeout);
    assert!(!relay.read_relay().await.unwrap());
    relay.switch_relay(true).await.unwrap();
    assert_eq!(
        units.input(40, 101),
        Some(1),
        "holding register 40141 written"
    );
    assert!(relay.read_relay().await.unwrap());
    relay.switch_relay(false).await.unwrap();
    assert!(!relay.read_relay().await.unwrap());
}

#[tokio::test]
async fn an_exception_reply_is_a_clear_error() {
    let (master, _slave, path) = pty();
    // A meter without the energy block: reading it is answered with exception 02.
    let mut registers = meter_registers();
    registers.retain(|&r, _| r < 401);
    serve(master, Units::default().with(13, registers));
    let mut meter = ModbusDevice::rtu(bus_at(&path), 13, Duration::from_millis(500));

    assert!(meter.read_measurements().await.is_ok());
    let error = meter.read_energy().await.unwrap_err();
    assert_eq!(
        error.request,
        Request::ReadInput {
            start: 401,
            count: 13
        }
    );
    assert!(
        matches!(
            error.error,
            ReadError::Exception(ExceptionCode::IllegalDataAddress)
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "input registers 30401..30413 (function 4): Modbus exception 02 (Illegal data address)"
    );
    // The bus goes on.
    assert!(meter.read_measurements().await.is_ok());
}

#[tokio::test]
async fn a_silent_unit_times_out_while_the_other_unit_is_still_read() {
    let (master, _slave, path) = pty();
    serve(master, Units::default().with(11, meter_registers()));
    let bus = bus_at(&path);
    let timeout = Duration::from_millis(200);
    let mut good = ModbusDevice::rtu(bus.clone(), 11, timeout);
    let mut silent = ModbusDevice::rtu(bus, 12, timeout);

    let window = Duration::from_millis(1_500);
    let reader = tokio::spawn(async move {
        let started = Instant::now();
        let (mut reads, mut slowest) = (0, Duration::ZERO);
        while started.elapsed() < window {
            let asked = Instant::now();
            let m = good.read_measurements().await.expect("unit 11 answers");
            slowest = slowest.max(asked.elapsed());
            assert!(close(m.frequency_hz, 49.99));
            reads += 1;
        }
        (reads, slowest)
    });
    let started = Instant::now();
    let mut timeouts = 0;
    while started.elapsed() < window {
        let asked = Instant::now();
        let error = silent.read_measurements().await.unwrap_err();
        let took = asked.elapsed();
        assert!(
            matches!(error.error, ReadError::Timeout(t) if t == timeout),
            "{error}"
        );
        // Its own timeout, plus at most one of unit 11's requests ahead of it on the bus.
        assert!(took >= timeout, "{took:?}");
        assert!(took < timeout * 3, "{took:?}");
        timeouts += 1;
    }
    let (reads, slowest) = reader.await.unwrap();
    assert!(timeouts >= 3, "{timeouts} timeouts");
    // The two take turns on the bus: unit 11 waits for one timeout of unit 12 at most.
    assert!(
        reads + 1 >= timeouts,
        "{reads} reads of unit 11 beside {timeouts} timeouts of unit 12"
    );
    assert!(slowest < timeout * 3, "a read of unit 11 took {slowest:?}");
}

/// A hand-written RTU responder on `master`: answers function 4 with words equal to their
/// register number, misbehaving for some units.
///
/// - unit 5: the CRC is corrupted;
/// - unit 6: the reply comes from unit 7;
/// - unit 8: the reply stops after 4 bytes;
/// - unit 9: one register fewer than asked;
/// - unit 10: three bytes of line noise before a good reply.
fn respond_badly(mut master: SerialStream) {
    /// CRC-16/MODBUS, written apart from the runner's to check it.
    fn crc(bytes: &[u8]) -> [u8; 2] {
        let mut crc: u16 = 0xFFFF;
        for byte in bytes {
            crc ^= u16::from(*byte);
            for _ in 0..8 {
                let lsb = crc & 1;
                crc >>= 1;
                if lsb != 0 {
                    crc ^= 0xA001;
                }
            }
        }
        crc.to_le_bytes()
    }
    assert_eq!(crc(b"123456789"), 0x4B37_u16.to_le_bytes());

    tokio::spawn(async move {
        let mut request = [0_u8; 8];
        while master.read_exact(&mut request).await.is_ok() {
            assert_eq!(crc(&request[..6]), [request[6], request[7]], "request CRC");
            let unit = request[0];
            assert_eq!(request[1], 4, "function 4");
            let start = u16::from_be_bytes([request[2], request[3]]);
            let mut count = u16::from_be_bytes([request[4], request[5]]);
            if unit == 9 {
                count -= 1;
            }
            let mut reply = vec![if unit == 6 { 7 } else { unit }, 4, (count * 2) as u8];
            for register in start..start + count {
                reply.extend_from_slice(&register.to_be_bytes());
            }
            let check = crc(&reply);
            reply.extend_from_slice(&check);
            match unit {
                5 => {
                    let at = reply.len() - 2;
                    reply[at] ^= 0x55;
                }
                8 => reply.truncate(4),
                10 => reply.splice(0..0, [0x00, 0xFF, 0x13]).for_each(drop),
                _ => {}
            }
            if master.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
}

async fn read_state(bus: &SharedBus, unit: u8) -> Result<bool, RequestError> {
    let mut device = ModbusDevice::rtu(bus.clone(), unit, Duration::from_millis(200));
    device.read_relay().await
}

#[tokio::test]
async fn bad_replies_are_rejected_and_the_bus_recovers() {
    let (master, _slave, path) = pty();
    respond_badly(master);
    let bus = bus_at(&path);
    // Unit 1 answers properly: input register 101 reads 101 (a relay that is on).
    assert!(read_state(&bus, 1).await.unwrap());

    let error = read_state(&bus, 5).await.unwrap_err();
    assert!(matches!(error.error, ReadError::Crc { .. }), "{error}");
    assert!(error
        .to_string()
        .starts_with("input register 30101 (function 4): CRC error"));
    assert!(read_state(&bus, 1).await.unwrap(), "after a CRC error");

    let error = read_state(&bus, 6).await.unwrap_err();
    assert!(
        matches!(
            error.error,
            ReadError::WrongUnit {
                expected: 6,
                got: 7
            }
        ),
        "{error}"
    );
    assert!(read_state(&bus, 1).await.unwrap(), "after a wrong unit");

    let error = read_state(&bus, 8).await.unwrap_err();
    assert!(
        matches!(
            error.error,
            ReadError::Truncated {
                got: 4,
                expected: Some(7)
            }
        ),
        "{error}"
    );
    assert!(
        read_state(&bus, 1).await.unwrap(),
        "after a truncated reply"
    );

    let error = read_state(&bus, 9).await.unwrap_err();
    assert!(
        matches!(
            error.error,
            ReadError::ShortReply {
                expected: 1,
                got: 0
            }
        ),
        "{error}"
    );

    // Line noise before the reply: the frame does not start where it should, so the reply
    // is refused (as garbled, never as data).
    let error = read_state(&bus, 10).await.unwrap_err();
    assert!(
        matches!(
            error.error,
            ReadError::UnexpectedFunction { .. }
                | ReadError::Crc { .. }
                | ReadError::WrongUnit { .. }
        ),
        "{error}"
    );
    assert!(read_state(&bus, 1).await.unwrap(), "after line noise");
}

/// The whole gateway on the bus: readings reach the core, a silent meter gets the SG's error
/// line on `P/error`, and a relay command switches the Bicom on the bus.
#[tokio::test]
async fn the_gateway_reads_the_bus_and_reports_a_silent_meter() {
    let (master, _slave, path) = pty();
    let units = Units::default()
        .with(11, with_counter_config(meter_registers()))
        .with(40, relay_registers());
    serve(master, units.clone());
    // Link 1 points at a closed port: pushes stay queued, where the test reads them.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        serial = "SGR000001"
        first_push_delay_s = 0
        state_dir = "{state}"

        [link1]
        host = "127.0.0.1"
        port = {port}

        [rs485]
        path = "{path}"
        baud = 19200
        parity = "even"
        timeout_ms = 200

        [[devices]]
        slot = {{ rs485 = 1 }}
        type = "meter"
        model = "WM3M4C"
        phases = 3
        modbus_addr = 11
        push_interval_s = 1
        source = {{ type = "modbus_rtu" }}

        [[devices]]
        slot = {{ rs485 = 2 }}
        type = "relay"
        model = "Bicom"
        modbus_addr = 40
        push_interval_s = 1
        source = {{ type = "modbus_rtu" }}

        [[devices]]
        slot = {{ rs485 = 3 }}
        type = "meter"
        model = "WM1-6"
        phases = 1
        modbus_addr = 12
        push_interval_s = 1
        source = {{ type = "modbus_rtu", timeout_ms = 150 }}
        "#,
        state = state.path().display(),
        port = closed.port(),
    );
    let resolved = Config::parse(&text).unwrap().resolve().unwrap();
    assert!(resolved.rs485.is_some());
    let gateway = RunningGateway::start(resolved, 1).await.unwrap();

    let queued = |gateway: &RunningGateway| -> Vec<(String, String)> {
        gateway.with_core(|core| {
            core.queue(Link::One)
                .iter()
                .map(|m| (m.topic.clone(), m.payload.clone()))
                .collect()
        })
    };
    timeout(WAIT, async {
        loop {
            let messages = queued(&gateway);
            let error_line = messages.iter().any(|(topic, payload)| {
                topic == "sg/SGR000001/pub/error"
                    && payload == "Error: RS485 device:3 Energy meter not responding. Addr:12"
            });
            let measured = messages
                .iter()
                .any(|(topic, _)| topic == "sg/SGR000001/pub/measurements/rs485/1");
            if error_line && measured {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a reading of meter 11 and the error line of meter 12");
    let frequency = gateway.with_core(|core| {
        core.source_mut()
            .read_measurements(Slot::Rs485(1))
            .map(|m| m.frequency_hz)
    });
    assert!(close(frequency.unwrap(), 49.99));
    // The counters' units and directions come from the meter's configuration registers.
    let (units_read, directions) = gateway.with_core(|core| {
        let counters = core.source_mut().read_counters(Slot::Rs485(1)).unwrap();
        let units: Vec<_> = counters.iter().map(|c| c.unit.symbol()).collect();
        (units, core.source().counter_directions(Slot::Rs485(1)))
    });
    assert_eq!(units_read, ["Wh", "Wh", "VAh", "varh"]);
    assert_eq!(
        directions,
        [
            ("counter1".to_owned(), Direction::Import),
            ("counter2".to_owned(), Direction::Export),
            ("counter3".to_owned(), Direction::Import),
            ("counter4".to_owned(), Direction::Export),
        ]
        .into()
    );
    assert!(gateway.with_core(|core| core.source_mut().read_measurements(Slot::Rs485(3)).is_err()));

    gateway.act(Action::SwitchRelay {
        slot: Slot::Rs485(2),
        on: true,
    });
    timeout(WAIT, async {
        while units.input(40, 101) != Some(1)
            || gateway.with_core(|core| core.source_mut().relay_state(Slot::Rs485(2))) != Some(true)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the Bicom switched on the bus and read back");
    gateway.stop().await.unwrap();
}
