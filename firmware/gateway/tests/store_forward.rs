//! Store and forward, receipts, persistence, backoff.

mod common;

use std::time::Duration;

use common::{json, monday, subtopics, Harness, SERIAL};
use sg_gateway_core::config::GatewayConfig;
use sg_gateway_core::{Backoff, Event, Fault, GatewaySnapshot, Link, Queue, QueuedMessage};

fn config(capacity: usize, receipts: bool) -> GatewayConfig {
    let mut config = GatewayConfig::example(SERIAL);
    config.links[0].queue_capacity = capacity;
    config.receipts = receipts;
    config
}

fn local_times(out: &[sg_gateway_core::Outgoing]) -> Vec<String> {
    out.iter()
        .filter_map(|m| {
            let doc = json(m);
            let header = doc.get("header").or_else(|| doc.get("bicom"))?;
            Some(header["local_time"].as_str()?.to_owned())
        })
        .collect()
}

#[test]
fn offline_readings_wait_in_order_and_the_oldest_are_dropped() {
    // 8 readings per quarter; 12 quarters offline = 96 readings into 40 places.
    let mut h = Harness::new(config(40, false), 5, monday(9, 0, 0));
    h.run_until(monday(12, 0, 0), 1);
    let queue = h.gw.queue(Link::One);
    assert_eq!(queue.len(), 40);
    assert_eq!(queue.dropped_total(), 96 - 40);
    let overflow = std::iter::from_fn(|| h.gw.poll_event())
        .filter(|e| {
            matches!(
                e,
                Event::QueueOverflow {
                    link: Link::One,
                    ..
                }
            )
        })
        .count();
    assert_eq!(overflow, 56);
    assert!(
        h.gw.poll_outgoing(Link::One).is_none(),
        "nothing while offline"
    );

    h.gw.on_connected(Link::One);
    let out = h.drain(Link::One);
    assert_eq!(subtopics(&out)[0], "status", "hello first");
    assert_eq!(out.len(), 41);
    let times = local_times(&out);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order");
    // The newest five quarters survive.
    assert_eq!(times.first().unwrap(), "02.03.2026 11:00:00");
    assert_eq!(times.last().unwrap(), "02.03.2026 12:00:00");
    assert!(h.gw.queue(Link::One).is_empty());
}

#[test]
fn a_connection_lost_mid_drain_resends_what_was_not_acknowledged() {
    let mut h = Harness::new(config(100, false), 5, monday(9, 0, 0));
    h.run_until(monday(9, 30, 0), 1);
    h.gw.on_connected(Link::One);
    let hello = h.gw.poll_outgoing(Link::One).unwrap();
    h.gw.on_published(Link::One, hello.id);
    let first = h.gw.poll_outgoing(Link::One).unwrap();
    let second = h.gw.poll_outgoing(Link::One).unwrap();
    h.gw.on_published(Link::One, first.id);
    h.gw.on_disconnected(Link::One);
    h.gw.on_published(Link::One, second.id); // late, from the dead connection
    assert_eq!(h.gw.queue(Link::One).len(), 15);
    h.gw.on_connected(Link::One);
    let out = h.drain(Link::One);
    assert_eq!(out[1].payload, second.payload, "resent first");
    assert_eq!(out.len(), 16);
}

#[test]
fn the_in_flight_window_is_respected() {
    let mut config = config(100, false);
    config.links[0].max_in_flight = 2;
    let mut h = Harness::new(config, 5, monday(9, 0, 0));
    h.run_until(monday(9, 15, 0), 1);
    h.gw.on_connected(Link::One);
    let a = h.gw.poll_outgoing(Link::One).unwrap();
    let _b = h.gw.poll_outgoing(Link::One).unwrap();
    assert!(h.gw.poll_outgoing(Link::One).is_none());
    h.gw.on_published(Link::One, a.id);
    assert!(h.gw.poll_outgoing(Link::One).is_some());
}

