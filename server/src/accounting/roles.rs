//! What a counter register means for energy accounting.
//!
//! SG counters carry no direction; by the SG convention (and in the simulator)
//! `counter1nr`..`counter4nr` are active import, active export, reactive import (inductive)
//! and reactive export (capacitive). A device can name other registers for the three roles
//! Headend uses (e.g. a Modbus meter with a different map).

use serde::Serialize;

/// What the register means for billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RegisterRole)]
pub enum Role {
    /// Active energy taken from the grid: consumption, cost, peak demand.
    Import,
    /// Active energy delivered to the grid: credited at the export price.
    Export,
    /// Reactive energy (inductive): the reactive-energy charge.
    Reactive,
    /// Any other register: profiled, not billed.
    Other,
}

pub const DEFAULT_IMPORT: &str = "counter1nr";
pub const DEFAULT_EXPORT: &str = "counter2nr";
pub const DEFAULT_REACTIVE: &str = "counter3nr";

pub fn role_of(
    name: &str,
    import: Option<&str>,
    export: Option<&str>,
    reactive: Option<&str>,
) -> Role {
    if name == import.unwrap_or(DEFAULT_IMPORT) {
        Role::Import
    } else if name == export.unwrap_or(DEFAULT_EXPORT) {
        Role::Export
    } else if name == reactive.unwrap_or(DEFAULT_REACTIVE) {
        Role::Reactive
    } else {
        Role::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convention_and_override() {
        assert_eq!(role_of("counter1nr", None, None, None), Role::Import);
        assert_eq!(role_of("counter2nr", None, None, None), Role::Export);
        assert_eq!(role_of("counter3nr", None, None, None), Role::Reactive);
        assert_eq!(role_of("counter5", None, None, None), Role::Other);
        assert_eq!(
            role_of("counter1nr", Some("counter5"), None, None),
            Role::Other
        );
        assert_eq!(
            role_of("counter5", Some("counter5"), None, None),
            Role::Import
        );
    }
}
