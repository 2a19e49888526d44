//! MiSmart XML push ("Standard TCP"): older SG firmware and MiSmart deployments write XML
//! documents over plain TCP (or TLS), optionally over HTTP POST. See `docs/xml-push.md`.
//!
//! ```text
//! TCP ─▶ DocumentSplitter ─▶ parse (refuse hostile) ─▶ identify (source, controlUnit)
//!     ─▶ journal append, await fsync ─▶ ack `<ack logId=".." status="ok"/>`
//! ```
//!
//! The journal record carries the document verbatim and the device it was pinned to, so the
//! writers normalise it like any other record (`ingest::normalize_xml`), and a replay or a
//! redelivered document lands on the same rows. An ack is sent only once the record is durable.

pub mod listener;
pub mod registry;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sg_wire::mismart::{parse_document, XmlErrorKind};
use sqlx::PgPool;

use crate::infra::metrics::Metrics;
use crate::ingest::record::{IngestRecord, RecordKind};
use crate::ingest::IngestSink;
pub use registry::Target;

/// `IngestRecord::source` of documents received over TCP (or TLS).
pub const TCP_SOURCE: &str = "xml-push";
/// `IngestRecord::source` of documents received over HTTP POST.
pub const HTTP_SOURCE: &str = "xml-http";
/// `IngestRecord::topic` of refused documents (accepted ones carry `xml/<port>/<slot>`).
pub const REFUSED_TOPIC: &str = "xml";
/// Most bytes of a refused stream kept in `ingest_rejects`.
pub const MAX_KEPT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum XmlPushError {
    #[error("cannot listen for XML push on {addr}: {source}; set HEADEND_XML_PUSH_ADDR to a free address")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("XML push TLS: {0}")]
    Tls(#[from] headend_mqtt_gate::GateError),
}

/// The acknowledgement written back for each document (`docs/xml-push.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Durable in the journal: it will be stored.
    Ok { log_id: u64 },
    /// Refused, and kept with its reason in `ingest_rejects`.
    Rejected {
        log_id: Option<u64>,
        reason: RejectCode,
    },
}

/// Why a document was refused, as a stable token for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The connection's source address is not registered for any gateway.
    UnknownSource,
    /// `controlUnit` is not a meter registered for the gateway(s) of this source.
    UnknownMeter,
    /// `controlUnit` is registered on several gateways sharing this source.
    AmbiguousMeter,
    /// Not a usable document (malformed, hostile or invalid values).
    Invalid,
    /// The meter could not be identified because the database does not answer.
    Unavailable,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown-source",
            Self::UnknownMeter => "unknown-meter",
            Self::AmbiguousMeter => "ambiguous-meter",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Ack {
    /// One line: `<ack logId="117" status="ok"/>` followed by CR LF. Every value written is a
    /// number or a fixed token, so nothing needs escaping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok { log_id } => write!(f, "<ack logId=\"{log_id}\" status=\"ok\"/>\r\n"),
            Self::Rejected { log_id, reason } => {
                f.write_str("<ack")?;
                if let Some(id) = log_id {
                    write!(f, " logId=\"{id}\"")?;
                }
                write!(
                    f,
                    " status=\"rejected\" reason=\"{}\"/>\r\n",
                    reason.as_str()
                )
            }
        }
    }
}

/// What became of one document.
#[derive(Debug)]
pub struct Outcome {
    pub ack: Ack,
    /// Set when the stream cannot be trusted further (hostile or garbled XML): the reason the
    /// connection is closed after the ack.
    pub close: Option<String>,
}

/// Who is sending: fixed when a connection is accepted (or a request authenticated).
#[derive(Debug)]
pub struct Sender {
    /// `xml-push` or `xml-http`.
    pub source: &'static str,
    /// The peer's socket address, for logs and records.
    pub peer: String,
    /// Gateways (id, serial) this sender may push for: those whose registered sources contain
    /// its address, or the one that authenticated. Empty: unknown sender.
    pub gateways: Vec<(i64, String)>,
    /// Meters already identified on this connection.
    known: HashMap<String, Target>,
}

impl Sender {
    pub fn new(source: &'static str, peer: String, gateways: Vec<(i64, String)>) -> Self {
        Self {
            source,
            peer,
            gateways,
            known: HashMap::new(),
        }
    }

    /// The serial to file a refusal under: the gateway when the sender maps to exactly one.
    fn client(&self) -> String {
        match self.gateways.as_slice() {
            [(_, serial)] => serial.clone(),
            _ => String::new(),
        }
    }
}

