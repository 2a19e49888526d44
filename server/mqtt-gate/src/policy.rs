//! Who may connect, and what an authenticated client may touch.

use std::fmt;
use std::net::SocketAddr;

use futures::future::BoxFuture;

/// What a client presented in its CONNECT, for [`Policy::authenticate`].
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub client_id: String,
    pub username: Option<String>,
    /// Never logged: the `Debug` impl redacts it.
    pub password: Option<Vec<u8>>,
    pub peer: SocketAddr,
    /// Whether the client presented a TLS certificate. With mutual TLS the
    /// certificate has already been verified against the configured CA when
    /// this is `true`.
    pub client_cert_present: bool,
}

impl fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("peer", &self.peer)
            .field("client_cert_present", &self.client_cert_present)
            .finish()
    }
}

/// An authenticated client and the topics it may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// Identity for logs and violations, e.g. the gateway serial.
    pub name: String,
    /// A topic may be published iff it starts with one of these followed by
    /// `/`, e.g. `sg/SG000017/pub` admits `sg/SG000017/pub/meter/1`.
    pub publish_prefixes: Vec<String>,
    /// A SUBSCRIBE filter is granted iff it equals one of these exactly.
    /// Exact equality, not filter containment, keeps the rule trivially
    /// auditable: a gateway subscribes to its one command topic.
    pub subscribe_filters: Vec<String>,
    /// When set, the client id must be exactly one of these (CONNACK 2
    /// otherwise). An explicit set rather than a prefix: serials may contain
    /// `-`, so a prefix rule would let gateway `A` present `A-1-1`, the id of
    /// gateway `A-1`. Give every principal a set that no other principal's set
    /// shares (SG gateways: `<serial>-1` and `<serial>-2`, injective over
    /// serials). `None` admits any client id.
    pub client_ids: Option<Vec<String>>,
    /// When set, the session is kept in the broker under
    /// `<session_key>:<client id>` (see [`upstream_client_id`](Self::upstream_client_id)),
    /// so that no client id presented by another principal can ever address
    /// it. Use an immutable identity (Headend: `g<gateway id>`), free of `:`
    /// and of the characters a broker refuses in a client id (`+ # / $`).
    pub session_key: Option<String>,
}

impl Principal {
    /// Whether this principal may publish to `topic`. Wildcards are never
    /// valid in a PUBLISH topic, whatever the prefixes say.
    pub fn may_publish(&self, topic: &str) -> bool {
        !topic.contains(['+', '#'])
            && self.publish_prefixes.iter().any(|prefix| {
                topic
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// Whether this principal may subscribe to `filter`.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe_filters
            .iter()
            .any(|allowed| allowed == filter)
    }

    /// Whether this principal may connect with `client_id`.
    pub fn may_use_client_id(&self, client_id: &str) -> bool {
        self.client_ids
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|id| id == client_id))
    }

    /// The client id the gate presents to the broker for `client_id`:
    /// `<session_key>:<client id>` when the principal has a session key, the
    /// client's own otherwise. An empty client id stays empty (the broker
    /// assigns one for a clean session and refuses it for a persistent one).
    pub fn upstream_client_id(&self, client_id: &str) -> String {
        match &self.session_key {
            Some(key) if !client_id.is_empty() => format!("{key}:{client_id}"),
            _ => client_id.to_owned(),
        }
    }
}

/// Why a CONNECT was refused; each maps to an MQTT 3.1.1 CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Unknown user or wrong password (CONNACK 4).
    BadCredentials,
    /// Known user that may not connect, or a will it may not publish (CONNACK 5).
    NotAuthorized,
    /// The decision could not be made now, e.g. the user store is down (CONNACK 3).
    ServerUnavailable,
}

impl Refusal {
    /// The CONNACK return code sent to the client.
    pub fn return_code(self) -> u8 {
        match self {
            Refusal::ServerUnavailable => 3,
            Refusal::BadCredentials => 4,
            Refusal::NotAuthorized => 5,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::BadCredentials => "bad credentials",
            Refusal::NotAuthorized => "not authorized",
            Refusal::ServerUnavailable => "server unavailable",
        })
    }
}

/// Decides who may connect. Called once per CONNECT, bounded by the gate's
/// `connect_timeout` (a policy that does not answer in time counts as
/// [`Refusal::ServerUnavailable`]).
pub trait Policy: Send + Sync + 'static {
    fn authenticate(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Principal, Refusal>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> Principal {
        Principal {
            name: "SG000017".into(),
            publish_prefixes: vec!["sg/SG000017/pub".into()],
            subscribe_filters: vec!["sg/SG000017/sub".into()],
            client_ids: Some(vec!["SG000017-1".into(), "SG000017-2".into()]),
            session_key: Some("g17".into()),
        }
    }

    #[test]
    fn publish_needs_prefix_and_separator() {
        let p = gateway();
        assert!(p.may_publish("sg/SG000017/pub/meter/1"));
        assert!(!p.may_publish("sg/SG000017/pub"));
        assert!(!p.may_publish("sg/SG000017/publish/x"));
        assert!(!p.may_publish("sg/SG000018/pub/x"));
        assert!(!p.may_publish("sg/SG000017/pub/+"));
        assert!(!p.may_publish("sg/SG000017/pub/#"));
    }

    #[test]
    fn subscribe_is_exact() {
        let p = gateway();
        assert!(p.may_subscribe("sg/SG000017/sub"));
        assert!(!p.may_subscribe("sg/SG000017/sub/#"));
        assert!(!p.may_subscribe("sg/+/sub"));
        assert!(!p.may_subscribe("#"));
    }

    #[test]
    fn client_id_is_exactly_one_of_the_allowed_set() {
        let p = gateway();
        assert!(p.may_use_client_id("SG000017-1"));
        assert!(p.may_use_client_id("SG000017-2"));
        // The serial alone, another link, or anything longer: gateway
        // "SG000017" must never present the id of gateway "SG000017-1".
        assert!(!p.may_use_client_id("SG000017"));
        assert!(!p.may_use_client_id("SG000017-3"));
        assert!(!p.may_use_client_id("SG000017-1-1"));
        assert!(!p.may_use_client_id("SG000017-10"));
        assert!(!p.may_use_client_id("SG0000170"));
        assert!(!p.may_use_client_id("SG000018-1"));
        assert!(!p.may_use_client_id(""));
        assert!(Principal::default().may_use_client_id(""));
        assert!(Principal::default().may_use_client_id("anything"));
    }

    #[test]
    fn upstream_client_id_is_namespaced_by_the_session_key() {
        let p = gateway();
        assert_eq!(p.upstream_client_id("SG000017-1"), "g17:SG000017-1");
        assert_eq!(p.upstream_client_id(""), "");
        assert_eq!(Principal::default().upstream_client_id("c-1"), "c-1");
        // Two gateways presenting the same id (were the id rule ever relaxed)
        // still get distinct broker sessions.
        let other = Principal {
            session_key: Some("g18".into()),
            ..gateway()
        };
        assert_ne!(
            p.upstream_client_id("SG000017-1"),
            other.upstream_client_id("SG000017-1")
        );
    }

    #[test]
    fn debug_redacts_password() {
        let request = ConnectRequest {
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some(b"hunter2".to_vec()),
            peer: "127.0.0.1:1".parse().unwrap(),
            client_cert_present: false,
        };
        assert!(!format!("{request:?}").contains("hunter2"));
    }
}
