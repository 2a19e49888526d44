//! The gate's outlet to the rest of Headend: allowed publishes (to be made
//! durable before the broker may acknowledge them) and policy violations.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::policy::{Principal, Refusal};

/// Receives what passes through the gate.
pub trait Tap: Send + Sync + 'static {
    /// An allowed PUBLISH. The gate forwards it to the broker only after the
    /// returned future resolves `Ok`, so resolve only once the message is
    /// durable: the broker's PUBACK is the gateway's proof of delivery and
    /// lets it drop the message from its own store-and-forward queue.
    ///
    /// On `Err` the gate neither forwards nor acknowledges the packet and
    /// closes the connection; the gateway resends it after reconnecting.
    ///
    /// Delivery is at least once: a gateway retransmitting an unacknowledged
    /// QoS 1/2 message (after a reconnect, say) is tapped again.
    ///
    /// Futures of one connection run concurrently; they are forwarded in the
    /// order the packets arrived.
    fn publish(
        &self,
        principal: &Principal,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> BoxFuture<'static, Result<(), TapError>>;

    /// A client broke a rule. `principal` is `None` before authentication.
    /// Called inline on the connection's task: keep it cheap and non-blocking.
    fn violation(&self, peer: SocketAddr, principal: Option<&Principal>, violation: Violation);

    /// A session was established (the broker accepted the CONNECT). Called inline: keep it
    /// cheap and non-blocking.
    fn session_started(&self, _peer: SocketAddr, _principal: &Principal) {}

    /// A session established earlier ended, for `reason`. Called inline, once per
    /// [`session_started`](Self::session_started).
    fn session_ended(&self, _peer: SocketAddr, _principal: &Principal, _reason: &str) {}
}

/// A publish the tap could not make durable.
#[derive(Debug)]
pub struct TapError(Box<dyn StdError + Send + Sync>);

impl TapError {
    pub fn new(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self(cause.into())
    }
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for TapError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// A rule a client broke. Except for [`Violation::PublishDenied`] and
/// [`Violation::SubscribeDenied`], which the gate answers without
/// forwarding, the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The policy refused the CONNECT.
    ConnectRefused {
        client_id: String,
        username: Option<String>,
        refusal: Refusal,
    },
    /// The principal may not use this client id (CONNACK 2).
    ClientIdDenied { client_id: String },
    /// The CONNECT carries a will the principal may not publish (CONNACK 5).
    WillDenied { topic: String },
    /// A PUBLISH outside the principal's prefixes. Not forwarded, but
    /// acknowledged towards the client (see the crate docs).
    PublishDenied { topic: String, payload: Bytes },
    /// A SUBSCRIBE filter the principal may not use; granted 0x80.
    SubscribeDenied { filter: String },
    /// A packet whose declared size (fixed header included) exceeds
    /// `max_packet_bytes` ([`MAX_CONNECT_BYTES`](crate::MAX_CONNECT_BYTES) for
    /// the CONNECT); refused before its body was read.
    Oversized { declared_len: usize },
    /// A CONNECT for a protocol level other than 3 (MQTT 3.1) or 4 (3.1.1),
    /// MQTT 5 included (CONNACK 1).
    UnsupportedProtocol { level: u8 },
    /// Bytes that are not MQTT 3.1.1, or a packet out of place.
    Malformed { reason: String },
}
