//! The converter's Modbus TCP side: MBAP framing, one task per connection, and the shared
//! bus every request queues for, held for the RTU frame time (or a silent unit's timeout).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use headend_modbus_map::bus::{self, LineSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::unit::execute;
use super::{Fault, State};

pub(super) async fn accept_loop(
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
