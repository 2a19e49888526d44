//! Requests from the API and the relay dispatcher, carried out between polls: relay switching
//! (then the state is read back) and counter reset writes.

use chrono::Utc;
use sg_wire::command::RelayAction;
use tokio::time::Instant;

use super::request::{is_gateway_exception, ReqError};
use super::Bus;
use crate::modbus::BusRequest;

impl Bus {
    pub(super) async fn request(&mut self, request: BusRequest) {
        match request {
            BusRequest::Relay { unit, action } => self.relay(unit, action).await,
            BusRequest::ResetCounter {
                unit,
                counter,
                reply,
            } => {
                // Its asker stopped waiting and answered "failed": never written later.
                if reply.is_closed() {
                    tracing::warn!(unit, counter, "counter reset dropped: not waited for");
                    return;
                }
                let result = self.reset(unit, &counter).await;
                let _ = reply.send(result);
            }
        }
    }

    fn unit_index(&self, unit: u8) -> Option<usize> {
        self.units
            .iter()
            .position(|u| u.unit == unit && u.map.is_some())
    }

    async fn relay(&mut self, unit: u8, action: RelayAction) {
        let Some(i) = self.unit_index(unit) else {
            tracing::warn!(
                unit,
                "relay command for a unit this converter does not poll"
            );
            return;
        };
        let on = match action {
            RelayAction::On => true,
            RelayAction::Off => false,
            RelayAction::State => {
                self.poll(i).await;
                return;
            }
        };
        let Some(write) = self.units[i].map.as_ref().and_then(|m| m.relay_write(on)) else {
            tracing::warn!(unit, model = %self.units[i].model, "relay command for a model without a relay");
            return;
        };
        let retries = self.settings.retries;
        match self.write(unit, &write, retries).await {
            Ok(()) => tracing::info!(unit, on, "relay switched; reading its state back"),
            Err(e) => {
                let error = self.log_error(i, "write", write.function_code(), write.address(), &e);
                if !matches!(e, ReqError::Exception(c) if !is_gateway_exception(c)) {
                    self.failed(i, error, Instant::now(), Utc::now()).await;
                }
                return;
            }
        }
        // The state read back arrives through the journal and confirms the command.
        self.poll(i).await;
    }

    async fn reset(&mut self, unit: u8, counter: &str) -> Result<(), String> {
        let i = self
            .unit_index(unit)
            .ok_or_else(|| format!("unit {unit} is not polled on this converter"))?;
        let write = self.units[i]
            .map
            .as_ref()
            .and_then(|m| m.counter_reset(counter))
            .ok_or_else(|| {
                format!(
                    "counter {counter:?} of model {:?} has no reset register",
                    self.units[i].model
                )
            })?;
        let retries = self.settings.retries;
        if let Err(e) = self.write(unit, &write, retries).await {
            return Err(self.log_error(
                i,
                "counter reset write",
                write.function_code(),
                write.address(),
                &e,
            ));
        }
        tracing::info!(unit, counter, "counter reset written; reading the device");
        self.poll(i).await;
        Ok(())
    }
}

pub(super) fn refuse(request: BusRequest, why: &str) {
    match request {
        BusRequest::ResetCounter { reply, .. } => {
            let _ = reply.send(Err(why.to_owned()));
        }
        BusRequest::Relay { unit, .. } => {
            tracing::warn!(unit, reason = why, "relay request not carried out");
        }
    }
}
