//! Remote relay control: a ledger of commands, each tracked until the relay's reported state
//! proves it (the SG acknowledges nothing on the wire).
//!
//! - [`ledger`]: creating, approving and cancelling commands, with the safety rules (role and
//!   site, four-eyes for switching a critical relay off, anti-chatter, supersession,
//!   idempotency), and the read side (relays with their state and wear, command history).
//! - [`dispatcher`]: the background task that sends queued commands to online gateways,
//!   reads the state back, and settles each command as confirmed, failed or expired. All its
//!   state is in the database, so a restart carries on where it was.

pub mod dispatcher;
pub mod ledger;

use std::time::Duration;

/// Timing of the ledger, from `[commands]` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A command not delivered (or not confirmed) within this expires, unless the request
    /// gives its own expiry.
    pub default_expiry: Duration,
    /// After sending, the relay must report the target state within this, or the command
    /// fails (when it reports the other state) or expires (when it reports nothing).
    pub confirm_timeout: Duration,
    /// A critical off waits this long for a second operator's approval.
    pub approval_timeout: Duration,
    /// The state is asked again this often while a command waits for it.
    pub state_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            default_expiry: Duration::from_secs(300),
            confirm_timeout: Duration::from_secs(30),
            approval_timeout: Duration::from_secs(600),
            state_poll: Duration::from_secs(5),
        }
    }
}
