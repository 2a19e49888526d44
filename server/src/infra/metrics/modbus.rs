//! Modbus polls by converter: which RS485/IP converter's devices stop answering.
//!
//! The label is the converter's name (its gateway serial): converters are configured by an
//! admin, so the set stays small. A deleted converter's series stay until the next start.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::register;

/// Labels of the per-converter poll counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConverterLabels {
    converter: String,
}

#[derive(Debug)]
pub(super) struct Converters {
    polls: Family<ConverterLabels, PromCounter>,
    failures: Family<ConverterLabels, PromCounter>,
}

impl Converters {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let polls = Family::default();
        register(
            registry,
            "headend_modbus_converter_polls",
            "Modbus device polls answered, by converter.",
            polls.clone(),
        );
        let failures = Family::default();
        register(
            registry,
            "headend_modbus_converter_poll_failures",
            "Modbus device polls without a valid answer, by converter.",
            failures.clone(),
        );
        Self { polls, failures }
    }

    /// Counts one poll; both series of the converter exist from its first poll on (at 0 for
    /// the one not counted), so a rate over them never starts from nothing.
    pub(super) fn record(&self, converter: &str, answered: bool) {
        let labels = ConverterLabels {
            converter: converter.to_owned(),
        };
        let (counted, other) = if answered {
            (&self.polls, &self.failures)
        } else {
            (&self.failures, &self.polls)
        };
        counted.get_or_create(&labels).inc();
        // Creates the other series at 0 if it is not there yet.
        let _ = other.get_or_create(&labels);
    }
}
