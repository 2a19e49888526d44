#![forbid(unsafe_code)]
//! Headend: energy supervision head-end for SG smart gateways.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod accounting;
pub mod alarms;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod export;
pub mod fleet;
pub mod infra;
pub mod ingest;
pub mod modbus;
pub mod mqtt;
pub mod northbound;
pub mod relays;
pub mod retention;
pub mod sites;
pub mod web;
pub mod xml_push;
pub mod zone;

pub use app::App;
pub use config::Config;
