//! Logging: `tracing` to stderr, human-readable or JSON.

use tracing_subscriber::EnvFilter;

/// rumqttd logs every session at info, and every clean client DISCONNECT as an error ("no-connection
/// id N is already gone", a double-disconnect it handles fine). The gate logs connections itself.
const BROKER_DIRECTIVES: &str = "rumqttd=warn,rumqttd::router::routing=off";

pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(format!("{BROKER_DIRECTIVES},{filter}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{BROKER_DIRECTIVES},info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // try_init: tests and embedders may have installed a subscriber already.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
