//! The SG gateway runner for Linux hosts: runs [`sg_gateway_core`]'s sans-IO gateway with
//! real sockets, clocks and disks.
//!
//! - [`mqtt`]: the two push links (MQTT or MQTTS, reconnect with backoff);
//! - [`store`]: the store-and-forward queues saved on disk;
//! - [`rest`]: the SG's local REST API (plus `POST /faults`);
//! - [`fault`]: faults on demand from outside the process (REST, `--fault-after`);
//! - [`modbus`], [`rtu`] and [`source`]: real Iskra meters and Bicom relays over Modbus TCP or
//!   Modbus RTU on the RS485 bus, next to simulated ones;
//! - [`xml_push`]: an older gateway pushing MiSmart XML over TCP (`sg-gateway xml-push`);
//! - [`counter_config`]: an Iskra meter's counter units and directions (holding registers);
//! - [`runtime`]: one gateway's tasks; [`config`]: its settings file.

pub mod config;
pub mod counter_config;
pub mod fault;
pub mod modbus;
pub mod mqtt;
pub mod rest;
pub mod rtu;
pub mod runtime;
pub mod source;
pub mod store;
pub mod xml_push;

pub use runtime::{RunningGateway, Stats};
