//! JSON decoding errors that say what went wrong and where.

use alloc::string::{String, ToString};
use core::fmt;

use serde::de::DeserializeOwned;

/// What kind of JSON failure happened; the server files them differently (a cut-off
/// message points at a gateway reboot, a wrong shape at a firmware mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonErrorKind {
    /// The payload is not JSON at all.
    Syntax,
    /// The JSON ends in the middle of a value (e.g. the gateway rebooted mid-publish).
    Truncated,
    /// Valid JSON, but not the document expected (missing field, wrong type).
    WrongShape,
}

/// A JSON decoding failure with serde_json's message and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub kind: JsonErrorKind,
    /// serde_json's description, including "at line L column C".
    pub message: String,
    /// 1-based line of the failure (0 if unknown).
    pub line: usize,
    /// 1-based column of the failure (0 if unknown).
    pub column: usize,
}

impl From<serde_json::Error> for JsonError {
    fn from(error: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let kind = match error.classify() {
            Category::Eof => JsonErrorKind::Truncated,
            Category::Data => JsonErrorKind::WrongShape,
            Category::Syntax | Category::Io => JsonErrorKind::Syntax,
        };
        Self {
            kind,
            message: error.to_string(),
            line: error.line(),
            column: error.column(),
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            JsonErrorKind::Syntax => "not valid JSON",
            JsonErrorKind::Truncated => "JSON cut off mid-message",
            JsonErrorKind::WrongShape => "unexpected JSON structure",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl core::error::Error for JsonError {}

pub(crate) fn from_slice<T: DeserializeOwned>(payload: &[u8]) -> Result<T, JsonError> {
    serde_json::from_slice(payload).map_err(JsonError::from)
}
