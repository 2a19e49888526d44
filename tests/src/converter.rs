//! The simulated RS485/IP converter (Modbus TCP server with RTU units, fault injection) is
//! the product's own, `headend::demo::converter`, which `headend demo` runs with moving
//! meters; re-exported here so the tests keep their paths.

pub use headend::demo::converter::*;
