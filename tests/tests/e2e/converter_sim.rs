//! The simulated RS485/IP converter, checked with tokio-modbus's own TCP client: the spec's
//! registers and exceptions, writes with their effects, faults, queuing and line time.

use std::time::{Duration, Instant};

use headend_e2e::converter::{
    spec_values, unit_from_map, Fault, SimConverter, SimOptions, SimUnit, SPEC_046_77_UNIT,
    SPEC_BICOM_UNIT, SPEC_EMDX3_UNIT, SPEC_ISKRA_UNIT,
};
use headend_modbus_map::bus::{self, LineSettings};
use headend_modbus_map::{BlockRead, Function, MapLibrary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::client::{tcp, Client, Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

async fn client(sim: &SimConverter, unit: u8) -> Context {
    tcp::connect_slave(sim.addr(), Slave(unit)).await.unwrap()
}

async fn read_blocks(ctx: &mut Context, plan: &[BlockRead]) -> Vec<(BlockRead, Vec<u16>)> {
    let mut out = Vec::new();
    for block in plan {
        let words = match block.function {
            Function::ReadHolding => ctx.read_holding_registers(block.start, block.count).await,
            Function::ReadInput => ctx.read_input_registers(block.start, block.count).await,
        }
        .unwrap()
        .unwrap();
        out.push((*block, words));
    }
    out
}

#[tokio::test]
async fn spec_units_decode_to_their_values() {
    let sim = SimConverter::spec(SimOptions::default());
    let library = MapLibrary::builtin();
    for (unit, model) in [
        (SPEC_EMDX3_UNIT, "legrand-emdx3"),
        (SPEC_046_77_UNIT, "legrand-046-77"),
        (SPEC_ISKRA_UNIT, "iskra-meter"),
        (SPEC_BICOM_UNIT, "iskra-bicom"),
    ] {
        let map = library.get(model).unwrap();
        let mut ctx = client(&sim, unit).await;
        let decoded = map.decode(&read_blocks(&mut ctx, &map.plan()).await);
        let want = spec_values(unit);
        assert!(decoded.issues.is_empty(), "{model}: {:?}", decoded.issues);
        assert_eq!(decoded.measurements, want.measurements, "{model}");
        assert_eq!(decoded.counters, want.counters, "{model}");
        assert_eq!(decoded.relay_state, want.relay_state, "{model}");
        assert_eq!(decoded.tariff, want.tariff, "{model}");
        assert_eq!(decoded.info, want.info, "{model}");
        assert_eq!(sim.requests(unit), map.plan().len() as u64);
    }
}

#[tokio::test]
async fn spec_bytes_and_exceptions() {
    let sim = SimConverter::spec(SimOptions::default());
    let mut emdx3 = client(&sim, SPEC_EMDX3_UNIT).await;
    // The CT wired backwards: FF FF FF ED.
    assert_eq!(
        emdx3
            .read_holding_registers(0xC786, 2)
            .await
            .unwrap()
            .unwrap(),
        [0xFFFF, 0xFFED]
    );
    // Reading 0x4000 from address 1 returns 83 01.
    assert_eq!(
        emdx3.read_holding_registers(0x4000, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    // Outside the readable ranges, or bridging the gap between them: 02.
    assert_eq!(
        emdx3.read_holding_registers(0xC790, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        emdx3.read_holding_registers(0xC786, 125).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        emdx3.read_input_registers(0xC786, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // A read of more than 125 registers is not a valid request: 03.
    assert_eq!(
        emdx3.read_holding_registers(0xC786, 126).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    // Unsupported function (read coils): 01.
    assert_eq!(
        emdx3.read_coils(0, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    // Writes to a register that is not writable: 02.
    assert_eq!(
        emdx3.write_single_register(0xC786, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );

    let mut meter = client(&sim, SPEC_046_77_UNIT).await;
    assert_eq!(
        meter
            .read_holding_registers(0x2000, 2)
            .await
            .unwrap()
            .unwrap(),
        [0x0003, 0x9918]
    );
    assert_eq!(
        meter
            .read_holding_registers(0x2007, 1)
            .await
            .unwrap()
            .unwrap(),
        [0x0052]
    );
    assert_eq!(
        meter
            .read_holding_registers(0x200C, 2)
            .await
            .unwrap()
            .unwrap(),
        [0x0000, 0x0002]
    );
}

#[tokio::test]
async fn counter_reset_and_relay_writes_take_effect() {
    let sim = SimConverter::spec(SimOptions::default());
    let library = MapLibrary::builtin();
    let meter_map = library.get("legrand-046-77").unwrap();
    let mut meter = client(&sim, SPEC_046_77_UNIT).await;
    let Some(headend_modbus_map::Write::Multiple { address, values }) =
        meter_map.counter_reset("counter1")
    else {
        panic!("the 0 046 77 partial energy resets with function 16");
    };
    meter
        .write_multiple_registers(address, &values)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        meter
            .read_holding_registers(0x200C, 2)
            .await
            .unwrap()
            .unwrap(),
        [0, 0]
    );
    // The total energy is untouched.
    let total = sim.holding(SPEC_046_77_UNIT, 0x2008, 2);
    assert_ne!(total, [0, 0]);

    let bicom_map = library.get("iskra-bicom").unwrap();
    let mut bicom = client(&sim, SPEC_BICOM_UNIT).await;
    let state = bicom_map.relay_state_read().unwrap();
    for on in [true, false, true] {
        let Some(headend_modbus_map::Write::Single { address, value }) = bicom_map.relay_write(on)
        else {
            panic!("the Bicom switches with function 6");
        };
        bicom
            .write_single_register(address, value)
            .await
            .unwrap()
            .unwrap();
        let words = bicom
            .read_input_registers(state.start, state.count)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bicom_map.decode(&[(state, words)]).relay_state, Some(on));
    }
    // A value the relay does not know: 03, state unchanged.
    assert_eq!(
        bicom.write_single_register(141, 7).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(sim.input(SPEC_BICOM_UNIT, 101, 1), [1]);
}

#[tokio::test]
async fn faults_are_what_they_say() {
    let sim = SimConverter::spec(SimOptions {
        converter_timeout: Duration::from_millis(100),
        ..SimOptions::default()
    });
    let mut ctx = client(&sim, SPEC_EMDX3_UNIT).await;
    for (code, expected) in [
        (0x01, ExceptionCode::IllegalFunction),
        (0x02, ExceptionCode::IllegalDataAddress),
        (0x03, ExceptionCode::IllegalDataValue),
        (0x04, ExceptionCode::ServerDeviceFailure),
        (0x0A, ExceptionCode::GatewayPathUnavailable),
    ] {
        sim.set_fault(SPEC_EMDX3_UNIT, Fault::Exception(code));
        assert_eq!(
            ctx.read_holding_registers(0xC786, 2).await.unwrap(),
            Err(expected)
        );
    }
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::DeadGateway);
    assert_eq!(
        ctx.read_holding_registers(0xC786, 2).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    // A unit nobody added answers 0B too.
    let mut absent = client(&sim, 99).await;
    assert_eq!(
        absent.read_holding_registers(0, 1).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::ShortReply);
    // Through `Client::call`: `Reader::read_holding_registers` debug-asserts the length.
    let short = ctx
        .call(Request::ReadHoldingRegisters(0xC786, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(short, Response::ReadHoldingRegisters(vec![0xFFFF]));
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::WrongUnit);
    assert!(ctx.read_holding_registers(0xC786, 2).await.is_err());
    let mut ctx = client(&sim, SPEC_EMDX3_UNIT).await;
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::WrongTransaction);
    assert!(ctx.read_holding_registers(0xC786, 2).await.is_err());
    let mut ctx = client(&sim, SPEC_EMDX3_UNIT).await;
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::Dead);
    let silent = tokio::time::timeout(
        Duration::from_millis(500),
        ctx.read_holding_registers(0xC786, 2),
    )
    .await;
    assert!(silent.is_err(), "a dead unit never answers: {silent:?}");
    sim.set_fault(SPEC_EMDX3_UNIT, Fault::None);
    let mut ctx = client(&sim, SPEC_EMDX3_UNIT).await;
    assert_eq!(
        ctx.read_holding_registers(0xC786, 2)
            .await
            .unwrap()
            .unwrap(),
        [0xFFFF, 0xFFED]
    );
    // Every request above reached the unit (the two unanswered ones included).
    assert_eq!(sim.requests(SPEC_EMDX3_UNIT), 11);
    assert_eq!(sim.requests(99), 0);
}

#[tokio::test]
async fn malformed_frames_close_the_connection_without_harm() {
    let sim = SimConverter::spec(SimOptions::default());
    // Protocol id 1 and an absurd length: the converter drops the connection.
    let mut raw = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    raw.write_all(&[0, 1, 0, 1, 0x10, 0x00, 1, 3])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    // A truncated read request (function 3 without its count) gets 03; others still served.
    let mut raw = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    raw.write_all(&[0, 7, 0, 0, 0, 4, 1, 3, 0xC7, 0x86])
        .await
        .unwrap();
    let mut reply = [0u8; 9];
    raw.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [0, 7, 0, 0, 0, 3, 1, 0x83, 0x03]);
    let mut ctx = client(&sim, SPEC_EMDX3_UNIT).await;
    assert!(ctx.read_holding_registers(0xC786, 2).await.unwrap().is_ok());
}

#[tokio::test]
async fn concurrent_requests_queue_on_the_bus_at_line_speed() {
    // 9600 Bd keeps the line time well above scheduling noise.
    let baud = 9_600;
    let sim = SimConverter::spec(SimOptions {
        baud: Some(baud),
        ..SimOptions::default()
    });
    let library = MapLibrary::builtin();
    let map = library.get("legrand-emdx3").unwrap();
    let plan = map.plan();
    let line = LineSettings::rtu_8n1(baud);
    let clients = 4;
    let limit = bus::cycle_limit(&line, &vec![plan.clone(); clients]);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = sim.addr();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut ctx = tcp::connect_slave(addr, Slave(SPEC_EMDX3_UNIT))
                .await
                .unwrap();
            read_blocks(&mut ctx, &plan).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().len(), plan.len());
    }
    let elapsed = started.elapsed();
    assert_eq!(sim.requests(SPEC_EMDX3_UNIT), (clients * plan.len()) as u64);
    // The bus serialises the exchanges: at least the computed limit, not parallel time.
    assert!(
        elapsed >= limit,
        "{clients} clients took {elapsed:?}, below the line limit {limit:?}"
    );
    eprintln!("{clients} x emdx3 at {baud} Bd: measured {elapsed:?}, limit {limit:?}");
}

#[tokio::test]
async fn custom_units_and_runtime_changes() {
    let sim = SimConverter::start(SimOptions::default());
    sim.add_unit(
        3,
        SimUnit::new()
            .readable(Function::ReadInput, 0, 9)
            .input(0, &[1, 2, 3])
            .writable(5, 6, &[]),
    );
    let mut ctx = client(&sim, 3).await;
    assert_eq!(
        ctx.read_input_registers(0, 4).await.unwrap().unwrap(),
        [1, 2, 3, 0]
    );
    sim.set_input(3, 1, &[42]);
    assert_eq!(ctx.read_input_registers(1, 1).await.unwrap().unwrap(), [42]);
    ctx.write_multiple_registers(5, &[7, 8])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim.holding(3, 5, 2), [7, 8]);
    assert_eq!(
        ctx.write_multiple_registers(6, &[1, 2]).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(sim.holding(3, 6, 1), [8]);
    sim.set_fault(3, Fault::Slow(Duration::from_millis(50)));
    let t = Instant::now();
    assert!(ctx.read_input_registers(0, 1).await.unwrap().is_ok());
    assert!(t.elapsed() >= Duration::from_millis(50));
    sim.remove_unit(3);
    assert_eq!(sim.requests(3), 0);
}

/// Issue 7's figure at the converter level: 32 EMDX3 on one bus at 19 200 Bd, polled one
/// request after the other by a plain client, against `bus::cycle_limit` of their plans.
#[tokio::test]
async fn thirty_two_meters_at_19200_baud_take_the_computed_line_time() {
    let baud = 19_200;
    let sim = SimConverter::start(SimOptions {
        baud: Some(baud),
        ..SimOptions::default()
    });
    let library = MapLibrary::builtin();
    let map = library.get("legrand-emdx3").unwrap();
    let values = spec_values(SPEC_EMDX3_UNIT);
    let units: Vec<u8> = (1..=32).collect();
    for unit in &units {
        sim.add_unit(*unit, unit_from_map(map, &values));
    }
    let plan = map.plan();
    let limit = bus::cycle_limit(
        &LineSettings::rtu_8n1(baud),
        &vec![plan.clone(); units.len()],
    );
    let mut ctx = client(&sim, 1).await;
    let started = Instant::now();
    for unit in &units {
        ctx.set_slave(Slave(*unit));
        let decoded = map.decode(&read_blocks(&mut ctx, &plan).await);
        assert_eq!(decoded.measurements, values.measurements);
    }
    let cycle = started.elapsed();
    eprintln!(
        "32 x legrand-emdx3 at {baud} Bd: cycle limit {:.1} ms, measured {:.1} ms (ratio {:.3})",
        limit.as_secs_f64() * 1e3,
        cycle.as_secs_f64() * 1e3,
        cycle.as_secs_f64() / limit.as_secs_f64()
    );
    assert!(cycle >= limit, "{cycle:?} < {limit:?}");
    // Loose: scheduling on a busy machine adds to every exchange, never subtracts.
    assert!(cycle < limit * 3, "{cycle:?} vs {limit:?}");
    for unit in &units {
        assert_eq!(sim.requests(*unit), plan.len() as u64);
    }
}
