//! The fleet: gateways (their accounts, sessions and online state) and the devices behind them
//! (meters, relays), with the one rule that resolves a meter from a caller's serial.

pub mod credentials;
pub mod devices;
pub mod gateways;
pub mod sessions;
