//! A test driver: time is a parameter, nothing sleeps.

#![allow(dead_code)]

use chrono::{NaiveDate, NaiveDateTime};
use sg_gateway_core::config::GatewayConfig;
use sg_gateway_core::sim::SimSource;
use sg_gateway_core::{Action, Gateway, Link, Outgoing};
use sg_wire::message::{CountersDoc, MeasurementsDoc};
use sg_wire::topic::{SgTopic, TopicLayout};
use sg_wire::{parse_message, SgMessage};

pub const SERIAL: &str = "SG000017";

/// A fixture from `tests/fixtures/sg-mqtt`, as JSON.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../tests/fixtures/sg-mqtt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// `tests/fixtures/sg-mqtt/commands.txt`: each command line with its comment.
pub fn command_lines() -> Vec<(String, String)> {
    let path = format!(
        "{}/../../tests/fixtures/sg-mqtt/commands.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .map(|l| match l.split_once('#') {
            Some((json, comment)) => (json.trim().to_owned(), comment.trim().to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

pub fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|date| date.and_hms_opt(h, mi, s))
        .expect("a valid time")
}

/// Monday 2 March 2026.
pub fn monday(h: u32, mi: u32, s: u32) -> NaiveDateTime {
    at(2026, 3, 2, h, mi, s)
}

pub struct Harness {
    pub gw: Gateway<SimSource>,
    pub start: NaiveDateTime,
    pub wall: NaiveDateTime,
}

impl Harness {
    pub fn new(config: GatewayConfig, seed: u64, start: NaiveDateTime) -> Self {
        let source = SimSource::for_config(&config, seed);
        let gw = Gateway::new(config, source, 0, start).expect("a valid config");
        Self {
            gw,
            start,
            wall: start,
        }
    }

    pub fn example(start: NaiveDateTime) -> Self {
        Self::new(GatewayConfig::example(SERIAL), 7, start)
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from((self.wall - self.start).num_milliseconds()).expect("time moves forward")
    }

    /// Ticks once at `wall`.
    pub fn tick_at(&mut self, wall: NaiveDateTime) {
        self.wall = wall;
        let now = self.now_ms();
        self.gw.tick(now, wall);
    }

    /// Ticks every `step_s` seconds up to and including `until`.
    pub fn run_until(&mut self, until: NaiveDateTime, step_s: i64) {
        while self.wall < until {
            let next = (self.wall + chrono::Duration::seconds(step_s)).min(until);
            self.tick_at(next);
        }
    }

    /// Everything the link has to send now, each acknowledged by the broker.
    pub fn drain(&mut self, link: Link) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(message) = self.gw.poll_outgoing(link) {
            self.gw.on_published(link, message.id);
            out.push(message);
        }
        out
    }

    /// Carries out actions the way a driver over the simulator does.
    pub fn execute(&mut self, action: Action) {
        if let Action::SwitchRelay { slot, on } = action {
            self.gw.source_mut().switch_relay(slot, on);
        }
    }

    pub fn command(&mut self, link: Link, json: &str) -> Option<Action> {
        let action = self
            .gw
            .on_command(link, json.as_bytes())
            .expect("an accepted command");
        if let Some(action) = action {
            self.execute(action);
        }
        action
    }

    pub fn layout(&self, link: Link) -> &TopicLayout {
        let n = usize::from(link.number() - 1);
        &self.gw.config().links[n].layout
    }
}

pub fn layout() -> TopicLayout {
    TopicLayout::default_for(SERIAL).expect("a valid layout")
}

/// Decodes an outgoing message under the default layout.
pub fn decode(message: &Outgoing) -> (SgTopic, SgMessage) {
    let topic = layout()
        .parse_publish_topic(&message.topic)
        .expect("a topic the SG publishes");
    let decoded = parse_message(topic, &message.payload).expect("a valid payload");
    (topic, decoded)
}

pub fn measurements(message: &Outgoing) -> MeasurementsDoc {
    match decode(message).1 {
        SgMessage::Measurements(doc) => doc,
        other => panic!("not measurements: {other:?}"),
    }
}

pub fn counters(message: &Outgoing) -> CountersDoc {
    match decode(message).1 {
        SgMessage::Counters(doc) => doc,
        other => panic!("not counters: {other:?}"),
    }
}

pub fn json(message: &Outgoing) -> serde_json::Value {
    serde_json::from_slice(&message.payload).expect("JSON")
}

pub fn subtopics(messages: &[Outgoing]) -> Vec<String> {
    let base = format!("{}/", layout().publish_base());
    messages
        .iter()
        .map(|m| m.topic.strip_prefix(&base).unwrap_or(&m.topic).to_owned())
        .collect()
}
