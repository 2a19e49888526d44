//! A client of an external broker instead of the embedded one.

use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{CommandQueue, MqttError};
use crate::infra::backoff::Backoff;
use crate::ingest::record::{IngestRecord, RecordKind};
use crate::ingest::IngestSink;

/// A client of an external broker (e.g. Mosquitto, or a cluster shared by several Headends).
/// Messages are acknowledged to the broker only once journaled (manual acks), and the session
/// is persistent, so the broker keeps what arrives while Headend is down.
pub async fn run_external(
    url: &str,
    filter: &str,
    sink: IngestSink,
    mut commands: CommandQueue,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let target = ExternalUrl::parse(url)?;
    let mut options = MqttOptions::new(target.client_id.clone(), target.host.clone(), target.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(sg_wire::MAX_PAYLOAD_BYTES + 64 * 1024, 64 * 1024);
    if let Some((user, pass)) = &target.credentials {
        options.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 256);
    let mut pending: FuturesOrdered<BoxFuture<'static, (rumqttc::Publish, bool)>> =
        FuturesOrdered::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = client.disconnect().await;
                return Ok(());
            }
            Some((topic, payload)) = commands.recv() => {
                if let Err(e) = client.try_publish(topic.as_str(), QoS::AtMostOnce, false, payload) {
                    tracing::warn!(%topic, error = %e, "command to a gateway not sent");
                }
            }
            Some((publish, journaled)) = pending.next(), if !pending.is_empty() => {
                if journaled {
                    if let Err(e) = client.ack(&publish).await {
                        tracing::warn!(error = %e, "external broker ack failed");
                    }
                }
            }
            event = events.poll(), if pending.len() < 1024 => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    tracing::info!(host = %target.host, port = target.port, "connected to external broker");
                    if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "subscribe on external broker failed");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let record = IngestRecord {
                        kind: RecordKind::Publish,
                        received_at: Utc::now(),
                        source: crate::ingest::normalize::EXTERNAL_SOURCE.into(),
                        client: String::new(),
                        topic: publish.topic.clone(),
                        payload: publish.payload.clone(),
                        reason: String::new(),
                    };
                    let sink = sink.clone();
                    pending.push_back(Box::pin(async move {
                        let ok = match sink.append(&record).await {
                            Ok(()) => true,
                            Err(e) => {
                                // Not acked: the broker redelivers after reconnect.
                                tracing::error!(error = %e, "journal refused a message from the external broker");
                                false
                            }
                        };
                        (publish, ok)
                    }));
                }
                Ok(_) => {}
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "external broker connection lost");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ExternalUrl {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    client_id: String,
}

impl ExternalUrl {
    fn parse(url: &str) -> Result<Self, MqttError> {
        let err = || MqttError::Url("scheme, host or port is missing or wrong".into());
        let rest = url.strip_prefix("mqtt://").ok_or_else(err)?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), pass.to_owned())), hostport)
            }
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| err())?),
            None => (hostport, 1883),
        };
        if host.is_empty() {
            return Err(err());
        }
        let client_id = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("client_id="))
            .unwrap_or("headend")
            .to_owned();
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
            client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_urls() {
        assert_eq!(
            ExternalUrl::parse("mqtt://u:p@broker.example:1884?client_id=he-1").unwrap(),
            ExternalUrl {
                host: "broker.example".into(),
                port: 1884,
                credentials: Some(("u".into(), "p".into())),
                client_id: "he-1".into()
            }
        );
        assert_eq!(ExternalUrl::parse("mqtt://localhost").unwrap().port, 1883);
        assert!(ExternalUrl::parse("http://x").is_err());
        assert!(ExternalUrl::parse("mqtt://:12").is_err());
    }
}
