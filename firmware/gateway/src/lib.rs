//! The SG gateway's own logic as a sans-IO state machine.
//!
//! [`Gateway`] knows the push schedule, the commands, the relays and the store-and-forward
//! queues, and nothing about sockets, clocks or threads: a driver (a tokio runner on Linux,
//! or a bare-metal main loop) feeds it events and time, and carries out what it asks for.
//! Every wire detail — topics, documents, value strings, local time, commands — comes from
//! [`sg_wire`], so what this crate publishes is what Headend reads by construction.
//!
//! A driver is a loop:
//!
//! ```
//! use chrono::NaiveDate;
//! use sg_gateway_core::config::GatewayConfig;
//! use sg_gateway_core::sim::SimSource;
//! use sg_gateway_core::{Gateway, Link};
//!
//! let config = GatewayConfig::example("SG000017");
//! let source = SimSource::for_config(&config, 7);
//! let start = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap().and_hms_opt(10, 0, 0).unwrap();
//! let mut gateway = Gateway::new(config, source, 0, start).unwrap();
//!
//! gateway.on_connected(Link::One);
//! // ... later, whenever `gateway.next_wakeup_ms()` is reached or a command arrives:
//! gateway.tick(15 * 60_000, start + chrono::Duration::minutes(15));
//! while let Some(out) = gateway.poll_outgoing(Link::One) {
//!     // publish `out.topic` / `out.payload` with `out.qos`, then on PUBACK:
//!     gateway.on_published(Link::One, out.id);
//! }
//! ```
//!
//! [`sim`] provides physically consistent simulated meters and relays whose energy counters
//! are the exact integral of their simulated power, for tests and demonstrations.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod backoff;
pub mod config;
mod document;
mod fault;
mod gateway;
pub mod queue;
mod relay;
pub mod rng;
mod schedule;
pub mod sim;
mod source;

pub use backoff::Backoff;
pub use config::{DeviceConfig, DeviceKind, GatewayConfig, LinkConfig, MeterInfo, RelayInfo, Slot};
pub use fault::Fault;
pub use gateway::{
    Action, CommandRejected, Event, Gateway, GatewaySnapshot, Link, Outgoing, MAX_EVENTS,
};
pub use queue::{Queue, QueueSnapshot, QueuedMessage};
pub use relay::RelayMachine;
pub use source::{
    CounterValue, MeasurementValues, MeterSource, PhaseValues, ReadError, TotalValues,
};
