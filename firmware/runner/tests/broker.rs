//! One simulated gateway against a real broker (rumqttd, in-process), observed by a real
//! MQTT client: hello, pushes, a relay command, and store-and-forward across an outage.
//!
//! The outage is made by a TCP proxy between the gateway and the broker that can cut and
//! refuse connections, so the observer stays subscribed throughout and sees everything
//! the gateway delivers after the outage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sg_gateway::config::{Config, Link};
use sg_gateway::RunningGateway;
use sg_gateway_core::config::Slot;
use sg_gateway_core::MeterSource;
use sg_wire::message::StatusDoc;
use sg_wire::topic::{Port, SgTopic, TopicLayout};
use sg_wire::{parse_message, SgMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const SERIAL: &str = "SGT00001";
const WAIT: Duration = Duration::from_secs(30);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
}

/// rumqttd on a loopback port, anonymous.
async fn start_broker() -> SocketAddr {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

    // rumqttd binds by itself, so pick a free port and hand it over.
    let addr = free_addr();
    let server = ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    };
    std::thread::spawn(move || {
        if let Err(error) = rumqttd::Broker::new(config).start() {
            panic!("rumqttd failed: {error}");
        }
    });
    // Readiness probe: the port accepts once the server thread has bound it.
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("broker listening");
    addr
}

/// A TCP proxy to `upstream` that can be switched off: off, it cuts every connection and
/// refuses new ones, as a broker that went away.
async fn start_proxy(upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (up_tx, up_rx) = watch::channel(true);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            if !*up_rx.borrow() {
                continue; // dropped: connection closed at once
            }
            let mut up = up_rx.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = up.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (addr, up_tx)
}

/// A client of the broker itself that sees everything the gateway publishes.
struct Observer {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    layout: TopicLayout,
}

