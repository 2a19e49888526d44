#![forbid(unsafe_code)]
//! Headend: energy supervision head-end for SG smart gateways.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod alarms;
pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod datadir;
pub mod db;
pub mod demo;
pub mod devices;
pub mod export;
pub mod gateways;
pub mod ingest;
pub mod metrics;
pub mod modbus;
pub mod mqtt;
pub mod profiles;
pub mod sites;
pub mod telemetry;
pub mod web;
pub mod xml_push;

pub use app::App;
pub use config::Config;
