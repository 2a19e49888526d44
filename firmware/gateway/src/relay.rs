//! The gateway's view of a relay.
//!
//! The SG acknowledges no switch command: what it publishes is always the state read back
//! from the relay, so a relay that ignored a command is visible as such. The machine keeps
//! the last state read and the command not yet confirmed by a read.

use sg_wire::message::RelayState;

/// Last known state plus an outstanding command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayMachine {
    state: RelayState,
    commanded: Option<bool>,
}

impl Default for RelayMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayMachine {
    /// Unknown until first read.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: RelayState::Unknown,
            commanded: None,
        }
    }

    /// A switch command was given (and handed to the driver to carry out).
    pub fn command(&mut self, on: bool) {
        self.commanded = Some(on);
    }

    /// The relay was read. Returns the outstanding command if the relay contradicts it
    /// (it ignored the command, or could not be read); either way the command is settled.
    pub fn observe(&mut self, actual: Option<bool>) -> Option<bool> {
        self.state = match actual {
            Some(true) => RelayState::On,
            Some(false) => RelayState::Off,
            None => RelayState::Unknown,
        };
        self.commanded.take().filter(|&c| actual != Some(c))
    }

    /// The state last read: what the gateway publishes.
    #[must_use]
    pub fn state(&self) -> RelayState {
        self.state
    }

    /// A command not yet confirmed by a read.
    #[must_use]
    pub fn commanded(&self) -> Option<bool> {
        self.commanded
    }
}
