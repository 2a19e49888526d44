//! The registered gateways the normaliser resolves a record's sender against.

use std::collections::{HashMap, HashSet};

use chrono_tz::Tz;
use sg_wire::topic::TopicLayout;

/// What the normaliser needs to know about a registered gateway.
#[derive(Debug, Clone)]
pub struct GatewayInfo {
    pub id: i64,
    pub serial: String,
    pub layout: TopicLayout,
    pub zone: Tz,
}

/// Registered gateways, by serial and by publish base (the external broker gives no identity).
#[derive(Debug, Default, Clone)]
pub struct Directory {
    by_serial: HashMap<String, GatewayInfo>,
    by_base: HashMap<String, String>,
    /// Command topics: what Headend itself publishes, seen again on an external broker.
    pub(super) commands: HashSet<String>,
    by_id: HashMap<i64, String>,
}

impl Directory {
    pub fn new(gateways: impl IntoIterator<Item = GatewayInfo>) -> Self {
        let mut dir = Self::default();
        for gw in gateways {
            dir.by_base
                .insert(gw.layout.publish_base(), gw.serial.clone());
            dir.commands.insert(gw.layout.command_topic());
            dir.by_id.insert(gw.id, gw.serial.clone());
            dir.by_serial.insert(gw.serial.clone(), gw);
        }
        dir
    }

    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }

    pub fn by_id(&self, id: i64) -> Option<&GatewayInfo> {
        self.by_id
            .get(&id)
            .and_then(|serial| self.by_serial.get(serial))
    }

    pub fn by_serial(&self, serial: &str) -> Option<&GatewayInfo> {
        self.by_serial.get(serial)
    }

    /// The gateway whose publish base is a prefix of `topic` (at a `/` boundary).
    pub fn by_topic(&self, topic: &str) -> Option<&GatewayInfo> {
        topic
            .match_indices('/')
            .map(|(i, _)| &topic[..i])
            .find_map(|prefix| self.by_base.get(prefix))
            .and_then(|serial| self.by_serial.get(serial))
    }
}
