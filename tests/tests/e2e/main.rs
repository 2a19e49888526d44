//! Headend end to end, against real parts (PostgreSQL, the broker and MQTT clients, Modbus
//! converters, Chromium, an SMTP sink): one test binary with a module per capability, so the
//! suite links once. Run one part with e.g. `cargo test -p headend-e2e --test e2e pages::`.

mod alarms;
mod api_auth;
mod api_contract;
mod attack_ingest;
mod attack_mqtt;
mod attack_pages;
mod attack_web;
mod backup;
mod bad_input;
mod browser;
mod change_notices;
mod cluster_alarms;
mod cluster_sessions;
mod commissioning;
mod converter_sim;
mod database;
mod durability;
mod energy;
mod energy_pieces;
mod export;
mod external_broker;
mod firmware;
mod firmware_faults;
mod grafana;
mod ingest_fixtures;
mod ingest_integrity;
mod journal_drain;
mod leases;
mod metrics;
mod modbus;
mod mqtts;
mod northbound;
mod pages;
mod process;
mod proxy_protocol;
mod pyiskra;
mod read_replica;
mod relays;
mod remote_reset;
mod retention;
mod ui;
mod xml_push;
