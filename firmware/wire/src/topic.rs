//! MQTT topics: the gateway publishes under `P = <root>/<pub>` and listens on
//! `C = <root>/<sub>`.

use alloc::format;
use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Serialize};

/// Longest root, publish or subscribe setting the SG stores (bytes; the SG's own settings
/// page allows 31 characters and stores them as C strings).
pub const MAX_TOPIC_PART_LEN: usize = 31;

/// Highest RS485 settings slot a gateway has.
pub const MAX_RS485_SLOT: u8 = 16;

/// Which part of a [`TopicLayout`] a validation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicPart {
    Root,
    Publish,
    Subscribe,
}

impl fmt::Display for TopicPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Root => "root topic",
            Self::Publish => "publish sub-topic",
            Self::Subscribe => "subscribe sub-topic",
        })
    }
}

/// Why a topic or a topic setting was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// A setting is empty.
    EmptyPart(TopicPart),
    /// A setting is longer than [`MAX_TOPIC_PART_LEN`] bytes.
    PartTooLong { part: TopicPart, len: usize },
    /// A setting holds an MQTT wildcard, NUL or another control character, or (outside the
    /// root) a `/`.
    ForbiddenChar { part: TopicPart, ch: char },
    /// The topic is not below this gateway's publish base.
    NotUnderPublishBase,
    /// The topic is below the publish base but is not one the SG publishes.
    UnknownSubtopic(String),
    /// An RS485 slot outside `1..=16` (or not a plain number).
    NoSuchSlot(String),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyPart(part) => write!(f, "{part} is empty"),
            Self::PartTooLong { part, len } => write!(
                f,
                "{part} is {len} bytes long; the gateway allows {MAX_TOPIC_PART_LEN}"
            ),
            Self::ForbiddenChar { part, ch } => {
                write!(f, "{part} contains the forbidden character {ch:?}")
            }
            Self::NotUnderPublishBase => {
                f.write_str("topic is not below the gateway's publish base")
            }
            Self::UnknownSubtopic(sub) => write!(f, "unknown sub-topic `{sub}`"),
            Self::NoSuchSlot(slot) => write!(
                f,
                "topic names a device slot the gateway does not have: RS485 slot `{slot}` \
                 (slots are 1..={MAX_RS485_SLOT})"
            ),
        }
    }
}

impl core::error::Error for TopicError {}

/// The three topic settings of one push link. Always valid once constructed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawLayout")]
pub struct TopicLayout {
    root: String,
    publish: String,
    subscribe: String,
}

#[derive(Deserialize)]
struct RawLayout {
    root: String,
    publish: String,
    subscribe: String,
}

impl TryFrom<RawLayout> for TopicLayout {
    type Error = TopicError;

    fn try_from(raw: RawLayout) -> Result<Self, Self::Error> {
        Self::new(raw.root, raw.publish, raw.subscribe)
    }
}

impl TopicLayout {
    /// Validates the three settings.
    ///
    /// # Errors
    /// A part is empty, longer than [`MAX_TOPIC_PART_LEN`] bytes, or holds `+`, `#`, NUL or
    /// another control character; `publish` and `subscribe` also must not hold `/` (the root
    /// may, e.g. `site/sg000017`).
    pub fn new(
        root: impl Into<String>,
        publish: impl Into<String>,
        subscribe: impl Into<String>,
    ) -> Result<Self, TopicError> {
        let layout = Self {
            root: root.into(),
            publish: publish.into(),
            subscribe: subscribe.into(),
        };
        validate_part(&layout.root, TopicPart::Root)?;
        validate_part(&layout.publish, TopicPart::Publish)?;
        validate_part(&layout.subscribe, TopicPart::Subscribe)?;
        Ok(layout)
    }

    /// The layout Headend provisions: root `sg/<serial>`, publish `pub`, subscribe `sub`.
    ///
    /// # Errors
    /// As [`new`](Self::new), for a serial that makes an invalid root.
    pub fn default_for(serial: &str) -> Result<Self, TopicError> {
        Self::new(format!("sg/{serial}"), "pub", "sub")
    }

    #[must_use]
    pub fn root(&self) -> &str {
        &self.root
    }

    #[must_use]
    pub fn publish(&self) -> &str {
        &self.publish
    }

    #[must_use]
    pub fn subscribe(&self) -> &str {
        &self.subscribe
    }

    /// `<root>/<pub>`: everything the gateway publishes is below this.
    #[must_use]
    pub fn publish_base(&self) -> String {
        format!("{}/{}", self.root, self.publish)
    }

    /// `<root>/<pub>/#`: the subscription filter for everything the gateway publishes.
    #[must_use]
    pub fn publish_filter(&self) -> String {
        format!("{}/{}/#", self.root, self.publish)
    }

    /// `<root>/<sub>`: where the gateway takes commands.
    #[must_use]
    pub fn command_topic(&self) -> String {
        format!("{}/{}", self.root, self.subscribe)
    }