#[test]
fn with_receipts_readings_stay_until_acknowledged_and_are_resent() {
    let mut h = Harness::new(config(100, true), 5, monday(9, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(9, 30, 0), 1);
    let out = h.drain(Link::One);
    assert_eq!(out.len(), 1 + 16);
    assert_eq!(h.gw.queue(Link::One).len(), 16, "PUBACK is not enough");
    assert!(
        h.drain(Link::One).is_empty(),
        "not resent on the same connection"
    );

    // Headend committed the first quarter.
    h.command(Link::One, r#"{"data":{"cmd":"ack","seq":8}}"#);
    assert_eq!(h.gw.queue(Link::One).len(), 8);
    assert_eq!(
        h.gw.poll_event(),
        Some(Event::Receipt {
            link: Link::One,
            seq: 8,
            released: 8
        })
    );

    // After a reconnect the rest is sent again.
    h.gw.on_disconnected(Link::One);
    h.gw.on_connected(Link::One);
    let again = h.drain(Link::One);
    assert_eq!(again.len(), 1 + 8);
    let payloads = |m: &[sg_gateway_core::Outgoing]| -> Vec<Vec<u8>> {
        m.iter().map(|m| m.payload.clone()).collect()
    };
    assert!(
        payloads(&again[1..]) == payloads(&out[9..]),
        "the same readings again"
    );
    h.command(Link::One, r#"{"data":{"cmd":"ack","seq":16}}"#);
    assert!(h.gw.queue(Link::One).is_empty());
}

#[test]
fn snapshot_and_restore_round_trip() {
    let mut h = Harness::new(config(20, true), 5, monday(9, 0, 0));
    h.run_until(monday(10, 0, 0), 1);
    let snapshot = h.gw.snapshot();
    assert_eq!(snapshot.queues[0].messages.len(), 20);
    assert_eq!(snapshot.queues[0].dropped_total, 4 * 8 - 20);
    let text = serde_json::to_string(&snapshot).unwrap();
    let back: GatewaySnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snapshot);

    // A restarted gateway continues the sequence and sends the backlog.
    let mut restarted = Harness::new(config(20, true), 5, monday(10, 5, 0));
    restarted.gw.restore(back);
    assert_eq!(restarted.gw.snapshot(), snapshot);
    assert_eq!(restarted.gw.next_seq(), 33);
    restarted.gw.on_connected(Link::One);
    let out = restarted.drain(Link::One);
    let expected: Vec<_> = snapshot.queues[0]
        .messages
        .iter()
        .map(|m| m.payload.as_bytes())
        .collect();
    let sent: Vec<_> = out[1..].iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(sent, expected);
}

#[test]
fn queue_restore_into_a_smaller_queue_keeps_the_newest() {
    let message = |n: u64| QueuedMessage {
        topic: "t".into(),
        payload: n.to_string(),
        qos: 1,
        seq: Some(n),
    };
    let mut big = Queue::new(10, true);
    for n in 0..10 {
        big.push(message(n));
    }
    let mut small = Queue::new(4, true);
    small.restore(big.snapshot());
    assert_eq!(small.dropped_total(), 6);
    let kept: Vec<_> = small.iter().map(|m| m.seq.unwrap()).collect();
    assert_eq!(kept, [6, 7, 8, 9]);
}

#[test]
fn a_garbled_message_is_cut_and_the_next_is_whole() {
    let mut h = Harness::example(monday(9, 0, 0));
    h.run_until(monday(9, 15, 0), 1);
    h.gw.on_connected(Link::One);
    h.gw.inject(Fault::Garble);
    let out = h.drain(Link::One);
    let topic = common::layout().parse_publish_topic(&out[0].topic).unwrap();
    assert!(sg_wire::parse_message(topic, &out[0].payload).is_err());
    for message in &out[1..] {
        common::decode(message);
    }
}

#[test]
fn counter_reset_zeroes_the_resettable_registers_only() {
    let mut h = Harness::example(monday(9, 0, 0));
    h.run_until(monday(9, 15, 0), 1);
    h.gw.inject(Fault::CounterReset {
        slot: sg_gateway_core::Slot::IrMeter,
    });
    h.gw.on_connected(Link::One);
    h.drain(Link::One);
    h.command(Link::One, r#"{"data":{"cmd":"counters","index":0}}"#);
    let out = h.drain(Link::One);
    let (registers, _) = sg_wire::message::normalize_counters(&common::counters(&out[0]));
    for register in registers {
        if register.resettable {
            assert_eq!(register.value_milli, 0, "{}", register.name);
        } else if register.index == 1 {
            assert!(register.value_milli > 1_000_000);
        }
    }
}

#[test]
fn backoff_grows_with_jitter_within_bounds_and_resets() {
    let mut backoff = Backoff::with_seed(42);
    let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
    for (n, delay) in delays.iter().enumerate() {
        let base = Duration::from_secs(1 << n.min(6)).min(Duration::from_secs(60));
        assert!(
            *delay >= (base / 2).max(Duration::from_secs(1)) && *delay <= base,
            "{n}: {delay:?}"
        );
    }
    assert!(delays[11] >= Duration::from_secs(30));
    backoff.reset();
    assert!(backoff.next_delay() <= Duration::from_secs(1));

    let mut again = Backoff::with_seed(42);
    let replay: Vec<Duration> = (0..12).map(|_| again.next_delay()).collect();
    assert_eq!(replay, delays, "deterministic from the seed");
    let mut other = Backoff::with_seed(43);
    let different: Vec<Duration> = (0..12).map(|_| other.next_delay()).collect();
    assert_ne!(different, delays, "jittered");
}

#[test]
fn connecting_resets_the_gateways_backoff() {
    let mut h = Harness::example(monday(9, 0, 0));
    for _ in 0..8 {
        h.gw.reconnect_delay(Link::One);
    }
    assert!(h.gw.reconnect_delay(Link::One) >= Duration::from_secs(30));
    h.gw.on_connected(Link::One);
    assert!(h.gw.reconnect_delay(Link::One) <= Duration::from_secs(1));
}