/// Turns documents into durable journal records. Shared by the TCP listener and the HTTP route.
pub struct XmlPush {
    pool: PgPool,
    sink: IngestSink,
    metrics: Arc<Metrics>,
    /// The last answers of the registry, used only while the database does not answer, so that
    /// known gateways keep pushing through an outage (their documents wait in the journal).
    last_known: Mutex<LastKnown>,
}

#[derive(Default)]
struct LastKnown {
    sources: HashMap<IpAddr, Vec<(i64, String)>>,
    meters: HashMap<(Vec<i64>, String), Target>,
}

/// Entries kept in each last-known map; beyond it the map starts over (a cache, not a registry).
const LAST_KNOWN_MAX: usize = 10_000;

fn remember<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= LAST_KNOWN_MAX {
        map.clear();
    }
    map.insert(key, value);
}

impl XmlPush {
    pub fn new(pool: PgPool, sink: IngestSink, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            sink,
            metrics,
            last_known: Mutex::default(),
        })
    }

    fn last_known(&self) -> std::sync::MutexGuard<'_, LastKnown> {
        self.last_known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gateways (id, serial) whose registered sources contain `ip`; during a database outage,
    /// the last answer for that address.
    pub async fn gateways_for_source(&self, ip: IpAddr) -> Result<Vec<(i64, String)>, sqlx::Error> {
        match registry::gateways_for_source(&self.pool, ip).await {
            Ok(gateways) => {
                if !gateways.is_empty() {
                    remember(&mut self.last_known().sources, ip, gateways.clone());
                }
                Ok(gateways)
            }
            Err(e) => match self.last_known().sources.get(&ip) {
                Some(known) => {
                    tracing::warn!(%ip, error = %e, "XML push: source lookup failed; using the last known gateways");
                    Ok(known.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn identify(&self, gateways: Vec<i64>, serial: &str) -> Result<Target, registry::Miss> {
        match registry::identify(&self.pool, &gateways, serial).await {
            Ok(Ok(target)) => {
                remember(
                    &mut self.last_known().meters,
                    (gateways, serial.to_owned()),
                    target.clone(),
                );
                Ok(target)
            }
            Ok(Err(miss)) => Err(miss),
            Err(e) => {
                let known = self
                    .last_known()
                    .meters
                    .get(&(gateways, serial.to_owned()))
                    .cloned();
                tracing::warn!(error = %e, known = known.is_some(), "XML push: meter lookup failed");
                known.ok_or(registry::Miss::Unavailable)
            }
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Handles one complete document: parse, identify, append, and say what to answer.
    /// `Err` only when the journal cannot take the record: the caller closes without an ack
    /// (the sender keeps the document, as an MQTT gateway does without a PUBACK).
    pub async fn document(
        &self,
        sender: &mut Sender,
        bytes: Vec<u8>,
    ) -> Result<Outcome, headend_journal::JournalError> {
        let payload = Bytes::from(bytes);
        let parsed = match parse_document(&payload) {
            Ok(parsed) => parsed,
            Err(e) => {
                // An unregistered source gets no second chance either way.
                let close = (hostile(&e.kind) || sender.gateways.is_empty()).then(|| e.to_string());
                let reason = format!("XML document refused: {e}");
                self.refuse(sender, payload, &reason).await?;
                return Ok(Outcome {
                    ack: Ack::Rejected {
                        log_id: None,
                        reason: RejectCode::Invalid,
                    },
                    close,
                });
            }
        };
        let doc = parsed.document;
        let log_id = doc.log_id;
        if sender.gateways.is_empty() {
            let reason = format!(
                "unknown sender: {} is not a registered XML push source of any gateway",
                sender.peer
            );
            self.refuse(sender, payload, &reason).await?;
            return Ok(Outcome {
                ack: Ack::Rejected {
                    log_id: Some(log_id),
                    reason: RejectCode::UnknownSource,
                },
                close: Some(reason),
            });
        }
        let target = match sender.known.get(&doc.control_unit) {
            Some(target) => Ok(target.clone()),
            None => {
                let ids: Vec<i64> = sender.gateways.iter().map(|(id, _)| *id).collect();
                // A meter never seen and a database that does not answer: the document is
                // still kept (in the reject), and the sender told.
                self.identify(ids, &doc.control_unit).await
            }
        };
        let target = match target {
            Ok(target) => target,
            Err(miss) => {
                let code = match miss {
                    registry::Miss::Ambiguous => RejectCode::AmbiguousMeter,
                    registry::Miss::Unknown => RejectCode::UnknownMeter,
                    registry::Miss::Unavailable => RejectCode::Unavailable,
                };
                let reason = format!(
                    "unknown meter: controlUnit {:?} is not registered for XML push on gateway {}{}",
                    doc.control_unit,
                    sender
                        .gateways
                        .iter()
                        .map(|(_, s)| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    match miss {
                        registry::Miss::Ambiguous => " (registered on several gateways of this source)",
                        registry::Miss::Unavailable => " (database unavailable)",
                        registry::Miss::Unknown => "",
                    }
                );
                self.refuse(sender, payload, &reason).await?;
                return Ok(Outcome {
                    ack: Ack::Rejected {
                        log_id: Some(log_id),
                        reason: code,
                    },
                    close: None,
                });
            }
        };
        sender
            .known
            .insert(doc.control_unit.clone(), target.clone());
        let record = IngestRecord {
            kind: RecordKind::XmlPush,
            received_at: chrono::Utc::now(),
            source: sender.source.to_owned(),
            client: target.gateway_serial.clone(),
            topic: target.topic(),
            payload,
            reason: sender.peer.clone(),
        };
        self.sink.append(&record).await?;
        self.metrics.xml_documents_accepted.inc();
        Ok(Outcome {
            ack: Ack::Ok { log_id },
            close: None,
        })
    }

    /// Keeps a refused document (or what was read of a refused stream) with its reason.
    pub async fn refuse(
        &self,
        sender: &Sender,
        payload: Bytes,
        reason: &str,
    ) -> Result<(), headend_journal::JournalError> {
        self.metrics.xml_documents_refused.inc();
        tracing::warn!(source = sender.source, peer = %sender.peer, %reason, "XML push refused");
        let payload = payload.slice(..payload.len().min(MAX_KEPT_BYTES));
        self.sink
            .append(&IngestRecord {
                kind: RecordKind::Violation,
                received_at: chrono::Utc::now(),
                source: sender.source.to_owned(),
                client: sender.client(),
                topic: REFUSED_TOPIC.to_owned(),
                payload,
                reason: reason.to_owned(),
            })
            .await
    }
}

/// Whether a parse error means the stream is not what a gateway sends (close it) rather than
/// a document with a wrong value (refuse it, keep reading).
fn hostile(kind: &XmlErrorKind) -> bool {
    !matches!(
        kind,
        XmlErrorKind::MissingAttribute { .. }
            | XmlErrorKind::InvalidAttribute { .. }
            | XmlErrorKind::AttributeTooLong { .. }
            | XmlErrorKind::MissingUnit { .. }
            | XmlErrorKind::UnknownUnit { .. }
            | XmlErrorKind::WrongUnit { .. }
            | XmlErrorKind::InvalidNumber { .. }
            | XmlErrorKind::TextTooLong { .. }
            | XmlErrorKind::DuplicateIdent { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_one_line_of_fixed_tokens() {
        assert_eq!(
            Ack::Ok { log_id: 117 }.to_string(),
            "<ack logId=\"117\" status=\"ok\"/>\r\n"
        );
        assert_eq!(
            Ack::Rejected {
                log_id: None,
                reason: RejectCode::Invalid
            }
            .to_string(),
            "<ack status=\"rejected\" reason=\"invalid\"/>\r\n"
        );
        assert_eq!(
            Ack::Rejected {
                log_id: Some(3),
                reason: RejectCode::UnknownMeter
            }
            .to_string(),
            "<ack logId=\"3\" status=\"rejected\" reason=\"unknown-meter\"/>\r\n"
        );
    }

    #[test]
    fn the_listener_is_off_unless_an_address_is_set() {
        assert_eq!(crate::config::Config::default().xml_push.addr, None);
        let mut config =
            crate::config::Config::load_from(None, [("HEADEND_XML_PUSH_ADDR", "0.0.0.0:5100")])
                .unwrap();
        assert_eq!(config.xml_push.addr, Some(([0, 0, 0, 0], 5100).into()));
        config.xml_push.tls_cert = Some("cert.pem".into());
        assert!(config.validate().is_err(), "a certificate without its key");
    }

    #[test]
    fn hostile_documents_close_the_stream_bad_values_do_not() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><data logId="1" controlUnit="X" deviceType="T" part="1"></data>"#;
        let e = parse_document(bomb).unwrap_err();
        assert!(hostile(&e.kind), "{e}");
        let bad_value = br#"<data logId="1" controlUnit="X" deviceType="T" part="1"><measurement dateTime="now" tInterval="PT060S"><value ident="U1" unit="V">abc</value></measurement></data>"#;
        let e = parse_document(bad_value).unwrap_err();
        assert!(!hostile(&e.kind), "{e}");
    }
}
