//! MQTT adapters: the embedded broker behind its front door, or a client of an external broker.
//! Either way every gateway message becomes a journal record before it is acknowledged.
//!
//! `policy` (who may connect, and to what), `tap` (the journal behind the gate), `embedded`
//! (rumqttd on loopback behind the gate), `external` (a client of another broker); here the
//! errors and [`CommandSender`], the one way to publish to gateways.

mod embedded;
mod external;
mod policy;
mod tap;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

pub use embedded::EmbeddedMqtt;

/// Default of `mqtt.broker_topic_log_bytes`. Measured (docs/benchmarks/memory.md): a small log
/// (2 KiB) made rumqttd roll a segment every few messages, and each new segment preallocates
/// its record vector whatever this size, so the burst's peak was *higher* (292 against 271
/// MiB). Two segments of 512 KiB are what rumqttd was given before.
pub const DEFAULT_TOPIC_LOG_BYTES: usize = 512 * 1024;
pub use external::run_external;
pub use policy::GatewayPolicy;
pub use tap::JournalTap;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT listener on {addr}: {source}")]
    Gate {
        addr: SocketAddr,
        source: headend_mqtt_gate::GateError,
    },
    #[error("embedded broker did not start on {0}: {1}")]
    Broker(SocketAddr, String),
    #[error("external broker URL is not valid: {0} (expected mqtt://user:password@host:1883)")]
    Url(String),
}

/// Publishes to gateways' command topics (QoS 0, as the SG subscribes), through the embedded
/// broker's in-process link or the external broker's client. Never blocks the caller: when the
/// queue is full the message is dropped and counted.
#[derive(Clone)]
pub struct CommandSender {
    tx: tokio::sync::mpsc::Sender<(String, Bytes)>,
    dropped: Arc<AtomicU64>,
}

/// What the publishing side of a [`CommandSender`] drains.
pub type CommandQueue = tokio::sync::mpsc::Receiver<(String, Bytes)>;

impl CommandSender {
    pub fn channel() -> (Self, CommandQueue) {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        (
            Self {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    pub fn send(&self, topic: String, payload: Bytes) -> bool {
        match self.tx.try_send((topic, payload)) {
            Ok(()) => true,
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "command to a gateway dropped");
                false
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
