//! Pushes are aligned to the interval, never in the first minute, measurements before
//! counters, and only on the links a device pushes to.

mod common;

use common::{json, monday, subtopics, Harness, SERIAL};
use sg_gateway_core::config::{GatewayConfig, LinkConfig};
use sg_gateway_core::{Link, Outgoing};

/// `local_time` of every measurements document, in order.
fn push_times(out: &[Outgoing]) -> Vec<String> {
    out.iter()
        .filter(|m| m.topic.ends_with("measurements/ir"))
        .map(|m| json(m)["header"]["local_time"].as_str().unwrap().to_owned())
        .collect()
}

fn only_ir_meter(interval_s: u32) -> GatewayConfig {
    let mut config = GatewayConfig::example(SERIAL);
    config.devices.truncate(1);
    config.devices[0].push_interval_s = interval_s;
    config
}

#[test]
fn quarter_hours_exactly_and_not_in_the_first_minute() {
    // Started 30 s before a quarter: that quarter falls in the first minute and is skipped.
    let mut h = Harness::new(only_ir_meter(900), 1, monday(10, 14, 30));
    h.gw.on_connected(Link::One);
    h.run_until(monday(11, 16, 0), 1);
    let out = h.drain(Link::One);
    assert_eq!(
        push_times(&out),
        [
            "02.03.2026 10:30:00",
            "02.03.2026 10:45:00",
            "02.03.2026 11:00:00",
            "02.03.2026 11:15:00",
        ]
    );
}

#[test]
fn a_quarter_after_the_first_minute_is_pushed() {
    let mut h = Harness::new(only_ir_meter(900), 1, monday(10, 13, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(10, 20, 0), 1);
    assert_eq!(push_times(&h.drain(Link::One)), ["02.03.2026 10:15:00"]);
}

#[test]
fn nothing_in_the_first_minute_even_with_short_intervals() {
    let mut h = Harness::new(only_ir_meter(10), 1, monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(10, 0, 59), 1);
    assert_eq!(subtopics(&h.drain(Link::One)), ["status"]);
    h.run_until(monday(10, 1, 10), 1);
    assert_eq!(
        push_times(&h.drain(Link::One)),
        ["02.03.2026 10:01:00", "02.03.2026 10:01:10"]
    );
}

#[test]
fn measurements_then_counters() {
    let mut h = Harness::example(monday(8, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(9, 0, 0), 1);
    let topics = subtopics(&h.drain(Link::One));
    for (i, topic) in topics.iter().enumerate() {
        if let Some(port) = topic.strip_prefix("measurements/") {
            assert_eq!(topics[i + 1], format!("counters/{port}"));
        }
        if let Some(port) = topic.strip_prefix("counters/") {
            assert_eq!(topics[i - 1], format!("measurements/{port}"));
        }
    }
    assert_eq!(
        topics.iter().filter(|t| t.starts_with("counters/")).count(),
        3 * 4
    );
}

#[test]
fn a_stalled_driver_pushes_once_not_a_burst() {
    let mut h = Harness::new(only_ir_meter(60), 1, monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    h.run_until(monday(10, 2, 0), 1);
    h.drain(Link::One);
    // Nothing ticks for ten minutes.
    h.tick_at(monday(10, 12, 7));
    assert_eq!(push_times(&h.drain(Link::One)), ["02.03.2026 10:12:07"]);
    h.run_until(monday(10, 13, 30), 1);
    assert_eq!(push_times(&h.drain(Link::One)), ["02.03.2026 10:13:00"]);
}

#[test]
fn next_wakeup_is_the_next_boundary() {
    let mut h = Harness::new(only_ir_meter(900), 1, monday(10, 14, 30));
    // Before the first minute is over: the first boundary after it.
    assert_eq!(h.gw.next_wakeup_ms(), Some(15 * 60 * 1000 + 30_000));
    h.tick_at(
        monday(10, 20, 0)
            .checked_add_signed(chrono::Duration::milliseconds(250))
            .unwrap(),
    );
    assert_eq!(h.gw.next_wakeup_ms(), Some(15 * 60 * 1000 + 30_000));
}

#[test]
fn per_link_push_settings_are_respected() {
    let mut config = GatewayConfig::example(SERIAL);
    config.links[1] = LinkConfig::headend(SERIAL).unwrap();
    for device in &mut config.devices {
        device.push = [true, false];
    }
    config.devices[0].push = [false, true];
    let mut h = Harness::new(config, 3, monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    h.gw.on_connected(Link::Two);
    h.run_until(monday(10, 15, 0), 1);
    let one = subtopics(&h.drain(Link::One));
    let two = subtopics(&h.drain(Link::Two));
    assert_eq!(two, ["status", "measurements/ir", "counters/ir"]);
    assert!(!one.contains(&"measurements/ir".to_owned()));
    assert_eq!(one.len(), 1 + 6);

    // A disabled link gets nothing, even from devices that push to it.
    let mut config = GatewayConfig::example(SERIAL);
    config.links[1].enabled = false;
    let mut h = Harness::new(config, 3, monday(10, 0, 0));
    h.run_until(monday(10, 15, 0), 1);
    assert!(h.gw.queue(Link::Two).is_empty());
    assert_eq!(h.gw.queue(Link::One).len(), 8);
}

#[test]
fn clock_drift_moves_local_time_and_the_schedule() {
    let mut h = Harness::new(only_ir_meter(900), 1, monday(10, 0, 0));
    h.gw.on_connected(Link::One);
    // 1000 ppm fast: after 1000 s the gateway's clock is 1 s ahead.
    h.gw.inject(sg_gateway_core::Fault::ClockDrift { ppm: 1000 });
    h.run_until(monday(10, 16, 40), 1);
    assert_eq!(h.gw.local_time(), monday(10, 16, 41));
    // Its quarter came 0.9 s of true time early, stamped with its own clock.
    assert_eq!(push_times(&h.drain(Link::One)), ["02.03.2026 10:15:00"]);
}
