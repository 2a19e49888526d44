//! Logging: `tracing` to stderr, human-readable or JSON.

use tracing_subscriber::EnvFilter;

/// rumqttd logs every session at info, and every clean client DISCONNECT as an error ("no-connection
/// id N is already gone", "router-drop": a double disconnect it handles fine). Its only client is
/// the gate, which logs every session's end with the reason, and Headend checks at start that
/// the broker accepts sessions, so these add only noise.
const BROKER_DIRECTIVES: &str =
    "rumqttd=warn,rumqttd::router::routing=off,rumqttd::server::broker=off";

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
