//! One request on the bus and what can go wrong with it: the gap before it, the timeout, the
//! retries, and the reading of the reply (an exception, a reply that is not the answer, a
//! link that failed).

use std::borrow::Cow;
use std::time::Duration;

use headend_modbus_map::{BlockRead, Function, Write};
use tokio::time::Instant;
use tokio_modbus::client::Client;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use super::Bus;

/// What a Modbus exception code means, for people.
pub fn exception_meaning(code: u8) -> &'static str {
    match code {
        0x01 => "function not supported",
        0x02 => "register address out of range",
        0x03 => "value not allowed",
        0x04 => "execution error in the device",
        0x05 => "acknowledged, still processing",
        0x06 => "device busy",
        0x0A => "gateway path unavailable (the converter has no route to this unit)",
        0x0B => "gateway target device failed to respond (no answer on the RS485 bus)",
        _ => "unknown exception",
    }
}

/// Gateway exceptions say the device is unreachable: a communication failure, not an answer.
pub(super) fn is_gateway_exception(code: u8) -> bool {
    matches!(code, 0x0A | 0x0B)
}

#[derive(Debug)]
pub(super) enum ReqError {
    /// The device answered with an exception.
    Exception(u8),
    /// No (complete) answer within the timeout.
    Timeout,
    /// An answer that is not the answer: short, another unit, another function.
    Rejected(String),
    /// The TCP link to the converter failed.
    Link(String),
}

impl ReqError {
    pub(super) fn describe(&self, timeout: Duration) -> String {
        match self {
            Self::Exception(code) => format!("exception {code:02X}: {}", exception_meaning(*code)),
            Self::Timeout => format!("no reply within {} ms", timeout.as_millis()),
            Self::Rejected(why) => format!("reply rejected: {why}"),
            Self::Link(why) => format!("converter link failed: {why}"),
        }
    }
}

impl Bus {
    /// One request, alone on the bus: after the gap, within the timeout.
    async fn call(&mut self, unit: u8, request: Request<'static>) -> Result<Response, ReqError> {
        if self.link.is_none() {
            self.connect().await.map_err(ReqError::Link)?;
        }
        if let Some(last) = self.last_frame {
            // A timer costs up to a millisecond of its own: none when the gap has passed.
            let quiet_until = last + self.settings.gap;
            if quiet_until > Instant::now() {
                tokio::time::sleep_until(quiet_until).await;
            }
        }
        let Some(link) = self.link.as_mut() else {
            return Err(ReqError::Link("not connected".into()));
        };
        link.set_slave(Slave(unit));
        let outcome = tokio::time::timeout(self.settings.timeout, link.call(request)).await;
        self.last_frame = Some(Instant::now());
        match outcome {
            Err(_) => {
                // A late answer would be read as the next request's: start a fresh link.
                self.link = None;
                Err(ReqError::Timeout)
            }
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(exception))) => Err(ReqError::Exception(exception_code(exception))),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                self.link = None;
                Err(ReqError::Rejected(protocol_reason(&e)))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                self.link = None;
                // A frame the codec cannot parse (a short or malformed reply) is the device's
                // fault, not the link's.
                if e.kind() == std::io::ErrorKind::InvalidData {
                    Err(ReqError::Rejected(format!("malformed reply: {e}")))
                } else {
                    Err(ReqError::Link(e.to_string()))
                }
            }
        }
    }

    /// A request, retried `retries` times when it timed out or was rejected.
    pub(super) async fn call_with_retries(
        &mut self,
        unit: u8,
        request: Request<'static>,
        retries: u32,
    ) -> Result<Response, ReqError> {
        let mut attempt = 0;
        loop {
            match self.call(unit, request.clone()).await {
                Err(ReqError::Timeout | ReqError::Rejected(_)) if attempt < retries => {
                    attempt += 1;
                    tokio::time::sleep(self.settings.gap * 2 * attempt).await;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn read(
        &mut self,
        unit: u8,
        block: BlockRead,
        retries: u32,
    ) -> Result<Vec<u16>, ReqError> {
        let request = match block.function {
            Function::ReadHolding => Request::ReadHoldingRegisters(block.start, block.count),
            Function::ReadInput => Request::ReadInputRegisters(block.start, block.count),
        };
        let words = match self.call_with_retries(unit, request, retries).await? {
            Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => words,
            other => return Err(ReqError::Rejected(format!("unexpected reply {other:?}"))),
        };
        if words.len() != usize::from(block.count) {
            return Err(ReqError::Rejected(format!(
                "short reply: {} of {} registers",
                words.len(),
                block.count
            )));
        }
        Ok(words)
    }

    pub(super) async fn write(
        &mut self,
        unit: u8,
        write: &Write,
        retries: u32,
    ) -> Result<(), ReqError> {
        let request = match write {
            Write::Single { address, value } => Request::WriteSingleRegister(*address, *value),
            Write::Multiple { address, values } => {
                Request::WriteMultipleRegisters(*address, Cow::Owned(values.clone()))
            }
        };
        match self.call_with_retries(unit, request, retries).await? {
            Response::WriteSingleRegister(..) | Response::WriteMultipleRegisters(..) => Ok(()),
            other => Err(ReqError::Rejected(format!("unexpected reply {other:?}"))),
        }
    }

    pub(super) fn describe(&self, op: &str, function: u8, register: u16, e: &ReqError) -> String {
        format!(
            "{op} function {function} register {register} (0x{register:04X}): {}",
            e.describe(self.settings.timeout)
        )
    }

    /// One log line naming everything an operator needs; returns the same text.
    pub(super) fn log_error(
        &self,
        i: usize,
        op: &str,
        function: u8,
        register: u16,
        e: &ReqError,
    ) -> String {
        let u = &self.units[i];
        let text = self.describe(op, function, register, e);
        tracing::warn!(
            converter = %self.conv.serial,
            unit = u.unit,
            model = %u.model,
            function,
            register,
            error = %e.describe(self.settings.timeout),
            "Modbus {op} failed"
        );
        text
    }
}

fn exception_code(e: ExceptionCode) -> u8 {
    u8::from(e)
}

fn protocol_reason(e: &tokio_modbus::ProtocolError) -> String {
    match e {
        tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => {
            format!("header mismatch (another unit or transaction answered): {message}")
        }
        tokio_modbus::ProtocolError::FunctionCodeMismatch { request, .. } => {
            format!("the reply is not for function {request:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_are_named() {
        assert_eq!(exception_meaning(0x01), "function not supported");
        assert_eq!(exception_meaning(0x02), "register address out of range");
        assert!(exception_meaning(0x0B).contains("failed to respond"));
        assert!(is_gateway_exception(0x0A) && !is_gateway_exception(0x04));
        assert!(ReqError::Exception(1)
            .describe(Duration::from_millis(200))
            .contains("exception 01"));
    }
}
