//! Plumbing every capability uses and none owns: the database pool and migrations, the data
//! directory, logging, the Prometheus registry and the outgoing HTTP/TLS client set-up.

pub mod backoff;
pub mod backup;
pub mod changes;
pub mod cluster;
pub mod datadir;
pub mod db;
pub mod http;
pub mod metrics;
pub mod telemetry;