impl Observer {
    async fn start(broker: SocketAddr) -> Self {
        let layout = TopicLayout::default_for(SERIAL).unwrap();
        let options = MqttOptions::new("observer", broker.ip().to_string(), broker.port());
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe(layout.publish_filter(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let (tx, messages) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => panic!("observer lost the broker: {error}"),
                }
            }
        });
        timeout(WAIT, subscribed_rx).await.expect("SUBACK").unwrap();
        Self {
            client,
            messages,
            layout,
        }
    }

    /// The next message, parsed as Headend parses it.
    async fn next(&mut self) -> (SgTopic, SgMessage, String, Vec<u8>) {
        let (topic, payload) = timeout(WAIT, self.messages.recv())
            .await
            .expect("a message in time")
            .expect("observer running");
        tracing::debug!(%topic, "observed");
        let parsed_topic = self.layout.parse_publish_topic(&topic).expect("SG topic");
        let message = parse_message(parsed_topic, &payload)
            .unwrap_or_else(|e| panic!("{topic}: {e}: {}", String::from_utf8_lossy(&payload)));
        (parsed_topic, message, topic, payload)
    }

    /// Skips messages until `want` matches one.
    async fn until<T>(&mut self, mut want: impl FnMut(SgTopic, &SgMessage) -> Option<T>) -> T {
        let search = async {
            loop {
                let (topic, message, ..) = self.next().await;
                if let Some(found) = want(topic, &message) {
                    return found;
                }
            }
        };
        timeout(WAIT, search)
            .await
            .expect("the awaited message in time")
    }
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition reached in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_obeys_commands_and_forwards_after_an_outage() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sg_gateway=debug,broker=debug")
        .with_test_writer()
        .try_init();
    let broker = start_broker().await;
    let (proxy, proxy_up) = start_proxy(broker).await;
    let mut observer = Observer::start(broker).await;

    let state = tempfile::tempdir().unwrap();
    let mut config = Config::for_serial(SERIAL);
    config.first_push_delay_s = 0;
    config.set_push_interval(1);
    config.state_dir = Some(state.path().to_owned());
    config.link1 = Some(Link {
        host: Some(proxy.ip().to_string()),
        port: Some(proxy.port()),
        password: Some("any".into()),
        ..Link::default()
    });
    let gateway = RunningGateway::start(config.resolve().unwrap(), 7)
        .await
        .unwrap();

    // The hello comes first, on connect.
    let (topic, message, ..) = observer.next().await;
    assert_eq!(topic, SgTopic::Status);
    let SgMessage::Status(StatusDoc::Hello(hello)) = message else {
        panic!("expected a hello, got {message:?}")
    };
    assert_eq!(hello.serial_number, SERIAL);

    // Measurements, then counters, of the IR meter.
    let local_time = observer
        .until(|topic, message| match (topic, message) {
            (SgTopic::Measurements(Port::Ir), SgMessage::Measurements(doc)) => {
                let (values, issues) = sg_wire::message::normalize_measurements(doc);
                assert!(issues.is_empty(), "{issues:?}");
                assert!(values.u1.is_some_and(|u| u > 100.0));
                Some(doc.header.local_time.clone())
            }
            _ => None,
        })
        .await;
    observer
        .until(|topic, message| match (topic, message) {
            (SgTopic::Counters(Port::Ir), SgMessage::Counters(doc)) => {
                assert_eq!(
                    doc.header.local_time, local_time,
                    "counters of the same push"
                );
                let (counters, _) = sg_wire::message::normalize_counters(doc);
                assert!(!counters.is_empty());
                Some(())
            }
            _ => None,
        })
        .await;

    // Switch the IR relay off; the next state push says 0.
    let off = sg_wire::command::Command::Bicom {
        target: sg_wire::command::RelayTarget::Index(0),
        action: sg_wire::command::RelayAction::Off,
    };
    observer
        .client
        .publish(
            TopicLayout::default_for(SERIAL).unwrap().command_topic(),
            QoS::AtLeastOnce,
            false,
            off.to_json(),
        )
        .await
        .unwrap();
    observer
        .until(|topic, message| match (topic, message) {
            (SgTopic::Bicom(Port::Ir), SgMessage::Bicom(doc)) if doc.bicom.state == 0 => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(
        gateway.with_core(|core| core.source_mut().relay_state(Slot::IrRelay)),
        Some(false)
    );

    // The broker goes away; pushes queue up.
    proxy_up.send_replace(false);
    let queued_before = gateway.stats().queued[0];
    eventually(|| gateway.stats().queued[0] >= queued_before + 20).await;
    let queued: Vec<(String, String)> = gateway.with_core(|core| {
        core.queue(sg_gateway_core::Link::One)
            .iter()
            .map(|m| (m.topic.clone(), m.payload.clone()))
            .collect()
    });
    assert!(queued.len() >= 20);
    while observer.messages.try_recv().is_ok() {}

    tracing::info!(queued = queued.len(), "outage: queued");
    // It comes back: everything queued arrives, in order, after a new hello.
    proxy_up.send_replace(true);
    observer
        .until(|topic, message| {
            matches!(
                (topic, message),
                (SgTopic::Status, SgMessage::Status(StatusDoc::Hello(_)))
            )
            .then_some(())
        })
        .await;
    tracing::info!("hello after the outage");
    let mut expected = queued.iter().peekable();
    let mut received = Vec::new();
    let forwarded = timeout(WAIT, async {
        while let Some((topic, payload)) = expected.peek() {
            let (_, _, got_topic, got_payload) = observer.next().await;
            let got_payload = String::from_utf8(got_payload).unwrap();
            if &got_topic == topic && &got_payload == payload {
                expected.next();
            }
            received.push((got_topic, got_payload));
        }
    })
    .await;
    if forwarded.is_err() {
        let missing = expected.next().unwrap();
        panic!(
            "not forwarded in order: first missing {missing:?}\nqueued: {:#?}\nreceived: {:#?}",
            queued
                .iter()
                .map(|(t, p)| (t, &p[..p.len().min(120)]))
                .collect::<Vec<_>>(),
            received
                .iter()
                .map(|(t, p)| (t, &p[..p.len().min(120)]))
                .collect::<Vec<_>>()
        );
    }
    eventually(|| gateway.stats().published[0] > 0).await;

    gateway.stop().await.unwrap();
    let saved: sg_gateway_core::GatewaySnapshot = serde_json::from_slice(
        &std::fs::read(state.path().join("state.json")).expect("state saved on stop"),
    )
    .unwrap();
    assert_eq!(saved.queues[0].dropped_total, 0);
}
