//! The gate's tap: what passes it (publishes, violations, sessions) becomes journal records.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use headend_mqtt_gate::{Principal, Tap, TapError, Violation};

use crate::ingest::record::{IngestRecord, RecordKind};
use crate::ingest::IngestSink;

/// Journals what passes the gate.
pub struct JournalTap {
    sink: IngestSink,
    source: &'static str,
    /// Violations are journaled at most `VIOLATIONS_PER_SECOND` per client (by principal, or
    /// "" before authentication): a denied publish is acknowledged, so it costs a hostile
    /// client nothing to repeat. The excess is logged and counted, not stored.
    violation_windows: std::sync::Mutex<HashMap<String, (Instant, u32)>>,
    violations_dropped: AtomicU64,
    /// Open sessions per gateway: an SG has two push links, so one link closing does not
    /// make the gateway offline while the other is connected.
    sessions: std::sync::Mutex<HashMap<String, usize>>,
}

/// Violations journaled per client and second at most; the rest are only logged and counted.
const VIOLATIONS_PER_SECOND: u32 = 20;

impl JournalTap {
    pub fn new(sink: IngestSink, source: &'static str) -> Arc<Self> {
        Arc::new(Self {
            sink,
            source,
            violation_windows: std::sync::Mutex::default(),
            violations_dropped: AtomicU64::new(0),
            sessions: std::sync::Mutex::default(),
        })
    }

    fn journal(&self, record: IngestRecord) {
        let sink = self.sink.clone();
        tokio::spawn(async move {
            if let Err(e) = sink.append(&record).await {
                tracing::warn!(error = %e, kind = ?record.kind, "could not journal a gateway event");
            }
        });
    }

    fn session_record(
        &self,
        kind: RecordKind,
        principal: &Principal,
        body: String,
        still_open: usize,
    ) -> IngestRecord {
        IngestRecord {
            kind,
            received_at: Utc::now(),
            source: self.source.into(),
            client: principal.name.clone(),
            topic: String::new(),
            payload: Bytes::from(body),
            reason: still_open.to_string(),
        }
    }

    fn admit_violation(&self, client: &str) -> bool {
        let mut windows = self
            .violation_windows
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if windows.len() > 10_000 {
            // Bounded memory under a flood of distinct clients: start over.
            windows.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(1));
        }
        let window = windows
            .entry(client.to_owned())
            .or_insert((Instant::now(), 0));
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= VIOLATIONS_PER_SECOND
    }

    /// Violations not journaled because of the rate limit, since start.
    pub fn violations_dropped(&self) -> u64 {
        self.violations_dropped.load(Ordering::Relaxed)
    }
}

impl Tap for JournalTap {
    fn publish(
        &self,
        principal: &Principal,
        topic: &str,
        payload: Bytes,
        _qos: u8,
        _retain: bool,
    ) -> BoxFuture<'static, Result<(), TapError>> {
        let record = IngestRecord {
            kind: RecordKind::Publish,
            received_at: Utc::now(),
            source: self.source.into(),
            client: principal.name.clone(),
            topic: topic.to_owned(),
            payload,
            reason: String::new(),
        };
        let sink = self.sink.clone();
        Box::pin(async move { sink.append(&record).await.map_err(TapError::new) })
    }

    fn violation(&self, peer: SocketAddr, principal: Option<&Principal>, violation: Violation) {
        let (topic, payload, reason) = describe(&violation);
        tracing::warn!(%peer, client = principal.map(|p| p.name.as_str()), %reason, "MQTT violation");
        if !self.admit_violation(principal.map_or("", |p| p.name.as_str())) {
            self.violations_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let record = IngestRecord {
            kind: RecordKind::Violation,
            received_at: Utc::now(),
            source: self.source.into(),
            client: principal.map(|p| p.name.clone()).unwrap_or_default(),
            topic,
            payload,
            reason: format!("{reason} (from {peer})"),
        };
        self.journal(record);
    }

    fn session_started(&self, peer: SocketAddr, principal: &Principal) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let open = sessions.entry(principal.name.clone()).or_default();
        *open += 1;
        let open = *open;
        drop(sessions);
        self.journal(self.session_record(
            RecordKind::Connect,
            principal,
            format!("MQTT session opened from {peer}"),
            open,
        ));
    }

    fn session_ended(&self, peer: SocketAddr, principal: &Principal, reason: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let open = sessions.get_mut(&principal.name).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        if open == 0 {
            sessions.remove(&principal.name);
        }
        drop(sessions);
        self.journal(self.session_record(
            RecordKind::Disconnect,
            principal,
            format!("MQTT session from {peer} closed: {reason}"),
            open,
        ));
    }
}

fn describe(v: &Violation) -> (String, Bytes, String) {
    match v {
        Violation::PublishDenied { topic, payload } => (
            topic.clone(),
            payload.clone(),
            format!("publish to {topic:?} refused: outside this gateway's publish topics"),
        ),
        Violation::SubscribeDenied { filter } => (
            filter.clone(),
            Bytes::new(),
            format!("subscribe to {filter:?} refused: not this gateway's command topic"),
        ),
        Violation::ConnectRefused {
            client_id,
            username,
            refusal,
        } => (
            String::new(),
            Bytes::new(),
            match username {
                Some(user) => format!(
                    "connect refused ({refusal}) for client id {:?}, user {:?}",
                    truncate(client_id),
                    truncate(user)
                ),
                None => format!(
                    "connect refused ({refusal}) for client id {:?}, without user name",
                    truncate(client_id)
                ),
            },
        ),
        Violation::ClientIdDenied { client_id } => (
            String::new(),
            Bytes::new(),
            format!(
                "client id {:?} belongs to another gateway",
                truncate(client_id)
            ),
        ),
        Violation::WillDenied { topic } => (
            topic.clone(),
            Bytes::new(),
            format!("will topic {topic:?} is outside this gateway's publish topics"),
        ),
        Violation::Oversized { declared_len } => (
            String::new(),
            Bytes::new(),
            format!("packet of {declared_len} bytes exceeds the size limit; connection closed"),
        ),
        Violation::UnsupportedProtocol { level } => (
            String::new(),
            Bytes::new(),
            format!("MQTT protocol level {level} is not supported (use MQTT 3.1.1)"),
        ),
        Violation::Malformed { reason } => (
            String::new(),
            Bytes::new(),
            format!("malformed MQTT: {reason}; connection closed"),
        ),
        other => (String::new(), Bytes::new(), format!("{other:?}")),
    }
}

/// A client-chosen name cut for logs and records.
pub(super) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