    /// Classifies a topic the gateway published on.
    ///
    /// # Errors
    /// [`TopicError::NotUnderPublishBase`] if the topic does not start with
    /// `<root>/<pub>/`, [`TopicError::NoSuchSlot`] for an RS485 slot outside `1..=16`,
    /// [`TopicError::UnknownSubtopic`] for anything else the SG does not publish.
    pub fn parse_publish_topic(&self, topic: &str) -> Result<SgTopic, TopicError> {
        let sub = topic
            .strip_prefix(self.root.as_str())
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(self.publish.as_str()))
            .and_then(|t| t.strip_prefix('/'))
            .ok_or(TopicError::NotUnderPublishBase)?;
        let unknown = || TopicError::UnknownSubtopic(crate::value::excerpt(sub));
        let (kind, port) = match sub.split_once('/') {
            Some((kind, port)) => (kind, port),
            None => {
                return match sub {
                    "status" => Ok(SgTopic::Status),
                    "log" => Ok(SgTopic::Log),
                    "error" => Ok(SgTopic::Error),
                    _ => Err(unknown()),
                }
            }
        };
        let with_port: fn(Port) -> SgTopic = match kind {
            "measurements" => SgTopic::Measurements,
            "counters" => SgTopic::Counters,
            "bicom" => SgTopic::Bicom,
            _ => return Err(unknown()),
        };
        let port = match port.split_once('/') {
            None if port == "ir" => Port::Ir,
            Some(("rs485", slot)) if !slot.contains('/') => Port::rs485_from_str(slot)?,
            _ => return Err(unknown()),
        };
        Ok(with_port(port))
    }
}

fn validate_part(value: &str, part: TopicPart) -> Result<(), TopicError> {
    if value.is_empty() {
        return Err(TopicError::EmptyPart(part));
    }
    if value.len() > MAX_TOPIC_PART_LEN {
        return Err(TopicError::PartTooLong {
            part,
            len: value.len(),
        });
    }
    let forbidden = |ch: char| {
        matches!(ch, '+' | '#') || ch.is_control() || (ch == '/' && part != TopicPart::Root)
    };
    match value.chars().find(|&ch| forbidden(ch)) {
        Some(ch) => Err(TopicError::ForbiddenChar { part, ch }),
        None => Ok(()),
    }
}

/// Where a device hangs off the gateway.
///
/// Build RS485 ports with [`Port::rs485`] or [`Port::from_index`]; a hand-built
/// `Rs485(0)` or `Rs485(17)` makes topics that [`TopicLayout::parse_publish_topic`] rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// The infrared port: the left IR meter for measurements and counters, the right IR
    /// relay for bicom.
    Ir,
    /// An RS485 settings slot, `1..=16` (not the Modbus address).
    Rs485(u8),
}

impl Port {
    /// An RS485 slot.
    ///
    /// # Errors
    /// [`TopicError::NoSuchSlot`] outside `1..=16`.
    pub fn rs485(slot: u8) -> Result<Self, TopicError> {
        if (1..=MAX_RS485_SLOT).contains(&slot) {
            Ok(Self::Rs485(slot))
        } else {
            Err(TopicError::NoSuchSlot(format!("{slot}")))
        }
    }

    /// The port a command `index` addresses: 0 is IR, `n` is RS485 slot `n`.
    ///
    /// # Errors
    /// [`TopicError::NoSuchSlot`] above 16.
    pub fn from_index(index: u8) -> Result<Self, TopicError> {
        if index == 0 {
            Ok(Self::Ir)
        } else {
            Self::rs485(index)
        }
    }

    /// The command `index` of this port (inverse of [`from_index`](Self::from_index)).
    #[must_use]
    pub fn index(self) -> u8 {
        match self {
            Self::Ir => 0,
            Self::Rs485(slot) => slot,
        }
    }

    /// Canonical decimal only: `"2"`, not `"02"` or `"+2"`, so that topics round-trip.
    fn rs485_from_str(slot: &str) -> Result<Self, TopicError> {
        let canonical = !slot.starts_with('0') && slot.bytes().all(|b| b.is_ascii_digit());
        match slot.parse::<u8>() {
            Ok(n) if canonical => Self::rs485(n),
            _ => Err(TopicError::NoSuchSlot(crate::value::excerpt(slot))),
        }
    }
}

impl fmt::Display for Port {
    /// The topic suffix: `ir` or `rs485/<n>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ir => f.write_str("ir"),
            Self::Rs485(slot) => write!(f, "rs485/{slot}"),
        }
    }
}

/// What a topic below the publish base carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SgTopic {
    /// `P/status`: hello on connect, replies to `status` and `get_bicoms`.
    Status,
    /// `P/log`: plain text.
    Log,
    /// `P/error`: plain text.
    Error,
    /// `P/measurements/<port>`.
    Measurements(Port),
    /// `P/counters/<port>`.
    Counters(Port),
    /// `P/bicom/<port>`: relay state.
    Bicom(Port),
}

impl SgTopic {
    /// The part below the publish base, e.g. `measurements/rs485/2`.
    #[must_use]
    pub fn subtopic(&self) -> String {
        match self {
            Self::Status => String::from("status"),
            Self::Log => String::from("log"),
            Self::Error => String::from("error"),
            Self::Measurements(port) => format!("measurements/{port}"),
            Self::Counters(port) => format!("counters/{port}"),
            Self::Bicom(port) => format!("bicom/{port}"),
        }
    }

    /// The full topic under `layout` (inverse of [`TopicLayout::parse_publish_topic`]).
    #[must_use]
    pub fn to_topic(&self, layout: &TopicLayout) -> String {
        format!("{}/{}", layout.publish_base(), self.subtopic())
    }
}
