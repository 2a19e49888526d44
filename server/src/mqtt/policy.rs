//! Who may connect to the gate, and to what: the gateway registry's verdict as a
//! [`Principal`], or a refusal.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use headend_mqtt_gate::{ConnectRequest, Policy, Principal, Refusal};

use super::tap::truncate;
use crate::fleet::gateways::{GatewayAuthError, GatewayAuthenticator, MqttGrant};
use crate::infra::metrics::Metrics;

/// The gate's view of the gateway registry.
pub struct GatewayPolicy {
    pub auth: Arc<GatewayAuthenticator>,
    pub metrics: Arc<Metrics>,
}

/// `auth_throttled` channel of MQTT CONNECTs ([`crate::infra::metrics::THROTTLE_CHANNELS`]).
const MQTT_CHANNEL: usize = 1;

impl Policy for GatewayPolicy {
    fn authenticate(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Principal, Refusal>> {
        let auth = self.auth.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let (Some(username), Some(password)) = (request.username, request.password) else {
                metrics.mqtt_auth_failures.inc();
                return Err(Refusal::NotAuthorized);
            };
            let verdict = auth
                .authenticate(&username, &password, request.peer.ip())
                .await;
            decide(verdict, &username, request.peer, &metrics)
        })
    }
}

/// The CONNECT's fate from the authenticator's verdict, counted in `metrics`.
fn decide(
    verdict: Result<Option<MqttGrant>, GatewayAuthError>,
    username: &str,
    peer: SocketAddr,
    metrics: &Metrics,
) -> Result<Principal, Refusal> {
    match verdict {
        Ok(Some(grant)) => Ok(principal(grant)),
        Ok(None) => {
            metrics.mqtt_auth_failures.inc();
            Err(Refusal::BadCredentials)
        }
        // Nothing was checked: "come back later" (CONNACK 3), never "wrong password", which
        // would tell a guesser nothing and a real gateway something false.
        Err(GatewayAuthError::Throttled(throttled)) => {
            metrics.auth_throttled[MQTT_CHANNEL].inc();
            tracing::warn!(
                %peer,
                user = %truncate(username),
                retry_after_s = throttled.retry_after_secs(),
                "MQTT CONNECT throttled: too many attempts for this serial or from this address"
            );
            Err(Refusal::ServerUnavailable)
        }
        Err(GatewayAuthError::Busy(_)) => {
            metrics.password_checks_shed.inc();
            Err(Refusal::ServerUnavailable)
        }
        Err(GatewayAuthError::Db(e)) => {
            tracing::warn!(error = %e, "gateway authentication could not reach the database");
            Err(Refusal::ServerUnavailable)
        }
    }
}

/// What an authenticated gateway may do: publish under its base, subscribe to its command
/// topic, connect as `<serial>-1` or `<serial>-2` only, its broker sessions kept under its
/// immutable database id (`g<id>:<client id>`), so no other principal can reach them.
fn principal(grant: MqttGrant) -> Principal {
    Principal {
        client_ids: Some(crate::fleet::gateways::mqtt_client_ids(&grant.serial)),
        session_key: Some(format!("g{}", grant.id)),
        name: grant.serial,
        publish_prefixes: vec![grant.publish_base],
        subscribe_filters: vec![grant.command_topic],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::password::Busy;
    use crate::auth::throttle::Throttled;

    fn grant() -> MqttGrant {
        MqttGrant {
            id: 42,
            serial: "A-1".into(),
            publish_base: "sg/A-1/pub".into(),
            command_topic: "sg/A-1/sub".into(),
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    #[test]
    fn a_gateway_principal_has_its_two_link_ids_and_a_session_key_by_id() {
        let p = decide(Ok(Some(grant())), "A-1", peer(), &Metrics::default()).unwrap();
        assert_eq!(p.name, "A-1");
        assert!(p.may_use_client_id("A-1-1") && p.may_use_client_id("A-1-2"));
        assert!(!p.may_use_client_id("A-1") && !p.may_use_client_id("A-1-1-1"));
        assert_eq!(p.upstream_client_id("A-1-1"), "g42:A-1-1");
        assert!(p.may_publish("sg/A-1/pub/x") && p.may_subscribe("sg/A-1/sub"));
    }

    #[test]
    fn throttled_and_shed_connects_are_server_unavailable_and_counted() {
        let metrics = Metrics::default();
        let throttled = GatewayAuthError::Throttled(Throttled {
            retry_after: Duration::from_secs(6),
        });
        assert_eq!(
            decide(Err(throttled), "A", peer(), &metrics),
            Err(Refusal::ServerUnavailable)
        );
        assert_eq!(metrics.auth_throttled[MQTT_CHANNEL].get(), 1);
        assert_eq!(
            decide(Err(GatewayAuthError::Busy(Busy)), "A", peer(), &metrics),
            Err(Refusal::ServerUnavailable)
        );
        assert_eq!(metrics.password_checks_shed.get(), 1);
        assert_eq!(
            decide(Ok(None), "A", peer(), &metrics),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(metrics.mqtt_auth_failures.get(), 1);
        assert_eq!(metrics.auth_throttled[MQTT_CHANNEL].get(), 1);
        assert_eq!(Refusal::ServerUnavailable.return_code(), 3);
    }
}
