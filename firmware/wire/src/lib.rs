//! The SG gateway wire contract: MQTT topics, the JSON documents the gateway publishes,
//! its value strings and times, and the commands it accepts; and the MiSmart XML push
//! ([`mismart`]; its parser needs the `xml` feature).
//!
//! One crate for both ends: the Headend server (feature `std`) and the gateway firmware
//! (`no_std` + `alloc`), so that what one writes the other reads by construction.
//!
//! Every parser takes hostile input and returns a `Result` with an error that says what was
//! wrong; none of them panics.
//!
//! ```
//! use sg_wire::{parse_message, SgMessage, topic::TopicLayout};
//!
//! let layout = TopicLayout::default_for("SG000017").unwrap();
//! let topic = layout.parse_publish_topic("sg/SG000017/pub/measurements/ir").unwrap();
//! let payload = br#"{"header":{"serial_number":"X1"},"measurements":{"U1":"229.5 V"}}"#;
//! let SgMessage::Measurements(doc) = parse_message(topic, payload).unwrap() else { panic!() };
//! let (values, issues) = sg_wire::message::normalize_measurements(&doc);
//! assert_eq!(values.u1, Some(229.5));
//! assert!(issues.is_empty());
//! ```

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod command;
mod json;
pub mod message;
pub mod mismart;
mod text;
pub mod time;
pub mod topic;
pub mod value;

use alloc::string::String;
use core::fmt;

pub use json::{JsonError, JsonErrorKind};

use message::{BicomDoc, CountersDoc, MeasurementsDoc, StatusDoc};
use topic::SgTopic;

/// The largest payload the contract allows (256 KiB). The biggest real document (a
/// counters document with all 20 registers and settings) is about 2 KiB, so this is
/// generous; callers should enforce it before buffering, and [`parse_message`] and
/// [`command::Command::parse`] reject anything larger.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// A message the gateway published, decoded according to its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SgMessage {
    Status(StatusDoc),
    /// A line of `P/log`, verbatim.
    Log(String),
    /// A line of `P/error`, verbatim.
    Error(String),
    Measurements(MeasurementsDoc),
    Counters(CountersDoc),
    Bicom(BicomDoc),
}

/// Why a published message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge { len: usize },
    /// A log or error line that is not UTF-8.
    NotUtf8 { valid_up_to: usize },
    /// Not the JSON document the topic calls for.
    Json {
        /// What the topic calls for, e.g. "a measurements document".
        expected: &'static str,
        error: JsonError,
    },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => write!(
                f,
                "payload of {len} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte contract limit"
            ),
            Self::NotUtf8 { valid_up_to } => write!(
                f,
                "text payload is not valid UTF-8 (first invalid byte at offset {valid_up_to})"
            ),
            Self::Json { expected, error } => write!(f, "expected {expected}: {error}"),
        }
    }
}

impl core::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Json { error, .. } => Some(error),
            Self::TooLarge { .. } | Self::NotUtf8 { .. } => None,
        }
    }
}

/// Decodes a payload published on `topic`. Values inside documents stay raw strings; use
/// [`message::normalize_measurements`] and [`message::normalize_counters`] next.
///
/// # Errors
/// [`MessageError::TooLarge`] above [`MAX_PAYLOAD_BYTES`], [`MessageError::NotUtf8`] for a
/// log or error line that is not UTF-8 (it is rejected rather than silently altered), and
/// [`MessageError::Json`] with serde_json's message and position for JSON that is invalid,
/// cut off or of the wrong shape.
pub fn parse_message(topic: SgTopic, payload: &[u8]) -> Result<SgMessage, MessageError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(MessageError::TooLarge { len: payload.len() });
    }
    match topic {
        SgTopic::Status => {
            document(payload, "a status document (hello or command reply)").map(SgMessage::Status)
        }
        SgTopic::Log => text(payload).map(SgMessage::Log),
        SgTopic::Error => text(payload).map(SgMessage::Error),
        SgTopic::Measurements(_) => document(
            payload,
            r#"a measurements document ({"header":{…},"measurements":{…}})"#,
        )
        .map(SgMessage::Measurements),
        SgTopic::Counters(_) => document(
            payload,
            r#"a counters document ({"header":{…},"counters":{…},"settings":{…}})"#,
        )
        .map(SgMessage::Counters),
        SgTopic::Bicom(_) => {
            document(payload, r#"a bicom document ({"bicom":{…,"state":…}})"#).map(SgMessage::Bicom)
        }
    }
}

fn document<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    expected: &'static str,
) -> Result<T, MessageError> {
    json::from_slice(payload).map_err(|error| MessageError::Json { expected, error })
}

fn text(payload: &[u8]) -> Result<String, MessageError> {
    core::str::from_utf8(payload)
        .map(String::from)
        .map_err(|e| MessageError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })
}
